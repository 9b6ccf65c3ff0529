"""Following a rollout to its end, with the semantics of ``kubectl rollout status``.

:func:`rollout_status` reads one Deployment, StatefulSet or DaemonSet as kubectl's status viewers
do (``k8s.io/kubectl/pkg/polymorphichelpers/rollout_status.go``); :func:`follow_rollout` polls it
until the rollout is complete, is reported as not progressing, or the timeout runs out.
Restart, scale, rollback and the consumers of a rotated secret use it after their change.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from actions.base import Outcome, RolloutWatch
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
    follow = _FOLLOWERS.get(kind)
    if follow is None:
        return RolloutStatus(True, f"{kind} has no rollout to follow")
    status = obj.get("status", {}) or {}
    return follow(
        meta.get("name", ""),
        obj.get("spec", {}) or {},
        status,
        int(meta.get("generation", 0)),
        int(status.get("observedGeneration", 0)),
    )


def _deployment_status(
    name: str, spec: dict[str, Any], status: dict[str, Any], generation: int, observed: int
) -> RolloutStatus:
    """A Deployment's rollout, as :func:`rollout_status` says."""
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


def _statefulset_status(
    name: str, spec: dict[str, Any], status: dict[str, Any], generation: int, observed: int
) -> RolloutStatus:
    """A StatefulSet's rollout, as :func:`rollout_status` says."""
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


def _daemonset_status(
    name: str, spec: dict[str, Any], status: dict[str, Any], generation: int, observed: int
) -> RolloutStatus:
    """A DaemonSet's rollout, as :func:`rollout_status` says."""
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


_FOLLOWERS: dict[str, Callable[[str, dict[str, Any], dict[str, Any], int, int], RolloutStatus]] = {
    WorkloadKind.DEPLOYMENT: _deployment_status,
    WorkloadKind.STATEFULSET: _statefulset_status,
    WorkloadKind.DAEMONSET: _daemonset_status,
}


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


def _ended(
    status: RolloutStatus, obj: dict[str, Any], state: WorkloadState | None, elapsed: float
) -> RolloutResult | None:
    """The result of a rollout that has ended by this reading (complete, or not progressing:
    ``ProgressDeadlineExceeded``), or None while it is still under way."""
    ready, desired = (state.ready, state.desired) if state is not None else (0, 0)
    if status.done:
        summary = f"rolled out: {ready}/{desired} ready in {elapsed:.0f} s"
        return RolloutResult(True, summary, None, elapsed, ready, desired)
    if status.reason == PROGRESS_DEADLINE_EXCEEDED:
        summary = f"not progressing: {PROGRESS_DEADLINE_EXCEEDED}: {_condition_message(obj)}"
        return RolloutResult(False, summary, status.reason, elapsed, ready, desired)
    return None


def _timed_out(status: RolloutStatus, state: WorkloadState | None, elapsed: float) -> RolloutResult:
    ready, desired = (state.ready, state.desired) if state is not None else (0, 0)
    summary = f"not complete after {elapsed:.0f} s: {status.message}"
    return RolloutResult(False, summary, TIMEOUT, elapsed, ready, desired)


def _read(
    kube: KubernetesPort, context: str | None, kind: str, namespace: str, name: str
) -> tuple[RolloutStatus, dict[str, Any], WorkloadState | None]:
    """One GET of the workload and its :func:`rollout_status`; a ``TemporaryError`` is a
    not-done status whose message is the error's (the caller reads again later)."""
    try:
        obj = kube.get_workload(context, kind, namespace, name)
    except TemporaryError as exc:
        return RolloutStatus(False, str(exc)), {}, None
    return rollout_status(obj), obj, WorkloadState.from_object(obj)


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
    Blocks its thread: the gate follows the rollouts of requests with
    :class:`RolloutReader` from one periodic job instead.
    """
    start = clock()
    max_reads = max(math.ceil(timeout / poll_interval), 0) + 1 if poll_interval > 0 else 1
    last = RolloutStatus(False, "not read yet")
    state: WorkloadState | None = None
    for attempt in range(max_reads):
        last, obj, read_state = _read(kube, context, kind, namespace, name)
        state = read_state or state
        elapsed = (clock() - start).total_seconds()
        ended = _ended(last, obj, state, elapsed)
        if ended is not None:
            return ended
        if elapsed >= timeout or attempt == max_reads - 1:
            break
        sleep(min(poll_interval, max(timeout - elapsed, 0.0)))
    return _timed_out(last, state, (clock() - start).total_seconds())


class RolloutReader:
    """One reading of a followed rollout at a time, for the gate's periodic job: no thread
    waits on a rollout, so a hundred slow rollouts cost one job's reads, not a hundred threads.

    ``kube`` is the Kubernetes port.
    """

    def __init__(self, kube: KubernetesPort) -> None:
        self._kube = kube

    def check(self, watch: RolloutWatch, *, elapsed: float, timeout: float) -> RolloutResult | None:
        """Read ``watch``'s workload once: its :class:`RolloutResult` when the rollout is
        complete or not progressing, or when ``elapsed`` (seconds since the change) has reached
        ``timeout`` (seconds); None while it is still under way.

        Raises ``NotFound`` when the workload is gone, and the port's other errors except
        ``TemporaryError`` (a failed read counts as "still under way").
        """
        status, obj, state = _read(
            self._kube, watch.kube_context, watch.kind, watch.namespace, watch.name
        )
        ended = _ended(status, obj, state, elapsed)
        if ended is None and elapsed >= timeout:
            return _timed_out(status, state, elapsed)
        return ended


def conclude(applied: str, result: RolloutResult, facts: Mapping[str, Any]) -> Outcome:
    """The final Outcome of a change (``applied``: what was done) whose rollout ended with
    ``result``: ``applied; <rollout summary>``, with ``facts`` plus ``rollout``.

    Raises ``RolloutFailed`` (``applied, but <summary>``: the change WAS made) when the rollout
    did not complete.
    """
    facts = {**facts, "rollout": result.as_facts()}
    if not result.done:
        raise RolloutFailed(f"{applied}, but {result.summary}", facts=facts)
    return Outcome(summary=f"{applied}; {result.summary}", facts=facts)


def _condition_message(obj: dict[str, Any]) -> str:
    for condition in (obj.get("status", {}) or {}).get("conditions", []) or []:
        if condition.get("type") == "Progressing":
            return str(condition.get("message", "")) or PROGRESS_DEADLINE_EXCEEDED
    return PROGRESS_DEADLINE_EXCEEDED


class RolloutFollower:
    """The part restart, scale and rollback share: after their change, a rollout to follow.

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

    @staticmethod
    def _watch(
        applied: str,
        facts: dict[str, Any],
        *,
        context: str | None,
        kind: str,
        namespace: str,
        name: str,
    ) -> Outcome:
        """The Outcome of a change just applied (``applied``: what was done) whose rollout is
        still to be followed (:attr:`actions.base.Outcome.rollout`)."""
        return Outcome(
            summary=applied, facts=facts, rollout=RolloutWatch(kind, namespace, name, context)
        )

    def follow(self, outcome: Outcome) -> Outcome:
        """Follow ``outcome``'s rollout here, blocking (:func:`follow_rollout`), and return the
        final Outcome (:func:`conclude`); an outcome with nothing to follow is returned as it
        is. For callers that need the end before they go on (a secret's consumers, restarted
        one by one); the gate uses :class:`RolloutReader` instead.

        Raises ``RolloutFailed`` when the rollout does not complete.
        """
        watch = outcome.rollout
        if watch is None:
            return outcome
        result = follow_rollout(
            self._kube,
            watch.kube_context,
            watch.kind,
            watch.namespace,
            watch.name,
            timeout=self._rollout_timeout,
            clock=self._clock,
            sleep=self._sleep,
            poll_interval=self._poll_interval,
        )
        return conclude(outcome.summary, result, outcome.facts)
