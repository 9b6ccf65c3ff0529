"""The Kubernetes API permissions that :class:`actions.backends.kubernetes.KubernetesBackend`
needs: one RBAC ``PolicyRule`` per group of its calls, without wildcards.

Each rule names the adapter methods that need it. A method added to the adapter needs its rule
here, or the RBAC test (``tests/test_rbac.py``, which runs every action against the fake API
server with RBAC enforced under exactly the generated ClusterRole) fails with a 403. The rule on
ClusterRoles themselves depends on the policy (the roles it grants) and is added by
:func:`approvals.rbac.cluster_role`.
"""

from __future__ import annotations

from typing import Any

RBAC_GROUP = "rbac.authorization.k8s.io"

API_RULES: tuple[dict[str, Any], ...] = (
    # get_workload, patch_workload and json_patch_workload (dry runs included: a dryRun=All
    # request is authorized as the verb it would be)
    {
        "apiGroups": ["apps"],
        "resources": ["daemonsets", "deployments", "statefulsets"],
        "verbs": ["get", "patch"],
    },
    # get_scale, patch_scale: the scale subresource of what scale can change
    {
        "apiGroups": ["apps"],
        "resources": ["deployments/scale", "statefulsets/scale"],
        "verbs": ["get", "patch"],
    },
    # list_workloads: the request form's workload search
    {
        "apiGroups": ["apps"],
        "resources": ["daemonsets", "deployments", "statefulsets"],
        "verbs": ["list"],
    },
    # list_replica_sets: a Deployment's revisions (rollback, history)
    {"apiGroups": ["apps"], "resources": ["replicasets"], "verbs": ["list"]},
    # list_horizontal_pod_autoscalers: the scale preview's HPA warning
    {"apiGroups": ["autoscaling"], "resources": ["horizontalpodautoscalers"], "verbs": ["list"]},
    # apply_role_binding (create, or get + update, or delete + create when roleRef changed),
    # get_role_binding, delete_role_binding, delete_role_bindings (deletecollection by label)
    # and list_role_bindings (in one namespace, or all namespaces for the drift check)
    {
        "apiGroups": [RBAC_GROUP],
        "resources": ["rolebindings"],
        "verbs": ["create", "delete", "deletecollection", "get", "list", "update"],
    },
)
"""The rules every policy needs, whatever it grants."""


def cluster_role_rule(roles: list[str]) -> dict[str, Any]:
    """The rule on the ClusterRoles ``roles`` (sorted names): ``get`` (get_cluster_role, the access
    preview) and ``bind`` (a RoleBinding to a ClusterRole is refused without ``bind`` on it,
    unless the creator already holds every permission the ClusterRole gives)."""
    return {
        "apiGroups": [RBAC_GROUP],
        "resources": ["clusterroles"],
        "resourceNames": list(roles),
        "verbs": ["bind", "get"],
    }
