"""``run``: a runbook the policy declares, run as a Kubernetes Job under the same approvals.

The policy's ``runbooks`` section (:class:`RunbookSpec`, validated by the policy loader) names each
runbook, its Job template, its typed parameters and where it may run. ``/ops run <runbook>
[key=value …] -n <namespace>`` is checked against that declaration (:func:`check_values`), the Job
is rendered (:func:`render_job`) and validated with a server-side dry run (``dryRun=All``) before
anyone is asked; the approvers see the exact Job that will be created. On approval the Job is
created, labelled with the request ID, and followed to its end from the gate's periodic job
(:mod:`actions.runbook_job`), which posts the last lines of its pod's log.

The kind is declared in one place, :data:`KIND`: its grammar, params, the policy's top-level
``runbooks`` (:class:`RunbookSettings`, whose hooks give the loader the environments it names,
the irreversible runbooks an auto rule must own up to and the runbooks no rule lets anyone run),
its per-request reversibility, its Job follower and the ``/ops runbooks`` catalogue. What it
needs of Kubernetes is :class:`JobsPort`. Files it touches outside tests and docs: this module,
:mod:`actions.runbook_job` (follower and catalogue, split off for the size limit), its line in
``actions/registry.py``, the adapter (``actions/backends/kubernetes.py``), and least-privilege
RBAC (``RUNBOOK_RULES`` in ``actions/backends/kube_permissions.py``, given by
``approvals/rbac.py`` only to a policy with runbooks).

Parameters reach the container as environment variables (``env``), never through a shell: the
command is the list the policy gives, executed as is, so a value such as ``$(rm -rf /)`` is only
ever a string in the environment. Secrets reach it by reference only
(``valueFrom.secretKeyRef``): opsgate never reads, stores or shows a secret's value.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Collection, Mapping, Sequence
from fnmatch import fnmatchcase
from typing import Annotated, Any, ClassVar, Literal, Protocol, runtime_checkable

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

from actions.base import Outcome, Preview, RolloutWatch, Target
from actions.errors import Invalid, MaybeApplied, NotFound, TemporaryError
from actions.spec import (
    Arg,
    ArgType,
    Backends,
    Catalogue,
    Follower,
    KindSpec,
    Loc,
    RuleSettings,
    Scope,
)

MANAGED_BY = "app.kubernetes.io/managed-by"
RUNBOOK_LABEL = "opsgate.io/runbook"
REQUEST_LABEL = "opsgate.io/request-id"
REQUESTER_ANNOTATION = "opsgate.io/requester"
CONTAINER = "runbook"
FOLLOW_GRACE = 120.0
"""Seconds the Job is still followed after its ``activeDeadlineSeconds``: the Job controller
marks it ``Failed``/``DeadlineExceeded`` itself, shortly after the deadline."""

JOB = "Job"
"""``RolloutWatch.kind`` of a runbook's Job, followed by :mod:`actions.runbook_job`."""


@runtime_checkable
class JobsPort(Protocol):
    """What runbooks need of Kubernetes beyond ``actions.kube.KubernetesPort``: batch/v1 Jobs,
    the pods they run and those pods' logs. ``context`` is the kubeconfig context (None: the
    current one). Raises ``actions.errors.ActionError`` subclasses as that port does."""

    def create_job(
        self, context: str | None, namespace: str, body: dict[str, Any], *, dry_run: bool = False
    ) -> dict[str, Any]:
        """POST a batch/v1 Job; returns it as stored (as it would be, for a dry run).
        ``Invalid`` (422) carries the API server's validation message; ``MaybeApplied`` when
        the POST got no answer."""
        ...

    def get_job(self, context: str | None, namespace: str, name: str) -> dict[str, Any]:
        """GET a Job; ``NotFound`` when it does not exist."""
        ...

    def list_pods(
        self, context: str | None, namespace: str, label_selector: str
    ) -> list[dict[str, Any]]:
        """Pods in ``namespace`` matching ``label_selector``."""
        ...

    def read_pod_log(
        self, context: str | None, namespace: str, name: str, *, tail_lines: int, limit_bytes: int
    ) -> str:
        """The last ``tail_lines`` lines of a pod's (only container's) log, at most
        ``limit_bytes`` bytes of it (the API server cuts there), decoded as UTF-8."""
        ...


_NAME = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
_PARAMETER = re.compile(r"[a-z][a-z0-9_]*")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_INTEGER = re.compile(r"-?[0-9]+")


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _check_regex(value: str) -> str:
    try:
        re.compile(value)
    except re.error as exc:
        raise ValueError(f"not a valid regular expression: {exc}") from exc
    return value


def _check_env_name(value: str) -> str:
    if not _ENV_NAME.fullmatch(value):
        raise ValueError(f"'{value}' is not an environment variable name (A-Z, 0-9, _)")
    return value


EnvName = Annotated[str, AfterValidator(_check_env_name)]


class StringParameter(_Model):
    """A string; the whole value must match ``pattern`` (Python ``re``, full match) if given."""

    type: Literal["string"]
    description: str = ""
    pattern: Annotated[str, AfterValidator(_check_regex)] | None = None
    max_length: int = Field(default=256, ge=1, le=4096)
    default: str | None = None
    required: bool = True

    def check(self, name: str, text: str) -> str:
        """``text`` as the value; raises ``Invalid`` with what is expected."""
        if len(text) > self.max_length:
            raise Invalid(f"parameter '{name}' is longer than {self.max_length} characters")
        if self.pattern is not None and re.fullmatch(self.pattern, text) is None:
            raise Invalid(f"parameter '{name}': '{text}' does not match {self.pattern}")
        return text

    def expects(self) -> str:
        return f"string matching {self.pattern}" if self.pattern else "string"


class IntegerParameter(_Model):
    """A whole number between ``min`` and ``max`` (inclusive; each optional)."""

    type: Literal["integer"]
    description: str = ""
    min: int | None = None
    max: int | None = None
    default: int | None = None
    required: bool = True

    @model_validator(mode="after")
    def _ordered(self) -> IntegerParameter:
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"min ({self.min}) is greater than max ({self.max})")
        return self

    def check(self, name: str, text: str) -> str:
        """``text`` as the value (decimal digits, optional ``-``); raises ``Invalid``."""
        if not _INTEGER.fullmatch(text) or len(text) > 19:
            raise Invalid(f"parameter '{name}': '{text}' is not a whole number")
        value = int(text)
        if self.min is not None and value < self.min:
            raise Invalid(f"parameter '{name}': {value} is below the minimum of {self.min}")
        if self.max is not None and value > self.max:
            raise Invalid(f"parameter '{name}': {value} is above the maximum of {self.max}")
        return str(value)

    def expects(self) -> str:
        low = "" if self.min is None else str(self.min)
        high = "" if self.max is None else str(self.max)
        return f"integer {low}..{high}" if low or high else "integer"


class EnumParameter(_Model):
    """One of ``values``."""

    type: Literal["enum"]
    description: str = ""
    values: list[str] = Field(min_length=1)
    default: str | None = None
    required: bool = True

    def check(self, name: str, text: str) -> str:
        """``text`` when it is one of the values; raises ``Invalid``."""
        if text not in self.values:
            raise Invalid(f"parameter '{name}': '{text}' is not one of {', '.join(self.values)}")
        return text

    def expects(self) -> str:
        return f"one of {', '.join(self.values)}"


Parameter = Annotated[
    StringParameter | IntegerParameter | EnumParameter, Field(discriminator="type")
]


class SecretRef(_Model):
    """An environment variable read by the kubelet from a Secret's key (``secretKeyRef``)."""

    secret: str = Field(min_length=1, max_length=253)
    key: str = Field(min_length=1, max_length=253)


class JobTemplate(_Model):
    """The Job a runbook runs. Durations in seconds. ``command`` is the container's command
    (exec form, no shell); ``env`` are fixed values; ``secret_env`` come from Secrets by
    reference; ``resources`` is the container's ``requests``/``limits`` (quantities as strings).
    ``ttl_seconds_after_finished`` is at least 60, so that the Job is still there when opsgate
    reads how it ended.
    """

    image: str = Field(min_length=1, max_length=512)
    command: list[str] = Field(min_length=1)
    service_account: str | None = None
    resources: dict[Literal["requests", "limits"], dict[str, str]] = {}
    active_deadline_seconds: int = Field(ge=1, le=7 * 86400)
    ttl_seconds_after_finished: int | None = Field(default=86400, ge=60, le=30 * 86400)
    backoff_limit: int = Field(default=0, ge=0, le=10)
    env: dict[EnvName, str] = {}
    secret_env: dict[EnvName, SecretRef] = {}


class RunbookSpec(_Model):
    """One runbook of the policy's ``runbooks`` section.

    ``environments`` (names) and ``namespaces`` (globs; absent: any namespace of those
    environments) say where it may run; ``reversible: false`` (the default) keeps it from
    ``approval: auto`` unless the rule says ``allow_irreversible_auto``.
    """

    description: str = Field(min_length=1, max_length=300)
    environments: list[str] = Field(min_length=1)
    namespaces: list[str] | None = None
    reversible: bool = False
    job: JobTemplate
    parameters: dict[str, Parameter] = {}

    @model_validator(mode="after")
    def _consistent(self) -> RunbookSpec:
        names = [env_name(p) for p in self.parameters]
        for name in self.parameters:
            if not _PARAMETER.fullmatch(name):
                raise ValueError(f"parameter '{name}': names are lower case: a-z, 0-9, _")
        clash = set(names) & (set(self.job.env) | set(self.job.secret_env))
        clash |= set(self.job.env) & set(self.job.secret_env)
        if clash:
            raise ValueError(f"environment variable(s) set twice: {', '.join(sorted(clash))}")
        for name, parameter in self.parameters.items():
            if parameter.default is not None:
                try:
                    parameter.check(name, str(parameter.default))
                except Invalid as exc:
                    raise ValueError(f"default: {exc}") from None
        return self


def check_runbook_name(value: str) -> str:
    """A runbook name: a DNS-1123 label of at most 40 characters (its Jobs are named
    ``<runbook>-<request ID>``, and a Job name must fit a 63-character label)."""
    if len(value) > 40 or not _NAME.fullmatch(value):
        raise ValueError(f"'{value}': a runbook name is 1-40 of a-z, 0-9 and '-'")
    return value


RunbookName = Annotated[str, AfterValidator(check_runbook_name)]


def env_name(parameter: str) -> str:
    """The environment variable a parameter is passed in: its name in upper case."""
    return parameter.upper()


def irreversible_in(
    runbooks: Mapping[str, RunbookSpec], environments: Collection[str] | None
) -> list[str]:
    """The irreversible runbooks that may run in one of ``environments`` (None: any)."""
    return sorted(
        name
        for name, spec in runbooks.items()
        if not spec.reversible
        and (environments is None or set(spec.environments) & set(environments))
    )


class RunbookSettings(RuleSettings):
    """The policy's top-level ``runbooks`` section: each runbook by name (``KIND``'s
    ``policy_settings``; the rules deciding ``run`` hand it to the kind in ``Target.settings``)."""

    runbooks: dict[RunbookName, RunbookSpec] = {}

    def as_settings(self, *, applies: bool) -> dict[str, Any]:
        """``{"runbooks": {name: runbook as JSON}}``."""
        return {"runbooks": {n: r.model_dump(mode="json") for n, r in self.runbooks.items()}}

    def environments_named(self) -> list[tuple[Loc, Sequence[str]]]:
        """Each runbook's ``environments``."""
        return [(("runbooks", n, "environments"), r.environments) for n, r in self.runbooks.items()]

    def irreversible(self, environments: Collection[str] | None) -> list[str]:
        """``runbook <name>`` for each irreversible runbook that may run in ``environments``."""
        return [f"runbook {name}" for name in irreversible_in(self.runbooks, environments)]

    def warnings(self, decided_in: Callable[[Collection[str]], bool]) -> list[tuple[Loc, str]]:
        """The runbooks no rule lets anyone run (every rule deciding ``run`` where they run
        denies, or there is none)."""
        return [
            (
                ("runbooks", name),
                f"no rule lets anyone run it (action run in {', '.join(runbook.environments)})",
            )
            for name, runbook in self.runbooks.items()
            if not decided_in(runbook.environments)
        ]


class RunParams(BaseModel):
    """``/ops run <runbook> [key=value …] -n <namespace>``: ``values`` as typed."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    runbook: RunbookName
    namespace: str = Field(min_length=1, max_length=63)
    values: dict[str, str] = {}


def check_values(name: str, spec: RunbookSpec, values: Mapping[str, str]) -> dict[str, str]:
    """The environment (``NAME: value``) for ``values``, checked against the parameters:
    unknown keys, missing required ones, each value's type. Defaults fill the rest; an optional
    parameter without a default is left out. Raises ``Invalid`` listing every problem."""
    problems = [f"parameter '{k}' holds a NUL character" for k, v in values.items() if "\0" in v]
    unknown = sorted(set(values) - set(spec.parameters))
    if unknown:
        takes = ", ".join(spec.parameters) or "no parameters"
        problems.append(f"unknown parameter(s) {', '.join(unknown)} ({name} takes: {takes})")
    env: dict[str, str] = {}
    for key, parameter in spec.parameters.items():
        if key in values:
            try:
                env[env_name(key)] = parameter.check(key, values[key])
            except Invalid as exc:
                problems.append(str(exc))
        elif parameter.default is not None:
            env[env_name(key)] = str(parameter.default)
        elif parameter.required:
            problems.append(f"missing parameter '{key}' ({parameter.expects()})")
    if problems:
        raise Invalid("; ".join(problems))
    return env


def render_job(
    name: str, spec: RunbookSpec, namespace: str, env: Mapping[str, str]
) -> dict[str, Any]:
    """The batch/v1 Job for a run of runbook ``name`` (without its name: see
    :func:`job_name`), ``env`` being the checked parameters. ``restartPolicy: Never``."""
    job = spec.job
    labels = {MANAGED_BY: "opsgate", RUNBOOK_LABEL: name}
    variables: list[dict[str, Any]] = [{"name": k, "value": v} for k, v in env.items()]
    variables += [{"name": k, "value": v} for k, v in job.env.items()]
    variables += [
        {"name": k, "valueFrom": {"secretKeyRef": {"name": ref.secret, "key": ref.key}}}
        for k, ref in job.secret_env.items()
    ]
    container: dict[str, Any] = {
        "name": CONTAINER,
        "image": job.image,
        "command": list(job.command),
        "env": variables,
    }
    if job.resources:
        container["resources"] = {k: dict(v) for k, v in job.resources.items()}
    pod_spec: dict[str, Any] = {"restartPolicy": "Never", "containers": [container]}
    if job.service_account is not None:
        pod_spec["serviceAccountName"] = job.service_account
    job_spec: dict[str, Any] = {
        "backoffLimit": job.backoff_limit,
        "activeDeadlineSeconds": job.active_deadline_seconds,
        "template": {"metadata": {"labels": dict(labels)}, "spec": pod_spec},
    }
    if job.ttl_seconds_after_finished is not None:
        job_spec["ttlSecondsAfterFinished"] = job.ttl_seconds_after_finished
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"namespace": namespace, "labels": labels},
        "spec": job_spec,
    }


def job_name(runbook: str, request_id: int) -> str:
    """``<runbook>-<request ID>``: one Job per request, so a second create is a ``Conflict``."""
    return f"{runbook}-{request_id}"


def _where(spec: RunbookSpec) -> str:
    namespaces = ", ".join(spec.namespaces) if spec.namespaces else "any namespace"
    return f"{', '.join(spec.environments)} ({namespaces})"


def _find(target: Target, params: RunParams) -> RunbookSpec:
    """The runbook from the deciding rule's settings, checked against where it may run."""
    declared: Mapping[str, Any] = target.settings.get("runbooks") or {}
    if params.runbook not in declared:
        known = ", ".join(sorted(declared)) or "none"
        raise Invalid(f"unknown runbook '{params.runbook}' (runbooks: {known}; see /ops runbooks)")
    spec = RunbookSpec.model_validate(declared[params.runbook])
    in_env = target.environment in spec.environments
    in_ns = spec.namespaces is None or any(
        fnmatchcase(params.namespace, g) for g in spec.namespaces
    )
    if not (in_env and in_ns):
        raise Invalid(
            f"runbook {params.runbook} may not run in namespace {params.namespace} "
            f"(environment {target.environment or 'none'}); it runs in {_where(spec)}"
        )
    return spec


def _preview_lines(
    params: RunParams, spec: RunbookSpec, target: Target, env: Mapping[str, str]
) -> list[str]:
    job = spec.job
    lines = [
        f"Run runbook *{params.runbook}* as a Job in namespace *{params.namespace}* "
        f"(environment {target.environment}): {spec.description}",
        f"Image: {job.image}",
        f"Command: {' '.join(repr(part) for part in job.command)}",
        f"Parameters (environment): {', '.join(f'{k}={v!r}' for k, v in env.items()) or 'none'}",
        f"Deadline: {job.active_deadline_seconds} s; retries: {job.backoff_limit}",
    ]
    if job.service_account:
        lines.append(f"Service account: {job.service_account}")
    if job.secret_env:
        refs = ", ".join(f"{k} <- {r.secret}/{r.key}" for k, r in job.secret_env.items())
        lines.append(f"Secrets (by reference): {refs}")
    lines.append("Reversible: " + ("yes" if spec.reversible else "*no*"))
    return lines


class Runbook:
    """The ``run`` request kind. ``kube`` is the adapter implementing :class:`JobsPort`."""

    name: ClassVar[str] = "run"
    reversible: ClassVar[bool] = True  # each runbook says; the policy loader enforces it
    params_model: ClassVar[type[BaseModel]] = RunParams

    def __init__(self, *, kube: JobsPort) -> None:
        self._kube = kube

    def preview(self, params: BaseModel, *, target: Target) -> Preview:
        """Find the runbook in ``target.settings["runbooks"]``, check where it runs and the
        values, render the Job and dry-run its creation (``dryRun=All``).

        Facts: ``runbook``, ``namespace``, ``env`` (the parameters), ``job`` (the Job to create,
        without its name). Raises ``Invalid`` (unknown runbook, not here, bad values, the API
        server's refusal of the dry run) and the port's errors.
        """
        assert isinstance(params, RunParams)
        spec = _find(target, params)
        env = check_values(params.runbook, spec, params.values)
        job = render_job(params.runbook, spec, params.namespace, env)
        trial = {**job, "metadata": {**job["metadata"], "generateName": f"{params.runbook}-"}}
        self._kube.create_job(target.kube_context, params.namespace, trial, dry_run=True)
        facts = {"runbook": params.runbook, "namespace": params.namespace, "env": env, "job": job}
        lines = _preview_lines(params, spec, target, env)
        return Preview(target=f"runbook/{params.runbook}", lines=tuple(lines), facts=facts)

    def execute(self, params: BaseModel, *, target: Target, preview: Preview) -> Outcome:
        """Create the previewed Job as ``<runbook>-<request ID>``, labelled with the request
        ID; the Outcome's ``rollout`` (kind ``Job``) is followed by the gate until the Job ends,
        at most ``activeDeadlineSeconds`` + :data:`FOLLOW_GRACE` seconds.

        A create sent without an answer is read back: our Job is there (carry on), or it is not
        (``TemporaryError``: nothing was created). Raises the port's errors otherwise.
        """
        assert isinstance(params, RunParams)
        request_id = int(target.settings.get("request_id") or 0)
        name = job_name(params.runbook, request_id)
        job: dict[str, Any] = preview.facts["job"]
        labels = {**job["metadata"]["labels"], REQUEST_LABEL: str(request_id)}
        metadata = {
            **job["metadata"],
            "name": name,
            "labels": labels,
            "annotations": {REQUESTER_ANNOTATION: str(target.settings.get("requester_id", ""))},
        }
        template = job["spec"]["template"]
        spec = {**job["spec"], "template": {**template, "metadata": {"labels": labels}}}
        body = {**job, "metadata": metadata, "spec": spec}
        context = target.kube_context
        try:
            created = self._kube.create_job(context, params.namespace, body)
        except MaybeApplied as exc:
            created = self._read_back(exc, context, params.namespace, name, request_id)
        uid = created.get("metadata", {}).get("uid")
        deadline = float(job["spec"]["activeDeadlineSeconds"])
        watch = RolloutWatch(JOB, params.namespace, name, context, deadline + FOLLOW_GRACE)
        applied = f"created job/{name} in {params.namespace} (runbook {params.runbook})"
        return Outcome(summary=applied, facts={"job": name, "uid": uid}, rollout=watch)

    def _read_back(
        self, error: MaybeApplied, context: str | None, namespace: str, name: str, request_id: int
    ) -> dict[str, Any]:
        """The Job after a create that got no answer: ours (labelled with this request ID), or
        ``TemporaryError`` when there is none (safe to ask again)."""
        try:
            job = self._kube.get_job(context, namespace, name)
        except NotFound:
            raise TemporaryError(
                f"creating job/{name} got no answer ({error}) and it does not exist: nothing "
                "was run; safe to ask again",
                delay=5.0,
            ) from error
        labels = job.get("metadata", {}).get("labels") or {}
        if labels.get(REQUEST_LABEL) != str(request_id):
            raise Invalid(f"job/{name} in {namespace} exists but was not created for this request")
        return job


def _catalogue(
    settings: RuleSettings | None,
    namespaces_of: Mapping[str, Sequence[str]],
    may_ask: Callable[[str, str], bool],
) -> list[str]:
    from actions.runbook_job import catalogue  # that module imports this one

    return catalogue(settings, namespaces_of, may_ask)


def _follower(backends: Backends) -> Follower | None:
    from actions.runbook_job import JobReader  # the follower's module imports this one

    jobs = backends.adapter(JobsPort)
    return JobReader(jobs) if jobs is not None else None


def _reversible(params: BaseModel, settings: RuleSettings | None, environment: str | None) -> bool:
    """A run is as reversible as its runbook says, where the runbook may run; elsewhere (and
    for an unknown runbook) the preview refuses it, saying why."""
    assert isinstance(params, RunParams)
    runbooks = settings.runbooks if isinstance(settings, RunbookSettings) else {}
    runbook = runbooks.get(params.runbook)
    if runbook is None or environment not in runbook.environments:
        return True
    globs = runbook.namespaces
    if globs is not None and not any(fnmatchcase(params.namespace, g) for g in globs):
        return True
    return runbook.reversible


def _build(backends: Backends) -> Runbook | None:
    jobs = backends.adapter(JobsPort)
    return Runbook(kube=jobs) if jobs is not None else None


JOB_RULES: tuple[dict[str, Any], ...] = (
    {"apiGroups": ["batch"], "resources": ["jobs"], "verbs": ["create", "get"]},
    {"apiGroups": [""], "resources": ["pods"], "verbs": ["list"]},
    {"apiGroups": [""], "resources": ["pods/log"], "verbs": ["get"]},
)
"""The RBAC rules of :class:`JobsPort` (create and read a Job, its dry run too; list its pods;
read their logs), given only to a policy that runs runbooks: creating a Job, which may run as
any ServiceAccount of its namespace, is powerful."""

KIND = KindSpec(
    name="run",
    summary="run a runbook the policy declares, as a Kubernetes Job (see /ops runbooks)",
    cluster_rules=JOB_RULES,
    example='/ops run db-vacuum table=orders -n payments --reason "bloat after INC-7"',
    grammar=(
        Arg("runbook", metavar="<runbook>", help="a runbook of the policy (/ops runbooks)"),
        Arg("values", ArgType.PARAMETERS, help="its parameters, as key=value"),
        Arg(
            "namespace",
            flags=("-n", "--namespace"),
            metavar="<namespace>",
            help="where the Job runs",
        ),
    ),
    params_model=RunParams,
    scope=Scope.NAMESPACE,
    reversible=True,  # each runbook says (runbooks.<name>.reversible), checked at load
    reversible_for=_reversible,
    build=_build,
    policy_settings=RunbookSettings,
    follows=JOB,
    follower=_follower,
    catalogue=Catalogue(
        "runbooks",
        "the runbooks you may run, their parameters and where (no approval)",
        _catalogue,
    ),
)
