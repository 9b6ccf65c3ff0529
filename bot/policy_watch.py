"""Reload the policy when its file changes (``watchfiles``) or on SIGHUP.

Editors and ``git checkout`` replace a file atomically (write a temporary file, rename it over the
old one), and Kubernetes swaps a ConfigMap volume's ``..data`` symlink, so the watcher watches the
file's directory (not recursively) and reacts to changes of the file's name or of ``..data``;
:meth:`~approvals.policy_store.PolicyStore.reload` is a no-op when the bytes did not change.
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable
from pathlib import Path
from types import FrameType

from watchfiles import Change, watch

from approvals.policy_store import PolicyStore

log = logging.getLogger(__name__)


def _filter_for(path: Path) -> tuple[Path, Callable[[Change, str], bool]]:
    directory = path.absolute().parent  # not resolved: a ConfigMap's file is a symlink
    name = path.name

    def accept(_change: Change, changed: str) -> bool:
        changed_name = Path(changed).name
        return changed_name == name or changed_name.startswith("..data")

    return directory, accept


def watch_policy(
    store: PolicyStore,
    stop_event: threading.Event,
    *,
    debounce: int = 1600,
    step: int = 50,
    rust_timeout: int = 5000,
) -> threading.Thread:
    """Start (and return) a daemon thread that calls ``store.reload()`` after each change of the
    policy file, until ``stop_event`` is set.

    ``debounce`` (ms) groups the changes of one save; ``step`` (ms) is how often changes are
    checked for; ``rust_timeout`` (ms) bounds how long the thread takes to notice ``stop_event``.
    A reload's failure is reported by the store's ``on_error``; an exception from a callback is
    logged and the watcher goes on.
    """
    directory, accept = _filter_for(store.path)

    def run() -> None:
        try:
            for changes in watch(
                directory,
                watch_filter=accept,
                debounce=debounce,
                step=step,
                stop_event=stop_event,
                rust_timeout=rust_timeout,
                yield_on_timeout=False,
                recursive=False,
                raise_interrupt=False,
            ):
                log.info("policy file changed (%d event(s)); reloading", len(changes))
                try:
                    store.reload()
                except Exception:  # a failing callback (Slack down) must not stop the watcher
                    log.exception("reloading the policy failed")
        except Exception:  # e.g. the directory was removed: say so, SIGHUP still works
            log.exception("the policy watcher of %s stopped; changes are no longer seen", directory)

    thread = threading.Thread(target=run, name="opsgate-policy-watch", daemon=True)
    thread.start()
    return thread


def install_sighup(store: PolicyStore) -> bool:
    """Reload the policy on SIGHUP (``kill -HUP``); returns whether the handler was installed.

    A no-op (False) where SIGHUP does not exist (Windows) or outside the main thread, where
    ``signal.signal`` is not allowed. The reload runs in a short-lived thread, not in the signal
    handler, so it never re-enters the store's lock.
    """
    sighup = getattr(signal, "SIGHUP", None)
    if sighup is None or threading.current_thread() is not threading.main_thread():
        return False

    def handle(_signum: int, _frame: FrameType | None) -> None:
        threading.Thread(target=_reload_logged, args=(store,), daemon=True).start()

    signal.signal(sighup, handle)
    return True


def _reload_logged(store: PolicyStore) -> None:
    log.info("SIGHUP: reloading the policy %s", store.path)
    try:
        store.reload()
    except Exception:  # a failing callback must not be lost silently
        log.exception("reloading the policy on SIGHUP failed")
