"""What every room of the gate shares: the database, the policy in force, the request kinds,
the notifier, the clock, and the few steps they all take (load a row, move it, show it).

One :class:`GateContext` is built by :class:`approvals.gate.Gate` and handed to each room, so a
notifier swapped on the gate is the one every room uses.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from actions.base import ActionKind
from approvals.gate.errors import UnknownRequest, UsergroupDirectory
from approvals.gate.views import view_of, views_of
from approvals.grants import GrantService
from approvals.lifecycle import SYSTEM, Actor, transition
from approvals.models import ActorKind, Approval, Request, Status
from approvals.notifier import Notifier, NotifyError, RequestView
from approvals.paging import among, chunks
from approvals.policy import LoadedPolicy, resolve_groups
from approvals.ratelimit import RequestRateLimiter

log = logging.getLogger(__name__)


class GateContext:
    """The gate's shared state; see :class:`approvals.gate.Gate` for each argument."""

    def __init__(
        self,
        *,
        sessions: sessionmaker[Session],
        policy: Callable[[], LoadedPolicy],
        actions: Mapping[str, ActionKind],
        notifier: Notifier,
        clock: Callable[[], datetime],
        directory: UsergroupDirectory | None,
        grants: GrantService | None,
        rate_limiter: RequestRateLimiter,
    ) -> None:
        self.sessions = sessions
        self.policy = policy
        self.actions = actions
        self.notifier = notifier
        self.clock = clock
        self.directory = directory
        self.grants = grants
        self.rate_limiter = rate_limiter

    def actor(self, actor: Actor, loaded: LoadedPolicy | None = None) -> Actor:
        """``actor`` as the policy (``loaded``, default: the one in force) sees it: an ID the
        policy lists under ``agents`` is automation (``ActorKind.AGENT``) whatever the caller
        said; the policy never makes anyone a person."""
        if actor.kind == ActorKind.HUMAN and actor.id in (loaded or self.policy()).policy.agents:
            return Actor(actor.id, ActorKind.AGENT)
        return actor

    def groups(self, loaded: LoadedPolicy) -> dict[str, frozenset[str]]:
        """Each policy group's members now: its ``users`` and the members of its ``usergroups``."""
        members = self.directory.members if self.directory else (lambda _g: frozenset())
        return resolve_groups(loaded.policy, members)

    @staticmethod
    def load(session: Session, request_id: int) -> Request:
        """Request ``request_id`` read afresh in ``session``. Raises :class:`UnknownRequest`."""
        request = session.get(Request, request_id, populate_existing=True)
        if request is None:
            raise UnknownRequest(f"There is no request #{request_id}.")
        return request

    def move(
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
        with self.sessions.begin() as session:
            return transition(
                session,
                self.load(session, request_id),
                expected=expected,
                to=to,
                actor=SYSTEM,
                now=self.clock(),
                event=event,
                detail=detail,
                **values,
            )

    def get(self, request_id: int) -> RequestView:
        """The current state of request ``request_id``. Raises :class:`UnknownRequest`."""
        with self.sessions() as session:
            request = session.get(Request, request_id)
            if request is None:
                raise UnknownRequest(f"There is no request #{request_id}.")
            approved_by = session.scalars(
                select(Approval.approver_id)
                .where(Approval.request_id == request_id)
                .order_by(Approval.id)
            ).all()
            return view_of(request, tuple(approved_by))

    def views(self, request_ids: Sequence[int]) -> list[RequestView]:
        """The requests ``request_ids`` (unknown IDs left out), in that order: two queries per
        :data:`~approvals.paging.IN_CHUNK` IDs (the requests, then their approvals)."""
        found: dict[int, RequestView] = {}
        with self.sessions() as session:
            for chunk in chunks(sorted(set(request_ids))):
                requests = session.scalars(
                    select(Request).where(among(session, Request.id, chunk))
                ).all()
                found.update((view.id, view) for view in views_of(session, requests))
        return [found[i] for i in request_ids if i in found]

    def notify(self, request_id: int, event: str) -> None:
        """Announce ``event`` of request ``request_id``; a failure is logged, not raised (the
        change itself is committed and audited)."""
        try:
            self.notifier.request_changed(self.get(request_id), event=event)
        except NotifyError as exc:
            # The change itself is committed and audited; only its announcement failed.
            log.error("request #%s: could not announce '%s': %s", request_id, event, exc)

    def notify_many(self, request_ids: Sequence[int], event: str) -> None:
        """:meth:`notify` of each request, their views read together (:meth:`views`)."""
        for view in self.views(request_ids):
            try:
                self.notifier.request_changed(view, event=event)
            except NotifyError as exc:
                log.error("request #%s: could not announce '%s': %s", view.id, event, exc)
