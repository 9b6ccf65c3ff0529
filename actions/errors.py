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
