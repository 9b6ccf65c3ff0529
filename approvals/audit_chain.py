"""The audit trail as a hash chain: each event carries the SHA-256 of its canonical form, which
includes the previous event's hash, so that editing, deleting or inserting a row breaks the chain.

Canonical form: the event's columns (:data:`FIELDS`, ``created_at`` as RFC 3339 UTC with
microseconds, ``detail`` as stored) as a JSON object serialized with the JSON Canonicalization
Scheme of RFC 8785 (the ``rfc8785`` package); ``hash = sha256(canonical).hexdigest()``; the first
event's ``prev_hash`` is :data:`GENESIS` (64 zeros).

Events are chained in commit order: :func:`install` hooks a sessionmaker so that a transaction
that inserted audit events takes the lock on the single ``audit_chain_head`` row (``SELECT … FOR
UPDATE`` on PostgreSQL; on SQLite the transaction already holds the database's writer lock) just
before it commits, numbers its events after the head and moves the head. Two replicas writing at
once therefore wait for each other only for the few statements at commit, and build one chain.
The head lock is the last lock a transaction takes, so it cannot deadlock with row locks.

:func:`verify` recomputes the chain and names the first event that was changed, deleted or
inserted out of order.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal, cast

import rfc8785
from sqlalchemy import Connection, Table, bindparam, event, select, update
from sqlalchemy.engine import RowMapping
from sqlalchemy.orm import ORMExecuteState, Session, sessionmaker
from sqlalchemy.orm.attributes import set_committed_value

from approvals.models import AuditChainHead, AuditEvent

GENESIS = "0" * 64
"""``prev_hash`` of the first event."""

FIELDS = (
    "seq",
    "prev_hash",
    "id",
    "request_id",
    "event",
    "from_status",
    "to_status",
    "actor_id",
    "actor_kind",
    "action",
    "target",
    "rule",
    "policy_sha256",
    "detail",
    "created_at",
)
"""The columns of ``audit_events`` that the hash covers: all of them but ``hash`` itself."""

CHAIN_STATEMENTS = 4
"""SQL statements that chaining adds to a transaction that wrote audit events, however many:
lock the head, read the unchained events, number them (one executemany), move the head."""

_WROTE_EVENTS = "opsgate.audit_chain.wrote_events"
_TABLE = cast(Table, AuditEvent.__table__)


def canonical(row: Mapping[str, Any] | RowMapping) -> bytes:
    """The RFC 8785 canonical JSON of ``row`` (a mapping with at least :data:`FIELDS`)."""
    form: dict[str, Any] = {name: row[name] for name in FIELDS}
    created: datetime = form["created_at"]
    form["created_at"] = created.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return rfc8785.dumps(form)


def event_hash(row: Mapping[str, Any] | RowMapping) -> str:
    """The hex SHA-256 of :func:`canonical` ``(row)``: 64 characters."""
    return hashlib.sha256(canonical(row)).hexdigest()


def install(factory: sessionmaker[Session]) -> None:
    """Chain the audit events of every transaction of ``factory``'s sessions when it commits.

    A transaction counts as writing events when it flushed a new :class:`AuditEvent` or executed
    an INSERT into ``audit_events`` through the session.
    """
    event.listen(factory, "before_flush", _note_new_events)
    event.listen(factory, "do_orm_execute", _note_inserts)
    event.listen(factory, "before_commit", _chain_on_commit)
    event.listen(factory, "after_rollback", _forget)


def _note_new_events(session: Session, _context: Any, _instances: Any) -> None:
    if any(isinstance(obj, AuditEvent) for obj in session.new):
        session.info[_WROTE_EVENTS] = True


def _note_inserts(state: ORMExecuteState) -> None:
    statement = state.statement
    table = getattr(statement, "table", None)
    if state.is_insert and getattr(table, "name", None) == _TABLE.name:
        state.session.info[_WROTE_EVENTS] = True


def _forget(session: Session) -> None:
    session.info.pop(_WROTE_EVENTS, None)


def _chain_on_commit(session: Session) -> None:
    session.flush()  # what commit would flush next; it may hold new events
    if not session.info.pop(_WROTE_EVENTS, False):
        return
    chained = chain_pending(session)
    for obj in session.identity_map.values():
        if isinstance(obj, AuditEvent) and obj.id in chained:
            seq, prev_hash, digest = chained[obj.id]
            set_committed_value(obj, "seq", seq)
            set_committed_value(obj, "prev_hash", prev_hash)
            set_committed_value(obj, "hash", digest)


def chain_pending(session: Session) -> dict[int, tuple[int, str, str]]:
    """Chain every event not yet chained (``seq`` NULL) that ``session`` can see, in ``id`` order,
    after the head, which it locks until the transaction ends.

    Returns ``{event id: (seq, prev_hash, hash)}`` for the events it chained.
    """
    head = session.execute(
        select(AuditChainHead).where(AuditChainHead.id == 1).with_for_update()
    ).scalar_one_or_none()
    if head is None:  # a schema made without the migrations (which create the row)
        head = AuditChainHead(id=1, seq=0, hash=GENESIS)
        session.add(head)
        session.flush()
    rows = session.execute(
        select(_TABLE).where(_TABLE.c.seq.is_(None)).order_by(_TABLE.c.id)
    ).mappings()
    chained: dict[int, tuple[int, str, str]] = {}
    seq, prev = head.seq, head.hash
    for row in rows:
        seq += 1
        digest = event_hash({**row, "seq": seq, "prev_hash": prev})
        chained[row["id"]] = (seq, prev, digest)
        prev = digest
    if not chained:
        return chained
    session.execute(
        update(_TABLE)
        .where(_TABLE.c.id == bindparam("_id"))
        .values(seq=bindparam("_seq"), prev_hash=bindparam("_prev"), hash=bindparam("_hash")),
        [{"_id": id_, "_seq": s, "_prev": p, "_hash": h} for id_, (s, p, h) in chained.items()],
        execution_options={"synchronize_session": False},
    )
    head.seq, head.hash = seq, prev
    return chained


BreakKind = Literal["changed", "deleted", "inserted", "head", "anchor"]


@dataclass(frozen=True)
class Break:
    """The first place where the chain does not hold.

    ``kind``: ``changed`` (the event's fields do not give its hash), ``deleted`` (events are
    missing before ``seq``, or at the end), ``inserted`` (a row outside the chain, or a link that
    does not follow from the previous event), ``head`` (the head row disagrees with the last
    event), ``anchor`` (the event at an anchored position has another hash).
    """

    kind: BreakKind
    seq: int | None
    event_id: int | None
    message: str


@dataclass(frozen=True)
class Verified:
    """The chain holds: ``events`` events checked, the last at ``seq`` with ``hash``."""

    events: int
    seq: int
    hash: str


def verify(
    connection: Connection,
    *,
    since: int | None = None,
    anchor: tuple[int, str] | None = None,
    batch: int = 1000,
) -> Verified | Break:
    """Recompute the chain from ``since`` (a ``seq``; default: the first event), reading
    ``batch`` events per query, and return the first :class:`Break`, or :class:`Verified`.

    ``anchor`` (``(seq, hash)``, for example a head posted earlier to the audit channel) must
    also match: a chain rewritten entirely, hashes included, differs from it.
    """
    unchained = connection.execute(
        select(_TABLE.c.id).where(_TABLE.c.seq.is_(None)).order_by(_TABLE.c.id).limit(1)
    ).scalar()
    if unchained is not None:
        return Break(
            "inserted", None, unchained, f"Event id {unchained} was inserted outside the chain."
        )
    start = since if since is not None else 1
    expected_seq, prev = start, None if since is not None else GENESIS
    count, last_hash = 0, GENESIS
    for row in _rows(connection, start, batch):
        seq, id_ = row["seq"], row["id"]
        if seq != expected_seq:
            first = expected_seq if expected_seq == seq - 1 else f"{expected_seq} to {seq - 1}"
            return Break("deleted", seq, id_, f"Events {first} before seq {seq} were deleted.")
        if event_hash(row) != row["hash"]:
            return Break("changed", seq, id_, f"Event seq {seq} (id {id_}) was changed.")
        if prev is not None and row["prev_hash"] != prev:
            return Break(
                "inserted",
                seq,
                id_,
                f"Event seq {seq} (id {id_}) does not follow event seq {seq - 1}: "
                "an event was inserted or replaced there.",
            )
        if anchor is not None and seq == anchor[0] and row["hash"] != anchor[1]:
            return Break("anchor", seq, id_, f"Event seq {seq} differs from the anchored hash.")
        prev, last_hash = row["hash"], row["hash"]
        expected_seq, count = seq + 1, count + 1
    last_seq = expected_seq - 1
    if anchor is not None and anchor[0] > last_seq:
        return Break("anchor", anchor[0], None, f"The anchored event seq {anchor[0]} is gone.")
    head = connection.execute(select(AuditChainHead.seq, AuditChainHead.hash)).first()
    head_seq, head_hash = (head[0], head[1]) if head is not None else (0, GENESIS)
    if head_seq > last_seq:
        return Break("deleted", last_seq + 1, None, f"Events after seq {last_seq} were deleted.")
    if (head_seq, head_hash) != (last_seq, last_hash) and count:
        return Break(
            "head", last_seq, None, f"The chain head says seq {head_seq}; events go to {last_seq}."
        )
    return Verified(count, last_seq, last_hash)


def _rows(connection: Connection, start: int, batch: int) -> Iterator[RowMapping]:
    after = start - 1
    while True:
        page = (
            connection.execute(
                select(_TABLE).where(_TABLE.c.seq > after).order_by(_TABLE.c.seq).limit(batch)
            )
            .mappings()
            .all()
        )
        if not page:
            return
        yield from page
        after = page[-1]["seq"]


def head(connection: Connection) -> tuple[int, str]:
    """The chain's head as ``(seq, hash)``: ``(0, GENESIS)`` when no event was written."""
    row = connection.execute(select(AuditChainHead.seq, AuditChainHead.hash)).first()
    return (0, GENESIS) if row is None else (int(row[0]), str(row[1]))
