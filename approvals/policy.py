"""The approval policy: its file format, validation with line numbers, and the pure decision.

The policy is a YAML file kept in git (``OPSGATE_POLICY``, default ``./policy.yml``); its format is
documented in ``docs/policy.md``. :func:`load_policy` reads and validates it and returns a
:class:`LoadedPolicy` carrying the SHA-256 of the file's bytes, which every request and audit event
records. :func:`decide` is a pure function: policy, request context and the groups' members in,
frozen :class:`Decision` out; it touches nothing. :func:`count_satisfied` says whether a sequence of
approvals satisfies a decision's steps. :func:`policy_warnings` finds rules that can never match
and groups nobody is in (``opsgate policy check``). :func:`agent_of` and :func:`requester_kind`
tell automation (the policy's ``agents``) from people.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import hashlib
import re
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

_DURATION = re.compile(r"^(?:(?P<d>\d+)d)?(?:(?P<h>\d+)h)?(?:(?P<m>\d+)m)?(?:(?P<s>\d+)s)?$")

DEFAULT_PENDING_TTL = 3600
"""Seconds a request may stay pending when neither the rule nor ``defaults`` says otherwise."""

DEFAULT_REASON_MIN_LENGTH = 10
"""Characters a reason needs under ``reason: required`` (and for ``--break-glass``)."""

DEFAULT_REQUESTS_PER_MINUTE = 20
"""New requests one requester may make per minute when the policy has no ``rate_limit``."""


def parse_duration(text: str) -> int:
    """Parse ``30m``, ``2h``, ``1h30m``, ``1d``, ``90s`` into seconds (an int > 0).

    Raises ``ValueError`` with the accepted forms when ``text`` is not one of them.
    """
    match = _DURATION.match(text.strip())
    if not text.strip() or match is None:
        raise ValueError(f"'{text}' is not a duration; use forms like 30m, 2h, 1h30m")
    parts = {k: int(v) for k, v in match.groupdict(default="0").items()}
    seconds = parts["d"] * 86400 + parts["h"] * 3600 + parts["m"] * 60 + parts["s"]
    if seconds <= 0:
        raise ValueError(f"'{text}' is not a positive duration")
    return seconds


def format_duration(seconds: int) -> str:
    """``5400`` → ``1h30m``: the inverse of :func:`parse_duration` (``0`` → ``0s``)."""
    out = ""
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if seconds >= size:
            out += f"{seconds // size}{unit}"
            seconds %= size
    return out or "0s"


def _as_list(value: Any) -> Any:
    """Let a YAML scalar stand for a one-item list (``action: restart``)."""
    if isinstance(value, str):
        return [value]
    return value


def _check_duration(value: str) -> str:
    parse_duration(value)
    return value


StrList = Annotated[list[str], BeforeValidator(_as_list)]
Duration = Annotated[str, AfterValidator(_check_duration)]
"""A duration such as ``30m`` or ``1h30m`` (see :func:`parse_duration`)."""


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# --- request kinds ----------------------------------------------------------------------------

KNOWN_ACTIONS: tuple[str, ...] = ("restart", "scale", "rollback", "access", "rotate", "restore")
"""Request kinds a rule may name; a rule may name one that opsgate does not execute yet.

``extend`` (of an access grant) is not a rule action: it is decided by the rule that decides
``access`` (see the rule's ``extend``). ``restore`` (a previous version of a rotated secret) is
decided by the first rule naming ``restore`` or ``rotate``.
"""

REVERSIBLE: dict[str, bool] = {
    "restart": True,
    "scale": True,
    "rollback": True,
    "access": True,  # expires by itself
    "extend": True,
    "rotate": False,
    "restore": False,
}
"""Whether a change of each request kind can be undone. ``approval: auto`` on an irreversible kind
needs ``allow_irreversible_auto: true``. A kind missing here counts as irreversible."""


def is_reversible(action: str) -> bool:
    """``REVERSIBLE[action]``; an unknown kind is irreversible."""
    return REVERSIBLE.get(action, False)


def _actions_covered(actions: Iterable[str]) -> set[str]:
    """The request kinds a rule's ``match.action`` list decides (``rotate`` covers ``restore``)."""
    covered = set(actions)
    if "rotate" in covered:
        covered.add("restore")
    return covered


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
    ``service_account`` lets it call the HTTP API with that ServiceAccount's token (issue 12).
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


class Limits(_Model):
    """A scale rule's ``limits``; each key optional (None).

    Validated here: ``min_replicas``/``max_replicas`` >= 0, ``min_replicas <= max_replicas``,
    ``max_factor > 1``. Enforced by the scale kind when a request is previewed
    (``actions.scale.check_limits``, which raises ``Invalid``) on a scale from the current to
    the requested replica count:

    - ``min_replicas <= requested <= max_replicas`` (inclusive; an absent bound is no bound);
    - scaling to 0 needs ``min_replicas: 0`` (a rule without limits refuses it);
    - ``max_factor`` bounds ``requested / current`` when growing and ``current / requested``
      when shrinking, a 0 on either side counting as 1.
    """

    min_replicas: int | None = Field(default=None, ge=0)
    max_replicas: int | None = Field(default=None, ge=0)
    max_factor: float | None = Field(default=None, gt=1)

    @model_validator(mode="after")
    def _ordered(self) -> Limits:
        if (
            self.min_replicas is not None
            and self.max_replicas is not None
            and self.min_replicas > self.max_replicas
        ):
            raise ValueError("min_replicas is greater than max_replicas")
        return self


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


class Generator(_Model):
    """How opsgate generates a new secret value: ``length`` characters from ``charset``
    (``alphanumeric``, ``ascii`` = printable ASCII without space, or the characters given)."""

    length: int = Field(default=32, ge=16, le=256)
    charset: str = "alphanumeric"

    @field_validator("charset")
    @classmethod
    def _charset(cls, value: str) -> str:
        if value not in ("alphanumeric", "ascii") and len(set(value)) < 10:
            raise ValueError(
                "charset is 'alphanumeric', 'ascii' or a string of at least 10 distinct characters"
            )
        return value


class RotateSettings(_Model):
    """How a rotation is done: a Vault ``password_policy`` or a ``generator`` (not both), the KV
    ``key`` to write, the workloads to ``restart`` afterwards, in ``namespace``."""

    password_policy: str | None = None
    generator: Generator | None = None
    key: str | None = None
    restart: StrList = []
    namespace: str | None = None

    @model_validator(mode="after")
    def _exclusive(self) -> RotateSettings:
        if self.password_policy is not None and self.generator is not None:
            raise ValueError("give either password_policy or generator, not both")
        return self


class Autonomy(_Model):
    """Earned autonomy (issue 12): once an agent's requests under the rule were approved by
    people and succeeded ``after_approved`` times within ``within``, its next ones go through
    without a human (reversible kinds only), until a request ends in one of ``reset_on`` or
    someone clicks Undo. Evaluated in :mod:`approvals.autonomy`."""

    after_approved: int = Field(ge=1, le=1000)
    within: Duration
    reset_on: list[Literal["failed", "denied", "unknown", "expired"]] = ["failed", "denied"]


class Rule(_Model):
    """One rule: a match and exactly one outcome (``approval: auto``, ``approvers``, ``steps`` or
    ``deny``), with the settings of the request kinds it covers."""

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
    limits: Limits | None = None
    max_duration: Duration | None = None
    default_duration: Duration | None = None
    roles: StrList | None = None
    vault_groups: dict[str, str] = {}
    extend: Literal["auto", "approval"] | None = None
    rotate: RotateSettings | None = None
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


class Policy(_Model):
    """The whole policy file (``version: 1``)."""

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


def _field_name(loc: Iterable[int | str]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


def _node_line(root: yaml.Node | None, loc: Sequence[int | str]) -> int | None:
    """The 1-based line of the YAML node at ``loc``, or of its nearest existing ancestor."""
    node = root
    if node is None:
        return None
    line = node.start_mark.line + 1
    for part in loc:
        child: yaml.Node | None = None
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                if key.value == str(part):
                    child = value
                    line = key.start_mark.line + 1
                    break
        elif (
            isinstance(node, yaml.SequenceNode)
            and isinstance(part, int)
            and 0 <= part < len(node.value)
        ):
            child = node.value[part]
            line = child.start_mark.line + 1
        if child is None:
            break
        node = child
    return line


Loc = tuple[int | str, ...]


def _cross_references(policy: Policy) -> list[tuple[Loc, str]]:
    """Problems pydantic cannot see alone: names that point at nothing, outcomes that conflict,
    settings that can never apply."""
    problems: list[tuple[Loc, str]] = []
    known_groups = ", ".join(sorted(policy.groups)) or "none defined"
    known_envs = ", ".join(sorted(policy.environments)) or "none defined"

    def group_refs(loc: Loc, names: Sequence[str]) -> None:
        for j, group in enumerate(names):
            if group not in policy.groups:
                problems.append(((*loc, j), f"unknown group '{group}' (groups: {known_groups})"))

    def action_refs(loc: Loc, names: Sequence[str]) -> None:
        for j, action in enumerate(names):
            if action not in KNOWN_ACTIONS:
                hint = (
                    "; extend is decided by the access rule (see 'extend')"
                    if action == "extend"
                    else ""
                )
                problems.append(
                    (
                        (*loc, j),
                        f"unknown action '{action}' (actions: {', '.join(KNOWN_ACTIONS)}){hint}",
                    )
                )

    def env_refs(loc: Loc, names: Sequence[str]) -> None:
        for j, env in enumerate(names):
            if env not in policy.environments:
                problems.append(
                    ((*loc, j), f"unknown environment '{env}' (environments: {known_envs})")
                )

    reported: set[tuple[str, str]] = set()
    for i, rule in enumerate(policy.rules):
        uses = [(g, "approvers") for g in rule.approvers]
        uses += [(g, "steps") for step in rule.steps for g in step.approvers]
        if rule.during_freeze is not None:
            uses += [(g, "during_freeze") for g in rule.during_freeze.approvers]
        uses += [(g, "break_glass") for g in rule.break_glass]
        for name, how in uses:
            group = policy.groups.get(name)
            for j, user in enumerate(group.users if group is not None else []):
                if user in policy.agents and (name, user) not in reported:
                    reported.add((name, user))
                    problems.append(
                        (
                            ("groups", name, "users", j),
                            f"'{user}' is an agent (agents.{user}); automation can never "
                            f"approve or break the glass, but rules[{i}] uses group '{name}' "
                            f"for {how}",
                        )
                    )

    group_refs(("audit_readers",), policy.audit_readers)
    for name in dict.fromkeys(policy.audit_readers):
        group = policy.groups.get(name)
        for j, user in enumerate(group.users if group is not None else []):
            if user in policy.agents:
                problems.append(
                    (
                        ("groups", name, "users", j),
                        f"'{user}' is an agent (agents.{user}); automation only ever sees its "
                        f"own requests, but audit_readers names group '{name}'",
                    )
                )

    default_ttl = policy.defaults.pending_ttl
    for i, freeze in enumerate(policy.freezes):
        action_refs(("freezes", i, "allow"), freeze.allow)
        env_refs(("freezes", i, "environments"), freeze.environments or [])
    for i, rule in enumerate(policy.rules):
        at: Loc = ("rules", i)
        outcomes = [
            rule.approval is not None,
            bool(rule.approvers),
            bool(rule.steps),
            rule.deny is not None,
        ]
        if sum(outcomes) != 1:
            problems.append(
                (
                    at,
                    "a rule needs exactly one outcome: 'approval: auto', 'approvers: [...]', "
                    "'steps: [...]' or 'deny: \"message\"'",
                )
            )
        if rule.steps and "min_approvals" in rule.model_fields_set:
            problems.append(
                ((*at, "min_approvals"), "with 'steps', give min_approvals in each step")
            )
        group_refs((*at, "approvers"), rule.approvers)
        for k, step in enumerate(rule.steps):
            group_refs((*at, "steps", k, "approvers"), step.approvers)
        group_refs((*at, "match", "requesters"), rule.match.requesters or [])
        group_refs((*at, "break_glass"), rule.break_glass)
        if rule.during_freeze is not None:
            group_refs((*at, "during_freeze", "approvers"), rule.during_freeze.approvers)
        if rule.escalate_to is not None and rule.escalate_to not in policy.groups:
            problems.append(
                (
                    (*at, "escalate_to"),
                    f"unknown group '{rule.escalate_to}' (groups: {known_groups})",
                )
            )
        env_refs((*at, "match", "environment"), rule.match.environment or [])
        action_refs((*at, "match", "action"), rule.match.action)
        covered = _actions_covered(rule.match.action)

        # escalation and time to live
        if (rule.escalate_after is None) != (rule.escalate_to is None):
            problems.append((at, "give both escalate_after and escalate_to, or neither"))
        ttl = rule.pending_ttl or default_ttl
        ttl_s = parse_duration(ttl) if ttl else DEFAULT_PENDING_TTL
        if rule.escalate_after is not None and parse_duration(rule.escalate_after) >= ttl_s:
            problems.append(
                (
                    (*at, "escalate_after"),
                    f"escalate_after ({rule.escalate_after}) must be shorter than the request's "
                    f"pending_ttl ({format_duration(ttl_s)}), or nobody is ever pinged",
                )
            )
        if rule.deny is not None:
            for key in ("escalate_after", "during_freeze", "break_glass", "pending_ttl"):
                if key in rule.model_fields_set:
                    problems.append(((*at, key), f"a deny rule never uses '{key}'"))
        if rule.approval == "auto" and rule.break_glass:
            problems.append(
                ((*at, "break_glass"), "an auto rule needs no break-glass; remove break_glass")
            )

        # reasons
        if rule.reason_min_length is not None and rule.reason != "required":
            problems.append(
                ((*at, "reason_min_length"), "reason_min_length needs 'reason: required'")
            )

        # risk
        irreversible = sorted(a for a in covered if a in KNOWN_ACTIONS and not is_reversible(a))
        if rule.approval == "auto" and irreversible and not rule.allow_irreversible_auto:
            problems.append(
                (
                    (*at, "approval"),
                    f"'approval: auto' on irreversible request kinds ({', '.join(irreversible)}) "
                    "needs 'allow_irreversible_auto: true'",
                )
            )

        # per-kind settings
        if "access" not in covered:
            for key in ("default_duration", "vault_groups", "extend", "max_duration", "roles"):
                if key in rule.model_fields_set:
                    problems.append(((*at, key), f"'{key}' applies to access rules only"))
        if "rotate" not in covered and rule.rotate is not None:
            problems.append(((*at, "rotate"), "'rotate' applies to rotate rules only"))
        if "scale" not in covered and rule.limits is not None:
            problems.append(((*at, "limits"), "'limits' applies to scale rules only"))
        if rule.extend == "approval" and not rule.step_models():
            problems.append(
                ((*at, "extend"), "'extend: approval' needs a rule with approvers or steps")
            )
        if (
            rule.default_duration is not None
            and rule.max_duration is not None
            and parse_duration(rule.default_duration) > parse_duration(rule.max_duration)
        ):
            problems.append(
                ((*at, "default_duration"), "default_duration is longer than max_duration")
            )
        if rule.roles is not None:
            for role in rule.vault_groups:
                if role not in rule.roles:
                    problems.append(
                        (
                            (*at, "vault_groups", role),
                            f"role '{role}' is not in the rule's roles ({', '.join(rule.roles)})",
                        )
                    )
    return problems


class _StrictLoader(yaml.SafeLoader):
    """PyYAML's SafeLoader, except that a key given twice in one mapping is an error (YAML 1.2
    forbids it; PyYAML would silently keep the last one, and a policy must never surprise)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _value in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    "while reading a mapping",
                    node.start_mark,
                    f"the key '{key}' is given twice",
                    key_node.start_mark,
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def parse_policy(text: str | bytes, *, source: str = "policy.yml") -> LoadedPolicy:
    """Validate policy YAML ``text``. Raises :class:`PolicyError` naming each bad field and line."""
    raw = text.encode() if isinstance(text, str) else text
    digest = hashlib.sha256(raw).hexdigest()
    try:
        root = yaml.compose(raw.decode(), Loader=_StrictLoader)
        data = yaml.load(raw.decode(), Loader=_StrictLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        line = mark.line + 1 if mark is not None else None
        context = exc.context
        opened = exc.context_mark
        if context and opened is not None and (mark is None or opened.line != mark.line):
            context = f"{context} started on line {opened.line + 1}"
        what = "; ".join(part for part in (context, exc.problem) if part)
        raise PolicyError(source, [PolicyIssue(line, "(yaml)", what)]) from exc
    except yaml.YAMLError as exc:
        raise PolicyError(source, [PolicyIssue(None, "(yaml)", str(exc))]) from exc
    except UnicodeDecodeError as exc:
        raise PolicyError(source, [PolicyIssue(None, "(file)", "not UTF-8 text")]) from exc
    if not isinstance(data, dict):
        raise PolicyError(source, [PolicyIssue(1, "(top level)", "the policy must be a mapping")])
    try:
        policy = Policy.model_validate(data)
    except ValidationError as exc:
        issues = [
            PolicyIssue(_node_line(root, err["loc"]), _field_name(err["loc"]), err["msg"])
            for err in exc.errors()
        ]
        raise PolicyError(source, issues) from exc
    problems = _cross_references(policy)
    if problems:
        raise PolicyError(
            source,
            [PolicyIssue(_node_line(root, loc), _field_name(loc), msg) for loc, msg in problems],
        )
    rule_lines = tuple(_node_line(root, ("rules", i)) or 0 for i in range(len(policy.rules)))
    lines: dict[Loc, int] = {}
    for name in policy.groups:
        lines[("groups", name)] = _node_line(root, ("groups", name)) or 0
    for i in range(len(policy.freezes)):
        lines[("freezes", i)] = _node_line(root, ("freezes", i)) or 0
    if policy.agents:
        lines[("agents",)] = _node_line(root, ("agents",)) or 0
    return LoadedPolicy(
        policy=policy, sha256=digest, source=source, rule_lines=rule_lines, lines=lines
    )


def load_policy(path: str | Path) -> LoadedPolicy:
    """Read and validate the policy at ``path``.

    Raises :class:`PolicyError` when the file is missing, unreadable or invalid; its message names
    the file, the line and the field.
    """
    p = Path(path)
    try:
        raw = p.read_bytes()
    except OSError as exc:
        raise PolicyError(
            str(p), [PolicyIssue(None, "(file)", f"cannot read the policy: {exc.strerror}")]
        ) from exc
    return parse_policy(raw, source=str(p))


# --- environments -----------------------------------------------------------------------------


class NamespaceError(Exception):
    """A namespace or ``--env`` that the policy does not place in exactly one environment."""


def resolve_environment(policy: Policy, namespace: str, env: str | None = None) -> str:
    """Return the name of the environment that holds ``namespace``.

    ``env`` (the ``--env`` option) picks one when the namespace is in several. Raises
    :class:`NamespaceError` for an unknown environment, a namespace in none of them, a namespace
    not in the environment given, or one in several without ``env``.
    """
    if env is not None:
        if env not in policy.environments:
            known = ", ".join(sorted(policy.environments))
            raise NamespaceError(f"unknown environment '{env}' (environments: {known})")
        if not _matches_any(namespace, policy.environments[env].namespaces):
            raise NamespaceError(f"namespace '{namespace}' is not in environment '{env}'")
        return env
    found = [
        name
        for name, environment in policy.environments.items()
        if _matches_any(namespace, environment.namespaces)
    ]
    if not found:
        raise NamespaceError(
            f"namespace '{namespace}' is in no environment of the policy; "
            "ask the platform team to add it"
        )
    if len(found) > 1:
        raise NamespaceError(
            f"namespace '{namespace}' is in several environments ({', '.join(found)}); "
            "pick one with --env"
        )
    return found[0]


def _matches_any(value: str, globs: Iterable[str]) -> bool:
    return any(fnmatch.fnmatchcase(value, glob) for glob in globs)


def is_incident_channel(policy: Policy, channel_name: str | None) -> bool:
    """True when ``channel_name`` matches one of the policy's ``incident_channels`` globs."""
    return channel_name is not None and _matches_any(channel_name, policy.incident_channels)


# --- agents -----------------------------------------------------------------------------------


def agent_of(policy: Policy, *ids: str | None) -> str | None:
    """The first of ``ids`` that the policy lists under ``agents``, or None (a person).

    ``ids`` are the Slack IDs a message, event or command carries, most specific first: the
    ``user`` (a bot user's ``U…`` too), the ``bot_id`` (``B…``) and the ``app_id`` (``A…``). The
    ID returned is the requester ID to record: the one the policy names.
    """
    return next((i for i in ids if i and i in policy.agents), None)


def requester_kind(
    policy: Policy, requester: str, claimed: Literal["human", "agent"] = "human"
) -> Literal["human", "agent"]:
    """``agent`` when ``claimed`` says so or the policy lists ``requester`` under ``agents``;
    the policy can make a requester automation, never a person."""
    return "agent" if claimed == "agent" or requester in policy.agents else "human"


# --- groups -----------------------------------------------------------------------------------


def static_groups(policy: Policy) -> dict[str, frozenset[str]]:
    """Each group's listed ``users`` only (Slack user groups unresolved)."""
    return {name: frozenset(group.users) for name, group in policy.groups.items()}


def resolve_groups(
    policy: Policy, usergroup_members: Callable[[str], frozenset[str]]
) -> dict[str, frozenset[str]]:
    """Each group's members: its ``users`` plus ``usergroup_members(S…)`` of each of its
    ``usergroups`` (``bot.usergroups.UsergroupDirectory.members`` resolves them through
    Slack's ``usergroups.users.list``)."""
    resolved: dict[str, frozenset[str]] = {}
    cache: dict[str, frozenset[str]] = {}
    for name, group in policy.groups.items():
        members = set(group.users)
        for usergroup in group.usergroups:
            if usergroup not in cache:
                cache[usergroup] = usergroup_members(usergroup)
            members |= cache[usergroup]
        resolved[name] = frozenset(members)
    return resolved


# --- the decision -----------------------------------------------------------------------------


class Outcome(StrEnum):
    """What the policy says should happen to a request."""

    AUTO = "auto"
    APPROVAL = "approval"
    DENY = "deny"
    BREAK_GLASS = "break_glass"


class DecisionReason(StrEnum):
    """Why: which kind of rule (or none) produced the outcome."""

    RULE_AUTO_APPROVES = "rule_auto_approves"
    RULE_REQUIRES_APPROVAL = "rule_requires_approval"
    RULE_DENIES = "rule_denies"
    NO_RULE_MATCHES = "no_rule_matches"
    REQUESTER_NOT_ALLOWED = "requester_not_allowed"
    FREEZE = "freeze"
    FREEZE_REQUIRES_APPROVAL = "freeze_requires_approval"
    REASON_REQUIRED = "reason_required"
    IRREVERSIBLE_AUTO_REFUSED = "irreversible_auto_refused"
    BREAK_GLASS = "break_glass"
    BREAK_GLASS_NOT_ALLOWED = "break_glass_not_allowed"
    NOT_ENOUGH_APPROVERS = "not_enough_approvers"
    EARNED_AUTONOMY = "earned_autonomy"


@dataclass(frozen=True)
class RequestContext:
    """The facts about a request that rules match on.

    ``requester_kind`` is ``human`` or ``agent`` (automation); ``incident`` is true when the request
    was made in an incident channel; ``reason`` is ``--reason`` (or the ``--break-glass`` reason);
    ``at`` is when the request is made (an aware datetime; needed when the policy has freezes);
    ``kind_reversible`` is what the request kind declares (``ActionKind.reversible``; None: not
    known here). A request listed under the policy's ``agents`` is decided as ``agent`` whatever
    ``requester_kind`` says.
    """

    action: str
    requester: str
    environment: str | None = None
    namespace: str | None = None
    path: str | None = None
    incident: bool = False
    requester_kind: Literal["human", "agent"] = "human"
    reason: str | None = None
    break_glass: bool = False
    at: datetime | None = None
    kind_reversible: bool | None = None

    @property
    def reversible(self) -> bool:
        """Whether this kind of change can be undone: :data:`REVERSIBLE` and, when given,
        ``kind_reversible`` both say so (either one saying no makes it irreversible)."""
        return is_reversible(self.action) and self.kind_reversible is not False


@dataclass(frozen=True)
class Step:
    """One approval step: ``min_approvals`` distinct people among ``approvers`` (the resolved
    members of ``groups``) must approve."""

    groups: tuple[str, ...]
    approvers: frozenset[str]
    min_approvals: int


@dataclass(frozen=True)
class Decision:
    """The frozen result of :func:`decide`.

    ``steps`` are the approvals needed (all of them, each by distinct people, one person counting
    for at most one step, never the requester; see :func:`count_satisfied`); for a break-glass
    decision they are the people who review it. ``pending_ttl`` and ``escalate_after`` are
    seconds; ``escalate_to_users`` are the resolved members of the ``escalate_to`` group.
    ``freeze`` names the freeze in force when it changed the outcome. ``settings`` are the rule's
    per-kind settings as JSON (``limits``, ``roles``, ``max_duration`` and ``default_duration`` in
    seconds, ``vault_groups``, ``extend``, ``rotate``).
    """

    outcome: Outcome
    reason: DecisionReason
    message: str
    rule_index: int | None = None
    rule_label: str | None = None
    steps: tuple[Step, ...] = ()
    approval_channel: str | None = None
    pending_ttl: int = DEFAULT_PENDING_TTL
    escalate_after: int | None = None
    escalate_to: str | None = None
    escalate_to_users: frozenset[str] = frozenset()
    freeze: str | None = None
    policy_sha256: str | None = None
    reversible: bool = True
    settings: Mapping[str, Any] = field(default_factory=dict)

    @property
    def approver_groups(self) -> tuple[str, ...]:
        """Every group of every step, in order, each once."""
        return tuple(dict.fromkeys(g for step in self.steps for g in step.groups))

    @property
    def approvers(self) -> frozenset[str]:
        """Every person who may approve one of the steps."""
        return frozenset(u for step in self.steps for u in step.approvers)

    @property
    def min_approvals(self) -> int:
        """How many approvals in all (the sum over the steps)."""
        return sum(step.min_approvals for step in self.steps)

    def may_approve(self, user_id: str, *, requester: str, actor_kind: str = "human") -> bool:
        """True when ``user_id`` may approve (or, for break-glass, review) a request this decision
        sends to people: :func:`approval_refusal` finds nothing against it."""
        return (
            self.outcome in (Outcome.APPROVAL, Outcome.BREAK_GLASS)
            and approval_refusal(self.steps, user_id, requester=requester, actor_kind=actor_kind)
            is None
        )


class Refusal(StrEnum):
    """Why someone may not approve a request; see :func:`approval_refusal`."""

    AGENT = "agent"
    REQUESTER = "requester"
    NOT_AN_APPROVER = "not_an_approver"


def approval_refusal(
    steps: Sequence[Step], user_id: str, *, requester: str, actor_kind: str = "human"
) -> Refusal | None:
    """Why ``user_id`` may not approve a request whose approval steps are ``steps`` (for a
    break-glass request: review it), or None when they may.

    Automation (``actor_kind == "agent"``) never may, nor the ``requester`` (who may only
    withdraw their request), nor anyone who is not among the approvers of some step. This is
    the one statement of who may approve: :meth:`Decision.may_approve` and the gate, for every
    click and acknowledgement, ask it.
    """
    if actor_kind == "agent":
        return Refusal.AGENT
    if user_id == requester:
        return Refusal.REQUESTER
    if not any(user_id in step.approvers for step in steps):
        return Refusal.NOT_AN_APPROVER
    return None


def count_satisfied(
    steps: Sequence[Step],
    approvals: Sequence[str],
    requester: str,
    *,
    agents: Collection[str] = (),
) -> tuple[bool, list[list[str]]]:
    """Assign the approvers of ``approvals`` (user IDs, in the order they approved) to ``steps``.

    Each person counts once, for at most one step; the requester and ``agents`` never count; a
    step takes at most ``min_approvals`` people. The assignment is a maximum matching (augmenting
    paths, as in Kuhn's algorithm), so an earlier approver is moved to another step when that lets
    a later one count. Returns ``(satisfied, per_step)``: whether every step has its
    ``min_approvals``, and the people counted for each step, in approval order.
    """
    ignored = {requester, *agents}
    people = [p for p in dict.fromkeys(approvals) if p not in ignored]
    assigned: list[list[str]] = [[] for _ in steps]

    def place(person: str, seen: set[int]) -> bool:
        for k, step in enumerate(steps):
            if k in seen or person not in step.approvers:
                continue
            seen.add(k)
            if len(assigned[k]) < step.min_approvals:
                assigned[k].append(person)
                return True
            for other in list(assigned[k]):
                assigned[k].remove(other)
                if place(other, seen):
                    assigned[k].append(person)
                    return True
                assigned[k].append(other)
        return False

    for person in people:
        place(person, set())
    order = {p: i for i, p in enumerate(people)}
    per_step = [sorted(names, key=order.__getitem__) for names in assigned]
    satisfied = all(len(per_step[k]) >= s.min_approvals for k, s in enumerate(steps))
    return satisfied, per_step


def _mismatches(
    rule: Rule, ctx: RequestContext, members: Mapping[str, frozenset[str]]
) -> list[tuple[str, str]]:
    """Why ``rule`` does not match ``ctx``: ``(field, explanation)`` pairs; empty: it matches."""
    m = rule.match
    out: list[tuple[str, str]] = []
    action = "access" if ctx.action == "extend" else ctx.action
    if action not in _actions_covered(m.action):
        out.append(("action", f"action '{ctx.action}' is not {', '.join(m.action)}"))
    if m.environment is not None and ctx.environment not in m.environment:
        out.append(
            (
                "environment",
                f"environment {ctx.environment or '(none)'} is not {', '.join(m.environment)}",
            )
        )
    if m.namespace is not None and (
        ctx.namespace is None or not _matches_any(ctx.namespace, m.namespace)
    ):
        out.append(
            ("namespace", f"namespace {ctx.namespace or '(none)'} is not {', '.join(m.namespace)}")
        )
    if m.path is not None and (ctx.path is None or not _matches_any(ctx.path, m.path)):
        out.append(("path", f"path {ctx.path or '(none)'} is not {', '.join(m.path)}"))
    if m.channel == "incident" and not ctx.incident:
        out.append(("channel", "the request was not made in an incident channel"))
    if m.requester_kind != "any" and ctx.requester_kind != m.requester_kind:
        out.append(("requester_kind", f"the requester is not {m.requester_kind}"))
    if m.requesters is not None and not any(
        ctx.requester in members.get(g, frozenset()) for g in m.requesters
    ):
        out.append(("requesters", f"the requester is not in {', '.join(m.requesters)}"))
    return out


def explain_mismatches(
    loaded: LoadedPolicy,
    ctx: RequestContext,
    *,
    groups: Mapping[str, frozenset[str]] | None = None,
) -> list[list[str]]:
    """For each rule, why it does not match ``ctx`` (empty list: it matches)."""
    members = static_groups(loaded.policy) if groups is None else groups
    ctx = _as_listed(loaded.policy, ctx)
    return [[why for _f, why in _mismatches(r, ctx, members)] for r in loaded.policy.rules]


def _as_listed(policy: Policy, ctx: RequestContext) -> RequestContext:
    """``ctx`` as the policy sees it: a requester listed under ``agents`` is automation."""
    kind = requester_kind(policy, ctx.requester, ctx.requester_kind)
    return ctx if kind == ctx.requester_kind else dataclasses.replace(ctx, requester_kind=kind)


def _freeze_in_force(policy: Policy, ctx: RequestContext) -> Freeze | None:
    if not policy.freezes:
        return None
    if ctx.at is None:
        raise ValueError("RequestContext.at is required: the policy has freezes")
    action = "access" if ctx.action == "extend" else ctx.action
    for freeze in policy.freezes:
        if freeze.environments is not None and ctx.environment not in freeze.environments:
            continue
        if action in freeze.allow or not freeze.in_force(ctx.at):
            continue
        return freeze
    return None


def _settings(rule: Rule) -> dict[str, Any]:
    covered = _actions_covered(rule.match.action)
    max_duration = parse_duration(rule.max_duration) if rule.max_duration else None
    if rule.default_duration is not None:
        default_duration: int | None = parse_duration(rule.default_duration)
    elif "access" in covered:
        default_duration = min(3600, max_duration or 3600)
    else:
        default_duration = None
    return {
        "limits": rule.limits.model_dump(mode="json") if rule.limits else None,
        "roles": list(rule.roles) if rule.roles is not None else None,
        "max_duration": max_duration,
        "default_duration": default_duration,
        "vault_groups": dict(rule.vault_groups),
        "extend": rule.extend_mode(),
        "rotate": rule.rotate.model_dump(mode="json") if rule.rotate else None,
    }


def _steps(
    models: Sequence[StepModel] | Sequence[tuple[Sequence[str], int]],
    members: Mapping[str, frozenset[str]],
    agents: Collection[str] = (),
) -> tuple[Step, ...]:
    """The steps with their members resolved; ``agents`` are never among a step's approvers."""
    out: list[Step] = []
    for model in models:
        groups, needed = (
            (model.approvers, model.min_approvals) if isinstance(model, StepModel) else model
        )
        out.append(Step(tuple(groups), step_members(groups, members, agents), needed))
    return tuple(out)


def step_members(
    groups: Iterable[str], members: Mapping[str, frozenset[str]], agents: Collection[str] = ()
) -> frozenset[str]:
    """The people of ``groups`` (``members`` as :func:`resolve_groups` gives them) who may
    approve a step: every member but ``agents``."""
    return frozenset(u for g in groups for u in members.get(g, frozenset()) if u not in agents)


def _needs(steps: Sequence[Step]) -> str:
    if len(steps) == 1:
        return f"needs {steps[0].min_approvals} approval(s) from {', '.join(steps[0].groups)}"
    parts = [f"{s.min_approvals} from {' or '.join(s.groups)}" for s in steps]
    return "needs approvals: " + " and ".join(parts)


def decide(
    loaded: LoadedPolicy,
    ctx: RequestContext,
    *,
    groups: Mapping[str, frozenset[str]] | None = None,
) -> Decision:
    """Decide ``ctx`` by the first rule that matches it; no match means denied. Pure.

    ``groups`` maps each group name to its members (see :func:`resolve_groups`); default: the
    groups' listed ``users`` only. The order: the rule's ``match`` (action, environment,
    namespace, path, channel, requester kind, ``requesters``) → ``deny`` → a freeze in force →
    ``reason: required`` → ``--break-glass`` → ``approval: auto`` or the approval steps. A request
    whose steps the groups' members (other than the requester) cannot satisfy is denied at once.

    Raises ``ValueError`` when the policy has freezes and ``ctx.at`` is missing or naive.
    """
    policy = loaded.policy
    members = static_groups(policy) if groups is None else groups
    if ctx.at is not None and ctx.at.tzinfo is None:
        raise ValueError("RequestContext.at must be an aware datetime")
    ctx = _as_listed(policy, ctx)
    where = f" in {ctx.environment}" if ctx.environment else ""

    index: int | None = None
    near_misses: list[tuple[Rule, set[str]]] = []
    for i, candidate in enumerate(policy.rules):
        missing = {f for f, _ in _mismatches(candidate, ctx, members)}
        if not missing:
            index = i
            break
        if missing <= {"requesters", "requester_kind"}:
            near_misses.append((candidate, missing))
    if index is None:
        if near_misses:
            # a rule that only the requester's groups kept from matching says the most
            rule, missing = min(near_misses, key=lambda m: "requester_kind" in m[1])
            if "requester_kind" in missing:
                why = (
                    f"only automation may ask for {ctx.action}{where}"
                    if rule.match.requester_kind == "agent"
                    else f"automation may not ask for {ctx.action}{where}"
                )
            else:
                why = (
                    f"only members of {', '.join(rule.match.requesters or [])} may ask for "
                    f"{ctx.action}{where}"
                )
            return Decision(
                Outcome.DENY,
                DecisionReason.REQUESTER_NOT_ALLOWED,
                why,
                policy_sha256=loaded.sha256,
                reversible=ctx.reversible,
            )
        return Decision(
            Outcome.DENY,
            DecisionReason.NO_RULE_MATCHES,
            f"no policy rule allows {ctx.action}{where}; ask the platform team to add one",
            policy_sha256=loaded.sha256,
            reversible=ctx.reversible,
        )

    rule = policy.rules[index]
    label = loaded.rule_label(index)
    ttl = rule.pending_ttl or policy.defaults.pending_ttl
    escalate_users = (
        members.get(rule.escalate_to, frozenset()) - frozenset(policy.agents)
        if rule.escalate_to
        else frozenset()
    )
    base: dict[str, Any] = {
        "rule_index": index,
        "rule_label": label,
        "pending_ttl": parse_duration(ttl) if ttl else DEFAULT_PENDING_TTL,
        "escalate_after": parse_duration(rule.escalate_after) if rule.escalate_after else None,
        "escalate_to": rule.escalate_to,
        "escalate_to_users": escalate_users,
        "policy_sha256": loaded.sha256,
        "reversible": ctx.reversible,
        "settings": _settings(rule),
    }

    def deny(reason: DecisionReason, message: str, **extra: Any) -> Decision:
        return Decision(Outcome.DENY, reason, message, **{**base, **extra})

    if rule.deny is not None:
        return deny(DecisionReason.RULE_DENIES, rule.deny)

    auto = rule.approval == "auto"
    if ctx.action == "extend":
        auto = rule.extend_mode() == "auto"
    steps = _steps(rule.step_models(), members, policy.agents)
    approval_reason = DecisionReason.RULE_REQUIRES_APPROVAL
    freeze_label: str | None = None

    freeze = _freeze_in_force(policy, ctx)
    if freeze is not None:
        freeze_label = freeze.label()
        during = rule.during_freeze
        if during is None or during.deny is not None:
            _start, end = freeze.window()
            message = (
                during.deny
                if during is not None and during.deny is not None
                else f"change freeze{f' {freeze.name!r}' if freeze.name else ''} until "
                f"{end:%Y-%m-%d %H:%M} {freeze.timezone}: {freeze.reason}"
            )
            return deny(DecisionReason.FREEZE, message, freeze=freeze_label)
        steps = _steps([(during.approvers, during.min_approvals)], members, policy.agents)
        auto = False
        approval_reason = DecisionReason.FREEZE_REQUIRES_APPROVAL

    if rule.reason == "required" or (ctx.break_glass and not auto):
        needed = rule.reason_min_length or DEFAULT_REASON_MIN_LENGTH
        given = (ctx.reason or "").strip()
        if len(given) < needed:
            what = "--break-glass needs" if ctx.break_glass else "this request needs"
            return deny(
                DecisionReason.REASON_REQUIRED,
                f'{what} a reason of at least {needed} characters (--reason "…")',
                freeze=freeze_label,
            )

    if ctx.break_glass and not auto:
        allowed = frozenset(
            u for g in rule.break_glass for u in members.get(g, frozenset())
        ) - frozenset(policy.agents)
        if ctx.requester_kind == "agent" or ctx.requester not in allowed:
            why = (
                "automation can never break the glass"
                if ctx.requester_kind == "agent"
                else (
                    f"only members of {', '.join(rule.break_glass)} may break the glass here"
                    if rule.break_glass
                    else f"{label} does not allow break-glass"
                )
            )
            return deny(
                DecisionReason.BREAK_GLASS_NOT_ALLOWED,
                f"{why}; ask without --break-glass to request approval",
                freeze=freeze_label,
            )
        return Decision(
            Outcome.BREAK_GLASS,
            DecisionReason.BREAK_GLASS,
            f"break-glass under {label}: executed at once; "
            f"{', '.join(dict.fromkeys(g for s in steps for g in s.groups))} will review it",
            steps=steps,
            approval_channel=rule.approval_channel or policy.approval_channel,
            freeze=freeze_label,
            **base,
        )

    if auto:
        if not ctx.reversible and not rule.allow_irreversible_auto:
            return deny(
                DecisionReason.IRREVERSIBLE_AUTO_REFUSED,
                f"{ctx.action} cannot be undone and {label} does not allow irreversible "
                "requests to be approved automatically",
            )
        return Decision(
            Outcome.AUTO,
            DecisionReason.RULE_AUTO_APPROVES,
            f"approved automatically by {label}",
            **base,
        )

    possible = sorted({u for s in steps for u in s.approvers} - {ctx.requester})
    satisfiable, _ = count_satisfied(steps, possible, ctx.requester)
    if not satisfiable:
        return deny(
            DecisionReason.NOT_ENOUGH_APPROVERS,
            f"this request {_needs(steps)}, but not enough people other than you may approve "
            "it; ask the platform team to fix the policy",
            steps=steps,
            freeze=freeze_label,
        )
    return Decision(
        Outcome.APPROVAL,
        approval_reason,
        _needs(steps) + (f" (change freeze: {freeze_label})" if freeze_label else ""),
        steps=steps,
        approval_channel=rule.approval_channel or policy.approval_channel,
        freeze=freeze_label,
        **base,
    )


# --- warnings (opsgate policy check) ------------------------------------------------------------

_WILDCARDS = "*?["


def _literal_prefix(glob: str) -> str:
    cut = min((glob.index(c) for c in _WILDCARDS if c in glob), default=len(glob))
    return glob[:cut]


def _globs_may_meet(a: str, b: str) -> bool:
    """False only when no string can match both globs (sound, not complete)."""
    a_literal = not any(c in a for c in _WILDCARDS)
    b_literal = not any(c in b for c in _WILDCARDS)
    if a_literal:
        return fnmatch.fnmatchcase(a, b)
    if b_literal:
        return fnmatch.fnmatchcase(b, a)
    pa, pb = _literal_prefix(a), _literal_prefix(b)
    if not (pa.startswith(pb) or pb.startswith(pa)):
        return False
    if "[" not in a and "[" not in b:
        sa = a[max(a.rfind("*"), a.rfind("?")) + 1 :]
        sb = b[max(b.rfind("*"), b.rfind("?")) + 1 :]
        if not (sa.endswith(sb) or sb.endswith(sa)):
            return False
    return True


def _glob_covered(glob: str, by: Sequence[str]) -> bool:
    """True only when every string matching ``glob`` matches one of ``by`` (sound)."""
    if glob in by or "*" in by:
        return True
    literal = not any(c in glob for c in _WILDCARDS)
    return literal and _matches_any(glob, by)


def _covers(earlier: Match, later: Match) -> bool:
    """True only when every request ``later`` matches is matched by ``earlier`` (sound)."""
    if not _actions_covered(later.action) <= _actions_covered(earlier.action):
        return False
    if earlier.environment is not None and (
        later.environment is None or not set(later.environment) <= set(earlier.environment)
    ):
        return False
    for mine, theirs in ((earlier.namespace, later.namespace), (earlier.path, later.path)):
        if mine is not None and (theirs is None or not all(_glob_covered(g, mine) for g in theirs)):
            return False
    if earlier.channel == "incident" and later.channel != "incident":
        return False
    if earlier.requester_kind != "any" and later.requester_kind != earlier.requester_kind:
        return False
    return earlier.requesters is None or (
        later.requesters is not None and set(later.requesters) <= set(earlier.requesters)
    )


def _groups_used(rule: Rule) -> set[str]:
    used = set(rule.approvers) | set(rule.break_glass) | set(rule.match.requesters or [])
    for step in rule.steps:
        used |= set(step.approvers)
    if rule.during_freeze is not None:
        used |= set(rule.during_freeze.approvers)
    if rule.escalate_to is not None:
        used.add(rule.escalate_to)
    return used


def policy_warnings(loaded: LoadedPolicy, *, now: datetime | None = None) -> list[PolicyIssue]:
    """What is valid but surely not meant: rules shadowed by an earlier rule (they can never
    match), rules whose environments' namespaces never meet their namespace globs, groups with
    nobody in them, groups no rule uses, rules for agents when none is listed, agents no rule lets
    ask, and (given ``now``) freezes that have ended.

    Sound: a rule is reported unreachable only when it provably is.
    """
    policy = loaded.policy
    out: list[PolicyIssue] = []
    for j, rule in enumerate(policy.rules):
        line = loaded.rule_lines[j]
        for i in range(j):
            if _covers(policy.rules[i].match, rule.match):
                out.append(
                    PolicyIssue(
                        line,
                        f"rules[{j}]",
                        f"can never match: {loaded.rule_label(i)} matches every request it "
                        "does, and comes first",
                    )
                )
                break
        m = rule.match
        if m.environment is not None and m.namespace is not None:
            meets = any(
                _globs_may_meet(ns, env_glob)
                for env in m.environment
                for env_glob in policy.environments[env].namespaces
                for ns in m.namespace
            )
            if not meets:
                out.append(
                    PolicyIssue(
                        line,
                        f"rules[{j}].match.namespace",
                        f"can never match: no namespace of {', '.join(m.environment)} matches "
                        f"{', '.join(m.namespace)}",
                    )
                )
    used: set[str] = set(policy.audit_readers)
    for rule in policy.rules:
        used |= _groups_used(rule)
    for name, group in policy.groups.items():
        line_no = loaded.lines.get(("groups", name))
        if not group.users and not group.usergroups:
            out.append(PolicyIssue(line_no, f"groups.{name}", "has nobody in it"))
        if name not in used:
            out.append(PolicyIssue(line_no, f"groups.{name}", "is not used by any rule"))
    if not policy.agents:
        for j, rule in enumerate(policy.rules):
            if rule.match.requester_kind == "agent":
                out.append(
                    PolicyIssue(
                        loaded.rule_lines[j],
                        f"rules[{j}].match.requester_kind",
                        "matches only automation, but the policy lists no agents "
                        "(top-level 'agents')",
                    )
                )
    if policy.agents and all(r.match.requester_kind == "human" for r in policy.rules):
        out.append(
            PolicyIssue(
                loaded.lines.get(("agents",)),
                "agents",
                "no rule lets automation ask (every rule has requester_kind: human), so every "
                "request of these agents is denied",
            )
        )
    if now is not None:
        for k, freeze in enumerate(policy.freezes):
            if freeze.window()[1] <= now:
                out.append(
                    PolicyIssue(
                        loaded.lines.get(("freezes", k)), f"freezes[{k}]", "has already ended"
                    )
                )
    return out


def freeze_window_text(freeze: Freeze) -> str:
    """``2026-12-20 00:00 to 2027-01-02 00:00 Europe/Berlin``."""
    start, end = freeze.window()
    return f"{start:%Y-%m-%d %H:%M} to {end:%Y-%m-%d %H:%M} {freeze.timezone}"


def seconds_text(seconds: int | None) -> str:
    """A duration in seconds as ``1h30m``; ``None`` → ``-``."""
    return "-" if seconds is None else format_duration(seconds)


__all__ = [
    "DEFAULT_PENDING_TTL",
    "DEFAULT_REQUESTS_PER_MINUTE",
    "KNOWN_ACTIONS",
    "REVERSIBLE",
    "Agent",
    "Decision",
    "DecisionReason",
    "Freeze",
    "LoadedPolicy",
    "NamespaceError",
    "Outcome",
    "Policy",
    "PolicyError",
    "PolicyIssue",
    "RateLimit",
    "RequestContext",
    "Rule",
    "Step",
    "agent_of",
    "count_satisfied",
    "decide",
    "explain_mismatches",
    "format_duration",
    "is_incident_channel",
    "is_reversible",
    "load_policy",
    "parse_duration",
    "parse_policy",
    "policy_warnings",
    "requester_kind",
    "resolve_environment",
    "resolve_groups",
    "static_groups",
    "step_members",
]
