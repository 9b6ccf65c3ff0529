"""The views of an object other than itself: the ``autoscaling/v1`` Scale and the
``meta.k8s.io/v1`` Table that ``kubectl get`` asks for (columns per type: ``registry.Table``)."""

from __future__ import annotations

from typing import Any

from .registry import Obj, ResourceType, Table, hooks
from .selectors import label_selector_string
from .times import human_duration, now, parse_rfc3339


def to_scale(rt: ResourceType, obj: Obj) -> Obj:
    """The ``autoscaling/v1`` Scale view of a Deployment, StatefulSet or ReplicaSet."""
    metadata = obj["metadata"]
    return {
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": {
            k: metadata[k]
            for k in ("name", "namespace", "uid", "resourceVersion", "creationTimestamp")
            if k in metadata
        },
        "spec": {"replicas": obj.get("spec", {}).get("replicas", 1)},
        "status": {
            "replicas": obj.get("status", {}).get("replicas", 0),
            "selector": label_selector_string(obj.get("spec", {}).get("selector")),
        },
    }


NAME_COLUMN = {
    "name": "Name",
    "type": "string",
    "format": "name",
    "description": "Name must be unique within a namespace. Is required when creating resources, "
    "although some resources may allow a client to request the generation of an appropriate name "
    "automatically. Name is primarily intended for creation idempotence and configuration "
    "definition. Cannot be updated. More info: "
    "https://kubernetes.io/docs/concepts/overview/working-with-objects/names#names",
    "priority": 0,
}
AGE_COLUMN = {
    "name": "Age",
    "type": "string",
    "format": "",
    "description": "CreationTimestamp is a timestamp representing the server time when this "
    "object was created.",
    "priority": 0,
}


def column(name: str, kind: str, description: str, priority: int = 0) -> Obj:
    return {
        "name": name,
        "type": kind,
        "format": "",
        "description": description,
        "priority": priority,
    }


def age(obj: Obj) -> str:
    created = obj.get("metadata", {}).get("creationTimestamp")
    if not created:
        return "<unknown>"
    return human_duration((now() - parse_rfc3339(created)).total_seconds())


def _default_cells(obj: Obj) -> list[Any]:
    return [obj["metadata"]["name"], age(obj)]


_DEFAULT_TABLE = Table([NAME_COLUMN, AGE_COLUMN], _default_cells)


def to_table(
    rt: ResourceType, objects: list[Obj], resource_version: str | None, include_object: str
) -> Obj:
    """A ``meta.k8s.io/v1`` Table as the API server answers ``Accept: ...;as=Table``."""
    table = hooks(rt).table or _DEFAULT_TABLE
    columns = table.columns
    rows = []
    for obj in objects:
        row: Obj = {"cells": table.cells(obj)}
        if include_object == "Object":
            row["object"] = {"apiVersion": rt.api_version, "kind": rt.kind} | obj
        elif include_object != "None":
            row["object"] = {
                "kind": "PartialObjectMetadata",
                "apiVersion": "meta.k8s.io/v1",
                "metadata": obj["metadata"],
            }
        rows.append(row)
    metadata = {"resourceVersion": resource_version} if resource_version else {}
    return {
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": metadata,
        "columnDefinitions": columns,
        "rows": rows,
    }
