"""The fake Kubernetes API server's registration point: a resource module's type, ``kubectl
get`` columns, defaults, update checks, text subresource and controller, seen through the real
kubectl and over HTTP."""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import urllib3

from tests.fakes.kube import (
    CONTROLLERS,
    RESOURCE_TYPES,
    FakeKubernetes,
    ObjectStore,
    ResourceType,
    Table,
    add_reader,
    invalid,
    register,
    register_controller,
    write_kubeconfig,
)
from tests.fakes.kube.registry import HOOKS
from tests.fakes.kube.tables import AGE_COLUMN, NAME_COLUMN, age, column
from tests.helpers.kubectl import kubectl

NS = "shop"
WIDGETS = ResourceType("example.com", "v1", "widgets", "Widget", True, ("wdg",), ("log",))


class WidgetController:
    """Records what the fake told it."""

    calls: list[tuple[str, str]] = []

    def __init__(self, store: ObjectStore, types: list[ResourceType]) -> None:
        self.enabled = True
        self.store = store

    def seeded(self, obj: dict[str, Any]) -> None:
        if obj.get("kind") == "Widget":
            self.calls.append(("seeded", obj["metadata"]["name"]))

    def written(self, rt: ResourceType, namespace: str | None, name: str) -> None:
        if rt.kind == "Widget":
            self.calls.append(("written", name))

    def read(self, rt: ResourceType, namespace: str | None, name: str | None) -> None:
        if rt.kind == "Widget":
            self.calls.append(("read", name or "*"))


def default_color(obj: dict[str, Any]) -> None:
    obj.setdefault("spec", {}).setdefault("color", "blue")


def color_is_immutable(
    rt: ResourceType, name: str, new: dict[str, Any], current: dict[str, Any]
) -> None:
    if new.get("spec", {}).get("color") != current.get("spec", {}).get("color"):
        raise invalid(rt.kind, rt.group, name, [("spec.color", "Invalid value: immutable")])


def read_log(
    fake: FakeKubernetes, namespace: str | None, name: str, query: Mapping[str, str]
) -> tuple[int, Any]:
    obj = fake.get_object("example.com/v1", "Widget", namespace, name)
    if obj is None:
        return 404, {"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": 404}
    return 200, f"widget {name} is {obj['spec']['color']}\nsecond line\n"


@pytest.fixture
def registered() -> Iterator[None]:
    """The widgets module registered for one test (the registry is restored afterwards)."""
    saved = (list(RESOURCE_TYPES), dict(HOOKS), list(CONTROLLERS))
    WidgetController.calls = []
    register(
        WIDGETS,
        table=Table(
            [NAME_COLUMN, column("Color", "string", "The widget's color"), AGE_COLUMN],
            lambda obj: [obj["metadata"]["name"], obj["spec"]["color"], age(obj)],
        ),
        defaults=default_color,
        on_update=color_is_immutable,
        readers={"log": read_log},
    )
    register_controller(WidgetController)
    try:
        yield
    finally:
        RESOURCE_TYPES[:] = saved[0]
        HOOKS.clear()
        HOOKS.update(saved[1])
        CONTROLLERS[:] = saved[2]


@pytest.fixture
def fake(registered: None) -> Iterator[FakeKubernetes]:
    with FakeKubernetes() as server:
        yield server


def widget(name: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "example.com/v1",
        "kind": "Widget",
        "metadata": {"name": name, "namespace": NS},
        "spec": spec,
    }


@pytest.mark.kubectl
def test_a_registered_resource_is_served_to_kubectl_with_its_columns_and_text_log(
    fake: FakeKubernetes, tmp_path: Path
) -> None:
    fake.add(widget("w1"))
    fake.add(widget("w2", color="red"))
    kubeconfig = write_kubeconfig(tmp_path / "kubeconfig", {"test": fake})
    listed = kubectl(kubeconfig, tmp_path / "home", "get", "wdg", "-n", NS)
    assert listed.returncode == 0, listed.stderr
    rows = [line.split() for line in listed.stdout.splitlines()]
    assert rows[0] == ["NAME", "COLOR", "AGE"]
    assert [row[:2] for row in rows[1:]] == [["w1", "blue"], ["w2", "red"]]

    path = f"/apis/example.com/v1/namespaces/{NS}/widgets/w2/log"
    log = kubectl(kubeconfig, tmp_path / "home", "get", "--raw", path)
    assert log.returncode == 0, log.stderr
    assert log.stdout == "widget w2 is red\nsecond line\n"
    assert ("read", "*") in WidgetController.calls
    assert ("seeded", "w1") in WidgetController.calls


def test_discovery_update_checks_and_the_controller_of_a_registered_resource(
    fake: FakeKubernetes,
) -> None:
    auth = {"Authorization": f"Bearer {fake.token}"}
    with urllib3.PoolManager() as http:
        found = http.request("GET", f"{fake.url}/apis/example.com/v1", headers=auth)
        resources = {r["name"]: r for r in json.loads(found.data)["resources"]}
        assert resources["widgets"]["shortNames"] == ["wdg"]
        assert resources["widgets/log"]["verbs"] == ["get"]

        collection = f"{fake.url}/apis/example.com/v1/namespaces/{NS}/widgets"
        fake.add({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}})
        created = http.request(
            "POST",
            collection,
            body=json.dumps(widget("w3")),
            headers={**auth, "Content-Type": "application/json"},
        )
        assert created.status == 201
        stored = json.loads(created.data)
        assert stored["spec"] == {"color": "blue"}  # the registered defaults
        assert ("written", "w3") in WidgetController.calls

        changed = copy.deepcopy(stored)
        changed["spec"]["color"] = "green"
        refused = http.request(
            "PUT",
            f"{collection}/w3",
            body=json.dumps(changed),
            headers={**auth, "Content-Type": "application/json"},
        )
        assert refused.status == 422
        assert json.loads(refused.data)["details"]["causes"][0]["field"] == "spec.color"

        text = http.request("GET", f"{collection}/w3/log", headers=auth)
        assert text.status == 200
        assert text.headers["Content-Type"] == "text/plain"
        assert text.data == b"widget w3 is blue\nsecond line\n"
        not_a_write = http.request("PUT", f"{collection}/w3/log", body=b"{}", headers=auth)
        assert not_a_write.status == 405


def test_a_type_registered_twice_or_a_reader_without_its_subresource_is_refused(
    registered: None,
) -> None:
    with pytest.raises(ValueError, match=r"widgets\.example\.com is registered already"):
        register(WIDGETS)
    gadgets = ResourceType("example.com", "v1", "gadgets", "Gadget", True)
    with pytest.raises(ValueError, match=r"readers for subresources \['log'\] not in"):
        register(gadgets, readers={"log": read_log})
    assert gadgets not in RESOURCE_TYPES


def pod_log(
    fake: FakeKubernetes, namespace: str | None, name: str, query: Mapping[str, str]
) -> tuple[int, Any]:
    return 200, f"log of {name} ({query.get('container', 'the only container')})\n"


@pytest.mark.kubectl
def test_a_reader_added_to_a_type_registered_elsewhere_answers_kubectl_logs(
    registered: None, tmp_path: Path
) -> None:
    # pods/log is the batch module's (tests/fakes/kube/batch.py): take it away for this test
    at = next(i for i, t in enumerate(RESOURCE_TYPES) if (t.group, t.plural) == ("", "pods"))
    RESOURCE_TYPES[at] = replace(RESOURCE_TYPES[at], subresources=("status",))
    pods = add_reader("", "pods", "log", pod_log)
    assert pods.subresources == ("status", "log")
    with FakeKubernetes() as fake:
        fake.add(
            {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": "job-x-abcde", "namespace": NS},
                "spec": {"containers": [{"name": "main", "image": "busybox:1.36"}]},
            }
        )
        kubeconfig = write_kubeconfig(tmp_path / "kubeconfig", {"test": fake})
        logs = kubectl(kubeconfig, tmp_path / "home", "logs", "job-x-abcde", "-n", NS)
    assert logs.returncode == 0, logs.stderr
    assert logs.stdout == "log of job-x-abcde (main)\n"


def test_add_reader_refuses_an_unknown_type_and_a_subresource_it_has(registered: None) -> None:
    with pytest.raises(KeyError, match=r"no resource type cronjobs\.batch is registered"):
        add_reader("batch", "cronjobs", "log", pod_log)
    with pytest.raises(ValueError, match=r"widgets\.example\.com has a log subresource already"):
        add_reader("example.com", "widgets", "log", pod_log)
