"""The request lifecycle: every allowed transition in one table, each one a guarded update.

``pending → approved → executing → succeeded | failed | unknown``; ``pending → denied | expired |
cancelled``; an access grant that succeeded is ``active`` until ``revoked``. A transition is
``UPDATE requests SET status = :to WHERE id = :id AND status = :expected``: it happens once or not
at all, so a double click, a Slack retry or two approvers at once execute a request exactly once.
Each transition that happens writes its audit event in the same transaction (the caller's).

This module is the only writer of ``requests.status`` and the only builder of ``audit_events``
rows: one request (:func:`transition`, :func:`record`), a set chosen by a condition
(:func:`transition_many`, :func:`record_many`), a batch of known IDs with an event of their own
each (:func:`transition_each`, the grant sweep's), and events of no request
(:func:`record_detached`: a refused submission, a RoleBinding no request accounts for).
docs/architecture.md draws the table.

``unknown``: the change was sent without an answer, and reading the target back could not tell
whether it took effect (:class:`actions.errors.OutcomeUnknown`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from sqlalchemy import ColumnElement, CursorResult, Delete, Update, insert, update
from sqlalchemy.orm import Session

from approvals.models import ActorKind, AuditEvent, Request, Status
from approvals.paging import among

_AUDIT = AuditEvent.metadata.tables[AuditEvent.__tablename__]

TRANSITIONS: dict[Status, frozenset[Status]] = {
    Status.PENDING: frozenset({Status.APPROVED, Status.DENIED, Status.EXPIRED, Status.CANCELLED}),
    Status.APPROVED: frozenset({Status.EXECUTING}),
    Status.EXECUTING: frozenset({Status.SUCCEEDED, Status.FAILED, Status.UNKNOWN, Status.ACTIVE}),
    Status.ACTIVE: frozenset({Status.REVOKED}),
    Status.SUCCEEDED: frozenset(),
    Status.FAILED: frozenset(),
    Status.UNKNOWN: frozenset(),
    Status.DENIED: frozenset(),
    Status.EXPIRED: frozenset(),
    Status.CANCELLED: frozenset(),
    Status.REVOKED: frozenset(),
}
"""For each state, the states it may move to. Nothing else is ever written to ``status``."""

TERMINAL: frozenset[Status] = frozenset(s for s, nxt in TRANSITIONS.items() if not nxt)

RETURNED = (Request.id, Request.action, Request.target, Request.rule, Request.policy_sha256)
"""The columns a batch's ``UPDATE … RETURNING`` reads for its audit events."""


class InvalidTransition(ValueError):
    """A transition that :data:`TRANSITIONS` does not list (a programming error, not a race)."""


@dataclass(frozen=True)
class Actor:
    """Who causes a transition: a Slack user ID, or ``opsgate`` for the bot itself."""

    id: str
    kind: str = ActorKind.HUMAN


SYSTEM = Actor("opsgate", ActorKind.SYSTEM)


def transition(
    session: Session,
    request: Request,
    *,
    expected: Status,
    to: Status,
    actor: Actor,
    now: datetime,
    event: str | None = None,
    detail: dict[str, Any] | None = None,
    **values: Any,
) -> bool:
    """Move ``request`` from ``expected`` to ``to`` if, and only if, it is still in ``expected``.

    ``values`` are further columns set in the same UPDATE. Returns True when this call made the
    transition (and added its audit event to ``session``), False when another actor got there
    first. Raises :class:`InvalidTransition` for a pair :data:`TRANSITIONS` does not allow. The
    caller commits.
    """
    _check(expected, to)
    changed = rows_changed(
        session,
        update(Request)
        .where(Request.id == request.id, Request.status == expected.value)
        .values(status=to.value, updated_at=now, **values)
        .execution_options(synchronize_session=False),
    )
    if changed != 1:
        return False
    session.add(_event(request, event or to.value, expected.value, to.value, actor, now, detail))
    session.flush()
    session.refresh(request)
    return True


def transition_many(
    session: Session,
    where: Sequence[ColumnElement[bool]],
    *,
    expected: Status,
    to: Status,
    actor: Actor,
    now: datetime,
    event: str | None = None,
    detail: dict[str, Any] | None = None,
) -> list[int]:
    """:func:`transition` of every request in ``expected`` that also matches ``where``, in one
    guarded ``UPDATE … WHERE status = :expected AND … RETURNING`` and one multi-row insert of
    their audit events (two statements, however many requests move). Returns the IDs moved,
    ascending. Raises :class:`InvalidTransition` as :func:`transition` does. The caller commits.
    """
    _check(expected, to)
    rows = session.execute(
        update(Request)
        .where(Request.status == expected.value, *where)
        .values(status=to.value, updated_at=now)
        .returning(*RETURNED)
        .execution_options(synchronize_session=False)
    ).all()
    if rows:
        session.execute(
            insert(AuditEvent),
            [_row_event(row, event or to.value, expected, to, actor, now, detail) for row in rows],
        )
    return sorted(row.id for row in rows)


@dataclass(frozen=True)
class Entry:
    """The audit event of one request of a batch (:func:`transition_each`): its name, who
    caused it, when (aware UTC) and its detail."""

    event: str
    actor: Actor
    at: datetime
    detail: dict[str, Any]


def transition_each(
    session: Session,
    entries: Mapping[int, Entry],
    *,
    expected: Status,
    to: Status,
    **values: Any,
) -> list[int]:
    """:func:`transition` of each request ``entries`` names (request ID: its :class:`Entry`)
    that is still in ``expected``: one guarded ``UPDATE … WHERE id IN (…) AND status = :expected
    RETURNING`` and one multi-row insert of the audit events of the requests it moved, each its
    own event, actor, moment and detail. ``values`` are further columns set by the UPDATE (SQL
    expressions allowed, e.g. ``updated_at`` read from another table); without ``updated_at``
    no column but ``status`` changes. Returns the IDs moved, ascending. Raises
    :class:`InvalidTransition` as :func:`transition` does. The caller commits.

    The batch form the grant sweep uses (:mod:`approvals.grants`): 1,000 grants that end
    together cost two statements here, not 2,000.
    """
    _check(expected, to)
    if not entries:
        return []
    rows = session.execute(
        update(Request)
        .where(among(session, Request.id, list(entries)), Request.status == expected.value)
        .values(status=to.value, **values)
        .returning(*RETURNED)
        .execution_options(synchronize_session=False)
    ).all()
    if rows:
        session.connection().execute(
            insert(_AUDIT),
            [
                _row_event(row, e.event, expected, to, e.actor, e.at, e.detail)
                for row in rows
                for e in (entries[row.id],)
            ],
        )
    return sorted(row.id for row in rows)


def rows_changed(session: Session, statement: Update | Delete) -> int:
    """Execute a guarded UPDATE (or DELETE) in the caller's transaction; returns how many rows it
    changed (0 for a guarded update: someone else was first)."""
    return cast(CursorResult[Any], session.execute(statement)).rowcount


def record(
    session: Session,
    request: Request,
    *,
    event: str,
    actor: Actor,
    now: datetime,
    detail: dict[str, Any] | None = None,
) -> AuditEvent:
    """Add an audit event that is not a transition (for example one approval of several)."""
    audit = _event(request, event, request.status, request.status, actor, now, detail)
    session.add(audit)
    return audit


def record_many(
    session: Session,
    rows: Sequence[Any],
    *,
    event: str,
    status: Status,
    actor: Actor,
    now: datetime,
    details: Mapping[int, dict[str, Any]],
) -> None:
    """:func:`record` for many requests in one multi-row insert: ``rows`` are what a guarded
    ``UPDATE … RETURNING`` of :data:`RETURNED` gave (ID, action, target, rule, policy
    SHA-256), all in ``status``; ``details`` gives each request's detail by ID."""
    if rows:
        session.execute(
            insert(AuditEvent),
            [
                _row_event(row, event, status, status, actor, now, details.get(row.id))
                for row in rows
            ],
        )


def record_detached(
    session: Session,
    *,
    event: str,
    actor: Actor,
    now: datetime,
    action: str,
    target: str | None = None,
    policy_sha256: str | None = None,
    detail: dict[str, Any] | None = None,
) -> AuditEvent:
    """Add an audit event of no request (``request_id`` NULL): a submission refused before a
    request existed (``rejected``), a RoleBinding that no request accounts for removed by the
    drift check (``drift_removed``)."""
    audit = AuditEvent(
        request_id=None,
        event=event,
        actor_id=actor.id,
        actor_kind=actor.kind,
        action=action,
        target=target,
        policy_sha256=policy_sha256,
        detail=detail or {},
        created_at=now,
    )
    session.add(audit)
    return audit


def _check(expected: Status, to: Status) -> None:
    if to not in TRANSITIONS[expected]:
        raise InvalidTransition(f"{expected} → {to} is not an allowed transition")


def _row_event(
    row: Any,
    event: str,
    from_status: Status,
    to_status: Status,
    actor: Actor,
    now: datetime,
    detail: dict[str, Any] | None,
) -> dict[str, Any]:
    """An audit row, as a dict for a multi-row insert, of a request read as :data:`RETURNED`."""
    return {
        "request_id": row.id,
        "event": event,
        "from_status": from_status.value,
        "to_status": to_status.value,
        "actor_id": actor.id,
        "actor_kind": actor.kind,
        "action": row.action,
        "target": row.target,
        "rule": row.rule,
        "policy_sha256": row.policy_sha256,
        "detail": detail or {},
        "created_at": now,
    }


def _event(
    request: Request,
    event: str,
    from_status: str,
    to_status: str,
    actor: Actor,
    now: datetime,
    detail: dict[str, Any] | None,
) -> AuditEvent:
    return AuditEvent(
        request_id=request.id,
        event=event,
        from_status=from_status,
        to_status=to_status,
        actor_id=actor.id,
        actor_kind=actor.kind,
        action=request.action,
        target=request.target,
        rule=request.rule,
        policy_sha256=request.policy_sha256,
        detail=detail or {},
        created_at=now,
    )
