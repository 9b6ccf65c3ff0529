"""What the API server checks and normalizes before it stores an object (on dry runs too): the
type in the body, the name (RFC 1123), ``spec.replicas``, JSON ``null`` dropped, key order."""

from __future__ import annotations

import re
from typing import Any

from .errors import bad_request, invalid
from .registry import Obj, ResourceType

_DNS1123_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
_DNS1123_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")


def check_type(rt: ResourceType, obj: Obj) -> None:
    api_version, kind = obj.get("apiVersion"), obj.get("kind")
    if (api_version and api_version != rt.api_version) or (kind and kind != rt.kind):
        raise bad_request(
            f"the API version in the data ({api_version}) does not match the expected API "
            f"version ({rt.api_version})"
            if api_version != rt.api_version
            else f"the kind in the data ({kind}) does not match the expected kind ({rt.kind})"
        )


def validate(rt: ResourceType, obj: Obj) -> None:
    metadata = obj.get("metadata") or {}
    name = metadata.get("name") or ""
    causes: list[tuple[str, str]] = []
    if not name:
        causes.append(("metadata.name", "Required value: name or generateName is required"))
    else:
        pattern = _DNS1123_LABEL if rt.plural == "namespaces" else _DNS1123_SUBDOMAIN
        if not pattern.fullmatch(name) or len(name) > 253:
            causes.append(
                (
                    "metadata.name",
                    f'Invalid value: "{name}": a lowercase RFC 1123 subdomain must consist '
                    "of lower case alphanumeric characters, '-' or '.', and must start and "
                    "end with an alphanumeric character",
                )
            )
    replicas = (obj.get("spec") or {}).get("replicas")
    if replicas is not None and (not isinstance(replicas, int) or replicas < 0):
        causes.append(
            ("spec.replicas", f"Invalid value: {replicas}: must be greater than or equal to 0")
        )
    if causes:
        raise invalid(rt.kind, rt.group, name, causes)


def drop_nulls(value: Any) -> Any:
    """What decoding into the built-in Go types does to JSON ``null``: the field is unset (and
    left out when encoded again), e.g. the ``creationTimestamp: null`` kubectl puts in a pod
    template it sends back."""
    if isinstance(value, dict):
        return {k: drop_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [drop_nulls(v) for v in value]
    return value


_TOP_ORDER = ("kind", "apiVersion", "metadata", "spec", "status")
_META_ORDER = (
    "name",
    "generateName",
    "namespace",
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "labels",
    "annotations",
    "ownerReferences",
    "finalizers",
)


def ordered(obj: Obj) -> Obj:
    """Key order as the API server serializes (cosmetic: makes -o json look familiar)."""

    def by(order: tuple[str, ...], mapping: Obj) -> Obj:
        first = {k: mapping[k] for k in order if k in mapping}
        return first | {k: v for k, v in mapping.items() if k not in first}

    result = by(_TOP_ORDER, obj)
    if isinstance(result.get("metadata"), dict):
        result["metadata"] = by(_META_ORDER, result["metadata"])
    return result
