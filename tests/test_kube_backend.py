"""The Kubernetes adapter against the fake API server: answers, errors at the boundary, kubectl."""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from actions import errors
from actions.backends.kubernetes import KubernetesBackend
from actions.base import Target
from actions.restart import RESTARTED_AT, Restart, RestartParams
from actions.workloads import WorkloadKind
from tests.fakes.kube import (
    FakeKubernetes,
    cluster_role,
    daemonset,
    deployment,
    horizontal_pod_autoscaler,
    role_binding,
    statefulset,
    write_kubeconfig,
)

KUBECTL = shutil.which("kubectl")
NOW = datetime(2026, 11, 21, 3, 4, 5, tzinfo=UTC)


@pytest.fixture
def kubeconfig(tmp_path: Path, kube: FakeKubernetes) -> Path:
    return write_kubeconfig(tmp_path / "kubeconfig", {"prod": kube})


@pytest.fixture
def backend(kubeconfig: Path) -> Iterator[KubernetesBackend]:
    backend = KubernetesBackend(kubeconfig=str(kubeconfig), request_timeout=1.0)
    yield backend
    backend.close()


def test_get_and_patch_return_the_servers_json(
    backend: KubernetesBackend, kube: FakeKubernetes
) -> None:
    obj = backend.get_workload("prod", "Deployment", "payments", "payments-api")
    assert obj["kind"] == "Deployment"
    assert obj["spec"]["replicas"] == 3
    generation = obj["metadata"]["generation"]
    patched = backend.patch_workload(
        "prod",
        "Deployment",
        "payments",
        "payments-api",
        {"spec": {"template": {"metadata": {"annotations": {"a": "b"}}}}},
    )
    assert patched["metadata"]["generation"] == generation + 1
    assert patched["spec"]["template"]["metadata"]["annotations"] == {"a": "b"}
    # the strategic merge kept the containers
    assert patched["spec"]["template"]["spec"]["containers"][0]["image"] == "payments:1.4.2"


def test_dry_run_changes_nothing(backend: KubernetesBackend, kube: FakeKubernetes) -> None:
    before = kube.get_object("apps/v1", "Deployment", "payments", "payments-api")
    backend.patch_workload(
        "prod", "Deployment", "payments", "payments-api", {"spec": {"replicas": 9}}, dry_run=True
    )
    assert kube.get_object("apps/v1", "Deployment", "payments", "payments-api") == before
    [patch] = kube.requests_matching(method="PATCH")
    assert patch.query.get("dryRun") in ("All", ["All"])


@pytest.mark.parametrize(
    ("status", "error"),
    [
        (403, errors.Forbidden),
        (409, errors.Conflict),
        (422, errors.Invalid),
        (500, errors.TemporaryError),
        (503, errors.TemporaryError),
    ],
)
def test_api_errors_become_opsgate_errors_with_the_servers_message(
    backend: KubernetesBackend, kube: FakeKubernetes, status: int, error: type[Exception]
) -> None:
    kube.fail_next(status=status, method="GET", message=f"the server says {status}")
    with pytest.raises(error) as caught:
        backend.get_workload("prod", "Deployment", "payments", "payments-api")
    assert type(caught.value).__module__ == "actions.errors"
    assert f"the server says {status}" in str(caught.value)
    assert f"Kubernetes answered {status}" in str(caught.value)
    assert type(caught.value.__cause__).__module__.startswith("kubernetes")


def test_not_found(backend: KubernetesBackend) -> None:
    with pytest.raises(errors.NotFound, match=r'deployments\.apps "ghost" not found'):
        backend.get_workload("prod", "Deployment", "payments", "ghost")


def test_timeout_and_refused_connection_are_temporary_errors(
    backend: KubernetesBackend, kube: FakeKubernetes
) -> None:
    kube.hang_next(3, method="GET")
    with pytest.raises(errors.TemporaryError, match="timed out") as caught:
        backend.get_workload("prod", "Deployment", "payments", "payments-api")
    assert type(caught.value.__cause__).__module__.startswith("urllib3")
    kube.stop()
    with pytest.raises(errors.TemporaryError, match="connection refused"):
        backend.get_workload("prod", "Deployment", "payments", "payments-api")


def test_a_context_missing_from_the_kubeconfig_is_a_permanent_error(
    backend: KubernetesBackend,
) -> None:
    with pytest.raises(errors.PermanentError, match="context 'moon'"):
        backend.get_workload("moon", "Deployment", "payments", "payments-api")


@pytest.mark.parametrize(
    ("make", "kind"),
    [
        (statefulset, WorkloadKind.STATEFULSET),
        (daemonset, WorkloadKind.DAEMONSET),
        (deployment, WorkloadKind.DEPLOYMENT),
    ],
)
def test_restart_finds_each_workload_kind_by_name(
    backend: KubernetesBackend, kube: FakeKubernetes, make: object, kind: WorkloadKind
) -> None:
    kube.add(make("ledger", "payments"))  # type: ignore[operator]
    restart = Restart(kube=backend, clock=lambda: NOW)
    params = RestartParams(name="ledger", namespace="payments")
    target = Target(environment="prod", kube_context="prod", namespace="payments")
    preview = restart.preview(params, target=target)
    assert preview.facts["kind"] == kind
    assert preview.target == f"{kind.lower()}/ledger"
    restart.execute(params, target=target, preview=preview)
    obj = kube.get_object("apps/v1", kind, "payments", "ledger")
    assert obj is not None
    assert (
        obj["spec"]["template"]["metadata"]["annotations"][RESTARTED_AT] == "2026-11-21T03:04:05Z"
    )


def test_restart_refuses_a_paused_deployment_and_an_ambiguous_name(
    backend: KubernetesBackend, kube: FakeKubernetes
) -> None:
    paused = deployment("frozen", "payments")
    paused["spec"]["paused"] = True
    kube.add(paused)
    restart = Restart(kube=backend, clock=lambda: NOW)
    target = Target(environment="prod", kube_context="prod", namespace="payments")
    with pytest.raises(errors.Invalid, match="paused"):
        restart.preview(RestartParams(name="frozen", namespace="payments"), target=target)
    kube.add(statefulset("payments-api", "payments"))
    with pytest.raises(errors.Invalid, match="several workloads"):
        restart.preview(RestartParams(name="payments-api", namespace="payments"), target=target)


@pytest.mark.kubectl
def test_the_bot_restarts_exactly_as_kubectl_rollout_restart_does(
    backend: KubernetesBackend, kube: FakeKubernetes, kubeconfig: Path, tmp_path: Path
) -> None:
    kube.add(deployment("twin", "payments", replicas=3, image="payments:1.4.2"))
    assert KUBECTL is not None
    result = subprocess.run(
        [
            KUBECTL,
            "--kubeconfig",
            str(kubeconfig),
            "--context",
            "prod",
            "-n",
            "payments",
            "rollout",
            "restart",
            "deployment/twin",
        ],
        env={"HOME": str(tmp_path), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "restarted" in result.stdout
    [by_kubectl] = kube.requests_matching(method="PATCH")
    kube.clear_requests()

    restart = Restart(kube=backend, clock=lambda: NOW)
    params = RestartParams(name="payments-api", kind=WorkloadKind.DEPLOYMENT, namespace="payments")
    target = Target(environment="prod", kube_context="prod", namespace="payments")
    restart.execute(params, target=target, preview=restart.preview(params, target=target))
    [dry_run, by_bot] = kube.requests_matching(method="PATCH")
    # the preview validated the very patch execute sent, as a server-side dry run
    assert dry_run.query.get("dryRun") in ("All", ["All"])
    assert "dryRun" not in by_bot.query
    assert dry_run.body == by_bot.body

    assert (
        by_bot.content_type == by_kubectl.content_type == "application/strategic-merge-patch+json"
    )

    def shape(body: object) -> object:
        """The patch with the timestamp blanked out: the same path, the same format."""
        text = json.dumps(body)
        stamp = body["spec"]["template"]["metadata"]["annotations"][RESTARTED_AT]  # type: ignore[index]
        datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%S%z")  # RFC 3339
        return json.loads(text.replace(stamp, "<RFC 3339>"))

    assert shape(by_bot.body) == shape(by_kubectl.body)
    twin = kube.get_object("apps/v1", "Deployment", "payments", "twin")
    mine = kube.get_object("apps/v1", "Deployment", "payments", "payments-api")
    assert twin is not None
    assert mine is not None
    assert twin["spec"]["template"]["metadata"]["annotations"].keys() == {RESTARTED_AT}
    assert mine["spec"]["template"]["metadata"]["annotations"].keys() == {RESTARTED_AT}


# --------------------------------------------------------------------------- RBAC (access grants)

GRANT = {"opsgate.io/grant": "7"}


def test_get_cluster_role(backend: KubernetesBackend, kube: FakeKubernetes) -> None:
    kube.add(cluster_role("view"))
    role = backend.get_cluster_role("prod", "view")
    assert role["kind"] == "ClusterRole"
    assert role["rules"][0]["resources"] == ["pods"]
    with pytest.raises(errors.NotFound, match=r'clusterroles\.rbac\.authorization\.k8s\.io "nope"'):
        backend.get_cluster_role("prod", "nope")


def test_apply_role_binding_creates_then_replaces(
    backend: KubernetesBackend, kube: FakeKubernetes
) -> None:
    body = role_binding(
        "opsgate-7", "payments", cluster_role_name="view", user="alice@example.com", labels=GRANT
    )
    created = backend.apply_role_binding("prod", "payments", body)
    assert created["metadata"]["uid"]
    assert created["subjects"][0]["name"] == "alice@example.com"
    # same name and roleRef: replaced in place (same uid), new subjects
    body["subjects"][0]["name"] = "bob@example.com"
    replaced = backend.apply_role_binding("prod", "payments", body)
    assert replaced["metadata"]["uid"] == created["metadata"]["uid"]
    stored = kube.get_object("rbac.authorization.k8s.io/v1", "RoleBinding", "payments", "opsgate-7")
    assert stored is not None
    assert stored["subjects"][0]["name"] == "bob@example.com"
    # another roleRef cannot be updated (the API server refuses): deleted and created again
    body["roleRef"]["name"] = "edit"
    recreated = backend.apply_role_binding("prod", "payments", body)
    assert recreated["roleRef"]["name"] == "edit"
    assert recreated["metadata"]["uid"] != created["metadata"]["uid"]


def test_the_fake_refuses_a_changed_role_ref_like_the_api_server(
    backend: KubernetesBackend, kube: FakeKubernetes
) -> None:
    kube.add(role_binding("rb", "payments", cluster_role_name="view", user="a"))
    patch = {"roleRef": {"name": "edit"}}
    with (
        pytest.raises(errors.Invalid, match="cannot change roleRef"),
        backend._translated("patching rolebinding/rb", "prod"),
    ):
        backend._raw_call(
            backend._rbac("prod").patch_namespaced_role_binding, "rb", "payments", patch
        )


def test_delete_role_binding_is_idempotent(
    backend: KubernetesBackend, kube: FakeKubernetes
) -> None:
    kube.add(role_binding("rb", "payments", cluster_role_name="view", user="a"))
    assert backend.delete_role_binding("prod", "payments", "rb") is True
    assert kube.get_object("rbac.authorization.k8s.io/v1", "RoleBinding", "payments", "rb") is None
    assert backend.delete_role_binding("prod", "payments", "rb") is False


def test_list_role_bindings_by_label_in_one_or_all_namespaces(
    backend: KubernetesBackend, kube: FakeKubernetes
) -> None:
    kube.add(role_binding("g1", "payments", cluster_role_name="view", user="a", labels=GRANT))
    kube.add(role_binding("g2", "checkout", cluster_role_name="edit", user="b", labels=GRANT))
    kube.add(role_binding("other", "payments", cluster_role_name="view", user="c"))
    everywhere = backend.list_role_bindings("prod", None, "opsgate.io/grant=7")
    assert sorted(rb["metadata"]["name"] for rb in everywhere) == ["g1", "g2"]
    here = backend.list_role_bindings("prod", "payments", "opsgate.io/grant")
    assert [rb["metadata"]["name"] for rb in here] == ["g1"]
    assert backend.list_role_bindings("prod", "payments", "opsgate.io/grant=8") == []


# ----------------------------------------------------------------------- scale, lists, JSON patch


def test_scale_subresource_read_patch_and_dry_run(
    backend: KubernetesBackend, kube: FakeKubernetes
) -> None:
    scale = backend.get_scale("prod", "Deployment", "payments", "payments-api")
    assert (scale["kind"], scale["spec"]["replicas"]) == ("Scale", 3)
    assert scale["status"]["selector"] == "app=payments-api"
    dry = backend.patch_scale("prod", "Deployment", "payments", "payments-api", 7, dry_run=True)
    assert dry["spec"]["replicas"] == 7
    stored = kube.get_object("apps/v1", "Deployment", "payments", "payments-api")
    assert stored is not None
    assert stored["spec"]["replicas"] == 3
    backend.patch_scale("prod", "Deployment", "payments", "payments-api", 7)
    stored = kube.get_object("apps/v1", "Deployment", "payments", "payments-api")
    assert stored is not None
    assert stored["spec"]["replicas"] == 7
    patches = kube.requests_matching(method="PATCH", path_contains="/scale")
    assert [p.query.get("dryRun") for p in patches] == ["All", None]
    assert {p.content_type for p in patches} == {"application/merge-patch+json"}
    with pytest.raises(errors.Invalid, match="must be greater than or equal to 0"):
        backend.patch_scale("prod", "Deployment", "payments", "payments-api", -1)
    with pytest.raises(errors.Invalid, match="DaemonSet has no scale subresource"):
        backend.get_scale("prod", "DaemonSet", "payments", "payments-api")


def test_list_replica_sets_and_autoscalers(
    backend: KubernetesBackend, kube: FakeKubernetes
) -> None:
    [rs] = backend.list_replica_sets("prod", "payments", "app=payments-api")
    assert rs["metadata"]["annotations"]["deployment.kubernetes.io/revision"] == "1"
    assert backend.list_replica_sets("prod", "payments", "app=nothing") == []
    kube.add(horizontal_pod_autoscaler("payments-api", "payments", min_replicas=2))
    [hpa] = backend.list_horizontal_pod_autoscalers("prod", "payments")
    assert hpa["spec"]["minReplicas"] == 2
    assert backend.list_horizontal_pod_autoscalers("prod", "checkout") == []


def test_json_patch_workload(backend: KubernetesBackend, kube: FakeKubernetes) -> None:
    operations = [{"op": "replace", "path": "/spec/paused", "value": True}]
    with pytest.raises(errors.Invalid):  # no such path to replace: the server refuses (422)
        backend.json_patch_workload("prod", "Deployment", "payments", "payments-api", operations)
    operations[0]["op"] = "add"
    patched = backend.json_patch_workload(
        "prod", "Deployment", "payments", "payments-api", operations
    )
    assert patched["spec"]["paused"] is True
    [request] = [r for r in kube.requests_matching(method="PATCH") if r.body == operations]
    assert request.content_type == "application/json-patch+json"
