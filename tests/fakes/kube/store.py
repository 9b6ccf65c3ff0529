"""The storage layer: objects with the API server's bookkeeping of server fields (uid,
``resourceVersion``, ``generation``), optimistic concurrency, dry runs and ``DELETE`` answers."""

from __future__ import annotations

import copy
import itertools
import json
import secrets
import threading
import uuid
from collections.abc import Callable, Mapping
from typing import Any

from .errors import MODIFIED, _details, already_exists, bad_request, conflict, not_found
from .patch import json_equal
from .registry import RESOURCE_TYPES, Obj, ResourceType, hooks
from .selectors import field_selector_matcher, label_selector_matcher
from .times import now, rfc3339
from .validation import check_type, drop_nulls, ordered, validate

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
        new = drop_nulls(copy.deepcopy(obj))
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
        check_type(rt, new)
        validate(rt, new)
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
            new = ordered(new)
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
            check_type(rt, new)
            new = drop_nulls(new)
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
            validate(rt, new)
            on_update = hooks(rt).on_update
            if on_update is not None:
                on_update(rt, name, new, current)
            new = ordered(new)
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


def _namespaces() -> ResourceType:
    return next(rt for rt in RESOURCE_TYPES if rt.plural == "namespaces" and not rt.group)


def _apply_defaults(rt: ResourceType, obj: Obj) -> None:
    defaults = hooks(rt).defaults
    if defaults is not None:
        defaults(obj)
