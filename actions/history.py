"""A Deployment's revisions, as ``kubectl rollout history`` lists them (read-only).

The revisions are the ReplicaSets the Deployment controls (selected by the Deployment's selector,
owned through a controller ``ownerReference`` with its uid), each numbered by its
``deployment.kubernetes.io/revision`` annotation and described by its
``kubernetes.io/change-cause`` annotation; ReplicaSets without a revision are left out, as
kubectl leaves them out.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from actions.kube import KubernetesPort
from actions.workloads import WorkloadKind, find_workload

REVISION = "deployment.kubernetes.io/revision"
CHANGE_CAUSE = "kubernetes.io/change-cause"
POD_TEMPLATE_HASH = "pod-template-hash"


@dataclass(frozen=True)
class Revision:
    """One revision of a Deployment.

    ``number``: the revision; ``images``: its containers' images, in order; ``created_at``: when
    its ReplicaSet was created (aware UTC); ``change_cause``: the ``kubernetes.io/change-cause``
    annotation, or None; ``current``: its pod template is the Deployment's; ``replica_set``: the
    ReplicaSet's name; ``template``: its pod template without the ``pod-template-hash`` label.
    """

    number: int
    images: tuple[str, ...]
    created_at: datetime
    change_cause: str | None
    current: bool
    replica_set: str
    template: dict[str, Any]

    def as_facts(self) -> dict[str, Any]:
        """JSON for ``Preview.facts`` (the template left out)."""
        return {
            "revision": self.number,
            "images": list(self.images),
            "created_at": self.created_at.isoformat(),
            "change_cause": self.change_cause,
            "replica_set": self.replica_set,
        }


def label_selector(selector: dict[str, Any] | None) -> str:
    """A ``LabelSelector`` as the query string ``labelSelector`` (``app=web,tier in (a,b)``)."""
    if not selector:
        return ""
    terms = [f"{k}={v}" for k, v in (selector.get("matchLabels") or {}).items()]
    for expression in selector.get("matchExpressions") or []:
        key, operator = expression["key"], expression["operator"]
        values = ",".join(expression.get("values") or [])
        terms.append(
            {
                "In": f"{key} in ({values})",
                "NotIn": f"{key} notin ({values})",
                "Exists": key,
                "DoesNotExist": f"!{key}",
            }[operator]
        )
    return ",".join(terms)


def template_without_hash(template: dict[str, Any]) -> dict[str, Any]:
    """A ReplicaSet's pod template minus the ``pod-template-hash`` label the controller adds
    (what ``kubectl rollout undo`` writes back into the Deployment)."""
    clean = copy.deepcopy(template)
    labels = (clean.get("metadata") or {}).get("labels")
    if isinstance(labels, dict):
        labels.pop(POD_TEMPLATE_HASH, None)
    return clean


def controlled_replica_sets(
    kube: KubernetesPort, context: str | None, deployment: dict[str, Any]
) -> list[dict[str, Any]]:
    """The ReplicaSets ``deployment`` (its JSON) controls: listed by its selector, kept when a
    controller ``ownerReference`` carries its uid (as kubectl's ``GetAllReplicaSets``)."""
    meta = deployment.get("metadata", {})
    selector = label_selector((deployment.get("spec") or {}).get("selector"))
    owned = []
    for rs in kube.list_replica_sets(context, meta.get("namespace", ""), selector):
        refs = (rs.get("metadata") or {}).get("ownerReferences") or []
        if any(r.get("controller") and r.get("uid") == meta.get("uid") for r in refs):
            owned.append(rs)
    return owned


def revisions_of(deployment: dict[str, Any], replica_sets: list[dict[str, Any]]) -> list[Revision]:
    """The revisions among ``replica_sets`` (JSON), ascending, as kubectl lists them."""
    template = (deployment.get("spec") or {}).get("template") or {}
    found: dict[int, Revision] = {}
    for rs in replica_sets:
        meta = rs.get("metadata") or {}
        annotations = meta.get("annotations") or {}
        text = annotations.get(REVISION, "")
        if not str(text).isdigit():
            continue
        rs_template = template_without_hash((rs.get("spec") or {}).get("template") or {})
        containers = (rs_template.get("spec") or {}).get("containers") or []
        created = meta.get("creationTimestamp", "1970-01-01T00:00:00Z")
        found[int(text)] = Revision(
            number=int(text),
            images=tuple(str(c.get("image", "?")) for c in containers),
            created_at=datetime.fromisoformat(str(created).replace("Z", "+00:00")),
            change_cause=annotations.get(CHANGE_CAUSE) or None,
            current=rs_template == template,
            replica_set=str(meta.get("name", "")),
            template=rs_template,
        )
    return [found[n] for n in sorted(found)]


def rollout_history(
    kube: KubernetesPort, context: str | None, namespace: str, name: str
) -> list[Revision]:
    """The revisions of Deployment ``name`` in ``namespace``, ascending, as
    ``kubectl rollout history deployment/<name>`` lists them.

    Raises ``NotFound`` when there is no such Deployment, and the port's errors.
    """
    deployment = find_workload(kube, context, namespace, name, WorkloadKind.DEPLOYMENT)
    return revisions_of(deployment, controlled_replica_sets(kube, context, deployment))


def human_duration(seconds: float) -> str:
    """kubectl's short age format (``HumanDuration``): 45s, 2m5s, 3h, 3h20m, 12d, 2y30d."""
    s = max(int(seconds), 0)
    minutes, hours, days = s // 60, s // 3600, s // 86400
    if s < 120:
        return f"{s}s"
    if minutes < 10:
        return f"{minutes}m{s % 60}s" if s % 60 else f"{minutes}m"
    if minutes < 180:
        return f"{minutes}m"
    if hours < 8:
        return f"{hours}h{minutes % 60}m" if minutes % 60 else f"{hours}h"
    if hours < 48:
        return f"{hours}h"
    if hours < 24 * 8:
        return f"{days}d{hours % 24}h" if hours % 24 else f"{days}d"
    if days < 365 * 2:
        return f"{days}d"
    years = days // 365
    return f"{years}y{days % 365}d" if years < 8 else f"{years}y"


def describe_revision(revision: Revision, now: datetime) -> str:
    """One revision in Slack mrkdwn: number, image(s), age, change-cause."""
    images = ", ".join(f"`{i}`" for i in revision.images) or "no containers"
    age = human_duration((now - revision.created_at).total_seconds())
    cause = revision.change_cause or "<none>"
    current = " (current)" if revision.current else ""
    return f"*revision {revision.number}*{current}: {images}, {age} old, change-cause: {cause}"


def render_history(revisions: list[Revision], now: datetime) -> list[str]:
    """Lines (Slack mrkdwn) for ``/ops history``: one per revision, oldest first, as kubectl
    lists them, with image(s), age (kubectl's format) and change-cause."""
    if not revisions:
        return ["no rollout history found"]
    return [describe_revision(r, now) for r in revisions]
