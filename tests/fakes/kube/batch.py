"""batch/v1 Jobs and pod logs, registered with the fake's registration point.

* ``POST /apis/batch/v1/namespaces/{ns}/jobs`` (``?dryRun=All`` too): validated as the API server
  validates a Job (422 ``Invalid`` with its causes: the pod template's containers, image, name,
  ``restartPolicy`` (``OnFailure`` or ``Never``), env names, ``value`` with ``valueFrom``,
  negative ``activeDeadlineSeconds``/``backoffLimit``/``ttlSecondsAfterFinished``, a name over
  63 characters; 400 for a resource quantity that does not parse) and defaulted as the Job
  strategy does (``spec.selector`` on ``batch.kubernetes.io/controller-uid``, the pod template's
  ``controller-uid``/``job-name`` labels, ``completions``, ``parallelism``, ``backoffLimit`` 6,
  ``completionMode``, ``suspend``, ``podReplacementPolicy``): the type's ``defaults`` hook;
* the Job controller (:class:`JobController`, ``register_controller``): a created Job starts one
  Pod ``<job>-<5 chars>``, owned by the Job, ``Running``, and the Job's ``status.active`` is 1;
  deleting a Job with ``propagationPolicy`` ``Background``/``Foreground`` deletes its pods,
  ``Orphan`` (the default for Jobs deleted through the API, as on a real server) leaves them;
* ``kubectl get jobs`` columns (Name, Status, Completions, Duration, Age);
* ``GET /api/v1/namespaces/{ns}/pods/{name}/log`` with ``container``, ``tailLines`` and
  ``limitBytes``, answered ``text/plain`` (400 for a pod with several containers and no
  ``container``, as the API server answers): ``add_reader("", "pods", "log", …)``.

GET, LIST (label selectors), PATCH and the ``status`` subresource of Jobs are the generic storage
of the fake. Tests drive a Job to its end (the Job controller's conditions, Kubernetes 1.32)
through the fake's controller, ``jobs = job_controller(fake)``::

    jobs.succeed(namespace, job, log="done\\n")  # SuccessCriteriaMet + Complete
    jobs.fail(namespace, job, log="boom\\n")     # Failed: BackoffLimitExceeded
    jobs.exceed_deadline(namespace, job)        # Failed: DeadlineExceeded; pods deleted
    jobs.write_log(namespace, pod, "text")      # append to a pod's log
    jobs.pods_of(namespace, job)                # the Job's pods (copies)
"""

from __future__ import annotations

import re
import secrets
import threading
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from .errors import bad_request, invalid, not_found
from .registry import Obj, ResourceType, Table, add_reader, register, register_controller
from .tables import AGE_COLUMN, NAME_COLUMN, age, column
from .times import now, parse_rfc3339, rfc3339

if TYPE_CHECKING:
    from .fake import FakeKubernetes
    from .store import ObjectStore

CONTROLLER_UID = "batch.kubernetes.io/controller-uid"
JOB_NAME = "batch.kubernetes.io/job-name"
_ENV_NAME = re.compile(r"[-._a-zA-Z][-._a-zA-Z0-9]*")
_QUANTITY = re.compile(r"^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$")
_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
_ENV_MESSAGE = (
    "a valid environment variable name must consist of alphabetic characters, digits, '_', '-', "
    "or '.', and must not start with a digit (e.g. 'my.env-name',  or 'MY_ENV.NAME',  or "
    "'MyEnvName1', regex used for validation is '[-._a-zA-Z][-._a-zA-Z0-9]*')"
)


def _nonnegative(spec: Obj, key: str, causes: list[tuple[str, str]]) -> None:
    value = spec.get(key)
    if value is not None and (not isinstance(value, int) or value < 0):
        message = f"Invalid value: {value}: must be greater than or equal to 0"
        causes.append((f"spec.{key}", message))


def _container_causes(i: int, container: Obj) -> list[tuple[str, str]]:
    at = f"spec.template.spec.containers[{i}]"
    causes: list[tuple[str, str]] = []
    if not container.get("name"):
        causes.append((f"{at}.name", "Required value"))
    if not container.get("image"):
        causes.append((f"{at}.image", "Required value"))
    for j, var in enumerate(container.get("env") or []):
        name = str(var.get("name") or "")
        if not name:
            causes.append((f"{at}.env[{j}].name", "Required value"))
        elif not _ENV_NAME.fullmatch(name):
            causes.append((f"{at}.env[{j}].name", f'Invalid value: "{name}": {_ENV_MESSAGE}'))
        if var.get("value") and var.get("valueFrom"):
            causes.append(
                (
                    f"{at}.env[{j}].valueFrom",
                    'Invalid value: "": may not be specified when `value` is not empty',
                )
            )
    for kind in ("requests", "limits"):
        for resource, quantity in ((container.get("resources") or {}).get(kind) or {}).items():
            if not _QUANTITY.match(str(quantity)):
                raise bad_request(
                    'Job in version "v1" cannot be handled as a Job: quantities must match the '
                    "regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'"
                    f" ({kind}[{resource}])"
                )
    return causes


def validate_job(job: Obj) -> None:
    """Raise the API server's 422 ``Invalid`` (or 400) for a Job it would refuse."""
    meta = job.get("metadata") or {}
    name = str(meta.get("name") or meta.get("generateName") or "")
    spec = job.get("spec") or {}
    causes: list[tuple[str, str]] = []
    if len(str(meta.get("name") or "")) > 63:
        message = f'Invalid value: "{meta["name"]}": must be no more than 63 characters'
        causes.append(("metadata.name", message))
    for key in ("activeDeadlineSeconds", "backoffLimit", "ttlSecondsAfterFinished"):
        _nonnegative(spec, key, causes)
    pod = (spec.get("template") or {}).get("spec") or {}
    policy = pod.get("restartPolicy") or "Always"
    if policy not in ("OnFailure", "Never"):
        causes.append(
            (
                "spec.template.spec.restartPolicy",
                f'Unsupported value: "{policy}": supported values: "OnFailure", "Never"',
            )
        )
    account = pod.get("serviceAccountName")
    if account and not _SUBDOMAIN.fullmatch(str(account)):
        causes.append(
            (
                "spec.template.spec.serviceAccountName",
                f'Invalid value: "{account}": a lowercase RFC 1123 subdomain must consist of '
                "lower case alphanumeric characters, '-' or '.', and must start and end with an "
                "alphanumeric character",
            )
        )
    containers = pod.get("containers") or []
    if not containers:
        causes.append(("spec.template.spec.containers", "Required value"))
    for i, container in enumerate(containers):
        causes += _container_causes(i, container)
    if causes:
        raise invalid("Job", "batch", name, causes)


def _defaults(job: Obj) -> None:
    """The type's ``defaults`` hook (create and dry run): refuse what the API server refuses,
    then the Job strategy's defaults and, the uid being set, ``spec.selector`` and the pod
    template's labels."""
    validate_job(job)
    spec = job.setdefault("spec", {})
    for key, value in (
        ("parallelism", 1),
        ("completions", 1),
        ("backoffLimit", 6),
        ("completionMode", "NonIndexed"),
        ("suspend", False),
        ("podReplacementPolicy", "TerminatingOrFailed"),
    ):
        spec.setdefault(key, value)
    meta = job["metadata"]
    uid, name = meta["uid"], meta["name"]
    spec["selector"] = {"matchLabels": {CONTROLLER_UID: uid}}
    template_meta = spec.setdefault("template", {}).setdefault("metadata", {})
    labels = template_meta.setdefault("labels", {})
    labels.update({CONTROLLER_UID: uid, JOB_NAME: name, "controller-uid": uid, "job-name": name})


def _condition(kind: str, reason: str, message: str) -> Obj:
    moment = rfc3339(now())
    return {
        "type": kind,
        "status": "True",
        "lastProbeTime": moment,
        "lastTransitionTime": moment,
        "reason": reason,
        "message": message,
    }


_JOB_COLUMNS = [
    NAME_COLUMN,
    column("Status", "string", "Status of the job."),
    column("Completions", "string", "The completion status of the job."),
    column("Duration", "string", "Time required to complete the job."),
    AGE_COLUMN,
]


def _cells(job: Obj) -> list[Any]:
    return [job["metadata"]["name"], *_job_cells(job), age(job)]


JOBS = register(
    ResourceType("batch", "v1", "jobs", "Job", True, (), ("status",)),
    table=Table(_JOB_COLUMNS, _cells),
    defaults=_defaults,
)


def job_controller(fake: FakeKubernetes) -> JobController:
    """The Job controller of ``fake`` (its test controls: ``succeed``, ``fail`` …)."""
    return next(c for c in fake.all_controllers if isinstance(c, JobController))


def _read_log(
    fake: FakeKubernetes, namespace: str | None, pod: str, query: Mapping[str, str]
) -> tuple[int, str]:
    """``GET .../pods/{name}/log``: the pod's log as text."""
    return 200, job_controller(fake).log(namespace or "default", pod, query)


add_reader("", "pods", "log", _read_log)


@register_controller
class JobController:
    """The Jobs and pod logs of one ``FakeKubernetes``; see the module."""

    def __init__(self, store: ObjectStore, types: list[ResourceType]) -> None:
        self.enabled = True
        self._store = store
        self._pods = next(t for t in types if (t.group, t.plural) == ("", "pods"))
        self._logs: dict[tuple[str, str], str] = {}
        self._lock = threading.Lock()

    # -- the Controller protocol (tests.fakes.kube.registry.Controller)

    def seeded(self, obj: Obj) -> None:
        """Nothing: a seeded Job is as given."""

    def read(self, rt: ResourceType, namespace: str | None, name: str | None) -> None:
        """Nothing: Jobs end when a test says so."""

    def written(self, rt: ResourceType, namespace: str | None, name: str) -> None:
        """A Job created through the API starts (once)."""
        if not self.enabled or rt.plural != "jobs" or rt.group != "batch" or namespace is None:
            return
        job = self._store.get(JOBS, namespace, name)
        if job is not None and "startTime" not in (job.get("status") or {}):
            self._start(job)

    def deleted(
        self, rt: ResourceType, namespace: str | None, name: str, propagation: str | None
    ) -> None:
        """A Job deleted with ``Background``/``Foreground`` propagation takes its pods along;
        ``Orphan`` (the default for Jobs) leaves them."""
        is_job = (rt.group, rt.plural) == ("batch", "jobs") and namespace is not None
        if is_job and propagation in ("Background", "Foreground"):
            assert namespace is not None
            for pod in self.pods_of(namespace, name):
                self._store.delete(self._pods, namespace, pod["metadata"]["name"])

    def _start(self, job: Obj) -> None:
        """What the Job controller does next: one pod, ``status.active`` 1."""
        meta = job["metadata"]
        namespace, name = meta["namespace"], meta["name"]
        template = job["spec"]["template"]
        pod = {
            "metadata": {
                "name": f"{name}-{secrets.token_hex(3)[:5]}",
                "labels": dict(template["metadata"]["labels"]),
                "ownerReferences": [
                    {
                        "apiVersion": "batch/v1",
                        "kind": "Job",
                        "name": name,
                        "uid": meta["uid"],
                        "controller": True,
                        "blockOwnerDeletion": True,
                    }
                ],
            },
            "spec": dict(template.get("spec") or {}),
        }
        created = self._store.create(self._pods, namespace, pod)
        started = rfc3339(now())
        containers = [
            {
                "name": c.get("name", ""),
                "image": c.get("image", ""),
                "ready": True,
                "restartCount": 0,
                "started": True,
                "state": {"running": {"startedAt": started}},
            }
            for c in pod["spec"].get("containers") or []
        ]
        self._set_status(
            self._pods,
            namespace,
            created["metadata"]["name"],
            lambda _s: {"phase": "Running", "startTime": started, "containerStatuses": containers},
        )
        self._set_status(
            JOBS,
            namespace,
            name,
            lambda _s: {
                "startTime": started,
                "active": 1,
                "ready": 1,
                "terminating": 0,
                "uncountedTerminatedPods": {},
            },
        )

    def log(self, namespace: str, pod_name: str, query: Mapping[str, str]) -> str:
        """The pod's log as ``kubectl logs`` asks for it (``container``, ``tailLines``,
        ``limitBytes``); raises the API server's errors."""
        pod = self._store.get(self._pods, namespace, pod_name)
        if pod is None:
            raise not_found(self._pods, pod_name)
        names = [c.get("name", "") for c in (pod.get("spec") or {}).get("containers") or []]
        container = query.get("container")
        if container is None and len(names) > 1:
            raise bad_request(
                f"a container name must be specified for pod {pod_name}, choose one of: "
                f"[{' '.join(names)}]"
            )
        if container is not None and container not in names:
            raise bad_request(f"container {container} is not valid for pod {pod_name}")
        with self._lock:
            text = self._logs.get((namespace, pod_name), "")
        lines = text.splitlines(keepends=True)
        tail = query.get("tailLines")
        if tail is not None:
            lines = lines[-int(tail) :] if int(tail) > 0 else []
        data = "".join(lines).encode()
        limit = query.get("limitBytes")
        if limit is not None:
            if int(limit) < 1:
                raise invalid(
                    "PodLogOptions", "", "", [("limitBytes", "Invalid value: 0: must be > 0")]
                )
            data = data[: int(limit)]
        return data.decode(errors="ignore")

    # -- test controls

    def pods_of(self, namespace: str, job: str) -> list[Obj]:
        """The Job's pods (labelled ``batch.kubernetes.io/job-name``), oldest first."""
        pods, _ = self._store.list(self._pods, namespace, f"{JOB_NAME}={job}")
        return sorted(pods, key=lambda p: p["metadata"]["creationTimestamp"])

    def write_log(self, namespace: str, pod: str, text: str) -> None:
        """Append ``text`` to the log of ``pod``."""
        with self._lock:
            self._logs[(namespace, pod)] = self._logs.get((namespace, pod), "") + text

    def succeed(self, namespace: str, job: str, *, log: str = "") -> None:
        """The Job's pod exits 0 (after writing ``log``); the Job completes."""
        self._end_pod(namespace, job, log, exit_code=0)
        message = "Reached expected number of succeeded pods"
        self._set_status(
            JOBS,
            namespace,
            job,
            lambda s: {
                **s,
                "active": 0,
                "ready": 0,
                "succeeded": 1,
                "completionTime": rfc3339(now()),
                "conditions": [
                    _condition("SuccessCriteriaMet", "CompletionsReached", message),
                    _condition("Complete", "CompletionsReached", message),
                ],
            },
        )

    def fail(self, namespace: str, job: str, *, log: str = "", exit_code: int = 1) -> None:
        """The Job's pod exits ``exit_code``; the Job fails with ``BackoffLimitExceeded``."""
        self._end_pod(namespace, job, log, exit_code=exit_code)
        message = "Job has reached the specified backoff limit"
        self._failed(namespace, job, "BackoffLimitExceeded", message)

    def exceed_deadline(self, namespace: str, job: str, *, log: str = "") -> None:
        """``activeDeadlineSeconds`` ran out: the Job fails with ``DeadlineExceeded`` and the
        controller deletes its active pods (so their logs are gone with them)."""
        for pod in self.pods_of(namespace, job):
            self.write_log(namespace, pod["metadata"]["name"], log)
            self._store.delete(self._pods, namespace, pod["metadata"]["name"])
        message = "Job was active longer than specified deadline"
        self._failed(namespace, job, "DeadlineExceeded", message)

    def _failed(self, namespace: str, job: str, reason: str, message: str) -> None:
        self._set_status(
            JOBS,
            namespace,
            job,
            lambda s: {
                **s,
                "active": 0,
                "ready": 0,
                "failed": 1,
                "conditions": [
                    _condition("FailureTarget", reason, message),
                    _condition("Failed", reason, message),
                ],
            },
        )

    def _end_pod(self, namespace: str, job: str, log: str, *, exit_code: int) -> None:
        pods = self.pods_of(namespace, job)
        if not pods:
            raise AssertionError(f"job/{job} in {namespace} has no pod")
        pod = pods[-1]["metadata"]["name"]
        self.write_log(namespace, pod, log)
        ended = rfc3339(now())
        phase = "Succeeded" if exit_code == 0 else "Failed"

        def status(current: Obj) -> Obj:
            containers = [
                {
                    **c,
                    "ready": False,
                    "started": False,
                    "state": {
                        "terminated": {
                            "exitCode": exit_code,
                            "reason": "Completed" if exit_code == 0 else "Error",
                            "startedAt": c["state"].get("running", {}).get("startedAt", ended),
                            "finishedAt": ended,
                        }
                    },
                }
                for c in current.get("containerStatuses") or []
            ]
            return {**current, "phase": phase, "containerStatuses": containers}

        self._set_status(self._pods, namespace, pod, status)

    def _set_status(
        self, rt: ResourceType, namespace: str, name: str, change: Callable[[Obj], Obj]
    ) -> None:
        def mutate(current: Obj) -> Obj:
            return {**current, "status": change(current.get("status") or {})}

        self._store.update(rt, namespace, name, mutate, subresource="status")


def _job_cells(job: Obj) -> list[str]:
    """``kubectl get jobs``' Status, Completions and Duration cells."""
    status = job.get("status") or {}
    types = {c.get("type") for c in status.get("conditions") or [] if c.get("status") == "True"}
    state = "Complete" if "Complete" in types else "Failed" if "Failed" in types else "Running"
    completions = f"{status.get('succeeded', 0)}/{(job.get('spec') or {}).get('completions', 1)}"
    start, end = status.get("startTime"), status.get("completionTime")
    duration = ""
    if start:
        finish = parse_rfc3339(end) if end else now()
        duration = f"{max(int((finish - parse_rfc3339(start)).total_seconds()), 0)}s"
    return [state, completions, duration]
