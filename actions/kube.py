"""The port through which actions reach Kubernetes.

``actions.backends.kubernetes.KubernetesBackend`` implements it.
"""

from __future__ import annotations

from typing import Any, Protocol


class KubernetesPort(Protocol):
    """Reads and writes in the cluster of a kubeconfig context (None: current context).

    Objects are the API server's JSON (camelCase keys, as ``kubectl get -o json`` shows them).
    ``kind`` is ``Deployment``, ``StatefulSet`` or ``DaemonSet``. ``dry_run`` sends
    ``dryRun=All``: the API server validates and answers, and stores nothing. Methods raise
    :mod:`actions.errors` errors only (``NotFound``, ``Forbidden``, ``Conflict``, ``Invalid``,
    ``TemporaryError``, ``PermanentError``); a write (not a dry run) sent without an answer
    raises ``MaybeApplied``: read the object back to learn whether it took effect.
    """

    def get_workload(
        self, context: str | None, kind: str, namespace: str, name: str
    ) -> dict[str, Any]:
        """GET a workload."""
        ...

    def patch_workload(
        self,
        context: str | None,
        kind: str,
        namespace: str,
        name: str,
        patch: dict[str, Any],
        *,
        dry_run: bool = False,
    ) -> dict[str, Any]:
        """Strategic merge PATCH of a workload; returns it as stored."""
        ...

    def json_patch_workload(
        self,
        context: str | None,
        kind: str,
        namespace: str,
        name: str,
        operations: list[dict[str, Any]],
        *,
        dry_run: bool = False,
    ) -> dict[str, Any]:
        """JSON patch (RFC 6902) of a workload; returns it as stored."""
        ...

    def get_scale(
        self, context: str | None, kind: str, namespace: str, name: str
    ) -> dict[str, Any]:
        """GET the autoscaling/v1 ``Scale`` of a Deployment or StatefulSet."""
        ...

    def patch_scale(
        self,
        context: str | None,
        kind: str,
        namespace: str,
        name: str,
        replicas: int,
        *,
        dry_run: bool = False,
    ) -> dict[str, Any]:
        """Set ``spec.replicas`` through the scale subresource; returns the new ``Scale``."""
        ...

    def list_replica_sets(
        self, context: str | None, namespace: str, label_selector: str
    ) -> list[dict[str, Any]]:
        """ReplicaSets in ``namespace`` matching ``label_selector``."""
        ...

    def list_horizontal_pod_autoscalers(
        self, context: str | None, namespace: str
    ) -> list[dict[str, Any]]:
        """autoscaling/v2 HorizontalPodAutoscalers in ``namespace``."""
        ...

    def get_cluster_role(self, context: str | None, name: str) -> dict[str, Any]:
        """GET a ClusterRole; ``NotFound`` when it does not exist."""
        ...

    def apply_role_binding(
        self, context: str | None, namespace: str, body: dict[str, Any]
    ) -> dict[str, Any]:
        """Create a RoleBinding, or replace the one of that name; returns it as stored."""
        ...

    def get_role_binding(self, context: str | None, namespace: str, name: str) -> dict[str, Any]:
        """GET a RoleBinding; ``NotFound`` when it does not exist."""
        ...

    def delete_role_binding(self, context: str | None, namespace: str, name: str) -> bool:
        """Delete a RoleBinding: True if deleted, False if it was already gone (idempotent)."""
        ...

    def list_role_bindings(
        self, context: str | None, namespace: str | None, label_selector: str
    ) -> list[dict[str, Any]]:
        """RoleBindings matching ``label_selector`` in ``namespace`` (None: all namespaces)."""
        ...

    def delete_role_bindings(
        self, context: str | None, namespace: str, label_selector: str
    ) -> list[str]:
        """Delete every RoleBinding of ``namespace`` matching ``label_selector`` in one call
        (``deletecollection``); returns the names the API server answers it deleted (none when
        it answers a ``Status`` rather than the list)."""
        ...
