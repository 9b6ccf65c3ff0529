"""The policy file's model: its sections as pydantic models, the request kinds it knows, and
the result of loading it (:class:`LoadedPolicy`, :class:`PolicyError`).

The format is documented in ``docs/policy.md``. The request kinds, what each one's rules may set
(``limits``, ``rotate``, ``max_duration`` …) and whether each is reversible come from the kinds'
own declarations (``actions.registry.KINDS``): :data:`Rule` and :data:`Policy` are built from
them, and :data:`KNOWN_ACTIONS` and :data:`REVERSIBLE` derived.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import TYPE_CHECKING, Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    create_model,
    model_validator,
)

from actions.durations import Duration
from actions.registry import KINDS
from actions.spec import KindSpec, RuleSettings, StrList

DEFAULT_PENDING_TTL = 3600
"""Seconds a request may stay pending when neither the rule nor ``defaults`` says otherwise."""

DEFAULT_REASON_MIN_LENGTH = 10
"""Characters a reason needs under ``reason: required`` (and for ``--break-glass``)."""

DEFAULT_REQUESTS_PER_MINUTE = 20
"""New requests one requester may make per minute when the policy has no ``rate_limit``."""


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# --- request kinds ----------------------------------------------------------------------------

KNOWN_ACTIONS: tuple[str, ...] = tuple(spec.name for spec in KINDS)
"""Request kinds a rule may name: every kind of ``actions.registry.KINDS``.

``extend`` (of an access grant) is not a rule action: it is decided by the rule that decides
``access`` (see the rule's ``extend``). A kind with ``decided_with`` (``restore``: ``rotate``) is
decided by the first rule naming it or that kind.
"""

EXTEND_DECIDED_WITH = "access"
"""The kind whose rule decides ``/ops extend`` of a grant (and whose rules may set ``extend``)."""

REVERSIBLE: dict[str, bool] = {spec.name: spec.reversible for spec in KINDS}
"""Whether a change of each request kind can be undone, as each kind declares it (``extend``
as ``access``). ``approval: auto`` on an irreversible kind needs ``allow_irreversible_auto:
true``. A kind missing here counts as irreversible."""
REVERSIBLE["extend"] = REVERSIBLE[EXTEND_DECIDED_WITH]


def is_reversible(action: str) -> bool:
    """``REVERSIBLE[action]``; an unknown kind is irreversible."""
    return REVERSIBLE.get(action, False)


def request_reversible(
    policy: PolicyBase, action: str, params: BaseModel, declared: bool, environment: str | None
) -> bool:
    """Whether one request of ``action`` with ``params`` in ``environment`` can be undone: as
    its kind decides it from the policy's settings (``KindSpec.request_reversible``: a
    runbook's own ``reversible``), else ``declared`` (``ActionKind.reversible``: ``extend``)."""
    spec = next((s for s in KINDS if s.name == action), None)
    if spec is None:
        return declared
    return declared and spec.request_reversible(params, policy.kind_settings(spec), environment)


def actions_covered(actions: Iterable[str]) -> set[str]:
    """The request kinds a rule's ``match.action`` list decides: those it names and those
    decided with them (``rotate`` covers ``restore``)."""
    named = set(actions)
    return named | {spec.name for spec in KINDS if spec.decided_with in named}


def matches_any(value: str, globs: Iterable[str]) -> bool:
    """True when ``value`` matches one of the ``fnmatch`` globs (case-sensitive)."""
    return any(fnmatch.fnmatchcase(value, glob) for glob in globs)


# --- the file format --------------------------------------------------------------------------


class Group(_Model):
    """An approver group: Slack user IDs (``U…``) and/or Slack user group IDs (``S…``)."""

    users: list[str] = []
    usergroups: list[str] = []


class Identity(_Model):
    """A Slack user's identities in the backends."""

    kubernetes_user: str | None = None
    vault_entity: str | None = None


AGENT_ID = re.compile(r"^[UWBA][A-Z0-9]{2,}$")
"""A Slack user ID (``U…``/``W…``, a bot user's too), bot ID (``B…``) or app ID (``A…``)."""


class ServiceAccountRef(_Model):
    """A Kubernetes ServiceAccount whose tokens authenticate an agent to the HTTP API, checked
    with a TokenReview in the cluster of ``environment`` (default: the kubeconfig's current
    context)."""

    namespace: str
    name: str
    environment: str | None = None

    @property
    def username(self) -> str:
        """The username a TokenReview gives its tokens: ``system:serviceaccount:NS:NAME``."""
        return f"system:serviceaccount:{self.namespace}:{self.name}"


class Agent(_Model):
    """Automation that may ask opsgate for changes: a bot or app posting in Slack.

    Keyed in ``agents`` by the Slack ID its messages carry: the bot user ID (``U…``), the bot ID
    (``B…``, for example a legacy integration or an incoming webhook) or the app ID (``A…``).
    ``service_account`` lets it call the HTTP API with that ServiceAccount's token.
    """

    name: str
    description: str | None = None
    service_account: ServiceAccountRef | None = None


def _check_agent_id(value: str) -> str:
    if not AGENT_ID.match(value):
        raise ValueError(f"'{value}' is not a Slack user, bot or app ID (U…, W…, B… or A…)")
    return value


AgentId = Annotated[str, AfterValidator(_check_agent_id)]


class Environment(_Model):
    """An environment: a kubeconfig context and the namespaces (globs) that belong to it."""

    kube_context: str | None = None
    namespaces: StrList


def _wall_time(value: Any) -> Any:
    """``"2026-12-20 00:00"`` (or a YAML date/datetime) → ``datetime``; ISO 8601 forms."""
    if isinstance(value, datetime):
        return value
    if isinstance(value, date):
        return datetime(value.year, value.month, value.day)
    if isinstance(value, str):
        try:
            return datetime.fromisoformat(value.strip())
        except ValueError:
            raise ValueError(
                f"'{value}' is not a date and time; use the form 2026-12-20 00:00"
            ) from None
    return value


def _check_zone(value: str) -> str:
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(
            f"unknown time zone '{value}'; use an IANA name such as Europe/Berlin or UTC"
        ) from None
    return value


class Freeze(_Model):
    """A change freeze: from ``start`` to ``end`` (wall time in ``timezone``), requests whose action
    is not in ``allow`` are denied with ``reason``, or need the rule's ``during_freeze``
    approvers. ``environments`` limits it to those (absent: all, and requests with no
    environment too)."""

    name: str | None = None
    start: Annotated[datetime, BeforeValidator(_wall_time)]
    end: Annotated[datetime, BeforeValidator(_wall_time)]
    timezone: Annotated[str, AfterValidator(_check_zone)] = "UTC"
    reason: str
    allow: StrList = []
    environments: StrList | None = None

    def window(self) -> tuple[datetime, datetime]:
        """``(start, end)`` as aware datetimes; a time given with an offset keeps it."""
        zone = ZoneInfo(self.timezone)

        def aware(value: datetime) -> datetime:
            return value if value.tzinfo is not None else value.replace(tzinfo=zone)

        return aware(self.start), aware(self.end)

    def label(self) -> str:
        """The freeze's name, or its reason when it has none."""
        return self.name or self.reason

    def in_force(self, at: datetime) -> bool:
        """True when ``start <= at < end``."""
        start, end = self.window()
        return start <= at < end

    @model_validator(mode="after")
    def _ordered(self) -> Freeze:
        start, end = self.window()
        if end <= start:
            raise ValueError("the freeze ends before it starts")
        return self


class Defaults(_Model):
    """Values rules inherit when they do not set them."""

    pending_ttl: Duration | None = None


class RateLimit(_Model):
    """How many new requests one requester may make in any 60 seconds (``rate_limit``).

    ``requests_per_minute`` applies to people, ``agents_per_minute`` to automation (default:
    ``requests_per_minute``); each at least 1. ``approvals.ratelimit`` enforces them.
    """

    requests_per_minute: int = Field(default=DEFAULT_REQUESTS_PER_MINUTE, ge=1)
    agents_per_minute: int | None = Field(default=None, ge=1)

    def per_minute(self, *, agent: bool) -> int:
        """The limit for a person (``agent`` False) or for automation (``agent`` True)."""
        if agent and self.agents_per_minute is not None:
            return self.agents_per_minute
        return self.requests_per_minute


class Match(_Model):
    """What a rule applies to. Every field given must match; an absent field matches anything.

    ``namespace`` and ``path`` are globs (``fnmatch``); ``channel`` is ``incident`` (requests made
    in an incident channel) or ``any``; ``requesters`` names groups whose members may ask at all;
    ``requester_kind`` is ``human``, ``agent`` (automation) or ``any``.
    """

    action: StrList
    environment: StrList | None = None
    namespace: StrList | None = None
    path: StrList | None = None
    channel: Literal["incident", "any"] = "any"
    requesters: StrList | None = None
    requester_kind: Literal["human", "agent", "any"] = "any"


class StepModel(_Model):
    """One step of a multi-step approval: ``min_approvals`` distinct members of ``approvers``."""

    approvers: Annotated[StrList, Field(min_length=1)]
    min_approvals: int = Field(default=1, ge=1)


class DuringFreeze(_Model):
    """What a rule asks for during a freeze: approvers (``min_approvals``) or ``deny``."""

    approvers: StrList = []
    min_approvals: int = Field(default=1, ge=1)
    deny: str | None = None

    @model_validator(mode="after")
    def _one(self) -> DuringFreeze:
        if bool(self.approvers) == (self.deny is not None):
            raise ValueError("during_freeze needs exactly one of 'approvers' or 'deny'")
        return self


class Autonomy(_Model):
    """Earned autonomy: once an agent's requests under the rule were approved by people and
    succeeded ``after_approved`` times within ``within``, its next ones go through without a
    human (reversible kinds only), until a request ends in one of ``reset_on`` or someone clicks
    Undo. Evaluated in :mod:`approvals.autonomy`."""

    after_approved: int = Field(ge=1, le=1000)
    within: Duration
    reset_on: list[Literal["failed", "denied", "unknown", "expired"]] = ["failed", "denied"]


class RuleBase(_Model):
    """One rule: a match and exactly one outcome (``approval: auto``, ``approvers``, ``steps`` or
    ``deny``). :data:`Rule` adds the settings of the request kinds (each kind's
    ``rule_settings``: ``limits``, ``rotate``, ``max_duration`` …); ``extend`` (how ``/ops
    extend`` of an access grant is decided) is the policy's own."""

    name: str | None = None
    match: Match
    approval: Literal["auto"] | None = None
    approvers: StrList = []
    min_approvals: int = Field(default=1, ge=1)
    steps: list[StepModel] = []
    deny: str | None = None
    approval_channel: str | None = None
    pending_ttl: Duration | None = None
    escalate_after: Duration | None = None
    escalate_to: str | None = None
    during_freeze: DuringFreeze | None = None
    break_glass: StrList = []
    reason: Literal["required", "optional"] = "optional"
    reason_min_length: int | None = Field(default=None, ge=1)
    allow_irreversible_auto: bool = False
    extend: Literal["auto", "approval"] | None = None
    autonomy: Autonomy | None = None

    def step_models(self) -> list[StepModel]:
        """The rule's approval steps: ``steps``, or ``approvers`` as one step, or none."""
        if self.steps:
            return list(self.steps)
        if self.approvers:
            return [StepModel(approvers=self.approvers, min_approvals=self.min_approvals)]
        return []

    def extend_mode(self) -> Literal["auto", "approval"]:
        """How ``/ops extend`` is decided: ``extend``, else ``auto`` for an auto rule."""
        if self.extend is not None:
            return self.extend
        return "auto" if self.approval == "auto" else "approval"

    def kind_settings(self, spec: KindSpec) -> RuleSettings | None:
        """This rule's settings for the kind ``spec`` (its ``rule_settings`` model, holding the
        values this rule was validated with), or None when the kind has no settings."""
        return _settings_of(self, spec.rule_settings)


class PolicyBase(_Model):
    """The whole policy file (``version: 1``); :data:`Policy` adds the kinds' top-level keys."""

    version: Literal[1]
    approval_channel: str
    audit_channel: str | None = None
    incident_channels: list[str] = []
    groups: dict[str, Group] = {}
    identities: dict[str, Identity] = {}
    agents: dict[AgentId, Agent] = {}
    environments: dict[str, Environment]
    defaults: Defaults = Defaults()
    freezes: list[Freeze] = []
    rules: list[Rule]
    audit_readers: StrList = []
    rate_limit: RateLimit = RateLimit()

    def kind_settings(self, spec: KindSpec) -> RuleSettings | None:
        """The policy's top-level settings for the kind ``spec`` (its ``policy_settings`` model,
        e.g. the runbooks a runbook kind runs), or None when the kind has none."""
        return _settings_of(self, spec.policy_settings)


def _settings_of(owner: BaseModel, model: type[RuleSettings] | None) -> RuleSettings | None:
    """``model`` holding ``owner``'s values of its fields (already validated with ``owner``, whose
    class has the same fields: see :func:`_kind_fields`)."""
    if model is None:
        return None
    values = {key: getattr(owner, key) for key in model.model_fields}
    return model.model_construct(
        _fields_set=set(model.model_fields) & owner.model_fields_set, **values
    )


def _kind_fields(models: Iterable[type[RuleSettings] | None], where: str) -> dict[str, Any]:
    """The fields of the kinds' settings models, to add to :data:`Rule` or :data:`Policy`.
    Raises ``TypeError`` when two kinds declare the same key."""
    fields: dict[str, Any] = {}
    for model in models:
        for key, info in (model.model_fields if model is not None else {}).items():
            if key in fields:
                raise TypeError(f"two request kinds declare the {where} key '{key}'")
            fields[key] = (info.annotation, info)
    return fields


if TYPE_CHECKING:
    Rule = RuleBase
    Policy = PolicyBase
else:
    Rule = create_model(
        "Rule",
        __base__=RuleBase,
        __module__=__name__,
        **_kind_fields((spec.rule_settings for spec in KINDS), "rule"),
    )
    Rule.__doc__ = RuleBase.__doc__
    PolicyBase.model_rebuild()
    Policy = create_model(
        "Policy",
        __base__=PolicyBase,
        __module__=__name__,
        **_kind_fields((spec.policy_settings for spec in KINDS), "top-level"),
    )
    Policy.__doc__ = PolicyBase.__doc__


@dataclass(frozen=True)
class PolicyIssue:
    """One problem found in a policy file: the 1-based line (when known), the field, the message."""

    line: int | None
    field: str
    message: str

    def render(self, source: str) -> str:
        where = f"{source}:{self.line}" if self.line is not None else source
        return f"{where}: {self.field}: {self.message}"


class PolicyError(Exception):
    """The policy file cannot be used. ``issues`` lists every problem with its line."""

    def __init__(self, source: str, issues: Sequence[PolicyIssue]) -> None:
        self.source = source
        self.issues = tuple(issues)
        super().__init__("\n".join(issue.render(source) for issue in self.issues))


@dataclass(frozen=True)
class LoadedPolicy:
    """A validated policy, the SHA-256 (hex) of its file's bytes, and the lines of its parts.

    ``rule_lines[i]`` is the line of ``rules[i]``; ``lines`` maps a field path such as
    ``("groups", "sre")`` or ``("freezes", 0)`` to its line, for the warnings.
    """

    policy: Policy
    sha256: str
    source: str
    rule_lines: tuple[int, ...]
    lines: Mapping[tuple[int | str, ...], int] = field(default_factory=dict, compare=False)

    def rule_label(self, index: int) -> str:
        """``rules[2] 'prod rollbacks' (line 31)``: how audit events and messages name a rule."""
        rule = self.policy.rules[index]
        name = f" '{rule.name}'" if rule.name else ""
        return f"rules[{index}]{name} (line {self.rule_lines[index]})"
