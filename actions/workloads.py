"""Workload references (``name`` or ``kind/name``) and what a workload's JSON says about it."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from actions.errors import Invalid, NotFound
from actions.kube import KubernetesPort


class WorkloadKind(StrEnum):
    DEPLOYMENT = "Deployment"
    STATEFULSET = "StatefulSet"
    DAEMONSET = "DaemonSet"


KIND_ALIASES: dict[str, WorkloadKind] = {
    alias: kind
    for kind, aliases in {
        WorkloadKind.DEPLOYMENT: ("deployment", "deployments", "deploy"),
        WorkloadKind.STATEFULSET: ("statefulset", "statefulsets", "sts"),
        WorkloadKind.DAEMONSET: ("daemonset", "daemonsets", "ds"),
    }.items()
    for alias in aliases
}
"""The resource names and short names kubectl accepts (``deploy``, ``sts``, ``ds``…)."""


def parse_workload(text: str) -> tuple[WorkloadKind | None, str]:
    """Split ``deploy/payments-api`` into (Deployment, "payments-api"); a bare name has no kind.

    Raises ``ValueError`` for an unknown kind or an empty name.
    """
    kind_text, sep, name = text.partition("/")
    if not sep:
        kind_text, name = "", text
    if not name or "/" in name:
        raise ValueError(f"'{text}' is not a workload; use a name or kind/name")
    if not kind_text:
        return None, name
    kind = KIND_ALIASES.get(kind_text.lower())
    if kind is None:
        raise ValueError(
            f"'{kind_text}' is not a workload kind; use deployment, statefulset or daemonset"
        )
    return kind, name


@dataclass(frozen=True)
class WorkloadState:
    """The facts of a workload's JSON that previews show."""

    kind: str
    name: str
    namespace: str
    desired: int
    ready: int
    images: tuple[str, ...]
    paused: bool
    generation: int

    @classmethod
    def from_object(cls, obj: dict[str, Any]) -> WorkloadState:
        """Read a Deployment, StatefulSet or DaemonSet as the API server returns it."""
        kind = obj.get("kind", "")
        meta = obj.get("metadata", {})
        spec = obj.get("spec", {})
        status = obj.get("status", {}) or {}
        if kind == WorkloadKind.DAEMONSET:
            desired = int(status.get("desiredNumberScheduled", 0))
            ready = int(status.get("numberReady", 0))
        else:
            desired = int(spec.get("replicas", 1))
            ready = int(status.get("readyReplicas", 0))
        containers = spec.get("template", {}).get("spec", {}).get("containers", [])
        return cls(
            kind=kind,
            name=meta.get("name", ""),
            namespace=meta.get("namespace", ""),
            desired=desired,
            ready=ready,
            images=tuple(c.get("image", "?") for c in containers),
            paused=bool(spec.get("paused", False)),
            generation=int(meta.get("generation", 0)),
        )

    @property
    def ref(self) -> str:
        """``deployment/payments-api``, as kubectl names it."""
        return f"{self.kind.lower()}/{self.name}"


def find_workload(
    kube: KubernetesPort,
    context: str | None,
    namespace: str,
    name: str,
    kind: WorkloadKind | None,
    *,
    kinds: tuple[WorkloadKind, ...] = tuple(WorkloadKind),
) -> dict[str, Any]:
    """GET the workload ``name`` in ``namespace``: of ``kind``, or, when ``kind`` is None, of
    whichever of ``kinds`` has one by that name (as kubectl would need to be told).

    Raises ``NotFound`` naming what was looked for, ``Invalid`` when ``kind`` is not one of
    ``kinds`` or the name is ambiguous (several kinds have it), and the port's errors.
    """
    if kind is not None:
        if kind not in kinds:
            raise Invalid(f"this cannot be done to a {kind}; use {_names(kinds)}")
        try:
            return kube.get_workload(context, kind, namespace, name)
        except NotFound as exc:
            raise NotFound(f"no {kind} named '{name}' in namespace {namespace}") from exc
    found = []
    for candidate in kinds:
        try:
            found.append(kube.get_workload(context, candidate, namespace, name))
        except NotFound:
            continue
    if not found:
        raise NotFound(f"no {_names(kinds, 'or')} named '{name}' in namespace {namespace}")
    if len(found) > 1:
        listed = ", ".join(f"{o['kind'].lower()}/{name}" for o in found)
        raise Invalid(f"'{name}' names several workloads ({listed}); say which one")
    return found[0]


def _names(kinds: tuple[WorkloadKind, ...], conjunction: str = "or") -> str:
    names = [str(k) for k in kinds]
    if len(names) == 1:
        return names[0]
    return f"{', '.join(names[:-1])} {conjunction} {names[-1]}"
