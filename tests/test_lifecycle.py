"""The lifecycle table, guarded transitions and their audit events, on the test database."""

from __future__ import annotations

import re
import threading
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from approvals.lifecycle import (
    RETURNED,
    SYSTEM,
    TERMINAL,
    TRANSITIONS,
    Actor,
    Entry,
    InvalidTransition,
    record,
    record_detached,
    record_many,
    transition,
    transition_each,
)
from approvals.models import ActorKind, AuditEvent, Request, Status

NOW = datetime(2026, 11, 21, 3, 0, tzinfo=UTC)


def new_request(sessions: sessionmaker[Session]) -> int:
    with sessions.begin() as session:
        request = Request(
            action="restart",
            params={"name": "x", "namespace": "payments"},
            status=Status.PENDING.value,
            requester_id="U0DEV1",
            target="deployment/x",
            policy_sha256="0" * 64,
            created_at=NOW,
            updated_at=NOW,
        )
        session.add(request)
        session.flush()
        return request.id


def audit_count(sessions: sessionmaker[Session]) -> int:
    with sessions() as session:
        return session.scalar(select(func.count()).select_from(AuditEvent)) or 0


def test_the_table_matches_docs_architecture_md() -> None:
    assert TRANSITIONS[Status.PENDING] == {
        Status.APPROVED,
        Status.DENIED,
        Status.EXPIRED,
        Status.CANCELLED,
    }
    assert TRANSITIONS[Status.APPROVED] == {Status.EXECUTING}
    assert TRANSITIONS[Status.EXECUTING] == {
        Status.SUCCEEDED,
        Status.FAILED,
        Status.UNKNOWN,
        Status.ACTIVE,
    }
    assert TRANSITIONS[Status.ACTIVE] == {Status.REVOKED}
    assert set(TRANSITIONS) == set(Status)
    assert {
        Status.SUCCEEDED,
        Status.FAILED,
        Status.UNKNOWN,
        Status.DENIED,
        Status.REVOKED,
    } <= TERMINAL
    assert Status.PENDING not in TERMINAL


FINAL = {
    Status.SUCCEEDED,
    Status.FAILED,
    Status.UNKNOWN,
    Status.DENIED,
    Status.EXPIRED,
    Status.CANCELLED,
    Status.REVOKED,
}


def test_every_terminal_state_is_final(sessions: sessionmaker[Session]) -> None:
    """No transition leaves a terminal state: each one is refused before anything is written."""
    assert TERMINAL == FINAL
    assert {s for s, allowed in TRANSITIONS.items() if not allowed} == FINAL
    request_id = new_request(sessions)
    for terminal in sorted(FINAL):
        assert TRANSITIONS[terminal] == frozenset(), terminal
        with sessions.begin() as session:
            request = session.get(Request, request_id)
            assert request is not None
            request.status = terminal.value
        for to in Status:
            with sessions.begin() as session:
                request = session.get(Request, request_id)
                assert request is not None
                with pytest.raises(InvalidTransition, match=f"{terminal} → {to}"):
                    transition(
                        session,
                        request,
                        expected=terminal,
                        to=to,
                        actor=Actor("U0SRE1"),
                        now=NOW,
                    )
        with sessions() as session:
            assert session.get(Request, request_id).status == terminal.value  # type: ignore[union-attr]
    assert audit_count(sessions) == 0


def test_a_transition_happens_once_and_writes_its_audit_event(
    sessions: sessionmaker[Session],
) -> None:
    request_id = new_request(sessions)
    with sessions.begin() as session:
        request = session.get(Request, request_id)
        assert request is not None
        assert transition(
            session,
            request,
            expected=Status.PENDING,
            to=Status.APPROVED,
            actor=Actor("U0SRE1"),
            now=NOW,
            decided_by="U0SRE1",
        )
        assert request.status == "approved"
    with sessions.begin() as session:
        request = session.get(Request, request_id)
        assert request is not None
        again = transition(
            session,
            request,
            expected=Status.PENDING,
            to=Status.APPROVED,
            actor=Actor("U0SRE2"),
            now=NOW,
        )
        assert again is False
    with sessions() as session:
        [event] = session.scalars(select(AuditEvent)).all()
        assert (event.from_status, event.to_status, event.actor_id) == (
            "pending",
            "approved",
            "U0SRE1",
        )
        assert event.created_at == NOW
        stored = session.get(Request, request_id)
        assert stored is not None
        assert stored.decided_by == "U0SRE1"


def test_every_audit_event_carries_the_request_and_what_happened(
    sessions: sessionmaker[Session],
) -> None:
    """A transition's event and a recorded one (an approval of several) each name the request's
    action, target, rule and policy, who, when, the states and the detail given (``{}`` for
    none)."""
    request_id = new_request(sessions)
    with sessions.begin() as session:
        request = session.get(Request, request_id)
        assert request is not None
        request.rule = "rules[2] 'prod restarts'"
        session.flush()
        record(session, request, event="approval_added", actor=Actor("U0SRE1"), now=NOW)
        record(
            session,
            request,
            event="escalated",
            actor=Actor("opsgate", ActorKind.SYSTEM),
            now=NOW,
            detail={"escalate_to": "oncall"},
        )
        assert transition(
            session,
            request,
            expected=Status.PENDING,
            to=Status.APPROVED,
            actor=Actor("U0SRE2"),
            now=NOW,
        )
        assert transition(
            session,
            request,
            expected=Status.APPROVED,
            to=Status.EXECUTING,
            actor=Actor("opsgate", ActorKind.SYSTEM),
            now=NOW,
            event="started",
            detail={"attempt": 1},
        )
    with sessions() as session:
        events = session.scalars(select(AuditEvent).order_by(AuditEvent.id)).all()
    assert [
        (e.event, e.from_status, e.to_status, e.actor_id, e.actor_kind, e.detail) for e in events
    ] == [
        ("approval_added", "pending", "pending", "U0SRE1", "human", {}),
        ("escalated", "pending", "pending", "opsgate", "system", {"escalate_to": "oncall"}),
        ("approved", "pending", "approved", "U0SRE2", "human", {}),
        ("started", "approved", "executing", "opsgate", "system", {"attempt": 1}),
    ]
    for event in events:
        assert event.request_id == request_id
        assert (event.action, event.target) == ("restart", "deployment/x")
        assert (event.rule, event.policy_sha256) == ("rules[2] 'prod restarts'", "0" * 64)
        assert event.created_at == NOW


def test_a_rolled_back_transition_leaves_no_audit_event(sessions: sessionmaker[Session]) -> None:
    request_id = new_request(sessions)
    with sessions() as session:
        request = session.get(Request, request_id)
        assert request is not None
        assert transition(
            session,
            request,
            expected=Status.PENDING,
            to=Status.DENIED,
            actor=Actor("U0SRE1"),
            now=NOW,
        )
        session.rollback()  # the caller's transaction fails after the transition
    assert audit_count(sessions) == 0
    with sessions() as session:
        stored = session.get(Request, request_id)
        assert stored is not None
        assert stored.status == "pending"


def test_a_transition_the_table_does_not_list_is_refused(sessions: sessionmaker[Session]) -> None:
    request_id = new_request(sessions)
    with sessions.begin() as session:
        request = session.get(Request, request_id)
        assert request is not None
        with pytest.raises(InvalidTransition):
            transition(
                session,
                request,
                expected=Status.PENDING,
                to=Status.SUCCEEDED,
                actor=Actor("U0SRE1"),
                now=NOW,
            )
    assert audit_count(sessions) == 0


def test_racing_transitions_from_many_threads_happen_exactly_once(
    sessions: sessionmaker[Session],
) -> None:
    request_id = new_request(sessions)
    barrier = threading.Barrier(8)
    results: list[bool] = []
    lock = threading.Lock()

    def attempt(n: int) -> None:
        barrier.wait()
        with sessions.begin() as session:
            request = session.get(Request, request_id)
            assert request is not None
            won = transition(
                session,
                request,
                expected=Status.PENDING,
                to=Status.APPROVED,
                actor=Actor(f"U0SRE{n}"),
                now=NOW,
            )
        with lock:
            results.append(won)

    threads = [threading.Thread(target=attempt, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == [False] * 7 + [True]
    assert audit_count(sessions) == 1


def test_naive_datetimes_are_refused(sessions: sessionmaker[Session]) -> None:
    from sqlalchemy.exc import StatementError

    with pytest.raises(StatementError, match="naive datetimes"), sessions.begin() as session:
        session.add(
            AuditEvent(
                event="x",
                actor_id="U",
                actor_kind="human",
                detail={},
                created_at=datetime(2026, 1, 1),
            )
        )


def test_docs_architecture_md_draws_the_same_table() -> None:
    """docs/architecture.md's 'The request lifecycle' table is :data:`TRANSITIONS`, row for row."""
    doc = (Path(__file__).resolve().parent.parent / "docs" / "architecture.md").read_text()
    section = doc.split("## The request lifecycle", 1)[1].split("\n## ", 1)[0]
    drawn: dict[Status, frozenset[Status]] = {}
    for row in re.findall(r"^\| `(\w+)` \| (.+?) \|$", section, flags=re.MULTILINE):
        drawn[Status(row[0])] = frozenset(Status(s) for s in re.findall(r"`(\w+)`", row[1]))
    assert drawn == TRANSITIONS


def test_a_batch_moves_only_what_is_still_expected_each_with_its_own_event(
    sessions: sessionmaker[Session],
) -> None:
    """:func:`transition_each`: one guarded UPDATE for the batch; a request that is no longer in
    ``expected`` (another instance got there first) is left out, and gets no event."""
    moved_ids = [new_request(sessions) for _ in range(3)]
    taken = new_request(sessions)
    with sessions.begin() as session:
        for request_id in [*moved_ids, taken]:
            session.get(Request, request_id).status = Status.ACTIVE.value  # type: ignore[union-attr]
        session.get(Request, taken).status = Status.REVOKED.value  # type: ignore[union-attr]
    later = datetime(2026, 11, 21, 3, 5, tzinfo=UTC)
    entries = {
        request_id: Entry(
            event="grant_expired" if n else "grant_revoked",
            actor=Actor("U0SRE1") if n == 0 else SYSTEM,
            at=later,
            detail={"n": n},
        )
        for n, request_id in enumerate([*moved_ids, taken])
    }
    with sessions.begin() as session:
        moved = transition_each(
            session, entries, expected=Status.ACTIVE, to=Status.REVOKED, updated_at=later
        )
    assert moved == sorted(moved_ids)
    with sessions() as session:
        events = session.scalars(select(AuditEvent).order_by(AuditEvent.request_id)).all()
        statuses = {r.id: r.status for r in session.scalars(select(Request))}
    assert [(e.request_id, e.event, e.actor_id, e.detail) for e in events] == [
        (moved_ids[0], "grant_revoked", "U0SRE1", {"n": 0}),
        (moved_ids[1], "grant_expired", "opsgate", {"n": 1}),
        (moved_ids[2], "grant_expired", "opsgate", {"n": 2}),
    ]
    assert {(e.from_status, e.to_status, e.created_at) for e in events} == {
        ("active", "revoked", later)
    }
    assert set(statuses.values()) == {"revoked"}


def test_a_batch_the_table_does_not_list_is_refused(sessions: sessionmaker[Session]) -> None:
    request_id = new_request(sessions)
    entry = Entry(event="x", actor=SYSTEM, at=NOW, detail={})
    with sessions.begin() as session, pytest.raises(InvalidTransition):
        transition_each(session, {request_id: entry}, expected=Status.PENDING, to=Status.REVOKED)
    with sessions.begin() as session:
        assert transition_each(session, {}, expected=Status.ACTIVE, to=Status.REVOKED) == []
    assert audit_count(sessions) == 0


def test_events_of_many_requests_and_of_none(sessions: sessionmaker[Session]) -> None:
    """:func:`record_many` writes one event per row returned, with its own detail, the status
    unchanged; :func:`record_detached` one event of no request."""
    ids = [new_request(sessions) for _ in range(2)]
    with sessions.begin() as session:
        rows = session.execute(
            select(*RETURNED).where(Request.id.in_(ids)).order_by(Request.id)
        ).all()
        record_many(
            session,
            rows,
            event="escalated",
            status=Status.PENDING,
            actor=SYSTEM,
            now=NOW,
            details={ids[0]: {"escalate_to": "oncall"}},
        )
        record_detached(
            session,
            event="rejected",
            actor=Actor("U0DEV1"),
            now=NOW,
            action="restart",
            policy_sha256="1" * 64,
            detail={"reason": "Not allowed"},
        )
    with sessions() as session:
        events = session.scalars(select(AuditEvent).order_by(AuditEvent.id)).all()
    assert [(e.request_id, e.event, e.from_status, e.to_status, e.detail) for e in events] == [
        (ids[0], "escalated", "pending", "pending", {"escalate_to": "oncall"}),
        (ids[1], "escalated", "pending", "pending", {}),
        (None, "rejected", None, None, {"reason": "Not allowed"}),
    ]
    assert [(e.action, e.target) for e in events] == [("restart", "deployment/x")] * 2 + [
        ("restart", None)
    ]
    assert events[2].policy_sha256 == "1" * 64
