"""The timers room: what happens to a pending request when nobody acts.

Run periodically (APScheduler, :class:`approvals.expiry.ExpiryScheduler`): the pending TTL
(:meth:`Timers.expire_pending`), the escalation of a request nobody decided
(:meth:`Timers.escalate_due`) and the cancellation of a request a stopped bot never put to its
approvers (:meth:`Timers.cancel_stranded`). Each is one guarded statement per batch, safe with
any number of instances: the database decides which call moves which request.
"""

from __future__ import annotations

import logging
from datetime import timedelta

from sqlalchemy import select, update

from approvals.gate.context import GateContext
from approvals.gate.errors import STRANDED_AFTER
from approvals.lifecycle import RETURNED, SYSTEM, record_many, transition_many
from approvals.models import Request, Status

log = logging.getLogger(__name__)


class Timers:
    """Pending TTL, escalation and stranded requests."""

    def __init__(self, ctx: GateContext) -> None:
        self._ctx = ctx

    def expire_pending(self) -> list[int]:
        """Expire every pending request whose TTL has passed; returns their IDs.

        Idempotent, and safe with several instances: one guarded ``UPDATE … WHERE status =
        'pending' AND expires_at <= now RETURNING`` decides which requests this call expires
        (:func:`~approvals.lifecycle.transition_many`), in one transaction with their audit
        events; then each is announced. A bounded number of queries, however many are due.
        """
        now = self._ctx.clock()
        with self._ctx.sessions.begin() as session:
            expired = transition_many(
                session,
                [Request.expires_at.is_not(None), Request.expires_at <= now],
                expected=Status.PENDING,
                to=Status.EXPIRED,
                actor=SYSTEM,
                now=now,
                event="expired",
                detail={"reason": "nobody decided before the pending TTL ran out"},
            )
        self._ctx.notify_many(expired, "expired")
        return expired

    def cancel_stranded(self, *, older_than: float = STRANDED_AFTER) -> list[int]:
        """Cancel every request left ``pending`` by a bot that stopped between filing it and
        putting it to its approvers (no approval message after ``older_than`` seconds; an
        auto-approved or break-glass request is pending for milliseconds only), and tell its
        requester that nothing was changed. Returns their IDs.

        Idempotent, and safe with several instances: each is a guarded transition.
        """
        cutoff = self._ctx.clock() - timedelta(seconds=older_than)
        with self._ctx.sessions() as session:
            stranded = session.scalars(
                select(Request.id).where(
                    Request.status == Status.PENDING.value,
                    Request.approval_ts.is_(None),
                    Request.created_at < cutoff,
                )
            ).all()
        cancelled = []
        for request_id in stranded:
            if self._ctx.move(
                request_id,
                Status.PENDING,
                Status.CANCELLED,
                event="stranded",
                detail={"reason": "opsgate stopped before the request was put to its approvers"},
                error=(
                    "opsgate stopped before this request was put to its approvers or run; "
                    "nothing was changed: ask again"
                ),
            ):
                log.warning("request #%s was stranded by a stop; cancelled", request_id)
                cancelled.append(request_id)
                self._ctx.notify(request_id, "cancelled")
        return cancelled

    def escalate_due(self) -> list[int]:
        """Ping the ``escalate_to`` group of every pending request nobody has decided in
        ``escalate_after`` seconds, once; returns their IDs.

        One guarded ``UPDATE … SET escalated_at … WHERE escalated_at IS NULL RETURNING`` marks
        them (so each is escalated once, whatever the number of instances), in one transaction
        with their audit events (:func:`~approvals.lifecycle.record_many`); then each is
        announced.
        """
        now = self._ctx.clock()
        with self._ctx.sessions.begin() as session:
            rows = session.execute(
                update(Request)
                .where(
                    Request.status == Status.PENDING.value,
                    Request.escalate_at.is_not(None),
                    Request.escalate_at <= now,
                    Request.escalated_at.is_(None),
                )
                .values(escalated_at=now, updated_at=now)
                .returning(*RETURNED, Request.approvers)
                .execution_options(synchronize_session=False)
            ).all()
            record_many(
                session,
                rows,
                event="escalated",
                status=Status.PENDING,
                actor=SYSTEM,
                now=now,
                details={
                    row.id: {"escalate_to": (row.approvers or {}).get("escalate_to")}
                    for row in rows
                },
            )
        escalated = sorted(row.id for row in rows)
        self._ctx.notify_many(escalated, "escalated")
        return escalated
