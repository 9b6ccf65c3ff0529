"""The HTTP API's bodies and answers (pydantic), the one place the request fields are declared.

Each request kind has one model, named ``<Kind>Request``, whose fields are the ``/ops`` options of
that kind under their long names (``to_revision`` for ``--to-revision``, ``duration`` for
``--for``); :data:`RequestBody` is their union, told apart by ``action``. A body is turned into
the words of the ``/ops`` command (:meth:`_RequestBase.words`) and parsed by
:func:`bot.grammar.parse_words`, so the API accepts exactly what Slack accepts and refuses the
rest with the same reason. The MCP server (:mod:`bot.mcp_server`) derives its tools' input
schemas from the same models. Errors are problem details (RFC 9457, :class:`Problem`).
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from bot.grammar import MAX_ID

_TEXT = r"^[^\x00]*$"
"""Free text: anything but NUL (which no database stores)."""

Workload = Annotated[
    str,
    StringConstraints(
        pattern=r"^([A-Za-z]{2,16}/)?[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$", max_length=270
    ),
    Field(
        description="the workload: a name (looked up among Deployments, StatefulSets and "
        "DaemonSets) or kind/name (deploy/x, sts/x, ds/x)",
        examples=["payments-api", "deploy/payments-api"],
    ),
]
Namespace = Annotated[
    str,
    StringConstraints(pattern=r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$", max_length=63),
    Field(description="the Kubernetes namespace", examples=["payments"]),
]
Env = Annotated[
    str,
    StringConstraints(pattern=r"^[A-Za-z0-9_.-]{1,64}$"),
    Field(description="the environment, when the namespace is in several (--env)"),
]
Reason = Annotated[
    str,
    StringConstraints(pattern=_TEXT, max_length=2000),
    Field(description="why (--reason); some rules require one"),
]
BreakGlass = Annotated[
    str,
    StringConstraints(pattern=_TEXT, max_length=2000),
    Field(
        description="the break-glass justification (--break-glass): executes at once, reviewed "
        "afterwards, where the rule allows it; never for automation"
    ),
]
Count = Annotated[int, Field(ge=0, le=MAX_ID)]
Number = Annotated[int, Field(ge=1, le=MAX_ID)]
SecretPath = Annotated[
    str,
    StringConstraints(pattern=r"^[A-Za-z0-9_.][A-Za-z0-9_./-]{0,511}$"),
    Field(description="the Vault KV v2 secret path (or database static role)"),
]


class _RequestBase(BaseModel):
    """What every request takes: ``env``, ``reason``, ``break_glass``."""

    model_config = ConfigDict(extra="forbid")

    POSITIONAL: ClassVar[tuple[str, ...]] = ()
    """The fields given as the command's positional words, in order."""
    OPTIONS: ClassVar[dict[str, str]] = {}
    """The fields given as options: field name → ``/ops`` flag."""

    action: str
    env: Env | None = None
    reason: Reason | None = None
    break_glass: BreakGlass | None = None

    def words(self) -> list[str]:
        """The ``/ops`` command this body stands for, split into words: options as
        ``--flag=value`` and positionals after ``--``, so that no value is read as a flag."""
        options = {**self.OPTIONS, "env": "--env", "reason": "--reason"}
        options["break_glass"] = "--break-glass"
        words = [self.action]
        for field, flag in options.items():
            value = getattr(self, field)
            if value is not None:
                words.append(f"{flag}={_word(value)}")
        return [*words, "--", *(_word(getattr(self, field)) for field in self.POSITIONAL)]


def _word(value: Any) -> str:
    if isinstance(value, list | tuple):
        return ",".join(str(v) for v in value)
    return str(value)


class RestartRequest(_RequestBase):
    """``/ops restart <workload> -n <namespace>``: a rolling restart, as
    ``kubectl rollout restart`` does."""

    POSITIONAL = ("workload",)
    OPTIONS = {"namespace": "--namespace"}
    action: Literal["restart"]
    workload: Workload
    namespace: Namespace


class ScaleRequest(_RequestBase):
    """``/ops scale <workload> <replicas> -n <namespace>``, as ``kubectl scale`` does."""

    POSITIONAL = ("workload", "replicas")
    OPTIONS = {"namespace": "--namespace"}
    action: Literal["scale"]
    workload: Workload
    replicas: Annotated[Count, Field(description="the new number of replicas")]
    namespace: Namespace


class RollbackRequest(_RequestBase):
    """``/ops rollback <deployment> [--to-revision N] -n <namespace>``, as
    ``kubectl rollout undo`` does."""

    POSITIONAL = ("workload",)
    OPTIONS = {"namespace": "--namespace", "to_revision": "--to-revision"}
    action: Literal["rollback"]
    workload: Workload
    namespace: Namespace
    to_revision: Annotated[
        Number | None, Field(description="the revision (default: the previous one)")
    ] = None


class AccessRequest(_RequestBase):
    """``/ops access <namespace> [--role ROLE] [--for DURATION]``: time-bound access for the
    token's own identity."""

    POSITIONAL = ("namespace",)
    OPTIONS = {"role": "--role", "duration": "--for"}
    action: Literal["access"]
    namespace: Namespace
    role: Annotated[
        str | None,
        StringConstraints(pattern=r"^[a-z0-9]([-a-z0-9:.]{0,251}[a-z0-9])?$"),
        Field(description="the ClusterRole (default: the rule's first)"),
    ] = None
    duration: Annotated[
        str | None,
        StringConstraints(pattern=r"^[0-9]{1,6}[dhms]([0-9]{1,6}[hms]){0,3}$"),
        Field(description="how long, e.g. 30m, 1h30m (default: the rule's)"),
    ] = None


class RotateRequest(_RequestBase):
    """``/ops rotate <secret-path> [--key K] [--restart w1,w2 -n <namespace>]``."""

    POSITIONAL = ("path",)
    OPTIONS = {"key": "--key", "restart": "--restart", "namespace": "--namespace"}
    action: Literal["rotate"]
    path: SecretPath
    key: Annotated[str | None, StringConstraints(pattern=r"^[A-Za-z0-9_.-]{1,256}$"), Field()] = (
        None
    )
    restart: Annotated[
        list[Workload] | None,
        Field(
            max_length=20, description="workloads restarted after the rotation (needs namespace)"
        ),
    ] = None
    namespace: Namespace | None = None


class RestoreRequest(_RequestBase):
    """``/ops restore <secret-path> --to-version N``: version N written as a new version."""

    POSITIONAL = ("path",)
    OPTIONS = {"to_version": "--to-version"}
    action: Literal["restore"]
    path: SecretPath
    to_version: Annotated[Number, Field(description="the KV v2 version to write again")]


REQUEST_MODELS: dict[str, type[_RequestBase]] = {
    "restart": RestartRequest,
    "scale": ScaleRequest,
    "rollback": RollbackRequest,
    "access": AccessRequest,
    "rotate": RotateRequest,
    "restore": RestoreRequest,
}
"""Each request kind the API files, and its body."""

RequestBody = Annotated[
    RestartRequest
    | ScaleRequest
    | RollbackRequest
    | AccessRequest
    | RotateRequest
    | RestoreRequest,
    Field(discriminator="action"),
]


class Problem(BaseModel):
    """A problem detail (RFC 9457), served as ``application/problem+json``."""

    type: str = "about:blank"
    title: str
    status: int
    detail: str | None = None
    instance: str | None = None
    errors: list[dict[str, Any]] | None = Field(
        default=None, description="each invalid field: its location and what is wrong"
    )


class Requester(BaseModel):
    id: str = Field(description="Slack user ID, or the agent's ID in the policy's agents")
    kind: str = Field(description="human or agent")
    agent: str | None = Field(default=None, description="the agent's name in the policy")


class StepOut(BaseModel):
    groups: list[str]
    min_approvals: int
    approved_by: list[str]


class Approval(BaseModel):
    needed: bool = Field(description="whether people must approve (false: auto-approved)")
    min_approvals: int
    approver_groups: list[str]
    approved_by: list[str]
    steps: list[StepOut]
    channel: str | None = Field(description="the Slack channel the approval is asked in")
    expires_at: datetime | None


class Links(BaseModel):
    self: str
    wait: str
    cancel: str


class RequestOut(BaseModel):
    """A request as the API shows it."""

    id: int
    action: str
    status: str = Field(
        description="pending, approved, executing, succeeded, failed, unknown, denied, expired, "
        "cancelled, active (a grant), revoked"
    )
    requester: Requester
    target: str
    environment: str | None
    namespace: str | None
    reason: str | None
    preview: list[str] = Field(description="what it changes, checked with a dry run")
    rule: str | None = Field(description="the policy rule that decided it")
    approval: Approval
    decided_by: str | None
    result: str | None
    error: str | None
    break_glass: bool
    created_at: datetime
    updated_at: datetime
    links: Links


class RequestPage(BaseModel):
    items: list[RequestOut]
    total: int
    page: int
    size: int


class Explanation(BaseModel):
    """What would happen to a request, without filing it."""

    outcome: str = Field(description="auto, approval, deny or break_glass")
    reason: str
    message: str
    rule: str | None
    steps: list[StepOut]
    approval_channel: str | None
    environment: str | None
    target: str | None = Field(description="the target, when the preview could be made")
    preview: list[str]
    preview_error: str | None = Field(description="why the preview (dry run) failed, if it did")


class GrantOut(BaseModel):
    id: int
    grantee: str
    namespace: str
    role: str
    status: str
    started_at: datetime
    expires_at: datetime


class GrantPage(BaseModel):
    items: list[GrantOut]
    total: int
    page: int
    size: int
