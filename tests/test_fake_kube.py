"""The fake Kubernetes API server, driven by the official client and by the real kubectl."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import urllib3
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from tests.fakes.kube import (
    FakeKubernetes,
    daemonset,
    deployment,
    horizontal_pod_autoscaler,
    json_patch,
    merge_patch,
    replicaset,
    statefulset,
    strategic_merge_patch,
    write_kubeconfig,
)
from tests.helpers.kubectl import kubectl

NS = "shop"


@pytest.fixture
def fake() -> Iterator[FakeKubernetes]:
    """The storage layer alone: no controllers (they are tested with ``cluster`` below)."""
    with FakeKubernetes(controllers=False) as server:
        yield server


@pytest.fixture
def kubeconfig(fake: FakeKubernetes, tmp_path: Path) -> Path:
    return write_kubeconfig(tmp_path / "kubeconfig", {"test": fake})


@pytest.fixture
def api_client(kubeconfig: Path) -> Iterator[client.ApiClient]:
    with config.new_client_from_config(config_file=str(kubeconfig), context="test") as api:
        yield api


@pytest.fixture
def apps(api_client: client.ApiClient) -> client.AppsV1Api:
    return client.AppsV1Api(api_client)


@pytest.fixture
def http() -> Iterator[urllib3.PoolManager]:
    with urllib3.PoolManager() as pool:
        yield pool


def status_of(error: ApiException) -> dict[str, Any]:
    body = json.loads(error.body)
    assert isinstance(body, dict)
    return body


def stored(fake: FakeKubernetes, name: str = "web", kind: str = "Deployment") -> dict[str, Any]:
    obj = fake.get_object("apps/v1", kind, NS, name)
    assert obj is not None, f"{kind} {NS}/{name} is not stored"
    return obj


def two_container_deployment(fake: FakeKubernetes) -> dict[str, Any]:
    obj = deployment("web", NS, replicas=2)
    obj["spec"]["template"]["spec"]["containers"] = [
        {"name": "app", "image": "shop/app:1", "env": [{"name": "A", "value": "1"}]},
        {"name": "sidecar", "image": "envoy:1.30"},
    ]
    return fake.add(obj)


# --------------------------------------------------------------------------- Python client


def test_discovery(api_client: client.ApiClient, fake: FakeKubernetes) -> None:
    assert client.VersionApi(api_client).get_code().git_version.startswith("v1.")
    assert client.CoreApi(api_client).get_api_versions().versions == ["v1"]
    groups = {g.name: g for g in client.ApisApi(api_client).get_api_versions().groups}
    assert {"apps", "rbac.authorization.k8s.io", "autoscaling"} <= set(groups)
    assert groups["autoscaling"].preferred_version.group_version == "autoscaling/v2"

    resources = {r.name: r for r in client.AppsV1Api(api_client).get_api_resources().resources}
    deploy = resources["deployments"]
    assert deploy.kind == "Deployment"
    assert deploy.short_names == ["deploy"]
    assert deploy.namespaced is True
    assert deploy.singular_name == "deployment"
    assert {"get", "list", "create", "update", "patch", "delete"} <= set(deploy.verbs)
    scale = resources["deployments/scale"]
    assert (scale.group, scale.version, scale.kind) == ("autoscaling", "v1", "Scale")
    assert "statefulsets/scale" in resources
    assert "daemonsets/scale" not in resources
    assert "deployments/status" in resources
    assert resources["statefulsets"].short_names == ["sts"]

    core = {r.name: r for r in client.CoreV1Api(api_client).get_api_resources().resources}
    assert core["namespaces"].short_names == ["ns"]
    assert core["namespaces"].namespaced is False
    rbac = client.RbacAuthorizationV1Api(api_client).get_api_resources().resources
    assert {r.name for r in rbac} == {"rolebindings", "clusterroles"}


def test_openapi_and_unknown_paths_answer_404_status(
    fake: FakeKubernetes, http: urllib3.PoolManager
) -> None:
    for path in ("/openapi/v2", "/openapi/v3", "/apis/batch/v1/cronjobs", "/healthz/nope"):
        response = http.request("GET", fake.url + path)
        assert response.status == 404
        assert response.json() == {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": "the server could not find the requested resource",
            "reason": "NotFound",
            "details": {},
            "code": 404,
        }


def test_wrong_token_is_refused(fake: FakeKubernetes, http: urllib3.PoolManager) -> None:
    url = fake.url + "/apis/apps/v1/deployments"
    response = http.request("GET", url, headers={"Authorization": "Bearer nope"})
    assert response.status == 401
    assert response.json()["reason"] == "Unauthorized"
    good = http.request("GET", url, headers={"Authorization": f"Bearer {fake.token}"})
    assert good.status == 200


def test_get_and_list_with_selectors(fake: FakeKubernetes, apps: client.AppsV1Api) -> None:
    fake.add(deployment("web", NS, labels={"app": "web", "tier": "front"}))
    fake.add(deployment("api", NS, labels={"app": "api", "tier": "back"}))
    fake.add(deployment("web", "other", labels={"app": "web", "tier": "front", "env": "prod"}))

    got = apps.read_namespaced_deployment("web", NS)
    assert got.metadata.name == "web"
    assert got.metadata.uid
    assert got.api_version == "apps/v1"
    assert got.kind == "Deployment"

    names = [d.metadata.name for d in apps.list_namespaced_deployment(NS).items]
    assert names == ["api", "web"]
    front = apps.list_namespaced_deployment(NS, label_selector="tier=front")
    assert [d.metadata.name for d in front.items] == ["web"]
    everywhere = apps.list_deployment_for_all_namespaces(label_selector="app==web,env!=prod")
    assert [(d.metadata.namespace, d.metadata.name) for d in everywhere.items] == [(NS, "web")]
    all_web = apps.list_deployment_for_all_namespaces(field_selector="metadata.name=web")
    assert sorted(d.metadata.namespace for d in all_web.items) == ["other", NS]
    listed = apps.list_deployment_for_all_namespaces()
    assert listed.kind == "DeploymentList"
    assert int(listed.metadata.resource_version) >= int(got.metadata.resource_version)


def test_list_body_is_a_typed_list(fake: FakeKubernetes, http: urllib3.PoolManager) -> None:
    fake.add(deployment("web", NS))
    body = http.request("GET", f"{fake.url}/apis/apps/v1/namespaces/{NS}/deployments").json()
    assert body["kind"] == "DeploymentList"
    assert body["apiVersion"] == "apps/v1"
    assert body["metadata"]["resourceVersion"]
    assert [item["metadata"]["name"] for item in body["items"]] == ["web"]


def test_server_fields(fake: FakeKubernetes) -> None:
    first = fake.add(deployment("web", NS))
    second = fake.add(deployment("api", NS))
    meta = first["metadata"]
    assert meta["generation"] == 1
    assert isinstance(meta["resourceVersion"], str)
    assert int(second["metadata"]["resourceVersion"]) > int(meta["resourceVersion"])
    created = dt.datetime.fromisoformat(meta["creationTimestamp"].replace("Z", "+00:00"))
    assert abs((dt.datetime.now(dt.UTC) - created).total_seconds()) < 60
    assert meta["creationTimestamp"].endswith("Z")
    assert fake.get_object("v1", "Namespace", None, NS) is not None  # auto-created
    web = stored(fake)
    assert web == first
    web["spec"]["replicas"] = 99  # a deep copy
    assert stored(fake)["spec"]["replicas"] == 1
    assert [d["metadata"]["name"] for d in fake.objects("Deployment")] == ["api", "web"]


def test_create_and_already_exists(fake: FakeKubernetes, apps: client.AppsV1Api) -> None:
    fake.add({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}})
    body = deployment("web", NS)
    created = apps.create_namespaced_deployment(NS, body)
    assert created.metadata.generation == 1
    assert created.status.replicas is None  # a new object's status is empty
    with pytest.raises(ApiException) as caught:
        apps.create_namespaced_deployment(NS, body)
    assert caught.value.status == 409
    assert status_of(caught.value) == {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": 'deployments.apps "web" already exists',
        "reason": "AlreadyExists",
        "details": {"name": "web", "group": "apps", "kind": "deployments"},
        "code": 409,
    }


def test_create_in_missing_namespace_is_404(apps: client.AppsV1Api) -> None:
    with pytest.raises(ApiException) as caught:
        apps.create_namespaced_deployment("nowhere", deployment("web", "nowhere"))
    assert caught.value.status == 404
    body = status_of(caught.value)
    assert body["message"] == 'namespaces "nowhere" not found'
    assert body["details"] == {"name": "nowhere", "kind": "namespaces"}


def test_create_invalid_name_is_422(fake: FakeKubernetes, apps: client.AppsV1Api) -> None:
    fake.add({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}})
    with pytest.raises(ApiException) as caught:
        apps.create_namespaced_deployment(NS, deployment("Bad_Name", NS))
    assert caught.value.status == 422
    body = status_of(caught.value)
    assert body["reason"] == "Invalid"
    assert body["message"].startswith('Deployment.apps "Bad_Name" is invalid: metadata.name')
    assert body["details"]["causes"][0]["field"] == "metadata.name"


def test_put_with_stale_resource_version_conflicts(
    fake: FakeKubernetes, apps: client.AppsV1Api
) -> None:
    stale = fake.add(deployment("web", NS))
    fresh = apps.read_namespaced_deployment("web", NS)
    fresh.spec.replicas = 3
    replaced = apps.replace_namespaced_deployment("web", NS, fresh)
    assert replaced.spec.replicas == 3
    assert replaced.metadata.generation == 2

    stale["spec"]["replicas"] = 7
    with pytest.raises(ApiException) as caught:
        apps.replace_namespaced_deployment("web", NS, stale)
    assert caught.value.status == 409
    assert status_of(caught.value) == {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": 'Operation cannot be fulfilled on deployments.apps "web": the object has been '
        "modified; please apply your changes to the latest version and try again",
        "reason": "Conflict",
        "details": {"name": "web", "group": "apps", "kind": "deployments"},
        "code": 409,
    }
    assert stored(fake)["spec"]["replicas"] == 3


def test_put_of_missing_object_is_404(fake: FakeKubernetes, apps: client.AppsV1Api) -> None:
    fake.add({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}})
    with pytest.raises(ApiException) as caught:
        apps.replace_namespaced_deployment("web", NS, deployment("web", NS))
    assert caught.value.status == 404


def test_json_patch_and_failing_test_is_422(fake: FakeKubernetes, apps: client.AppsV1Api) -> None:
    fake.add(deployment("web", NS, replicas=2))
    patched = apps.patch_namespaced_deployment(
        "web",
        NS,
        [
            {"op": "test", "path": "/spec/replicas", "value": 2},
            {"op": "replace", "path": "/spec/replicas", "value": 4},
            {"op": "add", "path": "/metadata/labels/team", "value": "payments"},
        ],
    )
    assert patched.spec.replicas == 4
    assert patched.metadata.labels["team"] == "payments"
    assert fake.requests_matching("PATCH")[-1].content_type == "application/json-patch+json"

    with pytest.raises(ApiException) as caught:
        apps.patch_namespaced_deployment(
            "web", NS, [{"op": "test", "path": "/spec/replicas", "value": 2}]
        )
    assert caught.value.status == 422
    assert status_of(caught.value) == {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": "the server rejected our request due to an error in our request",
        "reason": "Invalid",
        "details": {},
        "code": 422,
    }


def test_merge_patch(fake: FakeKubernetes, apps: client.AppsV1Api) -> None:
    two_container_deployment(fake)
    patched = apps.patch_namespaced_deployment(
        "web",
        NS,
        {
            "metadata": {"labels": {"app": None, "team": "payments"}},
            "spec": {"template": {"spec": {"containers": [{"name": "app", "image": "app:2"}]}}},
        },
        _content_type="application/merge-patch+json",
    )
    assert patched.metadata.labels == {"team": "payments"}
    # a merge patch replaces lists whole
    containers = patched.spec.template.spec.containers
    assert [(c.name, c.image) for c in containers] == [("app", "app:2")]
    assert fake.requests_matching("PATCH")[-1].content_type == "application/merge-patch+json"


def test_strategic_merge_patch_of_containers_and_env(
    fake: FakeKubernetes, apps: client.AppsV1Api
) -> None:
    two_container_deployment(fake)
    patched = apps.patch_namespaced_deployment(
        "web",
        NS,
        {
            "spec": {
                "template": {
                    "spec": {
                        "containers": [
                            {
                                "name": "app",
                                "image": "shop/app:2",
                                "env": [{"name": "B", "value": "2"}, {"name": "A", "value": "9"}],
                            }
                        ]
                    }
                }
            }
        },
    )
    # a plain dict body is sent as a strategic merge patch by the client
    assert fake.requests_matching("PATCH")[-1].content_type == (
        "application/strategic-merge-patch+json"
    )
    containers = {c.name: c for c in patched.spec.template.spec.containers}
    assert [c.name for c in patched.spec.template.spec.containers] == ["app", "sidecar"]
    assert containers["app"].image == "shop/app:2"
    assert containers["sidecar"].image == "envoy:1.30"
    # as on a real server: the patch's items in the patch's order
    assert [(e.name, e.value) for e in containers["app"].env] == [("B", "2"), ("A", "9")]

    removed = apps.patch_namespaced_deployment(
        "web",
        NS,
        {
            "spec": {
                "template": {
                    "spec": {"containers": [{"name": "sidecar", "$patch": "delete"}]},
                }
            }
        },
    )
    assert [c.name for c in removed.spec.template.spec.containers] == ["app"]


def test_generation_bumps_on_spec_changes_only(
    fake: FakeKubernetes, apps: client.AppsV1Api
) -> None:
    start = fake.add(deployment("web", NS))["metadata"]
    labelled = apps.patch_namespaced_deployment("web", NS, {"metadata": {"labels": {"x": "y"}}})
    assert labelled.metadata.generation == 1
    assert int(labelled.metadata.resource_version) > int(start["resourceVersion"])

    status = apps.patch_namespaced_deployment_status("web", NS, {"status": {"replicas": 5}})
    assert status.metadata.generation == 1
    assert status.status.replicas == 5

    spec = apps.patch_namespaced_deployment("web", NS, {"spec": {"replicas": 3}})
    assert spec.metadata.generation == 2

    # a no-op patch stores nothing: same resourceVersion, same generation
    again = apps.patch_namespaced_deployment("web", NS, {"spec": {"replicas": 3}})
    assert again.metadata.resource_version == spec.metadata.resource_version
    assert again.metadata.generation == 2


def test_status_subresource_only_changes_status(
    fake: FakeKubernetes, apps: client.AppsV1Api
) -> None:
    fake.add(deployment("web", NS, replicas=2))
    # spec in a status update is ignored, status in a main-resource update is ignored
    updated = apps.patch_namespaced_deployment_status(
        "web", NS, {"spec": {"replicas": 9}, "status": {"readyReplicas": 0}}
    )
    assert updated.spec.replicas == 2
    assert updated.status.ready_replicas == 0
    main = apps.patch_namespaced_deployment(
        "web", NS, {"spec": {"replicas": 4}, "status": {"readyReplicas": 4}}
    )
    assert main.spec.replicas == 4
    assert main.status.ready_replicas == 0
    read = apps.read_namespaced_deployment_status("web", NS)
    assert read.status.ready_replicas == 0


def test_not_found_body_parses_into_status(apps: client.AppsV1Api) -> None:
    with pytest.raises(ApiException) as caught:
        apps.read_namespaced_deployment("ghost", NS)
    assert caught.value.status == 404
    body = status_of(caught.value)
    assert body == {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": 'deployments.apps "ghost" not found',
        "reason": "NotFound",
        "details": {"name": "ghost", "group": "apps", "kind": "deployments"},
        "code": 404,
    }
    status = client.V1Status.from_dict(body)
    assert status is not None
    assert status.reason == "NotFound"
    assert status.details.name == "ghost"


def test_odd_patch_content_type_is_415(fake: FakeKubernetes, http: urllib3.PoolManager) -> None:
    fake.add(deployment("web", NS))
    response = http.request(
        "PATCH",
        f"{fake.url}/apis/apps/v1/namespaces/{NS}/deployments/web",
        body=b'{"spec": {"replicas": 2}}',
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {fake.token}"},
    )
    assert response.status == 415
    body = response.json()
    assert body["reason"] == "UnsupportedMediaType"
    assert body["code"] == 415
    assert body["message"].startswith(
        "the body of the request was in an unknown format - accepted media types include: "
        "application/json-patch+json, application/merge-patch+json"
    )
    assert stored(fake)["spec"]["replicas"] == 1


def test_delete_returns_a_status(fake: FakeKubernetes, apps: client.AppsV1Api) -> None:
    uid = fake.add(deployment("web", NS))["metadata"]["uid"]
    answer = apps.delete_namespaced_deployment("web", NS)
    assert answer == {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Success",
        "details": {"name": "web", "group": "apps", "kind": "deployments", "uid": uid},
    }
    assert fake.get_object("apps/v1", "Deployment", NS, "web") is None
    with pytest.raises(ApiException) as caught:
        apps.delete_namespaced_deployment("web", NS)
    assert caught.value.status == 404
    assert fake.requests_matching("DELETE")[0].body is None  # no DeleteOptions at all


def test_delete_precondition_conflict(fake: FakeKubernetes, apps: client.AppsV1Api) -> None:
    fake.add(deployment("web", NS))
    with pytest.raises(ApiException) as caught:
        apps.delete_namespaced_deployment(
            "web", NS, body={"preconditions": {"resourceVersion": "1"}}
        )
    assert caught.value.status == 409
    assert status_of(caught.value)["reason"] == "Conflict"
    assert fake.get_object("apps/v1", "Deployment", NS, "web") is not None


def test_dry_run_stores_nothing(fake: FakeKubernetes, apps: client.AppsV1Api) -> None:
    before = fake.add(deployment("web", NS))
    created = apps.create_namespaced_deployment(NS, deployment("api", NS), dry_run="All")
    assert created.metadata.name == "api"
    assert fake.get_object("apps/v1", "Deployment", NS, "api") is None

    patched = apps.patch_namespaced_deployment("web", NS, {"spec": {"replicas": 5}}, dry_run="All")
    assert patched.spec.replicas == 5
    assert patched.metadata.generation == 2
    assert fake.get_object("apps/v1", "Deployment", NS, "web") == before

    replaced = apps.replace_namespaced_deployment("web", NS, before | {}, dry_run="All")
    assert replaced.metadata.name == "web"
    apps.delete_namespaced_deployment("web", NS, dry_run="All")
    assert fake.get_object("apps/v1", "Deployment", NS, "web") == before

    rv = apps.list_namespaced_deployment(NS).metadata.resource_version
    assert rv == before["metadata"]["resourceVersion"]


def test_scale_subresource(fake: FakeKubernetes, apps: client.AppsV1Api) -> None:
    fake.add(deployment("web", NS, replicas=2, labels={"app": "web", "tier": "front"}))
    scale = apps.read_namespaced_deployment_scale("web", NS)
    assert scale.kind == "Scale"
    assert scale.api_version == "autoscaling/v1"
    assert scale.spec.replicas == 2
    assert scale.status.replicas == 2
    assert scale.status.selector == "app=web,tier=front"

    scaled = apps.patch_namespaced_deployment_scale("web", NS, {"spec": {"replicas": 6}})
    assert scaled.spec.replicas == 6
    web = stored(fake)
    assert web["spec"]["replicas"] == 6
    assert web["metadata"]["generation"] == 2

    with pytest.raises(ApiException) as caught:
        apps.patch_namespaced_deployment_scale("web", NS, {"spec": {"replicas": -1}})
    assert caught.value.status == 422

    fake.add(statefulset("db", NS, replicas=3))
    current = apps.read_namespaced_stateful_set_scale("db", NS)
    current.spec.replicas = 1
    assert apps.replace_namespaced_stateful_set_scale("db", NS, current).spec.replicas == 1
    assert stored(fake, "db", "StatefulSet")["spec"]["replicas"] == 1
    with pytest.raises(ApiException) as caught:
        apps.replace_namespaced_stateful_set_scale("db", NS, current)  # stale resourceVersion
    assert caught.value.status == 409


def test_fail_next(fake: FakeKubernetes, apps: client.AppsV1Api) -> None:
    fake.add(deployment("web", NS))
    fake.fail_next(method="PATCH", path_contains="/deployments/web")
    apps.read_namespaced_deployment("web", NS)  # not matched
    with pytest.raises(ApiException) as caught:
        apps.patch_namespaced_deployment("web", NS, {"spec": {"replicas": 2}})
    assert caught.value.status == 500
    assert status_of(caught.value)["reason"] == "InternalError"
    assert apps.patch_namespaced_deployment("web", NS, {"spec": {"replicas": 2}}).spec.replicas == 2

    fake.fail_next(2, status=503, reason="ServiceUnavailable", message="etcd is sad")
    for _ in range(2):
        with pytest.raises(ApiException) as caught:
            apps.read_namespaced_deployment("web", NS)
        assert caught.value.status == 503
        assert status_of(caught.value)["message"] == "etcd is sad"
    apps.read_namespaced_deployment("web", NS)


def test_hang_next_times_out_the_client(fake: FakeKubernetes, kubeconfig: Path) -> None:
    fake.add(deployment("web", NS))
    settings = client.Configuration()
    settings.retries = False  # urllib3 would otherwise retry a timed-out GET 3 times
    with config.new_client_from_config(
        config_file=str(kubeconfig), client_configuration=settings
    ) as api:
        apps = client.AppsV1Api(api)
        fake.hang_next(5, method="GET", path_contains="/deployments/web")
        with pytest.raises(urllib3.exceptions.ReadTimeoutError):
            apps.read_namespaced_deployment("web", NS, _request_timeout=0.2)
        assert apps.read_namespaced_deployment("web", NS).metadata.name == "web"


def test_hang_next_with_default_retries(fake: FakeKubernetes, apps: client.AppsV1Api) -> None:
    fake.add(deployment("web", NS))
    fake.hang_next(5, count=4, method="GET")  # the first try and urllib3's 3 retries
    with pytest.raises(urllib3.exceptions.MaxRetryError) as caught:
        apps.read_namespaced_deployment("web", NS, _request_timeout=0.2)
    assert isinstance(caught.value.reason, urllib3.exceptions.ReadTimeoutError)
    assert len(fake.requests_matching("GET", "/deployments/web")) == 4


def test_stop_does_not_wait_for_hung_handlers(tmp_path: Path) -> None:
    with FakeKubernetes() as other:
        path = write_kubeconfig(tmp_path / "other", {"other": other})
        other.hang_next(30)
        settings = client.Configuration()
        settings.retries = False
        with config.new_client_from_config(
            config_file=str(path), client_configuration=settings
        ) as api:
            pending = client.CoreV1Api(api).list_namespace(async_req=True)
            deadline = time.monotonic() + 10
            while not other.requests and time.monotonic() < deadline:
                time.sleep(0.01)
            started = time.monotonic()
            other.stop()
            assert time.monotonic() - started < 5
            with pytest.raises(urllib3.exceptions.HTTPError):
                pending.get(timeout=10)


def test_requests_are_recorded(fake: FakeKubernetes, apps: client.AppsV1Api) -> None:
    fake.add(deployment("web", NS))
    apps.patch_namespaced_deployment("web", NS, {"spec": {"replicas": 2}}, field_manager="bot")
    (patch,) = fake.requests_matching(method="patch", path_contains="/deployments/web")
    assert patch.path == f"/apis/apps/v1/namespaces/{NS}/deployments/web"
    assert patch.query == {"fieldManager": "bot"}
    assert patch.body == {"spec": {"replicas": 2}}
    assert patch.headers["authorization"] == f"Bearer {fake.token}"
    fake.clear_requests()
    assert fake.requests == []


def test_several_contexts(tmp_path: Path) -> None:
    with FakeKubernetes() as staging, FakeKubernetes() as prod:
        staging.add(deployment("web", NS, replicas=1))
        prod.add(deployment("web", NS, replicas=9))
        path = write_kubeconfig(tmp_path / "kc", {"staging": staging, "prod": prod}, "prod")
        contexts, current = config.list_kube_config_contexts(config_file=str(path))
        assert [c["name"] for c in contexts] == ["staging", "prod"]
        assert current["name"] == "prod"
        for context, replicas in (("staging", 1), ("prod", 9)):
            with config.new_client_from_config(config_file=str(path), context=context) as api:
                got = client.AppsV1Api(api).read_namespaced_deployment("web", NS)
                assert got.spec.replicas == replicas


def test_builders_are_plausible(fake: FakeKubernetes) -> None:
    deploy = fake.add(deployment("web", NS, replicas=3, ready_replicas=1))
    assert deploy["spec"]["selector"]["matchLabels"] == {"app": "web"}
    assert deploy["spec"]["template"]["metadata"]["labels"] == {"app": "web"}
    assert deploy["status"]["readyReplicas"] == 1
    assert deploy["status"]["updatedReplicas"] == 3
    conditions = {c["type"]: c["status"] for c in deploy["status"]["conditions"]}
    assert conditions == {"Available": "False", "Progressing": "True"}
    sts = fake.add(statefulset("db", NS, replicas=2))
    assert sts["status"]["readyReplicas"] == 2
    ds = fake.add(daemonset("agent", NS, desired=4, ready=3))
    assert ds["status"]["desiredNumberScheduled"] == 4
    assert ds["status"]["numberReady"] == 3
    rs = fake.add(replicaset("web-abc", NS, template=deploy["spec"]["template"], revision=2))
    assert rs["metadata"]["annotations"]["deployment.kubernetes.io/revision"] == "2"
    assert "pod-template-hash" in rs["spec"]["template"]["metadata"]["labels"]
    # seeding an existing object replaces it, bumping generation on spec change
    again = fake.add(deployment("web", NS, replicas=4))
    assert again["metadata"]["uid"] == deploy["metadata"]["uid"]
    assert again["metadata"]["generation"] == 2
    assert again["status"]["replicas"] == 4


# --------------------------------------------------------------------------- pure patch functions


def test_json_patch_operations() -> None:
    doc = {"a": {"b": [1, 2]}, "c": True}
    ops = [
        {"op": "add", "path": "/a/b/-", "value": 3},
        {"op": "move", "from": "/c", "path": "/d"},
        {"op": "copy", "from": "/a/b", "path": "/e"},
        {"op": "remove", "path": "/a/b/0"},
        {"op": "test", "path": "/d", "value": True},
    ]
    assert json_patch(doc, ops) == {"a": {"b": [2, 3]}, "d": True, "e": [1, 2, 3]}
    assert doc == {"a": {"b": [1, 2]}, "c": True}


def test_merge_patch_rfc7386() -> None:
    assert merge_patch({"a": "b", "c": {"d": "e", "f": "g"}}, {"a": "z", "c": {"f": None}}) == {
        "a": "z",
        "c": {"d": "e"},
    }
    assert merge_patch({"a": [1, 2]}, {"a": [3]}) == {"a": [3]}


def test_strategic_merge_patch_keys() -> None:
    original = {
        "metadata": {"finalizers": ["a"]},
        "spec": {
            "containers": [
                {
                    "name": "app",
                    "ports": [{"containerPort": 80, "name": "http"}],
                    "volumeMounts": [{"mountPath": "/data", "name": "data"}],
                    "args": ["--one"],
                }
            ],
            "volumes": [{"name": "data", "emptyDir": {}}],
        },
    }
    patch = {
        "metadata": {"finalizers": ["b"]},
        "spec": {
            "containers": [
                {
                    "name": "app",
                    "ports": [{"containerPort": 80, "name": "web"}, {"containerPort": 443}],
                    "volumeMounts": [{"mountPath": "/data", "readOnly": True}],
                    "args": ["--two"],
                }
            ],
            "volumes": [{"name": "cache", "emptyDir": {}}],
        },
    }
    result = strategic_merge_patch(original, patch)
    container = result["spec"]["containers"][0]
    assert container["ports"] == [{"containerPort": 80, "name": "web"}, {"containerPort": 443}]
    assert container["volumeMounts"] == [{"mountPath": "/data", "name": "data", "readOnly": True}]
    assert container["args"] == ["--two"]
    # an item new to a merged list comes first, as on a real server
    assert [v["name"] for v in result["spec"]["volumes"]] == ["cache", "data"]
    assert result["metadata"]["finalizers"] == ["b", "a"]
    replaced = strategic_merge_patch(original, {"spec": {"$patch": "replace", "volumes": []}})
    assert replaced["spec"] == {"volumes": []}


# --------------------------------------------------------------------------- real kubectl


@pytest.mark.kubectl
def test_kubectl_get(fake: FakeKubernetes, kubeconfig: Path, tmp_path: Path) -> None:
    fake.add(deployment("web", NS, replicas=3))
    fake.add(deployment("api", NS, replicas=2, ready_replicas=1))
    listed = kubectl(kubeconfig, tmp_path / "home", "get", "deploy", "-n", NS)
    assert listed.returncode == 0, listed.stderr
    lines = [line.split() for line in listed.stdout.splitlines()]
    assert lines[0] == ["NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE"]
    assert [line[:4] for line in lines[1:]] == [["api", "1/2", "2", "1"], ["web", "3/3", "3", "3"]]
    get = fake.requests_matching("GET", f"/namespaces/{NS}/deployments")[-1]
    assert "as=Table" in get.headers["accept"]
    # legacy discovery answers are enough: kubectl falls back from aggregated discovery and
    # never needs the OpenAPI documents for these commands
    assert not [r.path for r in fake.requests if r.path.startswith("/openapi")]

    empty = kubectl(kubeconfig, tmp_path / "home", "get", "sts", "-n", NS)
    assert empty.returncode == 0, empty.stderr
    assert f"No resources found in {NS} namespace." in empty.stderr

    one = kubectl(kubeconfig, tmp_path / "home", "get", "deploy", "web", "-n", NS, "-o", "json")
    assert one.returncode == 0, one.stderr
    body = json.loads(one.stdout)
    assert body["kind"] == "Deployment"
    assert body["metadata"]["name"] == "web"
    assert body["spec"]["replicas"] == 3

    missing = kubectl(kubeconfig, tmp_path / "home", "get", "deploy", "ghost", "-n", NS)
    assert missing.returncode == 1
    assert 'Error from server (NotFound): deployments.apps "ghost" not found' in missing.stderr


@pytest.mark.kubectl
def test_kubectl_rollout_restart(fake: FakeKubernetes, kubeconfig: Path, tmp_path: Path) -> None:
    fake.add(deployment("web", NS))
    result = kubectl(
        kubeconfig, tmp_path / "home", "rollout", "restart", "deployment/web", "-n", NS
    )
    assert result.returncode == 0, result.stderr
    assert "deployment.apps/web restarted" in result.stdout
    web = stored(fake)
    stamp = web["spec"]["template"]["metadata"]["annotations"]["kubectl.kubernetes.io/restartedAt"]
    restarted = dt.datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    assert abs((dt.datetime.now(dt.UTC) - restarted).total_seconds()) < 120
    assert web["metadata"]["generation"] == 2
    (patch,) = fake.requests_matching("PATCH")
    assert patch.content_type == "application/strategic-merge-patch+json"


@pytest.mark.kubectl
def test_kubectl_scale(fake: FakeKubernetes, kubeconfig: Path, tmp_path: Path) -> None:
    fake.add(deployment("web", NS, replicas=2))
    result = kubectl(
        kubeconfig, tmp_path / "home", "scale", "deployment/web", "--replicas=5", "-n", NS
    )
    assert result.returncode == 0, result.stderr
    assert "deployment.apps/web scaled" in result.stdout
    assert stored(fake)["spec"]["replicas"] == 5
    (patch,) = fake.requests_matching("PATCH")
    assert patch.path.endswith("/deployments/web/scale")


@pytest.mark.kubectl
def test_kubectl_delete(fake: FakeKubernetes, kubeconfig: Path, tmp_path: Path) -> None:
    fake.add(deployment("web", NS))
    result = kubectl(kubeconfig, tmp_path / "home", "delete", "deploy", "web", "-n", NS)
    assert result.returncode == 0, result.stderr
    assert 'deployment.apps "web" deleted' in result.stdout
    assert fake.get_object("apps/v1", "Deployment", NS, "web") is None
    (delete,) = fake.requests_matching("DELETE")
    assert delete.body == {"propagationPolicy": "Background"}


@pytest.mark.kubectl
def test_kubectl_patch(fake: FakeKubernetes, kubeconfig: Path, tmp_path: Path) -> None:
    fake.add(deployment("web", NS, replicas=2))
    home = tmp_path / "home"
    ops = '[{"op": "test", "path": "/spec/replicas", "value": 2},'
    ops += ' {"op": "replace", "path": "/spec/replicas", "value": 4}]'
    as_json = kubectl(
        kubeconfig, home, "patch", "deploy", "web", "-n", NS, "--type=json", "-p", ops
    )
    assert as_json.returncode == 0, as_json.stderr
    assert "deployment.apps/web patched" in as_json.stdout
    assert stored(fake)["spec"]["replicas"] == 4

    failed = kubectl(kubeconfig, home, "patch", "deploy", "web", "-n", NS, "--type=json", "-p", ops)
    assert failed.returncode == 1
    assert "the server rejected our request due to an error in our request" in failed.stderr

    merge = '{"metadata": {"labels": {"team": "payments"}}}'
    as_merge = kubectl(
        kubeconfig, home, "patch", "deploy", "web", "-n", NS, "--type=merge", "-p", merge
    )
    assert as_merge.returncode == 0, as_merge.stderr
    web = stored(fake)
    assert web["metadata"]["labels"] == {"app": "web", "team": "payments"}
    assert web["metadata"]["generation"] == 2  # the label change did not bump it
    types = [r.content_type for r in fake.requests_matching("PATCH")]
    assert types == [
        "application/json-patch+json",
        "application/json-patch+json",
        "application/merge-patch+json",
    ]


# --------------------------------------------------------------------------- controllers

REVISION = "deployment.kubernetes.io/revision"


@pytest.fixture
def cluster() -> Iterator[FakeKubernetes]:
    """The fake with its controllers (the default)."""
    with FakeKubernetes() as server:
        yield server


@pytest.fixture
def cluster_kubeconfig(cluster: FakeKubernetes, tmp_path: Path) -> Path:
    return write_kubeconfig(tmp_path / "cluster-kubeconfig", {"test": cluster})


@pytest.fixture
def cluster_apps(cluster_kubeconfig: Path) -> Iterator[client.AppsV1Api]:
    with config.new_client_from_config(config_file=str(cluster_kubeconfig), context="test") as api:
        yield client.AppsV1Api(api)


def owned_replica_sets(fake: FakeKubernetes, name: str = "web") -> dict[int, dict[str, Any]]:
    """The ReplicaSets a Deployment owns, by revision."""
    owner = stored(fake, name)
    return {
        int(rs["metadata"]["annotations"][REVISION]): rs
        for rs in fake.objects("ReplicaSet")
        if any(r["uid"] == owner["metadata"]["uid"] for r in rs["metadata"]["ownerReferences"])
    }


def set_image(apps: client.AppsV1Api, image: str, name: str = "web") -> None:
    patch = {"spec": {"template": {"spec": {"containers": [{"name": name, "image": image}]}}}}
    apps.patch_namespaced_deployment(name, NS, patch)


def test_a_seeded_deployment_gets_the_replica_set_of_its_revision(cluster: FakeKubernetes) -> None:
    cluster.add(deployment("web", NS, replicas=3, image="web:1"))
    [(revision, rs)] = owned_replica_sets(cluster).items()
    assert revision == 1
    pod_hash = rs["metadata"]["labels"]["pod-template-hash"]
    assert rs["metadata"]["name"] == f"web-{pod_hash}"
    assert rs["spec"]["template"]["metadata"]["labels"] == {
        "app": "web",
        "pod-template-hash": pod_hash,
    }
    assert rs["spec"]["replicas"] == 3
    assert rs["metadata"]["ownerReferences"][0]["controller"] is True
    # seeding never starts a rollout: the seeded status stays as it was given
    assert not cluster.controllers.in_flight("Deployment", NS, "web")


def test_a_new_template_makes_a_new_replica_set_and_the_rollout_completes(
    cluster: FakeKubernetes, cluster_apps: client.AppsV1Api
) -> None:
    cluster.add(deployment("web", NS, replicas=3, image="web:1"))
    cluster.controllers.steps = 3
    set_image(cluster_apps, "web:2")
    raw = stored(cluster)  # not through HTTP: no read has moved the rollout yet
    assert raw["metadata"]["generation"] == 2
    assert raw["status"]["observedGeneration"] == 1
    assert raw["metadata"]["annotations"][REVISION] == "2"
    replica_sets = owned_replica_sets(cluster)
    assert sorted(replica_sets) == [1, 2]
    assert replica_sets[2]["spec"]["template"]["spec"]["containers"][0]["image"] == "web:2"

    first = cluster_apps.read_namespaced_deployment("web", NS)
    assert first.status.observed_generation == 2
    assert first.status.updated_replicas == 1
    progressing = {c.type: c for c in first.status.conditions}["Progressing"]
    assert (progressing.status, progressing.reason) == ("True", "ReplicaSetUpdated")
    cluster_apps.read_namespaced_deployment("web", NS)
    done = cluster_apps.read_namespaced_deployment("web", NS)
    assert (done.status.replicas, done.status.updated_replicas) == (3, 3)
    assert (done.status.ready_replicas, done.status.available_replicas) == (3, 3)
    conditions = {c.type: c for c in done.status.conditions}
    assert conditions["Progressing"].reason == "NewReplicaSetAvailable"
    assert conditions["Available"].status == "True"
    replica_sets = owned_replica_sets(cluster)
    assert (replica_sets[1]["spec"]["replicas"], replica_sets[2]["spec"]["replicas"]) == (0, 3)
    assert not cluster.controllers.in_flight("Deployment", NS, "web")


def test_scaling_propagates_to_the_current_replica_set(
    cluster: FakeKubernetes, cluster_apps: client.AppsV1Api
) -> None:
    cluster.add(deployment("web", NS, replicas=2))
    cluster_apps.patch_namespaced_deployment_scale("web", NS, {"spec": {"replicas": 5}})
    web = cluster_apps.read_namespaced_deployment("web", NS)
    assert (web.status.observed_generation, web.status.ready_replicas) == (2, 5)
    assert [rs["spec"]["replicas"] for rs in owned_replica_sets(cluster).values()] == [5]
    assert web.metadata.annotations[REVISION] == "1"  # same template, same revision


def test_back_to_an_old_template_reuses_its_replica_set_under_the_next_revision(
    cluster: FakeKubernetes, cluster_apps: client.AppsV1Api
) -> None:
    cluster.add(deployment("web", NS, image="web:1"))
    set_image(cluster_apps, "web:2")
    set_image(cluster_apps, "web:1")
    replica_sets = owned_replica_sets(cluster)
    assert sorted(replica_sets) == [2, 3]
    assert replica_sets[3]["spec"]["template"]["spec"]["containers"][0]["image"] == "web:1"
    assert (
        replica_sets[3]["metadata"]["annotations"]["deployment.kubernetes.io/revision-history"]
        == "1"
    )
    assert stored(cluster)["metadata"]["annotations"][REVISION] == "3"


def test_change_cause_is_copied_to_the_new_replica_set(
    cluster: FakeKubernetes, cluster_apps: client.AppsV1Api
) -> None:
    cluster.add(deployment("web", NS))
    cluster_apps.patch_namespaced_deployment(
        "web",
        NS,
        {
            "metadata": {"annotations": {"kubernetes.io/change-cause": "bump"}},
            "spec": {"template": {"spec": {"containers": [{"name": "web", "image": "web:9"}]}}},
        },
    )
    new = owned_replica_sets(cluster)[2]
    assert new["metadata"]["annotations"]["kubernetes.io/change-cause"] == "bump"


def test_a_stalled_rollout_exceeds_its_progress_deadline(
    cluster: FakeKubernetes, cluster_apps: client.AppsV1Api
) -> None:
    cluster.add(deployment("web", NS, replicas=3))
    cluster.stall(NS, "web", after_reads=2)
    set_image(cluster_apps, "web:2")
    first = cluster_apps.read_namespaced_deployment("web", NS)
    assert {c.type: c.reason for c in first.status.conditions}["Progressing"] == "ReplicaSetUpdated"
    second = cluster_apps.read_namespaced_deployment("web", NS)
    progressing = {c.type: c for c in second.status.conditions}["Progressing"]
    assert progressing.status == "False"
    assert progressing.reason == "ProgressDeadlineExceeded"
    new_rs = owned_replica_sets(cluster)[2]["metadata"]["name"]
    assert progressing.message == f'ReplicaSet "{new_rs}" has timed out progressing.'
    assert second.status.updated_replicas in (None, 0)
    cluster.unstall(NS, "web")
    done = cluster_apps.read_namespaced_deployment("web", NS)
    assert {c.type: c.reason for c in done.status.conditions}["Progressing"] == (
        "NewReplicaSetAvailable"
    )


def test_stateful_set_and_daemon_set_status_progression(
    cluster: FakeKubernetes, cluster_apps: client.AppsV1Api
) -> None:
    cluster.add(statefulset("db", NS, replicas=3))
    cluster.add(daemonset("agent", NS, desired=4))
    cluster.controllers.steps = 2
    patch = {"spec": {"template": {"metadata": {"annotations": {"x": "1"}}}}}
    cluster_apps.patch_namespaced_stateful_set("db", NS, patch)
    cluster_apps.patch_namespaced_daemon_set("agent", NS, patch)
    db = cluster_apps.read_namespaced_stateful_set("db", NS)
    assert db.status.observed_generation == 2
    assert db.status.update_revision != db.status.current_revision
    agent = cluster_apps.read_namespaced_daemon_set("agent", NS)
    assert agent.status.updated_number_scheduled == 2
    db = cluster_apps.read_namespaced_stateful_set("db", NS)
    assert db.status.update_revision == db.status.current_revision
    assert (db.status.ready_replicas, db.status.updated_replicas) == (3, 3)
    agent = cluster_apps.read_namespaced_daemon_set("agent", NS)
    assert (agent.status.updated_number_scheduled, agent.status.number_available) == (4, 4)
    assert agent.status.observed_generation == 2


def test_dry_run_and_status_writes_start_no_rollout(
    cluster: FakeKubernetes, cluster_apps: client.AppsV1Api
) -> None:
    cluster.add(deployment("web", NS))
    set_image_patch = {
        "spec": {"template": {"spec": {"containers": [{"name": "web", "image": "x"}]}}}
    }
    cluster_apps.patch_namespaced_deployment("web", NS, set_image_patch, dry_run="All")
    cluster_apps.patch_namespaced_deployment_status("web", NS, {"status": {"replicas": 1}})
    assert not cluster.controllers.in_flight("Deployment", NS, "web")
    assert list(owned_replica_sets(cluster)) == [1]


def test_horizontal_pod_autoscalers_are_served(
    cluster: FakeKubernetes, cluster_kubeconfig: Path
) -> None:
    cluster.add(horizontal_pod_autoscaler("web", NS, min_replicas=2, max_replicas=8))
    with config.new_client_from_config(config_file=str(cluster_kubeconfig), context="test") as api:
        listed = client.AutoscalingV2Api(api).list_namespaced_horizontal_pod_autoscaler(NS)
    [hpa] = listed.items
    assert (hpa.spec.min_replicas, hpa.spec.max_replicas) == (2, 8)
    assert hpa.spec.scale_target_ref.kind == "Deployment"


def cluster_kubectl(
    kubeconfig: Path, tmp_path: Path, *args: str
) -> subprocess.CompletedProcess[str]:
    return kubectl(kubeconfig, tmp_path / "home", "-n", NS, *args)


@pytest.mark.kubectl
def test_kubectl_rollout_history_undo_and_to_revision(
    cluster: FakeKubernetes, cluster_kubeconfig: Path, tmp_path: Path
) -> None:
    cluster.add(deployment("web", NS, replicas=2, image="web:1"))

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return cluster_kubectl(cluster_kubeconfig, tmp_path, *args)

    assert run("set", "image", "deploy/web", "web=web:2").returncode == 0
    assert run("annotate", "deploy/web", "kubernetes.io/change-cause=to web:3").returncode == 0
    assert run("set", "image", "deploy/web", "web=web:3").returncode == 0
    history = run("rollout", "history", "deploy/web")
    assert history.returncode == 0, history.stderr
    rows = [line.split(None, 1) for line in history.stdout.splitlines()[2:] if line.strip()]
    assert rows == [["1", "<none>"], ["2", "<none>"], ["3", "to web:3"]]

    undo = run("rollout", "undo", "deploy/web")
    assert undo.returncode == 0, undo.stderr
    assert "deployment.apps/web rolled back" in undo.stdout
    web = stored(cluster)
    assert web["spec"]["template"]["spec"]["containers"][0]["image"] == "web:2"
    assert "pod-template-hash" not in web["spec"]["template"]["metadata"]["labels"]
    history = run("rollout", "history", "deploy/web")
    assert [line.split()[0] for line in history.stdout.splitlines()[2:] if line.strip()] == [
        "1",
        "3",
        "4",
    ]

    back = run("rollout", "undo", "deploy/web", "--to-revision=1")
    assert back.returncode == 0, back.stderr
    assert stored(cluster)["spec"]["template"]["spec"]["containers"][0]["image"] == "web:1"
    assert stored(cluster)["metadata"]["annotations"][REVISION] == "5"

    current = run("rollout", "undo", "deploy/web", "--to-revision=5")
    assert "skipped rollback (current template already matches revision 5)" in current.stdout
    missing = run("rollout", "undo", "deploy/web", "--to-revision=9")
    assert missing.returncode != 0
    assert "unable to find specified revision 9 in history" in missing.stderr


@pytest.mark.kubectl
def test_kubectl_scale_and_rollout_status(
    cluster: FakeKubernetes, cluster_kubeconfig: Path, tmp_path: Path
) -> None:
    cluster.add(deployment("web", NS, replicas=2))
    cluster.add(statefulset("db", NS, replicas=2))
    cluster.add(daemonset("agent", NS, desired=3))

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return cluster_kubectl(cluster_kubeconfig, tmp_path, *args)

    scaled = run("scale", "deploy/web", "--replicas=4")
    assert scaled.returncode == 0, scaled.stderr
    status = run("rollout", "status", "deploy/web", "--timeout=20s")
    assert status.returncode == 0, status.stderr
    assert 'deployment "web" successfully rolled out' in status.stdout
    assert stored(cluster)["status"]["readyReplicas"] == 4

    assert run("scale", "sts/db", "--replicas=3").returncode == 0
    status = run("rollout", "status", "sts/db", "--timeout=20s")
    assert status.returncode == 0, status.stderr
    # the StatefulSet has rollingUpdate.partition 0, which kubectl reports as a partitioned roll out
    assert "partitioned roll out complete: 3 new pods have been updated..." in status.stdout

    assert run("rollout", "restart", "ds/agent").returncode == 0
    status = run("rollout", "status", "ds/agent", "--timeout=20s")
    assert status.returncode == 0, status.stderr
    assert 'daemon set "agent" successfully rolled out' in status.stdout

    cluster.stall(NS, "web", after_reads=0)
    assert run("set", "image", "deploy/web", "web=web:2").returncode == 0
    stalled = run("rollout", "status", "deploy/web", "--timeout=20s")
    assert stalled.returncode != 0
    assert 'deployment "web" exceeded its progress deadline' in stalled.stderr
