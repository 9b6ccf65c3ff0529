"""The gate applies the policy's issue-6 features: multi-step approvals, the pending TTL and
escalation, break-glass with its review, change freezes, required reasons, agents, and user groups
refreshed on a click (injected clock, recording notifier, fake cluster, test database)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import select

from actions.restart import RESTARTED_AT, RestartParams
from approvals.gate import AlreadyDecided, Gate, NotAllowed, Origin, Rejected, Submission
from approvals.lifecycle import Actor
from approvals.models import ActorKind, AuditEvent, Request
from approvals.notifier import MessageRef, RequestView
from approvals.policy import parse_policy
from tests.fakes.kube import FakeKubernetes
from tests.helpers.clock import Clock
from tests.helpers.gate import Directory, ReviewingNotifier, built_gate
from tests.helpers.policy import YEAR_END_FREEZE, policy

POLICY = policy(
    """\
  - name: checkout two steps
    match: {action: restart, environment: prod, namespace: checkout}
    steps:
      - {approvers: [sre], min_approvals: 1}
      - {approvers: [security], min_approvals: 1}
    pending_ttl: 2h
    escalate_after: 30m
    escalate_to: oncall
  - name: payments
    match: {action: restart, environment: prod, namespace: payments}
    approvers: [sre]
    reason: required
    reason_min_length: 8
    break_glass: [oncall]
  - match: {action: restart, environment: staging}
    approval: auto
""",
    settings={"incident_channels": None},
    groups={
        "sre": "{users: [U0SRE1, U0SRE2], usergroups: [S0ONCALL]}",
        "oncall": "{users: [U0ONCALL]}",
    },
    environments={"sandbox": None},
    sections=YEAR_END_FREEZE,
    spaced=False,
)


@dataclass
class World:
    gate: Gate
    notifier: ReviewingNotifier
    clock: Clock
    directory: Directory
    kube: FakeKubernetes
    sessions: object


def finished(gate: Gate, request_id: int) -> RequestView:
    """``request_id`` after the periodic job has read its rollout once (the fake Kubernetes
    completes a rollout as soon as it is asked)."""
    gate.follow_rollouts()
    return gate.get(request_id)


@pytest.fixture
def world(tmp_path: Path, database_url: str, kube: FakeKubernetes) -> Iterator[World]:
    clock = Clock()
    notifier = ReviewingNotifier()
    directory = Directory()
    loaded = parse_policy(POLICY)
    with built_gate(
        database_url,
        kube=kube,
        kubeconfig=tmp_path / "kc",
        policy=lambda: loaded,
        notifier=notifier,
        clock=clock,
        directory=directory,
        poll_interval=0.01,
        rollout_timeout=5,
    ) as built:
        yield World(built.gate, notifier, clock, directory, kube, built.sessions)


def restart(
    namespace: str,
    name: str,
    *,
    requester: str = "U0DEV1",
    reason: str | None = "a good reason",
    break_glass: str | None = None,
    kind: str = ActorKind.HUMAN,
) -> Submission:
    return Submission(
        action="restart",
        params=RestartParams(name=name, namespace=namespace),
        requester=Actor(requester, kind),
        namespace=namespace,
        reason=reason,
        break_glass=break_glass,
        origin=Origin("C0DEV", "dev", None),
    )


def restarted(kube: FakeKubernetes, namespace: str, name: str) -> bool:
    obj = kube.get_object("apps/v1", "Deployment", namespace, name)
    assert obj is not None
    annotations = obj["spec"]["template"]["metadata"].get("annotations") or {}
    return RESTARTED_AT in annotations


def events(world: World, request_id: int) -> list[str]:
    return [e for (i, e, _s) in world.notifier.events if i == request_id]


def audit(world: World) -> list[str]:
    with world.sessions() as session:  # type: ignore[operator]
        return list(session.scalars(select(AuditEvent.event).order_by(AuditEvent.id)))


def test_two_steps_need_one_approval_from_each_group(world: World) -> None:
    view = world.gate.submit(restart("checkout", "cart"))
    assert [(s.groups, s.min_approvals) for s in view.steps] == [(("sre",), 1), (("security",), 1)]
    view = world.gate.approve(view.id, Actor("U0SRE1"))
    assert view.status == "pending"
    assert [s.approved_by for s in view.steps] == [("U0SRE1",), ()]
    # a second sre does not satisfy the security step
    view = world.gate.approve(view.id, Actor("U0SRE2"))
    assert view.status == "pending"
    assert not restarted(world.kube, "checkout", "cart")
    view = world.gate.approve(view.id, Actor("U0SEC1"))
    assert view.status == "executing"
    assert finished(world.gate, view.id).status == "succeeded"
    assert restarted(world.kube, "checkout", "cart")


def test_a_pending_request_expires_after_its_ttl_and_can_no_longer_be_approved(
    world: World,
) -> None:
    view = world.gate.submit(restart("checkout", "cart"))
    assert view.expires_at == world.clock.now + timedelta(hours=2)
    world.clock.now += timedelta(hours=1, minutes=59)
    assert world.gate.expire_pending() == []
    world.clock.now += timedelta(minutes=2)
    assert world.gate.expire_pending() == [view.id]
    assert world.gate.expire_pending() == []  # idempotent
    assert world.gate.get(view.id).status == "expired"
    assert "expired" in events(world, view.id)
    with pytest.raises(AlreadyDecided, match="already expired"):
        world.gate.approve(view.id, Actor("U0SRE1"))
    assert not restarted(world.kube, "checkout", "cart")


def test_escalation_pings_once_after_escalate_after(world: World) -> None:
    view = world.gate.submit(restart("checkout", "cart"))
    assert view.escalate_users == ("U0ONCALL",)
    world.clock.now += timedelta(minutes=29)
    assert world.gate.escalate_due() == []
    world.clock.now += timedelta(minutes=2)
    assert world.gate.escalate_due() == [view.id]
    world.clock.now += timedelta(minutes=10)
    assert world.gate.escalate_due() == []
    assert events(world, view.id).count("escalated") == 1
    assert audit(world).count("escalated") == 1


def test_a_decided_request_is_not_escalated(world: World) -> None:
    view = world.gate.submit(restart("checkout", "cart"))
    world.gate.deny(view.id, Actor("U0SRE1"))
    world.clock.now += timedelta(hours=1)
    assert world.gate.escalate_due() == []
    assert world.gate.expire_pending() == []


def test_reason_required_is_enforced_before_anything_happens(world: World) -> None:
    with pytest.raises(Rejected, match="reason"):
        world.gate.submit(restart("payments", "payments-api", reason=None))
    with pytest.raises(Rejected, match="8"):
        world.gate.submit(restart("payments", "payments-api", reason="short"))
    assert world.notifier.events == []
    assert audit(world) == ["rejected", "rejected"]


def test_break_glass_executes_at_once_and_stays_open_for_review(world: World) -> None:
    view = world.gate.submit(
        restart("payments", "payments-api", requester="U0ONCALL", break_glass="site down, P1")
    )
    assert finished(world.gate, view.id).status == "succeeded"
    assert view.break_glass
    assert restarted(world.kube, "payments", "payments-api")
    assert world.notifier.reviews == [view.id]
    assert view.review == MessageRef("C0AUDIT", f"{view.id}.9")
    assert "break_glass" in audit(world)
    with pytest.raises(NotAllowed, match="own"):
        world.gate.acknowledge(view.id, Actor("U0ONCALL"))
    with pytest.raises(NotAllowed, match="sre"):
        world.gate.acknowledge(view.id, Actor("U0SEC1"))
    with pytest.raises(NotAllowed, match="Automation"):
        world.gate.acknowledge(view.id, Actor("U0SRE1", ActorKind.AGENT))
    reviewed = world.gate.acknowledge(view.id, Actor("U0SRE1"))
    assert reviewed.reviewed_by == "U0SRE1"
    with pytest.raises(AlreadyDecided, match="already reviewed"):
        world.gate.acknowledge(view.id, Actor("U0SRE2"))
    assert audit(world).count("break_glass_reviewed") == 1


def test_break_glass_from_outside_its_group_is_refused(world: World) -> None:
    with pytest.raises(Rejected, match="break-glass"):
        world.gate.submit(
            restart("payments", "payments-api", requester="U0DEV1", break_glass="I want to")
        )
    assert not restarted(world.kube, "payments", "payments-api")


def test_a_freeze_denies_with_its_reason(world: World) -> None:
    world.clock.now = world.clock.now.replace(month=12, day=24)
    with pytest.raises(Rejected, match="year-end change freeze"):
        world.gate.submit(restart("payments", "payments-api"))
    world.clock.now = world.clock.now.replace(year=2027, month=1, day=5)
    assert world.gate.submit(restart("payments", "payments-api")).status == "pending"


def test_an_agent_may_ask_but_never_approve(world: World) -> None:
    view = world.gate.submit(
        restart("payments", "payments-api", requester="B0DEPLOYBOT", kind=ActorKind.AGENT)
    )
    assert view.status == "pending"
    assert view.requester_kind == ActorKind.AGENT
    with pytest.raises(NotAllowed, match="Automation"):
        world.gate.approve(view.id, Actor("U0SRE1", ActorKind.AGENT))
    assert world.gate.approve(view.id, Actor("U0SRE1")).status == "executing"
    assert finished(world.gate, view.id).status == "succeeded"


def test_a_click_from_a_new_usergroup_member_refreshes_the_groups(world: World) -> None:
    view = world.gate.submit(restart("payments", "payments-api"))
    # U0NEW joined the S0ONCALL user group after the request was made
    world.directory.pending_change = {"S0ONCALL": frozenset({"U0NEW"})}
    assert world.gate.approve(view.id, Actor("U0NEW")).status == "executing"
    assert finished(world.gate, view.id).status == "succeeded"
    assert world.directory.refreshed == 1
    with world.sessions() as session:  # type: ignore[operator]
        stored = session.get(Request, view.id)
        assert "U0NEW" in stored.approvers["users"]


def test_a_stranger_stays_a_stranger_after_the_refresh(world: World) -> None:
    view = world.gate.submit(restart("payments", "payments-api"))
    with pytest.raises(NotAllowed, match="sre"):
        world.gate.approve(view.id, Actor("U0STRANGER"))
    assert world.directory.refreshed == 1
    assert world.gate.get(view.id).status == "pending"


def test_someone_a_reload_removed_from_a_group_can_no_longer_approve(
    tmp_path: Path, database_url: str, kube: FakeKubernetes
) -> None:
    current = [parse_policy(POLICY)]
    with built_gate(
        database_url,
        kube=kube,
        kubeconfig=tmp_path / "kc",
        policy=lambda: current[0],
        notifier=ReviewingNotifier(),
        clock=Clock(),
        poll_interval=0.01,
    ) as built:
        gate = built.gate
        view = gate.submit(restart("payments", "payments-api"))
        # U0SRE2 leaves sre in a reloaded policy while the request waits
        current[0] = parse_policy(POLICY.replace("users: [U0SRE1, U0SRE2]", "users: [U0SRE1]"))
        with pytest.raises(NotAllowed, match="sre"):
            gate.approve(view.id, Actor("U0SRE2"))
        assert gate.approve(view.id, Actor("U0SRE1")).status == "executing"
        assert finished(gate, view.id).status == "succeeded"
