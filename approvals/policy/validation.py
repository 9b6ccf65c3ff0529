"""What pydantic cannot see alone in a policy: names that point at nothing, outcomes that
conflict, settings that can never apply, and each request kind's own checks of its settings
(``RuleSettings.problems``, declared in the kind's module in ``actions/``).

:func:`cross_references` returns ``(field path, message)`` pairs; the loader
(:mod:`approvals.policy.loading`) turns them into :class:`~approvals.policy.model.PolicyIssue`
with their lines.
"""

from __future__ import annotations

from collections.abc import Sequence

from actions.durations import format_duration, parse_duration
from actions.registry import KINDS
from actions.spec import Loc
from approvals.policy.model import (
    DEFAULT_PENDING_TTL,
    EXTEND_DECIDED_WITH,
    KNOWN_ACTIONS,
    Policy,
    Rule,
    actions_covered,
    is_reversible,
)

Problems = list[tuple[Loc, str]]


class _Refs:
    """Checks that names (groups, environments, actions) point at something."""

    def __init__(self, policy: Policy, problems: Problems) -> None:
        self.policy = policy
        self.problems = problems
        self.known_groups = ", ".join(sorted(policy.groups)) or "none defined"
        self.known_envs = ", ".join(sorted(policy.environments)) or "none defined"

    def groups(self, loc: Loc, names: Sequence[str]) -> None:
        for j, group in enumerate(names):
            if group not in self.policy.groups:
                self.problems.append(
                    ((*loc, j), f"unknown group '{group}' (groups: {self.known_groups})")
                )

    def actions(self, loc: Loc, names: Sequence[str]) -> None:
        for j, action in enumerate(names):
            if action not in KNOWN_ACTIONS:
                hint = (
                    f"; extend is decided by the {EXTEND_DECIDED_WITH} rule (see 'extend')"
                    if action == "extend"
                    else ""
                )
                self.problems.append(
                    (
                        (*loc, j),
                        f"unknown action '{action}' (actions: {', '.join(KNOWN_ACTIONS)}){hint}",
                    )
                )

    def environments(self, loc: Loc, names: Sequence[str]) -> None:
        for j, env in enumerate(names):
            if env not in self.policy.environments:
                self.problems.append(
                    ((*loc, j), f"unknown environment '{env}' (environments: {self.known_envs})")
                )


def _agents_in_groups(policy: Policy, problems: Problems) -> None:
    """Agents listed in a group that approves or breaks the glass."""
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


def _agents_reading_audit(policy: Policy, problems: Problems) -> None:
    """Agents listed in a group of ``audit_readers``."""
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


def _rule_refs(rule: Rule, at: Loc, refs: _Refs) -> None:
    """The groups, environments and actions one rule names."""
    refs.groups((*at, "approvers"), rule.approvers)
    for k, step in enumerate(rule.steps):
        refs.groups((*at, "steps", k, "approvers"), step.approvers)
    refs.groups((*at, "match", "requesters"), rule.match.requesters or [])
    refs.groups((*at, "break_glass"), rule.break_glass)
    if rule.during_freeze is not None:
        refs.groups((*at, "during_freeze", "approvers"), rule.during_freeze.approvers)
    if rule.escalate_to is not None and rule.escalate_to not in refs.policy.groups:
        refs.problems.append(
            (
                (*at, "escalate_to"),
                f"unknown group '{rule.escalate_to}' (groups: {refs.known_groups})",
            )
        )
    refs.environments((*at, "match", "environment"), rule.match.environment or [])
    refs.actions((*at, "match", "action"), rule.match.action)


def _outcome(rule: Rule, at: Loc, problems: Problems) -> None:
    """Exactly one outcome; ``min_approvals`` in each step when there are steps."""
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
        problems.append(((*at, "min_approvals"), "with 'steps', give min_approvals in each step"))


def _timing(rule: Rule, at: Loc, default_ttl: str | None, problems: Problems) -> None:
    """Escalation before the request expires; what a deny or auto rule never uses."""
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
    if rule.reason_min_length is not None and rule.reason != "required":
        problems.append(((*at, "reason_min_length"), "reason_min_length needs 'reason: required'"))


def _risk(policy: Policy, rule: Rule, at: Loc, covered: set[str], problems: Problems) -> None:
    """``approval: auto`` on an irreversible kind, or on a kind whose top-level settings hold
    something irreversible where the rule matches (``RuleSettings.irreversible``: a runbook),
    needs ``allow_irreversible_auto``."""
    irreversible = sorted(a for a in covered if a in KNOWN_ACTIONS and not is_reversible(a))
    for spec in KINDS:
        settings = policy.kind_settings(spec)
        if settings is not None and spec.name in covered:
            irreversible += settings.irreversible(rule.match.environment)
    if rule.approval == "auto" and irreversible and not rule.allow_irreversible_auto:
        problems.append(
            (
                (*at, "approval"),
                f"'approval: auto' on irreversible request kinds ({', '.join(irreversible)}) "
                "needs 'allow_irreversible_auto: true'",
            )
        )


def _kind_settings(rule: Rule, at: Loc, covered: set[str], problems: Problems) -> None:
    """Each kind's settings: only on a rule that decides the kind, then the kind's own checks;
    ``extend`` only on an access rule, and ``extend: approval`` only with approvers."""
    for spec in KINDS:
        settings = rule.kind_settings(spec)
        if settings is None:
            continue
        if spec.name not in covered:
            for key in type(settings).model_fields:
                if key in rule.model_fields_set:
                    problems.append(((*at, key), f"'{key}' applies to {spec.name} rules only"))
            continue
        problems.extend(((*at, *loc), message) for loc, message in settings.problems())
    if EXTEND_DECIDED_WITH not in covered and "extend" in rule.model_fields_set:
        problems.append(((*at, "extend"), f"'extend' applies to {EXTEND_DECIDED_WITH} rules only"))
    if rule.extend == "approval" and not rule.step_models():
        problems.append(
            ((*at, "extend"), "'extend: approval' needs a rule with approvers or steps")
        )


def _policy_settings(policy: Policy, refs: _Refs, problems: Problems) -> None:
    """Each kind's own checks of its top-level settings, and the environments they name."""
    for spec in KINDS:
        settings = policy.kind_settings(spec)
        if settings is not None:
            problems.extend(settings.problems())
            for loc, names in settings.environments_named():
                refs.environments(loc, names)


def cross_references(policy: Policy) -> Problems:
    """Every problem pydantic cannot see alone, as ``(field path, message)`` pairs, in the
    order of the file: groups that hold agents, names that point at nothing, outcomes that
    conflict, timings that can never work, risks the rule does not own up to, and settings
    that can never apply or that their kind refuses."""
    problems: Problems = []
    refs = _Refs(policy, problems)
    _policy_settings(policy, refs, problems)
    _agents_in_groups(policy, problems)
    refs.groups(("audit_readers",), policy.audit_readers)
    _agents_reading_audit(policy, problems)
    for i, freeze in enumerate(policy.freezes):
        refs.actions(("freezes", i, "allow"), freeze.allow)
        refs.environments(("freezes", i, "environments"), freeze.environments or [])
    for i, rule in enumerate(policy.rules):
        at: Loc = ("rules", i)
        covered = actions_covered(rule.match.action)
        _outcome(rule, at, problems)
        _rule_refs(rule, at, refs)
        _timing(rule, at, policy.defaults.pending_ttl, problems)
        _risk(policy, rule, at, covered, problems)
        _kind_settings(rule, at, covered, problems)
    return problems
