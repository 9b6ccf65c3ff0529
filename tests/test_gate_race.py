"""Deciding a request exactly once under concurrency: real threads released together by a
barrier call the gate at the same instant, with Slack retries (the same click delivered twice)
mixed in, against the test database and the fake cluster over real HTTP.

They bite on PostgreSQL (``.ci/run`` runs the suite there too), where READ COMMITTED let two
simultaneous approvals each miss the other before the gate locked the request's row. Their
invariants: one execution (one applied PATCH) per approved request, none for a denied one; exactly
the approvals that made the quorum are stored; every losing click gets :class:`AlreadyDecided`,
never an error or silence.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from functools import partial
from pathlib import Path

import pytest
from sqlalchemy import select

from approvals.gate import AlreadyDecided, GateError
from approvals.lifecycle import Actor
from approvals.models import AuditEvent, Status
from approvals.notifier import RequestView
from tests.fakes.kube import FakeKubernetes
from tests.helpers.bot import wait_for
from tests.helpers.decisions import (
    SRE,
    World,
    applied_restarts,
    approvers_of,
    break_glass,
    decisions_of,
    gate_world,
    submit,
)

TERMINAL = {Status.SUCCEEDED.value, Status.DENIED.value, Status.CANCELLED.value}


@pytest.fixture
def world(tmp_path: Path, database_url: str, kube: FakeKubernetes) -> Iterator[World]:
    with gate_world(tmp_path, database_url, kube) as made:
        yield made


Outcome = RequestView | GateError


def race(calls: list[Callable[[], RequestView]]) -> list[Outcome]:
    """Run ``calls`` on as many threads, released together by a barrier; each one's returned
    view or the :class:`GateError` it raised, in order. Any other exception fails the test."""
    barrier = threading.Barrier(len(calls))

    def run(call: Callable[[], RequestView]) -> RequestView:
        barrier.wait(timeout=30)
        return call()

    outcomes: list[Outcome] = []
    with ThreadPoolExecutor(max_workers=len(calls)) as pool:
        futures = [pool.submit(run, call) for call in calls]
        for future in futures:
            error = future.exception(timeout=120)
            if error is None:
                outcomes.append(future.result())
            elif isinstance(error, GateError):
                outcomes.append(error)
            else:
                raise AssertionError(f"a click raised {error!r}") from error
    return outcomes


def approve(world: World, request_id: int, who: str) -> Callable[[], RequestView]:
    return partial(world.gate.approve, request_id, Actor(who))


def settled(world: World, request_id: int) -> RequestView:
    """The request once it is in a final state (execution may finish after the click returns)."""

    def final() -> RequestView | None:
        world.gate.follow_rollouts()  # the periodic job's work: the fake's rollouts are done
        view = world.gate.get(request_id)
        return view if view.status in TERMINAL else None

    return wait_for(final, what=f"request #{request_id} to settle")


def losers(outcomes: list[Outcome]) -> list[GateError]:
    errors = [o for o in outcomes if isinstance(o, GateError)]
    assert all(isinstance(e, AlreadyDecided) for e in errors), errors
    return errors


def test_two_approvers_at_the_same_instant_execute_exactly_once(world: World) -> None:
    trials = 50
    stamps = []
    for trial in range(trials):
        world.clock.now += timedelta(minutes=1)  # each execution's restartedAt names its trial
        stamps.append(world.clock.now.strftime("%Y-%m-%dT%H:%M:%SZ"))
        request_id = submit(world)
        first, second = SRE[trial % 20], SRE[(trial + 1) % 20]
        clicks = [first, second]
        clicks += [first] * (trial % 2 == 0) + [second] * (trial % 3 == 0)  # Slack retries
        outcomes = race([approve(world, request_id, who) for who in clicks])

        view = settled(world, request_id)
        assert view.status == "succeeded", (trial, view.status, view.error)
        assert sorted(approvers_of(world, request_id)) == sorted([first, second]), trial
        assert view.decided_by in (first, second)
        assert decisions_of(world, request_id) == ["approved"], trial
        assert len(losers(outcomes)) == len(clicks) - 2, (trial, outcomes)
    assert sorted(applied_restarts(world.kube)) == stamps  # one PATCH per request, none twice


def test_twenty_approvers_at_once_make_one_quorum_and_one_execution(world: World) -> None:
    for trial in range(5):
        world.clock.now += timedelta(minutes=1)
        request_id = submit(world)
        clicks = SRE + SRE[trial : trial + 5]  # five of them delivered twice
        outcomes = race([approve(world, request_id, who) for who in clicks])

        view = settled(world, request_id)
        assert view.status == "succeeded"
        approved = approvers_of(world, request_id)
        assert len(approved) == 2, approved  # the quorum, and nobody after it
        assert view.decided_by == approved[-1]  # the approval that completed it decided it
        assert decisions_of(world, request_id) == ["approved"]
        assert len(losers(outcomes)) == len(clicks) - 2
    assert len(applied_restarts(world.kube)) == 5


@pytest.mark.parametrize("namespace", ["checkout", "payments"])
def test_approve_racing_deny_ends_one_way_only(world: World, namespace: str) -> None:
    name = "cart" if namespace == "checkout" else "payments-api"
    executed = 0
    for trial in range(20):
        world.clock.now += timedelta(minutes=1)
        request_id = submit(world, namespace, name)
        approvers = SRE[:2] if namespace == "payments" else SRE[:1]
        denier = "U0DEV1" if trial % 4 == 0 else SRE[5]  # the requester withdraws, or sre denies
        calls = [approve(world, request_id, who) for who in approvers]
        calls.append(partial(world.gate.deny, request_id, Actor(denier)))
        if trial % 2:  # Slack retries of the first approval and of the denial
            calls += [calls[0], calls[-1]]
        outcomes = race(calls)

        view = settled(world, request_id)
        won = [o for o in outcomes if isinstance(o, RequestView)]
        denials_won = [o for o, c in zip(outcomes, calls, strict=True) if c is calls[-1]]
        if view.status == "succeeded":
            executed += 1
            assert decisions_of(world, request_id) == ["approved"]
            assert all(isinstance(o, AlreadyDecided) for o in denials_won)
            assert len(won) == len(approvers)
        else:
            assert view.status == ("cancelled" if denier == "U0DEV1" else "denied")
            assert decisions_of(world, request_id) == [view.status]
            assert view.decided_by == denier
            assert sum(isinstance(o, RequestView) for o in denials_won) == 1
            assert len(approvers_of(world, request_id)) < len(approvers)
        losers(outcomes)
    assert len(applied_restarts(world.kube)) == executed


def test_reviewers_acknowledging_at_once_review_a_break_glass_request_once(
    world: World,
) -> None:
    request_id = break_glass(world)
    clicks = SRE[:8] + SRE[:3]
    outcomes = race([partial(world.gate.acknowledge, request_id, Actor(who)) for who in clicks])
    reviewed = [o for o in outcomes if isinstance(o, RequestView)]
    assert len(reviewed) == 1
    assert len(losers(outcomes)) == len(clicks) - 1
    assert world.gate.get(request_id).reviewed_by in SRE[:8]
    with world.sessions() as session:
        events = session.scalars(
            select(AuditEvent.event).where(AuditEvent.event == "break_glass_reviewed")
        ).all()
    assert events == ["break_glass_reviewed"]
