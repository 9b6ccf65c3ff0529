"""The policy in force, reloaded when its file changes.

:class:`PolicyStore` holds the last valid :class:`~approvals.policy.LoadedPolicy` of one file.
:meth:`PolicyStore.reload` reads the file again: a valid new version replaces the policy in force,
an invalid one leaves it in force and is reported through ``on_error`` (once: the same error again
is only logged), an unchanged one (same SHA-256) does nothing. ``bot.policy_watch`` calls
``reload`` when the file changes or on SIGHUP.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from pathlib import Path

from approvals.policy import LoadedPolicy, PolicyError, load_policy

log = logging.getLogger(__name__)


class PolicyStore:
    """The policy at ``path``, thread-safe.

    ``on_error(error)`` is called when a reload finds the file invalid or unreadable (the previous
    policy stays in force), but not again for the same error until the file was valid once;
    ``on_reload(policy)`` when a new valid version replaced it. Both are called in the reloading
    thread, after the store's lock is released, and an exception they raise propagates to the
    caller of :meth:`reload`.

    Raises :class:`~approvals.policy.PolicyError` when the file is invalid at construction.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        on_error: Callable[[PolicyError], None] | None = None,
        on_reload: Callable[[LoadedPolicy], None] | None = None,
    ) -> None:
        self.path = Path(path)
        self._on_error = on_error
        self._on_reload = on_reload
        self._lock = threading.Lock()
        self._reloading = threading.Lock()
        self._current = load_policy(self.path)
        self._reported: str | None = None  # the last error given to on_error

    def current(self) -> LoadedPolicy:
        """The policy in force (the last valid version of the file)."""
        with self._lock:
            return self._current

    __call__ = current
    """A store is the ``policy: Callable[[], LoadedPolicy]`` the gate takes."""

    def reload(self) -> LoadedPolicy | PolicyError:
        """Read the file again; returns the policy now in force, or the error that kept the old
        one in force. An unchanged file (same SHA-256) is a no-op: no callback is called."""
        with self._reloading:  # one reload at a time: the watcher and SIGHUP may race
            try:
                loaded = load_policy(self.path)
            except PolicyError as exc:
                log.error(
                    "policy %s is invalid; keeping sha256 %s in force:\n%s",
                    self.path,
                    self.current().sha256,
                    exc,
                )
                if str(exc) == self._reported:
                    return exc  # a second event of the same save, or SIGHUP: told already
                self._reported = str(exc)
                if self._on_error is not None:
                    self._on_error(exc)
                return exc
            self._reported = None
            with self._lock:
                if loaded.sha256 == self._current.sha256:
                    return self._current
                previous, self._current = self._current.sha256, loaded
            log.info("policy %s reloaded: sha256 %s (was %s)", self.path, loaded.sha256, previous)
            if self._on_reload is not None:
                self._on_reload(loaded)
            return loaded
