"""The drift check: RoleBindings labelled managed-by opsgate that no active grant accounts for.

:class:`DriftCheck` is run by :meth:`approvals.grants.GrantService.drift_check` (at start and
every ``drift_interval`` seconds). It lists the bindings of every context, reads what the
database says of their grant IDs in a bounded number of queries (two, plus one per
:data:`~approvals.paging.IN_CHUNK` IDs of the bindings that are drift), compares in memory, then
deletes and audits what should not exist; a binding whose grant is active but whose expiry
annotation has passed has its grant revoked through the service.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import partial
from typing import Any, NamedTuple

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from actions.access import (
    EXPIRES_AT_ANNOTATION,
    GRANT_ID_ANNOTATION,
    Access,
    parse_rfc3339,
    rfc3339,
)
from actions.errors import ActionError
from approvals import metrics
from approvals.lifecycle import SYSTEM, record_detached
from approvals.lifecycle import record as record_event
from approvals.models import Grant, GrantStatus, Request, Status
from approvals.notifier import GrantView
from approvals.paging import among, chunks

log = logging.getLogger(__name__)

DRIFT_REMOVED = "drift_removed"
"""The audit event and the notice of a binding removed as drift."""

_EXECUTING = frozenset({Status.APPROVED.value, Status.EXECUTING.value})


class _State(NamedTuple):
    """What the database says of a RoleBinding's grant ID: its request's status, and its grant's
    status, namespace and RoleBinding name (None when the request has no grant yet)."""

    request_status: str
    grant_status: str | None
    namespace: str | None
    role_binding: str | None


@dataclass(frozen=True)
class _Binding:
    """A RoleBinding labelled managed-by opsgate, as the drift check reads it."""

    context: str | None
    namespace: str
    name: str
    grant_id: int | None
    expiry: datetime | None
    raw: Mapping[str, Any]

    @classmethod
    def of(cls, context: str | None, raw: Mapping[str, Any]) -> _Binding:
        meta = raw.get("metadata", {})
        annotations: Mapping[str, str] = meta.get("annotations") or {}
        return cls(
            context=context,
            namespace=meta.get("namespace", ""),
            name=meta.get("name", ""),
            grant_id=_int(annotations.get(GRANT_ID_ANNOTATION)),
            expiry=_time(annotations.get(EXPIRES_AT_ANNOTATION)),
            raw=raw,
        )

    @property
    def path(self) -> str:
        """``<context>/<namespace>/<name>``."""
        return f"{self.context or ''}/{self.namespace}/{self.name}"

    def detail(self, why: str) -> dict[str, Any]:
        """The audit detail of its removal."""
        return {
            "kube_context": self.context,
            "namespace": self.namespace,
            "role_binding": self.name,
            "why": why,
            "subjects": self.raw.get("subjects", []),
            "role_ref": self.raw.get("roleRef", {}),
        }

    def view(self, why: str, now: datetime) -> GrantView:
        """A view of a binding no grant of the database accounts for, for the drift report."""
        meta = self.raw.get("metadata", {})
        subjects = self.raw.get("subjects") or [{}]
        created = _time(meta.get("creationTimestamp")) or now
        expiry = self.expiry or created
        return GrantView(
            id=self.grant_id or 0,
            grantee_id="",
            environment=None,
            kube_context=self.context,
            namespace=self.namespace,
            role=self.raw.get("roleRef", {}).get("name", ""),
            kubernetes_user=subjects[0].get("name", ""),
            role_binding=self.name,
            vault_group=None,
            vault_entity=None,
            status="drift",
            started_at=created,
            expires_at=expiry,
            duration_seconds=max(int((expiry - created).total_seconds()), 0),
            max_duration_seconds=None,
            revoke_reason=f"drift: {why}",
        )


class DriftCheck:
    """The drift check of the bindings in the contexts ``kube_contexts`` returns.

    ``sessions``, ``access`` and ``clock`` are the grant service's; ``revoke`` revokes active
    grants whose binding says they have expired (grant ID to the ``revoke_reason``; returns the
    IDs it ended); ``views`` reads grants by ID; ``notify`` reports one removal
    (``drift_removed``).
    """

    def __init__(
        self,
        *,
        sessions: sessionmaker[Session],
        access: Access,
        clock: Callable[[], datetime],
        kube_contexts: Callable[[], Iterable[str | None]],
        revoke: Callable[[Mapping[int, str]], list[int]],
        views: Callable[[Iterable[int]], dict[int, GrantView]],
        notify: Callable[[GrantView, str], None],
    ) -> None:
        self._sessions = sessions
        self._access = access
        self._clock = clock
        self._kube_contexts = kube_contexts
        self._revoke = revoke
        self._views = views
        self._notify = notify

    def run(self) -> list[str]:
        """Remove the RoleBindings labelled managed-by opsgate that should not exist.

        Looks in every namespace of every context ``kube_contexts`` returns. A binding whose grant
        is not active (revoked, unknown, no grant ID) is deleted, audited (``drift_removed``) and
        reported (``drift_removed``); one whose expiry annotation has passed while its grant is
        still active revokes that grant (reason ``drift: …``). Bindings of requests still being
        executed, and grants being revoked, are left alone. Returns
        ``"<context>/<namespace>/<name>"`` of each binding removed.

        A bounded number of queries whatever the number of bindings: after one list call per
        context, two queries read the requests being executed and the grants active or being
        revoked, compared in memory; only the grant IDs of bindings neither accounts for (the
        drift) are looked up, :data:`~approvals.paging.IN_CHUNK` at a time; what is removed is
        recorded a batch at a time.
        """
        listed: list[_Binding] = []
        for context in dict.fromkeys(self._kube_contexts()):
            try:
                found = self._access.managed_role_bindings(context)
            except ActionError as exc:
                log.warning("drift check: cannot list RoleBindings in %s: %s", context, exc)
                continue
            unique = {(b.namespace, b.name): b for b in map(partial(_Binding.of, context), found)}
            listed.extend(unique.values())
        # read after listing: a grant activated meanwhile is seen active, never as drift
        states = self._states({b.grant_id for b in listed if b.grant_id is not None})
        now = self._clock()
        expired: dict[int, tuple[_Binding, str]] = {}
        strays: list[tuple[_Binding, str]] = []
        for binding in listed:
            state = states.get(binding.grant_id) if binding.grant_id is not None else None
            verdict = _drift_verdict(binding, state, now)
            if verdict is None:
                continue
            stray, why = verdict
            if not stray and binding.grant_id in expired:
                # the same grant's binding in another context: the revocation removes the one
                # in the grant's own context; this one goes as drift (gone already when both
                # contexts are the same cluster)
                stray, why = True, f"grant #{binding.grant_id} is revoked: {why}"
            if stray:
                strays.append((binding, why))
            else:
                assert binding.grant_id is not None
                expired[binding.grant_id] = (binding, why)
        ended = self._revoke({grant_id: why for grant_id, (_, why) in expired.items()})
        return [expired[grant_id][0].path for grant_id in ended] + self._delete_strays(strays, now)

    def _states(self, grant_ids: set[int]) -> dict[int, _State]:
        """What the database says of each of ``grant_ids`` that has a request: the requests
        being executed (one query), the grants active or being revoked (one query), then the
        rest, :data:`~approvals.paging.IN_CHUNK` at a time (read in that order, so a request that
        moves on meanwhile is seen in one state or the next, never in neither)."""
        found: dict[int, _State] = {}
        with self._sessions() as session:
            for request_id, status in session.execute(
                select(Request.id, Request.status).where(Request.status.in_(_EXECUTING))
            ):
                if request_id in grant_ids:
                    found[request_id] = _State(status, None, None, None)
            for row in session.execute(
                select(Grant.id, Request.status, Grant.status, Grant.namespace, Grant.role_binding)
                .join(Request, Request.id == Grant.id)
                .where(Grant.status.in_([GrantStatus.ACTIVE.value, GrantStatus.REVOKING.value]))
            ):
                if row[0] in grant_ids:
                    found[row[0]] = _State(row[1], row[2], row[3], row[4])
            rest = sorted(grant_ids - found.keys())
            for chunk in chunks(rest):
                for row in session.execute(
                    select(
                        Request.id,
                        Request.status,
                        Grant.status,
                        Grant.namespace,
                        Grant.role_binding,
                    )
                    .select_from(Request)
                    .outerjoin(Grant, Grant.id == Request.id)
                    .where(among(session, Request.id, chunk))
                ):
                    found[row[0]] = _State(row[1], row[2], row[3], row[4])
        return found

    def _delete_strays(self, strays: Sequence[tuple[_Binding, str]], now: datetime) -> list[str]:
        """Delete the bindings no active grant accounts for, then audit them in one transaction
        and report each (``drift_removed``)."""
        deleted: list[tuple[_Binding, str]] = []
        for binding, why in strays:
            try:
                if self._access.delete_role_binding(
                    binding.context, binding.namespace, binding.name
                ):
                    deleted.append((binding, why))
            except ActionError as exc:
                log.warning(
                    "drift check: cannot delete %s/%s: %s", binding.namespace, binding.name, exc
                )
        if not deleted:
            return []
        ids = sorted({b.grant_id for b, _ in deleted if b.grant_id is not None})
        with self._sessions.begin() as session:
            requests: dict[int, Request] = {}
            for chunk in chunks(ids):
                requests.update(
                    (r.id, r)
                    for r in session.scalars(
                        select(Request).where(among(session, Request.id, chunk))
                    )
                )
            for binding, why in deleted:
                detail = binding.detail(why)
                request = requests.get(binding.grant_id) if binding.grant_id is not None else None
                if request is not None:
                    record_event(
                        session,
                        request,
                        event="drift_removed",
                        actor=SYSTEM,
                        now=now,
                        detail=detail,
                    )
                    continue
                record_detached(
                    session,
                    event="drift_removed",
                    actor=SYSTEM,
                    now=now,
                    action="access",
                    target=f"rolebinding/{binding.name} in {binding.namespace}",
                    detail=detail,
                )
        views = self._views(ids)
        for binding, why in deleted:
            log.warning(
                "drift check: removed RoleBinding %s/%s (%s)", binding.namespace, binding.name, why
            )
            known = views.get(binding.grant_id) if binding.grant_id is not None else None
            metrics.DRIFT_CORRECTIONS.inc()  # metrics
            self._notify(known or binding.view(why, self._clock()), DRIFT_REMOVED)
        return [binding.path for binding, _ in deleted]


def _drift_verdict(
    binding: _Binding, state: _State | None, now: datetime
) -> tuple[bool, str] | None:
    """What the drift check does with ``binding``, given the database's ``state`` of its grant
    ID: None (leave it), ``(True, why)`` (delete it: no active grant accounts for it) or
    ``(False, why)`` (its grant is active but the binding says it has expired: revoke it)."""
    status = state.grant_status if state is not None else None
    executing = state is not None and state.request_status in _EXECUTING
    if status == GrantStatus.REVOKING.value or (status is None and executing):
        return None
    where = (binding.namespace, binding.name)
    mine = state is not None and (state.namespace, state.role_binding) == where
    if status == GrantStatus.ACTIVE.value and mine:
        if binding.expiry is None or binding.expiry > now:
            return None
        return False, (
            f"drift: RoleBinding {binding.namespace}/{binding.name} says it expired at "
            f"{rfc3339(binding.expiry)}"
        )
    if status == GrantStatus.ACTIVE.value:
        return True, f"it is not the RoleBinding of active grant #{binding.grant_id}"
    if status is not None:
        return True, f"grant #{binding.grant_id} is {status}"
    return True, "no grant of opsgate's database matches it"


def _int(value: str | None) -> int | None:
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def _time(value: str | None) -> datetime | None:
    try:
        return parse_rfc3339(value) if value else None
    except ValueError:
        return None
