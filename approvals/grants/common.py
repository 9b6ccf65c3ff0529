"""What the grants service shares with its callers: its errors, what it asks of a scheduler,
the names of a grant's ends, and the rule on extensions."""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from actions.access import format_duration
from approvals.drift import DRIFT_REMOVED
from approvals.notifier import GrantView

EXPIRED = "expired"
REVOKED = "revoked"
ENDED = frozenset({EXPIRED, REVOKED, DRIFT_REMOVED})
"""The events of a grant's end."""

GrantListener = Callable[[GrantView, str], None]
"""A subscriber to the events of grants (``GrantService.subscribe``): (grant, event)."""


class GrantError(Exception):
    """An answer for the person who asked; ``str()`` is the message to show them."""


class UnknownGrant(GrantError):
    """No grant has this ID."""


class GrantNotActive(GrantError):
    """The grant has already ended (or is ending)."""


class ExtensionRefused(GrantError):
    """The extension would take the grant past its rule's ``max_duration``, or is not positive."""


class GrantBackendError(GrantError):
    """Kubernetes or Vault refused or could not be reached; the message says what to expect."""


class GrantScheduling(Protocol):
    """What a scheduler offers the service (:class:`approvals.expiry.ExpiryScheduler`)."""

    def grant_scheduled(self, grant: GrantView) -> None:
        """(Re)schedule the expiry and reminder wake-ups of ``grant``."""
        ...

    def grant_ended(self, grant_id: int) -> None:
        """Forget the wake-ups of a grant that has ended."""
        ...


def extension_refusal(
    grant_id: int, duration_seconds: int, max_duration_seconds: int | None, seconds: int
) -> str | None:
    """Why ``seconds`` more would take grant ``grant_id`` (lasting ``duration_seconds`` so far)
    past its rule's ``max_duration_seconds``, for the requester; None when it fits."""
    total = duration_seconds + seconds
    if max_duration_seconds is None or total <= max_duration_seconds:
        return None
    room = max(max_duration_seconds - duration_seconds, 0)
    return (
        f"Grant #{grant_id} would last {format_duration(total)} in all, more than the "
        f"{format_duration(max_duration_seconds)} its rule allows; it can be extended by at most "
        f"{format_duration(room)}."
    )
