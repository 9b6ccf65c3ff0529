"""The fake API server's batch/v1 Jobs and pod logs, through the official client, opsgate's
adapter and the real ``kubectl`` (``get jobs``, ``logs job/x``, ``create --dry-run=server``)."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from actions.backends.kubernetes import KubernetesBackend
from actions.errors import Invalid, NotFound
from tests.fakes.kube import (
    CONTROLLER_UID,
    JOB_NAME,
    FakeKubernetes,
    job_controller,
    write_kubeconfig,
)

NS = "jobs"


def job(name: str = "vacuum", **spec: Any) -> dict[str, Any]:
    container = {
        "name": "runbook",
        "image": "ops/db-tools:1.4",
        "command": ["/scripts/vacuum.sh"],
        "env": [{"name": "TABLE", "value": "orders"}],
    }
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name, "labels": {"opsgate.io/request-id": "7"}},
        "spec": {
            "backoffLimit": 0,
            "activeDeadlineSeconds": 600,
            "template": {"spec": {"restartPolicy": "Never", "containers": [container]}},
            **spec,
        },
    }


@pytest.fixture
def fake() -> Iterator[FakeKubernetes]:
    with FakeKubernetes() as server:
        server.add({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}})
        yield server


@pytest.fixture
def kubeconfig(fake: FakeKubernetes, tmp_path: Path) -> Path:
    return write_kubeconfig(tmp_path / "kubeconfig", {"test": fake})


@pytest.fixture
def backend(kubeconfig: Path) -> Iterator[KubernetesBackend]:
    kube = KubernetesBackend(kubeconfig=str(kubeconfig), request_timeout=5.0)
    yield kube
    kube.close()


@pytest.fixture
def batch(kubeconfig: Path) -> Iterator[client.BatchV1Api]:
    with config.new_client_from_config(config_file=str(kubeconfig), context="test") as api:
        yield client.BatchV1Api(api)


def kubectl(kubeconfig: Path, home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    home.mkdir(exist_ok=True)
    env = {"HOME": str(home), "PATH": "/usr/local/bin:/usr/bin:/bin", "KUBECONFIG": ""}
    return subprocess.run(
        ["kubectl", "--kubeconfig", str(kubeconfig), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_create_defaults_the_selector_and_starts_one_labelled_pod(
    fake: FakeKubernetes, backend: KubernetesBackend
) -> None:
    created = backend.create_job("test", NS, job())
    uid = created["metadata"]["uid"]
    assert created["spec"]["selector"] == {"matchLabels": {CONTROLLER_UID: uid}}
    assert created["spec"]["completions"] == 1
    started = backend.get_job("test", NS, "vacuum")["status"]  # the Job controller's work
    assert started["active"] == 1
    assert "startTime" in started
    [pod] = job_controller(fake).pods_of(NS, "vacuum")
    labels = pod["metadata"]["labels"]
    assert labels[JOB_NAME] == labels["job-name"] == "vacuum"
    assert labels[CONTROLLER_UID] == uid
    assert pod["metadata"]["ownerReferences"][0]["uid"] == uid
    assert pod["status"]["phase"] == "Running"
    assert pod["spec"]["containers"][0]["env"] == [{"name": "TABLE", "value": "orders"}]
    by_label = backend.list_pods("test", NS, f"{JOB_NAME}=vacuum")
    assert [p["metadata"]["name"] for p in by_label] == [pod["metadata"]["name"]]
    assert backend.list_pods("test", NS, f"{JOB_NAME}=other") == []
    assert backend.get_job("test", NS, "vacuum")["metadata"]["labels"] == {
        "opsgate.io/request-id": "7"
    }


def test_dry_run_validates_and_stores_nothing(
    fake: FakeKubernetes, backend: KubernetesBackend
) -> None:
    trial = job()
    trial["metadata"] = {"generateName": "vacuum-"}
    answered = backend.create_job("test", NS, trial, dry_run=True)
    assert answered["metadata"]["name"].startswith("vacuum-")
    assert fake.objects("Job") == []
    assert fake.objects("Pod") == []


@pytest.mark.parametrize(
    ("change", "field", "message"),
    [
        (
            lambda j: j["spec"]["template"]["spec"].pop("restartPolicy"),
            "spec.template.spec.restartPolicy",
            'Unsupported value: "Always": supported values: "OnFailure", "Never"',
        ),
        (
            lambda j: j["spec"]["template"]["spec"]["containers"][0].pop("image"),
            "spec.template.spec.containers[0].image",
            "Required value",
        ),
        (
            lambda j: j["spec"]["template"]["spec"]["containers"][0]["env"].append(
                {"name": "1X", "value": "y"}
            ),
            "spec.template.spec.containers[0].env[1].name",
            'Invalid value: "1X": a valid environment variable name',
        ),
        (
            lambda j: j["spec"].update(activeDeadlineSeconds=-1),
            "spec.activeDeadlineSeconds",
            "Invalid value: -1: must be greater than or equal to 0",
        ),
    ],
)
def test_invalid_jobs_are_refused_with_the_api_servers_422(
    fake: FakeKubernetes, batch: client.BatchV1Api, change: Any, field: str, message: str
) -> None:
    body = job()
    change(body)
    for dry_run in ("All", None):
        with pytest.raises(ApiException) as raised:
            batch.create_namespaced_job(NS, body, dry_run=dry_run)
        assert raised.value.status == 422
        status = json.loads(raised.value.body)
        assert status["reason"] == "Invalid"
        assert status["message"].startswith(f'Job.batch "vacuum" is invalid: {field}: {message}')
        assert status["details"]["causes"][0]["field"] == field
    assert fake.objects("Job") == []


def test_the_adapter_turns_a_422_into_invalid_with_the_message(
    backend: KubernetesBackend,
) -> None:
    body = job()
    body["spec"]["template"]["spec"]["containers"][0]["resources"] = {"limits": {"memory": "lots"}}
    with pytest.raises(Invalid, match="quantities must match"):
        backend.create_job("test", NS, body, dry_run=True)
    with pytest.raises(Invalid, match="must be no more than 63 characters"):
        backend.create_job("test", NS, job("x" * 64), dry_run=True)


def test_success_failure_and_deadline_as_the_job_controller_reports_them(
    fake: FakeKubernetes, backend: KubernetesBackend
) -> None:
    for name in ("ok", "bad", "slow"):
        backend.create_job("test", NS, job(name))
    job_controller(fake).succeed(NS, "ok", log="vacuumed\n")
    job_controller(fake).fail(NS, "bad", log="boom\n", exit_code=2)
    job_controller(fake).exceed_deadline(NS, "slow")
    ok = backend.get_job("test", NS, "ok")["status"]
    assert (ok["succeeded"], ok["active"]) == (1, 0)
    assert "completionTime" in ok
    assert [(c["type"], c["reason"]) for c in ok["conditions"]] == [
        ("SuccessCriteriaMet", "CompletionsReached"),
        ("Complete", "CompletionsReached"),
    ]
    bad = backend.get_job("test", NS, "bad")["status"]
    assert bad["failed"] == 1
    assert "completionTime" not in bad
    assert bad["conditions"][-1]["type"] == "Failed"
    assert bad["conditions"][-1]["reason"] == "BackoffLimitExceeded"
    [pod] = job_controller(fake).pods_of(NS, "bad")
    assert pod["status"]["phase"] == "Failed"
    terminated = pod["status"]["containerStatuses"][0]["state"]["terminated"]
    assert terminated["exitCode"] == 2
    slow = backend.get_job("test", NS, "slow")["status"]
    assert slow["conditions"][-1]["reason"] == "DeadlineExceeded"
    assert slow["conditions"][-1]["message"] == "Job was active longer than specified deadline"
    assert job_controller(fake).pods_of(NS, "slow") == []  # the controller deleted its active pod


def test_pod_log_with_tail_lines_and_limit_bytes(
    fake: FakeKubernetes, backend: KubernetesBackend
) -> None:
    backend.create_job("test", NS, job())
    [pod] = job_controller(fake).pods_of(NS, "vacuum")
    name = pod["metadata"]["name"]
    job_controller(fake).write_log(NS, name, "".join(f"line {i}\n" for i in range(1, 101)))
    assert backend.read_pod_log("test", NS, name, tail_lines=2, limit_bytes=1000) == (
        "line 99\nline 100\n"
    )
    assert backend.read_pod_log("test", NS, name, tail_lines=3, limit_bytes=10) == "line 98\nli"
    request = fake.requests_matching(method="GET", path_contains="/log")[-1]
    assert request.query == {"tailLines": "3", "limitBytes": "10"}
    with pytest.raises(NotFound):
        backend.read_pod_log("test", NS, "ghost", tail_lines=1, limit_bytes=10)


def test_delete_propagation(fake: FakeKubernetes, batch: client.BatchV1Api) -> None:
    batch.create_namespaced_job(NS, job("orphaned"))
    batch.create_namespaced_job(NS, job("cascaded"))
    batch.delete_namespaced_job("orphaned", NS)  # the API's default for Jobs: Orphan
    batch.delete_namespaced_job("cascaded", NS, propagation_policy="Background")
    assert fake.objects("Job") == []
    assert len(job_controller(fake).pods_of(NS, "orphaned")) == 1
    assert job_controller(fake).pods_of(NS, "cascaded") == []
    with pytest.raises(ApiException) as raised:
        batch.delete_namespaced_job("cascaded", NS)
    assert raised.value.status == 404


@pytest.mark.kubectl
def test_kubectl_get_jobs_and_logs(
    fake: FakeKubernetes, backend: KubernetesBackend, kubeconfig: Path, tmp_path: Path
) -> None:
    home = tmp_path / "home"
    backend.create_job("test", NS, job())
    backend.create_job("test", NS, job("other"))
    job_controller(fake).succeed(NS, "vacuum", log="starting\nVACUUM orders\ndone\n")
    listed = kubectl(kubeconfig, home, "get", "jobs", "-n", NS)
    assert listed.returncode == 0, listed.stderr
    header, *rows = listed.stdout.splitlines()
    assert header.split() == ["NAME", "STATUS", "COMPLETIONS", "DURATION", "AGE"]
    assert [row.split()[:3] for row in rows] == [
        ["other", "Running", "0/1"],
        ["vacuum", "Complete", "1/1"],
    ]
    logs = kubectl(kubeconfig, home, "logs", "job/vacuum", "-n", NS)
    assert logs.returncode == 0, logs.stderr
    assert logs.stdout == "starting\nVACUUM orders\ndone\n"
    tail = kubectl(kubeconfig, home, "logs", "job/vacuum", "-n", NS, "--tail", "1")
    assert tail.stdout == "done\n"
    as_json = kubectl(kubeconfig, home, "get", "job", "vacuum", "-n", NS, "-o", "json")
    assert json.loads(as_json.stdout)["status"]["succeeded"] == 1


@pytest.mark.kubectl
def test_kubectl_create_dry_run_server(
    fake: FakeKubernetes, kubeconfig: Path, tmp_path: Path
) -> None:
    home = tmp_path / "home"
    # the fake serves no OpenAPI document for kubectl's client-side schema check: the server's
    # dry run is what is checked here
    dry_run = ("-n", NS, "--dry-run=server", "--validate=false")
    manifest = tmp_path / "job.yaml"
    manifest.write_text(json.dumps(job()))
    ok = kubectl(kubeconfig, home, "create", "-f", str(manifest), *dry_run)
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.strip() == "job.batch/vacuum created (server dry run)"
    assert fake.objects("Job") == []
    bad = job()
    bad["spec"]["template"]["spec"]["restartPolicy"] = "Always"
    manifest.write_text(json.dumps(bad))
    refused = kubectl(kubeconfig, home, "create", "-f", str(manifest), *dry_run)
    assert refused.returncode == 1
    assert 'The Job "vacuum" is invalid' in refused.stderr
    assert 'spec.template.spec.restartPolicy: Unsupported value: "Always"' in refused.stderr
