"""The port through which actions reach Kubernetes.

``actions.backends.kubernetes.KubernetesBackend`` implements it.
"""

from __future__ import annotations

from typing import Any, Protocol


class KubernetesPort(Protocol):
    """Workload reads and patches in the cluster of a kubeconfig context (None: current context).

    Objects are the API server's JSON. Methods raise :mod:`actions.errors` errors only.
    """

    def get_workload(
        self, context: str | None, kind: str, namespace: str, name: str
    ) -> dict[str, Any]: ...

    def patch_workload(
        self,
        context: str | None,
        kind: str,
        namespace: str,
        name: str,
        patch: dict[str, Any],
        *,
        dry_run: bool = False,
    ) -> dict[str, Any]: ...
