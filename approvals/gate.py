"""The gate: a request is checked against the policy, persisted, approved or denied, executed once.

:class:`Gate` is what the Slack listeners call. Deciding is pure (:func:`approvals.policy.decide`);
the gate does the side effects: it writes the request and its audit events (one transaction per
transition), asks the :class:`~approvals.notifier.Notifier` to show them, and runs the action.
Errors meant for the person who asked or clicked are :class:`GateError` subclasses whose message
can be shown as it is.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from pydantic import BaseModel
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from actions.base import ActionKind, Preview, Target
from actions.errors import ActionError
from approvals.lifecycle import SYSTEM, Actor, transition
from approvals.lifecycle import record as record_event
from approvals.models import ActorKind, Approval, AuditEvent, Request, Status
from approvals.notifier import MessageRef, Notifier, NotifyError, RequestView
from approvals.policy import (
    Decision,
    LoadedPolicy,
    NamespaceError,
    Outcome,
    RequestContext,
    decide,
    is_incident_channel,
    resolve_environment,
)

log = logging.getLogger(__name__)


class GateError(Exception):
    """An answer for the person who asked or clicked; ``str()`` is the message to show them."""


class Rejected(GateError):
    """The request cannot be made: bad namespace, missing target, no rule allows it, …"""


class NotAllowed(GateError):
    """The clicker may not decide this request."""


class AlreadyDecided(GateError):
    """The request is no longer pending (or this person already approved it)."""


class UnknownRequest(GateError):
    """No request has this ID."""


@dataclass(frozen=True)
class Origin:
    """Where a request was made: the Slack channel (ID and name) and the command's response_url."""

    channel_id: str | None = None
    channel_name: str | None = None
    response_url: str | None = None


@dataclass(frozen=True)
class Submission:
    """A parsed request: the action's params model, its namespace, ``--env``, ``--reason``."""

    action: str
    params: BaseModel
    requester: Actor
    namespace: str | None = None
    env: str | None = None
    reason: str | None = None
    origin: Origin = Origin()


class Gate:
    """Submit, approve, deny and execute requests.

    ``sessions`` makes database sessions; ``policy`` returns the policy in force (it may be reloaded
    between calls); ``actions`` maps a command word to its request kind; ``clock`` returns an aware
    UTC ``datetime``.
    """

    def __init__(
        self,
        *,
        sessions: sessionmaker[Session],
        policy: Callable[[], LoadedPolicy],
        actions: Mapping[str, ActionKind],
        notifier: Notifier,
        clock: Callable[[], datetime],
    ) -> None:
        self._sessions = sessions
        self._policy = policy
        self._actions = actions
        self._notifier = notifier
        self._clock = clock

    # --- submission ---------------------------------------------------------------------------

    def submit(self, submission: Submission) -> RequestView:
        """Check, persist and announce a request; with ``approval: auto`` execute it at once.

        Raises :class:`Rejected` (and records a ``rejected`` audit event) when the namespace is not
        in the policy, the target cannot be read, or the policy does not allow the request.
        """
        loaded = self._policy()
        try:
            return self._submit(submission, loaded)
        except Rejected as exc:
            self._audit_rejection(submission, loaded, str(exc))
            raise

    def _submit(self, sub: Submission, loaded: LoadedPolicy) -> RequestView:
        kind = self._actions.get(sub.action)
        if kind is None:
            raise Rejected(f"opsgate cannot execute '{sub.action}' requests yet")
        policy = loaded.policy
        environment: str | None = None
        context: str | None = None
        if sub.namespace is not None:
            try:
                environment = resolve_environment(policy, sub.namespace, sub.env)
            except NamespaceError as exc:
                raise Rejected(str(exc)) from exc
            context = policy.environments[environment].kube_context
        incident = is_incident_channel(policy, sub.origin.channel_name)
        decision = decide(
            loaded,
            RequestContext(
                action=sub.action,
                requester=sub.requester.id,
                environment=environment,
                namespace=sub.namespace,
                incident=incident,
            ),
        )
        if decision.outcome is Outcome.DENY:
            raise Rejected(f"Not allowed: {decision.message}")
        self._check_approvable(decision, sub.requester)
        target = Target(
            environment=environment or "", kube_context=context, namespace=sub.namespace
        )
        try:
            preview = kind.preview(sub.params, target=target)
        except ActionError as exc:
            raise Rejected(str(exc)) from exc

        now = self._clock()
        with self._sessions.begin() as session:
            request = Request(
                action=sub.action,
                params=sub.params.model_dump(mode="json"),
                status=Status.PENDING.value,
                requester_id=sub.requester.id,
                requester_kind=sub.requester.kind,
                environment=environment,
                namespace=sub.namespace,
                target=preview.target,
                reason=sub.reason,
                origin_channel_id=sub.origin.channel_id,
                origin_channel_name=sub.origin.channel_name,
                incident=incident,
                response_url=sub.origin.response_url,
                rule=decision.rule_label,
                policy_sha256=loaded.sha256,
                min_approvals=decision.min_approvals,
                approval_channel_id=decision.approval_channel,
                approvers={
                    "groups": list(decision.approver_groups),
                    "users": sorted(decision.approvers),
                },
                preview={
                    "target": preview.target,
                    "lines": list(preview.lines),
                    "facts": preview.facts,
                    "kube_context": context,
                },
                created_at=now,
                updated_at=now,
            )
            session.add(request)
            session.flush()
            record_event(
                session,
                request,
                event="submitted",
                actor=sub.requester,
                now=now,
                detail={"decision": decision.reason.value, "preview": list(preview.lines)},
            )
            request_id = request.id

        view = self.get(request_id)
        try:
            refs = self._notifier.request_opened(view)
        except NotifyError as exc:
            self._finish_unannounced(request_id, str(exc))
            raise Rejected(
                f"Request #{request_id} was cancelled: the approval message could not be "
                f"posted ({exc}). Nothing was changed."
            ) from exc
        with self._sessions.begin() as session:
            request = self._load(session, request_id)
            if refs.approval is not None:
                request.approval_channel_id = refs.approval.channel_id
                request.approval_ts = refs.approval.ts
            if refs.thread is not None:
                request.thread_channel_id = refs.thread.channel_id
                request.thread_ts = refs.thread.ts

        if decision.outcome is Outcome.AUTO:
            self._move(
                request_id,
                Status.PENDING,
                Status.APPROVED,
                event="auto_approved",
                decided_by=SYSTEM.id,
            )
            self._notify(request_id, "approved")
            self._execute(request_id)
        return self.get(request_id)

    def _check_approvable(self, decision: Decision, requester: Actor) -> None:
        if decision.outcome is not Outcome.APPROVAL:
            return
        others = decision.approvers - {requester.id}
        if len(others) < decision.min_approvals:
            raise Rejected(
                f"Not allowed: this request needs {decision.min_approvals} approval(s) from "
                f"{', '.join(decision.approver_groups)}, but only {len(others)} person(s) other "
                "than you may approve it; ask the platform team to fix the policy"
            )

    def _finish_unannounced(self, request_id: int, why: str) -> None:
        self._move(
            request_id,
            Status.PENDING,
            Status.CANCELLED,
            event="announce_failed",
            detail={"error": why},
            error=f"the approval message could not be posted: {why}",
        )

    def _move(
        self,
        request_id: int,
        expected: Status,
        to: Status,
        *,
        event: str | None = None,
        detail: dict[str, Any] | None = None,
        **values: Any,
    ) -> bool:
        """A transition made by opsgate itself, in its own transaction; see ``transition``."""
        with self._sessions.begin() as session:
            return transition(
                session,
                self._load(session, request_id),
                expected=expected,
                to=to,
                actor=SYSTEM,
                now=self._clock(),
                event=event,
                detail=detail,
                **values,
            )

    def _audit_rejection(self, sub: Submission, loaded: LoadedPolicy, why: str) -> None:
        with self._sessions.begin() as session:
            session.add(
                AuditEvent(
                    request_id=None,
                    event="rejected",
                    actor_id=sub.requester.id,
                    actor_kind=sub.requester.kind,
                    action=sub.action,
                    target=None,  # never read: the params below say what was asked for
                    policy_sha256=loaded.sha256,
                    detail={"reason": why, "params": sub.params.model_dump(mode="json")},
                    created_at=self._clock(),
                )
            )

    # --- decisions ----------------------------------------------------------------------------

    def approve(self, request_id: int, approver: Actor) -> RequestView:
        """Record ``approver``'s approval; execute when enough distinct approvers have approved.

        Raises :class:`UnknownRequest`, :class:`NotAllowed` (not an approver, the requester, an
        agent) or :class:`AlreadyDecided` (no longer pending, or already approved by them). A
        double click or a Slack retry executes nothing twice.
        """
        now = self._clock()
        approved = False
        try:
            with self._sessions.begin() as session:
                request = self._decidable(session, request_id, approver)
                if request.requester_id == approver.id:
                    raise NotAllowed("You cannot approve your own request.")
                session.add(
                    Approval(request_id=request_id, approver_id=approver.id, created_at=now)
                )
                session.flush()
                count = session.scalar(
                    select(func.count())
                    .select_from(Approval)
                    .where(Approval.request_id == request_id)
                )
                record_event(
                    session,
                    request,
                    event="approval_added",
                    actor=approver,
                    now=now,
                    detail={"approvals": count, "needed": request.min_approvals},
                )
                if (count or 0) >= request.min_approvals:
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
            self._notify(request_id, "approved")
            self._execute(request_id)
        else:
            self._notify(request_id, "approval_added")
        return self.get(request_id)

    def deny(self, request_id: int, actor: Actor) -> RequestView:
        """Deny a pending request, or cancel it when ``actor`` is its requester.

        Raises :class:`UnknownRequest`, :class:`NotAllowed` or :class:`AlreadyDecided`.
        """
        now = self._clock()
        with self._sessions.begin() as session:
            request = self._decidable(session, request_id, actor)
            to = Status.CANCELLED if request.requester_id == actor.id else Status.DENIED
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
        self._notify(request_id, to.value)
        return self.get(request_id)

    def _decidable(self, session: Session, request_id: int, actor: Actor) -> Request:
        request = session.get(Request, request_id)
        if request is None:
            raise UnknownRequest(f"There is no request #{request_id}.")
        if request.status != Status.PENDING:
            by = (
                f" by <@{request.decided_by}>"
                if request.decided_by not in (None, SYSTEM.id)
                else ""
            )
            raise AlreadyDecided(f"Request #{request_id} is already {request.status}{by}.")
        if actor.kind == ActorKind.AGENT:
            raise NotAllowed("Automation cannot approve or deny requests.")
        if actor.id == request.requester_id:
            return request
        if actor.id not in request.approvers.get("users", []):
            groups = ", ".join(request.approvers.get("groups", [])) or "nobody"
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
        return request

    # --- execution ----------------------------------------------------------------------------

    def recover(self, *, stale_after: float = 900.0) -> list[int]:
        """Finish what a stopped bot left behind; returns the IDs of the requests it touched.

        A request left ``approved`` never started, so it is executed now (the guarded
        transition keeps another instance from running it too). One ``executing`` for more than
        ``stale_after`` seconds may or may not have taken effect: it is marked ``failed`` with a
        message that says so, rather than run twice. Younger ones may belong to another live
        instance and are left alone.
        """
        cutoff = self._clock() - timedelta(seconds=stale_after)
        with self._sessions() as session:
            approved = session.scalars(
                select(Request.id).where(Request.status == Status.APPROVED.value)
            ).all()
            interrupted = session.scalars(
                select(Request.id).where(
                    Request.status == Status.EXECUTING.value, Request.updated_at < cutoff
                )
            ).all()
        for request_id in interrupted:
            log.warning("request #%s was interrupted while executing", request_id)
            self._finish(
                request_id,
                Status.FAILED,
                error=(
                    "opsgate stopped while executing this request; whether it took effect is "
                    "unknown: check the target before asking again"
                ),
                detail={"interrupted": True},
            )
        for request_id in approved:
            log.info("request #%s was approved before a restart; executing it now", request_id)
            self._execute(request_id)
        return [*interrupted, *approved]

    def _execute(self, request_id: int) -> None:
        """Run an approved request exactly once: approved → executing → succeeded | failed."""
        with self._sessions.begin() as session:
            request = self._load(session, request_id)
            if not transition(
                session,
                request,
                expected=Status.APPROVED,
                to=Status.EXECUTING,
                actor=SYSTEM,
                now=self._clock(),
            ):
                return
            kind = self._actions[request.action]
            params = kind.params_model.model_validate(request.params)
            stored: dict[str, Any] = request.preview
            preview = Preview(
                target=stored["target"], lines=tuple(stored["lines"]), facts=stored["facts"]
            )
            target = Target(
                environment=request.environment or "",
                kube_context=stored.get("kube_context"),
                namespace=request.namespace,
            )
        self._notify(request_id, "executing")
        try:
            outcome = kind.execute(params, target=target, preview=preview)
        except ActionError as exc:
            log.warning("request #%s failed: %s", request_id, exc)
            self._finish(request_id, Status.FAILED, error=str(exc), detail={"error": str(exc)})
        else:
            self._finish(request_id, Status.SUCCEEDED, result=outcome.summary, detail=outcome.facts)

    def _finish(
        self,
        request_id: int,
        to: Status,
        *,
        detail: dict[str, Any],
        result: str | None = None,
        error: str | None = None,
    ) -> None:
        if self._move(request_id, Status.EXECUTING, to, detail=detail, result=result, error=error):
            self._notify(request_id, to.value)

    # --- reading ------------------------------------------------------------------------------

    def get(self, request_id: int) -> RequestView:
        """The current state of request ``request_id``. Raises :class:`UnknownRequest`."""
        with self._sessions() as session:
            request = session.get(Request, request_id)
            if request is None:
                raise UnknownRequest(f"There is no request #{request_id}.")
            approved_by = session.scalars(
                select(Approval.approver_id)
                .where(Approval.request_id == request_id)
                .order_by(Approval.id)
            ).all()
            return _view(request, tuple(approved_by))

    def latest(self, *, requester_id: str, limit: int) -> list[RequestView]:
        """The ``limit`` most recent requests of ``requester_id``, newest first."""
        with self._sessions() as session:
            ids = session.scalars(
                select(Request.id)
                .where(Request.requester_id == requester_id)
                .order_by(Request.id.desc())
                .limit(limit)
            ).all()
        return [self.get(request_id) for request_id in ids]

    @staticmethod
    def _load(session: Session, request_id: int) -> Request:
        request = session.get(Request, request_id, populate_existing=True)
        if request is None:
            raise UnknownRequest(f"There is no request #{request_id}.")
        return request

    def _notify(self, request_id: int, event: str) -> None:
        try:
            self._notifier.request_changed(self.get(request_id), event=event)
        except NotifyError as exc:
            # The change itself is committed and audited; only its announcement failed.
            log.error("request #%s: could not announce '%s': %s", request_id, event, exc)


def _view(request: Request, approved_by: tuple[str, ...]) -> RequestView:
    preview: dict[str, Any] = request.preview or {}
    return RequestView(
        id=request.id,
        action=request.action,
        status=request.status,
        requester_id=request.requester_id,
        requester_kind=request.requester_kind,
        target=request.target,
        environment=request.environment,
        namespace=request.namespace,
        reason=request.reason,
        preview_lines=tuple(preview.get("lines", ())),
        rule=request.rule,
        approver_groups=tuple(request.approvers.get("groups", [])),
        min_approvals=request.min_approvals,
        approved_by=approved_by,
        decided_by=request.decided_by,
        result=request.result,
        error=request.error,
        origin_channel_id=request.origin_channel_id,
        incident=request.incident,
        response_url=request.response_url,
        approval_channel=request.approval_channel_id,
        approval=(
            MessageRef(request.approval_channel_id, request.approval_ts)
            if request.approval_channel_id and request.approval_ts
            else None
        ),
        thread=(
            MessageRef(request.thread_channel_id, request.thread_ts)
            if request.thread_channel_id and request.thread_ts
            else None
        ),
        created_at=request.created_at,
        updated_at=request.updated_at,
    )
