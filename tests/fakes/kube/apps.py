"""The apps group (``apps/v1``): Deployments, StatefulSets, DaemonSets and ReplicaSets, their
builders (as a real cluster shows them after a finished rollout) and the Deployment columns of
``kubectl get``. Their controllers are in ``rollout``."""

from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Mapping
from typing import Any

from .registry import Obj, ResourceType, Table, register
from .selectors import label_selector_string
from .tables import AGE_COLUMN, NAME_COLUMN, age, column
from .times import now, rfc3339


def _pod_template(name: str, labels: Mapping[str, str], image: str) -> Obj:
    return {
        "metadata": {"labels": dict(labels)},
        "spec": {
            "containers": [
                {
                    "name": name,
                    "image": image,
                    "ports": [{"containerPort": 80, "protocol": "TCP"}],
                    "resources": {},
                    "terminationMessagePath": "/dev/termination-log",
                    "terminationMessagePolicy": "File",
                    "imagePullPolicy": "IfNotPresent",
                }
            ],
            "restartPolicy": "Always",
            "terminationGracePeriodSeconds": 30,
            "dnsPolicy": "ClusterFirst",
            "securityContext": {},
            "schedulerName": "default-scheduler",
        },
    }


def _omit_zero(values: Mapping[str, Any]) -> Obj:
    return {k: v for k, v in values.items() if v not in (0, None)}


def _condition(kind: str, status: bool, reason: str, message: str) -> Obj:
    stamp = rfc3339(now())
    return {
        "type": kind,
        "status": "True" if status else "False",
        "lastUpdateTime": stamp,
        "lastTransitionTime": stamp,
        "reason": reason,
        "message": message,
    }


def deployment(
    name: str,
    namespace: str,
    *,
    replicas: int = 1,
    image: str = "nginx:1.25",
    labels: Mapping[str, str] | None = None,
    ready_replicas: int | None = None,
) -> Obj:
    """An apps/v1 Deployment as a real cluster shows it after a finished rollout."""
    labels = dict(labels or {"app": name})
    ready = replicas if ready_replicas is None else ready_replicas
    available = ready >= replicas
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": dict(labels),
            "annotations": {"deployment.kubernetes.io/revision": "1"},
        },
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": dict(labels)},
            "template": _pod_template(name, labels, image),
            "strategy": {
                "type": "RollingUpdate",
                "rollingUpdate": {"maxUnavailable": "25%", "maxSurge": "25%"},
            },
            "revisionHistoryLimit": 10,
            "progressDeadlineSeconds": 600,
        },
        "status": {
            **_omit_zero(
                {
                    "observedGeneration": 1,
                    "replicas": replicas,
                    "updatedReplicas": replicas,
                    "readyReplicas": ready,
                    "availableReplicas": ready,
                    "unavailableReplicas": max(replicas - ready, 0),
                }
            ),
            "conditions": [
                _condition(
                    "Available",
                    available,
                    "MinimumReplicasAvailable" if available else "MinimumReplicasUnavailable",
                    "Deployment has minimum availability."
                    if available
                    else "Deployment does not have minimum availability.",
                ),
                _condition(
                    "Progressing",
                    True,
                    "NewReplicaSetAvailable",
                    f'ReplicaSet "{name}-{_hash(name)}" has successfully progressed.',
                ),
            ],
        },
    }


def statefulset(
    name: str,
    namespace: str,
    *,
    replicas: int = 1,
    image: str = "nginx:1.25",
    labels: Mapping[str, str] | None = None,
    ready_replicas: int | None = None,
) -> Obj:
    """An apps/v1 StatefulSet with all replicas current (``ready_replicas`` of them ready)."""
    labels = dict(labels or {"app": name})
    ready = replicas if ready_replicas is None else ready_replicas
    revision = f"{name}-{_hash(name)}"
    return {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": {"name": name, "namespace": namespace, "labels": dict(labels)},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": dict(labels)},
            "serviceName": name,
            "template": _pod_template(name, labels, image),
            "podManagementPolicy": "OrderedReady",
            "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"partition": 0}},
            "revisionHistoryLimit": 10,
            "persistentVolumeClaimRetentionPolicy": {
                "whenDeleted": "Retain",
                "whenScaled": "Retain",
            },
        },
        "status": {
            "observedGeneration": 1,
            "replicas": replicas,
            **_omit_zero({"readyReplicas": ready, "currentReplicas": replicas}),
            **_omit_zero({"updatedReplicas": replicas, "availableReplicas": ready}),
            "currentRevision": revision,
            "updateRevision": revision,
            "collisionCount": 0,
        },
    }


def daemonset(
    name: str,
    namespace: str,
    *,
    image: str = "nginx:1.25",
    labels: Mapping[str, str] | None = None,
    desired: int = 3,
    ready: int | None = None,
) -> Obj:
    """An apps/v1 DaemonSet scheduled on ``desired`` nodes, ``ready`` of them ready."""
    labels = dict(labels or {"app": name})
    ready_count = desired if ready is None else ready
    return {
        "apiVersion": "apps/v1",
        "kind": "DaemonSet",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": dict(labels),
            "annotations": {"deprecated.daemonset.template.generation": "1"},
        },
        "spec": {
            "selector": {"matchLabels": dict(labels)},
            "template": _pod_template(name, labels, image),
            "updateStrategy": {
                "type": "RollingUpdate",
                "rollingUpdate": {"maxUnavailable": 1, "maxSurge": 0},
            },
            "revisionHistoryLimit": 10,
        },
        "status": {
            "currentNumberScheduled": desired,
            "numberMisscheduled": 0,
            "desiredNumberScheduled": desired,
            "numberReady": ready_count,
            "observedGeneration": 1,
            **_omit_zero(
                {
                    "updatedNumberScheduled": desired,
                    "numberAvailable": ready_count,
                    "numberUnavailable": desired - ready_count,
                }
            ),
        },
    }


def replicaset(
    name: str,
    namespace: str,
    *,
    template: Mapping[str, Any],
    revision: int,
    owner: Mapping[str, Any] | None = None,
    replicas: int = 0,
) -> Obj:
    """An apps/v1 ReplicaSet as a Deployment controller leaves it for ``revision``.

    ``owner`` is the owning Deployment (as stored, so it has a uid); the pod template gets the
    ``pod-template-hash`` label, as the controller does.
    """
    pod_hash = _hash(json.dumps(template, sort_keys=True))
    pod_template = copy.deepcopy(dict(template))
    pod_template.setdefault("metadata", {}).setdefault("labels", {})["pod-template-hash"] = pod_hash
    labels = dict(pod_template["metadata"]["labels"])
    metadata: Obj = {
        "name": name,
        "namespace": namespace,
        "labels": labels,
        "annotations": {
            "deployment.kubernetes.io/revision": str(revision),
            "deployment.kubernetes.io/desired-replicas": str(replicas),
            "deployment.kubernetes.io/max-replicas": str(replicas),
        },
    }
    if owner is not None:
        metadata["ownerReferences"] = [
            {
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "name": owner["metadata"]["name"],
                "uid": owner["metadata"].get("uid", ""),
                "controller": True,
                "blockOwnerDeletion": True,
            }
        ]
    return {
        "apiVersion": "apps/v1",
        "kind": "ReplicaSet",
        "metadata": metadata,
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": labels},
            "template": pod_template,
        },
        "status": {
            "replicas": replicas,
            "observedGeneration": 1,
            **_omit_zero(
                {
                    "fullyLabeledReplicas": replicas,
                    "readyReplicas": replicas,
                    "availableReplicas": replicas,
                }
            ),
        },
    }


def _hash(text: str) -> str:
    alphabet = "bcdfghjklmnpqrstvwxz2456789"
    digest = hashlib.sha256(text.encode()).digest()
    return "".join(alphabet[b % len(alphabet)] for b in digest[:10])


_DEPLOYMENT_COLUMNS = [
    NAME_COLUMN,
    column("Ready", "string", "Number of the pod with ready state"),
    column(
        "Up-to-date",
        "string",
        "Total number of non-terminated pods targeted by this deployment that have the desired "
        "template spec.",
    ),
    column(
        "Available",
        "string",
        "Total number of available pods (ready for at least minReadySeconds) targeted by this "
        "deployment.",
    ),
    AGE_COLUMN,
    column("Containers", "string", "Names of each container in the template.", 1),
    column("Images", "string", "Images referenced by each container in the template.", 1),
    column(
        "Selector",
        "string",
        "Label selector for pods. Existing ReplicaSets whose pods are "
        "selected by this will be the ones affected by this deployment.",
        1,
    ),
]


def _deployment_cells(obj: Obj) -> list[Any]:
    spec, status = obj.get("spec", {}), obj.get("status", {})
    containers = spec.get("template", {}).get("spec", {}).get("containers", [])
    return [
        obj["metadata"]["name"],
        f"{status.get('readyReplicas', 0)}/{spec.get('replicas', 1)}",
        status.get("updatedReplicas", 0),
        status.get("availableReplicas", 0),
        age(obj),
        ",".join(c.get("name", "") for c in containers),
        ",".join(c.get("image", "") for c in containers),
        label_selector_string(spec.get("selector")),
    ]


# fmt: off
DEPLOYMENTS = register(
    ResourceType("apps", "v1", "deployments", "Deployment", True, ("deploy",), ("scale", "status")),
    table=Table(_DEPLOYMENT_COLUMNS, _deployment_cells),
)
STATEFULSETS = register(
    ResourceType("apps", "v1", "statefulsets", "StatefulSet", True, ("sts",), ("scale", "status"))
)
DAEMONSETS = register(
    ResourceType("apps", "v1", "daemonsets", "DaemonSet", True, ("ds",), ("status",))
)
REPLICASETS = register(
    ResourceType("apps", "v1", "replicasets", "ReplicaSet", True, ("rs",), ("scale", "status"))
)
# fmt: on
