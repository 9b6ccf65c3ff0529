"""The three PATCH algorithms: JSON patch (RFC 6902), merge patch (RFC 7386) and strategic
merge patch (with the ``patchMergeKey`` of the served types)."""

from __future__ import annotations

import copy
import re
from typing import Any

from .errors import PATCH_TYPES, ApiError, bad_request, unsupported_media_type
from .registry import JSON, Obj


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
