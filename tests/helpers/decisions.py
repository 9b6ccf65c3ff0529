"""The gate of the decision tests, also raced by ``tests/test_gate_race.py``: twenty SREs, a
user group, a policy that can be reloaded, and the queries that read back what was decided."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from actions.restart import RESTARTED_AT, RestartParams
from approvals.gate import (
    Gate,
    Origin,
    Submission,
)
from approvals.lifecycle import Actor
from approvals.models import Approval, AuditEvent
from approvals.notifier import RequestView
from approvals.policy import LoadedPolicy, parse_policy
from tests.fakes.kube import FakeKubernetes, deployment
from tests.helpers.clock import Clock
from tests.helpers.gate import Directory, ReviewingNotifier, built_gate
from tests.helpers.policy import policy

SRE = [f"U0SRE{n:02d}" for n in range(1, 21)]


NEWCOMER = "U0SRENEW"  # in sre only through the S0SRE user group


POLICY = policy(  # rate_limit: the races file many requests in a minute
    """\
  - name: payments needs two
    match: {action: restart, environment: prod, namespace: payments}
    approvers: [sre]
    min_approvals: 2
    break_glass: [oncall]
  - name: checkout needs one
    match: {action: restart, environment: prod, namespace: checkout}
    approvers: [sre]
  - name: billing needs sre and finance
    match: {action: restart, environment: prod, namespace: billing}
    steps:
      - {approvers: [sre]}
      - {approvers: [finance]}
    break_glass: [oncall]
""",
    settings={"incident_channels": None, "rate_limit": "{requests_per_minute: 1000}"},
    groups={
        "sre": f"{{users: [{', '.join(SRE)}], usergroups: [S0SRE]}}",
        "security": None,
        "oncall": "{users: [U0ONCALL]}",
        "finance": "{users: [U0FIN1]}",
    },
    agents={"U0SREBOT": "{name: sre-bot}"},
    environments={
        "prod": "{kube_context: prod, namespaces: [payments, checkout, billing]}",
        "staging": None,
        "sandbox": None,
    },
)


@dataclass
class Policies:
    """The policy in force (``current``, reloaded by assigning), counting how often it is read."""

    current: LoadedPolicy = field(default_factory=lambda: parse_policy(POLICY))
    reads: int = 0

    def __call__(self) -> LoadedPolicy:
        self.reads += 1
        return self.current


@dataclass
class World:
    gate: Gate
    clock: Clock
    sessions: sessionmaker[Session]
    kube: FakeKubernetes
    notifier: ReviewingNotifier
    directory: Directory
    policies: Policies


@contextmanager
def gate_world(tmp_path: Path, database_url: str, kube: FakeKubernetes) -> Iterator[World]:
    """A gate on the test database and the fake cluster; the S0SRE user group holds
    :data:`NEWCOMER` (and the agent U0SREBOT, whom no step may count)."""
    kube.add(deployment("ledger", "billing"))
    clock = Clock()
    notifier = ReviewingNotifier()
    directory = Directory(groups={"S0SRE": frozenset({NEWCOMER, "U0SREBOT"})})
    policies = Policies()
    with built_gate(
        database_url,
        kube=kube,
        kubeconfig=tmp_path / "kc",
        contexts=("prod",),
        request_timeout=5,
        policy=policies,
        notifier=notifier,
        clock=clock,
        directory=directory,
        poll_interval=0.01,
    ) as built:
        yield World(built.gate, clock, built.sessions, kube, notifier, directory, policies)


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


def break_glass(world: World, namespace: str = "payments", name: str = "payments-api") -> int:
    view = world.gate.submit(
        Submission(
            action="restart",
            params=RestartParams(name=name, namespace=namespace),
            requester=Actor("U0ONCALL"),
            namespace=namespace,
            reason="payments down, pager storm",
            break_glass="payments down, pager storm",
            origin=Origin("C0DEV", "dev", None),
        )
    )
    assert view.break_glass
    assert finished(world, view.id).status == "succeeded"
    return view.id


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


def finished(world: World, request_id: int) -> RequestView:
    """``request_id`` after the periodic job has read its rollout (the fake's is done)."""
    world.gate.follow_rollouts()
    return world.gate.get(request_id)
