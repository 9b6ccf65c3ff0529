"""Writes that get no answer (issue 10 item 5): the adapter says the change may have taken
effect, and restart, scale, rollback and access read the object back to decide whether it did.

The real ``kubernetes`` client against the fake API server over HTTP, with a 1 s request timeout;
``answer_late_next`` stores a PATCH at once and answers after 3 s (or never, or without storing).
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from actions import errors
from actions.access import Access, AccessParams
from actions.backends.kubernetes import KubernetesBackend
from actions.base import Preview, Target
from actions.registry import build_registry
from actions.restart import RESTARTED_AT, RestartParams
from actions.rollback import RollbackParams
from actions.scale import ScaleParams
from tests.fakes.kube import (
    FakeKubernetes,
    cluster_role,
    deployment,
    write_kubeconfig,
)
from tests.helpers.clock import Clock

NS = "payments"
START = datetime(2026, 11, 21, 3, 4, 5, tzinfo=UTC)
RESTARTED = "2026-11-21T03:04:05Z"
LATE = 3.0  # seconds the fake waits before answering; the client gives up after 1
DEPLOYMENT = "/deployments/payments-api"


@pytest.fixture
def cluster() -> Iterator[FakeKubernetes]:
    with FakeKubernetes() as fake:
        fake.add(deployment("payments-api", NS, replicas=3, image="payments:1.4.2"))
        fake.add(cluster_role("view"))
        yield fake


@pytest.fixture
def backend(tmp_path: Path, cluster: FakeKubernetes) -> Iterator[KubernetesBackend]:
    kubeconfig = write_kubeconfig(tmp_path / "kubeconfig", {"prod": cluster})
    backend = KubernetesBackend(kubeconfig=str(kubeconfig), request_timeout=1.0)
    yield backend
    backend.close()


@pytest.fixture
def kinds(backend: KubernetesBackend) -> dict[str, Any]:
    time_ = Clock(START)
    return dict(
        build_registry(
            kube=backend,
            clock=time_,
            rollout_timeout=60,
            sleep=time_.sleep,
            poll_interval=2.0,
        )
    )


def target(**settings: Any) -> Target:
    return Target(environment="prod", kube_context="prod", namespace=NS, settings=settings)


def stored(cluster: FakeKubernetes) -> dict[str, Any]:
    obj = cluster.get_object("apps/v1", "Deployment", NS, "payments-api")
    assert obj is not None
    return obj


def restarted_at(cluster: FakeKubernetes) -> str | None:
    template = stored(cluster)["spec"]["template"]
    value = (template.get("metadata") or {}).get("annotations", {}).get(RESTARTED_AT)
    return str(value) if value is not None else None


def writes(cluster: FakeKubernetes, path: str = DEPLOYMENT) -> list[Any]:
    """The PATCHes of ``path`` that were not server-side dry runs."""
    return [r for r in cluster.requests_matching("PATCH", path) if "dryRun" not in r.query]


def fail_reads(cluster: FakeKubernetes, path: str = DEPLOYMENT) -> Any:
    """A ``then`` for ``answer_late_next``: every read of ``path`` fails from now on."""
    return lambda: cluster.fail_next(100, status=503, method="GET", path_contains=path)


# --------------------------------------------------------------------------- the adapter


def test_a_write_sent_without_an_answer_may_have_been_applied(
    backend: KubernetesBackend, cluster: FakeKubernetes
) -> None:
    patch = {"spec": {"template": {"metadata": {"annotations": {RESTARTED_AT: RESTARTED}}}}}
    cluster.answer_late_next(LATE, method="PATCH")
    with pytest.raises(errors.MaybeApplied) as late:
        backend.patch_workload("prod", "Deployment", NS, "payments-api", patch)
    assert "timed out waiting for an answer" in str(late.value)
    assert "may have taken effect: check before retrying" in str(late.value)
    assert restarted_at(cluster) == RESTARTED  # it did

    cluster.answer_late_next(0.1, method="PATCH", drop=True)
    with pytest.raises(errors.MaybeApplied) as dropped:
        backend.patch_scale("prod", "Deployment", NS, "payments-api", 5)
    assert "the connection dropped before an answer" in str(dropped.value)
    assert stored(cluster)["spec"]["replicas"] == 5

    cluster.fail_next(status=504, method="PATCH", reason="Timeout", message="Timeout: too slow")
    with pytest.raises(errors.MaybeApplied, match="Kubernetes answered 504"):
        backend.json_patch_workload(
            "prod", "Deployment", NS, "payments-api", [{"op": "test", "path": "/kind"}]
        )


def test_a_dry_run_or_a_read_that_times_out_is_only_temporary(
    backend: KubernetesBackend, cluster: FakeKubernetes
) -> None:
    cluster.answer_late_next(LATE, method="PATCH")
    with pytest.raises(errors.TemporaryError) as dry:
        backend.patch_scale("prod", "Deployment", NS, "payments-api", 5, dry_run=True)
    assert not isinstance(dry.value, errors.MaybeApplied)
    cluster.answer_late_next(LATE, method="GET")
    with pytest.raises(errors.TemporaryError) as read:
        backend.get_workload("prod", "Deployment", NS, "payments-api")
    assert not isinstance(read.value, errors.MaybeApplied)


def test_a_write_to_a_server_that_refuses_connections_was_not_sent(tmp_path: Path) -> None:
    fake = FakeKubernetes().start()
    kubeconfig = write_kubeconfig(tmp_path / "gone", {"prod": fake})
    fake.stop()  # its port now refuses connections
    backend = KubernetesBackend(kubeconfig=str(kubeconfig), request_timeout=1.0)
    try:
        with pytest.raises(errors.TemporaryError) as refused:
            backend.patch_scale("prod", "Deployment", NS, "payments-api", 5)
    finally:
        backend.close()
    assert not isinstance(refused.value, errors.MaybeApplied)
    assert "connection refused or unreachable" in str(refused.value)


# --------------------------------------------------------------------------- restart


def restart_preview(
    kinds: dict[str, Any], cluster: FakeKubernetes
) -> tuple[Any, RestartParams, Preview]:
    params = RestartParams(name="payments-api", namespace=NS)
    preview = kinds["restart"].preview(params, target=target())
    cluster.clear_requests()
    return kinds["restart"], params, preview


@pytest.mark.parametrize("drop", [False, True], ids=["answered-late", "connection-dropped"])
def test_a_restart_answered_late_succeeds_once(
    kinds: dict[str, Any], cluster: FakeKubernetes, drop: bool
) -> None:
    restart, params, preview = restart_preview(kinds, cluster)
    cluster.answer_late_next(LATE, method="PATCH", path_contains=DEPLOYMENT, drop=drop)
    outcome = restart.follow(restart.execute(params, target=target(), preview=preview))
    assert restarted_at(cluster) == RESTARTED
    assert len(writes(cluster)) == 1  # read back, never sent again
    assert outcome.summary.startswith(
        f"restarted deployment/payments-api in payments (restartedAt {RESTARTED}) "
        "(the API server did not answer in time; read back, the change is there); rolled out"
    )
    assert outcome.facts["restartedAt"] == RESTARTED
    assert outcome.facts["rollout"]["done"] is True


def test_a_restart_the_server_did_not_apply_fails_safe_to_retry(
    kinds: dict[str, Any], cluster: FakeKubernetes
) -> None:
    restart, params, preview = restart_preview(kinds, cluster)
    cluster.answer_late_next(LATE, method="PATCH", path_contains=DEPLOYMENT, apply=False)
    with pytest.raises(errors.TemporaryError) as failed:
        restart.execute(params, target=target(), preview=preview)
    assert restarted_at(cluster) is None
    assert len(writes(cluster)) == 1
    message = str(failed.value)
    assert "did not answer while patching deployment/payments-api in payments" in message
    assert "Read back, deployment/payments-api in payments does not have the restart" in message
    assert "restartedAt never" in message
    assert message.endswith("nothing was changed; it is safe to ask again")


def test_a_restart_whose_read_back_fails_too_is_unknown(
    kinds: dict[str, Any], cluster: FakeKubernetes
) -> None:
    restart, params, preview = restart_preview(kinds, cluster)
    cluster.answer_late_next(
        LATE, method="PATCH", path_contains=DEPLOYMENT, then=fail_reads(cluster)
    )
    with pytest.raises(errors.OutcomeUnknown) as unknown:
        restart.execute(params, target=target(), preview=preview)
    message = str(unknown.value)
    assert "did not answer while patching deployment/payments-api" in message
    assert "reading deployment/payments-api in payments back failed too" in message
    assert "Kubernetes answered 503" in message
    assert message.endswith(
        f"the restart (restartedAt {RESTARTED}) may have taken effect; check before retrying"
    )
    assert "Kubernetes answered 503" in unknown.value.facts["read_back_error"]
    assert len(cluster.requests_matching("GET", DEPLOYMENT)) == 2  # read again once after a pause
    assert len(writes(cluster)) == 1


def test_a_restart_overtaken_by_another_change_is_unknown(
    kinds: dict[str, Any], cluster: FakeKubernetes
) -> None:
    restart, params, preview = restart_preview(kinds, cluster)

    def someone_else_restarts() -> None:
        obj = stored(cluster)
        obj["spec"]["template"].setdefault("metadata", {})["annotations"] = {
            RESTARTED_AT: "2026-11-21T03:04:07Z"
        }
        cluster.add(obj)

    cluster.answer_late_next(
        LATE, method="PATCH", path_contains=DEPLOYMENT, then=someone_else_restarts
    )
    with pytest.raises(errors.OutcomeUnknown) as unknown:
        restart.execute(params, target=target(), preview=preview)
    message = str(unknown.value)
    assert "is neither as before nor as asked" in message
    assert "restartedAt 2026-11-21T03:04:07Z" in message
    assert message.endswith("may have taken effect; check before retrying")
    current = unknown.value.facts["current"]
    assert current["restartedAt"] == "2026-11-21T03:04:07Z"
    assert current["generation"] > preview.facts["generation"]


# --------------------------------------------------------------------------- scale

SCALE = "/deployments/payments-api/scale"


def scale_preview(kinds: dict[str, Any], cluster: FakeKubernetes) -> tuple[Any, Any, Preview]:
    params = ScaleParams(name="payments-api", namespace=NS, replicas=5)
    preview = kinds["scale"].preview(params, target=target())
    cluster.clear_requests()
    return kinds["scale"], params, preview


@pytest.mark.parametrize("drop", [False, True], ids=["answered-late", "connection-dropped"])
def test_a_scale_answered_late_succeeds_once(
    kinds: dict[str, Any], cluster: FakeKubernetes, drop: bool
) -> None:
    scale, params, preview = scale_preview(kinds, cluster)
    cluster.answer_late_next(LATE, method="PATCH", path_contains=SCALE, drop=drop)
    outcome = scale.follow(scale.execute(params, target=target(), preview=preview))
    assert stored(cluster)["spec"]["replicas"] == 5
    assert len(writes(cluster, SCALE)) == 1
    assert outcome.summary.startswith(
        "scaled deployment/payments-api in payments from 3 to 5 (the API server did not answer "
        "in time; read back, the change is there); rolled out: 5/5 ready"
    )
    assert outcome.facts["replicas"] == 5


def test_a_scale_the_server_did_not_apply_fails_safe_to_retry(
    kinds: dict[str, Any], cluster: FakeKubernetes
) -> None:
    scale, params, preview = scale_preview(kinds, cluster)
    cluster.answer_late_next(LATE, method="PATCH", path_contains=SCALE, apply=False)
    with pytest.raises(errors.TemporaryError) as failed:
        scale.execute(params, target=target(), preview=preview)
    assert stored(cluster)["spec"]["replicas"] == 3
    message = str(failed.value)
    assert "did not answer while scaling deployment/payments-api in payments" in message
    assert "does not have the scale from 3 to 5 replicas (replicas 3, running 3)" in message
    assert message.endswith("nothing was changed; it is safe to ask again")


def test_a_scale_the_server_answered_504_to_is_read_back(
    kinds: dict[str, Any], cluster: FakeKubernetes
) -> None:
    scale, params, preview = scale_preview(kinds, cluster)
    cluster.fail_next(status=504, method="PATCH", path_contains=SCALE, reason="Timeout")
    with pytest.raises(errors.TemporaryError, match="Kubernetes answered 504") as failed:
        scale.execute(params, target=target(), preview=preview)
    assert "it is safe to ask again" in str(failed.value)
    assert len(cluster.requests_matching("GET", SCALE)) == 2  # before the PATCH, and read back


def test_a_scale_whose_read_back_fails_too_is_unknown(
    kinds: dict[str, Any], cluster: FakeKubernetes
) -> None:
    scale, params, preview = scale_preview(kinds, cluster)
    cluster.answer_late_next(LATE, method="PATCH", path_contains=SCALE, then=fail_reads(cluster))
    with pytest.raises(errors.OutcomeUnknown) as unknown:
        scale.execute(params, target=target(), preview=preview)
    message = str(unknown.value)
    assert "reading deployment/payments-api in payments back failed too" in message
    assert message.endswith(
        "the scale from 3 to 5 replicas may have taken effect; check before retrying"
    )


def test_a_scale_moved_elsewhere_meanwhile_is_unknown(
    kinds: dict[str, Any], cluster: FakeKubernetes
) -> None:
    scale, params, preview = scale_preview(kinds, cluster)

    def an_autoscaler_moves_it() -> None:
        obj = stored(cluster)
        obj["spec"]["replicas"] = 7
        cluster.add(obj)

    cluster.answer_late_next(LATE, method="PATCH", path_contains=SCALE, then=an_autoscaler_moves_it)
    with pytest.raises(errors.OutcomeUnknown) as unknown:
        scale.execute(params, target=target(), preview=preview)
    assert "is neither as before nor as asked (replicas 7" in str(unknown.value)
    assert unknown.value.facts["current"]["replicas"] == 7


# --------------------------------------------------------------------------- rollback


def rollback_preview(
    kinds: dict[str, Any], backend: KubernetesBackend, cluster: FakeKubernetes
) -> tuple[Any, Any, Preview]:
    """payments-api at revision 2 (payments:1.5.0), previewed back to revision 1."""
    patch = {
        "spec": {
            "template": {
                "spec": {"containers": [{"name": "payments-api", "image": "payments:1.5.0"}]}
            }
        }
    }
    backend.patch_workload("prod", "Deployment", NS, "payments-api", patch)
    backend.get_workload("prod", "Deployment", NS, "payments-api")  # the rollout completes
    params = RollbackParams(name="payments-api", namespace=NS)
    preview = kinds["rollback"].preview(params, target=target())
    assert preview.facts["target_revision"] == 1
    cluster.clear_requests()
    return kinds["rollback"], params, preview


def image(cluster: FakeKubernetes) -> str:
    return str(stored(cluster)["spec"]["template"]["spec"]["containers"][0]["image"])


@pytest.mark.parametrize("drop", [False, True], ids=["answered-late", "connection-dropped"])
def test_a_rollback_answered_late_succeeds_once(
    kinds: dict[str, Any], backend: KubernetesBackend, cluster: FakeKubernetes, drop: bool
) -> None:
    rollback, params, preview = rollback_preview(kinds, backend, cluster)
    cluster.answer_late_next(LATE, method="PATCH", path_contains=DEPLOYMENT, drop=drop)
    outcome = rollback.follow(rollback.execute(params, target=target(), preview=preview))
    assert image(cluster) == "payments:1.4.2"
    assert len(writes(cluster)) == 1
    assert outcome.summary.startswith(
        "rolled back deployment/payments-api in payments from revision 2 to revision 1 "
        "(payments:1.4.2) (the API server did not answer in time; read back, the change is "
        "there); rolled out"
    )


def test_a_rollback_the_server_did_not_apply_fails_safe_to_retry(
    kinds: dict[str, Any], backend: KubernetesBackend, cluster: FakeKubernetes
) -> None:
    rollback, params, preview = rollback_preview(kinds, backend, cluster)
    cluster.answer_late_next(LATE, method="PATCH", path_contains=DEPLOYMENT, apply=False)
    with pytest.raises(errors.TemporaryError) as failed:
        rollback.execute(params, target=target(), preview=preview)
    assert image(cluster) == "payments:1.5.0"
    message = str(failed.value)
    assert "does not have the rollback to revision 1 (revision 2, images payments:1.5.0" in message
    assert message.endswith("nothing was changed; it is safe to ask again")


def test_a_rollback_whose_read_back_fails_too_is_unknown(
    kinds: dict[str, Any], backend: KubernetesBackend, cluster: FakeKubernetes
) -> None:
    rollback, params, preview = rollback_preview(kinds, backend, cluster)
    cluster.answer_late_next(
        LATE, method="PATCH", path_contains=DEPLOYMENT, then=fail_reads(cluster)
    )
    with pytest.raises(errors.OutcomeUnknown) as unknown:
        rollback.execute(params, target=target(), preview=preview)
    assert str(unknown.value).endswith(
        "the rollback to revision 1 may have taken effect; check before retrying"
    )


def test_a_rollback_overtaken_by_another_rollout_is_unknown(
    kinds: dict[str, Any], backend: KubernetesBackend, cluster: FakeKubernetes
) -> None:
    rollback, params, preview = rollback_preview(kinds, backend, cluster)

    def someone_deploys() -> None:
        obj = stored(cluster)
        obj["spec"]["template"]["spec"]["containers"][0]["image"] = "payments:1.6.0"
        cluster.add(obj)

    cluster.answer_late_next(LATE, method="PATCH", path_contains=DEPLOYMENT, then=someone_deploys)
    with pytest.raises(errors.OutcomeUnknown) as unknown:
        rollback.execute(params, target=target(), preview=preview)
    assert "images payments:1.6.0" in str(unknown.value)
    assert unknown.value.facts["current"]["images"] == "payments:1.6.0"


# --------------------------------------------------------------------------- access

ROLE_BINDINGS = "/rolebindings"
ACCESS_SETTINGS: dict[str, Any] = {
    "roles": ["view"],
    "max_duration": 4 * 3600,
    "default_duration": 3600,
    "vault_groups": {},
    "extend": "approval",
    "identity": {"kubernetes_user": "alice@example.com", "vault_entity": None},
}


def access_preview(
    backend: KubernetesBackend, cluster: FakeKubernetes
) -> tuple[Access, AccessParams, Preview, Target]:
    access = Access(kube=backend, vault=None, clock=lambda: START)
    params = AccessParams(namespace=NS)
    preview = access.preview(params, target=target(**ACCESS_SETTINGS))
    cluster.clear_requests()
    return access, params, preview, target(**ACCESS_SETTINGS, request_id=42)


def binding(cluster: FakeKubernetes) -> Any:
    return cluster.get_object("rbac.authorization.k8s.io/v1", "RoleBinding", NS, "opsgate-grant-42")


def test_a_grant_answered_late_is_granted_once(
    backend: KubernetesBackend, cluster: FakeKubernetes
) -> None:
    access, params, preview, where = access_preview(backend, cluster)
    cluster.answer_late_next(LATE, method="POST", path_contains=ROLE_BINDINGS)
    outcome = access.execute(params, target=where, preview=preview)
    assert binding(cluster)["subjects"][0]["name"] == "alice@example.com"
    assert len(cluster.requests_matching("POST", ROLE_BINDINGS)) == 1
    assert outcome.summary.endswith(
        "(the API server did not answer in time; read back, the change is there)"
    )
    assert outcome.facts["grant"]["role_binding"] == "opsgate-grant-42"


def test_a_grant_the_server_did_not_create_fails_safe_to_retry(
    backend: KubernetesBackend, cluster: FakeKubernetes
) -> None:
    access, params, preview, where = access_preview(backend, cluster)
    cluster.answer_late_next(LATE, method="POST", path_contains=ROLE_BINDINGS, apply=False)
    with pytest.raises(errors.TemporaryError) as failed:
        access.execute(params, target=where, preview=preview)
    assert binding(cluster) is None
    message = str(failed.value)
    assert "did not answer while creating rolebinding/opsgate-grant-42 in payments" in message
    assert "(rolebinding absent): nothing was changed; it is safe to ask again" in message


def test_a_grant_whose_read_back_fails_too_is_unknown_and_left_to_the_drift_check(
    backend: KubernetesBackend, cluster: FakeKubernetes
) -> None:
    access, params, preview, where = access_preview(backend, cluster)
    cluster.answer_late_next(
        LATE, method="POST", path_contains=ROLE_BINDINGS, then=fail_reads(cluster, ROLE_BINDINGS)
    )
    with pytest.raises(errors.OutcomeUnknown) as unknown:
        access.execute(params, target=where, preview=preview)
    message = str(unknown.value)
    assert "the grant may have taken effect; check before retrying" in message
    assert message.endswith("the drift check removes this RoleBinding if it exists")
