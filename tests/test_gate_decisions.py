"""Deciding a request: who may (the policy's answer, asked at every click), and exactly once
under concurrency.

The refusals are tested on the gate directly. The races use real threads released together by a
barrier against the test database (``.ci/run`` runs this on PostgreSQL too, where READ COMMITTED
once let two simultaneous approvals each miss the other) and the fake cluster over real HTTP,
with Slack retries (the same click delivered twice) mixed in. Their invariants: one execution
(one applied PATCH) per approved request, none for a denied one; exactly the approvals that made
the quorum are stored; every losing click gets :class:`AlreadyDecided`, never an error or silence.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import timedelta
from functools import partial
from pathlib import Path

import pytest
from sqlalchemy import create_engine, select, update
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker

import approvals.gate
from actions.backends.kubernetes import KubernetesBackend
from actions.registry import build_registry
from actions.restart import RESTARTED_AT, RestartParams
from approvals.db import make_engine, make_sessionmaker, migrate
from approvals.gate import (
    AlreadyDecided,
    Gate,
    GateError,
    NotAllowed,
    Origin,
    Submission,
    UnknownRequest,
)
from approvals.lifecycle import Actor
from approvals.models import ActorKind, Approval, AuditEvent, Request, Status
from approvals.notifier import RequestView
from approvals.policy import Refusal, approval_refusal, parse_policy
from tests.conftest import wait_for
from tests.fakes.kube import FakeKubernetes, write_kubeconfig
from tests.test_gate import Clock
from tests.test_gate_policy import ReviewingNotifier

SRE = [f"U0SRE{n:02d}" for n in range(1, 21)]

POLICY = f"""\
version: 1
approval_channel: C0APPROVALS
audit_channel: C0AUDIT
groups:
  sre: {{users: [{", ".join(SRE)}]}}
  oncall: {{users: [U0ONCALL]}}
agents:
  U0SREBOT: {{name: sre-bot}}
environments:
  prod: {{kube_context: prod, namespaces: [payments, checkout]}}
rules:
  - name: payments needs two
    match: {{action: restart, environment: prod, namespace: payments}}
    approvers: [sre]
    min_approvals: 2
    break_glass: [oncall]
  - name: checkout needs one
    match: {{action: restart, environment: prod, namespace: checkout}}
    approvers: [sre]
"""

TERMINAL = {Status.SUCCEEDED.value, Status.DENIED.value, Status.CANCELLED.value}


@dataclass
class World:
    gate: Gate
    clock: Clock
    sessions: sessionmaker[Session]
    kube: FakeKubernetes


@pytest.fixture
def world(tmp_path: Path, database_url: str, kube: FakeKubernetes) -> Iterator[World]:
    migrate(database_url)
    engine = make_engine(database_url)
    sessions = make_sessionmaker(engine)
    backend = KubernetesBackend(
        kubeconfig=str(write_kubeconfig(tmp_path / "kc", {"prod": kube})), request_timeout=5
    )
    clock = Clock()
    loaded = parse_policy(POLICY)
    gate = Gate(
        sessions=sessions,
        policy=lambda: loaded,
        actions=build_registry(kube=backend, clock=clock, poll_interval=0.01),
        notifier=ReviewingNotifier(),
        clock=clock,
    )
    yield World(gate, clock, sessions, kube)
    backend.close()
    engine.dispose()


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


def submit(
    world: World,
    namespace: str = "payments",
    name: str = "payments-api",
    *,
    requester: str = "U0DEV1",
) -> int:
    return world.gate.submit(
        Submission(
            action="restart",
            params=RestartParams(name=name, namespace=namespace),
            requester=Actor(requester),
            namespace=namespace,
            reason="latency alarm on the dashboard",
            origin=Origin("C0DEV", "dev", None),
        )
    ).id


def settled(world: World, request_id: int) -> RequestView:
    """The request once it is in a final state (execution may finish after the click returns)."""
    return wait_for(
        lambda: (view := world.gate.get(request_id)).status in TERMINAL and view,
        what=f"request #{request_id} to settle",
    )


def approvers_of(world: World, request_id: int) -> list[str]:
    with world.sessions() as session:
        return list(
            session.scalars(
                select(Approval.approver_id)
                .where(Approval.request_id == request_id)
                .order_by(Approval.id)
            )
        )


def decisions_of(world: World, request_id: int) -> list[str]:
    """The audit events that moved the request out of ``pending``."""
    with world.sessions() as session:
        return list(
            session.scalars(
                select(AuditEvent.event)
                .where(AuditEvent.request_id == request_id, AuditEvent.from_status == "pending")
                .where(AuditEvent.to_status != "pending")
            )
        )


def applied_restarts(kube: FakeKubernetes) -> list[str]:
    """The ``restartedAt`` of every PATCH that was applied (not a preview's dry run)."""
    return [
        p.body["spec"]["template"]["metadata"]["annotations"][RESTARTED_AT]  # type: ignore[index,call-overload]
        for p in kube.requests_matching(method="PATCH", path_contains="/deployments/")
        if p.query.get("dryRun") is None
    ]


def losers(outcomes: list[Outcome]) -> list[GateError]:
    errors = [o for o in outcomes if isinstance(o, GateError)]
    assert all(isinstance(e, AlreadyDecided) for e in errors), errors
    return errors


def break_glass(world: World) -> int:
    view = world.gate.submit(
        Submission(
            action="restart",
            params=RestartParams(name="payments-api", namespace="payments"),
            requester=Actor("U0ONCALL"),
            namespace="payments",
            reason="payments down, pager storm",
            break_glass="payments down, pager storm",
            origin=Origin("C0DEV", "dev", None),
        )
    )
    assert view.break_glass
    assert view.status == "succeeded"
    return view.id


# --- who may decide: the gate's refusals ------------------------------------------------------


def test_the_requester_may_not_approve_but_may_withdraw(world: World) -> None:
    request_id = submit(world, "checkout", "cart", requester=SRE[0])
    with pytest.raises(NotAllowed, match="You cannot approve your own request"):
        world.gate.approve(request_id, Actor(SRE[0]))
    assert approvers_of(world, request_id) == []
    assert world.gate.get(request_id).status == "pending"
    view = world.gate.deny(request_id, Actor(SRE[0]))
    assert (view.status, view.decided_by) == ("cancelled", SRE[0])
    assert decisions_of(world, request_id) == ["cancelled"]


@pytest.mark.parametrize("decide", ["approve", "deny"])
def test_someone_outside_the_approver_groups_may_not_decide(world: World, decide: str) -> None:
    request_id = submit(world, "checkout", "cart")
    with pytest.raises(NotAllowed, match=f"Only members of sre may decide request #{request_id}"):
        getattr(world.gate, decide)(request_id, Actor("U0ONCALL"))
    assert world.gate.get(request_id).status == "pending"
    assert approvers_of(world, request_id) == []
    assert decisions_of(world, request_id) == []


@pytest.mark.parametrize("decide", ["approve", "deny"])
@pytest.mark.parametrize(
    "agent",
    [Actor(SRE[0], ActorKind.AGENT), Actor("U0SREBOT")],
    ids=["said-to-be-automation", "listed-under-agents"],
)
def test_automation_may_not_decide(world: World, decide: str, agent: Actor) -> None:
    request_id = submit(world, "checkout", "cart")
    with pytest.raises(NotAllowed, match="Automation cannot approve or deny requests"):
        getattr(world.gate, decide)(request_id, agent)
    assert world.gate.get(request_id).status == "pending"
    assert approvers_of(world, request_id) == []


def test_a_decided_request_refuses_every_further_click(world: World) -> None:
    request_id = submit(world, "checkout", "cart")
    assert world.gate.approve(request_id, Actor(SRE[0])).status == "succeeded"
    for decide, who in [("approve", SRE[1]), ("deny", SRE[1]), ("deny", "U0DEV1")]:
        with pytest.raises(AlreadyDecided, match=f"is already succeeded by <@{SRE[0]}>"):
            getattr(world.gate, decide)(request_id, Actor(who))
    assert approvers_of(world, request_id) == [SRE[0]]
    assert decisions_of(world, request_id) == ["approved"]
    assert len(applied_restarts(world.kube)) == 1


def test_an_approver_counts_once_and_may_not_then_deny(world: World) -> None:
    request_id = submit(world)  # needs two
    assert world.gate.approve(request_id, Actor(SRE[0])).status == "pending"
    for decide in ("approve", "deny"):
        with pytest.raises(AlreadyDecided, match=f"already approved request #{request_id}"):
            getattr(world.gate, decide)(request_id, Actor(SRE[0]))
    assert approvers_of(world, request_id) == [SRE[0]]
    assert world.gate.get(request_id).status == "pending"


@pytest.mark.parametrize("decide", ["approve", "deny", "acknowledge"])
def test_an_unknown_request_is_answered_as_such(world: World, decide: str) -> None:
    with pytest.raises(UnknownRequest, match="There is no request #4242"):
        getattr(world.gate, decide)(4242, Actor(SRE[0]))


def test_only_an_approver_other_than_the_requester_reviews_a_break_glass(world: World) -> None:
    request_id = break_glass(world)
    refused = [
        (Actor("U0ONCALL"), "You cannot review your own break-glass request"),
        (Actor("U0DEV1"), f"Only members of sre may review request #{request_id}"),
        (Actor(SRE[0], ActorKind.AGENT), "Automation cannot review"),
        (Actor("U0SREBOT"), "Automation cannot review"),
    ]
    for actor, message in refused:
        with pytest.raises(NotAllowed, match=message):
            world.gate.acknowledge(request_id, actor)
    assert world.gate.get(request_id).reviewed_by is None
    ordinary = submit(world)
    with pytest.raises(NotAllowed, match=f"#{ordinary} is not a break-glass request"):
        world.gate.acknowledge(ordinary, Actor(SRE[0]))
    assert world.gate.acknowledge(request_id, Actor(SRE[1])).reviewed_by == SRE[1]
    with pytest.raises(AlreadyDecided, match="already reviewed"):
        world.gate.acknowledge(request_id, Actor(SRE[2]))


def test_every_click_asks_the_policy_and_follows_its_answer(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The gate has no rules of its own about who may approve: it asks
    :func:`approvals.policy.approval_refusal` for every click and acknowledgement."""
    asked: list[tuple[str, str, str]] = []
    refuse: set[str] = set()

    def policy(steps, user_id, *, requester, actor_kind="human"):  # type: ignore[no-untyped-def]
        asked.append((user_id, requester, actor_kind))
        if user_id in refuse:
            return Refusal.NOT_AN_APPROVER
        return approval_refusal(steps, user_id, requester=requester, actor_kind=actor_kind)

    monkeypatch.setattr(approvals.gate, "approval_refusal", policy)
    request_id = submit(world)
    glass = break_glass(world)
    refuse.add(SRE[0])  # a member of sre, whom this policy now refuses
    for decide, target in [("approve", request_id), ("deny", request_id), ("acknowledge", glass)]:
        asked.clear()
        with pytest.raises(NotAllowed, match="Only members of sre"):
            getattr(world.gate, decide)(target, Actor(SRE[0]))
        requester = "U0ONCALL" if target == glass else "U0DEV1"
        assert set(asked) == {(SRE[0], requester, "human")}
    asked.clear()
    world.gate.approve(request_id, Actor(SRE[1]))
    world.gate.deny(request_id, Actor("U0DEV1"))
    world.gate.acknowledge(glass, Actor(SRE[1]))
    assert [a[0] for a in asked] == [SRE[1], "U0DEV1", SRE[1]]
    assert world.gate.get(request_id).status == "cancelled"


def test_deciding_a_request_locks_it_until_the_decision_ends(world: World) -> None:
    """While one decision is open, another transaction can neither lock the same request
    (PostgreSQL: ``FOR UPDATE NOWAIT`` on its row) nor write (SQLite: the writer lock)."""
    request_id = submit(world)
    engine = world.sessions.kw["bind"]
    sqlite = engine.dialect.name == "sqlite"
    # a second engine whose SQLite connections give up after 50 ms instead of 30 s
    other = create_engine(engine.url, connect_args={"timeout": 0.05} if sqlite else {})

    def other_decision() -> None:
        with other.begin() as conn:
            if sqlite:
                conn.execute(update(Request).where(Request.id == request_id).values(rule="x"))
            else:
                conn.execute(
                    select(Request.id).where(Request.id == request_id).with_for_update(nowait=True)
                )

    try:
        with world.sessions.begin() as session:
            locked = Gate._locked(session, request_id)
            assert (locked.id, locked.status) == (request_id, "pending")
            locked_out = "database is locked" if sqlite else "could not obtain lock"
            with pytest.raises(OperationalError, match=locked_out):
                other_decision()
        other_decision()  # once the decision has ended
    finally:
        other.dispose()
    with world.sessions.begin() as session, pytest.raises(UnknownRequest, match="#4242"):
        Gate._locked(session, 4242)


# --- exactly once under concurrency -----------------------------------------------------------


@pytest.mark.race
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


@pytest.mark.race
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


@pytest.mark.race
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


@pytest.mark.race
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
