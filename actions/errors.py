"""opsgate's own errors for everything the backends can answer.

Adapters (``actions/backends/*``) turn the client libraries' exceptions into these, chained with
``raise … from e``, so no third-party exception type leaves ``actions``. Every message is written
for the person who asked: it says what failed and, where possible, what to do.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


class ActionError(Exception):
    """Base class of every error an action or backend raises."""


class NotFound(ActionError):
    """The object named does not exist (Kubernetes 404, Vault path absent)."""


class Forbidden(ActionError):
    """opsgate's own credentials may not do this (Kubernetes or Vault 403)."""


class Conflict(ActionError):
    """The object changed underneath us (409, a failed check-and-set); retrying may succeed."""


class Invalid(ActionError):
    """The backend rejected the change as invalid (422), or the request cannot be carried out."""


class TemporaryError(ActionError):
    """The backend is unreachable, timed out or failed (5xx); ``delay`` seconds before a retry."""

    def __init__(self, message: str, *, delay: float | None = None) -> None:
        super().__init__(message)
        self.delay = delay


class PermanentError(ActionError):
    """Any other failure that retrying will not fix."""


class RolloutFailed(PermanentError):
    """The change WAS applied, but its rollout did not complete (``ProgressDeadlineExceeded``,
    or not done within the rollout timeout). Not retried: retrying would apply it again.

    ``facts`` is JSON for the audit trail (what was applied, the rollout's last status).
    """

    def __init__(self, message: str, *, facts: Mapping[str, Any] | None = None) -> None:
        super().__init__(message)
        self.facts: dict[str, Any] = dict(facts or {})


class MaybeApplied(ActionError):
    """A write (PATCH, POST…) was sent, but no answer came: the read timed out, the connection
    dropped after sending, or the API server answered 504 (its own timeout, after which the write
    may still complete). The change may or may not have taken effect; retrying blindly could
    apply it twice. A refused or timed-out connection is never this: nothing was sent, so it is
    ``TemporaryError``. Callers read the object back (:func:`actions.readback.read_back`).

    ``reason`` says what went wrong (``the Kubernetes API … did not answer while patching …``);
    the message adds that the change may have taken effect.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(f"{reason}; it may have taken effect: check before retrying")
        self.reason = reason


class OutcomeUnknown(ActionError):
    """Whether a change took effect cannot be told: it was sent without an answer
    (:class:`MaybeApplied`) and reading the object back failed too, or showed a state that is
    neither the change nor what was there before. The message says to check before retrying.

    ``facts`` is JSON for the audit trail: the object's current state where it could be read.
    """

    def __init__(self, message: str, *, facts: Mapping[str, Any] | None = None) -> None:
        super().__init__(message)
        self.facts: dict[str, Any] = dict(facts or {})
