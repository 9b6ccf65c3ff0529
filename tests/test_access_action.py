"""The ``access`` request kind against the fake Kubernetes API and a real OpenBao."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from actions.access import (
    EXPIRES_AT_ANNOTATION,
    GRANT_ID_ANNOTATION,
    GRANT_ID_LABEL,
    MANAGED_BY_LABEL,
    NO_KUBERNETES_IDENTITY,
    Access,
    AccessParams,
)
from actions.backends.kubernetes import KubernetesBackend
from actions.backends.vault import VaultBackend
from actions.base import Target
from actions.durations import format_duration
from actions.errors import Invalid, NotFound
from tests.fakes.kube import FakeKubernetes, write_kubeconfig
from tests.fakes.openbao import OpenBao
from tests.helpers.clock import Clock
from tests.helpers.grants import RB_API, SETTINGS, seed_cluster_roles

pytest_plugins = ["tests.helpers.vault"]

T0 = datetime(2026, 11, 21, 3, 0, tzinfo=UTC)


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def backend(tmp_path: Path, kube: FakeKubernetes) -> Iterator[KubernetesBackend]:
    seed_cluster_roles(kube)
    kubeconfig = write_kubeconfig(tmp_path / "kc", {"prod": kube})
    client = KubernetesBackend(kubeconfig=str(kubeconfig), request_timeout=5)
    yield client
    client.close()


@pytest.fixture
def vault(openbao: OpenBao) -> Iterator[VaultBackend]:
    client = VaultBackend(url=openbao.url, token=openbao.root_token)
    yield client
    client.close()


@pytest.fixture
def vault_names(openbao: OpenBao) -> dict[str, str]:
    """A fresh entity and internal group (with a policy) in the shared OpenBao."""
    client = openbao.client()
    entity, group = unique("alice"), unique("prod-edit")
    entity_id = client.secrets.identity.create_or_update_entity_by_name(name=entity)["data"]["id"]
    client.secrets.identity.create_or_update_group_by_name(
        name=group, group_type="internal", policies=["prod-edit"]
    )
    return {"entity": entity, "entity_id": entity_id, "group": group}


def target(settings: dict[str, Any], **extra: Any) -> Target:
    return Target("prod", "prod", "payments", {**settings, **extra})


def test_preview_takes_the_rules_defaults(backend: KubernetesBackend) -> None:
    access = Access(kube=backend, vault=None, clock=Clock(T0))
    preview = access.preview(AccessParams(namespace="payments"), target=target(SETTINGS))
    assert preview.facts["role"] == "view"  # the first of the rule's roles
    assert preview.facts["duration_seconds"] == 3600
    assert preview.facts["max_duration_seconds"] == 4 * 3600
    assert preview.facts["vault_group"] is None
    assert preview.lines == (
        "Access for Kubernetes user *alice@example.com*",
        "Role *view* (ClusterRole view) in namespace *payments* (environment prod)",
        "Duration 1h (at most 4h)",
        "Starts when approved; revoked automatically when it ends",
    )
    # no default_duration: an hour, but never more than max_duration
    rule = {**SETTINGS, "default_duration": None, "max_duration": 1800}
    assert (
        access.preview(AccessParams(namespace="payments"), target=target(rule)).facts[
            "duration_seconds"
        ]
        == 1800
    )


@pytest.mark.parametrize(
    ("params", "settings", "error", "message"),
    [
        (AccessParams(namespace="payments"), {"identity": None}, Invalid, NO_KUBERNETES_IDENTITY),
        (
            AccessParams(namespace="payments"),
            {"identity": {"kubernetes_user": None, "vault_entity": "alice"}},
            Invalid,
            NO_KUBERNETES_IDENTITY,
        ),
        (
            AccessParams(namespace="payments", role="admin"),
            {},
            Invalid,
            "role 'admin' is not allowed here; allowed: view, edit",
        ),
        (
            AccessParams(namespace="payments", duration_seconds=5 * 3600),
            {},
            Invalid,
            "5h is longer than this rule allows (at most 4h)",
        ),
        (
            AccessParams(namespace="payments", role="cluster-admin"),
            {"roles": None},
            NotFound,
            "there is no ClusterRole 'cluster-admin'",
        ),
        (
            AccessParams(namespace="payments", role="edit"),
            {
                "vault_groups": {"edit": "prod-edit"},
                "identity": {"kubernetes_user": "alice@example.com", "vault_entity": None},
            },
            Invalid,
            "you have no Vault entity",
        ),
        (
            AccessParams(namespace="payments", role="edit"),
            {"vault_groups": {"edit": "prod-edit"}},
            Invalid,
            "Vault is not configured",
        ),
    ],
)
def test_preview_refuses(
    backend: KubernetesBackend,
    params: AccessParams,
    settings: dict[str, Any],
    error: type[Exception],
    message: str,
) -> None:
    access = Access(kube=backend, vault=None, clock=Clock(T0))
    with pytest.raises(error) as info:
        access.preview(params, target=target({**SETTINGS, **settings}))
    assert message in str(info.value)


def test_preview_needs_the_vault_entity_to_exist(
    backend: KubernetesBackend, vault: VaultBackend, vault_names: dict[str, str]
) -> None:
    access = Access(kube=backend, vault=vault, clock=Clock(T0))
    rule = {
        **SETTINGS,
        "vault_groups": {"edit": vault_names["group"]},
        "identity": {"kubernetes_user": "alice@example.com", "vault_entity": "nobody-at-all"},
    }
    with pytest.raises(NotFound, match="no Vault identity entity named 'nobody-at-all'"):
        access.preview(AccessParams(namespace="payments", role="edit"), target=target(rule))


def test_execute_binds_and_joins_then_revoke_removes_both_idempotently(
    backend: KubernetesBackend,
    kube: FakeKubernetes,
    vault: VaultBackend,
    vault_names: dict[str, str],
) -> None:
    clock = Clock(T0)
    access = Access(kube=backend, vault=vault, clock=clock)
    rule = {
        **SETTINGS,
        "vault_groups": {"edit": vault_names["group"]},
        "identity": {"kubernetes_user": "alice@example.com", "vault_entity": vault_names["entity"]},
    }
    params = AccessParams(namespace="payments", role="edit", duration_seconds=5400)
    preview = access.preview(params, target=target(rule))
    assert preview.facts["vault_entity_id"] == vault_names["entity_id"]
    assert preview.lines[-1] == (
        f"Vault: entity *{vault_names['entity']}* joins group *{vault_names['group']}*"
    )
    clock.now = T0 + timedelta(minutes=20)  # approved later: the clock starts now

    outcome = access.execute(params, target=target(rule, request_id=42), preview=preview)

    grant = outcome.facts["grant"]
    assert grant["role_binding"] == "opsgate-grant-42"
    assert grant["started_at"] == "2026-11-21T03:20:00Z"
    assert grant["expires_at"] == "2026-11-21T04:50:00Z"
    binding = kube.get_object(RB_API, "RoleBinding", "payments", "opsgate-grant-42")
    assert binding is not None
    assert binding["metadata"]["labels"] == {MANAGED_BY_LABEL: "opsgate", GRANT_ID_LABEL: "42"}
    assert binding["metadata"]["annotations"][GRANT_ID_ANNOTATION] == "42"
    assert binding["metadata"]["annotations"][EXPIRES_AT_ANNOTATION] == "2026-11-21T04:50:00Z"
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "ClusterRole",
        "name": "edit",
    }
    assert binding["subjects"] == [
        {"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "alice@example.com"}
    ]
    assert vault.group_member_ids(vault_names["group"]) == [vault_names["entity_id"]]

    facts = {
        k: grant[k]
        for k in ("kube_context", "namespace", "role_binding", "vault_group", "vault_entity_id")
    }
    assert access.revoke(**facts) == {"role_binding_deleted": True, "vault_member_removed": True}
    assert kube.get_object(RB_API, "RoleBinding", "payments", "opsgate-grant-42") is None
    assert vault.group_member_ids(vault_names["group"]) == []
    assert access.revoke(**facts) == {"role_binding_deleted": False, "vault_member_removed": False}


def test_a_failed_vault_step_leaves_no_role_binding(
    backend: KubernetesBackend,
    kube: FakeKubernetes,
    vault: VaultBackend,
    vault_names: dict[str, str],
    openbao: OpenBao,
) -> None:
    access = Access(kube=backend, vault=vault, clock=Clock(T0))
    rule = {
        **SETTINGS,
        "vault_groups": {"edit": vault_names["group"]},
        "identity": {"kubernetes_user": "alice@example.com", "vault_entity": vault_names["entity"]},
    }
    params = AccessParams(namespace="payments", role="edit")
    preview = access.preview(params, target=target(rule))
    openbao.client().secrets.identity.delete_group_by_name(name=vault_names["group"])
    with pytest.raises(NotFound):
        access.execute(params, target=target(rule, request_id=43), preview=preview)
    assert kube.get_object(RB_API, "RoleBinding", "payments", "opsgate-grant-43") is None


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(30, "30s"), (60, "1m"), (5400, "1h30m"), (7200, "2h"), (3661, "1h1m"), (0, "0s")],
)
def test_format_duration(seconds: int, text: str) -> None:
    assert format_duration(seconds, exact=False) == text
