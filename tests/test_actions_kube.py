"""restart, scale, rollback, history and rollout following, against the fake API server over
real HTTP through ``KubernetesBackend`` (and, where installed, side by side with kubectl)."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from actions import errors
from actions.backends.kubernetes import KubernetesBackend
from actions.base import Target
from actions.history import Revision, render_history, rollout_history
from actions.registry import build_registry
from actions.restart import RESTARTED_AT, Restart, RestartParams
from actions.rollback import Rollback, RollbackParams
from actions.rollout import RolloutResult, follow_rollout, rollout_status
from actions.scale import Scale, ScaleParams, check_limits
from actions.workloads import WorkloadKind
from tests.fakes.kube import (
    FakeKubernetes,
    daemonset,
    deployment,
    horizontal_pod_autoscaler,
    replicaset,
    statefulset,
    write_kubeconfig,
)
from tests.helpers.clock import Clock

KUBECTL = shutil.which("kubectl")
NS = "payments"
START = datetime(2026, 11, 21, 3, 4, 5, tzinfo=UTC)
REVISION = "deployment.kubernetes.io/revision"


@pytest.fixture
def cluster() -> Iterator[FakeKubernetes]:
    with FakeKubernetes() as fake:
        fake.add(deployment("payments-api", NS, replicas=3, image="payments:1.4.2"))
        yield fake


@pytest.fixture
def kubeconfig(tmp_path: Path, cluster: FakeKubernetes) -> Path:
    return write_kubeconfig(tmp_path / "kubeconfig", {"prod": cluster})


@pytest.fixture
def backend(kubeconfig: Path) -> Iterator[KubernetesBackend]:
    backend = KubernetesBackend(kubeconfig=str(kubeconfig), request_timeout=2.0)
    yield backend
    backend.close()


@pytest.fixture
def time_() -> Clock:
    return Clock(START)


def target(**settings: Any) -> Target:
    return Target(environment="prod", kube_context="prod", namespace=NS, settings=settings)


def kinds(backend: KubernetesBackend, time_: Clock, timeout: float = 60.0) -> dict[str, Any]:
    return dict(
        build_registry(
            kube=backend,
            clock=time_,
            rollout_timeout=timeout,
            sleep=time_.sleep,
            poll_interval=2.0,
        )
    )


def stored(cluster: FakeKubernetes, name: str = "payments-api", kind: str = "Deployment") -> Any:
    obj = cluster.get_object("apps/v1", kind, NS, name)
    assert obj is not None
    return obj


def roll_out_images(backend: KubernetesBackend, *images: str, causes: tuple[str, ...] = ()) -> None:
    """New revisions of payments-api, one per image, as `kubectl set image` makes them."""
    for index, image in enumerate(images):
        patch: dict[str, Any] = {
            "spec": {
                "template": {"spec": {"containers": [{"name": "payments-api", "image": image}]}}
            }
        }
        if index < len(causes) and causes[index]:
            patch["metadata"] = {"annotations": {"kubernetes.io/change-cause": causes[index]}}
        backend.patch_workload("prod", "Deployment", NS, "payments-api", patch)
        backend.get_workload("prod", "Deployment", NS, "payments-api")  # the rollout completes


# --------------------------------------------------------------------------- rollout status


def _deployment_json(**status: Any) -> dict[str, Any]:
    return {
        "kind": "Deployment",
        "metadata": {"name": "web", "generation": 2},
        "spec": {"replicas": 3},
        "status": {"observedGeneration": 2, **status},
    }


@pytest.mark.parametrize(
    ("status", "done", "message"),
    [
        ({"observedGeneration": 1}, False, "Waiting for deployment spec update to be observed..."),
        (
            {"updatedReplicas": 1, "replicas": 3},
            False,
            'Waiting for deployment "web" rollout to finish: 1 out of 3 new replicas have been '
            "updated...",
        ),
        (
            {"updatedReplicas": 3, "replicas": 4},
            False,
            'Waiting for deployment "web" rollout to finish: 1 old replicas are pending '
            "termination...",
        ),
        (
            {"updatedReplicas": 3, "replicas": 3, "availableReplicas": 2},
            False,
            'Waiting for deployment "web" rollout to finish: 2 of 3 updated replicas are '
            "available...",
        ),
        (
            {"updatedReplicas": 3, "replicas": 3, "availableReplicas": 3},
            True,
            'deployment "web" successfully rolled out',
        ),
    ],
)
def test_rollout_status_of_a_deployment_reads_as_kubectl(
    status: dict[str, Any], done: bool, message: str
) -> None:
    read = rollout_status(_deployment_json(**status))
    assert (read.done, read.message, read.reason) == (done, message, None)


def test_rollout_status_reports_an_exceeded_progress_deadline() -> None:
    condition = {
        "type": "Progressing",
        "status": "False",
        "reason": "ProgressDeadlineExceeded",
        "message": 'ReplicaSet "web-1" has timed out progressing.',
    }
    read = rollout_status(_deployment_json(updatedReplicas=3, conditions=[condition]))
    assert not read.done
    assert read.reason == "ProgressDeadlineExceeded"
    assert 'deployment "web" exceeded its progress deadline' in read.message


# --------------------------------------------------------------------------- follow_rollout


def follow(
    backend: KubernetesBackend,
    time_: Clock,
    *,
    timeout: float,
    kind: str = "Deployment",
    name: str = "payments-api",
    poll_interval: float = 2.0,
) -> RolloutResult:
    """``follow_rollout`` of ``kind``/``name`` in prod's namespace, on the injected time."""
    return follow_rollout(
        backend,
        "prod",
        kind,
        NS,
        name,
        timeout=timeout,
        clock=time_,
        sleep=time_.sleep,
        poll_interval=poll_interval,
    )


def test_follow_rollout_polls_until_complete(
    cluster: FakeKubernetes, backend: KubernetesBackend, time_: Clock
) -> None:
    cluster.controllers.steps = 3
    backend.patch_scale("prod", "Deployment", NS, "payments-api", 5)
    result = follow(backend, time_, timeout=60)
    assert result.done
    assert result.summary == "rolled out: 5/5 ready in 4 s"
    assert result.reason is None
    assert time_.sleeps == [2.0, 2.0]
    assert len(cluster.requests_matching("GET", "/deployments/payments-api")) == 3


def test_follow_rollout_stops_at_progress_deadline_exceeded(
    cluster: FakeKubernetes, backend: KubernetesBackend, time_: Clock
) -> None:
    cluster.stall(NS, "payments-api", after_reads=2)
    roll_patch = {"spec": {"template": {"metadata": {"annotations": {"x": "y"}}}}}
    backend.patch_workload("prod", "Deployment", NS, "payments-api", roll_patch)
    result = follow(backend, time_, timeout=600)
    assert not result.done
    assert result.reason == "ProgressDeadlineExceeded"
    assert result.summary.startswith("not progressing: ProgressDeadlineExceeded: ReplicaSet ")
    assert result.summary.endswith("has timed out progressing.")
    assert len(time_.sleeps) == 1


def test_follow_rollout_gives_up_at_the_timeout(
    cluster: FakeKubernetes, backend: KubernetesBackend, time_: Clock
) -> None:
    cluster.add(statefulset("ledger", NS, replicas=2))
    cluster.stall(NS, "ledger", kind="StatefulSet")
    backend.patch_scale("prod", "StatefulSet", NS, "ledger", 3)
    result = follow(backend, time_, timeout=10, kind="StatefulSet", name="ledger", poll_interval=4)
    assert not result.done
    assert result.reason == "Timeout"
    assert result.summary.startswith("not complete after 10 s: Waiting for ")
    assert time_.sleeps == [4, 4, 2]


def test_follow_rollout_ends_even_when_the_clock_stands_still(
    cluster: FakeKubernetes, backend: KubernetesBackend
) -> None:
    cluster.stall(NS, "payments-api", after_reads=1000)
    backend.patch_scale("prod", "Deployment", NS, "payments-api", 4)
    sleeps: list[float] = []
    result = follow_rollout(
        backend,
        "prod",
        "Deployment",
        NS,
        "payments-api",
        timeout=6,
        clock=lambda: START,
        sleep=sleeps.append,
        poll_interval=2,
    )
    assert (result.done, result.reason) == (False, "Timeout")
    assert len(sleeps) == 3  # 4 reads: timeout / poll_interval + 1


def test_follow_rollout_retries_temporary_errors(
    cluster: FakeKubernetes, backend: KubernetesBackend, time_: Clock
) -> None:
    backend.patch_scale("prod", "Deployment", NS, "payments-api", 4)
    cluster.fail_next(status=503, method="GET", path_contains="/deployments/payments-api")
    result = follow(backend, time_, timeout=60)
    assert result.done
    assert result.summary == "rolled out: 4/4 ready in 2 s"


# --------------------------------------------------------------------------- restart


@pytest.mark.parametrize(
    ("make", "kind", "ready"),
    [
        (lambda: statefulset("ledger", NS, replicas=2), WorkloadKind.STATEFULSET, "2/2"),
        (lambda: daemonset("ledger", NS, desired=4), WorkloadKind.DAEMONSET, "4/4"),
        (lambda: deployment("ledger", NS, replicas=3), WorkloadKind.DEPLOYMENT, "3/3"),
    ],
)
def test_restart_follows_the_rollout_of_each_kind(
    cluster: FakeKubernetes,
    backend: KubernetesBackend,
    time_: Clock,
    make: Any,
    kind: WorkloadKind,
    ready: str,
) -> None:
    cluster.add(make())
    cluster.controllers.steps = 2
    restart = kinds(backend, time_)["restart"]
    params = RestartParams(name="ledger", namespace=NS)
    preview = restart.preview(params, target=target())
    outcome = restart.follow(restart.execute(params, target=target(), preview=preview))
    assert outcome.summary == (
        f"restarted {kind.lower()}/ledger in {NS} (restartedAt 2026-11-21T03:04:05Z); "
        f"rolled out: {ready} ready in 2 s"
    )
    assert outcome.facts["rollout"]["done"] is True
    obj = stored(cluster, "ledger", kind)
    assert obj["spec"]["template"]["metadata"]["annotations"][RESTARTED_AT]
    assert obj["status"]["observedGeneration"] == obj["metadata"]["generation"]


def test_a_restart_that_does_not_roll_out_says_it_was_applied(
    cluster: FakeKubernetes, backend: KubernetesBackend, time_: Clock
) -> None:
    cluster.stall(NS, "payments-api", after_reads=1)
    restart = Restart(kube=backend, clock=time_, sleep=time_.sleep)
    params = RestartParams(name="payments-api", namespace=NS)
    preview = restart.preview(params, target=target())
    with pytest.raises(errors.RolloutFailed) as caught:
        restart.follow(restart.execute(params, target=target(), preview=preview))
    message = str(caught.value)
    assert message.startswith(f"restarted deployment/payments-api in {NS} (restartedAt ")
    assert ", but not progressing: ProgressDeadlineExceeded: ReplicaSet " in message
    assert isinstance(caught.value, errors.PermanentError)
    assert caught.value.facts["rollout"]["reason"] == "ProgressDeadlineExceeded"
    annotations = stored(cluster)["spec"]["template"]["metadata"]["annotations"]
    assert RESTARTED_AT in annotations


# --------------------------------------------------------------------------- scale


@pytest.mark.parametrize(
    ("limits", "current", "requested", "error"),
    [
        (None, 3, 0, "scaling to 0 needs a rule that allows it (limits.min_replicas: 0)"),
        ({"min_replicas": 1}, 3, 0, "scaling to 0 needs a rule that allows it"),
        ({"min_replicas": 2, "max_replicas": 50}, 3, 1, "below this rule's min_replicas of 2"),
        ({"min_replicas": 2, "max_replicas": 50}, 3, 51, "above this rule's max_replicas of 50"),
        ({"max_factor": 2}, 3, 7, "by a factor of 2.33333, more than this rule's max_factor of 2"),
        ({"max_factor": 2}, 6, 2, "scales down by a factor of 3"),
        ({"max_factor": 4, "min_replicas": 0}, 0, 5, "factor of 5"),
    ],
)
def test_limits_refuse(
    limits: dict[str, Any] | None, current: int, requested: int, error: str
) -> None:
    with pytest.raises(errors.Invalid, match=error.replace("(", r"\(").replace(")", r"\)")):
        check_limits(limits, current, requested)


@pytest.mark.parametrize(
    ("limits", "current", "requested"),
    [
        (None, 3, 50),
        ({"min_replicas": 0}, 3, 0),
        ({"min_replicas": 0, "max_factor": 3}, 3, 0),
        ({"min_replicas": 2, "max_replicas": 50}, 3, 50),
        ({"max_factor": 2}, 3, 6),
        ({"max_factor": 2}, 6, 3),
        ({"max_factor": 2, "min_replicas": None, "max_replicas": None}, 0, 2),
    ],
)
def test_limits_allow(limits: dict[str, Any] | None, current: int, requested: int) -> None:
    check_limits(limits, current, requested)


def test_scale_preview_execute_and_rollout(
    cluster: FakeKubernetes, backend: KubernetesBackend, time_: Clock
) -> None:
    cluster.controllers.steps = 2
    scale = kinds(backend, time_)["scale"]
    params = ScaleParams(name="payments-api", namespace=NS, replicas=5)
    settings = {"limits": {"min_replicas": 2, "max_replicas": 50, "max_factor": None}}
    preview = scale.preview(params, target=target(**settings))
    assert preview.target == "deployment/payments-api"
    assert "*3 -> 5* replicas" in preview.lines[0]
    assert preview.facts == {
        "kind": "Deployment",
        "name": "payments-api",
        "namespace": NS,
        "current_replicas": 3,
        "replicas": 5,
        "ready": 3,
        "images": ["payments:1.4.2"],
        "autoscalers": [],
    }
    [dry_run] = cluster.requests_matching("PATCH", "/deployments/payments-api/scale")
    assert dry_run.query["dryRun"] == "All"
    assert dry_run.content_type == "application/merge-patch+json"
    assert dry_run.body == {"spec": {"replicas": 5}}
    assert stored(cluster)["spec"]["replicas"] == 3

    outcome = scale.follow(scale.execute(params, target=target(**settings), preview=preview))
    assert outcome.summary == (
        f"scaled deployment/payments-api in {NS} from 3 to 5; rolled out: 5/5 ready in 2 s"
    )
    assert outcome.facts["from_replicas"] == 3
    assert outcome.facts["replicas"] == 5
    assert stored(cluster)["spec"]["replicas"] == 5
    assert stored(cluster)["status"]["availableReplicas"] == 5


def test_scale_names_the_autoscaler_that_may_undo_it(
    cluster: FakeKubernetes, backend: KubernetesBackend, time_: Clock
) -> None:
    cluster.add(horizontal_pod_autoscaler("payments-api", NS, min_replicas=3, max_replicas=12))
    cluster.add(horizontal_pod_autoscaler("other", NS, target_name="cart"))
    preview = Scale(kube=backend, clock=time_).preview(
        ScaleParams(name="payments-api", namespace=NS, replicas=6), target=target()
    )
    assert preview.facts["autoscalers"] == [
        {"name": "payments-api", "min_replicas": 3, "max_replicas": 12}
    ]
    assert any(
        "HorizontalPodAutoscaler *payments-api*" in line
        and "(min 3, max 12)" in line
        and "may undo a manual scale" in line
        for line in preview.lines
    )


def test_scale_a_stateful_set_and_refuse_a_daemon_set(
    cluster: FakeKubernetes, backend: KubernetesBackend, time_: Clock
) -> None:
    cluster.add(statefulset("ledger", NS, replicas=1))
    cluster.add(daemonset("agent", NS))
    scale = kinds(backend, time_)["scale"]
    params = ScaleParams(name="ledger", namespace=NS, replicas=2)
    outcome = scale.follow(
        scale.execute(params, target=target(), preview=scale.preview(params, target=target()))
    )
    assert "scaled statefulset/ledger" in outcome.summary
    assert stored(cluster, "ledger", "StatefulSet")["status"]["readyReplicas"] == 2
    with pytest.raises(errors.Invalid, match="use Deployment or StatefulSet"):
        scale.preview(
            ScaleParams(name="agent", kind=WorkloadKind.DAEMONSET, namespace=NS, replicas=2),
            target=target(),
        )
    with pytest.raises(errors.NotFound, match="no Deployment or StatefulSet named 'agent'"):
        scale.preview(ScaleParams(name="agent", namespace=NS, replicas=2), target=target())


def test_scale_refuses_before_anyone_is_asked(
    cluster: FakeKubernetes, backend: KubernetesBackend, time_: Clock
) -> None:
    scale = Scale(kube=backend, clock=time_)
    with pytest.raises(errors.Invalid, match="scaling to 0 needs a rule"):
        scale.preview(ScaleParams(name="payments-api", namespace=NS, replicas=0), target=target())
    with pytest.raises(errors.Invalid, match="already has 3 replicas"):
        scale.preview(ScaleParams(name="payments-api", namespace=NS, replicas=3), target=target())
    assert not cluster.requests_matching("PATCH")
    cluster.fail_next(
        status=422,
        method="PATCH",
        path_contains="/scale",
        reason="Invalid",
        message='Scale.autoscaling "payments-api" is invalid: spec.replicas: quota exceeded',
    )
    with pytest.raises(errors.Invalid, match=r"spec\.replicas: quota exceeded"):
        scale.preview(ScaleParams(name="payments-api", namespace=NS, replicas=4), target=target())
    assert stored(cluster)["spec"]["replicas"] == 3


def test_scale_to_zero_when_the_rule_allows_it(
    cluster: FakeKubernetes, backend: KubernetesBackend, time_: Clock
) -> None:
    scale = kinds(backend, time_)["scale"]
    params = ScaleParams(name="payments-api", namespace=NS, replicas=0)
    allowed = target(limits={"min_replicas": 0, "max_replicas": None, "max_factor": None})
    outcome = scale.follow(
        scale.execute(params, target=allowed, preview=scale.preview(params, target=allowed))
    )
    assert outcome.summary.endswith("from 3 to 0; rolled out: 0/0 ready in 0 s")
    assert stored(cluster)["spec"]["replicas"] == 0


def test_a_scale_that_does_not_roll_out_says_it_was_applied(
    cluster: FakeKubernetes, backend: KubernetesBackend, time_: Clock
) -> None:
    cluster.stall(NS, "payments-api", after_reads=3)
    scale = kinds(backend, time_)["scale"]
    params = ScaleParams(name="payments-api", namespace=NS, replicas=5)
    preview = scale.preview(params, target=target())
    with pytest.raises(errors.RolloutFailed) as caught:
        scale.follow(scale.execute(params, target=target(), preview=preview))
    assert str(caught.value).startswith(
        f"scaled deployment/payments-api in {NS} from 3 to 5, but not progressing: "
        "ProgressDeadlineExceeded: ReplicaSet "
    )
    assert stored(cluster)["spec"]["replicas"] == 5


# --------------------------------------------------------------------------- history


def test_rollout_history_lists_revisions_as_kubectl(
    cluster: FakeKubernetes, backend: KubernetesBackend, time_: Clock
) -> None:
    roll_out_images(backend, "payments:1.5.0", "payments:1.6.0", causes=("", "bump to 1.6.0"))
    history = rollout_history(backend, "prod", NS, "payments-api")
    assert [r.number for r in history] == [1, 2, 3]
    assert [r.images for r in history] == [
        ("payments:1.4.2",),
        ("payments:1.5.0",),
        ("payments:1.6.0",),
    ]
    assert [r.current for r in history] == [False, False, True]
    assert history[2].change_cause == "bump to 1.6.0"
    assert history[0].change_cause is None
    assert all(r.created_at.tzinfo is not None for r in history)
    with pytest.raises(errors.NotFound, match="no Deployment named 'ghost'"):
        rollout_history(backend, "prod", NS, "ghost")


def test_history_and_rollback_use_only_the_replica_sets_the_deployment_controls(
    cluster: FakeKubernetes, backend: KubernetesBackend, time_: Clock
) -> None:
    """ReplicaSets that match the selector but another Deployment controls (a canary with an
    overlapping selector) or nobody does (an orphan) are not revisions, as kubectl's
    ``GetAllReplicaSets`` keeps only those whose controller ``ownerReference`` has the uid."""
    roll_out_images(backend, "payments:1.5.0", "payments:1.6.0")
    canary = deployment(
        "payments-api-canary", NS, image="payments:canary", labels={"app": "payments-api"}
    )
    cluster.add(canary)
    orphan_template = {
        "metadata": {"labels": {"app": "payments-api"}},
        "spec": {"containers": [{"name": "payments-api", "image": "payments:orphan"}]},
    }
    cluster.add(replicaset("payments-api-orphan", NS, template=orphan_template, revision=9))
    selected = cluster.objects("ReplicaSet")
    assert len(selected) == 5  # 3 revisions of payments-api, the canary's, the orphan
    history = rollout_history(backend, "prod", NS, "payments-api")
    assert [(r.number, r.images) for r in history] == [
        (1, ("payments:1.4.2",)),
        (2, ("payments:1.5.0",)),
        (3, ("payments:1.6.0",)),
    ]
    rollback = kinds(backend, time_)["rollback"]
    params = RollbackParams(name="payments-api", namespace=NS)
    preview = rollback.preview(params, target=target())
    assert (preview.facts["current_revision"], preview.facts["target_revision"]) == (3, 2)
    with pytest.raises(errors.NotFound, match=r"revision 9 is not in the history.*1, 2, 3\)"):
        rollback.preview(
            RollbackParams(name="payments-api", namespace=NS, to_revision=9), target=target()
        )
    rollback.follow(rollback.execute(params, target=target(), preview=preview))
    image = stored(cluster)["spec"]["template"]["spec"]["containers"][0]["image"]
    assert image == "payments:1.5.0"


def test_render_history() -> None:
    created = START - timedelta(hours=3, minutes=20)
    revisions = [
        Revision(1, ("a:1",), created, None, False, "x-1", {}),
        Revision(2, ("a:2", "side:1"), START - timedelta(seconds=45), "hotfix", True, "x-2", {}),
    ]
    assert render_history(revisions, START) == [
        "*revision 1*: `a:1`, 3h20m old, change-cause: <none>",
        "*revision 2* (current): `a:2`, `side:1`, 45s old, change-cause: hotfix",
    ]
    assert render_history([], START) == ["no rollout history found"]


# --------------------------------------------------------------------------- rollback


def test_rollback_to_the_previous_revision(
    cluster: FakeKubernetes, backend: KubernetesBackend, time_: Clock
) -> None:
    roll_out_images(backend, "payments:1.5.0", "payments:1.6.0", causes=("", "bump to 1.6.0"))
    cluster.clear_requests()
    rollback = kinds(backend, time_)["rollback"]
    params = RollbackParams(name="payments-api", namespace=NS)
    preview = rollback.preview(params, target=target())
    assert preview.target == "deployment/payments-api"
    assert preview.facts["current_revision"] == 3
    assert preview.facts["target_revision"] == 2
    assert preview.facts["current"]["images"] == ["payments:1.6.0"]
    assert preview.facts["current"]["change_cause"] == "bump to 1.6.0"
    assert preview.facts["target"]["images"] == ["payments:1.5.0"]
    assert preview.lines[1].startswith("From: *revision 3* (current): `payments:1.6.0`, ")
    assert "change-cause: bump to 1.6.0" in preview.lines[1]
    assert preview.lines[2].startswith("To: *revision 2*: `payments:1.5.0`, ")
    [dry_run] = cluster.requests_matching("PATCH")
    assert dry_run.query["dryRun"] == "All"
    assert dry_run.content_type == "application/json-patch+json"
    assert stored(cluster)["spec"]["template"]["spec"]["containers"][0]["image"] == (
        "payments:1.6.0"
    )

    outcome = rollback.follow(rollback.execute(params, target=target(), preview=preview))
    assert outcome.summary == (
        f"rolled back deployment/payments-api in {NS} from revision 3 to revision 2 "
        "(payments:1.5.0); rolled out: 3/3 ready in 0 s"
    )
    after = stored(cluster)
    template = after["spec"]["template"]
    assert template["spec"]["containers"][0]["image"] == "payments:1.5.0"
    assert template["metadata"]["labels"] == {"app": "payments-api"}
    assert "kubernetes.io/change-cause" not in after["metadata"]["annotations"]
    history = rollout_history(backend, "prod", NS, "payments-api")
    assert [(r.number, r.images, r.current) for r in history] == [
        (1, ("payments:1.4.2",), False),
        (3, ("payments:1.6.0",), False),
        (4, ("payments:1.5.0",), True),
    ]


def test_rollback_to_a_revision_and_the_refusals(
    cluster: FakeKubernetes, backend: KubernetesBackend, time_: Clock
) -> None:
    rollback = kinds(backend, time_)["rollback"]
    with pytest.raises(errors.Invalid, match="no previous revision to roll back to"):
        rollback.preview(RollbackParams(name="payments-api", namespace=NS), target=target())
    roll_out_images(backend, "payments:1.5.0", "payments:1.6.0")
    with pytest.raises(errors.Invalid, match="revision 3 is the current revision"):
        rollback.preview(
            RollbackParams(name="payments-api", namespace=NS, to_revision=3), target=target()
        )
    with pytest.raises(errors.NotFound, match=r"revision 9 is not in the history.*1, 2, 3"):
        rollback.preview(
            RollbackParams(name="payments-api", namespace=NS, to_revision=9), target=target()
        )
    with pytest.raises(errors.NotFound, match="no Deployment named 'ghost'"):
        rollback.preview(RollbackParams(name="ghost", namespace=NS), target=target())

    params = RollbackParams(name="payments-api", namespace=NS, to_revision=1)
    preview = rollback.preview(params, target=target())
    assert preview.facts["target"]["images"] == ["payments:1.4.2"]
    outcome = rollback.follow(rollback.execute(params, target=target(), preview=preview))
    assert "from revision 3 to revision 1 (payments:1.4.2)" in outcome.summary
    assert stored(cluster)["metadata"]["annotations"][REVISION] == "4"


def test_rollback_refuses_a_paused_deployment_and_a_rejected_dry_run(
    cluster: FakeKubernetes, backend: KubernetesBackend, time_: Clock
) -> None:
    roll_out_images(backend, "payments:1.5.0")
    rollback = Rollback(kube=backend, clock=time_)
    params = RollbackParams(name="payments-api", namespace=NS)
    cluster.fail_next(
        status=422,
        method="PATCH",
        reason="Invalid",
        message='Deployment.apps "payments-api" is invalid: spec.template: admission says no',
    )
    with pytest.raises(errors.Invalid, match="admission says no"):
        rollback.preview(params, target=target())
    backend.patch_workload("prod", "Deployment", NS, "payments-api", {"spec": {"paused": True}})
    with pytest.raises(errors.Invalid, match="paused"):
        rollback.preview(params, target=target())


def test_rollback_refuses_when_the_deployment_moved_since_the_preview(
    cluster: FakeKubernetes, backend: KubernetesBackend, time_: Clock
) -> None:
    roll_out_images(backend, "payments:1.5.0")
    rollback = Rollback(kube=backend, clock=time_)
    params = RollbackParams(name="payments-api", namespace=NS)
    preview = rollback.preview(params, target=target())
    roll_out_images(backend, "payments:1.7.0")
    with pytest.raises(errors.Conflict, match="moved from revision 2 to 3"):
        rollback.follow(rollback.execute(params, target=target(), preview=preview))
    assert stored(cluster)["spec"]["template"]["spec"]["containers"][0]["image"] == (
        "payments:1.7.0"
    )


def test_a_rollback_that_does_not_roll_out_says_it_was_applied(
    cluster: FakeKubernetes, backend: KubernetesBackend, time_: Clock
) -> None:
    roll_out_images(backend, "payments:1.5.0")
    cluster.stall(NS, "payments-api", after_reads=1)
    rollback = kinds(backend, time_, timeout=30)["rollback"]
    params = RollbackParams(name="payments-api", namespace=NS)
    preview = rollback.preview(params, target=target())
    with pytest.raises(errors.RolloutFailed, match=r"rolled back .* to revision 1 .*, but not"):
        rollback.follow(rollback.execute(params, target=target(), preview=preview))


def test_the_registry_has_the_kubernetes_kinds(backend: KubernetesBackend) -> None:
    registry = build_registry(kube=backend, clock=lambda: START)
    assert {"restart", "scale", "rollback"} <= set(registry)
    assert registry["scale"].params_model is ScaleParams
    assert registry["rollback"].params_model is RollbackParams
    assert registry["scale"].reversible
    assert registry["rollback"].reversible


# --------------------------------------------------------------------------- kubectl parity


def kubectl(kubeconfig: Path, tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """The real kubectl against the ``prod`` context in namespace NS, with a private HOME."""
    assert KUBECTL is not None
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    return subprocess.run(
        [KUBECTL, "--kubeconfig", str(kubeconfig), "--context", "prod", "-n", NS, *args],
        env={"HOME": str(home), "PATH": "/usr/bin:/bin", "KUBECONFIG": ""},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.kubectl
@pytest.mark.parametrize("to_revision", [None, 1])
def test_the_bot_rolls_back_exactly_as_kubectl_rollout_undo_does(
    cluster: FakeKubernetes,
    backend: KubernetesBackend,
    kubeconfig: Path,
    tmp_path: Path,
    time_: Clock,
    to_revision: int | None,
) -> None:
    for name in ("twin", "mine"):
        cluster.add(deployment(name, NS, replicas=2, image="payments:1.4.2"))
        for image, cause in (("payments:1.5.0", "to 1.5.0"), ("payments:1.6.0", None)):
            patch: dict[str, Any] = {
                "spec": {"template": {"spec": {"containers": [{"name": name, "image": image}]}}}
            }
            if cause:
                patch["metadata"] = {"annotations": {"kubernetes.io/change-cause": cause}}
            backend.patch_workload("prod", "Deployment", NS, name, patch)
            backend.get_workload("prod", "Deployment", NS, name)
    cluster.clear_requests()
    undo = ["rollout", "undo", "deployment/twin"]
    if to_revision is not None:
        undo.append(f"--to-revision={to_revision}")
    result = kubectl(kubeconfig, tmp_path, *undo)
    assert result.returncode == 0, result.stderr
    assert "deployment.apps/twin rolled back" in result.stdout
    [by_kubectl] = cluster.requests_matching("PATCH", "/deployments/twin")
    cluster.clear_requests()

    rollback = kinds(backend, time_)["rollback"]
    params = RollbackParams(name="mine", namespace=NS, to_revision=to_revision)
    rollback.follow(
        rollback.execute(params, target=target(), preview=rollback.preview(params, target=target()))
    )
    by_bot = [r for r in cluster.requests_matching("PATCH", "/deployments/mine") if not r.query]
    assert [r.content_type for r in by_bot] == [by_kubectl.content_type]
    assert isinstance(by_bot[0].body, list)
    assert isinstance(by_kubectl.body, list)
    assert [op["path"] for op in by_bot[0].body] == [op["path"] for op in by_kubectl.body]

    def renamed(obj: dict[str, Any]) -> Any:
        """The template and annotations, with the Deployment's name blanked out."""
        shown = {"template": obj["spec"]["template"], "annotations": obj["metadata"]["annotations"]}
        return anonymised(shown, obj["metadata"]["name"])

    twin, mine = stored(cluster, "twin"), stored(cluster, "mine")
    assert renamed(twin) == renamed(mine)
    expected = "payments:1.5.0" if to_revision is None else "payments:1.4.2"
    assert mine["spec"]["template"]["spec"]["containers"][0]["image"] == expected
    assert "pod-template-hash" not in mine["spec"]["template"]["metadata"]["labels"]


def anonymised(value: Any, name: str) -> Any:
    """``value`` with every string equal to ``name`` replaced by ``<name>``."""
    if isinstance(value, dict):
        return {k: anonymised(v, name) for k, v in value.items()}
    if isinstance(value, list):
        return [anonymised(v, name) for v in value]
    return "<name>" if value == name else value


@pytest.mark.kubectl
def test_history_lists_what_kubectl_rollout_history_lists(
    cluster: FakeKubernetes, backend: KubernetesBackend, kubeconfig: Path, tmp_path: Path
) -> None:
    roll_out_images(backend, "payments:1.5.0", "payments:1.6.0", causes=("to 1.5.0",))
    rollback = Rollback(kube=backend, clock=lambda: START, sleep=lambda _: None)
    params = RollbackParams(name="payments-api", namespace=NS, to_revision=1)
    rollback.follow(
        rollback.execute(params, target=target(), preview=rollback.preview(params, target=target()))
    )
    result = kubectl(kubeconfig, tmp_path, "rollout", "history", "deployment/payments-api")
    assert result.returncode == 0, result.stderr
    rows = [line.split(None, 1) for line in result.stdout.splitlines()[2:] if line.strip()]
    mine = rollout_history(backend, "prod", NS, "payments-api")
    assert [[str(r.number), r.change_cause or "<none>"] for r in mine] == rows
    assert [r.number for r in mine] == [2, 3, 4]


def test_scale_reports_the_replicas_it_found_when_they_moved_since_the_preview(
    cluster: FakeKubernetes, backend: KubernetesBackend, time_: Clock
) -> None:
    scale = kinds(backend, time_)["scale"]
    params = ScaleParams(name="payments-api", namespace=NS, replicas=6)
    preview = scale.preview(params, target=target())
    assert preview.facts["current_replicas"] == 3
    # an autoscaler moves it to 4 while the request waits for approval
    backend.patch_scale(None, "Deployment", NS, "payments-api", 4)
    outcome = scale.follow(scale.execute(params, target=target(), preview=preview))
    assert "from 4 to 6 (3 when it was asked for)" in outcome.summary
    assert outcome.facts["from_replicas"] == 4
