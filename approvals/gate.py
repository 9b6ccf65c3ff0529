"""The gate: a request is checked against the policy, persisted, approved or denied, executed once.

:class:`Gate` is what the Slack listeners call. Deciding is pure (:func:`approvals.policy.decide`);
the gate does the side effects: it writes the request and its audit events (one transaction per
transition), asks the :class:`~approvals.notifier.Notifier` to show them, and runs the action.
Errors meant for the person who asked or clicked are :class:`GateError` subclasses whose message
can be shown as it is.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any, Literal, Protocol

from pydantic import BaseModel
from sqlalchemy import ColumnElement, cast, delete, exists, func, insert, select, text, update
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import InstrumentedAttribute, Session, sessionmaker

from actions.base import ActionKind, Preview, Target
from actions.errors import ActionError, OutcomeUnknown, RolloutFailed
from approvals import autonomy
from approvals.explain import Explained, explain
from approvals.grants import GrantError, GrantService, GrantView
from approvals.lifecycle import SYSTEM, Actor, rows_changed, transition, transition_many
from approvals.lifecycle import record as record_event
from approvals.models import ActorKind, Approval, AuditEvent, Request, SlackEvent, Status
from approvals.notifier import MessageRef, Notifier, NotifyError, RequestView, StepView
from approvals.paging import PAGE_SIZE, Page, among, chunks, page_window
from approvals.policy import (
    Decision,
    DecisionReason,
    LoadedPolicy,
    NamespaceError,
    Outcome,
    Refusal,
    RequestContext,
    Step,
    agent_of,
    approval_refusal,
    count_satisfied,
    decide,
    is_incident_channel,
    request_reversible,
    resolve_environment,
    resolve_groups,
    step_members,
)
from approvals.ratelimit import RequestRateLimiter
from approvals.rollouts import RolloutChecker, RolloutJob, rollout_state

log = logging.getLogger(__name__)


STRANDED_AFTER = 300.0
"""Seconds after which a pending request that was never put to its approvers is stranded."""


class GateError(Exception):
    """An answer for the person who asked or clicked; ``str()`` is the message to show them."""


class Rejected(GateError):
    """The request cannot be made: bad namespace, missing target, no rule allows it, …"""


class NotAllowed(GateError):
    """The clicker may not decide this request."""


class AlreadyDecided(GateError):
    """The request is no longer pending (or this person already approved it)."""


class UnknownRequest(GateError):
    """No request has this ID (or none the person asking may see)."""


class RateLimited(Rejected):
    """The requester made as many new requests in the last minute as the policy allows."""


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
    path: str | None = None
    break_glass: str | None = None


class UsergroupDirectory(Protocol):
    """Members of Slack user groups (``S…`` IDs), cached; ``bot.usergroups`` implements it."""

    def members(self, usergroup_id: str) -> frozenset[str]: ...

    def refresh(self) -> None: ...


class Gate:
    """Submit, approve, deny and execute requests.

    ``sessions`` makes database sessions; ``policy`` returns the policy in force (it may be reloaded
    between calls); ``actions`` maps a command word to its request kind; ``clock`` returns an aware
    UTC ``datetime``; ``rollouts`` reads a rollout once (:class:`actions.rollout.RolloutReader`)
    for :meth:`follow_rollouts`, which ends a request ``rollout_timeout`` seconds after its change
    at the latest; ``rate_limiter`` counts each requester's new requests (default: one in this
    process's memory, see :mod:`approvals.ratelimit`).
    """

    def __init__(
        self,
        *,
        sessions: sessionmaker[Session],
        policy: Callable[[], LoadedPolicy],
        actions: Mapping[str, ActionKind],
        notifier: Notifier,
        clock: Callable[[], datetime],
        directory: UsergroupDirectory | None = None,
        grants: GrantService | None = None,
        history: Callable[[str | None, str, str], list[str]] | None = None,
        rollouts: RolloutChecker,
        rollout_timeout: float = 300.0,
        rate_limiter: RequestRateLimiter | None = None,
    ) -> None:
        self._sessions = sessions
        self._policy = policy
        self._actions = actions
        self._notifier = notifier
        self._clock = clock
        self._directory = directory
        self.grants = grants
        self._history = history
        self._rollout_timeout = rollout_timeout
        self._rollout_job = RolloutJob(
            sessions=sessions,
            checker=rollouts,
            clock=clock,
            finish=lambda rid, to, detail, result, error: self._finish(
                rid, to, detail=detail, result=result, error=error
            ),
        )
        self._rate_limiter = rate_limiter or RequestRateLimiter()

    def now(self) -> datetime:
        """The gate's clock: an aware UTC datetime."""
        return self._clock()

    def actor(self, actor: Actor, loaded: LoadedPolicy | None = None) -> Actor:
        """``actor`` as the policy (``loaded``, default: the one in force) sees it: an ID the
        policy lists under ``agents`` is automation (``ActorKind.AGENT``) whatever the caller
        said; the policy never makes anyone a person."""
        if actor.kind == ActorKind.HUMAN and actor.id in (loaded or self._policy()).policy.agents:
            return Actor(actor.id, ActorKind.AGENT)
        return actor

    def agent_of(self, *ids: str | None) -> str | None:
        """The first of ``ids`` (a Slack message's ``user``, ``bot_id``, ``app_id``) that the
        policy lists under ``agents``, or None; see :func:`approvals.policy.agent_of`."""
        return agent_of(self._policy().policy, *ids)

    def _groups(self, loaded: LoadedPolicy) -> dict[str, frozenset[str]]:
        """Each policy group's members now: its ``users`` and the members of its ``usergroups``."""
        members = self._directory.members if self._directory else (lambda _g: frozenset())
        return resolve_groups(loaded.policy, members)

    # --- submission ---------------------------------------------------------------------------

    def submit(self, submission: Submission) -> RequestView:
        """Check, persist and announce a request; with ``approval: auto`` execute it at once.

        Raises :class:`Rejected` (and records a ``rejected`` audit event) when the namespace is not
        in the policy, the target cannot be read, or the policy does not allow the request;
        :class:`RateLimited` (a ``Rejected``), before anything else is looked at, when the
        requester already made the policy's ``rate_limit`` of requests in the last minute.
        """
        loaded = self._policy()
        submission = replace(submission, requester=self.actor(submission.requester, loaded))
        try:
            self._check_rate(submission.requester, loaded)
            return self._submit(submission, loaded)
        except Rejected as exc:
            self._audit_rejection(submission, loaded, str(exc))
            raise

    def explain(self, submission: Submission) -> Explained:
        """The decision and preview ``submission`` would get, filing, auditing and announcing
        nothing (:func:`approvals.explain.explain`). Raises :class:`Rejected` for a kind opsgate
        cannot execute or a namespace the policy does not know."""
        loaded = self._policy()
        sub = replace(submission, requester=self.actor(submission.requester, loaded))
        kind = self._actions.get(sub.action)
        if kind is None:
            raise Rejected(f"opsgate cannot execute '{sub.action}' requests yet")
        try:
            return explain(
                loaded,
                kind,
                params=sub.params,
                requester=sub.requester,
                namespace=sub.namespace,
                env=sub.env,
                path=sub.path,
                reason=sub.reason,
                break_glass=sub.break_glass is not None,
                groups=self._groups(loaded),
                now=self._clock(),
                adjust=lambda d: self._earned(d, sub, loaded, kind, self._clock()),
            )
        except NamespaceError as exc:
            raise Rejected(str(exc)) from exc

    def _earned(
        self,
        decision: Decision,
        sub: Submission,
        loaded: LoadedPolicy,
        kind: ActionKind,
        now: datetime,
    ) -> Decision:
        """``decision``, made ``auto`` where the agent has earned autonomy under its rule
        (:func:`approvals.autonomy.apply`)."""
        return autonomy.apply(
            self._sessions,
            loaded,
            decision,
            requester=sub.requester,
            reversible=kind.reversible,
            break_glass=sub.break_glass is not None,
            now=now,
        )

    def undo_autonomy(self, request_id: int, actor: Actor) -> RequestView:
        """The Undo button of an earned-autonomy notice: request ``request_id``'s agent needs
        approval again under its rule (:func:`approvals.autonomy.undo`); returns the request.
        Raises :class:`UnknownRequest` or :class:`NotAllowed` (not one of the rule's approvers,
        or a request not made by an agent)."""
        view = self.get(request_id)
        if view.requester_kind != ActorKind.AGENT or view.rule is None:
            raise NotAllowed(f"Request #{request_id} was not made by an agent.")
        try:
            autonomy.undo(
                self._sessions,
                self._policy(),
                self.group_members(),
                agent_id=view.requester_id,
                rule=view.rule,
                by=self.actor(actor),
                now=self._clock(),
                request_id=request_id,
            )
        except autonomy.UndoRefused as exc:
            raise NotAllowed(str(exc)) from exc
        log.info("request #%s: %s took %s's autonomy back", request_id, actor.id, view.requester_id)
        return view

    def policy(self) -> LoadedPolicy:
        """The policy in force (it may be reloaded between calls)."""
        return self._policy()

    def group_members(self) -> dict[str, frozenset[str]]:
        """Each policy group's members now (its users and its Slack user groups' members)."""
        return self._groups(self._policy())

    def _check_rate(self, requester: Actor, loaded: LoadedPolicy) -> None:
        """Count a new request of ``requester``; raise :class:`RateLimited` when the policy's
        ``rate_limit`` for their kind is used up (the refused request is not counted)."""
        limit = loaded.policy.rate_limit.per_minute(agent=requester.kind == ActorKind.AGENT)
        if not self._rate_limiter.hit(requester, limit):
            raise RateLimited(
                f"You have made {limit} requests in the last minute; opsgate allows {limit} per "
                "minute. Wait a moment and try again; nothing was changed."
            )

    def _submit(self, sub: Submission, loaded: LoadedPolicy) -> RequestView:
        kind = self._actions.get(sub.action)
        if kind is None:
            raise Rejected(f"opsgate cannot execute '{sub.action}' requests yet")
        policy = loaded.policy
        namespace, env = sub.namespace, sub.env
        if sub.action == "extend":
            namespace, env = self._grant_scope(sub)
        environment: str | None = None
        context: str | None = None
        if namespace is not None:
            try:
                environment = resolve_environment(policy, namespace, env)
            except NamespaceError as exc:
                raise Rejected(str(exc)) from exc
            context = policy.environments[environment].kube_context
        incident = is_incident_channel(policy, sub.origin.channel_name)
        now = self._clock()
        groups = self._groups(loaded)
        requester_kind: Literal["human", "agent"] = (
            "agent" if sub.requester.kind == ActorKind.AGENT else "human"
        )
        decision = decide(
            loaded,
            RequestContext(
                action=sub.action,
                requester=sub.requester.id,
                requester_kind=requester_kind,
                environment=environment,
                namespace=namespace,
                path=sub.path,
                incident=incident,
                reason=sub.reason,
                break_glass=sub.break_glass is not None,
                at=now,
                kind_reversible=request_reversible(
                    policy, sub.action, sub.params, kind.reversible, environment
                ),
            ),
            groups=groups,
        )
        decision = self._earned(decision, sub, loaded, kind, now)
        if decision.outcome is Outcome.DENY:
            raise Rejected(f"Not allowed: {decision.message}")
        consumers_namespace = (decision.settings.get("rotate") or {}).get("namespace")
        if context is None and consumers_namespace:
            # rotate/restore without -n: the rule's consumers run in the cluster of their
            # namespace's environment, not in the kubeconfig's current context
            try:
                consumers_env = resolve_environment(policy, consumers_namespace, env)
            except NamespaceError as exc:
                raise Rejected(f"the rule's rotate.namespace: {exc}") from exc
            context = policy.environments[consumers_env].kube_context
            environment = environment or consumers_env
        identity = policy.identities.get(sub.requester.id)
        settings: dict[str, Any] = {
            **decision.settings,
            "identity": identity.model_dump() if identity is not None else None,
        }
        target = Target(
            environment=environment or "",
            kube_context=context,
            namespace=namespace,
            settings=settings,
        )
        try:
            preview = kind.preview(sub.params, target=target)
        except ActionError as exc:
            raise Rejected(str(exc)) from exc

        break_glass = decision.outcome is Outcome.BREAK_GLASS
        with self._sessions.begin() as session:
            request = Request(
                action=sub.action,
                params=sub.params.model_dump(mode="json"),
                status=Status.PENDING.value,
                requester_id=sub.requester.id,
                requester_kind=requester_kind,
                environment=environment,
                namespace=namespace,
                target=preview.target,
                reason=sub.reason,
                origin_channel_id=sub.origin.channel_id,
                origin_channel_name=sub.origin.channel_name,
                incident=incident,
                response_url=sub.origin.response_url,
                rule=decision.rule_label,
                policy_sha256=loaded.sha256,
                min_approvals=0 if break_glass else decision.min_approvals,
                approval_channel_id=decision.approval_channel,
                approvers={
                    "groups": list(decision.approver_groups),
                    "users": sorted(decision.approvers),
                    "steps": [
                        {
                            "groups": list(step.groups),
                            "users": sorted(step.approvers),
                            "min_approvals": step.min_approvals,
                        }
                        for step in decision.steps
                    ],
                    "escalate_to": decision.escalate_to,
                    "escalate_users": sorted(decision.escalate_to_users),
                    "escalate_usergroups": (
                        list(policy.groups[decision.escalate_to].usergroups)
                        if decision.escalate_to in policy.groups
                        else []
                    ),
                    "freeze": decision.freeze,
                },
                preview={
                    "target": preview.target,
                    "lines": list(preview.lines),
                    "facts": preview.facts,
                    "kube_context": context,
                    "settings": settings,
                },
                expires_at=(
                    now + timedelta(seconds=decision.pending_ttl)
                    if decision.outcome is Outcome.APPROVAL
                    else None
                ),
                escalate_at=(
                    now + timedelta(seconds=decision.escalate_after)
                    if decision.outcome is Outcome.APPROVAL and decision.escalate_after
                    else None
                ),
                break_glass=break_glass,
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

        self._announce(self.get(request_id))
        if decision.outcome is Outcome.AUTO:
            self._move(
                request_id,
                Status.PENDING,
                Status.APPROVED,
                event="auto_approved",
                decided_by=SYSTEM.id,
            )
            self._notify(request_id, "approved")
            if decision.reason is DecisionReason.EARNED_AUTONOMY:
                self._notify(request_id, "autonomy")  # the notice with its Undo button
            self._execute(request_id)
        elif break_glass:
            self._break_glass(request_id, sub)
        return self.get(request_id)

    def _announce(self, view: RequestView) -> None:
        """Post the requester's announcement, then the approval message, and store where each
        is, so that every later update finds them.

        The approval message's reference is stored the moment it exists, with the thread's in
        the same write (a click can only come once the approval message exists); without an
        approval message, the thread's is stored alone. A decision that lands before the
        reference is stored is shown on the card when it is stored. Raises :class:`Rejected`
        (the request is cancelled, and its requester told) when the approval message cannot be
        posted.
        """
        request_id = view.id
        waiting: list[MessageRef] = []  # the thread's reference, stored with the approval's
        stored: set[str] = set()

        def store(approval: MessageRef | None, thread: MessageRef | None) -> bool:
            """Store the references; True when the request is no longer pending."""
            with self._sessions.begin() as session:
                request = self._load(session, request_id)
                if approval is not None:
                    request.approval_channel_id = approval.channel_id
                    request.approval_ts = approval.ts
                if thread is not None:
                    request.thread_channel_id = thread.channel_id
                    request.thread_ts = thread.ts
                return request.status != Status.PENDING.value

        def thread_posted(ref: MessageRef) -> None:
            stored.add("thread")
            if view.needs_approval and view.approval_channel is not None:
                waiting.append(ref)
            else:
                store(None, ref)

        def approval_posted(ref: MessageRef) -> None:
            stored.add("approval")
            if store(ref, waiting.pop() if waiting else None):
                # a click (or an expiry) came before the reference was stored, so its update
                # found no message: whichever of the two comes second updates the card
                self._notifier.card_changed(self.get(request_id))

        try:
            refs = self._notifier.request_opened(
                view, approval_posted=approval_posted, thread_posted=thread_posted
            )
        except NotifyError as exc:
            if waiting:  # the requester hears of the cancellation in their thread
                store(None, waiting.pop())
            self._finish_unannounced(request_id, str(exc))
            self._notify(request_id, "cancelled")
            raise Rejected(
                f"Request #{request_id} was cancelled: the approval message could not be "
                f"posted ({exc}). Nothing was changed."
            ) from exc
        approval = refs.approval if "approval" not in stored else None
        thread = waiting.pop() if waiting else (refs.thread if "thread" not in stored else None)
        if approval is not None or thread is not None:
            store(approval, thread)

    def _break_glass(self, request_id: int, sub: Submission) -> None:
        """Execute at once, loudly: the audit channel gets a notice and a review item."""
        self._move(
            request_id,
            Status.PENDING,
            Status.APPROVED,
            event="break_glass",
            detail={"justification": sub.break_glass},
            decided_by=sub.requester.id,
        )
        try:
            review = self._notifier.review_opened(self.get(request_id))
        except NotifyError as exc:
            log.error("request #%s: break-glass notice failed: %s", request_id, exc)
            review = None
        if review is not None:
            with self._sessions.begin() as session:
                request = self._load(session, request_id)
                request.review_channel_id = review.channel_id
                request.review_ts = review.ts
        self._execute(request_id)

    def _grant_scope(self, sub: Submission) -> tuple[str | None, str | None]:
        """The namespace and environment of the grant an ``extend`` request names."""
        grant_id = getattr(sub.params, "grant_id", None)
        try:
            grant = self.grants.get(grant_id) if self.grants and grant_id else None
        except GrantError:
            grant = None
        if grant is None or grant.status != "active":
            raise Rejected(f"There is no active grant #{grant_id}; `/ops grants` lists yours.")
        if grant.grantee_id != sub.requester.id:
            raise Rejected(f"Grant #{grant_id} is not yours; only its grantee may extend it.")
        return grant.namespace, grant.environment

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
        """Record ``approver``'s approval; execute once every step has enough distinct approvers.

        Raises :class:`UnknownRequest`, :class:`NotAllowed` (the policy's
        :func:`~approvals.policy.approval_refusal`: an agent, the requester, not an approver) or
        :class:`AlreadyDecided` (no longer pending, or already approved by them). The request's
        row is locked while the approval is counted (see :meth:`_decidable`), so of approvers
        clicking at once exactly one completes the quorum; a double click or a Slack retry
        executes nothing twice.
        """
        loaded = self._policy()
        approver = self.actor(approver, loaded)
        now = self._clock()
        approved = False
        try:
            with self._sessions.begin() as session:
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
                    _steps(request), list(approvals), request.requester_id
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
            self._notify(request_id, "approved")
            self._execute(request_id)
        else:
            self._notify(request_id, "approval_added")
        return self.get(request_id)

    def deny(self, request_id: int, actor: Actor) -> RequestView:
        """Deny a pending request, or cancel it when ``actor`` is its requester.

        Raises :class:`UnknownRequest`, :class:`NotAllowed` (an agent, not an approver) or
        :class:`AlreadyDecided`; the request's row is locked as for :meth:`approve`.
        """
        loaded = self._policy()
        actor = self.actor(actor, loaded)
        now = self._clock()
        with self._sessions.begin() as session:
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
        self._notify(request_id, to.value)
        return self.get(request_id)

    def cancel(self, request_id: int, requester: Actor) -> RequestView:
        """Withdraw ``requester``'s own pending request (a person or an agent: withdrawing
        decides nothing). Raises :class:`UnknownRequest` (also for someone else's request) or
        :class:`AlreadyDecided`."""
        actor = self.actor(requester)
        with self._sessions.begin() as session:
            request = self._locked(session, request_id)
            if request.requester_id != actor.id:
                raise UnknownRequest(f"There is no request #{request_id} of yours.")
            if not transition(
                session,
                request,
                expected=Status.PENDING,
                to=Status.CANCELLED,
                actor=actor,
                now=self._clock(),
                decided_by=actor.id,
            ):
                raise AlreadyDecided(f"Request #{request_id} is already {request.status}.")
        self._notify(request_id, Status.CANCELLED.value)
        return self.get(request_id)

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
                _steps(request), actor.id, requester=request.requester_id, actor_kind=actor.kind
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
            if self._directory is None:
                return
            self._directory.refresh()
        groups = self._groups(loaded)
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
        loaded = self._policy()
        actor = self.actor(actor, loaded)
        now = self._clock()
        with self._sessions.begin() as session:
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
        self._notify(request_id, "reviewed")
        return self.get(request_id)

    # --- reads and grants ---------------------------------------------------------------------

    def history(self, namespace: str, env: str | None, name: str) -> list[str]:
        """The rollout history of Deployment ``name`` in ``namespace``, as lines for Slack.

        Answered without approval, to anyone, for a namespace the policy places in an
        environment. Raises :class:`Rejected` for an unknown namespace or Deployment.
        """
        policy = self._policy().policy
        try:
            environment = resolve_environment(policy, namespace, env)
        except NamespaceError as exc:
            raise Rejected(str(exc)) from exc
        if self._history is None:
            raise Rejected("opsgate cannot read rollout histories here")
        try:
            return self._history(policy.environments[environment].kube_context, namespace, name)
        except ActionError as exc:
            raise Rejected(str(exc)) from exc

    def grant_approvers(self) -> frozenset[str]:
        """Everyone who may approve some access request: they see and may end every grant."""
        loaded = self._policy()
        groups = self._groups(loaded)
        names: set[str] = set()
        for rule in loaded.policy.rules:
            if "access" in rule.match.action:
                names.update(rule.approvers)
                for step in rule.steps or ():
                    names.update(step.approvers)
        return frozenset(u for name in names for u in groups.get(name, frozenset()))

    def active_grants(
        self, user_id: str, *, page: int = 1, size: int = PAGE_SIZE
    ) -> tuple[Page[GrantView], bool]:
        """Page ``page`` of ``user_id``'s active grants, or of every active grant when they
        approve grants (the flag says which), the soonest to end first, with how many there are.
        Raises ``ValueError`` for a page out of range."""
        if self.grants is None:
            return Page((), 0, page, size), False
        everyone = user_id in self.grant_approvers()
        return self.grants.active(None if everyone else user_id, page=page, size=size), everyone

    def revoke_grant(self, grant_id: int, actor: Actor, *, reason: str | None = None) -> GrantView:
        """End grant ``grant_id`` now: its grantee or an approver may, without approval.

        Raises :class:`UnknownRequest` or :class:`NotAllowed`.
        """
        actor = self.actor(actor)
        if self.grants is None:
            raise UnknownRequest(f"There is no grant #{grant_id}.")
        try:
            grant = self.grants.get(grant_id)
        except GrantError as exc:
            raise UnknownRequest(str(exc)) from exc
        if actor.kind == ActorKind.AGENT and grant.grantee_id != actor.id:
            raise NotAllowed("Automation can only end its own grants.")
        if (
            grant.grantee_id != actor.id
            and actor.id not in grant.approver_ids  # an approver of its request
            and actor.id not in self.grant_approvers()
        ):
            raise NotAllowed(
                f"Only the grantee or an approver may end grant #{grant_id}; nothing changed."
            )
        why = reason or ("ended early by its grantee" if grant.grantee_id == actor.id else None)
        try:
            return self.grants.revoke(grant_id, actor=actor, reason=why)
        except GrantError as exc:
            raise AlreadyDecided(str(exc)) from exc

    def grant_ended(self, grant_id: int, why: str) -> None:
        """Show on the access request that its grant ended (``why``: expired, revoked early by
        …): the approval message is updated and the requester's thread told."""
        with self._sessions.begin() as session:
            request = session.get(Request, grant_id)
            if request is None or request.status != Status.REVOKED.value:
                return
            request.result = f"access ended: {why}"
        self._notify(grant_id, "revoked")

    def first_delivery(self, event_id: str) -> bool:
        """True the first time Slack delivers event ``event_id``, False for a redelivery (Slack
        retries an Events API event it got no answer to, with the same ``event_id``, possibly to
        another replica: the database remembers it for every replica)."""
        try:
            with self._sessions.begin() as session:
                session.add(SlackEvent(event_id=event_id, received_at=self._clock()))
        except IntegrityError:
            return False
        return True

    def forget_events(self, *, older_than: float = 86400.0) -> int:
        """Forget deliveries older than ``older_than`` seconds (Slack stops retrying after about
        an hour); returns how many."""
        cutoff = self._clock() - timedelta(seconds=older_than)
        with self._sessions.begin() as session:
            return rows_changed(session, delete(SlackEvent).where(SlackEvent.received_at < cutoff))

    # --- timers -------------------------------------------------------------------------------

    def expire_pending(self) -> list[int]:
        """Expire every pending request whose TTL has passed; returns their IDs.

        Idempotent, and safe with several instances: one guarded ``UPDATE … WHERE status =
        'pending' AND expires_at <= now RETURNING`` decides which requests this call expires
        (:func:`~approvals.lifecycle.transition_many`), in one transaction with their audit
        events; then each is announced. A bounded number of queries, however many are due.
        """
        now = self._clock()
        with self._sessions.begin() as session:
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
        self._notify_many(expired, "expired")
        return expired

    def cancel_stranded(self, *, older_than: float = STRANDED_AFTER) -> list[int]:
        """Cancel every request left ``pending`` by a bot that stopped between filing it and
        putting it to its approvers (no approval message after ``older_than`` seconds; an
        auto-approved or break-glass request is pending for milliseconds only), and tell its
        requester that nothing was changed. Returns their IDs.

        Idempotent, and safe with several instances: each is a guarded transition.
        """
        cutoff = self._clock() - timedelta(seconds=older_than)
        with self._sessions() as session:
            stranded = session.scalars(
                select(Request.id).where(
                    Request.status == Status.PENDING.value,
                    Request.approval_ts.is_(None),
                    Request.created_at < cutoff,
                )
            ).all()
        cancelled = []
        for request_id in stranded:
            if self._move(
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
                self._notify(request_id, "cancelled")
        return cancelled

    def escalate_due(self) -> list[int]:
        """Ping the ``escalate_to`` group of every pending request nobody has decided in
        ``escalate_after`` seconds, once; returns their IDs.

        One guarded ``UPDATE … SET escalated_at … WHERE escalated_at IS NULL RETURNING`` marks
        them (so each is escalated once, whatever the number of instances), in one transaction
        with their audit events; then each is announced.
        """
        now = self._clock()
        with self._sessions.begin() as session:
            rows = session.execute(
                update(Request)
                .where(
                    Request.status == Status.PENDING.value,
                    Request.escalate_at.is_not(None),
                    Request.escalate_at <= now,
                    Request.escalated_at.is_(None),
                )
                .values(escalated_at=now, updated_at=now)
                .returning(
                    Request.id,
                    Request.action,
                    Request.target,
                    Request.rule,
                    Request.policy_sha256,
                    Request.approvers,
                )
                .execution_options(synchronize_session=False)
            ).all()
            if rows:
                session.execute(
                    insert(AuditEvent),
                    [
                        {
                            "request_id": row.id,
                            "event": "escalated",
                            "from_status": Status.PENDING.value,
                            "to_status": Status.PENDING.value,
                            "actor_id": SYSTEM.id,
                            "actor_kind": SYSTEM.kind,
                            "action": row.action,
                            "target": row.target,
                            "rule": row.rule,
                            "policy_sha256": row.policy_sha256,
                            "detail": {"escalate_to": (row.approvers or {}).get("escalate_to")},
                            "created_at": now,
                        }
                        for row in rows
                    ],
                )
        escalated = sorted(row.id for row in rows)
        self._notify_many(escalated, "escalated")
        return escalated

    # --- execution ----------------------------------------------------------------------------

    def recover(self, *, stale_after: float = 900.0) -> list[int]:
        """Finish what a stopped bot left behind; returns the IDs of the requests it touched.

        A request left ``approved`` never started, so it is executed now (the guarded
        transition keeps another instance from running it too). One ``executing`` for more than
        ``stale_after`` seconds, with no rollout being followed, may or may not have taken
        effect: it is marked ``unknown`` with a message that says so, rather than run twice.
        Younger ones may belong to another live instance and are left alone. One whose change
        was applied and whose rollout is being followed is left to :meth:`follow_rollouts`. One
        left ``pending`` before it was put to its approvers is cancelled
        (:meth:`cancel_stranded`).
        """
        cutoff = self._clock() - timedelta(seconds=stale_after)
        with self._sessions() as session:
            approved = session.scalars(
                select(Request.id).where(Request.status == Status.APPROVED.value)
            ).all()
            interrupted = session.scalars(
                select(Request.id).where(
                    Request.status == Status.EXECUTING.value,
                    Request.updated_at < cutoff,
                    Request.rollout.is_(None),
                )
            ).all()
        for request_id in interrupted:
            log.warning("request #%s was interrupted while executing", request_id)
            self._finish(
                request_id,
                Status.UNKNOWN,
                error=(
                    "opsgate stopped while executing this request; it may have taken effect: "
                    "check the target before asking again"
                ),
                detail={"interrupted": True},
            )
        for request_id in approved:
            log.info("request #%s was approved before a restart; executing it now", request_id)
            self._execute(request_id)
        return [*interrupted, *approved, *self.cancel_stranded()]

    def _execute(self, request_id: int) -> None:
        """Run an approved request exactly once: approved → executing → succeeded | failed |
        unknown."""
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
                settings={
                    **stored.get("settings", {}),
                    "request_id": request_id,
                    "requester_id": request.requester_id,
                },
            )
        self._notify(request_id, "executing")
        try:
            outcome = kind.execute(params, target=target, preview=preview)
        except OutcomeUnknown as exc:  # sent, unanswered, and the read-back could not tell
            log.warning("request #%s may have taken effect: %s", request_id, exc)
            self._finish(
                request_id, Status.UNKNOWN, error=str(exc), detail={**exc.facts, "error": str(exc)}
            )
            return
        except ActionError as exc:
            log.warning("request #%s failed: %s", request_id, exc)
            # a RolloutFailed change WAS applied: its facts (what, the rollout) go to the audit
            facts = exc.facts if isinstance(exc, RolloutFailed) else {}
            self._finish(
                request_id, Status.FAILED, error=str(exc), detail={**facts, "error": str(exc)}
            )
            return
        except Exception as exc:  # a bug: the requester must still hear of it
            # only the type's name: an unexpected message might hold anything, a secret included
            log.error(
                "request #%s: unexpected %s while executing",
                request_id,
                type(exc).__name__,
                exc_info=True,
            )
            why = (
                f"opsgate hit an unexpected error ({type(exc).__name__}) while executing; "
                "it may have taken effect: check the target before asking again"
            )
            self._finish(request_id, Status.UNKNOWN, error=why, detail={"error": why})
            return
        if outcome.rollout is not None:
            # applied; follow_rollouts ends the request when its rollout does
            with self._sessions.begin() as session:
                self._load(session, request_id).rollout = rollout_state(
                    outcome, self._clock(), self._rollout_timeout
                )
            return
        if "grant" in outcome.facts and self.grants is not None:
            with self._sessions.begin() as session:
                self._load(session, request_id).result = outcome.summary
            try:
                self.grants.activate(request_id, outcome.facts, SYSTEM)
            except GrantError as exc:
                log.error("request #%s: the grant could not be recorded: %s", request_id, exc)
                why = (
                    f"access was set up but could not be recorded ({exc}); the drift check "
                    "removes it within minutes"
                )
                self._finish(request_id, Status.FAILED, error=why, detail={"error": str(exc)})
                return
            self._notify(request_id, "active")
            return
        self._finish(request_id, Status.SUCCEEDED, result=outcome.summary, detail=outcome.facts)

    def follow_rollouts(self) -> list[int]:
        """Read each rollout being followed once and finish the requests whose rollout ended
        (:class:`approvals.rollouts.RolloutJob`); returns their IDs. Run periodically."""
        return self._rollout_job.run()

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

    def get_for(self, request_id: int, viewer: Actor) -> RequestView:
        """Request ``request_id`` as :meth:`get` gives it, if ``viewer`` may see it: its requester
        (automation sees only its own requests), the people who may approve it (its stored
        approvers, those who decided it, and the current members of its approver groups) and
        the members of the policy's ``audit_readers`` groups.

        Raises :class:`UnknownRequest` with the same message for a request ``viewer`` may not
        see as for one that does not exist, so that an ID's existence is not given away.
        """
        loaded = self._policy()
        viewer = self.actor(viewer, loaded)
        hidden = UnknownRequest(f"There is no request #{request_id}.")
        with self._sessions() as session:
            request = session.get(Request, request_id)
            if request is None:
                raise hidden
            stored: dict[str, Any] = dict(request.approvers)
        view = self.get(request_id)
        if viewer.id == view.requester_id:
            return view
        if viewer.kind == ActorKind.AGENT:
            raise hidden
        people = {*stored.get("users", []), *view.approved_by, view.decided_by, view.reviewed_by}
        if viewer.id in people:
            return view
        groups = {
            *stored.get("groups", []),
            *(g for step in stored.get("steps", []) for g in step["groups"]),
            *loaded.policy.audit_readers,
        }
        if viewer.id in step_members(groups, self._groups(loaded), loaded.policy.agents):
            return view
        if self._directory is not None:  # someone just added to a Slack user group
            self._directory.refresh()
            if viewer.id in step_members(groups, self._groups(loaded), loaded.policy.agents):
                return view
        log.info("request #%s: not shown to %s, who may not see it", request_id, viewer.id)
        raise hidden

    def views(self, request_ids: Sequence[int]) -> list[RequestView]:
        """The requests ``request_ids`` (unknown IDs left out), in that order: two queries per
        :data:`~approvals.paging.IN_CHUNK` IDs (the requests, then their approvals)."""
        found: dict[int, RequestView] = {}
        with self._sessions() as session:
            for chunk in chunks(sorted(set(request_ids))):
                requests = session.scalars(
                    select(Request).where(among(session, Request.id, chunk))
                ).all()
                found.update((view.id, view) for view in _views(session, requests))
        return [found[i] for i in request_ids if i in found]

    def pending_for(
        self, approver_id: str, *, page: int = 1, size: int = PAGE_SIZE
    ) -> Page[RequestView]:
        """Page ``page`` of the pending requests that ``approver_id`` may approve (not their
        own), oldest first, with how many there are: three queries (a ``COUNT``, the page, its
        approvals). Raises ``ValueError`` for a page out of range."""
        with self._sessions() as session:
            where = [
                Request.status == Status.PENDING.value,
                Request.requester_id != approver_id,
                _lists_approver(session, approver_id),
            ]
            return _page(session, where, Request.id, page, size)

    def pending_of(
        self, requester_id: str, *, page: int = 1, size: int = PAGE_SIZE
    ) -> Page[RequestView]:
        """Page ``page`` of ``requester_id``'s pending requests, oldest first, with how many
        there are (three queries). Raises ``ValueError`` for a page out of range."""
        with self._sessions() as session:
            where = [Request.status == Status.PENDING.value, Request.requester_id == requester_id]
            return _page(session, where, Request.id, page, size)

    def latest(self, *, requester_id: str, limit: int, page: int = 1) -> Page[RequestView]:
        """Page ``page`` (``limit`` per page) of ``requester_id``'s requests, newest first, with
        how many there are (three queries). Raises ``ValueError`` for a page out of range."""
        with self._sessions() as session:
            where = [Request.requester_id == requester_id]
            return _page(session, where, Request.id.desc(), page, limit)

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

    def _notify_many(self, request_ids: Sequence[int], event: str) -> None:
        """:meth:`_notify` of each request, their views read together (:meth:`views`)."""
        for view in self.views(request_ids):
            try:
                self._notifier.request_changed(view, event=event)
            except NotifyError as exc:
                log.error("request #%s: could not announce '%s': %s", view.id, event, exc)


def _views(session: Session, requests: Sequence[Request]) -> list[RequestView]:
    """Views of ``requests`` with their approvals, read in one query (not one per request)."""
    approved_by: dict[int, list[str]] = defaultdict(list)
    if requests:
        for request_id, approver_id in session.execute(
            select(Approval.request_id, Approval.approver_id)
            .where(among(session, Approval.request_id, [r.id for r in requests]))
            .order_by(Approval.id)
        ):
            approved_by[request_id].append(approver_id)
    return [_view(request, tuple(approved_by[request.id])) for request in requests]


def _page(
    session: Session,
    where: Sequence[ColumnElement[bool]],
    order: ColumnElement[Any] | InstrumentedAttribute[int],
    number: int,
    size: int,
) -> Page[RequestView]:
    """Page ``number`` of the requests matching ``where`` in ``order``: a ``COUNT``, the page
    (``LIMIT``/``OFFSET``) and its approvals."""
    offset, limit = page_window(number, size)
    total = session.scalar(select(func.count()).select_from(Request).where(*where)) or 0
    requests = session.scalars(
        select(Request).where(*where).order_by(order).offset(offset).limit(limit)
    ).all()
    return Page(tuple(_views(session, requests)), total, number, size)


def _lists_approver(session: Session, user_id: str) -> ColumnElement[bool]:
    """SQL for "``user_id`` is in the request's ``approvers.users``" (a JSON list):
    ``jsonb @>`` on PostgreSQL, ``json_each`` on SQLite."""
    if session.get_bind().dialect.name == "postgresql":
        return cast(Request.approvers, JSONB)["users"].contains([user_id])
    users = func.json_each(Request.approvers, "$.users").table_valued("value")
    return exists().where(users.c.value == user_id)


def _steps(request: Request) -> tuple[Step, ...]:
    """The approval steps stored with ``request`` (users as resolved at submission or refresh)."""
    stored: Sequence[dict[str, Any]] = request.approvers.get("steps", [])
    return tuple(
        Step(
            groups=tuple(step["groups"]),
            approvers=frozenset(step["users"]),
            min_approvals=int(step["min_approvals"]),
        )
        for step in stored
    )


def _view(request: Request, approved_by: tuple[str, ...]) -> RequestView:
    preview: dict[str, Any] = request.preview or {}
    steps = _steps(request)
    _, per_step = count_satisfied(steps, list(approved_by), request.requester_id)
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
        steps=tuple(
            StepView(step.groups, step.min_approvals, tuple(per_step[i]))
            for i, step in enumerate(steps)
        ),
        incident_channel=request.origin_channel_name if request.incident else None,
        expires_at=request.expires_at,
        escalate_to=request.approvers.get("escalate_to"),
        escalate_users=tuple(request.approvers.get("escalate_users", [])),
        escalate_usergroups=tuple(request.approvers.get("escalate_usergroups", [])),
        break_glass=request.break_glass,
        review=(
            MessageRef(request.review_channel_id, request.review_ts)
            if request.review_channel_id and request.review_ts
            else None
        ),
        reviewed_by=request.reviewed_by,
        reviewed_at=request.reviewed_at,
        policy_sha256=request.policy_sha256,
        freeze=request.approvers.get("freeze"),
    )
