"""Deciding a request, on the gate directly: who may (the policy's answer, asked at every click and
acknowledgement), what each refusal says, what a decision records and announces, and the lock a
decision holds (test database, fake cluster over real HTTP, recording notifier).

The races themselves are in ``tests/test_gate_race.py``.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import create_engine, select, update
from sqlalchemy.exc import OperationalError

import approvals.gate.deciding
from approvals.gate import (
    AlreadyDecided,
    Gate,
    NotAllowed,
    UnknownRequest,
)
from approvals.lifecycle import Actor
from approvals.models import ActorKind, AuditEvent, Request
from approvals.policy import Refusal, approval_refusal, parse_policy
from tests.fakes.kube import FakeKubernetes
from tests.helpers.decisions import (
    NEWCOMER,
    POLICY,
    SRE,
    World,
    applied_restarts,
    approvers_of,
    break_glass,
    decisions_of,
    finished,
    gate_world,
    submit,
)


@pytest.fixture
def world(tmp_path: Path, database_url: str, kube: FakeKubernetes) -> Iterator[World]:
    with gate_world(tmp_path, database_url, kube) as made:
        yield made


def announced(world: World, request_id: int) -> list[str]:
    """What the notifier was told about the request after it was opened."""
    return [e for i, e, _ in world.notifier.events if i == request_id and e != "opened"]


def exactly(message: str) -> str:
    """A ``pytest.raises(match=...)`` pattern for the whole of ``message``."""
    return f"^{re.escape(message)}$"


# --- who may decide: the gate's refusals ------------------------------------------------------


def test_the_requester_may_not_approve_but_may_withdraw(world: World) -> None:
    request_id = submit(world, "checkout", "cart", requester=SRE[0])
    with pytest.raises(NotAllowed, match=exactly("You cannot approve your own request.")):
        world.gate.approve(request_id, Actor(SRE[0]))
    assert approvers_of(world, request_id) == []
    assert world.gate.get(request_id).status == "pending"
    view = world.gate.deny(request_id, Actor(SRE[0]))
    assert (view.status, view.decided_by) == ("cancelled", SRE[0])
    assert decisions_of(world, request_id) == ["cancelled"]
    assert announced(world, request_id) == ["cancelled"]


def test_an_approver_denies(world: World) -> None:
    request_id = submit(world)
    view = world.gate.deny(request_id, Actor(SRE[3]))
    assert (view.status, view.decided_by) == ("denied", SRE[3])
    assert decisions_of(world, request_id) == ["denied"]
    assert announced(world, request_id) == ["denied"]
    assert applied_restarts(world.kube) == []


@pytest.mark.parametrize("decide", ["approve", "deny"])
@pytest.mark.parametrize(
    ("namespace", "name", "groups"),
    [("checkout", "cart", "sre"), ("billing", "ledger", "sre, finance")],
)
def test_someone_outside_the_approver_groups_may_not_decide(
    world: World, decide: str, namespace: str, name: str, groups: str
) -> None:
    request_id = submit(world, namespace, name)
    message = f"Only members of {groups} may decide request #{request_id}; nothing was changed."
    with pytest.raises(NotAllowed, match=exactly(message)):
        getattr(world.gate, decide)(request_id, Actor("U0ONCALL"))
    assert world.gate.get(request_id).status == "pending"
    assert approvers_of(world, request_id) == []
    assert decisions_of(world, request_id) == []
    assert announced(world, request_id) == []


@pytest.mark.parametrize("decide", ["approve", "deny"])
@pytest.mark.parametrize(
    "agent",
    [Actor(SRE[0], ActorKind.AGENT), Actor("U0SREBOT")],
    ids=["said-to-be-automation", "listed-under-agents"],
)
def test_automation_may_not_decide(world: World, decide: str, agent: Actor) -> None:
    request_id = submit(world, "checkout", "cart")
    with pytest.raises(NotAllowed, match=exactly("Automation cannot approve or deny requests.")):
        getattr(world.gate, decide)(request_id, agent)
    assert world.gate.get(request_id).status == "pending"
    assert approvers_of(world, request_id) == []


def test_a_decided_request_refuses_every_further_click(world: World) -> None:
    request_id = submit(world, "checkout", "cart")
    assert world.gate.approve(request_id, Actor(SRE[0])).status == "executing"
    assert finished(world, request_id).status == "succeeded"
    message = f"Request #{request_id} is already succeeded by <@{SRE[0]}>."
    for decide, who in [("approve", SRE[1]), ("deny", SRE[1]), ("deny", "U0DEV1")]:
        with pytest.raises(AlreadyDecided, match=exactly(message)):
            getattr(world.gate, decide)(request_id, Actor(who))
    assert approvers_of(world, request_id) == [SRE[0]]
    assert decisions_of(world, request_id) == ["approved"]
    assert len(applied_restarts(world.kube)) == 1


def test_a_request_opsgate_ended_names_nobody(world: World) -> None:
    request_id = submit(world)
    world.clock.now += timedelta(days=2)
    assert world.gate.expire_pending() == [request_id]
    with pytest.raises(AlreadyDecided, match=exactly(f"Request #{request_id} is already expired.")):
        world.gate.approve(request_id, Actor(SRE[0]))


def test_an_approver_counts_once_and_may_not_then_deny(world: World) -> None:
    request_id = submit(world)  # needs two
    other = submit(world)
    assert world.gate.approve(request_id, Actor(SRE[0])).status == "pending"
    message = f"You have already approved request #{request_id}."
    for decide in ("approve", "deny"):
        with pytest.raises(AlreadyDecided, match=exactly(message)):
            getattr(world.gate, decide)(request_id, Actor(SRE[0]))
    assert approvers_of(world, request_id) == [SRE[0]]
    assert world.gate.get(request_id).status == "pending"
    # an approval of one request is not one of another
    assert world.gate.approve(other, Actor(SRE[0])).approved_by == (SRE[0],)


@pytest.mark.parametrize("decide", ["approve", "deny", "acknowledge"])
def test_an_unknown_request_is_answered_as_such(world: World, decide: str) -> None:
    with pytest.raises(UnknownRequest, match=exactly("There is no request #4242.")):
        getattr(world.gate, decide)(4242, Actor(SRE[0]))


def test_only_an_approver_other_than_the_requester_reviews_a_break_glass(world: World) -> None:
    request_id = break_glass(world)
    refused = [
        (Actor("U0ONCALL"), "You cannot review your own break-glass request."),
        (Actor("U0DEV1"), f"Only members of sre may review request #{request_id}."),
        (Actor(SRE[0], ActorKind.AGENT), "Automation cannot review break-glass requests."),
        (Actor("U0SREBOT"), "Automation cannot review break-glass requests."),
    ]
    for actor, message in refused:
        with pytest.raises(NotAllowed, match=exactly(message)):
            world.gate.acknowledge(request_id, actor)
    assert world.gate.get(request_id).reviewed_by is None
    ordinary = submit(world)
    with pytest.raises(
        NotAllowed, match=exactly(f"Request #{ordinary} is not a break-glass request.")
    ):
        world.gate.acknowledge(ordinary, Actor(SRE[0]))
    world.clock.now += timedelta(minutes=5)
    reviewed = world.gate.acknowledge(request_id, Actor(SRE[1]))
    assert (reviewed.reviewed_by, reviewed.reviewed_at) == (SRE[1], world.clock.now)
    assert reviewed.updated_at == world.clock.now
    assert announced(world, request_id)[-1] == "reviewed"
    with pytest.raises(
        AlreadyDecided, match=exactly(f"Request #{request_id} was already reviewed.")
    ):
        world.gate.acknowledge(request_id, Actor(SRE[2]))
    billing = break_glass(world, "billing", "ledger")
    with pytest.raises(
        NotAllowed, match=exactly(f"Only members of sre, finance may review request #{billing}.")
    ):
        world.gate.acknowledge(billing, Actor("U0DEV1"))
    assert world.gate.acknowledge(billing, Actor("U0FIN1")).reviewed_by == "U0FIN1"


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

    monkeypatch.setattr(approvals.gate.deciding, "approval_refusal", policy)
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


def test_each_decision_reads_the_policy_once(world: World) -> None:
    """A reload in the middle of a click cannot mix two policies: each decision reads the
    policy in force once and decides everything under that read."""
    request_id = submit(world)
    other = submit(world, "checkout", "cart")
    glass = break_glass(world)
    for decide, target, who in [
        ("approve", request_id, SRE[0]),
        ("approve", request_id, SRE[1]),
        ("deny", other, SRE[2]),
        ("acknowledge", glass, SRE[3]),
    ]:
        before = world.policies.reads
        getattr(world.gate, decide)(target, Actor(who))
        assert world.policies.reads - before == 1, decide


# --- what a decision records and announces ----------------------------------------------------


def test_each_approval_is_audited_and_announced_until_the_quorum(world: World) -> None:
    request_id = submit(world)  # needs two
    world.gate.approve(request_id, Actor(SRE[4]))
    assert announced(world, request_id) == ["approval_added"]
    world.gate.approve(request_id, Actor(SRE[2]))
    finished(world, request_id)
    assert announced(world, request_id) == [
        "approval_added",
        "approved",
        "executing",
        "succeeded",
    ]
    with world.sessions() as session:
        events = session.scalars(
            select(AuditEvent)
            .where(AuditEvent.request_id == request_id, AuditEvent.event == "approval_added")
            .order_by(AuditEvent.id)
        ).all()
    assert [(e.actor_id, e.detail) for e in events] == [
        (SRE[4], {"approvals": 1, "needed": 2, "steps": [[SRE[4]]]}),
        (SRE[2], {"approvals": 2, "needed": 2, "steps": [[SRE[4], SRE[2]]]}),
    ]
    assert world.gate.get(request_id).decided_by == SRE[2]


def test_the_app_home_lists_what_each_person_may_approve(world: World) -> None:
    first = submit(world)
    mine = submit(world, "checkout", "cart", requester=SRE[0])
    billing = submit(world, "billing", "ledger")
    decided = submit(world, "checkout", "cart")
    world.gate.deny(decided, Actor(SRE[1]))
    assert [v.id for v in world.gate.pending_for(SRE[0])] == [first, billing]
    assert [v.id for v in world.gate.pending_for(SRE[1])] == [first, mine, billing]
    assert [v.id for v in world.gate.pending_for("U0FIN1")] == [billing]
    assert world.gate.pending_for("U0ONCALL").items == ()


# --- members brought up to date -----------------------------------------------------------------


def stored_users(world: World, request_id: int) -> list[str]:
    with world.sessions() as session:
        request = session.get(Request, request_id)
        assert request is not None
        return list(request.approvers["users"])


def test_members_are_only_added_between_reloads(world: World) -> None:
    """Someone who was in a user group when the request was made keeps approving it after
    leaving the group: a click from someone unknown asks the user groups again and adds their
    new members, it never removes one. Agents in a user group never count."""
    request_id = submit(world)
    assert NEWCOMER in stored_users(world, request_id)
    # the newcomer leaves S0SRE; a stranger's click has the user groups asked again
    world.directory.pending_change = {"S0SRE": frozenset({"U0SREBOT"})}
    with pytest.raises(NotAllowed):
        world.gate.approve(request_id, Actor("U0DEV2"))
    assert world.directory.refreshed == 1
    # U0SRENEW2 joins S0SRE; their approval stores the members as asked again
    world.directory.pending_change = {"S0SRE": frozenset({"U0SREBOT", "U0SRENEW2"})}
    assert world.gate.approve(request_id, Actor("U0SRENEW2")).status == "pending"
    users = stored_users(world, request_id)
    assert {"U0SRENEW2", NEWCOMER} <= set(users)
    assert "U0SREBOT" not in users
    assert world.gate.pending_for("U0SREBOT").items == ()
    assert world.gate.approve(request_id, Actor(NEWCOMER)).status == "executing"
    assert finished(world, request_id).status == "succeeded"


def test_after_a_reload_the_members_are_those_of_the_new_policy_once(world: World) -> None:
    """The first decision after a reload recomputes the members from the new policy's groups
    (someone the reload removed may no longer approve); from then on members are only added,
    as before the reload."""
    request_id = submit(world)  # needs two
    reloaded = POLICY.replace(f"{SRE[19]}]", f"{SRE[19]}, U0SRE99]").replace(f"{SRE[5]}, ", "")
    world.policies.current = parse_policy(reloaded)
    assert world.gate.approve(request_id, Actor(SRE[0])).status == "pending"
    users = stored_users(world, request_id)
    assert "U0SRE99" in users
    assert SRE[5] not in users
    assert NEWCOMER in users
    with pytest.raises(NotAllowed):
        world.gate.approve(request_id, Actor(SRE[5]))  # removed by the reload
    world.directory.pending_change = {"S0SRE": frozenset()}  # the newcomer leaves
    with pytest.raises(NotAllowed):
        world.gate.approve(request_id, Actor("U0DEV2"))  # a stranger: the groups are asked again
    assert world.directory.refreshed == 2
    assert world.gate.approve(request_id, Actor(NEWCOMER)).status == "executing"
    assert finished(world, request_id).status == "succeeded"


# --- the lock a decision holds ----------------------------------------------------------------


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
