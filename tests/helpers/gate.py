"""A Gate without Slack, over the fake cluster and the test database: the notifiers, the
user-group directory and the world the gate tests share."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

from actions.backends.kubernetes import KubernetesBackend
from actions.base import ActionKind
from actions.registry import build_registry
from actions.restart import RestartParams
from actions.rollout import RolloutReader
from approvals.db import make_engine, make_sessionmaker, migrate
from approvals.gate import (
    Gate,
    Origin,
    Submission,
    UsergroupDirectory,
)
from approvals.lifecycle import Actor
from approvals.notifier import MessageRef, Notifier, NotifyError, OpenedRefs, RequestView
from approvals.policy import LoadedPolicy, load_policy
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


@dataclass
class BuiltGate:
    """A Gate and what it runs on; see :func:`built_gate`."""

    gate: Gate
    sessions: sessionmaker[Session]
    engine: Engine
    backend: KubernetesBackend


@contextmanager
def built_gate(
    database_url: str,
    *,
    policy: Callable[[], LoadedPolicy],
    notifier: Notifier,
    clock: Clock,
    kube: FakeKubernetes | None = None,
    kubeconfig: Path | None = None,
    contexts: Sequence[str] = ("prod", "staging"),
    request_timeout: float = 2,
    actions: Mapping[str, ActionKind] | None = None,
    directory: UsergroupDirectory | None = None,
    **registry: Any,
) -> Iterator[BuiltGate]:
    """The one way the tests build a Gate: on the migrated database ``database_url``, with the
    Kubernetes backend on ``kube`` (a kubeconfig written to ``kubeconfig`` whose ``contexts``
    all point at it; without ``kube``, a backend nothing reads), the action kinds of
    ``build_registry(kube=backend, clock=clock, **registry)`` unless ``actions`` is given
    (``registry``: ``poll_interval``, ``rollout_timeout``... in seconds). The backend is closed
    and the engine disposed on leaving the block."""
    migrate(database_url)
    engine = make_engine(database_url)
    sessions = make_sessionmaker(engine)
    if kube is not None:
        if kubeconfig is None:
            raise ValueError("built_gate: a kube needs a kubeconfig path to write")
        written = write_kubeconfig(kubeconfig, dict.fromkeys(contexts, kube))
        backend = KubernetesBackend(kubeconfig=str(written), request_timeout=request_timeout)
    else:
        backend = KubernetesBackend(kubeconfig=None)  # never read: no rollouts
    extra: dict[str, Any] = {} if directory is None else {"directory": directory}
    gate = Gate(
        sessions=sessions,
        policy=policy,
        actions=build_registry(kube=backend, clock=clock, **registry)
        if actions is None
        else actions,
        notifier=notifier,
        clock=clock,
        rollouts=RolloutReader(backend),
        **extra,
    )
    try:
        yield BuiltGate(gate, sessions, engine, backend)
    finally:
        backend.close()
        engine.dispose()


@pytest.fixture
def world(
    tmp_path: Path, database_url: str, kube: FakeKubernetes, policy_path: Path
) -> Iterator[World]:
    clock = Clock()
    notifier = RecordingNotifier()
    loaded = load_policy(policy_path)
    with built_gate(
        database_url,
        kube=kube,
        kubeconfig=tmp_path / "kc",
        policy=lambda: loaded,
        notifier=notifier,
        clock=clock,
    ) as built:
        yield World(built.gate, notifier, clock, built.sessions, kube)


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
