"""A Gate without Slack, over the fake cluster and the test database: the notifiers, the
user-group directory and the world the gate tests share."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from sqlalchemy.orm import Session, sessionmaker

from actions.backends.kubernetes import KubernetesBackend
from actions.registry import build_registry
from actions.restart import RestartParams
from actions.rollout import RolloutReader
from approvals.db import make_engine, make_sessionmaker, migrate
from approvals.gate import (
    Gate,
    Origin,
    Submission,
)
from approvals.lifecycle import Actor
from approvals.notifier import MessageRef, NotifyError, OpenedRefs, RequestView
from approvals.policy import load_policy
from tests.fakes.kube import FakeKubernetes, write_kubeconfig
from tests.helpers.clock import Clock


@dataclass
class RecordingNotifier:
    """A Notifier that keeps what it was told; ``fail_open`` makes the approval post fail."""

    events: list[tuple[int, str, str]] = field(default_factory=list)
    fail_open: bool = False

    def request_opened(
        self,
        request: RequestView,
        *,
        approval_posted: Callable[[MessageRef], None] | None = None,
        thread_posted: Callable[[MessageRef], None] | None = None,
    ) -> OpenedRefs:
        if self.fail_open:
            raise NotifyError("channel_not_found")
        self.events.append((request.id, "opened", request.status))
        approval = MessageRef("C0APPROVALS", f"{request.id}.1") if request.needs_approval else None
        return OpenedRefs(approval=approval, thread=MessageRef("C0DEV", f"{request.id}.2"))

    def request_changed(self, request: RequestView, *, event: str) -> None:
        self.events.append((request.id, event, request.status))

    def card_changed(self, request: RequestView) -> None:
        self.events.append((request.id, "card", request.status))


@dataclass
class World:
    gate: Gate
    notifier: RecordingNotifier
    clock: Clock
    sessions: sessionmaker[Session]
    kube: FakeKubernetes


@pytest.fixture
def world(
    tmp_path: Path, database_url: str, kube: FakeKubernetes, policy_path: Path
) -> Iterator[World]:
    migrate(database_url)
    engine = make_engine(database_url)
    sessions = make_sessionmaker(engine)
    backend = KubernetesBackend(
        kubeconfig=str(write_kubeconfig(tmp_path / "kc", {"prod": kube, "staging": kube})),
        request_timeout=2,
    )
    clock = Clock()
    notifier = RecordingNotifier()
    loaded = load_policy(policy_path)
    gate = Gate(
        sessions=sessions,
        policy=lambda: loaded,
        actions=build_registry(kube=backend, clock=clock),
        notifier=notifier,
        clock=clock,
        rollouts=RolloutReader(backend),
    )
    yield World(gate, notifier, clock, sessions, kube)
    backend.close()
    engine.dispose()


def restart(
    name: str = "payments-api", namespace: str = "payments", requester: str = "U0DEV1"
) -> Submission:
    return Submission(
        action="restart",
        params=RestartParams(name=name, namespace=namespace),
        requester=Actor(requester),
        namespace=namespace,
        origin=Origin("C0DEV", "dev", None),
    )


@dataclass
class ReviewingNotifier(RecordingNotifier):
    reviews: list[int] = field(default_factory=list)

    def review_opened(self, request: RequestView) -> MessageRef | None:
        self.reviews.append(request.id)
        return MessageRef("C0AUDIT", f"{request.id}.9")


@dataclass
class Directory:
    """A user-group directory whose membership a test changes; counts refreshes."""

    groups: dict[str, frozenset[str]] = field(default_factory=dict)
    refreshed: int = 0
    pending_change: dict[str, frozenset[str]] = field(default_factory=dict)

    def members(self, usergroup_id: str) -> frozenset[str]:
        return self.groups.get(usergroup_id, frozenset())

    def refresh(self) -> None:
        self.refreshed += 1
        self.groups.update(self.pending_change)
