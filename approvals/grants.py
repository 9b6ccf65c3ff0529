"""Time-bound access grants: activation, expiry, early revocation, extension, drift.

The database is the source of truth: a grant ends when ``grants.expires_at`` has passed, whatever
a scheduler remembers (:mod:`approvals.expiry` only wakes :meth:`GrantService.sweep` on time). The
sweep selects overdue rows in batches, as Prefect's ``pause_expirations`` service does, and is
idempotent.

Exactly once, with any number of bot instances on one database: a grant is first *claimed* by a
guarded ``UPDATE grants SET status = 'revoking' … WHERE id IN (…) AND status = 'active'
RETURNING id`` (on PostgreSQL the candidates are read ``FOR UPDATE SKIP LOCKED``, so two sweeps
share the work instead of queueing), then removed from the backends (idempotent: a RoleBinding
already gone, an entity already out of the group are fine; the RoleBindings of a batch in one
namespace in one ``deletecollection`` call, by their grant-ID label), then moved
``revoking → revoked`` together with its request's ``active → revoked`` transition and audit
event: one transaction for a whole batch of claimed grants (a guarded ``UPDATE … WHERE id IN (…)
AND status = 'revoking' RETURNING id`` decides which ends a call records), so 1,000 grants that
end together cost a few transactions, not 2,000, and a few Kubernetes requests, not 1,000.
A claim whose process died before the end (a ``revoking`` row untouched for ``retry_after``
seconds) is claimed again by the next sweep; so is one whose backend call failed.

Why a grant ended is stored when it is claimed (``revoke_reason``): ``expired``, ``revoked early
by <@U…>: <reason>`` or ``drift: …``; the audit event says when (``revoked_at``) and how late
(``lag_seconds`` after ``expires_at``).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol

from sqlalchemy import bindparam, case, func, insert, literal, select, update
from sqlalchemy.orm import Session, sessionmaker

from actions.access import (
    Access,
    format_duration,
    parse_rfc3339,
    rfc3339,
)
from actions.errors import ActionError
from approvals import metrics
from approvals.drift import DRIFT_REMOVED, DriftCheck
from approvals.lifecycle import (
    SYSTEM,
    TRANSITIONS,
    Actor,
    InvalidTransition,
    rows_changed,
    transition,
)
from approvals.lifecycle import record as record_event
from approvals.models import AuditEvent, Grant, GrantStatus, Request, Status
from approvals.notifier import GrantNotifier, GrantView, NotifyError, announcing_batch
from approvals.paging import PAGE_SIZE, Page, among, chunks, page_window

__all__ = [
    "ExtensionRefused",
    "GrantBackendError",
    "GrantError",
    "GrantNotActive",
    "GrantScheduling",
    "GrantService",
    "GrantView",
    "UnknownGrant",
    "extension_refusal",
]

log = logging.getLogger(__name__)

EXPIRED = "expired"
REVOKED = "revoked"


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


@dataclass(frozen=True)
class _Ended:
    grant_id: int
    event: str


@dataclass(frozen=True)
class _Removal:
    """What removing one claimed grant from the backends gave: when, and what or which error."""

    grant: Grant
    at: datetime
    removed: dict[str, bool] | None
    error: ActionError | None


_GRANTS = Grant.metadata.tables[Grant.__tablename__]
_AUDIT = AuditEvent.metadata.tables[AuditEvent.__tablename__]


class _Removals:
    """Removals from the backends running on ``pool``, handed back in runs of at least ``run``
    (or all that remain): the waiting thread wakes once a run, not once a grant."""

    def __init__(
        self, pool: ThreadPoolExecutor, remove: Callable[[Grant, bool], _Removal], *, run: int
    ) -> None:
        self._pool = pool
        self._remove = remove
        self._run = run
        self._done: list[Future[_Removal]] = []
        self._outstanding = 0
        self._ready = threading.Condition()

    @property
    def outstanding(self) -> int:
        """How many have started and not been taken yet."""
        with self._ready:
            return self._outstanding + len(self._done)

    def start(self, grants: Iterable[Grant], deleted: Mapping[int, datetime]) -> None:
        """Remove ``grants``; those in ``deleted`` (grant ID: when its RoleBinding was deleted
        with others) are done already, unless Vault is left."""
        for grant in grants:
            with self._ready:
                self._outstanding += 1
            at = deleted.get(grant.id)
            if at is not None and not (grant.vault_group and grant.vault_entity_id):
                done: Future[_Removal] = Future()
                removed = {"role_binding_deleted": True, "vault_member_removed": False}
                done.set_result(_Removal(grant, at, removed, None))
                self._finished(done)
                continue
            future = self._pool.submit(self._remove, grant, at is not None)
            future.add_done_callback(self._finished)

    def _finished(self, future: Future[_Removal]) -> None:
        with self._ready:
            self._done.append(future)
            self._outstanding -= 1
            if len(self._done) >= self._run or not self._outstanding:
                self._ready.notify()

    def take(self) -> list[_Removal]:
        """Wait for a run of finished removals (or the last ones) and return them; re-raises
        what a removal raised (``_remove`` itself turns backend errors into results)."""
        with self._ready:
            self._ready.wait_for(lambda: len(self._done) >= self._run or not self._outstanding)
            taken, self._done = self._done, []
        return [future.result() for future in taken]


class GrantService:
    """Grants in the database and in the backends, kept in step.

    ``sessions`` makes database sessions; ``access`` is the access request kind (it talks to
    Kubernetes and Vault); ``notifier`` tells people; ``clock`` returns an aware UTC ``datetime``;
    ``kube_contexts`` returns the kubeconfig contexts of the policy's environments (the drift
    check looks in each). ``reminder_before`` (seconds) is when the reminder goes out before the
    end; ``retry_after`` (seconds) is how long a ``revoking`` claim may stay unfinished before a
    sweep takes it over; ``batch_size`` rows are claimed per transaction and removed from the
    backends by ``workers`` threads.
    """

    def __init__(
        self,
        *,
        sessions: sessionmaker[Session],
        access: Access,
        notifier: GrantNotifier,
        clock: Callable[[], datetime],
        kube_contexts: Callable[[], Iterable[str | None]] = lambda: (None,),
        reminder_before: float = 600.0,
        retry_after: float = 60.0,
        batch_size: int = 200,
        workers: int = 8,
    ) -> None:
        self._sessions = sessions
        self._access = access
        self._notifier = notifier
        self._clock = clock
        self._kube_contexts = kube_contexts
        self.reminder_before = reminder_before
        self._retry_after = retry_after
        self._batch_size = batch_size
        self._workers = workers
        self._scheduling: GrantScheduling | None = None
        self._drift = DriftCheck(
            sessions=sessions,
            access=access,
            clock=clock,
            kube_contexts=kube_contexts,
            revoke=self._revoke_drifted,
            views=self.views,
            notify=self._notify,
        )

    def attach(self, scheduling: GrantScheduling | None) -> None:
        """Use ``scheduling`` to wake expiry and reminders on time (None: only sweeps do)."""
        self._scheduling = scheduling

    # --- reading ------------------------------------------------------------------------------

    def get(self, grant_id: int) -> GrantView:
        """The grant ``grant_id``. Raises :class:`UnknownGrant`."""
        with self._sessions() as session:
            row = session.execute(
                select(Grant, Request.approvers)
                .join(Request, Request.id == Grant.id)
                .where(Grant.id == grant_id)
            ).one_or_none()
            if row is None:
                raise UnknownGrant(f"There is no grant #{grant_id}.")
            return _view(row[0], row[1])

    def active(
        self, user_id: str | None = None, *, page: int = 1, size: int = PAGE_SIZE
    ) -> Page[GrantView]:
        """Page ``page`` (1-based, ``size`` per page) of the active grants (of ``user_id``, or
        everyone's), the soonest to end first, with how many there are in all: two queries
        (the page, and a ``COUNT``). Raises ``ValueError`` for a page out of range."""
        offset, limit = page_window(page, size)
        where = [Grant.status == GrantStatus.ACTIVE.value]
        if user_id is not None:
            where.append(Grant.grantee_id == user_id)
        with self._sessions() as session:
            total = session.scalar(select(func.count()).select_from(Grant).where(*where)) or 0
            rows = session.execute(
                select(Grant, Request.approvers)
                .join(Request, Request.id == Grant.id)
                .where(*where)
                .order_by(Grant.expires_at, Grant.id)
                .offset(offset)
                .limit(limit)
            ).all()
            items = tuple(_view(grant, approvers) for grant, approvers in rows)
        return Page(items, total, page, size)

    def views(self, grant_ids: Iterable[int]) -> dict[int, GrantView]:
        """The grants ``grant_ids`` by ID (unknown IDs are left out): one query per
        :data:`~approvals.paging.IN_CHUNK` IDs."""
        ids = sorted(set(grant_ids))
        found: dict[int, GrantView] = {}
        with self._sessions() as session:
            for chunk in chunks(ids):
                for grant, approvers in session.execute(
                    select(Grant, Request.approvers)
                    .join(Request, Request.id == Grant.id)
                    .where(among(session, Grant.id, chunk))
                ):
                    found[grant.id] = _view(grant, approvers)
        return found

    def next_expiry(self) -> datetime | None:
        """The soonest ``expires_at`` still ahead among active grants (None: there is none);
        one query."""
        with self._sessions() as session:
            return session.scalar(
                select(func.min(Grant.expires_at)).where(
                    Grant.status == GrantStatus.ACTIVE.value, Grant.expires_at > self._clock()
                )
            )

    def next_reminder(self) -> datetime | None:
        """The soonest moment still ahead at which :meth:`remind_due` has a reminder to send
        (``expires_at - reminder_before`` of an active grant not reminded yet), or None; one
        query."""
        before = timedelta(seconds=self.reminder_before)
        with self._sessions() as session:
            soonest = session.scalar(
                select(func.min(Grant.expires_at)).where(
                    Grant.status == GrantStatus.ACTIVE.value,
                    Grant.reminded_at.is_(None),
                    Grant.duration_seconds > self.reminder_before,
                    Grant.expires_at > self._clock() + before,
                )
            )
        return soonest - before if soonest is not None else None

    def may_revoke(self, grant_id: int, user_id: str) -> bool:
        """True for the grantee and for the approvers of the grant's request."""
        view = self.get(grant_id)
        return user_id == view.grantee_id or user_id in view.approver_ids

    # --- activation ---------------------------------------------------------------------------

    def activate(
        self,
        request_id: int,
        outcome_facts: Mapping[str, Any],
        actor: Actor = SYSTEM,
        *,
        summary: str | None = None,
    ) -> GrantView:
        """Record a grant that ``Access.execute`` has just put in place, and start its clock.

        ``outcome_facts`` is ``Outcome.facts`` (its ``grant`` entry). In one transaction the
        request moves ``executing → active`` (audit event ``grant_started``; ``summary`` is stored
        as its result) and the grant row is written with ``expires_at`` from the facts (the
        moment the backends changed plus the duration). Then the expiry and the reminder are
        scheduled and the grantee told (``started``). Raises :class:`UnknownGrant` when there is
        no such request and :class:`GrantNotActive` when it is not ``executing``.
        """
        facts: Mapping[str, Any] = outcome_facts["grant"]
        started_at = parse_rfc3339(facts["started_at"])
        expires_at = parse_rfc3339(facts["expires_at"])
        now = self._clock()
        with self._sessions.begin() as session:
            request = session.get(Request, request_id, populate_existing=True)
            if request is None:
                raise UnknownGrant(f"There is no request #{request_id}.")
            if not transition(
                session,
                request,
                expected=Status.EXECUTING,
                to=Status.ACTIVE,
                actor=actor,
                now=now,
                event="grant_started",
                detail={"grant": dict(facts)},
                result=summary,
            ):
                raise GrantNotActive(f"Request #{request_id} is {request.status}, not executing.")
            session.add(
                Grant(
                    id=request_id,
                    grantee_id=request.requester_id,
                    kube_context=facts.get("kube_context"),
                    environment=facts.get("environment") or request.environment,
                    namespace=facts["namespace"],
                    role=facts["role"],
                    cluster_role=facts["cluster_role"],
                    kubernetes_user=facts["kubernetes_user"],
                    role_binding=facts["role_binding"],
                    vault_group=facts.get("vault_group"),
                    vault_entity=facts.get("vault_entity"),
                    vault_entity_id=facts.get("vault_entity_id"),
                    duration_seconds=int(facts["duration_seconds"]),
                    max_duration_seconds=facts.get("max_duration_seconds"),
                    started_at=started_at,
                    expires_at=expires_at,
                    status=GrantStatus.ACTIVE.value,
                    updated_at=now,
                )
            )
        view = self.get(request_id)
        if self._scheduling is not None:
            self._scheduling.grant_scheduled(view)
        self._notify(view, "started")
        return view

    # --- extension ----------------------------------------------------------------------------

    def extend(self, grant_id: int, seconds: int, *, actor: Actor) -> GrantView:
        """Make an active grant last ``seconds`` longer; the total stays within ``max_duration``.

        The RoleBinding's expiry annotation is rewritten first, then the row (a guarded update on
        the old ``expires_at``), with an audit event ``grant_extended``; the reminder is re-armed,
        the wake-ups rescheduled and the grantee told (``extended``). Whether an extension needs
        approval is the caller's decision. Raises :class:`UnknownGrant`, :class:`GrantNotActive`
        (ended, or changed meanwhile), :class:`ExtensionRefused`, :class:`GrantBackendError`.
        """
        if seconds <= 0:
            raise ExtensionRefused("An extension must be a positive duration.")
        now = self._clock()
        with self._sessions() as session:
            grant = session.get(Grant, grant_id)
            if grant is None:
                raise UnknownGrant(f"There is no grant #{grant_id}.")
            if grant.status != GrantStatus.ACTIVE.value or grant.expires_at <= now:
                raise GrantNotActive(f"Grant #{grant_id} has already ended.")
            refusal = extension_refusal(
                grant_id, grant.duration_seconds, grant.max_duration_seconds, seconds
            )
            if refusal is not None:
                raise ExtensionRefused(refusal)
            total = grant.duration_seconds + seconds
            old_expires = grant.expires_at
            new_expires = old_expires + timedelta(seconds=seconds)
        try:
            self._access.set_expiry(
                grant_id=grant.id,
                kube_context=grant.kube_context,
                namespace=grant.namespace,
                cluster_role=grant.cluster_role,
                kubernetes_user=grant.kubernetes_user,
                expires_at=new_expires,
            )
        except ActionError as exc:
            raise GrantBackendError(
                f"Grant #{grant_id} was not extended: {exc}. It still ends at "
                f"{rfc3339(old_expires)}."
            ) from exc
        with self._sessions.begin() as session:
            changed = rows_changed(
                session,
                update(Grant)
                .where(
                    Grant.id == grant_id,
                    Grant.status == GrantStatus.ACTIVE.value,
                    Grant.expires_at == old_expires,
                )
                .values(
                    expires_at=new_expires,
                    duration_seconds=total,
                    reminded_at=None,
                    updated_at=now,
                )
                .execution_options(synchronize_session=False),
            )
            if changed != 1:
                raise GrantNotActive(f"Grant #{grant_id} changed meanwhile; try again.")
            request = session.get(Request, grant_id)
            assert request is not None
            record_event(
                session,
                request,
                event="grant_extended",
                actor=actor,
                now=now,
                detail={
                    "seconds": seconds,
                    "from": rfc3339(old_expires),
                    "to": rfc3339(new_expires),
                    "duration_seconds": total,
                },
            )
        view = self.get(grant_id)
        if self._scheduling is not None:
            self._scheduling.grant_scheduled(view)
        self._notify(view, "extended")
        return view

    # --- revocation ---------------------------------------------------------------------------

    def revoke(self, grant_id: int, *, actor: Actor, reason: str | None = None) -> GrantView:
        """End an active grant now (no approval: the caller checks :meth:`may_revoke`).

        Returns the revoked grant; the grantee is told (``revoked``). Raises
        :class:`UnknownGrant`, :class:`GrantNotActive` (already ended or ending), and
        :class:`GrantBackendError` when a backend failed: the grant is then left ``revoking`` and
        the sweep retries it within ``retry_after`` seconds.
        """
        why = f"revoked early by <@{actor.id}>" + (f": {reason}" if reason else "")
        now = self._clock()
        with self._sessions.begin() as session:
            if not _claim(session, grant_id, by=actor.id, why=why, now=now):
                grant = session.get(Grant, grant_id)
                if grant is None:
                    raise UnknownGrant(f"There is no grant #{grant_id}.")
                raise GrantNotActive(f"Grant #{grant_id} is already {grant.status}.")
        ended = self._finish(grant_id, actor=actor)
        if ended is None:
            raise GrantBackendError(
                f"Grant #{grant_id} could not be removed from Kubernetes/Vault yet; opsgate "
                f"retries within {format_duration(self._retry_after)}."
            )
        self._announce([ended])
        return self.get(grant_id)

    def sweep(self) -> list[int]:
        """Revoke every active grant whose ``expires_at`` has passed, and finish the claims left
        unfinished for ``retry_after`` seconds; returns the IDs revoked by this call.

        Idempotent and safe to run from several instances at once: each grant is revoked once.
        The work is a pipeline: batches of ``batch_size`` grants are claimed while earlier ones
        are still being removed (at most about two batches in flight, so other instances still
        get a share); a batch's RoleBindings go in one call per namespace
        (:meth:`_delete_bindings`), what is left (Vault, RoleBindings the call did not delete)
        on ``workers`` threads; the ends are recorded a batch at a time as the removals finish,
        while the next ones go on.
        """
        now = self._clock()
        ended: list[_Ended] = []
        with ThreadPoolExecutor(
            max_workers=max(self._workers, 1), thread_name_prefix="revoke"
        ) as pool:
            removals = _Removals(pool, self._remove, run=max(self._batch_size // 2, 1))
            finished: list[_Removal] = []
            more = True
            while more or removals.outstanding:
                if more and removals.outstanding < self._batch_size:
                    claimed = self._claim_overdue(now)
                    # a short batch is the last (what others took, they finish)
                    more = len(claimed) >= self._batch_size
                    removals.start(claimed, self._delete_bindings(pool, claimed))
                    continue
                finished.extend(removals.take())
                if len(finished) >= self._batch_size or not (more or removals.outstanding):
                    ended.extend(self._record(finished))
                    finished = []
        ended.extend(self._finish_many(self._claim_stale(now)))
        # People are told once every overdue grant is gone: Slack's latency (several calls per
        # grant) must not hold up the next batch's revocation.
        self._announce(ended)
        return [e.grant_id for e in ended]

    def _claim_overdue(self, now: datetime) -> list[Grant]:
        """Claim up to ``batch_size`` overdue grants; returns the rows claimed, as the claim
        left them. Fewer than ``batch_size``: no other overdue grant was free. (Two statements:
        PostgreSQL may run a ``LIMIT … FOR UPDATE SKIP LOCKED`` subquery of an ``UPDATE`` more
        than once, and claim more than the limit.)"""
        with self._sessions.begin() as session:
            ids = session.scalars(
                select(Grant.id)
                .where(Grant.status == GrantStatus.ACTIVE.value, Grant.expires_at <= now)
                .order_by(Grant.expires_at, Grant.id)
                .limit(self._batch_size)
                .with_for_update(skip_locked=True)
            ).all()
            if not ids:
                return []
            return list(
                session.scalars(
                    update(Grant)
                    .where(among(session, Grant.id, ids), Grant.status == GrantStatus.ACTIVE.value)
                    .values(
                        status=GrantStatus.REVOKING.value,
                        revoked_by=SYSTEM.id,
                        revoke_reason=EXPIRED,
                        updated_at=now,
                    )
                    .returning(Grant)
                    .execution_options(synchronize_session=False)
                ).all()
            )

    def _claim_stale(self, now: datetime) -> list[int]:
        cutoff = now - timedelta(seconds=self._retry_after)
        with self._sessions.begin() as session:
            return list(
                session.scalars(
                    update(Grant)
                    .where(Grant.status == GrantStatus.REVOKING.value, Grant.updated_at < cutoff)
                    .values(updated_at=now)
                    .returning(Grant.id)
                    .execution_options(synchronize_session=False)
                ).all()
            )

    def _finish_many(self, grant_ids: Sequence[int], *, actor: Actor = SYSTEM) -> list[_Ended]:
        """Remove claimed (``revoking``) grants from the backends (on ``workers`` threads) and
        record their ends (:meth:`_record`). ``actor`` is who ended the grants when they were
        revoked early."""
        grants = self._claimed(grant_ids)
        if not grants:
            return []
        if len(grants) == 1 or self._workers <= 1:
            removals = [self._remove(grant) for grant in grants]
        else:
            with ThreadPoolExecutor(
                max_workers=min(self._workers, len(grants)), thread_name_prefix="revoke"
            ) as pool:
                runs = _Removals(pool, self._remove, run=len(grants))
                runs.start(grants, self._delete_bindings(pool, grants))
                removals = runs.take()
        return self._record(removals, actor)

    def _delete_bindings(
        self, pool: ThreadPoolExecutor, grants: Sequence[Grant]
    ) -> dict[int, datetime]:
        """Delete the RoleBindings of ``grants`` a namespace at a time, one call each (on
        ``pool``): 200 grants ending together cost one request, not 200. Returns grant ID: when
        the API server answered that it deleted its RoleBinding. The others (a RoleBinding made
        before the grant-ID label, one already gone, a call refused, e.g. without the
        ``deletecollection`` verb) are removed one at a time by :meth:`_remove`."""
        groups: dict[tuple[str | None, str], list[int]] = {}
        for grant in grants:
            groups.setdefault((grant.kube_context, grant.namespace), []).append(grant.id)

        def delete(group: tuple[tuple[str | None, str], list[int]]) -> dict[int, datetime]:
            (context, namespace), ids = group
            if len(ids) < 2:
                return {}
            try:
                deleted = self._access.delete_grant_bindings(context, namespace, ids)
            except ActionError as exc:
                log.info(
                    "deleting %d RoleBindings in %s at once failed (%s); one at a time",
                    len(ids),
                    namespace,
                    exc,
                )
                return {}
            at = self._clock()
            return dict.fromkeys(deleted, at)

        found: dict[int, datetime] = {}
        for deleted in pool.map(delete, groups.items()):
            found.update(deleted)
        return found

    def _claimed(self, grant_ids: Sequence[int]) -> list[Grant]:
        """The rows of the grants ``grant_ids`` that are still ``revoking`` (one query)."""
        if not grant_ids:
            return []
        with self._sessions() as session:
            return list(
                session.scalars(
                    select(Grant)
                    .where(
                        among(session, Grant.id, grant_ids),
                        Grant.status == GrantStatus.REVOKING.value,
                    )
                    .order_by(Grant.id)
                ).all()
            )

    def _record(self, removals: Sequence[_Removal], actor: Actor = SYSTEM) -> list[_Ended]:
        """Record what removing claimed grants from the backends gave, in one transaction.

        A guarded ``UPDATE grants SET status = 'revoked' … WHERE id IN (…) AND status =
        'revoking' RETURNING id`` decides which ends this call records (a grant another instance
        finished first is left out), then each request's ``active → revoked`` transition and
        audit event, and a ``revoke_failed`` event for each removal that failed (that grant stays
        ``revoking`` and is retried after ``retry_after`` seconds). ``revoked_at`` is the moment
        the backends confirmed the removal.
        """
        if not removals:
            return []
        removed = {r.grant.id: r for r in removals if r.error is None}
        failed = [r for r in removals if r.error is not None]
        ended: list[_Ended] = []
        with self._sessions.begin() as session:
            done: list[int] = []
            if removed:
                done = sorted(
                    session.scalars(
                        update(Grant)
                        .where(
                            among(session, Grant.id, list(removed)),
                            Grant.status == GrantStatus.REVOKING.value,
                        )
                        .values(status=GrantStatus.REVOKED.value)
                        .returning(Grant.id)
                        .execution_options(synchronize_session=False)
                    ).all()
                )
            if done:
                # each at its own moment: one executemany, not a CASE of as many branches
                session.connection().execute(
                    update(_GRANTS)
                    .where(_GRANTS.c.id == bindparam("grant_id"))
                    .values(revoked_at=bindparam("at"), updated_at=bindparam("at")),
                    [{"grant_id": i, "at": removed[i].at} for i in done],
                )
            if done:
                ended = self._end_requests(session, [removed[grant_id] for grant_id in done], actor)
            if failed:
                requests = {
                    request.id: request
                    for request in session.scalars(
                        select(Request).where(
                            among(session, Request.id, [r.grant.id for r in failed])
                        )
                    )
                }
                for r in failed:
                    log.warning("grant #%s: revocation failed, will retry: %s", r.grant.id, r.error)
                    if r.grant.id in requests:
                        record_event(
                            session,
                            requests[r.grant.id],
                            event="revoke_failed",
                            actor=SYSTEM,
                            now=r.at,
                            detail={
                                "error": str(r.error),
                                "reason": r.grant.revoke_reason or EXPIRED,
                            },
                        )
        metrics.revocations(removals, done)  # metrics: failures and revocation lag
        return ended

    @staticmethod
    def _end_requests(session: Session, removals: Sequence[_Removal], actor: Actor) -> list[_Ended]:
        """In the caller's transaction: the ``active → revoked`` transition of the access requests
        of ``removals`` (grants this call has just moved to ``revoked``) as one guarded ``UPDATE
        requests … WHERE id IN (…) AND status = 'active' RETURNING …`` (the lifecycle's guarded
        update, for a batch), and one audit event per request moved, written at the moment its
        grant was removed, with when and how late (``lag_seconds`` after ``expires_at``)."""
        if Status.REVOKED not in TRANSITIONS[Status.ACTIVE]:
            raise InvalidTransition(f"{Status.ACTIVE} → {Status.REVOKED} is not allowed")
        # updated_at: the revoked_at just written to each grant, read by the same statement
        revoked_at = select(Grant.revoked_at).where(Grant.id == Request.id).scalar_subquery()
        moved = {
            row.id: row
            for row in session.execute(
                update(Request)
                .where(
                    among(session, Request.id, [r.grant.id for r in removals]),
                    Request.status == Status.ACTIVE.value,
                )
                .values(status=Status.REVOKED.value, updated_at=revoked_at)
                .returning(
                    Request.id, Request.action, Request.target, Request.rule, Request.policy_sha256
                )
                .execution_options(synchronize_session=False)
            )
        }
        ended: list[_Ended] = []
        events: list[dict[str, Any]] = []
        for r in removals:
            grant = r.grant
            reason = grant.revoke_reason or EXPIRED
            revoked_by = grant.revoked_by or SYSTEM.id
            event = _end_event(reason)
            ended.append(_Ended(grant.id, event))
            row = moved.get(grant.id)
            if row is None:
                log.warning("grant #%s: its request was not active", grant.id)
                continue
            who = actor if actor.id == revoked_by else Actor(revoked_by, _kind(revoked_by))
            events.append(
                {
                    "request_id": grant.id,
                    "event": f"grant_{event}",
                    "from_status": Status.ACTIVE.value,
                    "to_status": Status.REVOKED.value,
                    "actor_id": who.id,
                    "actor_kind": who.kind,
                    "action": row.action,
                    "target": row.target,
                    "rule": row.rule,
                    "policy_sha256": row.policy_sha256,
                    "detail": {
                        "why": event,
                        "reason": reason,
                        "expires_at": rfc3339(grant.expires_at),
                        "revoked_at": r.at.isoformat(),
                        "lag_seconds": round((r.at - grant.expires_at).total_seconds(), 3),
                        "removed": r.removed,
                    },
                    "created_at": r.at,
                }
            )
        if events:
            session.connection().execute(insert(_AUDIT), events)
        return ended

    def _remove(self, grant: Grant, role_binding_deleted: bool = False) -> _Removal:
        """Remove one claimed grant from Kubernetes (unless ``role_binding_deleted``) and Vault
        (idempotent); never raises ``ActionError``: a failure is returned, for the caller to
        audit and retry."""
        try:
            removed = self._access.revoke(
                kube_context=grant.kube_context,
                namespace=grant.namespace,
                role_binding=grant.role_binding,
                vault_group=grant.vault_group,
                vault_entity_id=grant.vault_entity_id,
                role_binding_deleted=role_binding_deleted,
            )
        except ActionError as exc:
            return _Removal(grant, self._clock(), None, exc)
        return _Removal(grant, self._clock(), removed, None)

    def _finish(self, grant_id: int, *, actor: Actor = SYSTEM) -> _Ended | None:
        """:meth:`_finish_many` of one grant: its end, or None when a backend failed (audited
        as ``revoke_failed``; retried later) or another instance finished it first."""
        ended = self._finish_many([grant_id], actor=actor)
        return ended[0] if ended else None

    # --- reminders ----------------------------------------------------------------------------

    def remind_due(self) -> list[int]:
        """Send the reminder (Extend / End now) of each active grant ending within
        ``reminder_before`` seconds that has not had it; returns their IDs. Grants no longer than
        ``reminder_before`` get none. Each reminder goes out once (a guarded update on
        ``reminded_at``), again after an extension."""
        now = self._clock()
        soon = now + timedelta(seconds=self.reminder_before)
        with self._sessions.begin() as session:
            ids = list(
                session.scalars(
                    update(Grant)
                    .where(
                        Grant.status == GrantStatus.ACTIVE.value,
                        Grant.reminded_at.is_(None),
                        Grant.expires_at > now,
                        Grant.expires_at <= soon,
                        Grant.duration_seconds > self.reminder_before,
                    )
                    .values(reminded_at=now)
                    .returning(Grant.id)
                    .execution_options(synchronize_session=False)
                ).all()
            )
        views = self.views(ids)
        for grant_id in sorted(views):
            self._notify(views[grant_id], "reminder")
        return sorted(ids)

    # --- drift --------------------------------------------------------------------------------

    def drift_check(self) -> list[str]:
        """Remove the RoleBindings labelled managed-by opsgate that should not exist.

        Looks in every namespace of every context ``kube_contexts`` returns. A binding whose grant
        is not active (revoked, unknown, no grant ID) is deleted, audited (``drift_removed``) and
        reported (``drift_removed``); one whose expiry annotation has passed while its grant is
        still active revokes that grant (reason ``drift: …``). Bindings of requests still being
        executed, and grants being revoked, are left alone. Returns
        ``"<context>/<namespace>/<name>"`` of each binding removed. The database is read in a
        bounded number of queries whatever the number of bindings (:mod:`approvals.drift`).
        """
        return self._drift.run()

    def _revoke_drifted(self, reasons: Mapping[int, str]) -> list[int]:
        """Revoke the active grants ``reasons`` names (grant ID to its ``revoke_reason``),
        claimed a batch per transaction, then finished and announced as the sweep does; returns
        the IDs this call ended."""
        now = self._clock()
        claimed: list[int] = []
        for chunk in chunks(sorted(reasons), self._batch_size):
            reason = case(
                *(
                    (Grant.id == gid, literal(reasons[gid], Grant.revoke_reason.type))
                    for gid in chunk
                ),
                else_=Grant.revoke_reason,
            )
            with self._sessions.begin() as session:
                claimed.extend(
                    session.scalars(
                        update(Grant)
                        .where(
                            among(session, Grant.id, chunk),
                            Grant.status == GrantStatus.ACTIVE.value,
                        )
                        .values(
                            status=GrantStatus.REVOKING.value,
                            revoked_by=SYSTEM.id,
                            revoke_reason=reason,
                            updated_at=now,
                        )
                        .returning(Grant.id)
                        .execution_options(synchronize_session=False)
                    ).all()
                )
        ended: list[_Ended] = []
        for chunk in chunks(sorted(claimed), self._batch_size):
            ended.extend(self._finish_many(chunk))
        self._announce(ended)
        return [item.grant_id for item in ended]

    # --- telling people -----------------------------------------------------------------------

    def _announce(self, ended: Sequence[_Ended]) -> None:
        if not ended:
            return
        views = self.views(item.grant_id for item in ended)
        with announcing_batch(self._notifier):  # one audit summary for the batch
            for item in ended:
                if self._scheduling is not None:
                    self._scheduling.grant_ended(item.grant_id)
                self._notify(views[item.grant_id], item.event)

    def _notify(self, view: GrantView, event: str) -> None:
        try:
            self._notifier.grant_changed(view, event=event)
        except NotifyError as exc:
            # The change itself is committed and audited; only its announcement failed.
            log.error("grant #%s: could not announce '%s': %s", view.id, event, exc)


def _claim(session: Session, grant_id: int, *, by: str, why: str, now: datetime) -> bool:
    """Claim an active grant for revocation (``active → revoking``, a guarded UPDATE): True for
    the one caller that wins, False when it is no longer active (ended, or claimed already)."""
    claimed = rows_changed(
        session,
        update(Grant)
        .where(Grant.id == grant_id, Grant.status == GrantStatus.ACTIVE.value)
        .values(status=GrantStatus.REVOKING.value, revoked_by=by, revoke_reason=why, updated_at=now)
        .execution_options(synchronize_session=False),
    )
    return claimed == 1


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


def _end_event(reason: str) -> str:
    if reason == EXPIRED:
        return EXPIRED
    if reason.startswith("drift"):
        return DRIFT_REMOVED
    return REVOKED


def _kind(actor_id: str) -> str:
    return SYSTEM.kind if actor_id == SYSTEM.id else "human"


def _view(grant: Grant, approvers: Mapping[str, Any] | None) -> GrantView:
    return GrantView(
        id=grant.id,
        grantee_id=grant.grantee_id,
        environment=grant.environment,
        kube_context=grant.kube_context,
        namespace=grant.namespace,
        role=grant.role,
        kubernetes_user=grant.kubernetes_user,
        role_binding=grant.role_binding,
        vault_group=grant.vault_group,
        vault_entity=grant.vault_entity,
        status=grant.status,
        started_at=grant.started_at,
        expires_at=grant.expires_at,
        duration_seconds=grant.duration_seconds,
        max_duration_seconds=grant.max_duration_seconds,
        reminded_at=grant.reminded_at,
        revoked_at=grant.revoked_at,
        revoked_by=grant.revoked_by,
        revoke_reason=grant.revoke_reason,
        approver_ids=tuple((approvers or {}).get("users", [])),
    )
