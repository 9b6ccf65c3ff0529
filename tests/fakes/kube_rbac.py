"""RBAC authorization for the fake Kubernetes API server (:mod:`tests.fakes.kube`).

``fake.rbac = RbacAuthorizer(rules)`` makes the fake authorize every request of the bearer token
as the API server does for a user bound to a ClusterRole with ``rules`` by a ClusterRoleBinding:

* :func:`request_info` maps the request to the attributes of the API server's ``RequestInfo``
  (k8s.io/apiserver ``pkg/endpoints/request/requestinfo.go``): verb (``get``/``list``/``watch``
  for GET on an object, a collection or with ``watch=true``; ``create``, ``update``, ``patch``,
  ``delete``, ``deletecollection`` for a DELETE on a collection), API group, resource,
  subresource, namespace and name. ``dryRun`` does not change the verb. Paths that are not
  resources (``/version``, ``/api``, ``/apis/...``: discovery) are allowed, as the default
  ``system:discovery`` ClusterRole allows them to every authenticated user.
* :func:`rule_allows` is the RBAC authorizer's ``RuleAllows`` (``plugin/pkg/auth/authorizer/rbac``):
  verb, group, resource (``deployments/scale`` for a subresource; ``*`` also matches) and
  ``resourceNames`` (a rule with names never allows a request without a name: create, list,
  deletecollection).
* creating or updating a RoleBinding is also checked as the RBAC storage's escalation check
  does (``pkg/registry/rbac/rolebinding/policybased``): allowed when the user may ``bind`` the
  referenced ClusterRole, or already holds every permission it gives.

A refusal is the API server's 403 ``Forbidden`` Status with its message
(``deployments.apps "web" is forbidden: User "opsgate" cannot delete resource "deployments" in
API group "apps" in the namespace "staging-web"``), and is kept in :attr:`RbacAuthorizer.denied`.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from tests.fakes.kube import JSON, ApiError, Obj, ObjectStore, ResourceType

RBAC_GROUP = "rbac.authorization.k8s.io"


@dataclass(frozen=True)
class RequestInfo:
    """The attributes RBAC authorizes. ``resource`` is empty for a non-resource request."""

    verb: str
    group: str
    resource: str
    subresource: str
    namespace: str
    name: str

    @property
    def is_resource_request(self) -> bool:
        return bool(self.resource)


def request_info(method: str, path: str, query: Mapping[str, str]) -> RequestInfo:
    """The ``RequestInfo`` of a request, as the API server's ``RequestInfoFactory`` builds it."""
    parts = [p for p in path.split("/") if p]
    if parts[:1] == ["api"] and len(parts) >= 2:
        group, rest = "", parts[2:]
    elif parts[:1] == ["apis"] and len(parts) >= 3:
        group, rest = parts[1], parts[3:]
    else:
        return RequestInfo(method.lower(), "", "", "", "", "")
    if not rest:
        return RequestInfo(method.lower(), "", "", "", "", "")
    namespace = ""
    if rest[0] == "namespaces" and len(rest) > 1:
        namespace = rest[1]
        # /api/v1/namespaces/{name}[/status|/finalize] is the namespace itself
        if len(rest) > 2 and rest[2] not in ("status", "finalize"):
            rest = rest[2:]
    resource = rest[0]
    name = rest[1] if len(rest) > 1 else ""
    subresource = rest[2] if len(rest) > 2 else ""
    verb = {
        "POST": "create",
        "PUT": "update",
        "PATCH": "patch",
        "DELETE": "delete",
    }.get(method, "get")
    if method == "GET":
        if query.get("watch") in ("true", "1"):
            verb = "watch"
        elif not name:
            verb = "list"
    elif method == "DELETE" and not name:
        verb = "deletecollection"
    return RequestInfo(verb, group, resource, subresource, namespace, name)


def _has(values: Sequence[str], wanted: str) -> bool:
    return "*" in values or wanted in values


def rule_allows(rule: Mapping[str, Any], info: RequestInfo) -> bool:
    """True when the PolicyRule ``rule`` allows the resource request ``info`` (RBAC's
    ``RuleAllows``: verb, API group, resource or resource/subresource, resourceNames)."""
    if not _has(rule.get("verbs") or [], info.verb):
        return False
    if not _has(rule.get("apiGroups") or [], info.group):
        return False
    resources = rule.get("resources") or []
    if info.subresource:
        combined = f"{info.resource}/{info.subresource}"
        if not ("*" in resources or combined in resources or f"*/{info.subresource}" in resources):
            return False
    elif not _has(resources, info.resource):
        return False
    names = rule.get("resourceNames") or []
    return not names or info.name in names


def _covers(rules: Iterable[Mapping[str, Any]], wanted: Mapping[str, Any]) -> bool:
    """True when ``rules`` allow every verb on every resource (and name) of the rule ``wanted``:
    the escalation check's "already holds every permission" (wildcards in ``wanted`` are only
    covered by the same wildcard)."""
    if wanted.get("nonResourceURLs"):
        return False
    names = wanted.get("resourceNames") or [""]
    for verb in wanted.get("verbs") or []:
        for group in wanted.get("apiGroups") or []:
            for resource in wanted.get("resources") or []:
                base, _, sub = resource.partition("/")
                for name in names:
                    info = RequestInfo(verb, group, base, sub, "", name)
                    if not any(rule_allows(rule, info) for rule in rules):
                        return False
    return True


class RbacAuthorizer:
    """Authorizes requests for user ``user`` bound cluster-wide to a ClusterRole with ``rules``.

    ``store`` is the fake's :class:`ObjectStore`, to read the ClusterRole a RoleBinding refers
    to; ``types`` its resource types.
    """

    def __init__(
        self,
        rules: Iterable[Mapping[str, Any]],
        *,
        store: ObjectStore,
        types: Sequence[ResourceType],
        user: str = "system:serviceaccount:opsgate:opsgate",
    ) -> None:
        self.rules = [dict(rule) for rule in rules]
        self.user = user
        self._store = store
        self._types = types
        self._lock = threading.Lock()
        self.allowed: list[RequestInfo] = []
        self.denied: list[RequestInfo] = []

    def check(self, method: str, path: str, query: Mapping[str, str], body: JSON | None) -> None:
        """Raise the 403 ``ApiError`` when the request is not allowed; record it either way."""
        info = request_info(method, path, query)
        if not info.is_resource_request:
            return
        allowed = any(rule_allows(rule, info) for rule in self.rules)
        with self._lock:
            (self.allowed if allowed else self.denied).append(info)
        if not allowed:
            raise forbidden(info, self.user)
        if (info.group, info.resource, info.subresource) == (RBAC_GROUP, "rolebindings", "") and (
            info.verb in ("create", "update") and isinstance(body, dict)
        ):
            self._check_escalation(info, body)

    def _check_escalation(self, info: RequestInfo, body: Obj) -> None:
        ref = body.get("roleRef") or {}
        if ref.get("kind") != "ClusterRole":
            return  # a Role's rules live in the namespace; opsgate binds ClusterRoles only
        bind = RequestInfo("bind", RBAC_GROUP, "clusterroles", "", "", str(ref.get("name", "")))
        if any(rule_allows(rule, bind) for rule in self.rules):
            return
        role_type = next(t for t in self._types if t.plural == "clusterroles")
        role = self._store.get(role_type, None, bind.name) or {}
        if role and all(_covers(self.rules, r) for r in role.get("rules") or []):
            return
        with self._lock:
            self.denied.append(bind)
        name = (body.get("metadata") or {}).get("name", "")
        raise ApiError(
            403,
            "Forbidden",
            f'rolebindings.{RBAC_GROUP} "{name}" is forbidden: user "{self.user}" '
            f'(groups=["system:serviceaccounts" "system:authenticated"]) is attempting to grant '
            f"RBAC permissions not currently held, and may not bind clusterrole "
            f'"{bind.name}"',
            {"name": name, "group": RBAC_GROUP, "kind": "rolebindings"},
        )


def forbidden(info: RequestInfo, user: str) -> ApiError:
    """The API server's 403 for ``info`` (``responsewriters.ForbiddenStatusError``)."""
    group_resource = f"{info.resource}.{info.group}" if info.group else info.resource
    what = f'{group_resource} "{info.name}"' if info.name else group_resource
    resource = f"{info.resource}/{info.subresource}" if info.subresource else info.resource
    where = f' in the namespace "{info.namespace}"' if info.namespace else " at the cluster scope"
    message = (
        f'{what} is forbidden: User "{user}" cannot {info.verb} resource "{resource}" in API '
        f'group "{info.group}"{where}'
    )
    details: Obj = {"group": info.group, "kind": info.resource}
    if info.name:
        details["name"] = info.name
    return ApiError(403, "Forbidden", message, details)
