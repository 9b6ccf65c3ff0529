"""Following a runbook's Job to its end, the last lines of its pod's log, and the ``/ops
runbooks`` catalogue (:func:`catalogue`).

A Job has ended when the Job controller sets its ``Complete`` or ``Failed`` condition to True
(``kubectl wait --for=condition=complete`` reads the same conditions); ``Failed`` carries the
reason, ``BackoffLimitExceeded`` or ``DeadlineExceeded`` (``activeDeadlineSeconds`` ran out).
:class:`JobReader` reads one Job once, for the gate's periodic job (no thread waits on a Job):
the ``follower`` of the run kind (``actions.runbook.KIND``).

The log is read as ``kubectl logs --tail N --limit-bytes B`` reads it, from the Job's newest pod
(labelled ``batch.kubernetes.io/job-name``), and bounded again here: at most :data:`LOG_LINES`
lines and :data:`LOG_BYTES` bytes, control characters dropped and backticks turned into quotes so
that it cannot break out of the code block it is shown in.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any

from actions.base import RolloutWatch
from actions.errors import ActionError, TemporaryError
from actions.rollout import RolloutResult
from actions.runbook import JobsPort, RunbookSettings
from actions.spec import RuleSettings

JOB_NAME_LABEL = "batch.kubernetes.io/job-name"
"""The label the Job controller puts on its pods (Kubernetes 1.27+; ``job-name`` before)."""
LOG_LINES = 20
"""How many of the last lines of the pod's log are posted."""
LOG_BYTES = 2000
"""At most this many bytes of log are posted (Slack cuts a text block at 3000 characters)."""
TIMEOUT = "Timeout"
"""``RolloutResult.reason`` for a Job still running when it was no longer followed."""

_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")


def job_ended(job: dict[str, Any]) -> tuple[bool, str | None, str]:
    """``(ended, failure reason, message)`` from a Job's conditions: ended when ``Complete``
    or ``Failed`` is True; the reason (``DeadlineExceeded``, ``BackoffLimitExceeded`` …) is
    None for a Job that completed."""
    for condition in (job.get("status") or {}).get("conditions") or []:
        if condition.get("status") != "True":
            continue
        if condition.get("type") == "Complete":
            return True, None, str(condition.get("message", ""))
        if condition.get("type") == "Failed":
            return True, str(condition.get("reason") or "Failed"), str(condition.get("message", ""))
    return False, None, ""


def clean_log(text: str, *, lines: int = LOG_LINES, limit: int = LOG_BYTES) -> str:
    """The last ``lines`` lines of ``text`` within ``limit`` bytes (UTF-8; whole lines are
    dropped from the front, a single overlong line keeps its end), control characters removed
    (tabs kept), backticks as quotes."""
    kept = [_CONTROL.sub("", line).replace("`", "'") for line in text.splitlines()[-lines:]]
    while kept and len("\n".join(kept).encode()) > limit:
        if len(kept) == 1:
            kept[0] = kept[0].encode()[-limit:].decode("utf-8", errors="ignore")
            break
        kept.pop(0)
    return "\n".join(kept).rstrip()


def _seconds(job: dict[str, Any], elapsed: float) -> float:
    status = job.get("status") or {}
    start, end = status.get("startTime"), status.get("completionTime")
    if start and end:
        begun = datetime.fromisoformat(str(start).replace("Z", "+00:00"))
        return (datetime.fromisoformat(str(end).replace("Z", "+00:00")) - begun).total_seconds()
    return elapsed


class JobReader:
    """Reads a followed Job once (``kube``: the adapter implementing
    :class:`actions.runbook.JobsPort`)."""

    def __init__(self, kube: JobsPort) -> None:
        self._kube = kube

    def check(self, watch: RolloutWatch, *, elapsed: float, timeout: float) -> RolloutResult | None:
        """The Job's :class:`RolloutResult` once it has ended (``done`` when it completed;
        ``reason`` the ``Failed`` condition's) or ``elapsed`` has reached ``timeout`` (seconds;
        reason ``Timeout``), its summary ending with the pod's last log lines; None while it
        runs. Raises ``NotFound`` when the Job is gone and the port's errors except
        ``TemporaryError`` (counted as "still running")."""
        try:
            job = self._kube.get_job(watch.kube_context, watch.namespace, watch.name)
        except TemporaryError:
            return None
        ended, reason, message = job_ended(job)
        if not ended and elapsed < timeout:
            return None
        status = job.get("status") or {}
        succeeded = int(status.get("succeeded") or 0)
        completions = int((job.get("spec") or {}).get("completions") or 1)
        if not ended:
            summary = (
                f"job/{watch.name} was still running after {elapsed:.0f} s, past its deadline; "
                f"check it with `kubectl get job {watch.name} -n {watch.namespace}`"
            )
            reason = TIMEOUT
        elif reason is None:
            summary = f"job/{watch.name} succeeded in {_seconds(job, elapsed):.0f} s"
        else:
            summary = f"job/{watch.name} failed: {reason}: {message}".rstrip(": ")
        summary += self._log(watch)
        return RolloutResult(
            ended and reason is None, summary, reason, elapsed, succeeded, completions
        )

    def _log(self, watch: RolloutWatch) -> str:
        """``; last N lines of pod/x's log:`` and the lines in a code block, or why not."""
        context, namespace = watch.kube_context, watch.namespace
        try:
            pods = self._kube.list_pods(context, namespace, f"{JOB_NAME_LABEL}={watch.name}")
        except ActionError as exc:
            return f"; its pods could not be listed: {exc}"
        if not pods:
            return "; it has no pod left to read a log from"
        newest = max(pods, key=lambda p: str(p.get("metadata", {}).get("creationTimestamp", "")))
        pod = str(newest.get("metadata", {}).get("name", ""))
        try:
            raw = self._kube.read_pod_log(
                context, namespace, pod, tail_lines=LOG_LINES, limit_bytes=LOG_BYTES
            )
        except ActionError as exc:
            return f"; the log of pod/{pod} could not be read: {exc}"
        text = clean_log(raw)
        if not text:
            return f"; the log of pod/{pod} is empty"
        count = len(text.splitlines())
        return f"; last {count} line(s) of pod/{pod}'s log:\n```\n{text}\n```"


def catalogue(
    settings: RuleSettings | None,
    namespaces_of: Mapping[str, Sequence[str]],
    may_ask: Callable[[str, str], bool],
) -> list[str]:
    """The answer to ``/ops runbooks``: one block of lines per runbook of ``settings``
    (:class:`RunbookSettings`) the caller may ask for somewhere, ``may_ask(environment,
    namespace glob)`` telling where; ``namespaces_of`` maps an environment to its namespace
    globs (for a runbook without ``namespaces``). Unescaped: the caller escapes them for Slack."""
    runbooks = settings.runbooks if isinstance(settings, RunbookSettings) else {}
    lines: list[str] = []
    for name, spec in sorted(runbooks.items()):
        places = [
            f"{ns} ({env})"
            for env in spec.environments
            for ns in (spec.namespaces or namespaces_of.get(env, ()))
            if may_ask(env, ns)
        ]
        if not places:
            continue
        usage = " ".join(
            f"{key}=<{p.expects()}>" if p.required and p.default is None else f"[{key}=…]"
            for key, p in spec.parameters.items()
        )
        lines.append(f"• *{name}*: {spec.description}")
        lines.append(f"    `/ops run {name} {usage} -n <namespace>`".replace("  -n", " -n"))
        lines.append(f"    where: {', '.join(places)}")
    if not lines:
        return ["There is no runbook you may run; the platform team declares them in the policy."]
    return ["Runbooks you may run (each goes through approval):", *lines]
