"""Revoking grants: claim, remove from the backends, record the ends, in batches.

A grant is first *claimed* (``active → revoking``, a guarded ``UPDATE``; on PostgreSQL the
candidates are read ``FOR UPDATE SKIP LOCKED`` so two sweeps share the work), then removed from
Kubernetes and Vault (idempotent; the RoleBindings of a batch in one namespace in one
``deletecollection`` call), then recorded ``revoking → revoked`` together with its request's
``active → revoked`` transition and audit event (:func:`approvals.lifecycle.transition_each`),
one transaction per batch. :class:`Revoker` does the work; :class:`approvals.grants.GrantService`
tells people.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import bindparam, case, literal, select, update
from sqlalchemy.orm import Session, sessionmaker

from actions.access import Access, rfc3339
from actions.errors import ActionError
from approvals import metrics
from approvals.drift import DRIFT_REMOVED
from approvals.grants.common import EXPIRED, REVOKED, GrantNotActive, UnknownGrant
from approvals.lifecycle import SYSTEM, Actor, Entry, rows_changed, transition_each
from approvals.lifecycle import record as record_event
from approvals.models import Grant, GrantStatus, Request, Status
from approvals.paging import among, chunks

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Ended:
    """A grant this process ended, and the event of its end (expired, revoked, drift_removed)."""

    grant_id: int
    event: str


@dataclass(frozen=True)
class _Removal:
    """What removing one claimed grant from the backends gave: when, and what or which error."""

    grant: Grant
    at: datetime
    removed: dict[str, bool | str] | None
    error: ActionError | None


_GRANTS = Grant.metadata.tables[Grant.__tablename__]


class _Removals:
    """Removals from the backends running on ``pool``, handed back in runs of at least ``run``
    (or all that remain): the waiting thread wakes once a run, not once a grant."""

    def __init__(
        self,
        pool: ThreadPoolExecutor,
        remove: Callable[[Grant, bool, str | None], _Removal],
        *,
        run: int,
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

    def start(
        self,
        grants: Iterable[Grant],
        deleted: Mapping[int, datetime],
        kept: Mapping[int, str],
    ) -> None:
        """Remove ``grants``; those in ``deleted`` (grant ID: when its RoleBinding was deleted
        with others) are done already, unless Vault is left; those in ``kept`` (grant ID: why)
        keep their Vault group membership."""
        for grant in grants:
            with self._ready:
                self._outstanding += 1
            at = deleted.get(grant.id)
            keep = kept.get(grant.id)
            if at is not None and (keep or not (grant.vault_group and grant.vault_entity_id)):
                done: Future[_Removal] = Future()
                removed: dict[str, bool | str] = {
                    "role_binding_deleted": True,
                    "vault_member_removed": False,
                }
                if keep:
                    removed["vault_member_kept"] = keep
                done.set_result(_Removal(grant, at, removed, None))
                self._finished(done)
                continue
            future = self._pool.submit(self._remove, grant, at is not None, keep)
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


class Revoker:
    """Claims, removes and records the ends of grants.

    ``sessions`` makes database sessions; ``access`` talks to Kubernetes and Vault; ``clock``
    returns an aware UTC datetime; ``retry_after`` (seconds) is how long a ``revoking`` claim
    may stay unfinished before a sweep takes it over; ``batch_size`` rows are claimed per
    transaction and removed by ``workers`` threads.
    """

    def __init__(
        self,
        *,
        sessions: sessionmaker[Session],
        access: Access,
        clock: Callable[[], datetime],
        retry_after: float,
        batch_size: int,
        workers: int,
    ) -> None:
        self._sessions = sessions
        self._access = access
        self._clock = clock
        self.retry_after = retry_after
        self._batch_size = batch_size
        self._workers = workers

    def claim(self, grant_id: int, *, by: str, why: str) -> None:
        """Claim active grant ``grant_id`` for revocation (:func:`claim`) in its own transaction.
        Raises :class:`UnknownGrant`, or :class:`GrantNotActive` when it is no longer active."""
        now = self._clock()
        with self._sessions.begin() as session:
            if not claim(session, grant_id, by=by, why=why, now=now):
                grant = session.get(Grant, grant_id)
                if grant is None:
                    raise UnknownGrant(f"There is no grant #{grant_id}.")
                raise GrantNotActive(f"Grant #{grant_id} is already {grant.status}.")

    def sweep(self) -> list[Ended]:
        """Revoke every active grant whose ``expires_at`` has passed, and finish the claims left
        unfinished for ``retry_after`` seconds; returns the ends this call recorded.

        Idempotent and safe to run from several instances at once: each grant is revoked once.
        The work is a pipeline: batches of ``batch_size`` grants are claimed while earlier ones
        are still being removed (at most about two batches in flight, so other instances still
        get a share); a batch's RoleBindings go in one call per namespace
        (:meth:`_delete_bindings`), what is left (Vault, RoleBindings the call did not delete)
        on ``workers`` threads; the ends are recorded a batch at a time as the removals finish,
        while the next ones go on.
        """
        now = self._clock()
        ended: list[Ended] = []
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
                    removals.start(
                        claimed, self._delete_bindings(pool, claimed), self._vault_kept(claimed)
                    )
                    continue
                finished.extend(removals.take())
                if len(finished) >= self._batch_size or not (more or removals.outstanding):
                    ended.extend(self._record(finished))
                    finished = []
        ended.extend(self.finish_many(self._claim_stale(now)))
        return ended

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
        cutoff = now - timedelta(seconds=self.retry_after)
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

    def finish_many(self, grant_ids: Sequence[int], *, actor: Actor = SYSTEM) -> list[Ended]:
        """Remove claimed (``revoking``) grants from the backends (on ``workers`` threads) and
        record their ends (:meth:`_record`). ``actor`` is who ended the grants when they were
        revoked early."""
        grants = self._claimed(grant_ids)
        if not grants:
            return []
        kept = self._vault_kept(grants)
        if len(grants) == 1 or self._workers <= 1:
            removals = [self._remove(grant, False, kept.get(grant.id)) for grant in grants]
        else:
            with ThreadPoolExecutor(
                max_workers=min(self._workers, len(grants)), thread_name_prefix="revoke"
            ) as pool:
                runs = _Removals(pool, self._remove, run=len(grants))
                runs.start(grants, self._delete_bindings(pool, grants), kept)
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

    def _record(self, removals: Sequence[_Removal], actor: Actor = SYSTEM) -> list[Ended]:
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
        ended: list[Ended] = []
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
    def _end_requests(session: Session, removals: Sequence[_Removal], actor: Actor) -> list[Ended]:
        """In the caller's transaction: the ``active → revoked`` transition of the access requests
        of ``removals`` (grants this call has just moved to ``revoked``), as one batch
        (:func:`~approvals.lifecycle.transition_each`), with one audit event per request moved,
        written at the moment its grant was removed, with when and how late (``lag_seconds``
        after ``expires_at``)."""
        ended: list[Ended] = []
        entries: dict[int, Entry] = {}
        for r in removals:
            grant = r.grant
            reason = grant.revoke_reason or EXPIRED
            revoked_by = grant.revoked_by or SYSTEM.id
            event = _end_event(reason)
            ended.append(Ended(grant.id, event))
            who = actor if actor.id == revoked_by else Actor(revoked_by, _kind(revoked_by))
            entries[grant.id] = Entry(
                event=f"grant_{event}",
                actor=who,
                at=r.at,
                detail={
                    "why": event,
                    "reason": reason,
                    "expires_at": rfc3339(grant.expires_at),
                    "revoked_at": r.at.isoformat(),
                    "lag_seconds": round((r.at - grant.expires_at).total_seconds(), 3),
                    "removed": r.removed,
                },
            )
        # updated_at: the revoked_at just written to each grant, read by the same statement
        revoked_at = select(Grant.revoked_at).where(Grant.id == Request.id).scalar_subquery()
        moved = transition_each(
            session,
            entries,
            expected=Status.ACTIVE,
            to=Status.REVOKED,
            updated_at=revoked_at,
        )
        for grant_id in sorted(set(entries) - set(moved)):
            log.warning("grant #%s: its request was not active", grant_id)
        return ended

    def _remove(
        self, grant: Grant, role_binding_deleted: bool = False, keep_vault: str | None = None
    ) -> _Removal:
        """Remove one claimed grant from Kubernetes (unless ``role_binding_deleted``) and Vault
        (unless ``keep_vault``, why its membership stays: :meth:`_vault_kept`); idempotent;
        never raises ``ActionError``: a failure is returned, for the caller to audit and
        retry."""
        try:
            removed: dict[str, bool | str] = dict(
                self._access.revoke(
                    kube_context=grant.kube_context,
                    namespace=grant.namespace,
                    role_binding=grant.role_binding,
                    vault_group=None if keep_vault else grant.vault_group,
                    vault_entity_id=None if keep_vault else grant.vault_entity_id,
                    role_binding_deleted=role_binding_deleted,
                )
            )
        except ActionError as exc:
            return _Removal(grant, self._clock(), None, exc)
        if keep_vault:
            removed["vault_member_kept"] = keep_vault
        return _Removal(grant, self._clock(), removed, None)

    def _vault_kept(self, grants: Sequence[Grant]) -> dict[int, str]:
        """Grant ID -> why the end of that grant leaves its entity in its Vault group: the
        entity was a member before, through no opsgate grant (``vault_member_added`` False), or
        another active grant of the same entity in the same group still needs the membership.
        One query per :data:`~approvals.paging.IN_CHUNK` entities of ``grants``, whatever their
        number."""
        vault = [g for g in grants if g.vault_group and g.vault_entity_id]
        kept = {
            g.id: "the entity was a member of the group before the grant"
            for g in vault
            if g.vault_member_added is False
        }
        rest = [g for g in vault if g.id not in kept]
        if not rest:
            return kept
        needed: dict[tuple[str | None, str | None], int] = {}
        with self._sessions() as session:
            for chunk in chunks(sorted({str(g.vault_entity_id) for g in rest})):
                for active_id, group, entity_id in session.execute(
                    select(Grant.id, Grant.vault_group, Grant.vault_entity_id)
                    .where(
                        Grant.status == GrantStatus.ACTIVE.value,
                        Grant.vault_entity_id.in_(chunk),
                    )
                    .order_by(Grant.id)
                ):
                    needed.setdefault((group, entity_id), active_id)
        for g in rest:
            other = needed.get((g.vault_group, g.vault_entity_id))
            if other is not None and other != g.id:
                kept[g.id] = f"active grant #{other} of the same entity still needs it"
        return kept

    def finish(self, grant_id: int, *, actor: Actor = SYSTEM) -> Ended | None:
        """:meth:`finish_many` of one grant: its end, or None when a backend failed (audited
        as ``revoke_failed``; retried later) or another instance finished it first."""
        ended = self.finish_many([grant_id], actor=actor)
        return ended[0] if ended else None

    def revoke_drifted(self, reasons: Mapping[int, str]) -> list[Ended]:
        """Revoke the active grants ``reasons`` names (grant ID to its ``revoke_reason``),
        claimed a batch per transaction, then finished as the sweep does; returns the ends this
        call recorded."""
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
        ended: list[Ended] = []
        for chunk in chunks(sorted(claimed), self._batch_size):
            ended.extend(self.finish_many(chunk))
        return ended


def claim(session: Session, grant_id: int, *, by: str, why: str, now: datetime) -> bool:
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


def _end_event(reason: str) -> str:
    if reason == EXPIRED:
        return EXPIRED
    if reason.startswith("drift"):
        return DRIFT_REMOVED
    return REVOKED


def _kind(actor_id: str) -> str:
    return SYSTEM.kind if actor_id == SYSTEM.id else "human"
