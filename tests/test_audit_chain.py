"""The audit trail's hash chain: built in commit order by every writer (two replicas included,
on PostgreSQL), recomputed by ``verify``, which names the first event changed, deleted or
inserted; and a migration that chains the rows written before the chain existed."""

from __future__ import annotations

import itertools
import threading
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from alembic import command
from sqlalchemy import JSON, Engine, column, delete, func, insert, select, table, update
from sqlalchemy.orm import Session, sessionmaker

from approvals.audit_chain import FIELDS, GENESIS, Break, Verified, event_hash, verify
from approvals.db import alembic_config, make_engine, make_sessionmaker, migrate
from approvals.lifecycle import Actor, record, transition
from approvals.models import (
    ActorKind,
    AuditChainHead,
    AuditEvent,
    Request,
    Status,
    UTCDateTime,
)

NOW = datetime(2026, 12, 4, 3, 0, 0, 123456, tzinfo=UTC)
ALICE = Actor("U0SRE1", ActorKind.HUMAN)


def new_request(session: Session, name: str = "payments-api") -> Request:
    request = Request(
        action="restart",
        params={"name": name, "namespace": "payments"},
        status=Status.PENDING.value,
        requester_id="U0DEV1",
        target=f"deployment/{name}",
        policy_sha256="0" * 64,
        created_at=NOW,
        updated_at=NOW,
    )
    session.add(request)
    session.flush()
    return request


def write_history(sessions: sessionmaker[Session], requests: int = 4) -> None:
    """Each request: an approval note, then approved → executing → succeeded; detail varies."""
    for i in range(requests):
        with sessions.begin() as session:
            request = new_request(session, f"svc-{i}")
            record(
                session,
                request,
                event="approval",
                actor=ALICE,
                now=NOW + timedelta(seconds=i),
                detail={"note": f"ok <{i}>", "ratio": 0.5 + i, "nested": {"b": [1, 2], "a": None}},
            )
        steps = [Status.PENDING, Status.APPROVED, Status.EXECUTING, Status.SUCCEEDED]
        for expected, to in itertools.pairwise(steps):
            with sessions.begin() as session:
                locked = session.get(Request, request.id)
                assert locked is not None
                moved = transition(
                    session,
                    locked,
                    expected=expected,
                    to=to,
                    actor=ALICE,
                    now=NOW + timedelta(seconds=i),
                )
                assert moved


def check(engine: Engine, **kwargs: object) -> Verified | Break:
    with engine.connect() as conn:
        return verify(conn, **kwargs)  # type: ignore[arg-type]


def test_every_committed_event_is_chained_in_order(
    engine: Engine, sessions: sessionmaker[Session]
) -> None:
    write_history(sessions)
    with sessions() as session:
        events = session.scalars(select(AuditEvent).order_by(AuditEvent.seq)).all()
        head = session.get(AuditChainHead, 1)
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    assert len(events) == 16
    assert events[0].prev_hash == GENESIS
    for before, after in itertools.pairwise(events):
        assert after.prev_hash == before.hash
    assert head is not None
    assert (head.seq, head.hash) == (events[-1].seq, events[-1].hash)
    result = check(engine)
    assert result == Verified(16, 16, events[-1].hash)
    # verify from the middle, and against an anchor taken earlier
    assert isinstance(check(engine, since=9), Verified)
    assert isinstance(check(engine, anchor=(5, events[4].hash)), Verified)
    wrong = check(engine, anchor=(5, "f" * 64))
    assert isinstance(wrong, Break)
    assert (wrong.kind, wrong.seq) == ("anchor", 5)


def test_the_objects_a_transaction_wrote_see_their_place_in_the_chain(
    sessions: sessionmaker[Session],
) -> None:
    with sessions.begin() as session:
        request = new_request(session)
        audit = record(session, request, event="approval", actor=ALICE, now=NOW)
    assert audit.seq == 1
    assert audit.hash is not None
    assert audit.hash == event_hash({c: getattr(audit, c) for c in FIELDS})


def test_a_rolled_back_transaction_leaves_no_trace_in_the_chain(
    engine: Engine, sessions: sessionmaker[Session]
) -> None:
    with sessions() as session:
        request = new_request(session)
        record(session, request, event="approval", actor=ALICE, now=NOW)
        session.flush()
        session.rollback()
    write_history(sessions, requests=1)
    result = check(engine)
    assert isinstance(result, Verified)
    assert result.events == 4


def test_events_inserted_with_a_bulk_insert_are_chained_too(
    engine: Engine, sessions: sessionmaker[Session]
) -> None:
    with sessions.begin() as session:
        request = new_request(session)
        session.execute(
            insert(AuditEvent),
            [
                {
                    "request_id": request.id,
                    "event": "grant_revoked",
                    "actor_id": "opsgate",
                    "actor_kind": "system",
                    "created_at": NOW,
                    "detail": {"i": i},
                }
                for i in range(3)
            ],
        )
    assert check(engine) == Verified(3, 3, check_head(engine))


def check_head(engine: Engine) -> str:
    with engine.connect() as conn:
        return str(conn.execute(select(AuditChainHead.hash)).scalar_one())


@pytest.mark.parametrize("writers", [8])
def test_concurrent_writers_build_one_chain(
    engine: Engine, sessions: sessionmaker[Session], writers: int
) -> None:
    """Replicas writing at the same instant (threads through a barrier, each its own connection):
    on PostgreSQL their transactions interleave until the head lock orders their commits."""
    with sessions.begin() as session:
        ids = [new_request(session, f"svc-{i}").id for i in range(writers)]
    barrier = threading.Barrier(writers)
    errors: list[Exception] = []

    def write(request_id: int) -> None:
        try:
            for round_ in range(5):
                with sessions.begin() as session:
                    request = session.get(Request, request_id)
                    assert request is not None
                    barrier.wait(timeout=30) if round_ == 0 else None
                    for n in range(2):
                        record(
                            session,
                            request,
                            event="approval",
                            actor=ALICE,
                            now=NOW,
                            detail={"round": round_, "n": n},
                        )
                        session.flush()
        except Exception as exc:  # noqa: BLE001 - reported below, from the main thread
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(i,)) for i in ids]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert errors == []
    result = check(engine)
    assert isinstance(result, Verified), result
    assert result.events == writers * 5 * 2
    with engine.connect() as conn:
        seqs = conn.execute(select(AuditEvent.seq).order_by(AuditEvent.seq)).scalars().all()
    assert seqs == list(range(1, writers * 10 + 1))


# The mutation test: every single-field edit of every row, every deletion, every swap of two
# rows' contents is found, and verify names the place.

MUTABLE = [c for c in FIELDS if c != "id"] + ["hash"]


def _other(value: object, name: str) -> object:
    if name == "detail":
        return {**value, "x": 1} if isinstance(value, dict) else {"x": 1}
    if name == "created_at":
        assert isinstance(value, datetime)
        return value + timedelta(microseconds=1)
    if name == "request_id":  # the other request (write_history made two): a valid key
        return 2 if value == 1 else 1
    if name == "seq":
        return int(value) + 1000  # type: ignore[call-overload]
    if value is None:
        return "x"
    text_value = str(value)
    return text_value[:-1] + ("0" if text_value[-1:] != "0" else "1")


def test_every_single_field_edit_is_detected(
    engine: Engine, sessions: sessionmaker[Session]
) -> None:
    write_history(sessions, requests=2)
    with engine.connect() as conn:
        rows = conn.execute(select(AuditEvent.__table__).order_by(AuditEvent.seq)).mappings().all()
    missed: list[str] = []
    for row in rows:
        for name in MUTABLE:
            table = AuditEvent.__table__
            with engine.begin() as conn:
                conn.execute(
                    update(table)
                    .where(table.c.id == row["id"])
                    .values({name: _other(row[name], name)})
                )
            result = check(engine)
            # named: this event, or (its seq moved away) the next one, where the gap shows
            near = (row["seq"], row["seq"] + 1, row["seq"] + 1000)
            if not isinstance(result, Break) or result.seq not in near:
                missed.append(f"seq {row['seq']} {name}: {result}")
            with engine.begin() as conn:
                conn.execute(update(table).where(table.c.id == row["id"]).values({name: row[name]}))
    assert missed == []
    assert isinstance(check(engine), Verified)


def test_every_deletion_and_every_swap_is_detected(
    engine: Engine, sessions: sessionmaker[Session]
) -> None:
    write_history(sessions, requests=2)
    table = AuditEvent.__table__
    with engine.connect() as conn:
        rows = conn.execute(select(table).order_by(table.c.seq)).mappings().all()
    for row in rows:
        with engine.begin() as conn:
            conn.execute(delete(table).where(table.c.id == row["id"]))
        result = check(engine)
        assert isinstance(result, Break), row["seq"]
        assert result.kind == "deleted"
        with engine.begin() as conn:
            conn.execute(insert(table).values(dict(row)))
    assert isinstance(check(engine), Verified)
    # swap the contents of two rows (each keeps its id), for every pair of neighbours and ends
    pairs = [(a, b) for a, b in itertools.pairwise(rows)] + [(rows[0], rows[-1])]
    for a, b in pairs:
        _write(engine, (a["id"], b), (b["id"], a))  # each row gets the other's contents
        result = check(engine)
        assert isinstance(result, Break), (a["seq"], b["seq"])
        assert result.seq == min(a["seq"], b["seq"])
        _write(engine, (a["id"], a), (b["id"], b))
    assert isinstance(check(engine), Verified)


def _write(engine: Engine, *rows: tuple[int, Any]) -> None:
    """Give each row ``id`` the contents (all but ``id``) of the mapping beside it."""
    table = AuditEvent.__table__
    with engine.begin() as conn:
        for id_, _ in rows:  # free the unique seqs first
            conn.execute(update(table).where(table.c.id == id_).values(seq=None))
        for id_, contents in rows:
            values = {k: v for k, v in contents.items() if k != "id"}
            conn.execute(update(table).where(table.c.id == id_).values(values))


def test_a_row_inserted_outside_the_chain_and_a_truncated_tail_are_detected(
    engine: Engine, sessions: sessionmaker[Session]
) -> None:
    write_history(sessions, requests=1)
    table = AuditEvent.__table__
    with engine.begin() as conn:
        conn.execute(
            insert(table).values(
                event="approval", actor_id="U0EVIL", actor_kind="human", created_at=NOW, detail={}
            )
        )
    result = check(engine)
    assert isinstance(result, Break)
    assert result.kind == "inserted"
    with engine.begin() as conn:
        conn.execute(delete(table).where(table.c.seq.is_(None)))
        conn.execute(delete(table).where(table.c.seq == 4))
    result = check(engine)
    assert isinstance(result, Break)
    assert (result.kind, result.seq) == ("deleted", 4)


def test_the_migration_chains_the_events_written_before_it(database_url: str) -> None:
    config = alembic_config(database_url)
    command.upgrade(config, "0007")  # the revision before the chain
    engine = make_engine(database_url)
    try:
        with Session(engine) as session, session.begin():  # no chain hook: as before 0008
            request_id = new_request(session).id
        old_events = table(
            "audit_events",
            *(column(name) for name in ("request_id", "event", "actor_id", "actor_kind")),
            column("detail", JSON()),
            column("created_at", UTCDateTime()),
        )
        with engine.begin() as conn:
            for i in range(5):
                conn.execute(
                    insert(old_events).values(
                        request_id=request_id,
                        event="approval",
                        actor_id=f"U{i}",
                        actor_kind="human",
                        detail={"i": i},
                        created_at=NOW,
                    )
                )
        migrate(database_url)
        result = check(engine)
        assert isinstance(result, Verified), result
        assert result.events == 5
        # and new events continue the same chain
        factory = make_sessionmaker(engine)
        with factory.begin() as session:
            request = session.get(Request, request_id)
            assert request is not None
            record(session, request, event="approval", actor=ALICE, now=NOW)
        assert check(engine) == Verified(6, 6, check_head(engine))
        with engine.connect() as conn:
            assert conn.execute(select(func.count()).select_from(AuditChainHead)).scalar() == 1
    finally:
        engine.dispose()
