"""``FakeKubernetes``: seeding, inspection, fault injection and the serving of resource paths."""

from __future__ import annotations

import copy
import threading
from collections.abc import Callable, Iterable, Mapping
from typing import Any
from urllib.parse import unquote

from tests.fakes import kube_auth

from .discovery import Route, discover, find_route
from .errors import (
    MODIFIED,
    PATCH_TYPES,
    ApiError,
    bad_request,
    conflict,
    invalid,
    method_not_allowed,
    not_found,
    path_not_found,
    status_body,
    unsupported_media_type,
)
from .patch import apply_patch
from .registry import CONTROLLERS, JSON, RESOURCE_TYPES, Controller, Obj, ResourceType, hooks
from .rollout import Controllers
from .server import _WATCH, RecordedRequest, _Late, _Rule, _Server
from .store import ObjectStore, _namespaces
from .tables import to_scale, to_table


class FakeKubernetes:
    """A fake Kubernetes API server; see the docstring of the ``tests.fakes.kube`` package."""

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
        self.token_reviews = kube_auth.TokenReviews()
        self.rbac: Any = None  # a tests.fakes.kube_rbac.RbacAuthorizer enforces RBAC
        self.controllers = Controllers(self.store, self.types)
        # the rollout controllers, then those of registry.register_controller
        self.all_controllers: list[Controller] = [
            self.controllers,
            *(factory(self.store, self.types) for factory in CONTROLLERS),
        ]
        for controller in self.all_controllers:
            controller.enabled = controllers

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
        self._seeded(stored)
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
            self._seeded(stored)
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

    def _seeded(self, obj: Obj) -> None:
        for controller in self.all_controllers:
            controller.seeded(obj)

    def _written(self, rt: ResourceType, namespace: str | None, name: str) -> None:
        for controller in self.all_controllers:
            controller.written(rt, namespace, name)

    def _deleted(
        self, rt: ResourceType, namespace: str | None, name: str, propagation: str | None
    ) -> None:
        for controller in self.all_controllers:
            deleted = getattr(controller, "deleted", None)  # optional: see registry.Controller
            if deleted is not None:
                deleted(rt, namespace, name, propagation)

    def _read(self, rt: ResourceType, namespace: str | None, name: str | None) -> None:
        for controller in self.all_controllers:
            controller.read(rt, namespace, name)

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
        if path == kube_auth.PATH:  # TokenReview: tests/fakes/kube_auth.py
            return self.token_reviews.handle(method, body)
        discovery = discover(self.types, path) if method == "GET" else None
        if discovery is not None:
            return 200, discovery
        route = find_route(self.types, path)
        if route is None:
            raise path_not_found()
        return self._serve(method, route, query, media_type, body, accept)

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
        route: Route,
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
                self._read(rt, namespace, None)
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
                    self._written(rt, namespace, created["metadata"]["name"])
                return 201, created
            if method == "DELETE" and "deletecollection" in rt.verbs:
                return 200, self._delete_collection(rt, namespace, query, dry_run)
            raise method_not_allowed(rt, method.lower())

        reader = hooks(rt).readers.get(sub or "")
        if reader is not None:
            if method != "GET":
                raise method_not_allowed(rt, method.lower())
            return reader(self, namespace, name, query)
        if method == "GET":
            if sub != "status":
                self._read(rt, namespace, name)
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
            if not dry_run:
                propagation = query.get("propagationPolicy") or options.get("propagationPolicy")
                self._deleted(rt, namespace, name, propagation)
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
            self._written(rt, namespace, name)
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
