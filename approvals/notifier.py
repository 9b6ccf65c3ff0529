"""How the gate tells the outside world what happened, without knowing Slack.

``bot`` implements :class:`Notifier`; the gate calls it after each committed change, with a frozen
:class:`RequestView` (never an ORM object).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Protocol


@dataclass(frozen=True)
class MessageRef:
    """A posted message: its channel ID and ``ts``."""

    channel_id: str
    ts: str


@dataclass(frozen=True)
class OpenedRefs:
    """Where a new request was announced: the approval message and the requester's thread."""

    approval: MessageRef | None
    thread: MessageRef | None


@dataclass(frozen=True)
class RequestView:
    """A snapshot of one request for rendering: everything a message shows, and nothing secret."""

    id: int
    action: str
    status: str
    requester_id: str
    requester_kind: str
    target: str
    environment: str | None
    namespace: str | None
    reason: str | None
    preview_lines: tuple[str, ...]
    rule: str | None
    approver_groups: tuple[str, ...]
    min_approvals: int
    approved_by: tuple[str, ...]
    decided_by: str | None
    result: str | None
    error: str | None
    origin_channel_id: str | None
    incident: bool
    response_url: str | None
    approval_channel: str | None
    approval: MessageRef | None
    thread: MessageRef | None
    created_at: datetime
    updated_at: datetime

    @property
    def needs_approval(self) -> bool:
        """True when people must approve (the rule is not ``approval: auto``)."""
        return self.min_approvals > 0


class NotifyError(Exception):
    """The notifier could not deliver a message; ``str()`` says why, for the requester."""


class Notifier(Protocol):
    """What the gate needs from the chat side."""

    def request_opened(self, request: RequestView) -> OpenedRefs:
        """Announce a new request: the approval message (buttons) when it needs approval, and
        the requester's message whose thread carries progress. Raises :class:`NotifyError` when
        the approval message cannot be posted."""
        ...

    def request_changed(self, request: RequestView, *, event: str) -> None:
        """Show a change (``approval_added``, ``approved``, ``denied``, ``succeeded``, …): update
        the approval message, reply in the thread, mirror to the audit channel. Raises
        :class:`NotifyError` when nothing could be delivered."""
        ...
