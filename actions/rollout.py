"""Following a rollout to its end, with the semantics of ``kubectl rollout status``.

:func:`rollout_status` reads one Deployment, StatefulSet or DaemonSet as kubectl's status viewers
do (``k8s.io/kubectl/pkg/polymorphichelpers/rollout_status.go``); :func:`follow_rollout` polls it
until the rollout is complete, is reported as not progressing, or the timeout runs out.
Restart, scale, rollback and the consumers of a rotated secret use it after their change.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from actions.base import Outcome
from actions.errors import RolloutFailed, TemporaryError
from actions.kube import KubernetesPort
from actions.workloads import WorkloadKind, WorkloadState

PROGRESS_DEADLINE_EXCEEDED = "ProgressDeadlineExceeded"
"""The reason of a Deployment's ``Progressing`` condition after ``progressDeadlineSeconds``."""
TIMEOUT = "Timeout"
"""``RolloutResult.reason`` when the rollout was still under way at the end of the timeout."""


@dataclass(frozen=True)
class RolloutStatus:
    """One reading of a rollout: ``done``; ``message`` as kubectl prints it (without newline);
    ``reason`` is ``ProgressDeadlineExceeded`` when the Deployment controller gave up."""

    done: bool
    message: str
    reason: str | None = None


def rollout_status(obj: dict[str, Any]) -> RolloutStatus:
    """Read a workload's rollout from its JSON as ``kubectl rollout status`` does.

    Deployment: the spec update is observed (generation <= observedGeneration), its
    ``Progressing`` condition is not ``ProgressDeadlineExceeded``, all replicas are updated, no
    old replica is left and every updated one is available. StatefulSet (RollingUpdate): observed,
    ``readyReplicas`` reach ``spec.replicas``, the partition (if any) is updated, and
    ``currentRevision`` equals ``updateRevision``. DaemonSet: observed, every scheduled pod
    updated and available. An ``OnDelete`` strategy cannot be followed: reported as done, as
    kubectl has nothing to wait for either.
    """
    kind = obj.get("kind", "")
    meta = obj.get("metadata", {})
    spec = obj.get("spec", {}) or {}
    status = obj.get("status", {}) or {}
    name = meta.get("name", "")
    generation = int(meta.get("generation", 0))
    observed = int(status.get("observedGeneration", 0))
    if kind == WorkloadKind.DEPLOYMENT:
        if generation > observed:
            return RolloutStatus(False, "Waiting for deployment spec update to be observed...")
        progressing = next(
            (c for c in status.get("conditions", []) or [] if c.get("type") == "Progressing"),
            None,
        )
        if progressing is not None and progressing.get("reason") == PROGRESS_DEADLINE_EXCEEDED:
            return RolloutStatus(
                False,
                f'deployment "{name}" exceeded its progress deadline: '
                f"{progressing.get('message', '')}".rstrip(": "),
                PROGRESS_DEADLINE_EXCEEDED,
            )
        desired = spec.get("replicas")
        updated = int(status.get("updatedReplicas", 0))
        replicas = int(status.get("replicas", 0))
        available = int(status.get("availableReplicas", 0))
        waiting = f'Waiting for deployment "{name}" rollout to finish: '
        if desired is not None and updated < int(desired):
            return RolloutStatus(
                False, f"{waiting}{updated} out of {desired} new replicas have been updated..."
            )
        if replicas > updated:
            return RolloutStatus(
                False, f"{waiting}{replicas - updated} old replicas are pending termination..."
            )
        if available < updated:
            return RolloutStatus(
                False, f"{waiting}{available} of {updated} updated replicas are available..."
            )
        return RolloutStatus(True, f'deployment "{name}" successfully rolled out')
    if kind == WorkloadKind.STATEFULSET:
        strategy = spec.get("updateStrategy", {}) or {}
        if strategy.get("type", "RollingUpdate") != "RollingUpdate":
            return RolloutStatus(True, "rollout status is only available for RollingUpdate")
        if observed == 0 or generation > observed:
            return RolloutStatus(False, "Waiting for statefulset spec update to be observed...")
        desired = spec.get("replicas")
        ready = int(status.get("readyReplicas", 0))
        if desired is not None and ready < int(desired):
            return RolloutStatus(False, f"Waiting for {int(desired) - ready} pods to be ready...")
        updated = int(status.get("updatedReplicas", 0))
        partition = (strategy.get("rollingUpdate") or {}).get("partition")
        if desired is not None and partition is not None:  # kubectl: even a partition of 0
            if updated < int(desired) - int(partition):
                return RolloutStatus(
                    False,
                    "Waiting for partitioned roll out to finish: "
                    f"{updated} out of {int(desired) - int(partition)} new pods have been "
                    "updated...",
                )
            return RolloutStatus(
                True, f"partitioned roll out complete: {updated} new pods have been updated..."
            )
        update_revision = status.get("updateRevision", "")
        if update_revision != status.get("currentRevision", ""):
            return RolloutStatus(
                False,
                f"waiting for statefulset rolling update to complete {updated} pods at "
                f"revision {update_revision}...",
            )
        return RolloutStatus(
            True,
            f"statefulset rolling update complete {status.get('currentReplicas', 0)} pods at "
            f"revision {status.get('currentRevision', '')}...",
        )
    if kind == WorkloadKind.DAEMONSET:
        strategy = spec.get("updateStrategy", {}) or {}
        if strategy.get("type", "RollingUpdate") != "RollingUpdate":
            return RolloutStatus(True, "rollout status is only available for RollingUpdate")
        if generation > observed:
            return RolloutStatus(False, "Waiting for daemon set spec update to be observed...")
        desired = int(status.get("desiredNumberScheduled", 0))
        updated = int(status.get("updatedNumberScheduled", 0))
        available = int(status.get("numberAvailable", 0))
        waiting = f'Waiting for daemon set "{name}" rollout to finish: '
        if updated < desired:
            return RolloutStatus(
                False, f"{waiting}{updated} out of {desired} new pods have been updated..."
            )
        if available < desired:
            return RolloutStatus(
                False, f"{waiting}{available} of {desired} updated pods are available..."
            )
        return RolloutStatus(True, f'daemon set "{name}" successfully rolled out')
    return RolloutStatus(True, f"{kind} has no rollout to follow")


@dataclass(frozen=True)
class RolloutResult:
    """How a followed rollout ended.

    ``done``: complete. ``summary``: one line for people, e.g. ``rolled out: 3/3 ready in 41 s``,
    ``not progressing: ProgressDeadlineExceeded: ReplicaSet "x-5d8f" has timed out progressing.``
    or ``not complete after 300 s: Waiting for deployment "x" rollout to finish: 1 out of 3 new
    replicas have been updated...``. ``reason``: None when done, else
    ``ProgressDeadlineExceeded`` or ``Timeout``. ``elapsed`` in seconds (by the clock given).
    ``ready``/``desired`` are the last replica counts read.
    """

    done: bool
    summary: str
    reason: str | None
    elapsed: float
    ready: int
    desired: int

    def as_facts(self) -> dict[str, Any]:
        """JSON for ``Outcome.facts``."""
        return {
            "done": self.done,
            "summary": self.summary,
            "reason": self.reason,
            "elapsed_seconds": round(self.elapsed, 1),
            "ready": self.ready,
            "desired": self.desired,
        }


def follow_rollout(
    kube: KubernetesPort,
    context: str | None,
    kind: str,
    namespace: str,
    name: str,
    *,
    timeout: float,
    clock: Callable[[], datetime],
    sleep: Callable[[float], None] = time.sleep,
    poll_interval: float = 2.0,
) -> RolloutResult:
    """Poll a workload (GET every ``poll_interval`` seconds) until :func:`rollout_status` says
    it is done, or not progressing (``ProgressDeadlineExceeded``), or ``timeout`` seconds have
    passed by ``clock`` (an aware-datetime callable; at most ``timeout / poll_interval + 1``
    reads are made even if the clock stands still), as ``kubectl rollout status --timeout``.

    Never raises for a rollout that does not complete: that is a ``RolloutResult`` with
    ``done=False``. A ``TemporaryError`` while reading is retried until the timeout; other
    :mod:`actions.errors` errors (``NotFound`` when the workload is gone…) are raised.
    """
    start = clock()
    max_reads = max(math.ceil(timeout / poll_interval), 0) + 1 if poll_interval > 0 else 1
    last = RolloutStatus(False, "not read yet")
    state: WorkloadState | None = None
    last_obj: dict[str, Any] = {}
    for attempt in range(max_reads):
        try:
            obj = kube.get_workload(context, kind, namespace, name)
        except TemporaryError as exc:
            last = RolloutStatus(False, str(exc))
        else:
            last, last_obj = rollout_status(obj), obj
            state = WorkloadState.from_object(obj)
        elapsed = (clock() - start).total_seconds()
        ready, desired = (state.ready, state.desired) if state is not None else (0, 0)
        if last.done:
            summary = f"rolled out: {ready}/{desired} ready in {elapsed:.0f} s"
            return RolloutResult(True, summary, None, elapsed, ready, desired)
        if last.reason == PROGRESS_DEADLINE_EXCEEDED:
            message = _condition_message(last_obj)
            summary = f"not progressing: {PROGRESS_DEADLINE_EXCEEDED}: {message}"
            return RolloutResult(False, summary, last.reason, elapsed, ready, desired)
        if elapsed >= timeout or attempt == max_reads - 1:
            break
        sleep(min(poll_interval, max(timeout - elapsed, 0.0)))
    elapsed = (clock() - start).total_seconds()
    ready, desired = (state.ready, state.desired) if state is not None else (0, 0)
    summary = f"not complete after {elapsed:.0f} s: {last.message}"
    return RolloutResult(False, summary, TIMEOUT, elapsed, ready, desired)


def _condition_message(obj: dict[str, Any]) -> str:
    for condition in (obj.get("status", {}) or {}).get("conditions", []) or []:
        if condition.get("type") == "Progressing":
            return str(condition.get("message", "")) or PROGRESS_DEADLINE_EXCEEDED
    return PROGRESS_DEADLINE_EXCEEDED


class RolloutFollower:
    """The part restart, scale and rollback share: after their change, follow the rollout.

    ``kube``: the Kubernetes port; ``clock``: aware UTC now; ``rollout_timeout``: seconds to
    follow the rollout after the change; ``sleep``/``poll_interval`` (seconds) pace it.
    """

    def __init__(
        self,
        *,
        kube: KubernetesPort,
        clock: Callable[[], datetime],
        rollout_timeout: float = 300.0,
        sleep: Callable[[float], None] = time.sleep,
        poll_interval: float = 2.0,
    ) -> None:
        self._kube = kube
        self._clock = clock
        self._rollout_timeout = rollout_timeout
        self._sleep = sleep
        self._poll_interval = poll_interval

    def _follow(self, context: str | None, kind: str, namespace: str, name: str) -> RolloutResult:
        """:func:`follow_rollout` with this kind's port, clock and pacing."""
        return follow_rollout(
            self._kube,
            context,
            kind,
            namespace,
            name,
            timeout=self._rollout_timeout,
            clock=self._clock,
            sleep=self._sleep,
            poll_interval=self._poll_interval,
        )

    @staticmethod
    def _outcome(applied: str, result: RolloutResult, facts: dict[str, Any]) -> Outcome:
        """``applied; <rollout summary>`` when the rollout completed.

        Raises ``RolloutFailed`` (``applied, but <summary>``: the change WAS made) when not.
        """
        if not result.done:
            raise RolloutFailed(f"{applied}, but {result.summary}", facts=facts)
        return Outcome(summary=f"{applied}; {result.summary}", facts=facts)
