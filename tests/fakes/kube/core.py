"""The core group (``v1``): Namespaces (defaults as the API server sets them, a STATUS column)
and Pods."""

from __future__ import annotations

from typing import Any

from .registry import Obj, ResourceType, Table, register
from .tables import AGE_COLUMN, NAME_COLUMN, age, column

_NAMESPACE_COLUMNS = [
    NAME_COLUMN,
    column("Status", "string", "The status of the namespace"),
    AGE_COLUMN,
]


def _namespace_cells(obj: Obj) -> list[Any]:
    return [obj["metadata"]["name"], obj.get("status", {}).get("phase", ""), age(obj)]


def _namespace_defaults(obj: Obj) -> None:
    name = obj["metadata"]["name"]
    obj["metadata"].setdefault("labels", {})["kubernetes.io/metadata.name"] = name
    obj.setdefault("spec", {}).setdefault("finalizers", ["kubernetes"])
    if not obj.get("status"):
        obj["status"] = {"phase": "Active"}


# fmt: off
NAMESPACES = register(
    ResourceType("", "v1", "namespaces", "Namespace", False, ("ns",), ("status",), True),
    table=Table(_NAMESPACE_COLUMNS, _namespace_cells),
    defaults=_namespace_defaults,
)
PODS = register(ResourceType("", "v1", "pods", "Pod", True, ("po",), ("status",), True))
# fmt: on
