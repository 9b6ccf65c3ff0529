"""The Deployment, StatefulSet and DaemonSet controllers: rollouts, ReplicaSets and revision
history (``kubectl rollout status|history|undo``)."""

from __future__ import annotations

import copy
import json
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .apps import _condition, _hash, _omit_zero, replicaset
from .patch import json_equal
from .registry import Obj, ResourceType
from .store import ObjectStore

REVISION = "deployment.kubernetes.io/revision"
REVISION_HISTORY = "deployment.kubernetes.io/revision-history"
DESIRED_REPLICAS = "deployment.kubernetes.io/desired-replicas"
MAX_REPLICAS = "deployment.kubernetes.io/max-replicas"
POD_TEMPLATE_HASH = "pod-template-hash"
# Deployment annotations the Deployment controller does not copy to its ReplicaSets.
_NOT_COPIED = frozenset(
    {
        "kubectl.kubernetes.io/last-applied-configuration",
        REVISION,
        REVISION_HISTORY,
        DESIRED_REPLICAS,
        MAX_REPLICAS,
        "deprecated.deployment.rollback.to",
    }
)
WORKLOAD_PLURALS = frozenset({"deployments", "statefulsets", "daemonsets"})


def pod_template_hash(template: Mapping[str, Any]) -> str:
    """The ``pod-template-hash`` of a pod template (label removed first), as a stable string."""
    return _hash(json.dumps(_without_hash(template), sort_keys=True))


def _without_hash(template: Mapping[str, Any]) -> Obj:
    clean = copy.deepcopy(dict(template))
    labels = clean.get("metadata", {}).get("labels")
    if isinstance(labels, dict):
        labels.pop(POD_TEMPLATE_HASH, None)
    return clean


@dataclass
class _Rollout:
    """A workload's rollout in flight: ``reads`` counts the reads since the change."""

    reads: int = 0


class Controllers:
    """Deterministic stand-ins for the Deployment, StatefulSet and DaemonSet controllers.

    They act on writes that come over HTTP (not dry runs, not ``/status``) and on reads, never
    on a timer, so tests are deterministic:

    * a write that changes a workload's ``spec`` (its generation) starts a rollout; a Deployment
      whose pod template changed gets a new ReplicaSet (owned through ``ownerReferences``,
      labelled ``pod-template-hash``, annotated with the next
      ``deployment.kubernetes.io/revision`` and the Deployment's other annotations such as
      ``kubernetes.io/change-cause``); going back to an older template reuses that ReplicaSet
      under the next revision number (the old number moves to ``revision-history``), as the
      real controller does;
    * each read of the workload (GET, GET of ``scale``, or a LIST that includes it) moves the
      rollout one step; after ``steps`` reads (default 1: the first read after the change) it is
      complete: observedGeneration, replicas, updated/ready/available counts, the ReplicaSets'
      replicas and the Deployment's ``Progressing``/``Available`` conditions all say so;
    * :meth:`stall` keeps a workload's rollouts from ever completing; ``after_reads`` reads into
      a stalled Deployment rollout, ``Progressing`` turns False with reason
      ``ProgressDeadlineExceeded`` (what the real controller does after
      ``progressDeadlineSeconds``).

    Seeding with ``FakeKubernetes.add`` never starts a rollout, but a seeded Deployment gets a
    ReplicaSet for its template if it owns none (revision from its annotation, default 1).
    """

    def __init__(self, store: ObjectStore, types: list[ResourceType]) -> None:
        self.enabled = True
        self.steps = 1
        self._store = store
        self._types = {(rt.group, rt.plural): rt for rt in types}
        self._lock = threading.RLock()
        self._rollouts: dict[tuple[str, str, str], _Rollout] = {}
        self._stalled: dict[tuple[str, str, str], int] = {}

    # -- test controls

    def stall(self, kind: str, namespace: str, name: str, *, after_reads: int = 1) -> None:
        """Never complete this workload's rollouts; a Deployment's ``Progressing`` condition
        becomes False (``ProgressDeadlineExceeded``) once a rollout has been read
        ``after_reads`` times (0: at once)."""
        with self._lock:
            self._stalled[(kind, namespace, name)] = after_reads

    def unstall(self, kind: str, namespace: str, name: str) -> None:
        with self._lock:
            self._stalled.pop((kind, namespace, name), None)

    def in_flight(self, kind: str, namespace: str, name: str) -> bool:
        """Whether a rollout of this workload has started and not completed."""
        with self._lock:
            return (kind, namespace, name) in self._rollouts

    # -- hooks

    def _rt(self, plural: str) -> ResourceType:
        return self._types[("apps", plural)]

    def seeded(self, obj: Obj) -> None:
        """After ``FakeKubernetes.add``: give a Deployment a ReplicaSet for its template."""
        if not self.enabled or obj.get("kind") != "Deployment":
            return
        with self._lock:
            namespace, name = obj["metadata"]["namespace"], obj["metadata"]["name"]
            owned = self._owned(obj)
            template = obj.get("spec", {}).get("template", {})
            if any(self._matches(rs, template) for rs in owned):
                return
            revision = max((_revision(rs) for rs in owned), default=0) + 1
            if not owned:
                annotated = (obj["metadata"].get("annotations") or {}).get(REVISION, "1")
                revision = int(annotated) if annotated.isdigit() else 1
            replicas = obj.get("spec", {}).get("replicas", 1)
            self._create_replica_set(obj, revision, replicas=replicas, ready=replicas)
            self._annotate_revision(namespace, name, revision)

    def written(self, rt: ResourceType, namespace: str | None, name: str) -> None:
        """After an HTTP write of a workload (main resource or ``scale``)."""
        if not self.enabled or rt.group != "apps" or rt.plural not in WORKLOAD_PLURALS:
            return
        with self._lock:
            obj = self._store.get(rt, namespace, name)
            if obj is None:
                return
            generation = obj["metadata"].get("generation", 0)
            observed = (obj.get("status") or {}).get("observedGeneration", 0)
            if generation == observed:
                return
            key = (rt.kind, obj["metadata"]["namespace"], name)
            if rt.kind == "Deployment" and not obj.get("spec", {}).get("paused"):
                self._sync_replica_sets(obj)
            self._rollouts[key] = _Rollout()

    def read(self, rt: ResourceType, namespace: str | None, name: str | None) -> None:
        """Before answering a read: move the rollouts of what is read one step."""
        if not self.enabled or rt.group != "apps" or rt.plural not in WORKLOAD_PLURALS:
            return
        with self._lock:
            for key, rollout in list(self._rollouts.items()):
                kind, ns, n = key
                if kind != rt.kind or (namespace and ns != namespace) or (name and n != name):
                    continue
                rollout.reads += 1
                self._step(rt, ns, n, rollout)

    # -- the steps

    def _step(self, rt: ResourceType, namespace: str, name: str, rollout: _Rollout) -> None:
        obj = self._store.get(rt, namespace, name)
        if obj is None:
            del self._rollouts[(rt.kind, namespace, name)]
            return
        stall_after = self._stalled.get((rt.kind, namespace, name))
        paused = bool(obj.get("spec", {}).get("paused"))
        if stall_after is None and not paused and rollout.reads >= self.steps:
            done = 1.0
            del self._rollouts[(rt.kind, namespace, name)]
        else:
            done = 0.0 if stall_after is not None else rollout.reads / max(self.steps, 1)
        deadline = stall_after is not None and rollout.reads >= stall_after
        if rt.kind == "Deployment":
            self._deployment_status(obj, done, deadline=deadline, paused=paused)
        elif rt.kind == "StatefulSet":
            self._stateful_set_status(obj, done)
        else:
            self._daemon_set_status(obj, done)

    def _set_status(self, obj: Obj, status: Obj) -> None:
        rt = self._types[("apps", obj["kind"].lower() + "s")]
        metadata = obj["metadata"]

        def mutate(current: Obj) -> Obj:
            current["status"] = status
            current["metadata"].pop("resourceVersion", None)
            return current

        self._store.update(
            rt, metadata["namespace"], metadata["name"], mutate, subresource="status"
        )

    def _deployment_status(self, obj: Obj, done: float, *, deadline: bool, paused: bool) -> None:
        spec, metadata = obj.get("spec", {}), obj["metadata"]
        desired = spec.get("replicas", 1)
        owned = self._owned(obj)
        new_rs = next((rs for rs in owned if self._matches(rs, spec.get("template", {}))), None)
        updated = desired if done >= 1 else min(int(desired * done), max(desired - 1, 0))
        old_replicas = 0 if done >= 1 else desired - updated
        if new_rs is not None and not paused:
            for rs in owned:
                is_new = rs["metadata"]["uid"] == new_rs["metadata"]["uid"]
                self._scale_replica_set(rs, updated if is_new else old_replicas, desired)
        old_status = obj.get("status") or {}
        conditions = {c["type"]: c for c in old_status.get("conditions", [])}
        rs_name = new_rs["metadata"]["name"] if new_rs is not None else metadata["name"]
        available = (old_replicas + updated) >= desired - _max_unavailable(spec, desired)
        conditions["Available"] = _condition(
            "Available",
            available,
            "MinimumReplicasAvailable" if available else "MinimumReplicasUnavailable",
            "Deployment has minimum availability."
            if available
            else "Deployment does not have minimum availability.",
        )
        if paused:
            progressing = _condition(
                "Progressing", True, "DeploymentPaused", "Deployment is paused"
            )
            progressing["status"] = "Unknown"
        elif deadline:
            progressing = _condition(
                "Progressing",
                False,
                "ProgressDeadlineExceeded",
                f'ReplicaSet "{rs_name}" has timed out progressing.',
            )
        elif done >= 1:
            progressing = _condition(
                "Progressing",
                True,
                "NewReplicaSetAvailable",
                f'ReplicaSet "{rs_name}" has successfully progressed.',
            )
        else:
            progressing = _condition(
                "Progressing", True, "ReplicaSetUpdated", f'ReplicaSet "{rs_name}" is progressing.'
            )
        conditions["Progressing"] = progressing
        ready = old_replicas + updated
        self._set_status(
            obj,
            {
                **_omit_zero(
                    {
                        "observedGeneration": metadata.get("generation", 1),
                        "replicas": old_replicas + updated,
                        "updatedReplicas": updated,
                        "readyReplicas": ready,
                        "availableReplicas": ready,
                        "unavailableReplicas": max(desired - ready, 0),
                    }
                ),
                "conditions": [conditions["Available"], conditions["Progressing"]],
            },
        )

    def _stateful_set_status(self, obj: Obj, done: float) -> None:
        spec, metadata = obj.get("spec", {}), obj["metadata"]
        old = obj.get("status") or {}
        desired = spec.get("replicas", 1)
        update_revision = f"{metadata['name']}-{pod_template_hash(spec.get('template', {}))}"
        updated = desired if done >= 1 else min(int(desired * done), max(desired - 1, 0))
        current_revision = update_revision if done >= 1 else old.get("currentRevision", "")
        ready = desired if done >= 1 else max(desired - 1, 0)
        self._set_status(
            obj,
            {
                "observedGeneration": metadata.get("generation", 1),
                "replicas": desired,
                **_omit_zero(
                    {
                        "readyReplicas": ready,
                        "currentReplicas": desired if done >= 1 else desired - updated,
                        "updatedReplicas": updated,
                        "availableReplicas": ready,
                    }
                ),
                "currentRevision": current_revision,
                "updateRevision": update_revision,
                "collisionCount": old.get("collisionCount", 0),
            },
        )

    def _daemon_set_status(self, obj: Obj, done: float) -> None:
        metadata = obj["metadata"]
        old = obj.get("status") or {}
        desired = old.get("desiredNumberScheduled", 3)
        updated = desired if done >= 1 else min(int(desired * done), max(desired - 1, 0))
        available = desired if done >= 1 else max(desired - 1, 0)
        self._set_status(
            obj,
            {
                "currentNumberScheduled": desired,
                "numberMisscheduled": 0,
                "desiredNumberScheduled": desired,
                "numberReady": available,
                "observedGeneration": metadata.get("generation", 1),
                **_omit_zero(
                    {
                        "updatedNumberScheduled": updated,
                        "numberAvailable": available,
                        "numberUnavailable": desired - available,
                    }
                ),
            },
        )

    # -- ReplicaSets

    def _owned(self, deployment_obj: Obj) -> list[Obj]:
        uid = deployment_obj["metadata"].get("uid")
        items, _ = self._store.list(
            self._rt("replicasets"), deployment_obj["metadata"]["namespace"]
        )
        return [
            rs
            for rs in items
            if any(
                ref.get("uid") == uid and ref.get("controller")
                for ref in rs["metadata"].get("ownerReferences", [])
            )
        ]

    @staticmethod
    def _matches(rs: Obj, template: Mapping[str, Any]) -> bool:
        return json_equal(_without_hash(rs.get("spec", {}).get("template", {})), template)

    def _sync_replica_sets(self, obj: Obj) -> None:
        """Find or make the ReplicaSet of the Deployment's current template (not scaled yet)."""
        namespace, name = obj["metadata"]["namespace"], obj["metadata"]["name"]
        template = obj.get("spec", {}).get("template", {})
        owned = self._owned(obj)
        newest = max((_revision(rs) for rs in owned), default=0)
        current = next((rs for rs in owned if self._matches(rs, template)), None)
        copied = {
            k: v
            for k, v in (obj["metadata"].get("annotations") or {}).items()
            if k not in _NOT_COPIED
        }
        if current is None:
            revision = newest + 1
            self._create_replica_set(obj, revision, replicas=0, ready=0, annotations=copied)
        elif _revision(current) != newest:
            revision = newest + 1
            old = _revision(current)

            def reuse(rs: Obj) -> Obj:
                annotations = rs["metadata"].setdefault("annotations", {})
                history = [h for h in annotations.get(REVISION_HISTORY, "").split(",") if h]
                annotations[REVISION_HISTORY] = ",".join([*history, str(old)])
                annotations[REVISION] = str(revision)
                annotations.update(copied)
                rs["metadata"].pop("resourceVersion", None)
                return rs

            self._store.update(
                self._rt("replicasets"), namespace, current["metadata"]["name"], reuse
            )
        else:
            revision = newest
        self._annotate_revision(namespace, name, revision)

    def _annotate_revision(self, namespace: str, name: str, revision: int) -> None:
        def mutate(current: Obj) -> Obj:
            current["metadata"].setdefault("annotations", {})[REVISION] = str(revision)
            current["metadata"].pop("resourceVersion", None)
            return current

        self._store.update(self._rt("deployments"), namespace, name, mutate)

    def _create_replica_set(
        self,
        obj: Obj,
        revision: int,
        *,
        replicas: int,
        ready: int,
        annotations: Mapping[str, str] | None = None,
    ) -> Obj:
        template = obj.get("spec", {}).get("template", {})
        pod_hash = pod_template_hash(template)
        rs = replicaset(
            f"{obj['metadata']['name']}-{pod_hash}",
            obj["metadata"]["namespace"],
            template=template,
            revision=revision,
            owner=obj,
            replicas=replicas,
        )
        rs["metadata"]["annotations"].update(annotations or {})
        rs["status"] = _replica_set_status(replicas, ready)
        return self._store.create(
            self._rt("replicasets"), obj["metadata"]["namespace"], rs, reset_status=False
        )

    def _scale_replica_set(self, rs: Obj, replicas: int, desired: int) -> None:
        def mutate(current: Obj) -> Obj:
            current["spec"]["replicas"] = replicas
            annotations = current["metadata"].setdefault("annotations", {})
            annotations[DESIRED_REPLICAS] = str(desired)
            annotations[MAX_REPLICAS] = str(desired + _max_surge(desired))
            current["status"] = _replica_set_status(replicas, replicas)
            current["metadata"].pop("resourceVersion", None)
            return current

        self._store.update(
            self._rt("replicasets"),
            rs["metadata"]["namespace"],
            rs["metadata"]["name"],
            mutate,
            replace_status=True,
        )


def _replica_set_status(replicas: int, ready: int) -> Obj:
    return {
        "replicas": replicas,
        "observedGeneration": 1,
        **_omit_zero(
            {"fullyLabeledReplicas": replicas, "readyReplicas": ready, "availableReplicas": ready}
        ),
    }


def _revision(rs: Obj) -> int:
    text = (rs["metadata"].get("annotations") or {}).get(REVISION, "0")
    return int(text) if text.isdigit() else 0


def _max_surge(desired: int) -> int:
    return max(-(-desired * 25 // 100), 0)


def _max_unavailable(spec: Obj, desired: int) -> int:
    rolling = (spec.get("strategy") or {}).get("rollingUpdate") or {}
    value = rolling.get("maxUnavailable", "25%")
    if isinstance(value, str) and value.endswith("%"):
        return desired * int(value[:-1]) // 100
    return int(value)
