"""Listing a namespace's workloads, for the request form's search (``bot.listeners.modal``):
a part of :class:`actions.backends.kubernetes.KubernetesBackend`, in its own module (size)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

SEARCHED_KINDS: tuple[tuple[str, str], ...] = (
    ("Deployment", "deployment"),
    ("StatefulSet", "stateful_set"),
    ("DaemonSet", "daemon_set"),
)
"""The workload kinds a search lists, and their ``AppsV1Api`` method suffixes."""


class WorkloadSearch:
    """``list_workloads``, for a backend that makes its ``AppsV1Api`` (``_apps``) and its
    translated calls (``_call``)."""

    def _apps(self, context: str | None) -> Any:
        raise NotImplementedError

    def _call(
        self,
        context: str | None,
        what: str,
        method: Callable[..., Any],
        *args: Any,
        write: bool = False,
        **kw: Any,
    ) -> dict[str, Any]:
        raise NotImplementedError

    def list_workloads(
        self, context: str | None, namespace: str, *, timeout: float | None = None
    ) -> list[tuple[str, str]]:
        """The Deployments, StatefulSets and DaemonSets in ``namespace`` as ``(kind, name)``
        pairs (``("Deployment", "web")``), in that order of kinds and by name within each;
        ``timeout`` (seconds; None: the backend's) bounds each of the three list calls.
        Raises the :mod:`actions.errors` errors."""
        api = self._apps(context)
        found: list[tuple[str, str]] = []
        for kind, suffix in SEARCHED_KINDS:
            data = self._call(
                context,
                f"listing {kind.lower()}s in {namespace}",
                getattr(api, f"list_namespaced_{suffix}"),
                namespace,
                _request_timeout=timeout,
            )
            found += sorted((kind, str(i["metadata"]["name"])) for i in data.get("items") or [])
        return found
