"""The RBAC group (``rbac.authorization.k8s.io/v1``): RoleBindings (whose ``roleRef`` is
immutable, as the API server enforces) and ClusterRoles."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from .errors import invalid
from .registry import Obj, ResourceType, register


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


def _role_ref_is_immutable(rt: ResourceType, name: str, new: Obj, current: Obj) -> None:
    if new.get("roleRef") != current.get("roleRef"):
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


ROLEBINDINGS = register(
    ResourceType("rbac.authorization.k8s.io", "v1", "rolebindings", "RoleBinding", True),
    on_update=_role_ref_is_immutable,
)
CLUSTERROLES = register(
    ResourceType("rbac.authorization.k8s.io", "v1", "clusterroles", "ClusterRole", False)
)
