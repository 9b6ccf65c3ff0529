"""A fake Kubernetes API server for tests.

A real HTTP server on ``127.0.0.1`` (plain http, bearer token) that the official ``kubernetes``
Python client and the real ``kubectl`` accept unmodified through a kubeconfig. It serves the
storage layer of the API server, plus deterministic stand-ins for the Deployment, StatefulSet and
DaemonSet controllers (``Controllers``: ReplicaSets with revisions, status that moves one step per
read until the rollout completes, ``fake.stall`` for ProgressDeadlineExceeded), enough for
``kubectl rollout status|history|undo`` and ``kubectl scale``. ``FakeKubernetes(controllers=False)``
is the storage layer alone: nothing reacts to a change.

Served paths::

    /version, /api, /api/v1, /apis, /apis/<group>, /apis/<group>/<version>   discovery (legacy)
    /api/v1/..., /apis/<group>/<version>/...   GET (one, list), POST, PUT, PATCH, DELETE
    .../<name>/status, .../<name>/scale        subresources, where registered
    anything else (``/openapi/v2``, ``/openapi/v3``...)   404 with a ``Status`` body

Behaviour that matches a real API server: server-set ``uid``, ``creationTimestamp``, a global
monotonic ``resourceVersion``, ``generation`` bumped on spec changes only, ``Status`` error bodies
(NotFound, AlreadyExists, Conflict, Invalid, UnsupportedMediaType, InternalError...), optimistic
concurrency on PUT and PATCH, JSON patch (RFC 6902), merge patch (RFC 7386) and strategic merge
patch, ``?dryRun=All``, ``null`` fields dropped as decoding into Go types does, an immutable
RoleBinding ``roleRef``, ``labelSelector`` and ``fieldSelector`` on lists, ``meta.k8s.io/v1``
``Table`` answers for ``kubectl get``, no-op updates that keep the ``resourceVersion``.
``deletecollection`` (``DELETE`` on a collection, with selectors) answers the list of what it
deleted. Not served: watch (answers an empty stream that ends after ``timeoutSeconds``, at most
5 s), server-side apply, protobuf, aggregated discovery (clients fall back to the
legacy documents), pagination (``limit`` is ignored: every list is complete).

Authentication: a request with a wrong ``Authorization`` header gets 401, but one without any is
let in, because kubectl (client-go's clientcmd) sends no credentials at all to a plain-http server;
the Python client does send the kubeconfig's token.

Python API::

    with FakeKubernetes(token="fake-token") as fake:        # or fake.start() ... fake.stop()
        fake.url                                            # "http://127.0.0.1:PORT"
        kubeconfig = write_kubeconfig(tmp_path / "kubeconfig", {"staging": fake, "prod": other})
        fake.add(deployment("web", "shop", replicas=3))     # seed (or replace); fills server fields
        fake.get_object("apps/v1", "Deployment", "shop", "web")   # deep copy, or None
        fake.objects("Deployment")                          # deep copies, by namespace/name
        fake.requests              # list[RecordedRequest] (a copy); header names lower-cased
        fake.requests_matching(method="PATCH", path_contains="/deployments/web")
        fake.clear_requests()
        fake.fail_next(count=1, status=500, method=None, path_contains=None,
                       reason="InternalError", message="...")
        fake.hang_next(seconds, count=1, method=None, path_contains=None)   # wait, then serve
        fake.answer_late_next(seconds, count=1, method=None, path_contains=None,
                              apply=True, drop=False, then=None)   # serve, then wait
        fake.store                 # the ObjectStore, for what the helpers above do not cover
        fake.controllers.steps = 3                          # reads until a rollout completes
        fake.stall(namespace, name, kind="Deployment", after_reads=1)   # never completes;
                                   # Progressing=False/ProgressDeadlineExceeded after N reads
        fake.unstall(namespace, name, kind="Deployment")
        fake.controllers.in_flight("Deployment", namespace, name)       # a rollout under way?

``hang_next`` delays a request before the fake looks at it (after a client timeout the change
still lands, late); ``answer_late_next`` stores the change at once (``apply=False``: never) and
delays only the answer, or with ``drop=True`` closes the connection without one: the client cannot
tell whether its write took effect. ``then`` is called once the change is stored (or skipped),
before the wait, e.g. ``then=lambda: fake.fail_next(3, status=503, method="GET")``.

Note for timeout tests: urllib3 (under the Python client) retries a timed-out GET 3 more times by
default, so either hang 4 requests or give the client ``Configuration.retries = False``.

Object builders (plain dicts with a plausible ``status``)::

    deployment(name, namespace, *, replicas=1, image="nginx:1.25", labels=None,
               ready_replicas=None)
    statefulset(name, namespace, *, replicas=1, image="nginx:1.25", labels=None,
                ready_replicas=None)
    daemonset(name, namespace, *, image="nginx:1.25", labels=None, desired=3, ready=None)
    replicaset(name, namespace, *, template, revision, owner=None, replicas=0)
    cluster_role(name, rules=None)
    role_binding(name, namespace, *, cluster_role_name, user, labels=None)
    horizontal_pod_autoscaler(name, namespace, *, target_kind="Deployment", target_name=None,
                              min_replicas=1, max_replicas=10, cpu_utilization=80)

Resource types live in ``RESOURCE_TYPES``; a new type is one ``ResourceType(...)`` line there (or
``FakeKubernetes(extra_types=[...])`` for a single test).
"""

from __future__ import annotations

import contextlib
import copy
import datetime as dt
import hashlib
import itertools
import json
import re
import secrets
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import yaml

JSON = Any
Obj = dict[str, Any]

SERVER_VERSION = {
    "major": "1",
    "minor": "32",
    "gitVersion": "v1.32.0",
    "gitCommit": "70d3cc986aa8221cd1dfb1121852688902d3bf53",
    "gitTreeState": "clean",
    "buildDate": "2024-12-11T17:59:15Z",
    "goVersion": "go1.23.3",
    "compiler": "gc",
    "platform": "linux/amd64",
}

ALL_VERBS = ("create", "delete", "deletecollection", "get", "list", "patch", "update", "watch")
SUBRESOURCE_VERBS = ("get", "patch", "update")
MAX_HANG_SECONDS = 30.0
MAX_WATCH_SECONDS = 5.0


# --------------------------------------------------------------------------- resource registry


@dataclass(frozen=True)
class ResourceType:
    """One served resource type: everything discovery and storage need to know about it."""

    group: str
    version: str
    plural: str
    kind: str
    namespaced: bool
    short_names: tuple[str, ...] = ()
    subresources: tuple[str, ...] = ()  # "status", "scale"
    returns_deleted_object: bool = False  # DELETE answers the object instead of a Status

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def singular(self) -> str:
        return self.kind.lower()

    @property
    def group_resource(self) -> str:
        """``deployments.apps`` or ``pods``, as in the API server's messages."""
        return f"{self.plural}.{self.group}" if self.group else self.plural

    @property
    def verbs(self) -> tuple[str, ...]:
        if self.plural == "namespaces":
            return tuple(v for v in ALL_VERBS if v != "deletecollection")
        return ALL_VERBS


# One line per served type. Columns: group, version, plural, kind, namespaced, shortNames,
# subresources, and whether DELETE answers the deleted object (True) or a Status (the default).
# fmt: off
RESOURCE_TYPES: list[ResourceType] = [
    ResourceType("", "v1", "namespaces", "Namespace", False, ("ns",), ("status",), True),
    ResourceType("", "v1", "pods", "Pod", True, ("po",), ("status",), True),
    ResourceType("apps", "v1", "deployments", "Deployment", True, ("deploy",), ("scale", "status")),
    ResourceType("apps", "v1", "statefulsets", "StatefulSet", True, ("sts",), ("scale", "status")),
    ResourceType("apps", "v1", "daemonsets", "DaemonSet", True, ("ds",), ("status",)),
    ResourceType("apps", "v1", "replicasets", "ReplicaSet", True, ("rs",), ("scale", "status")),
    ResourceType("rbac.authorization.k8s.io", "v1", "rolebindings", "RoleBinding", True),
    ResourceType("rbac.authorization.k8s.io", "v1", "clusterroles", "ClusterRole", False),
    ResourceType("autoscaling", "v2", "horizontalpodautoscalers", "HorizontalPodAutoscaler", True,
                 ("hpa",), ("status",)),
]
# fmt: on


# --------------------------------------------------------------------------- Status errors


def status_body(
    code: int, reason: str, message: str, details: Mapping[str, Any] | None = None
) -> Obj:
    """A ``Status`` failure body in the exact shape (and key order) of the API server."""
    body: Obj = {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
    }
    if details is not None:
        body["details"] = dict(details)
    body["code"] = code
    return body


class ApiError(Exception):
    """An error answered to the client as a ``Status`` body."""

    def __init__(
        self, code: int, reason: str, message: str, details: Mapping[str, Any] | None = None
    ) -> None:
        super().__init__(message)
        self.code = code
        self.body = status_body(code, reason, message, details)


def _details(rt: ResourceType, name: str) -> Obj:
    details: Obj = {"name": name}
    if rt.group:
        details["group"] = rt.group
    details["kind"] = rt.plural
    return details


def not_found(rt: ResourceType, name: str) -> ApiError:
    return ApiError(404, "NotFound", f'{rt.group_resource} "{name}" not found', _details(rt, name))


def already_exists(rt: ResourceType, name: str) -> ApiError:
    message = f'{rt.group_resource} "{name}" already exists'
    return ApiError(409, "AlreadyExists", message, _details(rt, name))


def conflict(rt: ResourceType, name: str, why: str) -> ApiError:
    message = f'Operation cannot be fulfilled on {rt.group_resource} "{name}": {why}'
    return ApiError(409, "Conflict", message, _details(rt, name))


MODIFIED = (
    "the object has been modified; please apply your changes to the latest version and try again"
)


def invalid(kind: str, group: str, name: str, causes: list[tuple[str, str]]) -> ApiError:
    """422 Invalid; ``causes`` are (field, message) pairs, e.g. ("spec.replicas", "Invalid...")."""
    qualified = f"{kind}.{group}" if group else kind
    if len(causes) == 1:
        summary = f"{causes[0][0]}: {causes[0][1]}"
    else:
        summary = "[" + ", ".join(f"{f}: {m}" for f, m in causes) + "]"
    details: Obj = {"name": name}
    if group:
        details["group"] = group
    details["kind"] = kind
    details["causes"] = [{"reason": _cause_reason(m), "message": m, "field": f} for f, m in causes]
    return ApiError(422, "Invalid", f'{qualified} "{name}" is invalid: {summary}', details)


def _cause_reason(message: str) -> str:
    if message.startswith("Required value"):
        return "FieldValueRequired"
    return "FieldValueInvalid"


def bad_request(message: str) -> ApiError:
    return ApiError(400, "BadRequest", message)


def path_not_found() -> ApiError:
    return ApiError(404, "NotFound", "the server could not find the requested resource", {})


def method_not_allowed(rt: ResourceType | None, verb: str) -> ApiError:
    details: Obj = {}
    if rt is not None:
        details = {"group": rt.group, "kind": rt.plural} if rt.group else {"kind": rt.plural}
    target = f" on {rt.group_resource}" if rt is not None else ""
    message = f"the server does not allow this method on the requested resource ({verb}{target})"
    return ApiError(405, "MethodNotAllowed", message, details)


PATCH_TYPES = (
    "application/json-patch+json",
    "application/merge-patch+json",
    "application/strategic-merge-patch+json",
)


def unsupported_media_type(accepted: Iterable[str]) -> ApiError:
    message = "the body of the request was in an unknown format - accepted media types include: "
    return ApiError(415, "UnsupportedMediaType", message + ", ".join(accepted))


# --------------------------------------------------------------------------- patch algorithms


class JsonPatchError(Exception):
    """A JSON patch operation could not be applied (answered 422 like the API server)."""


class MalformedPatchError(Exception):
    """The patch document itself is malformed (answered 400 BadRequest)."""


def json_equal(a: JSON, b: JSON) -> bool:
    """Equality of JSON values: unlike Python's ==, ``true`` is not ``1``."""
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(json_equal(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(json_equal(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, int | float) and isinstance(b, int | float):
        return a == b
    return type(a) is type(b) and a == b


def _pointer(path: str) -> list[str]:
    if path == "":
        return []
    if not path.startswith("/"):
        raise JsonPatchError(f"invalid JSON pointer {path!r}")
    return [p.replace("~1", "/").replace("~0", "~") for p in path[1:].split("/")]


def _list_index(container: list[Any], token: str, *, allow_end: bool) -> int:
    if token == "-" and allow_end:
        return len(container)
    if not re.fullmatch(r"0|[1-9][0-9]*", token):
        raise JsonPatchError(f"invalid array index {token!r}")
    index = int(token)
    limit = len(container) if allow_end else len(container) - 1
    if index > limit:
        raise JsonPatchError(f"array index {index} out of bounds")
    return index


def _resolve_parent(doc: JSON, tokens: list[str], path: str) -> JSON:
    node = doc
    for token in tokens[:-1]:
        if isinstance(node, dict) and token in node:
            node = node[token]
        elif isinstance(node, list):
            node = node[_list_index(node, token, allow_end=False)]
        else:
            raise JsonPatchError(f"doc is missing path: {path!r}")
    return node


def _get(doc: JSON, path: str) -> JSON:
    tokens = _pointer(path)
    if not tokens:
        return doc
    parent = _resolve_parent(doc, tokens, path)
    last = tokens[-1]
    if isinstance(parent, dict):
        if last not in parent:
            raise JsonPatchError(f"doc is missing path: {path!r}")
        return parent[last]
    if isinstance(parent, list):
        return parent[_list_index(parent, last, allow_end=False)]
    raise JsonPatchError(f"doc is missing path: {path!r}")


def _add(doc: JSON, path: str, value: JSON) -> JSON:
    tokens = _pointer(path)
    if not tokens:
        return value
    parent = _resolve_parent(doc, tokens, path)
    last = tokens[-1]
    if isinstance(parent, dict):
        parent[last] = value
    elif isinstance(parent, list):
        parent.insert(_list_index(parent, last, allow_end=True), value)
    else:
        raise JsonPatchError(f"doc is missing path: {path!r}")
    return doc


def _remove(doc: JSON, path: str) -> tuple[JSON, JSON]:
    tokens = _pointer(path)
    if not tokens:
        raise JsonPatchError("cannot remove the whole document")
    parent = _resolve_parent(doc, tokens, path)
    last = tokens[-1]
    if isinstance(parent, dict):
        if last not in parent:
            raise JsonPatchError(f"unable to remove nonexistent key: {last}: missing value")
        return doc, parent.pop(last)
    if isinstance(parent, list):
        return doc, parent.pop(_list_index(parent, last, allow_end=False))
    raise JsonPatchError(f"doc is missing path: {path!r}")


def json_patch(document: JSON, operations: JSON) -> JSON:
    """Apply an RFC 6902 JSON patch; returns a new document (the input is not modified)."""
    if not isinstance(operations, list):
        raise MalformedPatchError(
            "json: cannot unmarshal object into Go value of type jsonpatch.Patch"
        )
    doc = copy.deepcopy(document)
    for operation in operations:
        if not isinstance(operation, dict) or not isinstance(operation.get("op"), str):
            raise MalformedPatchError(f"invalid JSON patch operation {operation!r}")
        op = operation["op"]
        path = operation.get("path")
        if not isinstance(path, str):
            raise JsonPatchError(f"operation {op!r} is missing path")
        if op in ("add", "replace", "test") and "value" not in operation:
            raise JsonPatchError(f"operation {op!r} is missing value")
        value = copy.deepcopy(operation.get("value"))
        if op == "add":
            doc = _add(doc, path, value)
        elif op == "remove":
            doc, _ = _remove(doc, path)
        elif op == "replace":
            _get(doc, path)  # the target must exist
            if _pointer(path):
                doc, _ = _remove(doc, path)
            doc = _add(doc, path, value)
        elif op in ("move", "copy"):
            source = operation.get("from")
            if not isinstance(source, str):
                raise JsonPatchError(f"operation {op!r} is missing from")
            if op == "move":
                doc, moved = _remove(doc, source)
            else:
                moved = copy.deepcopy(_get(doc, source))
            doc = _add(doc, path, moved)
        elif op == "test":
            if not json_equal(_get(doc, path), value):
                raise JsonPatchError(f"testing value {path} failed: test failed")
        else:
            raise MalformedPatchError(f"Unexpected kind: {op}")
    return doc


def merge_patch(target: JSON, patch: JSON) -> JSON:
    """Apply an RFC 7386 JSON merge patch; returns a new document."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = copy.deepcopy(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


# patchMergeKey of the Kubernetes types, by field name (the fake serves no type where one field
# name has two different merge keys). Lists not named here are replaced as a whole.
MERGE_KEYS: dict[str, str] = {
    "containers": "name",
    "initContainers": "name",
    "ephemeralContainers": "name",
    "env": "name",
    "volumes": "name",
    "volumeMounts": "mountPath",
    "volumeDevices": "devicePath",
    "ports": "containerPort",
    "imagePullSecrets": "name",
    "hostAliases": "ip",
    "conditions": "type",
    "ownerReferences": "uid",
}
# Lists of scalars with patchStrategy "merge": the patch's values are added (a set union).
MERGED_SCALAR_LISTS = frozenset({"finalizers"})


def strategic_merge_patch(original: JSON, patch: JSON) -> JSON:
    """Apply a Kubernetes strategic merge patch; returns a new document.

    Maps merge recursively and ``null`` deletes a key; lists named in ``MERGE_KEYS`` merge element
    by element on their merge key (``{"name": "x", "$patch": "delete"}`` removes one); lists in
    ``MERGED_SCALAR_LISTS`` are unions; other lists are replaced. Merged lists are ordered as
    the API server orders them (see ``_merged_order``). Directives: ``$patch: replace``
    and ``$patch: delete`` on a map, ``$retainKeys``, ``$deleteFromPrimitiveList/<field>``,
    ``$setElementOrder/<field>`` (orders a list that the patch also changes).
    """
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    return _smp_map(original if isinstance(original, dict) else {}, patch)


def _smp_map(original: Obj, patch: Obj) -> Obj | None:
    directive = patch.get("$patch")
    if directive == "delete":
        return None
    if directive == "replace":
        return {k: copy.deepcopy(v) for k, v in patch.items() if k != "$patch"}
    result = copy.deepcopy(original)
    retain = patch.get("$retainKeys")
    for key, value in patch.items():
        if key in ("$patch", "$retainKeys") or key.startswith("$setElementOrder/"):
            continue
        if key.startswith("$deleteFromPrimitiveList/"):
            target = key.split("/", 1)[1]
            if isinstance(result.get(target), list) and isinstance(value, list):
                result[target] = [v for v in result[target] if not _contains(value, v)]
            continue
        if value is None:
            result.pop(key, None)
        elif isinstance(value, dict):
            current = result.get(key)
            merged = _smp_map(current if isinstance(current, dict) else {}, value)
            if merged is None:
                result.pop(key, None)
            else:
                result[key] = merged
        elif isinstance(value, list):
            order = patch.get(f"$setElementOrder/{key}")
            result[key] = _smp_list(key, result.get(key), value, order)
        else:
            result[key] = copy.deepcopy(value)
    if isinstance(retain, list):
        result = {k: v for k, v in result.items() if k in retain}
    return result


def _contains(values: list[Any], item: Any) -> bool:
    return any(json_equal(v, item) for v in values)


def _smp_list(
    field_name: str, original: Any, patch: list[Any], order: list[Any] | None = None
) -> list[Any]:
    """Merge one list; ``order`` is its ``$setElementOrder`` directive, if the patch had one."""
    current = original if isinstance(original, list) else []
    if field_name in MERGED_SCALAR_LISTS:
        union = copy.deepcopy(current)
        union.extend(copy.deepcopy(v) for v in patch if not _contains(union, v))
        return _merged_order(union, patch if order is None else order, current, None)
    key = MERGE_KEYS.get(field_name)
    if key is None:
        return copy.deepcopy(patch)
    if any(isinstance(e, dict) and e.get("$patch") == "replace" for e in patch):
        return [copy.deepcopy(e) for e in patch if not (isinstance(e, dict) and "$patch" in e)]
    result = copy.deepcopy(current)
    kept_patch: list[Any] = []
    for element in patch:
        if not isinstance(element, dict) or key not in element:
            result.append(copy.deepcopy(element))
            kept_patch.append(element)
            continue
        index = next(
            (
                i
                for i, existing in enumerate(result)
                if isinstance(existing, dict) and json_equal(existing.get(key), element[key])
            ),
            None,
        )
        if element.get("$patch") == "delete":
            if index is not None:
                del result[index]
            continue
        kept_patch.append(element)
        if index is None:
            merged = _smp_map({}, element)
            if merged is not None:
                result.append(merged)
        else:
            merged = _smp_map(result[index], element)
            if merged is None:
                del result[index]
            else:
                result[index] = merged
    return _merged_order(result, kept_patch if order is None else order, current, key)


def _merged_order(
    merged: list[Any], patch: list[Any], original: list[Any], key: str | None
) -> list[Any]:
    """Order a merged list as Kubernetes does: the patch's items in patch order, with the items
    only the server had slotted back where they were relative to them (so an item new to the
    list comes first, an existing one keeps its place)."""

    def ident(item: Any) -> Any:
        return item.get(key) if key is not None and isinstance(item, dict) else item

    def index(items: list[Any], item: Any) -> int:
        wanted = ident(item)
        return next((i for i, x in enumerate(items) if json_equal(ident(x), wanted)), -1)

    in_patch = [m for m in merged if index(patch, m) >= 0]
    server_only = [m for m in merged if index(patch, m) < 0]
    in_patch.sort(key=lambda m: index(patch, m))
    server_only.sort(key=lambda m: index(original, m))
    result: list[Any] = []
    while server_only or in_patch:
        if not in_patch:
            result.append(server_only.pop(0))
        elif not server_only:
            result.append(in_patch.pop(0))
        else:
            left, right = index(original, server_only[0]), index(original, in_patch[0])
            take_left = left >= 0 and right >= 0 and left < right
            result.append(server_only.pop(0) if take_left else in_patch.pop(0))
    return result


def apply_patch(content_type: str, document: Obj, patch: JSON) -> Obj:
    """Apply a PATCH body of the given media type; raises ApiError like the API server."""
    if content_type == "application/json-patch+json":
        try:
            result = json_patch(document, patch)
        except MalformedPatchError as exc:
            raise bad_request(str(exc)) from exc
        except JsonPatchError as exc:
            message = "the server rejected our request due to an error in our request"
            raise ApiError(422, "Invalid", message, {}) from exc
    elif not isinstance(patch, dict):
        raise bad_request(
            "json: cannot unmarshal array into Go value of type map[string]interface {}"
        )
    elif content_type == "application/merge-patch+json":
        result = merge_patch(document, patch)
    elif content_type == "application/strategic-merge-patch+json":
        result = strategic_merge_patch(document, patch)
    else:
        raise unsupported_media_type(PATCH_TYPES)
    if not isinstance(result, dict):
        raise bad_request("the patched document is not an object")
    return result


# --------------------------------------------------------------------------- selectors

_SET_SELECTOR = re.compile(r"^\s*([^\s!=]+)\s+(in|notin)\s+\((.*)\)\s*$")


def _split_selector(selector: str) -> list[str]:
    """Split on commas that are not inside ``( )``."""
    parts, depth, current = [], 0, ""
    for char in selector:
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        if char == "," and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += char
    parts.append(current)
    return [p.strip() for p in parts if p.strip()]


@dataclass(frozen=True)
class _Requirement:
    """One selector term: ``key`` compared with ``op`` (=, !=, in, notin, exists, !) to values."""

    key: str
    op: str
    values: frozenset[str] = frozenset()

    def matches(self, value: str | None) -> bool:
        if self.op in ("=", "in"):
            return value in self.values
        if self.op in ("!=", "notin"):
            return value not in self.values
        if self.op == "exists":
            return value is not None
        return value is None  # "!"


def _parse_label_selector(selector: str) -> list[_Requirement]:
    requirements = []
    for term in _split_selector(selector):
        set_match = _SET_SELECTOR.match(term)
        if set_match:
            key, op, raw = set_match.groups()
            values = frozenset(v.strip() for v in raw.split(",") if v.strip())
            requirements.append(_Requirement(key, op, values))
        elif "!=" in term:
            key, value = (part.strip() for part in term.split("!=", 1))
            requirements.append(_Requirement(key, "!=", frozenset({value})))
        elif "=" in term:
            key, value = (part.strip() for part in re.split("==?", term, maxsplit=1))
            requirements.append(_Requirement(key, "=", frozenset({value})))
        elif re.fullmatch(r"!\s*[A-Za-z0-9./_-]+", term):
            requirements.append(_Requirement(term[1:].strip(), "!"))
        elif re.fullmatch(r"[A-Za-z0-9./_-]+", term):
            requirements.append(_Requirement(term, "exists"))
        else:
            raise bad_request(f"unable to parse requirement: {term!r}")
    return requirements


def label_selector_matcher(selector: str) -> Callable[[Mapping[str, str]], bool]:
    """A matcher for ``a=b,c==d,e!=f,g,!h,i in (x,y),j notin (z)``; raises ApiError 400."""
    requirements = _parse_label_selector(selector)

    def matches(labels: Mapping[str, str]) -> bool:
        return all(r.matches(labels.get(r.key)) for r in requirements)

    return matches


def _field_value(obj: Obj, path: str) -> str:
    node: Any = obj
    for part in path.split("."):
        node = node.get(part) if isinstance(node, dict) else None
    return "" if node is None else str(node)


def field_selector_matcher(selector: str) -> Callable[[Obj], bool]:
    """A matcher for ``metadata.name=x,metadata.namespace!=y`` (=, == and !=)."""
    requirements = []
    for term in _split_selector(selector):
        match = re.fullmatch(r"([A-Za-z0-9.]+)\s*(!=|==|=)\s*(.*)", term)
        if not match:
            raise bad_request(f"invalid selector: '{selector}'; can't understand '{term}'")
        path, op, value = match.groups()
        requirements.append(_Requirement(path, "!=" if op == "!=" else "=", frozenset({value})))

    def matches(obj: Obj) -> bool:
        return all(r.matches(_field_value(obj, r.key)) for r in requirements)

    return matches


def label_selector_string(selector: Mapping[str, Any] | None) -> str:
    """A ``LabelSelector`` rendered as the API server does (``Scale.status.selector``)."""
    if not selector:
        return ""
    terms = [f"{k}={v}" for k, v in selector.get("matchLabels", {}).items()]
    for expression in selector.get("matchExpressions", []):
        key, op = expression["key"], expression["operator"]
        values = ",".join(sorted(expression.get("values", [])))
        terms.append(
            {
                "In": f"{key} in ({values})",
                "NotIn": f"{key} notin ({values})",
                "Exists": key,
                "DoesNotExist": f"!{key}",
            }[op]
        )
    return ",".join(sorted(terms))


# --------------------------------------------------------------------------- object builders


def _pod_template(name: str, labels: Mapping[str, str], image: str) -> Obj:
    return {
        "metadata": {"labels": dict(labels)},
        "spec": {
            "containers": [
                {
                    "name": name,
                    "image": image,
                    "ports": [{"containerPort": 80, "protocol": "TCP"}],
                    "resources": {},
                    "terminationMessagePath": "/dev/termination-log",
                    "terminationMessagePolicy": "File",
                    "imagePullPolicy": "IfNotPresent",
                }
            ],
            "restartPolicy": "Always",
            "terminationGracePeriodSeconds": 30,
            "dnsPolicy": "ClusterFirst",
            "securityContext": {},
            "schedulerName": "default-scheduler",
        },
    }


def _omit_zero(values: Mapping[str, Any]) -> Obj:
    return {k: v for k, v in values.items() if v not in (0, None)}


def _condition(kind: str, status: bool, reason: str, message: str) -> Obj:
    stamp = rfc3339(now())
    return {
        "type": kind,
        "status": "True" if status else "False",
        "lastUpdateTime": stamp,
        "lastTransitionTime": stamp,
        "reason": reason,
        "message": message,
    }


def deployment(
    name: str,
    namespace: str,
    *,
    replicas: int = 1,
    image: str = "nginx:1.25",
    labels: Mapping[str, str] | None = None,
    ready_replicas: int | None = None,
) -> Obj:
    """An apps/v1 Deployment as a real cluster shows it after a finished rollout."""
    labels = dict(labels or {"app": name})
    ready = replicas if ready_replicas is None else ready_replicas
    available = ready >= replicas
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": dict(labels),
            "annotations": {"deployment.kubernetes.io/revision": "1"},
        },
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": dict(labels)},
            "template": _pod_template(name, labels, image),
            "strategy": {
                "type": "RollingUpdate",
                "rollingUpdate": {"maxUnavailable": "25%", "maxSurge": "25%"},
            },
            "revisionHistoryLimit": 10,
            "progressDeadlineSeconds": 600,
        },
        "status": {
            **_omit_zero(
                {
                    "observedGeneration": 1,
                    "replicas": replicas,
                    "updatedReplicas": replicas,
                    "readyReplicas": ready,
                    "availableReplicas": ready,
                    "unavailableReplicas": max(replicas - ready, 0),
                }
            ),
            "conditions": [
                _condition(
                    "Available",
                    available,
                    "MinimumReplicasAvailable" if available else "MinimumReplicasUnavailable",
                    "Deployment has minimum availability."
                    if available
                    else "Deployment does not have minimum availability.",
                ),
                _condition(
                    "Progressing",
                    True,
                    "NewReplicaSetAvailable",
                    f'ReplicaSet "{name}-{_hash(name)}" has successfully progressed.',
                ),
            ],
        },
    }


def statefulset(
    name: str,
    namespace: str,
    *,
    replicas: int = 1,
    image: str = "nginx:1.25",
    labels: Mapping[str, str] | None = None,
    ready_replicas: int | None = None,
) -> Obj:
    """An apps/v1 StatefulSet with all replicas current (``ready_replicas`` of them ready)."""
    labels = dict(labels or {"app": name})
    ready = replicas if ready_replicas is None else ready_replicas
    revision = f"{name}-{_hash(name)}"
    return {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": {"name": name, "namespace": namespace, "labels": dict(labels)},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": dict(labels)},
            "serviceName": name,
            "template": _pod_template(name, labels, image),
            "podManagementPolicy": "OrderedReady",
            "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"partition": 0}},
            "revisionHistoryLimit": 10,
            "persistentVolumeClaimRetentionPolicy": {
                "whenDeleted": "Retain",
                "whenScaled": "Retain",
            },
        },
        "status": {
            "observedGeneration": 1,
            "replicas": replicas,
            **_omit_zero({"readyReplicas": ready, "currentReplicas": replicas}),
            **_omit_zero({"updatedReplicas": replicas, "availableReplicas": ready}),
            "currentRevision": revision,
            "updateRevision": revision,
            "collisionCount": 0,
        },
    }


def daemonset(
    name: str,
    namespace: str,
    *,
    image: str = "nginx:1.25",
    labels: Mapping[str, str] | None = None,
    desired: int = 3,
    ready: int | None = None,
) -> Obj:
    """An apps/v1 DaemonSet scheduled on ``desired`` nodes, ``ready`` of them ready."""
    labels = dict(labels or {"app": name})
    ready_count = desired if ready is None else ready
    return {
        "apiVersion": "apps/v1",
        "kind": "DaemonSet",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": dict(labels),
            "annotations": {"deprecated.daemonset.template.generation": "1"},
        },
        "spec": {
            "selector": {"matchLabels": dict(labels)},
            "template": _pod_template(name, labels, image),
            "updateStrategy": {
                "type": "RollingUpdate",
                "rollingUpdate": {"maxUnavailable": 1, "maxSurge": 0},
            },
            "revisionHistoryLimit": 10,
        },
        "status": {
            "currentNumberScheduled": desired,
            "numberMisscheduled": 0,
            "desiredNumberScheduled": desired,
            "numberReady": ready_count,
            "observedGeneration": 1,
            **_omit_zero(
                {
                    "updatedNumberScheduled": desired,
                    "numberAvailable": ready_count,
                    "numberUnavailable": desired - ready_count,
                }
            ),
        },
    }


def replicaset(
    name: str,
    namespace: str,
    *,
    template: Mapping[str, Any],
    revision: int,
    owner: Mapping[str, Any] | None = None,
    replicas: int = 0,
) -> Obj:
    """An apps/v1 ReplicaSet as a Deployment controller leaves it for ``revision``.

    ``owner`` is the owning Deployment (as stored, so it has a uid); the pod template gets the
    ``pod-template-hash`` label, as the controller does.
    """
    pod_hash = _hash(json.dumps(template, sort_keys=True))
    pod_template = copy.deepcopy(dict(template))
    pod_template.setdefault("metadata", {}).setdefault("labels", {})["pod-template-hash"] = pod_hash
    labels = dict(pod_template["metadata"]["labels"])
    metadata: Obj = {
        "name": name,
        "namespace": namespace,
        "labels": labels,
        "annotations": {
            "deployment.kubernetes.io/revision": str(revision),
            "deployment.kubernetes.io/desired-replicas": str(replicas),
            "deployment.kubernetes.io/max-replicas": str(replicas),
        },
    }
    if owner is not None:
        metadata["ownerReferences"] = [
            {
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "name": owner["metadata"]["name"],
                "uid": owner["metadata"].get("uid", ""),
                "controller": True,
                "blockOwnerDeletion": True,
            }
        ]
    return {
        "apiVersion": "apps/v1",
        "kind": "ReplicaSet",
        "metadata": metadata,
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": labels},
            "template": pod_template,
        },
        "status": {
            "replicas": replicas,
            "observedGeneration": 1,
            **_omit_zero(
                {
                    "fullyLabeledReplicas": replicas,
                    "readyReplicas": replicas,
                    "availableReplicas": replicas,
                }
            ),
        },
    }


def cluster_role(name: str, rules: Iterable[Mapping[str, Any]] | None = None) -> Obj:
    """An rbac.authorization.k8s.io/v1 ClusterRole (default: read-only on pods)."""
    default = [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch"]}]
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRole",
        "metadata": {"name": name},
        "rules": [dict(r) for r in (rules if rules is not None else default)],
    }


def role_binding(
    name: str,
    namespace: str,
    *,
    cluster_role_name: str,
    user: str,
    labels: Mapping[str, str] | None = None,
) -> Obj:
    """A RoleBinding of one user to a ClusterRole in ``namespace``."""
    metadata: Obj = {"name": name, "namespace": namespace}
    if labels:
        metadata["labels"] = dict(labels)
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": metadata,
        "subjects": [{"kind": "User", "apiGroup": "rbac.authorization.k8s.io", "name": user}],
        "roleRef": {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": "ClusterRole",
            "name": cluster_role_name,
        },
    }


def horizontal_pod_autoscaler(
    name: str,
    namespace: str,
    *,
    target_kind: str = "Deployment",
    target_name: str | None = None,
    min_replicas: int = 1,
    max_replicas: int = 10,
    cpu_utilization: int = 80,
) -> Obj:
    """An autoscaling/v2 HorizontalPodAutoscaler on CPU utilization of ``target_name``."""
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "scaleTargetRef": {
                "apiVersion": "apps/v1",
                "kind": target_kind,
                "name": target_name or name,
            },
            "minReplicas": min_replicas,
            "maxReplicas": max_replicas,
            "metrics": [
                {
                    "type": "Resource",
                    "resource": {
                        "name": "cpu",
                        "target": {"type": "Utilization", "averageUtilization": cpu_utilization},
                    },
                }
            ],
        },
        "status": {"currentReplicas": min_replicas, "desiredReplicas": min_replicas},
    }


def _hash(text: str) -> str:
    alphabet = "bcdfghjklmnpqrstvwxz2456789"
    digest = hashlib.sha256(text.encode()).digest()
    return "".join(alphabet[b % len(alphabet)] for b in digest[:10])


# --------------------------------------------------------------------------- time


def now() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(microsecond=0)


def rfc3339(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_rfc3339(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00"))


def human_duration(seconds: float) -> str:
    """The API server's (and kubectl's) short age format: 45s, 2m5s, 3h, 12d."""
    if seconds < -1:
        return "<invalid>"
    s = max(int(seconds), 0)
    minutes, hours, days = s // 60, s // 3600, s // 86400
    if s < 120:
        return f"{s}s"
    if minutes < 10:
        return f"{minutes}m{s % 60}s" if s % 60 else f"{minutes}m"
    if minutes < 180:
        return f"{minutes}m"
    if hours < 8:
        return f"{hours}h{minutes % 60}m" if minutes % 60 else f"{hours}h"
    if hours < 48:
        return f"{hours}h"
    if hours < 24 * 8:
        return f"{days}d{hours % 24}h" if hours % 24 else f"{days}d"
    if days < 365 * 2:
        return f"{days}d"
    years = days // 365
    if years < 8:
        return f"{years}y{days % 365}d"
    return f"{years}y"


# --------------------------------------------------------------------------- storage

_DNS1123_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
_DNS1123_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
Key = tuple[str, str, str, str]  # group, plural, namespace ("" when cluster-scoped), name


class ObjectStore:
    """Thread-safe storage of API objects with the API server's bookkeeping of server fields."""

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._objects: dict[Key, Obj] = {}
        self._resource_version = itertools.count(1000)
        self._current_rv = 999

    # -- helpers

    def _next_rv(self) -> str:
        self._current_rv = next(self._resource_version)
        return str(self._current_rv)

    @property
    def resource_version(self) -> str:
        with self._lock:
            return str(self._current_rv)

    @staticmethod
    def _key(rt: ResourceType, namespace: str | None, name: str) -> Key:
        return (rt.group, rt.plural, namespace if rt.namespaced and namespace else "", name)

    def _namespace_exists(self, namespace: str) -> bool:
        return ("", "namespaces", "", namespace) in self._objects

    # -- reads

    def get(self, rt: ResourceType, namespace: str | None, name: str) -> Obj | None:
        with self._lock:
            obj = self._objects.get(self._key(rt, namespace, name))
            return copy.deepcopy(obj) if obj is not None else None

    def list(
        self,
        rt: ResourceType,
        namespace: str | None,
        label_selector: str | None = None,
        field_selector: str | None = None,
    ) -> tuple[list[Obj], str]:
        """Objects of a type (in one namespace, or all), sorted, and the list resourceVersion."""
        labels_match = label_selector_matcher(label_selector or "")
        fields_match = field_selector_matcher(field_selector or "")
        with self._lock:
            found = [
                obj
                for (group, plural, ns, _), obj in sorted(self._objects.items())
                if (group, plural) == (rt.group, rt.plural)
                and (not namespace or not rt.namespaced or ns == namespace)
                and labels_match(obj.get("metadata", {}).get("labels") or {})
                and fields_match(obj)
            ]
            # stored objects are JSON: a JSON round trip copies 10,000 of them several times
            # faster than copy.deepcopy
            copied: list[Obj] = json.loads(json.dumps(found))
            return copied, str(self._current_rv)

    # -- writes

    def create(
        self,
        rt: ResourceType,
        namespace: str | None,
        obj: Obj,
        *,
        dry_run: bool = False,
        require_namespace: bool = True,
        reset_status: bool = True,
    ) -> Obj:
        """POST semantics; ``require_namespace=False`` creates a missing namespace (seeding)."""
        new = _drop_nulls(copy.deepcopy(obj))
        metadata = new.setdefault("metadata", {})
        if rt.namespaced:
            namespace = namespace or metadata.get("namespace") or "default"
            if metadata.get("namespace") not in (None, "", namespace):
                raise bad_request(
                    "the namespace of the provided object does not match the namespace sent on "
                    "the request"
                )
            metadata["namespace"] = namespace
        else:
            metadata.pop("namespace", None)
        if not metadata.get("name") and metadata.get("generateName"):
            metadata["name"] = metadata["generateName"] + secrets.token_hex(3)[:5]
        name = metadata.get("name") or ""
        self._check_type(rt, new)
        self._validate(rt, new)
        with self._lock:
            if rt.namespaced and not self._namespace_exists(namespace or ""):
                if require_namespace:
                    raise not_found(_namespaces(), namespace or "")
                if not dry_run:
                    self.create(_namespaces(), None, {"metadata": {"name": namespace}})
            if self._key(rt, namespace, name) in self._objects:
                raise already_exists(rt, name)
            new["apiVersion"], new["kind"] = rt.api_version, rt.kind
            for server_field in ("resourceVersion", "deletionTimestamp", "managedFields"):
                metadata.pop(server_field, None)
            metadata["uid"] = str(uuid.uuid4())
            metadata["creationTimestamp"] = rfc3339(now())
            if "spec" in new and rt.plural != "namespaces":
                metadata["generation"] = 1
            if reset_status and "status" in rt.subresources:
                new["status"] = {}
            _apply_defaults(rt, new)
            new = _ordered(new)
            if not dry_run:
                new["metadata"]["resourceVersion"] = self._next_rv()
                self._objects[self._key(rt, namespace, name)] = new
            return copy.deepcopy(new)

    def update(
        self,
        rt: ResourceType,
        namespace: str | None,
        name: str,
        mutate: Callable[[Obj], Obj],
        *,
        subresource: str | None = None,
        dry_run: bool = False,
        replace_status: bool = False,
    ) -> Obj:
        """PUT/PATCH semantics: ``mutate`` gets a copy of the stored object, returns the new one.

        Holds the lock throughout, so read-modify-write is atomic. Checks the resourceVersion of
        the returned object (if set) against the stored one, keeps the server-set fields, keeps
        ``status`` (or everything but ``status`` for the status subresource; both change with
        ``replace_status``, for seeding), bumps
        ``generation`` when ``spec`` changed, and stores nothing if nothing changed.
        """
        with self._lock:
            key = self._key(rt, namespace, name)
            current = self._objects.get(key)
            if current is None:
                raise not_found(rt, name)
            new = mutate(copy.deepcopy(current))
            if not isinstance(new, dict):
                raise bad_request("the request body is not a JSON object")
            new = copy.deepcopy(new)
            self._check_type(rt, new)
            new = _drop_nulls(new)
            metadata = new.get("metadata")
            if not isinstance(metadata, dict):
                metadata = new["metadata"] = {}
            old_meta = current["metadata"]
            rv = metadata.get("resourceVersion")
            if rv and rv != old_meta["resourceVersion"]:
                raise conflict(rt, name, MODIFIED)
            if metadata.get("name", name) != name:
                raise bad_request(
                    f"the name of the object ({metadata.get('name')}) does not match the name "
                    f"on the URL ({name})"
                )
            if rt.namespaced and metadata.get("namespace") not in (None, "", namespace):
                raise bad_request(
                    "the namespace of the provided object does not match the namespace sent on "
                    "the request"
                )
            if subresource == "status":
                status = new.get("status")
                new = copy.deepcopy(current)
                if status is None:
                    new.pop("status", None)
                else:
                    new["status"] = status
            elif "status" in rt.subresources and not replace_status:
                if "status" in current:
                    new["status"] = copy.deepcopy(current["status"])
                else:
                    new.pop("status", None)
            metadata = new["metadata"]
            metadata["name"] = name
            if rt.namespaced:
                metadata["namespace"] = namespace
            for server_field in ("uid", "creationTimestamp", "deletionTimestamp", "generation"):
                if server_field in old_meta:
                    metadata[server_field] = old_meta[server_field]
                else:
                    metadata.pop(server_field, None)
            metadata["resourceVersion"] = old_meta["resourceVersion"]
            new["apiVersion"], new["kind"] = rt.api_version, rt.kind
            if "generation" in old_meta and new.get("spec") != current.get("spec"):
                metadata["generation"] = old_meta["generation"] + 1
            self._validate(rt, new)
            if rt.plural == "rolebindings" and new.get("roleRef") != current.get("roleRef"):
                ref = current.get("roleRef") or {}
                raise invalid(
                    rt.kind,
                    rt.group,
                    name,
                    [
                        (
                            "roleRef",
                            f'Invalid value: rbac.RoleRef{{APIGroup:"{ref.get("apiGroup", "")}", '
                            f'Kind:"{ref.get("kind", "")}", Name:"{ref.get("name", "")}"}}: '
                            "cannot change roleRef",
                        )
                    ],
                )
            new = _ordered(new)
            if json_equal(new, current):
                return copy.deepcopy(current)
            if not dry_run:
                new["metadata"]["resourceVersion"] = self._next_rv()
                self._objects[key] = new
            return copy.deepcopy(new)

    def delete(
        self,
        rt: ResourceType,
        namespace: str | None,
        name: str,
        options: Mapping[str, Any] | None = None,
        *,
        dry_run: bool = False,
    ) -> Obj:
        """DELETE semantics; answers the Status (or the object) the API server answers."""
        with self._lock:
            key = self._key(rt, namespace, name)
            current = self._objects.get(key)
            if current is None:
                raise not_found(rt, name)
            preconditions = (options or {}).get("preconditions") or {}
            for precondition, meta_field in (
                ("uid", "uid"),
                ("resourceVersion", "resourceVersion"),
            ):
                expected = preconditions.get(precondition)
                actual = current["metadata"].get(meta_field)
                if expected and expected != actual:
                    raise conflict(
                        rt,
                        name,
                        f"Precondition failed: {precondition[0].upper() + precondition[1:]} in "
                        f"precondition: {expected}, {precondition[0].upper() + precondition[1:]} "
                        f"in object meta: {actual}",
                    )
            # the stored object itself once it leaves the store (a copy on a dry run): deleting
            # thousands of RoleBindings in a row should not cost a deep copy each
            deleted = copy.deepcopy(current) if dry_run else current
            if not dry_run:
                del self._objects[key]
                if rt.plural == "namespaces":
                    for other in [k for k in self._objects if k[2] == name]:
                        del self._objects[other]
                deleted["metadata"]["resourceVersion"] = self._next_rv()
            if rt.returns_deleted_object:
                deleted["metadata"]["deletionTimestamp"] = rfc3339(now())
                if rt.plural == "namespaces":
                    deleted["status"] = {"phase": "Terminating"}
                else:
                    deleted["metadata"]["deletionGracePeriodSeconds"] = 0
                return deleted
            details = _details(rt, name)
            details["uid"] = current["metadata"]["uid"]
            return {
                "kind": "Status",
                "apiVersion": "v1",
                "metadata": {},
                "status": "Success",
                "details": details,
            }

    # -- validation

    @staticmethod
    def _check_type(rt: ResourceType, obj: Obj) -> None:
        api_version, kind = obj.get("apiVersion"), obj.get("kind")
        if (api_version and api_version != rt.api_version) or (kind and kind != rt.kind):
            raise bad_request(
                f"the API version in the data ({api_version}) does not match the expected API "
                f"version ({rt.api_version})"
                if api_version != rt.api_version
                else f"the kind in the data ({kind}) does not match the expected kind ({rt.kind})"
            )

    @staticmethod
    def _validate(rt: ResourceType, obj: Obj) -> None:
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


def _drop_nulls(value: Any) -> Any:
    """What decoding into the built-in Go types does to JSON ``null``: the field is unset (and
    left out when encoded again), e.g. the ``creationTimestamp: null`` kubectl puts in a pod
    template it sends back."""
    if isinstance(value, dict):
        return {k: _drop_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_drop_nulls(v) for v in value]
    return value


def _namespaces() -> ResourceType:
    return next(rt for rt in RESOURCE_TYPES if rt.plural == "namespaces" and not rt.group)


def _apply_defaults(rt: ResourceType, obj: Obj) -> None:
    if rt.plural == "namespaces" and not rt.group:
        name = obj["metadata"]["name"]
        obj["metadata"].setdefault("labels", {})["kubernetes.io/metadata.name"] = name
        obj.setdefault("spec", {}).setdefault("finalizers", ["kubernetes"])
        if not obj.get("status"):
            obj["status"] = {"phase": "Active"}


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


def _ordered(obj: Obj) -> Obj:
    """Key order as the API server serializes (cosmetic: makes -o json look familiar)."""

    def by(order: tuple[str, ...], mapping: Obj) -> Obj:
        first = {k: mapping[k] for k in order if k in mapping}
        return first | {k: v for k, v in mapping.items() if k not in first}

    result = by(_TOP_ORDER, obj)
    if isinstance(result.get("metadata"), dict):
        result["metadata"] = by(_META_ORDER, result["metadata"])
    return result


# --------------------------------------------------------------------------- scale and tables


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


_NAME_COLUMN = {
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
_AGE_COLUMN = {
    "name": "Age",
    "type": "string",
    "format": "",
    "description": "CreationTimestamp is a timestamp representing the server time when this "
    "object was created.",
    "priority": 0,
}


def _column(name: str, kind: str, description: str, priority: int = 0) -> Obj:
    return {
        "name": name,
        "type": kind,
        "format": "",
        "description": description,
        "priority": priority,
    }


_DEPLOYMENT_COLUMNS = [
    _NAME_COLUMN,
    _column("Ready", "string", "Number of the pod with ready state"),
    _column(
        "Up-to-date",
        "string",
        "Total number of non-terminated pods targeted by this deployment that have the desired "
        "template spec.",
    ),
    _column(
        "Available",
        "string",
        "Total number of available pods (ready for at least minReadySeconds) targeted by this "
        "deployment.",
    ),
    _AGE_COLUMN,
    _column("Containers", "string", "Names of each container in the template.", 1),
    _column("Images", "string", "Images referenced by each container in the template.", 1),
    _column(
        "Selector",
        "string",
        "Label selector for pods. Existing ReplicaSets whose pods are "
        "selected by this will be the ones affected by this deployment.",
        1,
    ),
]


def _age(obj: Obj) -> str:
    created = obj.get("metadata", {}).get("creationTimestamp")
    if not created:
        return "<unknown>"
    return human_duration((now() - parse_rfc3339(created)).total_seconds())


_NAMESPACE_COLUMNS = [
    _NAME_COLUMN,
    _column("Status", "string", "The status of the namespace"),
    _AGE_COLUMN,
]


def _table_columns(rt: ResourceType) -> list[Obj]:
    if (rt.group, rt.plural) == ("apps", "deployments"):
        return _DEPLOYMENT_COLUMNS
    if (rt.group, rt.plural) == ("", "namespaces"):
        return _NAMESPACE_COLUMNS
    return [_NAME_COLUMN, _AGE_COLUMN]


def _table_cells(rt: ResourceType, obj: Obj) -> list[Any]:
    name = obj["metadata"]["name"]
    if (rt.group, rt.plural) == ("", "namespaces"):
        return [name, obj.get("status", {}).get("phase", ""), _age(obj)]
    if (rt.group, rt.plural) != ("apps", "deployments"):
        return [name, _age(obj)]
    spec, status = obj.get("spec", {}), obj.get("status", {})
    containers = spec.get("template", {}).get("spec", {}).get("containers", [])
    return [
        name,
        f"{status.get('readyReplicas', 0)}/{spec.get('replicas', 1)}",
        status.get("updatedReplicas", 0),
        status.get("availableReplicas", 0),
        _age(obj),
        ",".join(c.get("name", "") for c in containers),
        ",".join(c.get("image", "") for c in containers),
        label_selector_string(spec.get("selector")),
    ]


def to_table(
    rt: ResourceType, objects: list[Obj], resource_version: str | None, include_object: str
) -> Obj:
    """A ``meta.k8s.io/v1`` Table as the API server answers ``Accept: ...;as=Table``."""
    columns = _table_columns(rt)
    rows = []
    for obj in objects:
        row: Obj = {"cells": _table_cells(rt, obj)}
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


# --------------------------------------------------------------------------- controllers

REVISION = "deployment.kubernetes.io/revision"
REVISION_HISTORY = "deployment.kubernetes.io/revision-history"
DESIRED_REPLICAS = "deployment.kubernetes.io/desired-replicas"
MAX_REPLICAS = "deployment.kubernetes.io/max-replicas"
POD_TEMPLATE_HASH = "pod-template-hash"
# Deployment annotations the Deployment controller does not copy to its ReplicaSets.
_NOT_COPIED = frozenset(
    {
        "kubectl.kubernetes.io/last-applied-configuration",
        REVISION,
        REVISION_HISTORY,
        DESIRED_REPLICAS,
        MAX_REPLICAS,
        "deprecated.deployment.rollback.to",
    }
)
WORKLOAD_PLURALS = frozenset({"deployments", "statefulsets", "daemonsets"})


def pod_template_hash(template: Mapping[str, Any]) -> str:
    """The ``pod-template-hash`` of a pod template (label removed first), as a stable string."""
    return _hash(json.dumps(_without_hash(template), sort_keys=True))


def _without_hash(template: Mapping[str, Any]) -> Obj:
    clean = copy.deepcopy(dict(template))
    labels = clean.get("metadata", {}).get("labels")
    if isinstance(labels, dict):
        labels.pop(POD_TEMPLATE_HASH, None)
    return clean


@dataclass
class _Rollout:
    """A workload's rollout in flight: ``reads`` counts the reads since the change."""

    reads: int = 0


class Controllers:
    """Deterministic stand-ins for the Deployment, StatefulSet and DaemonSet controllers.

    They act on writes that come over HTTP (not dry runs, not ``/status``) and on reads, never
    on a timer, so tests are deterministic:

    * a write that changes a workload's ``spec`` (its generation) starts a rollout; a Deployment
      whose pod template changed gets a new ReplicaSet (owned through ``ownerReferences``,
      labelled ``pod-template-hash``, annotated with the next
      ``deployment.kubernetes.io/revision`` and the Deployment's other annotations such as
      ``kubernetes.io/change-cause``); going back to an older template reuses that ReplicaSet
      under the next revision number (the old number moves to ``revision-history``), as the
      real controller does;
    * each read of the workload (GET, GET of ``scale``, or a LIST that includes it) moves the
      rollout one step; after ``steps`` reads (default 1: the first read after the change) it is
      complete: observedGeneration, replicas, updated/ready/available counts, the ReplicaSets'
      replicas and the Deployment's ``Progressing``/``Available`` conditions all say so;
    * :meth:`stall` keeps a workload's rollouts from ever completing; ``after_reads`` reads into
      a stalled Deployment rollout, ``Progressing`` turns False with reason
      ``ProgressDeadlineExceeded`` (what the real controller does after
      ``progressDeadlineSeconds``).

    Seeding with ``FakeKubernetes.add`` never starts a rollout, but a seeded Deployment gets a
    ReplicaSet for its template if it owns none (revision from its annotation, default 1).
    """

    def __init__(self, store: ObjectStore, types: list[ResourceType]) -> None:
        self.enabled = True
        self.steps = 1
        self._store = store
        self._types = {(rt.group, rt.plural): rt for rt in types}
        self._lock = threading.RLock()
        self._rollouts: dict[tuple[str, str, str], _Rollout] = {}
        self._stalled: dict[tuple[str, str, str], int] = {}

    # -- test controls

    def stall(self, kind: str, namespace: str, name: str, *, after_reads: int = 1) -> None:
        """Never complete this workload's rollouts; a Deployment's ``Progressing`` condition
        becomes False (``ProgressDeadlineExceeded``) once a rollout has been read
        ``after_reads`` times (0: at once)."""
        with self._lock:
            self._stalled[(kind, namespace, name)] = after_reads

    def unstall(self, kind: str, namespace: str, name: str) -> None:
        with self._lock:
            self._stalled.pop((kind, namespace, name), None)

    def in_flight(self, kind: str, namespace: str, name: str) -> bool:
        """Whether a rollout of this workload has started and not completed."""
        with self._lock:
            return (kind, namespace, name) in self._rollouts

    # -- hooks

    def _rt(self, plural: str) -> ResourceType:
        return self._types[("apps", plural)]

    def seeded(self, obj: Obj) -> None:
        """After ``FakeKubernetes.add``: give a Deployment a ReplicaSet for its template."""
        if not self.enabled or obj.get("kind") != "Deployment":
            return
        with self._lock:
            namespace, name = obj["metadata"]["namespace"], obj["metadata"]["name"]
            owned = self._owned(obj)
            template = obj.get("spec", {}).get("template", {})
            if any(self._matches(rs, template) for rs in owned):
                return
            revision = max((_revision(rs) for rs in owned), default=0) + 1
            if not owned:
                annotated = (obj["metadata"].get("annotations") or {}).get(REVISION, "1")
                revision = int(annotated) if annotated.isdigit() else 1
            replicas = obj.get("spec", {}).get("replicas", 1)
            self._create_replica_set(obj, revision, replicas=replicas, ready=replicas)
            self._annotate_revision(namespace, name, revision)

    def written(self, rt: ResourceType, namespace: str | None, name: str) -> None:
        """After an HTTP write of a workload (main resource or ``scale``)."""
        if not self.enabled or rt.group != "apps" or rt.plural not in WORKLOAD_PLURALS:
            return
        with self._lock:
            obj = self._store.get(rt, namespace, name)
            if obj is None:
                return
            generation = obj["metadata"].get("generation", 0)
            observed = (obj.get("status") or {}).get("observedGeneration", 0)
            if generation == observed:
                return
            key = (rt.kind, obj["metadata"]["namespace"], name)
            if rt.kind == "Deployment" and not obj.get("spec", {}).get("paused"):
                self._sync_replica_sets(obj)
            self._rollouts[key] = _Rollout()

    def read(self, rt: ResourceType, namespace: str | None, name: str | None) -> None:
        """Before answering a read: move the rollouts of what is read one step."""
        if not self.enabled or rt.group != "apps" or rt.plural not in WORKLOAD_PLURALS:
            return
        with self._lock:
            for key, rollout in list(self._rollouts.items()):
                kind, ns, n = key
                if kind != rt.kind or (namespace and ns != namespace) or (name and n != name):
                    continue
                rollout.reads += 1
                self._step(rt, ns, n, rollout)

    # -- the steps

    def _step(self, rt: ResourceType, namespace: str, name: str, rollout: _Rollout) -> None:
        obj = self._store.get(rt, namespace, name)
        if obj is None:
            del self._rollouts[(rt.kind, namespace, name)]
            return
        stall_after = self._stalled.get((rt.kind, namespace, name))
        paused = bool(obj.get("spec", {}).get("paused"))
        if stall_after is None and not paused and rollout.reads >= self.steps:
            done = 1.0
            del self._rollouts[(rt.kind, namespace, name)]
        else:
            done = 0.0 if stall_after is not None else rollout.reads / max(self.steps, 1)
        deadline = stall_after is not None and rollout.reads >= stall_after
        if rt.kind == "Deployment":
            self._deployment_status(obj, done, deadline=deadline, paused=paused)
        elif rt.kind == "StatefulSet":
            self._stateful_set_status(obj, done)
        else:
            self._daemon_set_status(obj, done)

    def _set_status(self, obj: Obj, status: Obj) -> None:
        rt = self._types[("apps", obj["kind"].lower() + "s")]
        metadata = obj["metadata"]

        def mutate(current: Obj) -> Obj:
            current["status"] = status
            current["metadata"].pop("resourceVersion", None)
            return current

        self._store.update(
            rt, metadata["namespace"], metadata["name"], mutate, subresource="status"
        )

    def _deployment_status(self, obj: Obj, done: float, *, deadline: bool, paused: bool) -> None:
        spec, metadata = obj.get("spec", {}), obj["metadata"]
        desired = spec.get("replicas", 1)
        owned = self._owned(obj)
        new_rs = next((rs for rs in owned if self._matches(rs, spec.get("template", {}))), None)
        updated = desired if done >= 1 else min(int(desired * done), max(desired - 1, 0))
        old_replicas = 0 if done >= 1 else desired - updated
        if new_rs is not None and not paused:
            for rs in owned:
                is_new = rs["metadata"]["uid"] == new_rs["metadata"]["uid"]
                self._scale_replica_set(rs, updated if is_new else old_replicas, desired)
        old_status = obj.get("status") or {}
        conditions = {c["type"]: c for c in old_status.get("conditions", [])}
        rs_name = new_rs["metadata"]["name"] if new_rs is not None else metadata["name"]
        available = (old_replicas + updated) >= desired - _max_unavailable(spec, desired)
        conditions["Available"] = _condition(
            "Available",
            available,
            "MinimumReplicasAvailable" if available else "MinimumReplicasUnavailable",
            "Deployment has minimum availability."
            if available
            else "Deployment does not have minimum availability.",
        )
        if paused:
            progressing = _condition(
                "Progressing", True, "DeploymentPaused", "Deployment is paused"
            )
            progressing["status"] = "Unknown"
        elif deadline:
            progressing = _condition(
                "Progressing",
                False,
                "ProgressDeadlineExceeded",
                f'ReplicaSet "{rs_name}" has timed out progressing.',
            )
        elif done >= 1:
            progressing = _condition(
                "Progressing",
                True,
                "NewReplicaSetAvailable",
                f'ReplicaSet "{rs_name}" has successfully progressed.',
            )
        else:
            progressing = _condition(
                "Progressing", True, "ReplicaSetUpdated", f'ReplicaSet "{rs_name}" is progressing.'
            )
        conditions["Progressing"] = progressing
        ready = old_replicas + updated
        self._set_status(
            obj,
            {
                **_omit_zero(
                    {
                        "observedGeneration": metadata.get("generation", 1),
                        "replicas": old_replicas + updated,
                        "updatedReplicas": updated,
                        "readyReplicas": ready,
                        "availableReplicas": ready,
                        "unavailableReplicas": max(desired - ready, 0),
                    }
                ),
                "conditions": [conditions["Available"], conditions["Progressing"]],
            },
        )

    def _stateful_set_status(self, obj: Obj, done: float) -> None:
        spec, metadata = obj.get("spec", {}), obj["metadata"]
        old = obj.get("status") or {}
        desired = spec.get("replicas", 1)
        update_revision = f"{metadata['name']}-{pod_template_hash(spec.get('template', {}))}"
        updated = desired if done >= 1 else min(int(desired * done), max(desired - 1, 0))
        current_revision = update_revision if done >= 1 else old.get("currentRevision", "")
        ready = desired if done >= 1 else max(desired - 1, 0)
        self._set_status(
            obj,
            {
                "observedGeneration": metadata.get("generation", 1),
                "replicas": desired,
                **_omit_zero(
                    {
                        "readyReplicas": ready,
                        "currentReplicas": desired if done >= 1 else desired - updated,
                        "updatedReplicas": updated,
                        "availableReplicas": ready,
                    }
                ),
                "currentRevision": current_revision,
                "updateRevision": update_revision,
                "collisionCount": old.get("collisionCount", 0),
            },
        )

    def _daemon_set_status(self, obj: Obj, done: float) -> None:
        metadata = obj["metadata"]
        old = obj.get("status") or {}
        desired = old.get("desiredNumberScheduled", 3)
        updated = desired if done >= 1 else min(int(desired * done), max(desired - 1, 0))
        available = desired if done >= 1 else max(desired - 1, 0)
        self._set_status(
            obj,
            {
                "currentNumberScheduled": desired,
                "numberMisscheduled": 0,
                "desiredNumberScheduled": desired,
                "numberReady": available,
                "observedGeneration": metadata.get("generation", 1),
                **_omit_zero(
                    {
                        "updatedNumberScheduled": updated,
                        "numberAvailable": available,
                        "numberUnavailable": desired - available,
                    }
                ),
            },
        )

    # -- ReplicaSets

    def _owned(self, deployment_obj: Obj) -> list[Obj]:
        uid = deployment_obj["metadata"].get("uid")
        items, _ = self._store.list(
            self._rt("replicasets"), deployment_obj["metadata"]["namespace"]
        )
        return [
            rs
            for rs in items
            if any(
                ref.get("uid") == uid and ref.get("controller")
                for ref in rs["metadata"].get("ownerReferences", [])
            )
        ]

    @staticmethod
    def _matches(rs: Obj, template: Mapping[str, Any]) -> bool:
        return json_equal(_without_hash(rs.get("spec", {}).get("template", {})), template)

    def _sync_replica_sets(self, obj: Obj) -> None:
        """Find or make the ReplicaSet of the Deployment's current template (not scaled yet)."""
        namespace, name = obj["metadata"]["namespace"], obj["metadata"]["name"]
        template = obj.get("spec", {}).get("template", {})
        owned = self._owned(obj)
        newest = max((_revision(rs) for rs in owned), default=0)
        current = next((rs for rs in owned if self._matches(rs, template)), None)
        copied = {
            k: v
            for k, v in (obj["metadata"].get("annotations") or {}).items()
            if k not in _NOT_COPIED
        }
        if current is None:
            revision = newest + 1
            self._create_replica_set(obj, revision, replicas=0, ready=0, annotations=copied)
        elif _revision(current) != newest:
            revision = newest + 1
            old = _revision(current)

            def reuse(rs: Obj) -> Obj:
                annotations = rs["metadata"].setdefault("annotations", {})
                history = [h for h in annotations.get(REVISION_HISTORY, "").split(",") if h]
                annotations[REVISION_HISTORY] = ",".join([*history, str(old)])
                annotations[REVISION] = str(revision)
                annotations.update(copied)
                rs["metadata"].pop("resourceVersion", None)
                return rs

            self._store.update(
                self._rt("replicasets"), namespace, current["metadata"]["name"], reuse
            )
        else:
            revision = newest
        self._annotate_revision(namespace, name, revision)

    def _annotate_revision(self, namespace: str, name: str, revision: int) -> None:
        def mutate(current: Obj) -> Obj:
            current["metadata"].setdefault("annotations", {})[REVISION] = str(revision)
            current["metadata"].pop("resourceVersion", None)
            return current

        self._store.update(self._rt("deployments"), namespace, name, mutate)

    def _create_replica_set(
        self,
        obj: Obj,
        revision: int,
        *,
        replicas: int,
        ready: int,
        annotations: Mapping[str, str] | None = None,
    ) -> Obj:
        template = obj.get("spec", {}).get("template", {})
        pod_hash = pod_template_hash(template)
        rs = replicaset(
            f"{obj['metadata']['name']}-{pod_hash}",
            obj["metadata"]["namespace"],
            template=template,
            revision=revision,
            owner=obj,
            replicas=replicas,
        )
        rs["metadata"]["annotations"].update(annotations or {})
        rs["status"] = _replica_set_status(replicas, ready)
        return self._store.create(
            self._rt("replicasets"), obj["metadata"]["namespace"], rs, reset_status=False
        )

    def _scale_replica_set(self, rs: Obj, replicas: int, desired: int) -> None:
        def mutate(current: Obj) -> Obj:
            current["spec"]["replicas"] = replicas
            annotations = current["metadata"].setdefault("annotations", {})
            annotations[DESIRED_REPLICAS] = str(desired)
            annotations[MAX_REPLICAS] = str(desired + _max_surge(desired))
            current["status"] = _replica_set_status(replicas, replicas)
            current["metadata"].pop("resourceVersion", None)
            return current

        self._store.update(
            self._rt("replicasets"),
            rs["metadata"]["namespace"],
            rs["metadata"]["name"],
            mutate,
            replace_status=True,
        )


def _replica_set_status(replicas: int, ready: int) -> Obj:
    return {
        "replicas": replicas,
        "observedGeneration": 1,
        **_omit_zero(
            {"fullyLabeledReplicas": replicas, "readyReplicas": ready, "availableReplicas": ready}
        ),
    }


def _revision(rs: Obj) -> int:
    text = (rs["metadata"].get("annotations") or {}).get(REVISION, "0")
    return int(text) if text.isdigit() else 0


def _max_surge(desired: int) -> int:
    return max(-(-desired * 25 // 100), 0)


def _max_unavailable(spec: Obj, desired: int) -> int:
    rolling = (spec.get("strategy") or {}).get("rollingUpdate") or {}
    value = rolling.get("maxUnavailable", "25%")
    if isinstance(value, str) and value.endswith("%"):
        return desired * int(value[:-1]) // 100
    return int(value)


# --------------------------------------------------------------------------- HTTP server


@dataclass(frozen=True)
class RecordedRequest:
    """One request as the fake received it."""

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]  # names lower-cased
    content_type: str | None
    body: JSON | None  # parsed JSON, or None when empty or not JSON


@dataclass(frozen=True)
class _Late:
    """How :meth:`FakeKubernetes.answer_late_next` treats a request it matched."""

    seconds: float
    apply: bool
    drop: bool
    then: Callable[[], None] | None


@dataclass
class _Rule:
    """A fault-injection rule: matches requests, applies ``count`` times."""

    count: int
    method: str | None
    path_contains: str | None
    status: Obj | None = None  # answer this Status body
    hang_seconds: float = 0.0  # sleep this long before answering
    late: _Late | None = None  # serve (or skip), then answer late or drop the connection

    def matches(self, method: str, path: str) -> bool:
        return (self.method is None or self.method.upper() == method) and (
            self.path_contains is None or self.path_contains in path
        )


@dataclass
class _Route:
    rt: ResourceType
    namespace: str | None
    name: str | None
    subresource: str | None


class _Server(ThreadingHTTPServer):
    """Tracks its connections so ``stop()`` can end keep-alive and hung handlers promptly."""

    daemon_threads = True
    block_on_close = False

    def __init__(self, fake: FakeKubernetes) -> None:
        self.fake = fake
        self._connections: set[socket.socket] = set()
        self._handler_threads: list[threading.Thread] = []
        self._tracking = threading.Lock()
        super().__init__(("127.0.0.1", 0), _Handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        thread = threading.Thread(
            target=self.process_request_thread, args=(request, client_address), daemon=True
        )
        with self._tracking:
            self._connections.add(request)
            self._handler_threads = [t for t in self._handler_threads if t.is_alive()] + [thread]
        thread.start()

    def shutdown_request(self, request: Any) -> None:
        with self._tracking:
            self._connections.discard(request)
        super().shutdown_request(request)

    def close_connections(self, timeout: float) -> None:
        with self._tracking:
            connections, threads = list(self._connections), list(self._handler_threads)
        for connection in connections:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)
        deadline = time.monotonic() + timeout
        for thread in threads:
            thread.join(max(deadline - time.monotonic(), 0))


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # One write per response and no Nagle: otherwise every keep-alive request stalls 40 ms on
    # delayed ACKs.
    wbufsize = 64 * 1024
    disable_nagle_algorithm = True
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        self._handle("GET")

    def do_POST(self) -> None:
        self._handle("POST")

    def do_PUT(self) -> None:
        self._handle("PUT")

    def do_PATCH(self) -> None:
        self._handle("PATCH")

    def do_DELETE(self) -> None:
        self._handle("DELETE")

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks: list[bytes] = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    self.rfile.readline()
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _handle(self, method: str) -> None:
        fake = self.server.fake
        raw = self._read_body()
        split = urlsplit(self.path)
        query = {k: v[-1] for k, v in parse_qs(split.query, keep_blank_values=True).items()}
        content_type = self.headers.get("Content-Type")
        media_type = content_type.split(";")[0].strip().lower() if content_type else None
        body: JSON | None = None
        if raw:
            try:
                body = json.loads(raw)
            except ValueError:
                body = None
        request = RecordedRequest(
            method=method,
            path=split.path,
            query=query,
            headers={k.lower(): v for k, v in self.headers.items()},
            content_type=content_type,
            body=body,
        )
        fake._record(request)
        hang, injected = fake._take_rules(method, split.path)
        if hang:
            fake._stopping.wait(min(hang, MAX_HANG_SECONDS))
            if fake._stopping.is_set():
                self.close_connection = True
                return
        late = fake._take_late(method, split.path)
        try:
            if injected is not None:
                raise ApiError(injected["code"], injected["reason"], injected["message"])
            if late is not None and not late.apply:
                raise ApiError(
                    504,
                    "Timeout",
                    "Timeout: request did not complete within the allotted timeout",
                )
            fake._authorize(self.headers.get("Authorization"))
            if fake.rbac is not None:  # RBAC enforcement: tests/fakes/kube_rbac.py
                fake.rbac.check(method, split.path, query, body)
            if raw and body is None:
                raise bad_request("the request body is not valid JSON")
            code, answer = fake._dispatch(
                method, split.path, query, media_type, body, self.headers.get("Accept", "")
            )
        except ApiError as error:
            code, answer = error.code, error.body
        except Exception as exc:  # noqa: BLE001 (a bug in the fake must answer, not hang)
            internal = ApiError(500, "InternalError", f"Internal error occurred: {exc!r}", {})
            code, answer = internal.code, internal.body
        if answer is _WATCH:
            self._stream_watch(query)
            return
        if late is not None:
            if late.then is not None:
                late.then()
            fake._stopping.wait(min(late.seconds, MAX_HANG_SECONDS))
            if late.drop or fake._stopping.is_set():
                self.close_connection = True
                return
            with contextlib.suppress(OSError):  # the client may have given up long ago
                self._send_json(code, answer)
            return
        self._send_json(code, answer)

    def _send_json(self, code: int, answer: JSON) -> None:
        payload = json.dumps(answer, separators=(",", ":")).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Cache-Control", "no-cache, private")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def _stream_watch(self, query: Mapping[str, str]) -> None:
        """An empty watch: no events, ends after ``timeoutSeconds`` (capped) or on stop."""
        try:
            seconds = float(query.get("timeoutSeconds") or MAX_WATCH_SECONDS)
        except ValueError:
            seconds = MAX_WATCH_SECONDS
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        self.wfile.flush()
        self.server.fake._stopping.wait(min(seconds, MAX_WATCH_SECONDS))
        with contextlib.suppress(OSError):
            self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()
        self.close_connection = True


_WATCH: Obj = {"watch": True}  # sentinel answer of _dispatch


class FakeKubernetes:
    """A fake Kubernetes API server; see the module docstring."""

    def __init__(
        self,
        *,
        token: str = "fake-token",
        extra_types: Iterable[ResourceType] = (),
        controllers: bool = True,
    ) -> None:
        self.token = token
        self.types: list[ResourceType] = [*RESOURCE_TYPES, *extra_types]
        self.store = ObjectStore()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._requests: list[RecordedRequest] = []
        self._rules: list[_Rule] = []
        self._lock = threading.Lock()
        self.store.create(_namespaces(), None, {"metadata": {"name": "default"}})
        self.controllers = Controllers(self.store, self.types)
        self.controllers.enabled = controllers
        self.rbac: Any = None  # a tests.fakes.kube_rbac.RbacAuthorizer enforces RBAC

    # -- lifecycle

    def start(self) -> FakeKubernetes:
        if self._server is not None:
            return self
        self._stopping.clear()
        self._server = _Server(self)
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name="fake-kubernetes",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving; hung handlers are woken, open connections closed (bounded wait)."""
        server, thread = self._server, self._thread
        if server is None:
            return
        self._stopping.set()
        server.shutdown()
        server.close_connections(timeout=5.0)
        server.server_close()
        if thread is not None:
            thread.join(timeout=5.0)
        self._server = self._thread = None

    def __enter__(self) -> FakeKubernetes:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError("FakeKubernetes is not started")
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    # -- seeding and inspection

    def resource_type(self, api_version: str, kind: str) -> ResourceType:
        for rt in self.types:
            if rt.api_version == api_version and rt.kind == kind:
                return rt
        raise KeyError(f"no resource type registered for {api_version} {kind}")

    def add(self, obj: Mapping[str, Any]) -> Obj:
        """Seed (or replace) an object as stored; server fields are filled in, ``status`` kept.

        The namespace is created if missing. Replacing an existing object keeps its uid, bumps
        its resourceVersion, and bumps its generation if ``spec`` changed.
        """
        rt = self.resource_type(obj["apiVersion"], obj["kind"])
        namespace = obj.get("metadata", {}).get("namespace") or (
            "default" if rt.namespaced else None
        )
        name = obj["metadata"]["name"]
        if self.store.get(rt, namespace, name) is None:
            stored = self.store.create(
                rt, namespace, dict(obj), require_namespace=False, reset_status=False
            )
        else:

            def replace(current: Obj) -> Obj:
                new = copy.deepcopy(dict(obj))
                new.setdefault("metadata", {}).pop("resourceVersion", None)
                return new

            stored = self.store.update(rt, namespace, name, replace, replace_status=True)
        self.controllers.seeded(stored)
        return self.store.get(rt, namespace, name) or stored

    def add_many(self, objs: Iterable[Mapping[str, Any]]) -> int:
        """Seed many objects that do not exist yet (10,000 RoleBindings, say) as :meth:`add`
        does, without reading each back; returns how many were stored. Raises ``ApiError``
        (AlreadyExists) for one that exists."""
        count = 0
        for obj in objs:
            rt = self.resource_type(obj["apiVersion"], obj["kind"])
            namespace = obj.get("metadata", {}).get("namespace") or (
                "default" if rt.namespaced else None
            )
            stored = self.store.create(
                rt, namespace, dict(obj), require_namespace=False, reset_status=False
            )
            self.controllers.seeded(stored)
            count += 1
        return count

    def stall(
        self, namespace: str, name: str, *, kind: str = "Deployment", after_reads: int = 1
    ) -> None:
        """Never let this workload's rollouts complete (see :class:`Controllers.stall`)."""
        self.controllers.stall(kind, namespace, name, after_reads=after_reads)

    def unstall(self, namespace: str, name: str, *, kind: str = "Deployment") -> None:
        """Let this workload's rollouts complete again (from the next read on)."""
        self.controllers.unstall(kind, namespace, name)

    def get_object(
        self, api_version: str, kind: str, namespace: str | None, name: str
    ) -> Obj | None:
        """A deep copy of the stored object, or None."""
        return self.store.get(self.resource_type(api_version, kind), namespace, name)

    def objects(self, kind: str) -> list[Obj]:
        """Deep copies of all stored objects of a kind (``"Deployment"``), with apiVersion/kind."""
        found: list[Obj] = []
        for rt in self.types:
            if rt.kind == kind:
                found.extend(self.store.list(rt, None)[0])
        return found

    # -- requests and faults

    def _record(self, request: RecordedRequest) -> None:
        with self._lock:
            self._requests.append(request)

    @property
    def requests(self) -> list[RecordedRequest]:
        """A snapshot of the requests received so far, oldest first."""
        with self._lock:
            return list(self._requests)

    def requests_matching(
        self, method: str | None = None, path_contains: str | None = None
    ) -> list[RecordedRequest]:
        return [
            r
            for r in self.requests
            if (method is None or r.method == method.upper())
            and (path_contains is None or path_contains in r.path)
        ]

    def clear_requests(self) -> None:
        with self._lock:
            self._requests.clear()

    def fail_next(
        self,
        count: int = 1,
        *,
        status: int = 500,
        method: str | None = None,
        path_contains: str | None = None,
        reason: str = "InternalError",
        message: str = "Internal error occurred: injected by FakeKubernetes.fail_next",
    ) -> None:
        """Answer the next ``count`` matching requests with a Status of that code and reason."""
        body = status_body(status, reason, message)
        with self._lock:
            self._rules.append(_Rule(count, method, path_contains, status=body))

    def hang_next(
        self,
        seconds: float,
        *,
        count: int = 1,
        method: str | None = None,
        path_contains: str | None = None,
    ) -> None:
        """Delay the next ``count`` matching requests by ``seconds`` (at most 30; stop() wakes)."""
        with self._lock:
            self._rules.append(_Rule(count, method, path_contains, hang_seconds=seconds))

    def answer_late_next(
        self,
        seconds: float,
        *,
        count: int = 1,
        method: str | None = None,
        path_contains: str | None = None,
        apply: bool = True,
        drop: bool = False,
        then: Callable[[], None] | None = None,
    ) -> None:
        """Serve the next ``count`` matching requests at once (store the change), then wait
        ``seconds`` (at most 30; stop() wakes) before answering: a client with a shorter timeout
        gives up although its write took effect. ``apply=False``: store nothing and answer a 504
        ``Timeout`` Status after the wait. ``drop=True``: after the wait, close the connection
        without an answer. ``then`` is called once per request, after the change is stored (or
        skipped) and before the wait."""
        late = _Late(seconds=seconds, apply=apply, drop=drop, then=then)
        with self._lock:
            self._rules.append(_Rule(count, method, path_contains, late=late))

    def _take_late(self, method: str, path: str) -> _Late | None:
        with self._lock:
            for rule in self._rules:
                if rule.late is not None and rule.count > 0 and rule.matches(method, path):
                    rule.count -= 1
                    self._rules = [r for r in self._rules if r.count > 0]
                    return rule.late
        return None

    def _take_rules(self, method: str, path: str) -> tuple[float, Obj | None]:
        hang, status = 0.0, None
        with self._lock:
            for rule in self._rules:
                if rule.count <= 0 or rule.late is not None or not rule.matches(method, path):
                    continue
                if rule.hang_seconds and not hang:
                    hang = rule.hang_seconds
                    rule.count -= 1
                elif rule.status is not None and status is None:
                    status = rule.status
                    rule.count -= 1
            self._rules = [r for r in self._rules if r.count > 0]
        return hang, status

    def _authorize(self, header: str | None) -> None:
        # kubectl (client-go's clientcmd) sends no credentials at all to a plain-http server, so
        # a request without Authorization is let in; a wrong credential is refused.
        if header is not None and header != f"Bearer {self.token}":
            raise ApiError(401, "Unauthorized", "Unauthorized")

    # -- routing

    def _dispatch(
        self,
        method: str,
        path: str,
        query: Mapping[str, str],
        media_type: str | None,
        body: JSON | None,
        accept: str,
    ) -> tuple[int, JSON]:
        path = "/" + "/".join(unquote(p) for p in path.split("/") if p)
        discovery = self._discovery(path) if method == "GET" else None
        if discovery is not None:
            return 200, discovery
        route = self._route(path)
        if route is None:
            raise path_not_found()
        return self._serve(method, route, query, media_type, body, accept)

    def _groups(self) -> dict[str, list[str]]:
        groups: dict[str, list[str]] = {}
        for rt in self.types:
            if rt.group and rt.version not in groups.setdefault(rt.group, []):
                groups[rt.group].append(rt.version)
        return groups

    def _discovery(self, path: str) -> Obj | None:
        groups = self._groups()
        if path == "/version":
            return dict(SERVER_VERSION)
        if path == "/api":
            return {
                "kind": "APIVersions",
                "versions": ["v1"],
                "serverAddressByClientCIDRs": [
                    {"clientCIDR": "0.0.0.0/0", "serverAddress": "127.0.0.1:6443"}
                ],
            }
        if path == "/api/v1":
            return self._resource_list("", "v1")
        if path == "/apis":
            return {
                "kind": "APIGroupList",
                "apiVersion": "v1",
                "groups": [_api_group(g, versions) for g, versions in groups.items()],
            }
        parts = path.split("/")[1:]
        if len(parts) == 2 and parts[0] == "apis" and parts[1] in groups:
            return {"kind": "APIGroup", "apiVersion": "v1"} | _api_group(parts[1], groups[parts[1]])
        if len(parts) == 3 and parts[0] == "apis" and parts[2] in groups.get(parts[1], []):
            return self._resource_list(parts[1], parts[2])
        return None

    def _resource_list(self, group: str, version: str) -> Obj:
        resources: list[Obj] = []
        for rt in self.types:
            if (rt.group, rt.version) != (group, version):
                continue
            entry: Obj = {
                "name": rt.plural,
                "singularName": rt.singular,
                "namespaced": rt.namespaced,
                "kind": rt.kind,
                "verbs": list(rt.verbs),
            }
            if rt.short_names:
                entry["shortNames"] = list(rt.short_names)
            resources.append(entry)
            for sub in rt.subresources:
                sub_entry: Obj = {"name": f"{rt.plural}/{sub}", "singularName": ""}
                sub_entry["namespaced"] = rt.namespaced
                if sub == "scale":
                    sub_entry |= {"group": "autoscaling", "version": "v1", "kind": "Scale"}
                else:
                    sub_entry["kind"] = rt.kind
                sub_entry["verbs"] = list(SUBRESOURCE_VERBS)
                resources.append(sub_entry)
        return {
            "kind": "APIResourceList",
            "apiVersion": "v1",
            "groupVersion": f"{group}/{version}" if group else version,
            "resources": resources,
        }

    def _route(self, path: str) -> _Route | None:
        parts = path.split("/")[1:]
        if parts[:2] == ["api", "v1"]:
            group, version, rest = "", "v1", parts[2:]
        elif len(parts) >= 3 and parts[0] == "apis":
            group, version, rest = parts[1], parts[2], parts[3:]
        else:
            return None
        by_plural = {
            rt.plural: rt for rt in self.types if (rt.group, rt.version) == (group, version)
        }
        namespace: str | None = None
        if len(rest) >= 3 and rest[0] == "namespaces" and rest[2] in by_plural:
            namespace, rest = rest[1], rest[2:]
        if not rest or rest[0] not in by_plural or len(rest) > 3:
            return None
        rt = by_plural[rest[0]]
        if namespace is not None and not rt.namespaced:
            return None
        name = rest[1] if len(rest) > 1 else None
        subresource = rest[2] if len(rest) > 2 else None
        if subresource is not None and subresource not in rt.subresources:
            return None
        return _Route(rt, namespace, name, subresource)

    def _delete_collection(
        self, rt: ResourceType, namespace: str | None, query: Mapping[str, str], dry_run: bool
    ) -> Obj:
        """``deletecollection``: delete every object the selectors match, in ``namespace`` (or
        in every namespace), and answer the list of what was deleted, as the API server does."""
        items, _ = self.store.list(
            rt, namespace, query.get("labelSelector"), query.get("fieldSelector")
        )
        deleted = []
        for item in items:
            meta = item.get("metadata", {})
            try:
                self.store.delete(rt, meta.get("namespace"), meta.get("name", ""), dry_run=dry_run)
            except ApiError:  # deleted meanwhile
                continue
            deleted.append({k: v for k, v in item.items() if k not in ("apiVersion", "kind")})
        return {
            "kind": f"{rt.kind}List",
            "apiVersion": rt.api_version,
            "metadata": {"resourceVersion": self.store.resource_version},
            "items": deleted,
        }

    def _serve(
        self,
        method: str,
        route: _Route,
        query: Mapping[str, str],
        media_type: str | None,
        body: JSON | None,
        accept: str,
    ) -> tuple[int, JSON]:
        rt, namespace, name, sub = route.rt, route.namespace, route.name, route.subresource
        dry_run = query.get("dryRun") == "All"
        if "dryRun" in query and not dry_run:
            raise bad_request(f"Invalid dry run value: {query['dryRun']}")
        store = self.store
        if name is None:
            if rt.namespaced is False and namespace is not None:
                raise path_not_found()
            if method == "GET":
                if query.get("watch") in ("true", "1"):
                    return 200, _WATCH
                self.controllers.read(rt, namespace, None)
                items, rv = store.list(
                    rt, namespace, query.get("labelSelector"), query.get("fieldSelector")
                )
                if "as=Table" in accept:
                    return 200, to_table(rt, items, rv, query.get("includeObject", "Metadata"))
                return 200, {
                    "kind": f"{rt.kind}List",
                    "apiVersion": rt.api_version,
                    "metadata": {"resourceVersion": rv},
                    "items": [
                        {k: v for k, v in item.items() if k not in ("apiVersion", "kind")}
                        for item in items
                    ],
                }
            if method == "POST":
                if not isinstance(body, dict):
                    raise bad_request("the request body must be an object")
                if rt.namespaced and namespace is None:
                    raise method_not_allowed(rt, "create")
                created = store.create(rt, namespace, body, dry_run=dry_run)
                if not dry_run:
                    self.controllers.written(rt, namespace, created["metadata"]["name"])
                return 201, created
            if method == "DELETE" and "deletecollection" in rt.verbs:
                return 200, self._delete_collection(rt, namespace, query, dry_run)
            raise method_not_allowed(rt, method.lower())

        if method == "GET":
            if sub != "status":
                self.controllers.read(rt, namespace, name)
            obj = store.get(rt, namespace, name)
            if obj is None:
                raise not_found(rt, name)
            if sub == "scale":
                return 200, to_scale(rt, obj)
            if "as=Table" in accept:
                rv = obj["metadata"].get("resourceVersion")
                return 200, to_table(rt, [obj], rv, query.get("includeObject", "Metadata"))
            return 200, obj
        if method == "DELETE":
            if sub is not None:
                raise method_not_allowed(rt, "delete")
            options = body if isinstance(body, dict) else {}
            if options.get("dryRun") == ["All"]:
                dry_run = True
            answer = store.delete(rt, namespace, name, options, dry_run=dry_run)
            return 200, answer
        if method not in ("PUT", "PATCH"):
            raise method_not_allowed(rt, method.lower())
        if method == "PATCH" and media_type not in PATCH_TYPES:
            raise unsupported_media_type(PATCH_TYPES)
        if method == "PUT" and not isinstance(body, dict):
            raise bad_request("the request body must be an object")

        def mutate(current: Obj) -> Obj:
            view = to_scale(rt, current) if sub == "scale" else current
            new_view: Obj
            if isinstance(body, dict) and method == "PUT":
                new_view = copy.deepcopy(body)
            else:
                new_view = apply_patch(media_type or "", view, body)
            if sub != "scale":
                return new_view
            return _apply_scale(rt, name, current, new_view)

        updated = store.update(rt, namespace, name, mutate, subresource=sub, dry_run=dry_run)
        if not dry_run and sub != "status":
            self.controllers.written(rt, namespace, name)
        return 200, to_scale(rt, updated) if sub == "scale" else updated


def _apply_scale(rt: ResourceType, name: str, current: Obj, scale: Obj) -> Obj:
    """Fold an updated Scale back into its object (checks its resourceVersion and replicas)."""
    if scale.get("kind") not in (None, "Scale"):
        raise bad_request(f"the kind in the data ({scale.get('kind')}) does not match Scale")
    replicas = (scale.get("spec") or {}).get("replicas")
    if replicas is None:
        replicas = 0
    if not isinstance(replicas, int) or isinstance(replicas, bool) or replicas < 0:
        raise invalid(
            "Scale",
            "autoscaling",
            name,
            [("spec.replicas", f"Invalid value: {replicas}: must be greater than or equal to 0")],
        )
    metadata = scale.get("metadata") or {}
    rv = metadata.get("resourceVersion")
    if rv and rv != current["metadata"]["resourceVersion"]:
        raise conflict(rt, name, MODIFIED)
    if metadata.get("name", name) != name:
        raise bad_request(
            f"the name of the object ({metadata.get('name')}) does not match the name on the URL "
            f"({name})"
        )
    current.setdefault("spec", {})["replicas"] = replicas
    current["metadata"].pop("resourceVersion", None)
    return current


def _api_group(group: str, versions: list[str]) -> Obj:
    listed = [{"groupVersion": f"{group}/{v}", "version": v} for v in versions]
    return {"name": group, "versions": listed, "preferredVersion": listed[0]}


def write_kubeconfig(
    path: str | Path, clusters: Mapping[str, FakeKubernetes], current: str | None = None
) -> Path:
    """Write a kubeconfig with one context (cluster and user of the same name) per entry.

    ``current`` (default: the first key) is the current-context. Every fake must be started.
    """
    if not clusters:
        raise ValueError("write_kubeconfig needs at least one cluster")
    names = list(clusters)
    current = current or names[0]
    if current not in clusters:
        raise ValueError(f"current context {current!r} is not one of {names}")
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "preferences": {},
        "clusters": [{"name": n, "cluster": {"server": clusters[n].url}} for n in names],
        "users": [{"name": n, "user": {"token": clusters[n].token}} for n in names],
        "contexts": [
            {"name": n, "context": {"cluster": n, "user": n, "namespace": "default"}} for n in names
        ],
        "current-context": current,
    }
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(yaml.safe_dump(config, sort_keys=False))
    return target
