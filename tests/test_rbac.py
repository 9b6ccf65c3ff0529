"""Least privilege (issue 14 item 3): ``opsgate rbac`` and the bot under exactly that ClusterRole.

The fake Kubernetes API server enforces RBAC (:mod:`tests.fakes.kube_rbac`) with the rules
``opsgate rbac`` prints for the policy. The bot then runs every action it has (restart, scale,
rollback with their dry-run previews, an access grant revoked early, one that expires, the drift
check) through signed Slack requests; the fake must refuse none of its requests. Anything else
(deleting a Deployment, binding a ClusterRole the policy does not grant) is refused with 403.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from sqlalchemy import create_engine, select
from sqlalchemy.orm import Session

from actions.access import role_binding_body
from actions.backends.kubernetes import KubernetesBackend
from actions.errors import Forbidden
from approvals.models import Request
from approvals.policy import load_policy
from approvals.rbac import UnboundedRoles, cluster_role
from bot.settings import Settings
from tests.fakes import slack
from tests.fakes.kube import (
    FakeKubernetes,
    daemonset,
    deployment,
    horizontal_pod_autoscaler,
    statefulset,
    write_kubeconfig,
)
from tests.fakes.kube import (
    cluster_role as cluster_role_object,
)
from tests.fakes.kube_rbac import RbacAuthorizer, RequestInfo, request_info
from tests.helpers.access import RB_API, AccessBot, serve_access_bot
from tests.helpers.bot import wait_for
from tests.helpers.clock import Clock
from tests.helpers.tools import require_kubectl

ROOT = Path(__file__).resolve().parent.parent

POLICY = """\
version: 1
approval_channel: C0APPROVALS
audit_channel: C0AUDIT

groups:
  sre: {users: [U0SRE1, U0SRE2]}

identities:
  U0DEV1: {kubernetes_user: alice@example.com}

environments:
  staging: {kube_context: staging, namespaces: ["staging-*"]}

rules:
  - name: staging changes
    match: {action: [restart, scale, rollback], environment: staging}
    approval: auto
  - name: staging access
    match: {action: access, environment: staging}
    approvers: [sre]
    roles: [view]
    max_duration: 4h
"""


def opsgate(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bot.cli", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)},
        check=False,
    )


def printed_role(policy: Path) -> dict[str, Any]:
    """The ClusterRole ``opsgate rbac --policy policy`` prints."""
    done = opsgate("rbac", "--policy", str(policy))
    assert done.returncode == 0, done.stderr
    role: dict[str, Any] = yaml.safe_load(done.stdout)
    return role


# --- opsgate rbac ---------------------------------------------------------------------------------


def test_rbac_prints_the_adapters_rules_and_bind_on_exactly_the_granted_roles(
    tmp_path: Path,
) -> None:
    path = tmp_path / "policy.yml"
    path.write_text(POLICY)
    role = printed_role(path)
    assert role["kind"] == "ClusterRole"
    assert role == cluster_role(load_policy(path))
    for rule in role["rules"]:
        assert "*" not in rule["verbs"] + rule["apiGroups"] + rule["resources"]
    [roles_rule] = [r for r in role["rules"] if r["resources"] == ["clusterroles"]]
    assert roles_rule == {
        "apiGroups": ["rbac.authorization.k8s.io"],
        "resources": ["clusterroles"],
        "resourceNames": ["view"],
        "verbs": ["bind", "get"],
    }
    # the example policy grants view and edit
    example = printed_role(ROOT / "policy.yml")
    [example_rule] = [r for r in example["rules"] if r["resources"] == ["clusterroles"]]
    assert example_rule["resourceNames"] == ["edit", "view"]


def test_rbac_refuses_a_policy_that_may_grant_any_cluster_role(tmp_path: Path) -> None:
    path = tmp_path / "policy.yml"
    path.write_text(POLICY.replace("    roles: [view]\n", ""))
    done = opsgate("rbac", "--policy", str(path))
    assert done.returncode == 1
    assert done.stdout == ""
    assert "rules[1] 'staging access' (line 18) may grant any ClusterRole" in done.stderr
    with pytest.raises(UnboundedRoles):
        cluster_role(load_policy(path))


def test_rbac_refuses_an_invalid_policy(tmp_path: Path) -> None:
    path = tmp_path / "policy.yml"
    path.write_text("version: 1\nrules: [{match: {}}]\n")
    done = opsgate("rbac", "--policy", str(path))
    assert done.returncode == 1
    assert "the policy is invalid" in done.stderr


# --- the fake's RequestInfo -------------------------------------------------------------------


RBAC_V1 = "/apis/rbac.authorization.k8s.io/v1/namespaces/a/rolebindings"
REQUEST_INFOS = [
    ("GET /apis/apps/v1/namespaces/a/deployments/web", {}, "get apps deployments - a web"),
    ("GET /apis/apps/v1/namespaces/a/deployments", {}, "list apps deployments - a -"),
    ("GET /apis/apps/v1/deployments", {"watch": "true"}, "watch apps deployments - - -"),
    (
        "PATCH /apis/apps/v1/namespaces/a/deployments/web/scale",
        {"dryRun": "All"},
        "patch apps deployments scale a web",
    ),
    (f"DELETE {RBAC_V1}", {}, "deletecollection rbac.authorization.k8s.io rolebindings - a -"),
    (f"PUT {RBAC_V1}/x", {}, "update rbac.authorization.k8s.io rolebindings - a x"),
    ("POST /api/v1/namespaces/a/pods", {}, "create - pods - a -"),
    ("GET /api/v1/namespaces/a", {}, "get - namespaces - a a"),
    ("PUT /api/v1/namespaces/a/finalize", {}, "update - namespaces finalize a a"),
]


@pytest.mark.parametrize(("request_line", "query", "expected"), REQUEST_INFOS)
def test_request_info_as_the_api_server_builds_it(
    request_line: str, query: dict[str, str], expected: str
) -> None:
    """verb, group, resource, subresource, namespace, name ("-": empty)."""
    method, path = request_line.split()
    fields = ["" if f == "-" else f for f in expected.split()]
    assert request_info(method, path, query) == RequestInfo(*fields)


def test_discovery_is_not_a_resource_request() -> None:
    assert not request_info("GET", "/apis/apps/v1", {}).is_resource_request
    assert not request_info("GET", "/version", {}).is_resource_request


# --- every action under exactly the printed ClusterRole ---------------------------------------


@pytest.fixture
def policy_text() -> str:
    return POLICY


@pytest.fixture
def enforced(kube: FakeKubernetes, tmp_path: Path, policy_path: Path) -> RbacAuthorizer:
    """The fake cluster with RBAC on, under the rules ``opsgate rbac`` prints for POLICY."""
    kube.add(deployment("api", "staging-api", replicas=2, image="api:1"))
    kube.add(statefulset("db", "staging-api", replicas=1))
    kube.add(daemonset("agent", "staging-api"))
    kube.add(horizontal_pod_autoscaler("api", "staging-api", target_name="api", min_replicas=1))
    for name in ("view", "edit"):
        kube.add(
            cluster_role_object(
                name, [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]}]
            )
        )
    authorizer = RbacAuthorizer(
        printed_role(policy_path)["rules"], store=kube.store, types=kube.types
    )
    kube.rbac = authorizer
    return authorizer


@pytest.fixture
def rbac_bot(
    settings: Settings,
    fake_slack: slack.FakeSlack,
    kube: FakeKubernetes,
    enforced: RbacAuthorizer,
    clock: Clock,
) -> Iterator[AccessBot]:
    """The bot (drift check every 0.3 s, sweep every 0.2 s, injected clock) on the enforcing
    fake."""
    db = create_engine(settings.database_url)
    every = settings.model_copy(update={"drift_interval": 0.3})
    try:
        with serve_access_bot(every, fake_slack, kube, db, sweep_interval=0.2, clock=clock) as bot:
            yield bot
    finally:
        db.dispose()


@pytest.fixture
def clock() -> Clock:
    return Clock(datetime.now(UTC).replace(microsecond=0))


def succeeded(bot: AccessBot, text: str) -> None:
    """``/ops <text>`` (auto-approved) runs to ``succeeded``; the answer says why otherwise."""
    response_url = bot.command(text)
    wait_for(
        lambda: (
            any(
                r.action in text.split()[0] and r.status in ("succeeded", "failed")
                for r in bot_requests(bot)
            )
            and bot_requests(bot)[-1].status in ("succeeded", "failed")
        ),
        what=f"/ops {text} to end",
    )
    last = bot_requests(bot)[-1]
    assert last.status == "succeeded", (text, last.status, bot.answers(response_url))


def bot_requests(bot: AccessBot) -> list[Request]:
    with Session(bot.db) as session:
        return list(session.scalars(select(Request).order_by(Request.id)))


def test_every_action_works_under_exactly_the_printed_cluster_role(
    rbac_bot: AccessBot, kube: FakeKubernetes, enforced: RbacAuthorizer, clock: Clock
) -> None:
    bot = rbac_bot
    apps = "apps/v1"
    # restart (a Deployment and a DaemonSet), scale (a Deployment with an HPA, a StatefulSet),
    # rollback to the revision before the restart; each previewed with a dry run first
    succeeded(bot, "restart api -n staging-api")
    succeeded(bot, "restart daemonset/agent -n staging-api")
    succeeded(bot, "scale api 3 -n staging-api")
    succeeded(bot, "scale statefulset/db 2 -n staging-api")
    succeeded(bot, "rollback api -n staging-api")
    api = kube.get_object(apps, "Deployment", "staging-api", "api")
    assert api is not None
    assert api["spec"]["replicas"] == 3
    assert "kubectl.kubernetes.io/restartedAt" not in api["spec"]["template"]["metadata"].get(
        "annotations", {}
    )  # rolled back to the template before the restart
    db = kube.get_object(apps, "StatefulSet", "staging-api", "db")
    assert db is not None
    assert db["spec"]["replicas"] == 2
    assert kube.requests_matching("PATCH", "/scale")  # through the scale subresource
    assert [r for r in kube.requests if r.query.get("dryRun") == "All"]

    # access: granted (bind on view), revoked early (delete), another one expires (deletecollection)
    first = bot.grant_access("access staging-api --role view --for 1h")
    assert bot.binding(first, "staging-api") is not None
    bot.command(f"revoke {first}")
    wait_for(lambda: bot.grant(first).status == "revoked", what="the early revoke")
    # two that end together: one deletecollection by label for the batch
    ending = [bot.grant_access("access staging-api --for 30m") for _ in range(2)]
    clock.advance(31 * 60)
    for grant_id in ending:
        wait_for(lambda g=grant_id: bot.grant(g).status == "revoked", what="the expiry")
        assert bot.grant(grant_id).revoked_by == "opsgate"  # ended by the clock
        assert bot.binding(grant_id, "staging-api") is None

    # drift: a managed binding no grant accounts for is removed
    stray = role_binding_body(
        grant_id=999,
        namespace="staging-api",
        cluster_role="view",
        kubernetes_user="mallory@example.com",
        expires_at=clock() + timedelta(hours=1),
    )
    kube.add(stray)
    wait_for(
        lambda: kube.get_object(RB_API, "RoleBinding", "staging-api", "opsgate-grant-999") is None,
        what="the drift check to remove the stray binding",
    )

    assert enforced.denied == [], enforced.denied
    used = {(i.verb, i.resource, i.subresource) for i in enforced.allowed}
    for needed in [
        ("get", "deployments", ""),
        ("patch", "deployments", ""),
        ("patch", "daemonsets", ""),
        ("get", "deployments", "scale"),
        ("patch", "statefulsets", "scale"),
        ("list", "replicasets", ""),
        ("list", "horizontalpodautoscalers", ""),
        ("get", "clusterroles", ""),
        ("create", "rolebindings", ""),
        ("list", "rolebindings", ""),
        ("delete", "rolebindings", ""),
        ("deletecollection", "rolebindings", ""),
    ]:
        assert needed in used, needed


def test_anything_outside_the_role_is_refused_with_403(
    kube: FakeKubernetes, enforced: RbacAuthorizer, tmp_path: Path
) -> None:
    config = write_kubeconfig(tmp_path / "kubeconfig", {"staging": kube})
    backend = KubernetesBackend(kubeconfig=str(config))
    try:
        # a RoleBinding to a ClusterRole the policy does not grant
        body = role_binding_body(
            grant_id=7,
            namespace="staging-api",
            cluster_role="edit",
            kubernetes_user="alice@example.com",
            expires_at=datetime.now(UTC) + timedelta(hours=1),
        )
        with pytest.raises(Forbidden, match='may not bind clusterrole "edit"'):
            backend.apply_role_binding("staging", "staging-api", body)
        assert kube.get_object(RB_API, "RoleBinding", "staging-api", "opsgate-grant-7") is None
        # reading a ClusterRole outside the policy
        with pytest.raises(Forbidden, match='cannot get resource "clusterroles"'):
            backend.get_cluster_role("staging", "cluster-admin")
        # the view binding is allowed
        backend.apply_role_binding(
            "staging",
            "staging-api",
            body
            | {
                "roleRef": {
                    "apiGroup": "rbac.authorization.k8s.io",
                    "kind": "ClusterRole",
                    "name": "view",
                }
            },
        )
    finally:
        backend.close()
    # deleting a Deployment, with the real kubectl: the API server's 403 as kubectl shows it
    kubectl = require_kubectl()
    done = subprocess.run(
        [kubectl, "--kubeconfig", str(config), "-n", "staging-api", "delete", "deployment", "api"],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert done.returncode == 1
    assert (
        'deployments.apps "api" is forbidden: User "system:serviceaccount:opsgate:opsgate" '
        'cannot delete resource "deployments" in API group "apps" in the namespace "staging-api"'
    ) in done.stderr
    assert kube.get_object("apps/v1", "Deployment", "staging-api", "api") is not None
    assert ("delete", "deployments", "") in {
        (i.verb, i.resource, i.subresource) for i in enforced.denied
    }


def test_the_request_forms_workload_search_works_under_the_printed_cluster_role(
    kube: FakeKubernetes, enforced: RbacAuthorizer, tmp_path: Path
) -> None:
    config = write_kubeconfig(tmp_path / "kubeconfig", {"staging": kube})
    backend = KubernetesBackend(kubeconfig=str(config))
    try:
        assert backend.list_workloads("staging", "staging-api") == [
            ("Deployment", "api"),
            ("StatefulSet", "db"),
            ("DaemonSet", "agent"),
        ]
    finally:
        backend.close()
    assert enforced.denied == []
    listed = {(i.verb, i.resource) for i in enforced.allowed}
    assert {("list", "deployments"), ("list", "statefulsets"), ("list", "daemonsets")} <= listed
