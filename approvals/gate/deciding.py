"""The deciding room: approve, deny (or withdraw), and review a break-glass request.

Every decision locks the request's row first (:meth:`Deciding._locked`: ``SELECT … FOR UPDATE``
on PostgreSQL, ``BEGIN IMMEDIATE`` on SQLite) and holds it until its transaction ends, so that of
approvers clicking at once exactly one completes the quorum: the next one waits, then sees the
approvals and the status the first one wrote. Who may decide is the policy's answer
(:func:`approvals.policy.approval_refusal`), over each step's members brought up to date.
"""

from __future__ import annotations

from sqlalchemy import select, text, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from approvals.gate.context import GateContext
from approvals.gate.errors import AlreadyDecided, NotAllowed, UnknownRequest
from approvals.gate.executing import Executing
from approvals.gate.views import steps_of
from approvals.lifecycle import SYSTEM, Actor, rows_changed, transition
from approvals.lifecycle import record as record_event
from approvals.models import Approval, Request, Status
from approvals.notifier import RequestView
from approvals.policy import (
    LoadedPolicy,
    Refusal,
    approval_refusal,
    count_satisfied,
    step_members,
)


class Deciding:
    """Approvals, denials and break-glass reviews; an approval that completes the quorum runs
    the request (:class:`~approvals.gate.executing.Executing`)."""

    def __init__(self, ctx: GateContext, executing: Executing) -> None:
        self._ctx = ctx
        self._executing = executing

    def approve(self, request_id: int, approver: Actor) -> RequestView:
        """Record ``approver``'s approval; execute once every step has enough distinct approvers.

        Raises :class:`UnknownRequest`, :class:`NotAllowed` (the policy's
        :func:`~approvals.policy.approval_refusal`: an agent, the requester, not an approver) or
        :class:`AlreadyDecided` (no longer pending, or already approved by them). The request's
        row is locked while the approval is counted (see :meth:`_decidable`), so of approvers
        clicking at once exactly one completes the quorum; a double click or a Slack retry
        executes nothing twice.
        """
        loaded = self._ctx.policy()
        approver = self._ctx.actor(approver, loaded)
        now = self._ctx.clock()
        approved = False
        try:
            with self._ctx.sessions.begin() as session:
                request, refusal = self._decidable(session, request_id, approver, loaded)
                if refusal is Refusal.REQUESTER:
                    raise NotAllowed("You cannot approve your own request.")
                session.add(
                    Approval(request_id=request_id, approver_id=approver.id, created_at=now)
                )
                session.flush()
                approvals = session.scalars(
                    select(Approval.approver_id)
                    .where(Approval.request_id == request_id)
                    .order_by(Approval.id)
                ).all()
                satisfied, per_step = count_satisfied(
                    steps_of(request), list(approvals), request.requester_id
                )
                record_event(
                    session,
                    request,
                    event="approval_added",
                    actor=approver,
                    now=now,
                    detail={
                        "approvals": len(approvals),
                        "needed": request.min_approvals,
                        "steps": per_step,
                    },
                )
                if satisfied:
                    approved = transition(
                        session,
                        request,
                        expected=Status.PENDING,
                        to=Status.APPROVED,
                        actor=approver,
                        now=now,
                        decided_by=approver.id,
                    )
                    if not approved:
                        raise AlreadyDecided(f"Request #{request_id} was decided meanwhile.")
        except IntegrityError as exc:  # the same person's second click raced the first
            raise AlreadyDecided(f"You have already approved request #{request_id}.") from exc
        if approved:
            self._ctx.notify(request_id, "approved")
            self._executing.execute(request_id)
        else:
            self._ctx.notify(request_id, "approval_added")
        return self._ctx.get(request_id)

    def deny(self, request_id: int, actor: Actor) -> RequestView:
        """Deny a pending request, or cancel it when ``actor`` is its requester.

        Raises :class:`UnknownRequest`, :class:`NotAllowed` (an agent, not an approver) or
        :class:`AlreadyDecided`; the request's row is locked as for :meth:`approve`.
        """
        loaded = self._ctx.policy()
        actor = self._ctx.actor(actor, loaded)
        now = self._ctx.clock()
        with self._ctx.sessions.begin() as session:
            request, refusal = self._decidable(session, request_id, actor, loaded)
            to = Status.CANCELLED if refusal is Refusal.REQUESTER else Status.DENIED
            if not transition(
                session,
                request,
                expected=Status.PENDING,
                to=to,
                actor=actor,
                now=now,
                decided_by=actor.id,
            ):
                raise AlreadyDecided(f"Request #{request_id} was decided meanwhile.")
        self._ctx.notify(request_id, to.value)
        return self._ctx.get(request_id)

    def cancel(self, request_id: int, requester: Actor) -> RequestView:
        """Withdraw ``requester``'s own pending request (a person or an agent: withdrawing
        decides nothing). Raises :class:`UnknownRequest` (also for someone else's request) or
        :class:`AlreadyDecided`."""
        actor = self._ctx.actor(requester)
        with self._ctx.sessions.begin() as session:
            request = self._locked(session, request_id)
            if request.requester_id != actor.id:
                raise UnknownRequest(f"There is no request #{request_id} of yours.")
            if not transition(
                session,
                request,
                expected=Status.PENDING,
                to=Status.CANCELLED,
                actor=actor,
                now=self._ctx.clock(),
                decided_by=actor.id,
            ):
                raise AlreadyDecided(f"Request #{request_id} is already {request.status}.")
        self._ctx.notify(request_id, Status.CANCELLED.value)
        return self._ctx.get(request_id)

    def _decidable(
        self, session: Session, request_id: int, actor: Actor, loaded: LoadedPolicy
    ) -> tuple[Request, Refusal | None]:
        """The pending request ``request_id``, locked (:meth:`_locked`), that ``actor`` may
        decide, and :attr:`Refusal.REQUESTER` when ``actor`` is its requester (who may only
        withdraw it; None otherwise).

        Raises :class:`UnknownRequest`, :class:`AlreadyDecided` (not pending, or ``actor``
        already approved it) or :class:`NotAllowed` (an agent, not an approver).
        """
        request = self._locked(session, request_id)
        if request.status != Status.PENDING:
            by = (
                f" by <@{request.decided_by}>"
                if request.decided_by not in (None, SYSTEM.id)
                else ""
            )
            raise AlreadyDecided(f"Request #{request_id} is already {request.status}{by}.")
        refusal = self._refusal(request, actor, loaded)
        if refusal is Refusal.AGENT:
            raise NotAllowed("Automation cannot approve or deny requests.")
        if refusal is Refusal.NOT_AN_APPROVER:
            groups = ", ".join(request.approvers["groups"])
            raise NotAllowed(
                f"Only members of {groups} may decide request #{request_id}; nothing was changed."
            )
        already = session.scalar(
            select(Approval.id).where(
                Approval.request_id == request_id, Approval.approver_id == actor.id
            )
        )
        if already is not None:
            raise AlreadyDecided(f"You have already approved request #{request_id}.")
        return request, refusal

    @staticmethod
    def _locked(session: Session, request_id: int) -> Request:
        """Request ``request_id``, locked until ``session``'s transaction ends: whoever decides it
        next waits, then sees this decision (the approvals it added, the status it set).

        PostgreSQL: ``SELECT … FOR UPDATE`` on its row. SQLite has no row locks: the
        transaction starts with ``BEGIN IMMEDIATE``, which takes the database's writer lock, so
        the reads that follow are of the latest commit and nobody else writes before it ends
        (it must be the first statement of ``session``'s transaction). Raises
        :class:`UnknownRequest`.
        """
        if session.get_bind().dialect.name == "sqlite":
            session.execute(text("BEGIN IMMEDIATE"))
        request = session.get(Request, request_id, with_for_update=True)
        if request is None:
            raise UnknownRequest(f"There is no request #{request_id}.")
        return request

    def _refusal(self, request: Request, actor: Actor, loaded: LoadedPolicy) -> Refusal | None:
        """What the policy (:func:`~approvals.policy.approval_refusal`) has against ``actor``
        deciding ``request``, over the request's steps with their members brought up to date:
        those of the policy in force after a reload, and the user groups asked again when
        ``actor`` is not among the approvers known so far."""
        members_of = request.approvers.get("members_policy_sha256", request.policy_sha256)
        if members_of != loaded.sha256:
            self._refresh_approvers(request, loaded, reloaded=True)

        def refusal() -> Refusal | None:
            return approval_refusal(
                steps_of(request), actor.id, requester=request.requester_id, actor_kind=actor.kind
            )

        first = refusal()
        if first is not Refusal.NOT_AN_APPROVER:
            return first
        self._refresh_approvers(request, loaded)
        return refusal()

    def _refresh_approvers(
        self, request: Request, loaded: LoadedPolicy, *, reloaded: bool = False
    ) -> None:
        """Recompute each step's members from the groups in force.

        After a click from someone not among the approvers known so far (``reloaded`` False), the
        user groups are asked again and new members are added. After a policy reload
        (``reloaded`` True), the members are those of the new policy's groups: someone a reload
        removed from a group can no longer approve requests still pending from before.
        """
        if not reloaded:
            if self._ctx.directory is None:
                return
            self._ctx.directory.refresh()
        groups = self._ctx.groups(loaded)
        approvers = dict(request.approvers)
        steps = []
        for step in approvers.get("steps", []):
            users = step_members(step["groups"], groups, loaded.policy.agents)
            if not reloaded:
                users |= set(step["users"])
            steps.append({**step, "users": sorted(users)})
        approvers["steps"] = steps
        approvers["users"] = sorted({u for step in steps for u in step["users"]})
        approvers["members_policy_sha256"] = loaded.sha256
        request.approvers = approvers

    def acknowledge(self, request_id: int, actor: Actor) -> RequestView:
        """Review a break-glass request: one of its rule's approvers acknowledges it.

        Raises :class:`UnknownRequest`, :class:`NotAllowed` (not a break-glass request, or the
        policy's :func:`~approvals.policy.approval_refusal`: an agent, its requester, not an
        approver) or :class:`AlreadyDecided` (already reviewed). The request's row is locked as
        for :meth:`approve`.
        """
        loaded = self._ctx.policy()
        actor = self._ctx.actor(actor, loaded)
        now = self._ctx.clock()
        with self._ctx.sessions.begin() as session:
            request = self._locked(session, request_id)
            if not request.break_glass:
                raise NotAllowed(f"Request #{request_id} is not a break-glass request.")
            refusal = self._refusal(request, actor, loaded)
            if refusal is Refusal.AGENT:
                raise NotAllowed("Automation cannot review break-glass requests.")
            if refusal is Refusal.REQUESTER:
                raise NotAllowed("You cannot review your own break-glass request.")
            if refusal is Refusal.NOT_AN_APPROVER:
                groups = ", ".join(request.approvers["groups"])
                raise NotAllowed(f"Only members of {groups} may review request #{request_id}.")
            done = rows_changed(
                session,
                update(Request)
                .where(Request.id == request_id, Request.reviewed_by.is_(None))
                .values(reviewed_by=actor.id, reviewed_at=now, updated_at=now),
            )
            if done != 1:
                raise AlreadyDecided(f"Request #{request_id} was already reviewed.")
            record_event(session, request, event="break_glass_reviewed", actor=actor, now=now)
        self._ctx.notify(request_id, "reviewed")
        return self._ctx.get(request_id)
