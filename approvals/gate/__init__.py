"""The gate: a request is checked against the policy, persisted, approved or denied, executed once.

:class:`Gate` is what the Slack listeners call: a thin front over the gate's rooms, each a
module of this package that does one thing (docs/architecture.md draws them):

- :mod:`~approvals.gate.submitting`: check, persist and announce a new request;
- :mod:`~approvals.gate.deciding`: approve (the quorum, under the row lock), deny, review
  break-glass;
- :mod:`~approvals.gate.executing`: run an approved request once, and follow its rollout;
- :mod:`~approvals.gate.timers`: pending TTL, escalation, stranded requests;
- :mod:`~approvals.gate.deliveries`: Slack delivery deduplication;
- :mod:`~approvals.gate.recovery`: what a stopped bot left behind, at start;
- :mod:`~approvals.gate.reading`: requests as their viewers may see them, pages, histories;
- :mod:`~approvals.gate.access`: the front to the grants service;
- :mod:`~approvals.gate.agents`: explain without filing, and an agent's earned autonomy.

Deciding is pure (:func:`approvals.policy.decide`); the rooms do the side effects, and every
status transition and audit event goes through :mod:`approvals.lifecycle`. Errors meant for the
person who asked or clicked are :class:`GateError` subclasses whose message can be shown as it is.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import datetime

from sqlalchemy.orm import Session, sessionmaker

from actions.base import ActionKind
from approvals.explain import Explained
from approvals.gate.access import Access
from approvals.gate.agents import Agents
from approvals.gate.context import GateContext
from approvals.gate.deciding import Deciding
from approvals.gate.deliveries import Deliveries
from approvals.gate.errors import (
    STRANDED_AFTER,
    AlreadyDecided,
    GateError,
    NotAllowed,
    Origin,
    RateLimited,
    Rejected,
    Submission,
    UnknownRequest,
    UsergroupDirectory,
)
from approvals.gate.executing import Executing
from approvals.gate.reading import History, Reading
from approvals.gate.recovery import Recovery
from approvals.gate.submitting import Submitting
from approvals.gate.timers import Timers
from approvals.grants import ENDED, GrantService, GrantView
from approvals.lifecycle import Actor
from approvals.models import Request
from approvals.notifier import Notifier, RequestView
from approvals.paging import PAGE_SIZE, Page
from approvals.policy import (
    LoadedPolicy,
    NamespaceError,
    agent_of,
    is_incident_channel,
    resolve_environment,
)
from approvals.ratelimit import RequestRateLimiter
from approvals.rollouts import RolloutChecker

__all__ = [
    "STRANDED_AFTER",
    "AlreadyDecided",
    "Gate",
    "GateError",
    "NotAllowed",
    "Origin",
    "RateLimited",
    "Rejected",
    "Submission",
    "UnknownRequest",
    "UsergroupDirectory",
]


class Gate:
    """Submit, approve, deny and execute requests.

    ``sessions`` makes database sessions; ``policy`` returns the policy in force (it may be reloaded
    between calls); ``actions`` maps a command word to its request kind; ``clock`` returns an aware
    UTC ``datetime``; ``rollouts`` reads a rollout once (:class:`actions.rollout.RolloutReader`)
    for :meth:`follow_rollouts`, which ends a request ``rollout_timeout`` seconds after its change
    at the latest; ``rate_limiter`` counts each requester's new requests (default: one in this
    process's memory, see :mod:`approvals.ratelimit`). With ``grants``, the gate subscribes to
    the ends of grants (:meth:`grant_ended`).
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
        history: History | None = None,
        rollouts: RolloutChecker,
        rollout_timeout: float = 300.0,
        rate_limiter: RequestRateLimiter | None = None,
    ) -> None:
        self._ctx = ctx = GateContext(
            sessions=sessions,
            policy=policy,
            actions=actions,
            notifier=notifier,
            clock=clock,
            directory=directory,
            grants=grants,
            rate_limiter=rate_limiter or RequestRateLimiter(),
        )
        self._executing = Executing(ctx, rollouts=rollouts, rollout_timeout=rollout_timeout)
        self._agents = Agents(ctx)
        self._submitting = Submitting(ctx, self._executing, self._agents)
        self._deciding = Deciding(ctx, self._executing)
        self._timers = Timers(ctx)
        self._deliveries = Deliveries(ctx)
        self._recovery = Recovery(ctx, self._executing, self._timers)
        self._reading = Reading(ctx, history)
        self._access = Access(ctx)
        if grants is not None:
            grants.subscribe(self._on_grant_event)

    @property
    def grants(self) -> GrantService | None:
        """The grants service the gate fronts (None: access requests are not offered)."""
        return self._ctx.grants

    @property
    def _policy(self) -> Callable[[], LoadedPolicy]:
        return self._ctx.policy

    @property
    def _notifier(self) -> Notifier:
        return self._ctx.notifier

    @_notifier.setter
    def _notifier(self, notifier: Notifier) -> None:
        self._ctx.notifier = notifier

    # --- who --------------------------------------------------------------------------------

    def now(self) -> datetime:
        """The gate's clock: an aware UTC datetime."""
        return self._ctx.clock()

    def actor(self, actor: Actor, loaded: LoadedPolicy | None = None) -> Actor:
        """``actor`` as the policy (``loaded``, default: the one in force) sees it: an ID the
        policy lists under ``agents`` is automation (``ActorKind.AGENT``) whatever the caller
        said; the policy never makes anyone a person."""
        return self._ctx.actor(actor, loaded)

    def agent_of(self, *ids: str | None) -> str | None:
        """The first of ``ids`` (a Slack message's ``user``, ``bot_id``, ``app_id``) that the
        policy lists under ``agents``, or None; see :func:`approvals.policy.agent_of`."""
        return agent_of(self._ctx.policy().policy, *ids)

    def is_incident(self, origin: Origin) -> bool:
        """Whether ``origin``'s channel is one of the policy's ``incident_channels``."""
        return is_incident_channel(self._ctx.policy().policy, origin.channel_name)

    def namespaces(self) -> list[str]:
        """The namespaces of the policy's environments as the policy writes them (names or
        globs such as ``staging-*``), in policy order, each once."""
        found: dict[str, None] = {}
        for environment in self._ctx.policy().policy.environments.values():
            found.update(dict.fromkeys(environment.namespaces))
        return list(found)

    def place(self, namespace: str, env: str | None = None) -> tuple[str, str | None]:
        """``(environment, kubeconfig context)`` of ``namespace`` (``env``: the ``--env``
        option). Raises :class:`Rejected` with the policy's answer when the policy places it in
        no environment or in several (see :func:`approvals.policy.resolve_environment`)."""
        policy = self._ctx.policy().policy
        try:
            environment = resolve_environment(policy, namespace, env)
        except NamespaceError as exc:
            raise Rejected(str(exc)) from exc
        return environment, policy.environments[environment].kube_context

    # --- submitting, deciding, executing ------------------------------------------------------

    def submit(self, submission: Submission) -> RequestView:
        """See :meth:`approvals.gate.submitting.Submitting.submit`."""
        return self._submitting.submit(submission)

    def approve(self, request_id: int, approver: Actor) -> RequestView:
        """See :meth:`approvals.gate.deciding.Deciding.approve`."""
        return self._deciding.approve(request_id, approver)

    def deny(self, request_id: int, actor: Actor) -> RequestView:
        """See :meth:`approvals.gate.deciding.Deciding.deny`."""
        return self._deciding.deny(request_id, actor)

    def cancel(self, request_id: int, requester: Actor) -> RequestView:
        """See :meth:`approvals.gate.deciding.Deciding.cancel`."""
        return self._deciding.cancel(request_id, requester)

    def explain(self, submission: Submission) -> Explained:
        """See :meth:`approvals.gate.agents.Agents.explain`."""
        return self._agents.explain(submission)

    def undo_autonomy(self, request_id: int, actor: Actor) -> RequestView:
        """See :meth:`approvals.gate.agents.Agents.undo_autonomy`."""
        return self._agents.undo_autonomy(request_id, actor)

    def policy(self) -> LoadedPolicy:
        """The policy in force (it may be reloaded between calls)."""
        return self._ctx.policy()

    def group_members(self) -> dict[str, frozenset[str]]:
        """Each policy group's members now (its users and its Slack user groups' members)."""
        return self._ctx.groups(self._ctx.policy())

    def acknowledge(self, request_id: int, actor: Actor) -> RequestView:
        """See :meth:`approvals.gate.deciding.Deciding.acknowledge`."""
        return self._deciding.acknowledge(request_id, actor)

    @staticmethod
    def _locked(session: Session, request_id: int) -> Request:
        """See :meth:`approvals.gate.deciding.Deciding._locked`."""
        return Deciding._locked(session, request_id)

    def follow_rollouts(self) -> list[int]:
        """See :meth:`approvals.gate.executing.Executing.follow_rollouts`."""
        return self._executing.follow_rollouts()

    # --- timers, deliveries, recovery ---------------------------------------------------------

    def expire_pending(self) -> list[int]:
        """See :meth:`approvals.gate.timers.Timers.expire_pending`."""
        return self._timers.expire_pending()

    def cancel_stranded(self, *, older_than: float = STRANDED_AFTER) -> list[int]:
        """See :meth:`approvals.gate.timers.Timers.cancel_stranded`."""
        return self._timers.cancel_stranded(older_than=older_than)

    def escalate_due(self) -> list[int]:
        """See :meth:`approvals.gate.timers.Timers.escalate_due`."""
        return self._timers.escalate_due()

    def first_delivery(self, event_id: str) -> bool:
        """See :meth:`approvals.gate.deliveries.Deliveries.first_delivery`."""
        return self._deliveries.first_delivery(event_id)

    def forget_events(self, *, older_than: float = 86400.0) -> int:
        """See :meth:`approvals.gate.deliveries.Deliveries.forget_events`."""
        return self._deliveries.forget_events(older_than=older_than)

    def recover(self, *, stale_after: float = 900.0) -> list[int]:
        """See :meth:`approvals.gate.recovery.Recovery.recover`."""
        return self._recovery.recover(stale_after=stale_after)

    # --- reading ------------------------------------------------------------------------------

    def get(self, request_id: int) -> RequestView:
        """The current state of request ``request_id``. Raises :class:`UnknownRequest`."""
        return self._ctx.get(request_id)

    def views(self, request_ids: Sequence[int]) -> list[RequestView]:
        """See :meth:`approvals.gate.context.GateContext.views`."""
        return self._ctx.views(request_ids)

    def get_for(self, request_id: int, viewer: Actor) -> RequestView:
        """See :meth:`approvals.gate.reading.Reading.get_for`."""
        return self._reading.get_for(request_id, viewer)

    def pending_for(
        self, approver_id: str, *, page: int = 1, size: int = PAGE_SIZE
    ) -> Page[RequestView]:
        """See :meth:`approvals.gate.reading.Reading.pending_for`."""
        return self._reading.pending_for(approver_id, page=page, size=size)

    def pending_of(
        self, requester_id: str, *, page: int = 1, size: int = PAGE_SIZE
    ) -> Page[RequestView]:
        """See :meth:`approvals.gate.reading.Reading.pending_of`."""
        return self._reading.pending_of(requester_id, page=page, size=size)

    def latest(self, *, requester_id: str, limit: int, page: int = 1) -> Page[RequestView]:
        """See :meth:`approvals.gate.reading.Reading.latest`."""
        return self._reading.latest(requester_id=requester_id, limit=limit, page=page)

    def changes(
        self,
        viewer: Actor,
        *,
        since: datetime,
        namespace: str | None = None,
        workload: str | None = None,
        channel: str | None = None,
        page: int = 1,
        size: int = PAGE_SIZE,
    ) -> Page[RequestView]:
        """See :meth:`approvals.gate.reading.Reading.changes`."""
        return self._reading.changes(
            viewer,
            since=since,
            namespace=namespace,
            workload=workload,
            channel=channel,
            page=page,
            size=size,
        )

    def history(self, namespace: str, env: str | None, name: str) -> list[str]:
        """See :meth:`approvals.gate.reading.Reading.history`."""
        return self._reading.history(namespace, env, name)

    # --- grants -------------------------------------------------------------------------------

    def grant_approvers(self) -> frozenset[str]:
        """See :meth:`approvals.gate.access.Access.grant_approvers`."""
        return self._access.grant_approvers()

    def active_grants(
        self, user_id: str, *, page: int = 1, size: int = PAGE_SIZE
    ) -> tuple[Page[GrantView], bool]:
        """See :meth:`approvals.gate.access.Access.active_grants`."""
        return self._access.active_grants(user_id, page=page, size=size)

    def revoke_grant(self, grant_id: int, actor: Actor, *, reason: str | None = None) -> GrantView:
        """See :meth:`approvals.gate.access.Access.revoke_grant`."""
        return self._access.revoke_grant(grant_id, actor, reason=reason)

    def grant_ended(self, grant_id: int, why: str) -> None:
        """See :meth:`approvals.gate.access.Access.grant_ended`."""
        self._access.grant_ended(grant_id, why)

    def _on_grant_event(self, grant: GrantView, event: str) -> None:
        """The grants service's events (:meth:`GrantService.subscribe`): when ``grant`` ended
        (expired, revoked, removed as drift), :meth:`grant_ended` shows it on its request."""
        if event in ENDED:
            self.grant_ended(grant.id, grant.revoke_reason or "revoked")
