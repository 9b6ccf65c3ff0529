"""The grants service on the test database, the fake cluster and real OpenBao: a GrantWorld and how
to make one."""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, select
from sqlalchemy.orm import Session, sessionmaker

from actions.access import (
    Access,
    AccessParams,
)
from actions.backends.kubernetes import KubernetesBackend
from actions.base import Target
from actions.vault import VaultPort
from approvals.db import make_engine, make_sessionmaker, migrate
from approvals.grants import (
    GrantService,
)
from approvals.lifecycle import Actor
from approvals.models import AuditEvent, Grant, Request, Status
from approvals.notifier import GrantView, NotifyError
from tests.fakes.kube import FakeKubernetes, write_kubeconfig
from tests.helpers.clock import Clock

RB_API = "rbac.authorization.k8s.io/v1"


SETTINGS: dict[str, Any] = {
    "roles": ["view", "edit"],
    "max_duration": 4 * 3600,
    "default_duration": 3600,
    "vault_groups": {},
    "extend": "approval",
    "identity": {"kubernetes_user": "alice@example.com", "vault_entity": "alice"},
}


@dataclass
class RecordingGrantNotifier:
    """A GrantNotifier that keeps ``(grant id, event, status)`` of each call."""

    events: list[tuple[int, str, str]] = field(default_factory=list)
    views: list[GrantView] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    fail: bool = False  # True: the grantee cannot be told (after the call is kept)

    def grant_changed(self, grant: GrantView, *, event: str) -> None:
        with self.lock:
            self.events.append((grant.id, event, grant.status))
            self.views.append(grant)
        if self.fail:
            raise NotifyError(f"grant #{grant.id}: the grantee could not be told")

    def of(self, grant_id: int) -> list[str]:
        return [event for gid, event, _ in self.events if gid == grant_id]


def cluster_role(name: str) -> dict[str, Any]:
    return {"apiVersion": RB_API, "kind": "ClusterRole", "metadata": {"name": name}, "rules": []}


def seed_cluster_roles(kube: FakeKubernetes) -> None:
    for name in ("view", "edit"):
        kube.add(cluster_role(name))


@dataclass
class GrantWorld:
    """Everything a grant test needs; ``service()`` builds another service on the same world."""

    database_url: str
    engine: Engine
    sessions: sessionmaker[Session]
    kube: FakeKubernetes
    backend: KubernetesBackend
    clock: Clock
    notifier: RecordingGrantNotifier
    access: Access
    grants: GrantService
    vault: VaultPort | None = None

    def service(self, **kw: Any) -> GrantService:
        return GrantService(
            sessions=kw.pop("sessions", self.sessions),
            access=kw.pop("access", self.access),
            notifier=kw.pop("notifier", self.notifier),
            clock=kw.pop("clock", self.clock),
            kube_contexts=lambda: ["prod", "staging"],
            **kw,
        )

    def binding(self, grant_id: int, namespace: str = "payments") -> dict[str, Any] | None:
        return self.kube.get_object(RB_API, "RoleBinding", namespace, f"opsgate-grant-{grant_id}")

    def request(
        self,
        *,
        requester: str = "U0DEV1",
        namespace: str = "payments",
        status: Status = Status.EXECUTING,
    ) -> int:
        """A request row as the gate leaves it just before executing (a factory)."""
        now = self.clock()
        with self.sessions.begin() as session:
            request = Request(
                action="access",
                params={"namespace": namespace, "role": None, "duration_seconds": None},
                status=status.value,
                requester_id=requester,
                requester_kind="human",
                environment="prod",
                namespace=namespace,
                target=f"access to {namespace}",
                policy_sha256="0" * 64,
                min_approvals=1,
                approvers={"groups": ["sre"], "users": ["U0SRE1", "U0SRE2"]},
                preview={},
                created_at=now,
                updated_at=now,
            )
            session.add(request)
            session.flush()
            return request.id

    def grant(
        self,
        *,
        role: str | None = None,
        duration: int | None = None,
        namespace: str = "payments",
        requester: str = "U0DEV1",
        settings: dict[str, Any] | None = None,
        grants: GrantService | None = None,
    ) -> GrantView:
        """Preview, execute and activate an access grant, as the gate does after approval."""
        request_id = self.request(requester=requester, namespace=namespace)
        params = AccessParams(namespace=namespace, role=role, duration_seconds=duration)
        rule = {**SETTINGS, **(settings or {})}
        target = Target("prod", "prod", namespace, rule)
        preview = self.access.preview(params, target=target)
        target = Target("prod", "prod", namespace, {**rule, "request_id": request_id})
        outcome = self.access.execute(params, target=target, preview=preview)
        return (grants or self.grants).activate(request_id, outcome.facts, Actor("opsgate"))

    def audit(self, grant_id: int) -> list[AuditEvent]:
        with self.sessions() as session:
            return list(
                session.scalars(
                    select(AuditEvent)
                    .where(AuditEvent.request_id == grant_id)
                    .order_by(AuditEvent.id)
                )
            )

    def row(self, grant_id: int) -> Grant:
        with self.sessions() as session:
            grant = session.get(Grant, grant_id)
            assert grant is not None
            return grant

    def request_status(self, grant_id: int) -> str:
        with self.sessions() as session:
            request = session.get(Request, grant_id)
            assert request is not None
            return request.status


def binding_deletes(kube: FakeKubernetes, namespace: str, grant_id: int) -> int:
    """The DELETE requests aimed at grant ``grant_id``'s RoleBinding in ``namespace``: its own,
    or a ``deletecollection`` whose label selector names the grant's ID."""
    own = f"/namespaces/{namespace}/rolebindings/opsgate-grant-{grant_id}"
    collection = f"/namespaces/{namespace}/rolebindings"
    count = 0
    for request in kube.requests_matching(method="DELETE"):
        if request.path.endswith(own):
            count += 1
        elif request.path.endswith(collection):
            named = re.search(r"grant-id in \(([^)]*)\)", request.query.get("labelSelector", ""))
            count += bool(named and str(grant_id) in named.group(1).split(","))
    return count


def make_world(
    tmp_path: Path,
    database_url: str,
    kube: FakeKubernetes,
    *,
    vault: VaultPort | None = None,
    clock: Clock | None = None,
) -> GrantWorld:
    migrate(database_url)
    engine = make_engine(database_url)
    sessions = make_sessionmaker(engine)
    seed_cluster_roles(kube)
    kubeconfig = write_kubeconfig(tmp_path / "kc-grants", {"prod": kube, "staging": kube})
    backend = KubernetesBackend(kubeconfig=str(kubeconfig), request_timeout=5)
    clock = clock or Clock()
    notifier = RecordingGrantNotifier()
    access = Access(kube=backend, vault=vault, clock=clock)
    grants = GrantService(
        sessions=sessions,
        access=access,
        notifier=notifier,
        clock=clock,
        kube_contexts=lambda: ["prod", "staging"],
    )
    return GrantWorld(
        database_url, engine, sessions, kube, backend, clock, notifier, access, grants, vault
    )
