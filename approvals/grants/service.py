"""The grants service: grants in the database and in the backends, kept in step.

Reading, activation, extension, early revocation, the expiry sweep, reminders and the drift
check, and telling people (the grantee, then the subscribers: the gate, the App Home). The
revocation work itself is :mod:`approvals.grants.revocation`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session, sessionmaker

from actions.access import Access, format_duration, parse_rfc3339, rfc3339
from actions.errors import ActionError
from approvals.drift import DriftCheck
from approvals.grants.common import (
    ExtensionRefused,
    GrantBackendError,
    GrantListener,
    GrantNotActive,
    GrantScheduling,
    UnknownGrant,
    extension_refusal,
)
from approvals.grants.revocation import Ended, Revoker
from approvals.lifecycle import SYSTEM, Actor, rows_changed, transition
from approvals.lifecycle import record as record_event
from approvals.models import Grant, GrantStatus, Request, Status
from approvals.notifier import GrantNotifier, GrantView, NotifyError, announcing_batch
from approvals.paging import PAGE_SIZE, Page, among, chunks, page_window
from approvals.vault_drift import VaultDriftCheck

log = logging.getLogger(__name__)


class GrantService:
    """Grants in the database and in the backends, kept in step.

    ``sessions`` makes database sessions; ``access`` is the access request kind (it talks to
    Kubernetes and Vault); ``notifier`` tells people; ``clock`` returns an aware UTC ``datetime``;
    ``kube_contexts`` returns the kubeconfig contexts of the policy's environments (the drift
    check looks in each); ``vault_groups`` returns the Vault identity groups of the policy's
    access rules, each with whether its members are managed elsewhere (the drift check lists
    the members of the others). ``reminder_before`` (seconds) is when the reminder goes out
    before the end; ``retry_after`` (seconds) is how long a ``revoking`` claim may stay
    unfinished before a sweep takes it over; ``batch_size`` rows are claimed per transaction and
    removed from the backends by ``workers`` threads.
    """

    def __init__(
        self,
        *,
        sessions: sessionmaker[Session],
        access: Access,
        notifier: GrantNotifier,
        clock: Callable[[], datetime],
        kube_contexts: Callable[[], Iterable[str | None]] = lambda: (None,),
        vault_groups: Callable[[], Mapping[str, bool]] = dict,
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
        self._revoker = Revoker(
            sessions=sessions,
            access=access,
            clock=clock,
            retry_after=retry_after,
            batch_size=batch_size,
            workers=workers,
        )
        self._scheduling: GrantScheduling | None = None
        self._subscribers: list[GrantListener] = []
        self._drift = DriftCheck(
            sessions=sessions,
            access=access,
            clock=clock,
            kube_contexts=kube_contexts,
            revoke=self._revoke_drifted,
            views=self.views,
            notify=self._notify,
        )
        self._vault_drift = VaultDriftCheck(
            sessions=sessions,
            access=access,
            clock=clock,
            groups=vault_groups,
            notify=self._notify,
        )

    def subscribe(self, listener: GrantListener) -> None:
        """Call ``listener(grant, event)`` after each event of a grant is told to its grantee
        (``started``, ``reminder``, ``extended``, and its end: ``expired``, ``revoked``,
        ``drift_removed``, see :data:`ENDED`), in the order subscribed. The gate subscribes to
        show a grant's end on its access request; the app, to refresh the grantee's App Home."""
        self._subscribers.append(listener)

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
            return grant_view(row[0], row[1])

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
            items = tuple(grant_view(grant, approvers) for grant, approvers in rows)
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
                    found[grant.id] = grant_view(grant, approvers)
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
                    vault_member_added=_vault_member_added(session, facts),
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
        self._revoker.claim(grant_id, by=actor.id, why=why)
        ended = self._revoker.finish(grant_id, actor=actor)
        if ended is None:
            raise GrantBackendError(
                f"Grant #{grant_id} could not be removed from Kubernetes/Vault yet; opsgate "
                f"retries within {format_duration(self._revoker.retry_after)}."
            )
        self._announce([ended])
        return self.get(grant_id)

    def sweep(self) -> list[int]:
        """Revoke every active grant whose ``expires_at`` has passed, and finish the claims left
        unfinished for ``retry_after`` seconds; returns the IDs revoked by this call
        (:meth:`approvals.grants.revocation.Revoker.sweep`: idempotent, safe from several
        instances at once, pipelined in batches)."""
        ended = self._revoker.sweep()
        # People are told once every overdue grant is gone: Slack's latency (several calls per
        # grant) must not hold up the next batch's revocation.
        self._announce(ended)
        return [e.grant_id for e in ended]

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
        """Remove the RoleBindings labelled managed-by opsgate, and the members of opsgate's
        Vault groups, that should not exist.

        Looks in every namespace of every context ``kube_contexts`` returns. A binding whose grant
        is not active (revoked, unknown, no grant ID) is deleted, audited (``drift_removed``) and
        reported (``drift_removed``); one whose expiry annotation has passed while its grant is
        still active revokes that grant (reason ``drift: …``). Bindings of requests still being
        executed, and grants being revoked, are left alone. Returns
        ``"<context>/<namespace>/<name>"`` of each binding removed. The database is read in a
        bounded number of queries whatever the number of bindings (:mod:`approvals.drift`).
        Then each member of a Vault group of ``vault_groups`` not marked managed elsewhere that
        no grant accounts for is removed, audited and reported (``drift_removed``; returned as
        ``"vault:<group>/<entity ID>"``; :mod:`approvals.vault_drift`).
        """
        return self._drift.run() + self._vault_drift.run()

    def _revoke_drifted(self, reasons: Mapping[int, str]) -> list[int]:
        """Revoke the active grants ``reasons`` names (grant ID to its ``revoke_reason``) as the
        sweep does, and announce their ends; returns the IDs this call ended."""
        ended = self._revoker.revoke_drifted(reasons)
        self._announce(ended)
        return [item.grant_id for item in ended]

    # --- telling people -----------------------------------------------------------------------

    def _announce(self, ended: Sequence[Ended]) -> None:
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
        if view.grantee_id:
            for listener in self._subscribers:
                listener(view, event)


def _vault_member_added(session: Session, facts: Mapping[str, Any]) -> bool | None:
    """Whether a grant being recorded added its entity to its Vault group, so its end may remove
    it (``Grant.vault_member_added``): None without a Vault group; True when the entity was not
    a member before (``vault_member_before``, absent for an outcome of an earlier version:
    False), or was one through another opsgate grant of the same entity and group, active or
    ending, that added it (this grant joins that chain); False otherwise (a member that someone
    else made stays after the grant)."""
    group, entity_id = facts.get("vault_group"), facts.get("vault_entity_id")
    if not group or not entity_id:
        return None
    if not facts.get("vault_member_before"):
        return True
    chained = session.scalar(
        select(Grant.id)
        .where(
            Grant.vault_group == group,
            Grant.vault_entity_id == entity_id,
            Grant.status.in_([GrantStatus.ACTIVE.value, GrantStatus.REVOKING.value]),
            Grant.vault_member_added.is_(True),
        )
        .limit(1)
    )
    return chained is not None


def grant_view(grant: Grant, approvers: Mapping[str, Any] | None) -> GrantView:
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
