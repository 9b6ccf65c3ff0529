"""How the gate tells the outside world what happened, without knowing Slack.

``bot`` implements :class:`Notifier`; the gate calls it after each committed change, with a frozen
:class:`RequestView` (never an ORM object).
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
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
class StepView:
    """One approval step: its groups, how many distinct people it needs, who has counted so far."""

    groups: tuple[str, ...]
    min_approvals: int
    approved_by: tuple[str, ...] = ()

    @property
    def done(self) -> bool:
        return len(self.approved_by) >= self.min_approvals


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
    steps: tuple[StepView, ...] = ()
    incident_channel: str | None = None
    expires_at: datetime | None = None
    escalate_to: str | None = None
    escalate_users: tuple[str, ...] = ()
    escalate_usergroups: tuple[str, ...] = ()
    break_glass: bool = False
    review: MessageRef | None = None
    reviewed_by: str | None = None
    reviewed_at: datetime | None = None
    policy_sha256: str | None = None
    freeze: str | None = None
    """The change freeze that decided who approves (``during_freeze``), if any."""

    @property
    def needs_approval(self) -> bool:
        """True when people must approve (the rule is not ``approval: auto``)."""
        return self.min_approvals > 0


class NotifyError(Exception):
    """The notifier could not deliver a message; ``str()`` says why, for the requester."""


class Notifier(Protocol):
    """What the gate needs from the chat side."""

    def request_opened(
        self,
        request: RequestView,
        *,
        approval_posted: Callable[[MessageRef], None] | None = None,
        thread_posted: Callable[[MessageRef], None] | None = None,
    ) -> OpenedRefs:
        """Announce a new request: the requester's message whose thread carries progress, then
        the approval message (buttons) when it needs approval. ``thread_posted`` and
        ``approval_posted`` are called with each message as soon as it is posted. Raises
        :class:`NotifyError` when the approval message cannot be posted."""
        ...

    def review_opened(self, request: RequestView) -> MessageRef | None:
        """A break-glass request ran without approval: post the loud notice and the review item
        (an Acknowledge button for the approvers) to the audit channel; return where it is."""
        ...

    def request_changed(self, request: RequestView, *, event: str) -> None:
        """Show a change (``approval_added``, ``approved``, ``denied``, ``succeeded``, …): update
        the approval message, reply in the thread, mirror to the audit channel. Raises
        :class:`NotifyError` when nothing could be delivered."""
        ...

    def card_changed(self, request: RequestView) -> None:
        """Update the approval message alone to show ``request`` as it is now (for a decision
        that came before the message's reference was stored). Never raises."""
        ...


@dataclass(frozen=True)
class GrantView:
    """A snapshot of one access grant for rendering (never an ORM object, never a secret).

    ``id`` is the grant's ID, which is also its access request's ID. ``status`` is ``active``,
    ``revoking`` or ``revoked`` (``drift`` for a RoleBinding opsgate found with no grant row;
    then ``grantee_id`` is empty). Durations are in seconds, times aware UTC. ``revoke_reason``
    says why it ended (``expired``, ``revoked early by <@U…>: …``, ``drift: …``).
    """

    id: int
    grantee_id: str
    environment: str | None
    kube_context: str | None
    namespace: str
    role: str
    kubernetes_user: str
    role_binding: str
    vault_group: str | None
    vault_entity: str | None
    status: str
    started_at: datetime
    expires_at: datetime
    duration_seconds: int
    max_duration_seconds: int | None
    reminded_at: datetime | None = None
    revoked_at: datetime | None = None
    revoked_by: str | None = None
    revoke_reason: str | None = None
    approver_ids: tuple[str, ...] = ()

    def seconds_left(self, now: datetime) -> float:
        """Seconds until ``expires_at`` (0 once past)."""
        return max((self.expires_at - now).total_seconds(), 0.0)

    def extendable_by(self) -> int | None:
        """Seconds it may still be extended by under ``max_duration`` (None: no limit)."""
        if self.max_duration_seconds is None:
            return None
        return max(self.max_duration_seconds - self.duration_seconds, 0)


GRANT_EVENTS = ("started", "reminder", "extended", "revoked", "expired", "drift_removed")
"""The ``event`` values :meth:`GrantNotifier.grant_changed` receives."""


class GrantNotifier(Protocol):
    """What :class:`approvals.grants.GrantService` needs from the chat side."""

    def grant_changed(self, grant: GrantView, *, event: str) -> None:
        """Tell the grantee (and, for ``drift_removed``, the audit channel) about ``event``, one
        of :data:`GRANT_EVENTS`; ``reminder`` carries Extend and End now buttons. Raises
        :class:`NotifyError` when nothing could be delivered."""
        ...


def announcing_batch(notifier: object) -> AbstractContextManager[object]:
    """The ``batch()`` context of a :class:`GrantNotifier` that has one (the grants that end
    within it are summed up in one audit message, :class:`bot.notifier.SlackGrantNotifier`),
    else a context that does nothing."""
    batch = getattr(notifier, "batch", None)
    if callable(batch):
        context: AbstractContextManager[object] = batch()
        return context
    return nullcontext()
