"""The image definition and the Kubernetes manifests (issue 14 items 1 to 3).

``kubectl kustomize`` renders the base and the overlay without a cluster; every rendered object
validates against the Kubernetes 1.32 schemas (``kubernetes-validate``, offline: it ships them);
``checkov`` finds no failed check in the manifests nor the Dockerfile (each skip is justified
inline: ``checkov.io/skipN`` annotations, a ``# checkov:skip`` comment); the ClusterRole of each
is what ``opsgate rbac`` prints for its policy. No Docker engine is needed: the Dockerfile is
read for the properties the issue asks (multi-stage, non-root, no HEALTHCHECK, OCI labels,
``opsgate serve`` as the entrypoint).
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from tests.helpers.tools import missing_tool, require_kubectl

ROOT = Path(__file__).resolve().parent.parent
BASE = ROOT / "deploy" / "kubernetes"
OVERLAY = ROOT / "deploy" / "overlays" / "second-cluster"
KUBERNETES_VERSION = "1.32"


def render(directory: Path) -> list[dict[str, Any]]:
    done = subprocess.run(
        [require_kubectl(), "kustomize", str(directory)],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return [doc for doc in yaml.safe_load_all(done.stdout) if doc]


def only(objects: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    [found] = [o for o in objects if o["kind"] == kind]
    return found


def opsgate_rbac(policy: Path) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, "-m", "bot.cli", "rbac", "--policy", str(policy)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={"PATH": os.environ.get("PATH", ""), "PYTHONPATH": str(ROOT)},
        check=False,
    )
    assert done.returncode == 0, done.stderr
    role: dict[str, Any] = yaml.safe_load(done.stdout)
    return role


@pytest.mark.parametrize("directory", [BASE, OVERLAY], ids=["base", "second-cluster"])
def test_the_rendered_objects_validate_against_the_kubernetes_schemas(directory: Path) -> None:
    objects = render(directory)
    kinds = sorted(o["kind"] for o in objects)
    assert kinds == sorted(
        [
            "Namespace",
            "ServiceAccount",
            "ClusterRole",
            "ClusterRoleBinding",
            "ConfigMap",
            "Service",
            "Deployment",
            "PodDisruptionBudget",
            "NetworkPolicy",
        ]
    )
    for obj in objects:
        kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)
        if obj["kind"] not in ("Namespace", "ClusterRole", "ClusterRoleBinding"):
            assert obj["metadata"]["namespace"] == "opsgate", obj["metadata"]


def test_a_broken_object_is_refused_by_the_schemas() -> None:
    """The validation is real: a Deployment with a string for ``replicas`` fails it."""
    deployment = only(render(BASE), "Deployment")
    deployment["spec"]["replicas"] = "two"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBERNETES_VERSION, strict=True)


@pytest.mark.parametrize("directory", [BASE, OVERLAY], ids=["base", "second-cluster"])
def test_the_cluster_role_is_what_opsgate_rbac_prints_for_the_policy(directory: Path) -> None:
    objects = render(directory)
    role = only(objects, "ClusterRole")
    expected = opsgate_rbac(directory / "policy.yml")
    role["metadata"]["labels"].pop("app.kubernetes.io/part-of")
    assert role == expected
    # the policy the ConfigMap carries is the one the role was generated from
    policy = only(objects, "ConfigMap")["data"]["policy.yml"]
    assert policy == (directory / "policy.yml").read_text()
    binding = only(objects, "ClusterRoleBinding")
    assert binding["roleRef"]["name"] == role["metadata"]["name"]
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "opsgate", "namespace": "opsgate"}
    ]


def test_the_base_ships_the_example_policy() -> None:
    assert (BASE / "policy.yml").read_bytes() == (ROOT / "policy.yml").read_bytes()


def test_the_deployment() -> None:
    objects = render(BASE)
    deployment = only(objects, "Deployment")
    spec = deployment["spec"]
    assert spec["replicas"] == 2
    pod = spec["template"]["spec"]
    annotations = spec["template"]["metadata"]["annotations"]
    assert annotations == {
        "prometheus.io/scrape": "true",
        "prometheus.io/port": "8080",
        "prometheus.io/path": "/metrics",
    }
    assert pod["serviceAccountName"] == "opsgate"
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    [container] = pod["containers"]
    assert container["image"] == "ghcr.io/example/opsgate:0.1.0"
    security = container["securityContext"]
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"] == {"drop": ["ALL"]}
    assert security["seccompProfile"] == {"type": "RuntimeDefault"}
    env = {e["name"]: e for e in container["env"]}
    assert env["OPSGATE_INSTANCE"]["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    for name, key in [
        ("SLACK_BOT_TOKEN", "slack-bot-token"),
        ("SLACK_SIGNING_SECRET", "slack-signing-secret"),
        ("OPSGATE_DATABASE_URL", "database-url"),
    ]:
        assert env[name]["valueFrom"] == {"secretKeyRef": {"name": "opsgate", "key": key}}
    assert env["OPSGATE_LOG_FORMAT"]["value"] == "json"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["resources"]["requests"]
    assert container["resources"]["limits"]
    # the policy is mounted as a directory (a subPath mount would never see an update)
    [mount] = [m for m in container["volumeMounts"] if m["name"] == "policy"]
    assert "subPath" not in mount
    assert env["OPSGATE_POLICY"]["value"] == f"{mount['mountPath']}/policy.yml"
    overlay = only(render(OVERLAY), "Deployment")
    assert overlay["spec"]["replicas"] == 3
    assert only(objects, "PodDisruptionBudget")["spec"]["minAvailable"] == 1


def checkov(*args: str) -> dict[str, Any]:
    """``checkov`` (installed beside opsgate in a virtualenv of its own by ``make install``: its
    pins conflict with pytest's) run on ``args`` without reaching Prisma Cloud; returns its JSON
    report(s) summed up."""
    path = shutil.which("checkov") or str(Path(sys.executable).parent / "checkov")
    if not Path(path).exists():
        missing_tool("checkov", "make install puts it in .venv/checkov; or pipx install checkov")
    done = subprocess.run(
        [path, *args, "--skip-download", "--output", "json"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=False,
        timeout=600,
    )
    assert done.stdout, done.stderr
    reports = json.loads(done.stdout)
    reports = reports if isinstance(reports, list) else [reports]
    failed = [
        f"{r['check_type']}: {c['check_id']} {c['check_name']} ({c['resource']})"
        for r in reports
        for c in r.get("results", {}).get("failed_checks", [])
    ]
    skipped = [
        (c["check_id"], c.get("suppress_comment", ""))
        for r in reports
        for c in r.get("results", {}).get("skipped_checks", [])
    ]
    passed = sum(r["summary"]["passed"] for r in reports)
    return {"failed": failed, "skipped": skipped, "passed": passed}


def test_checkov_finds_no_failed_check_in_the_manifests() -> None:
    require_kubectl()  # checkov's kustomize framework renders with it
    report = checkov("--directory", "deploy", "--framework", "kubernetes", "kustomize")
    assert report["failed"] == []
    assert report["passed"] > 50
    # every skip is a checkov.io/skipN annotation of the object, with its reason
    justified: dict[str, str] = {}
    for obj in render(BASE) + render(OVERLAY):
        for key, text in (obj["metadata"].get("annotations") or {}).items():
            if key.startswith("checkov.io/skip"):
                check, _, why = text.partition("=")
                justified[check] = why
    assert {check for check, _ in report["skipped"]} == set(justified)
    for check, why in justified.items():
        assert len(why) > 40, f"{check} is skipped without a reason"


def test_checkov_finds_no_failed_check_in_the_dockerfile() -> None:
    report = checkov("--file", "Dockerfile", "--framework", "dockerfile")
    assert report["failed"] == []
    assert [check for check, _ in report["skipped"]] == ["CKV_DOCKER_2"]
    assert (
        "# checkov:skip=CKV_DOCKER_2: health is checked by the Kubernetes liveness and "
        "readiness probes"
    ) in (ROOT / "Dockerfile").read_text()


def instructions() -> list[tuple[str, str]]:
    """The Dockerfile's instructions, continuation lines joined, comments dropped."""
    lines: list[tuple[str, str]] = []
    pending = ""
    for raw in (ROOT / "Dockerfile").read_text().splitlines():
        if not pending and raw.lstrip().startswith("#"):
            continue
        if raw.rstrip().endswith("\\"):
            pending += raw.rstrip()[:-1] + " "
            continue
        line = (pending + raw).strip()
        pending = ""
        if line:
            word, _, rest = line.partition(" ")
            lines.append((word.upper(), rest.strip()))
    return lines


def test_the_dockerfile() -> None:
    steps = instructions()
    froms = [rest for word, rest in steps if word == "FROM"]
    assert len(froms) == 2
    assert froms[0] == "python:3.11-slim-bookworm AS build"
    assert froms[1] == "python:3.11-slim-bookworm"
    final = steps[[i for i, (word, _) in enumerate(steps) if word == "FROM"][1] :]
    assert "HEALTHCHECK" not in [word for word, _ in steps]
    assert [rest for word, rest in final if word == "USER"] == ["10001:10001"]
    assert [json.loads(rest) for word, rest in final if word == "ENTRYPOINT"] == [
        ["opsgate", "serve"]
    ]
    assert [rest for word, rest in final if word == "COPY" and "--from=build" in rest] == [
        "--from=build /opt/opsgate /opt/opsgate"
    ]
    final_text = " ".join(rest for _, rest in final)
    for tool in ("gcc", "build-essential", "apt-get install"):
        assert tool not in final_text
    labels = " ".join(rest for word, rest in final if word == "LABEL")
    for key in ("title", "description", "version", "revision", "licenses", "source"):
        assert f"org.opencontainers.image.{key}=" in labels
    build = " ".join(rest for word, rest in steps[: len(steps) - len(final)])
    assert "PIP_NO_CACHE_DIR=1" in build
    assert "--no-cache-dir" in build
    # the build stage copies only what .dockerignore lets into the context
    ignored = (ROOT / ".dockerignore").read_text().splitlines()
    for word, rest in steps:
        if word == "COPY" and "--from" not in rest:
            for source in shlex.split(rest)[:-1]:
                assert f"!{source.rstrip('/')}/" in ignored or f"!{source}" in ignored, source
