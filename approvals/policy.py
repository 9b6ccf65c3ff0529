"""The approval policy: its file format, validation with line numbers, and the pure decision.

The policy is a YAML file kept in git (``OPSGATE_POLICY``, default ``./policy.yml``); its format is
documented in ``docs/policy.md``. :func:`load_policy` reads and validates it and returns a
:class:`LoadedPolicy` carrying the SHA-256 of the file's bytes, which every request and audit event
records. :func:`decide` is a pure function: policy and request context in, frozen
:class:`Decision` out; it touches nothing.
"""

from __future__ import annotations

import fnmatch
import hashlib
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

_DURATION = re.compile(r"^(?:(?P<d>\d+)d)?(?:(?P<h>\d+)h)?(?:(?P<m>\d+)m)?(?:(?P<s>\d+)s)?$")


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


def _as_list(value: Any) -> Any:
    """Let a YAML scalar stand for a one-item list (``action: restart``)."""
    if isinstance(value, str):
        return [value]
    return value


StrList = Annotated[list[str], BeforeValidator(_as_list)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Group(_Model):
    """An approver group: Slack user IDs (``U…``) and/or Slack user group IDs (``S…``)."""

    users: list[str] = []
    usergroups: list[str] = []


class Identity(_Model):
    """A Slack user's identities in the backends."""

    kubernetes_user: str | None = None
    vault_entity: str | None = None


class Environment(_Model):
    """An environment: a kubeconfig context and the namespaces (globs) that belong to it."""

    kube_context: str | None = None
    namespaces: StrList


class Match(_Model):
    """What a rule applies to. Every field given must match; an absent field matches anything.

    ``namespace`` and ``path`` are globs (``fnmatch``); ``channel`` is ``incident`` (requests made
    in an incident channel) or ``any``.
    """

    action: StrList
    environment: StrList | None = None
    namespace: StrList | None = None
    path: StrList | None = None
    channel: Literal["incident", "any"] = "any"


class Limits(_Model):
    """Bounds on a scale request, in replicas."""

    min_replicas: int | None = Field(default=None, ge=0)
    max_replicas: int | None = Field(default=None, ge=0)

    @model_validator(mode="after")
    def _ordered(self) -> Limits:
        if (
            self.min_replicas is not None
            and self.max_replicas is not None
            and self.min_replicas > self.max_replicas
        ):
            raise ValueError("min_replicas is greater than max_replicas")
        return self


class Rule(_Model):
    """One rule: a match and exactly one outcome (``approval: auto``, ``approvers`` or ``deny``)."""

    name: str | None = None
    match: Match
    approval: Literal["auto"] | None = None
    approvers: StrList = []
    min_approvals: int = Field(default=1, ge=1)
    deny: str | None = None
    approval_channel: str | None = None
    limits: Limits | None = None
    max_duration: str | None = None
    roles: StrList | None = None

    @field_validator("max_duration")
    @classmethod
    def _duration(cls, value: str | None) -> str | None:
        if value is not None:
            parse_duration(value)
        return value


class Policy(_Model):
    """The whole policy file (``version: 1``)."""

    version: Literal[1]
    approval_channel: str
    audit_channel: str | None = None
    incident_channels: list[str] = []
    groups: dict[str, Group] = {}
    identities: dict[str, Identity] = {}
    environments: dict[str, Environment]
    rules: list[Rule]


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
    """A validated policy, the SHA-256 (hex) of its file's bytes, and each rule's line."""

    policy: Policy
    sha256: str
    source: str
    rule_lines: tuple[int, ...]

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


def _cross_references(policy: Policy) -> list[tuple[tuple[int | str, ...], str]]:
    """Problems pydantic cannot see alone: names that point at nothing."""
    problems: list[tuple[tuple[int | str, ...], str]] = []
    for i, rule in enumerate(policy.rules):
        outcomes = [rule.approval is not None, bool(rule.approvers), rule.deny is not None]
        if sum(outcomes) != 1:
            problems.append(
                (
                    ("rules", i),
                    "a rule needs exactly one outcome: 'approval: auto', 'approvers: [...]' "
                    "or 'deny: \"message\"'",
                )
            )
        for j, group in enumerate(rule.approvers):
            if group not in policy.groups:
                known = ", ".join(sorted(policy.groups)) or "none defined"
                problems.append(
                    (("rules", i, "approvers", j), f"unknown group '{group}' (groups: {known})")
                )
        for j, env in enumerate(rule.match.environment or []):
            if env not in policy.environments:
                known = ", ".join(sorted(policy.environments)) or "none defined"
                problems.append(
                    (
                        ("rules", i, "match", "environment", j),
                        f"unknown environment '{env}' (environments: {known})",
                    )
                )
        for j, action in enumerate(rule.match.action):
            if action not in KNOWN_ACTIONS:
                problems.append(
                    (
                        ("rules", i, "match", "action", j),
                        f"unknown action '{action}' (actions: {', '.join(KNOWN_ACTIONS)})",
                    )
                )
    return problems


KNOWN_ACTIONS: tuple[str, ...] = ("restart", "scale", "rollback", "access", "rotate")
"""Request kinds a rule may name; a rule may name one that opsgate does not execute yet."""


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
        what = "; ".join(part for part in (exc.context, exc.problem) if part)
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
    return LoadedPolicy(policy=policy, sha256=digest, source=source, rule_lines=rule_lines)


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


# --- the decision -----------------------------------------------------------------------------


class Outcome(StrEnum):
    """What the policy says should happen to a request."""

    AUTO = "auto"
    APPROVAL = "approval"
    DENY = "deny"


class DecisionReason(StrEnum):
    """Why: which kind of rule (or none) produced the outcome."""

    RULE_AUTO_APPROVES = "rule_auto_approves"
    RULE_REQUIRES_APPROVAL = "rule_requires_approval"
    RULE_DENIES = "rule_denies"
    NO_RULE_MATCHES = "no_rule_matches"


@dataclass(frozen=True)
class RequestContext:
    """The facts about a request that rules match on."""

    action: str
    requester: str
    environment: str | None = None
    namespace: str | None = None
    path: str | None = None
    incident: bool = False


@dataclass(frozen=True)
class Decision:
    """The frozen result of :func:`decide`.

    ``approvers`` holds the Slack user IDs of the rule's groups, ``min_approvals`` how many distinct
    ones (never the requester) must approve; ``approval_channel`` is where to ask.
    """

    outcome: Outcome
    reason: DecisionReason
    message: str
    rule_index: int | None = None
    rule_label: str | None = None
    approver_groups: tuple[str, ...] = ()
    approvers: frozenset[str] = frozenset()
    min_approvals: int = 0
    approval_channel: str | None = None

    def may_approve(self, user_id: str, *, requester: str) -> bool:
        """True when ``user_id`` is one of the rule's approvers and is not the requester."""
        return user_id != requester and user_id in self.approvers


def _rule_matches(rule: Rule, ctx: RequestContext) -> bool:
    m = rule.match
    if ctx.action not in m.action:
        return False
    if m.environment is not None and ctx.environment not in m.environment:
        return False
    if m.namespace is not None and (
        ctx.namespace is None or not _matches_any(ctx.namespace, m.namespace)
    ):
        return False
    if m.path is not None and (ctx.path is None or not _matches_any(ctx.path, m.path)):
        return False
    return not (m.channel == "incident" and not ctx.incident)


def decide(loaded: LoadedPolicy, ctx: RequestContext) -> Decision:
    """Apply the first rule that matches ``ctx``; no match means denied. Pure: no side effects."""
    policy = loaded.policy
    for index, rule in enumerate(policy.rules):
        if not _rule_matches(rule, ctx):
            continue
        label = loaded.rule_label(index)
        if rule.deny is not None:
            return Decision(Outcome.DENY, DecisionReason.RULE_DENIES, rule.deny, index, label)
        if rule.approval == "auto":
            return Decision(
                Outcome.AUTO,
                DecisionReason.RULE_AUTO_APPROVES,
                f"approved automatically by {label}",
                index,
                label,
            )
        users = frozenset(u for g in rule.approvers for u in policy.groups[g].users)
        return Decision(
            Outcome.APPROVAL,
            DecisionReason.RULE_REQUIRES_APPROVAL,
            f"needs {rule.min_approvals} approval(s) from {', '.join(rule.approvers)}",
            index,
            label,
            approver_groups=tuple(rule.approvers),
            approvers=users,
            min_approvals=rule.min_approvals,
            approval_channel=rule.approval_channel or policy.approval_channel,
        )
    where = f" in {ctx.environment}" if ctx.environment else ""
    return Decision(
        Outcome.DENY,
        DecisionReason.NO_RULE_MATCHES,
        f"no policy rule allows {ctx.action}{where}; ask the platform team to add one",
    )
