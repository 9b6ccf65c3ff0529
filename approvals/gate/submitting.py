"""The submitting room: a request is checked against the policy, persisted and announced.

:meth:`Submitting.submit` counts the requester's rate, resolves the environment from the
namespace, asks the policy (:func:`approvals.policy.decide`, pure), previews the change with the
kind, writes the request and its ``submitted`` audit event in one transaction, then posts the
requester's announcement and the approval message. ``approval: auto`` runs it at once; break-glass
runs it at once, loudly. A refusal is audited (``rejected``, no request) and raised as
:class:`~approvals.gate.errors.Rejected`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any, Literal

from actions.base import ActionKind, Preview, Target
from actions.errors import ActionError
from approvals.gate.agents import Agents
from approvals.gate.context import GateContext
from approvals.gate.errors import RateLimited, Rejected, Submission
from approvals.gate.executing import Executing
from approvals.grants import GrantError
from approvals.inbox import settle
from approvals.lifecycle import SYSTEM, Actor, record_detached
from approvals.lifecycle import record as record_event
from approvals.models import ActorKind, Request, Status
from approvals.notifier import MessageRef, NotifyError, RequestView
from approvals.policy import (
    Decision,
    DecisionReason,
    LoadedPolicy,
    NamespaceError,
    Outcome,
    Policy,
    RequestContext,
    decide,
    is_incident_channel,
    request_reversible,
    resolve_environment,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class _Decided:
    """What the policy said of a submission, and where it runs."""

    decision: Decision
    kind: ActionKind
    environment: str | None
    namespace: str | None
    context: str | None
    incident: bool
    requester_kind: Literal["human", "agent"]
    now: datetime


class Submitting:
    """New requests; one the policy approves at once is run (:class:`Executing`)."""

    def __init__(self, ctx: GateContext, executing: Executing, agents: Agents) -> None:
        self._ctx = ctx
        self._executing = executing
        self._agents = agents

    def submit(self, submission: Submission) -> RequestView:
        """Check, persist and announce a request; with ``approval: auto`` execute it at once.

        Raises :class:`Rejected` (and records a ``rejected`` audit event) when the namespace is not
        in the policy, the target cannot be read, or the policy does not allow the request;
        :class:`RateLimited` (a ``Rejected``), before anything else is looked at, when the
        requester already made the policy's ``rate_limit`` of requests in the last minute.
        """
        loaded = self._ctx.policy()
        submission = replace(submission, requester=self._ctx.actor(submission.requester, loaded))
        try:
            self._check_rate(submission.requester, loaded)
            return self._submit(submission, loaded)
        except Rejected as exc:
            self._audit_rejection(submission, loaded, str(exc))
            raise

    def _check_rate(self, requester: Actor, loaded: LoadedPolicy) -> None:
        """Count a new request of ``requester``; raise :class:`RateLimited` when the policy's
        ``rate_limit`` for their kind is used up (the refused request is not counted)."""
        limit = loaded.policy.rate_limit.per_minute(agent=requester.kind == ActorKind.AGENT)
        if not self._ctx.rate_limiter.hit(requester, limit):
            raise RateLimited(
                f"You have made {limit} requests in the last minute; opsgate allows {limit} per "
                "minute. Wait a moment and try again; nothing was changed."
            )

    def _submit(self, sub: Submission, loaded: LoadedPolicy) -> RequestView:
        decided = self._decide(sub, loaded)
        target = self._target(sub, loaded, decided)
        try:
            preview = decided.kind.preview(sub.params, target=target)
        except ActionError as exc:
            raise Rejected(str(exc)) from exc
        with self._ctx.sessions.begin() as session:
            request = _request_row(sub, loaded, decided, target, preview)
            session.add(request)
            session.flush()
            record_event(
                session,
                request,
                event="submitted",
                actor=sub.requester,
                now=decided.now,
                detail={
                    "decision": decided.decision.reason.value,
                    "preview": list(preview.lines),
                },
            )
            if sub.owed is not None:  # raises AlreadyDone: this request was filed before
                settle(session, sub.owed, decided.now)
            request_id = request.id

        self._announce(self._ctx.get(request_id))
        if decided.decision.outcome is Outcome.AUTO:
            self._ctx.move(
                request_id,
                Status.PENDING,
                Status.APPROVED,
                event="auto_approved",
                decided_by=SYSTEM.id,
            )
            self._ctx.notify(request_id, "approved")
            if decided.decision.reason is DecisionReason.EARNED_AUTONOMY:
                self._ctx.notify(request_id, "autonomy")  # the notice with its Undo button
            self._executing.execute(request_id)
        elif decided.decision.outcome is Outcome.BREAK_GLASS:
            self._break_glass(request_id, sub)
        return self._ctx.get(request_id)

    def _decide(self, sub: Submission, loaded: LoadedPolicy) -> _Decided:
        """The kind, the environment of the namespace and the policy's decision; raises
        :class:`Rejected` for an unknown kind or namespace, or when the policy denies it."""
        kind = self._ctx.actions.get(sub.action)
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
        now = self._ctx.clock()
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
            groups=self._ctx.groups(loaded),
        )
        decision = self._agents.earned(decision, sub, loaded, kind, now)
        if decision.outcome is Outcome.DENY:
            raise Rejected(f"Not allowed: {decision.message}")
        return _Decided(
            decision, kind, environment, namespace, context, incident, requester_kind, now
        )

    def _target(self, sub: Submission, loaded: LoadedPolicy, decided: _Decided) -> Target:
        """Where the request runs: its environment and kubeconfig context (for rotate/restore
        without ``-n``, those of the rule's consumers' namespace) and the rule's settings."""
        policy = loaded.policy
        context, environment = decided.context, decided.environment
        consumers_namespace = (decided.decision.settings.get("rotate") or {}).get("namespace")
        if context is None and consumers_namespace:
            # rotate/restore without -n: the rule's consumers run in the cluster of their
            # namespace's environment, not in the kubeconfig's current context
            try:
                consumers_env = resolve_environment(policy, consumers_namespace, sub.env)
            except NamespaceError as exc:
                raise Rejected(f"the rule's rotate.namespace: {exc}") from exc
            context = policy.environments[consumers_env].kube_context
            environment = environment or consumers_env
        identity = policy.identities.get(sub.requester.id)
        settings: dict[str, Any] = {
            **decided.decision.settings,
            "identity": identity.model_dump() if identity is not None else None,
        }
        return Target(
            environment=environment or "",
            kube_context=context,
            namespace=decided.namespace,
            settings=settings,
        )

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
            with self._ctx.sessions.begin() as session:
                request = self._ctx.load(session, request_id)
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
                self._ctx.notifier.card_changed(self._ctx.get(request_id))

        try:
            refs = self._ctx.notifier.request_opened(
                view, approval_posted=approval_posted, thread_posted=thread_posted
            )
        except NotifyError as exc:
            if waiting:  # the requester hears of the cancellation in their thread
                store(None, waiting.pop())
            self._finish_unannounced(request_id, str(exc))
            self._ctx.notify(request_id, "cancelled")
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
        self._ctx.move(
            request_id,
            Status.PENDING,
            Status.APPROVED,
            event="break_glass",
            detail={"justification": sub.break_glass},
            decided_by=sub.requester.id,
        )
        try:
            review = self._ctx.notifier.review_opened(self._ctx.get(request_id))
        except NotifyError as exc:
            log.error("request #%s: break-glass notice failed: %s", request_id, exc)
            review = None
        if review is not None:
            with self._ctx.sessions.begin() as session:
                request = self._ctx.load(session, request_id)
                request.review_channel_id = review.channel_id
                request.review_ts = review.ts
        self._executing.execute(request_id)

    def _grant_scope(self, sub: Submission) -> tuple[str | None, str | None]:
        """The namespace and environment of the grant an ``extend`` request names."""
        grant_id = getattr(sub.params, "grant_id", None)
        try:
            grant = self._ctx.grants.get(grant_id) if self._ctx.grants and grant_id else None
        except GrantError:
            grant = None
        if grant is None or grant.status != "active":
            raise Rejected(f"There is no active grant #{grant_id}; `/ops grants` lists yours.")
        if grant.grantee_id != sub.requester.id:
            raise Rejected(f"Grant #{grant_id} is not yours; only its grantee may extend it.")
        return grant.namespace, grant.environment

    def _finish_unannounced(self, request_id: int, why: str) -> None:
        self._ctx.move(
            request_id,
            Status.PENDING,
            Status.CANCELLED,
            event="announce_failed",
            detail={"error": why},
            error=f"the approval message could not be posted: {why}",
        )

    def _audit_rejection(self, sub: Submission, loaded: LoadedPolicy, why: str) -> None:
        with self._ctx.sessions.begin() as session:
            record_detached(
                session,
                event="rejected",
                actor=sub.requester,
                now=self._ctx.clock(),
                action=sub.action,
                target=None,  # never read: the params below say what was asked for
                policy_sha256=loaded.sha256,
                detail={"reason": why, "params": sub.params.model_dump(mode="json")},
            )


def _request_row(
    sub: Submission, loaded: LoadedPolicy, decided: _Decided, target: Target, preview: Preview
) -> Request:
    """The ``requests`` row of a new request, ``pending``."""
    decision, now = decided.decision, decided.now
    break_glass = decision.outcome is Outcome.BREAK_GLASS
    return Request(
        action=sub.action,
        params=sub.params.model_dump(mode="json"),
        status=Status.PENDING.value,
        requester_id=sub.requester.id,
        requester_kind=decided.requester_kind,
        environment=target.environment or None,
        namespace=decided.namespace,
        target=preview.target,
        reason=sub.reason,
        origin_channel_id=sub.origin.channel_id,
        origin_channel_name=sub.origin.channel_name,
        incident=decided.incident,
        response_url=sub.origin.response_url,
        rule=decision.rule_label,
        policy_sha256=loaded.sha256,
        min_approvals=0 if break_glass else decision.min_approvals,
        approval_channel_id=decision.approval_channel,
        approvers=_approvers(decision, loaded.policy),
        preview={
            "target": preview.target,
            "lines": list(preview.lines),
            "facts": preview.facts,
            "kube_context": target.kube_context,
            "settings": target.settings,
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


def _approvers(decision: Decision, policy: Policy) -> dict[str, Any]:
    """The ``requests.approvers`` JSON: the approver groups and users, each step's, whom to
    escalate to, and the freeze in force."""
    return {
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
    }
