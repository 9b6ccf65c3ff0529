"""``opsgate policy check``: what is valid in a policy but surely not meant
(:func:`policy_warnings`), and how the check shows freezes and durations."""

from __future__ import annotations

import fnmatch
from collections.abc import Collection, Sequence
from datetime import datetime

from actions.durations import format_duration
from actions.registry import KINDS
from approvals.policy.model import (
    Freeze,
    LoadedPolicy,
    Match,
    PolicyIssue,
    Rule,
    actions_covered,
    matches_any,
)

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
    return literal and matches_any(glob, by)


def _covers(earlier: Match, later: Match) -> bool:
    """True only when every request ``later`` matches is matched by ``earlier`` (sound)."""
    if not actions_covered(later.action) <= actions_covered(earlier.action):
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
    ask, what a kind's top-level settings warn of (``RuleSettings.warnings``: a runbook no rule
    lets anyone run), and (given ``now``) freezes that have ended.

    Sound: a rule is reported unreachable only when it provably is.
    """
    return [
        *_unreachable_rules(loaded),
        *_unused_groups(loaded),
        *_agents(loaded),
        *_kind_settings(loaded),
    ] + (_ended_freezes(loaded, now) if now is not None else [])


def _kind_settings(loaded: LoadedPolicy) -> list[PolicyIssue]:
    """The warnings of each kind's top-level settings, told where a rule that does not deny
    decides the kind."""
    policy = loaded.policy
    out: list[PolicyIssue] = []
    for spec in KINDS:
        settings = policy.kind_settings(spec)
        if settings is None:
            continue

        def decided_in(environments: Collection[str], name: str = spec.name) -> bool:
            return any(
                name in actions_covered(r.match.action)
                and r.deny is None
                and (
                    r.match.environment is None
                    or bool(set(r.match.environment) & set(environments))
                )
                for r in policy.rules
            )

        for loc, message in settings.warnings(decided_in):
            field = ".".join(str(part) for part in loc)
            out.append(PolicyIssue(loaded.lines.get(tuple(loc)), field, message))
    return out


def _unreachable_rules(loaded: LoadedPolicy) -> list[PolicyIssue]:
    """Rules shadowed by an earlier one; rules whose namespaces are in none of their
    environments."""
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
    return out


def _unused_groups(loaded: LoadedPolicy) -> list[PolicyIssue]:
    """Groups with nobody in them; groups no rule (nor ``audit_readers``) uses."""
    policy = loaded.policy
    out: list[PolicyIssue] = []
    used: set[str] = set(policy.audit_readers)
    for rule in policy.rules:
        used |= _groups_used(rule)
    for name, group in policy.groups.items():
        line_no = loaded.lines.get(("groups", name))
        if not group.users and not group.usergroups:
            out.append(PolicyIssue(line_no, f"groups.{name}", "has nobody in it"))
        if name not in used:
            out.append(PolicyIssue(line_no, f"groups.{name}", "is not used by any rule"))
    return out


def _agents(loaded: LoadedPolicy) -> list[PolicyIssue]:
    """Rules for automation when no agent is listed; agents that no rule lets ask."""
    policy = loaded.policy
    out: list[PolicyIssue] = []
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
    return out


def _ended_freezes(loaded: LoadedPolicy, now: datetime) -> list[PolicyIssue]:
    """Freezes that ended before ``now``."""
    return [
        PolicyIssue(loaded.lines.get(("freezes", k)), f"freezes[{k}]", "has already ended")
        for k, freeze in enumerate(loaded.policy.freezes)
        if freeze.window()[1] <= now
    ]


def freeze_window_text(freeze: Freeze) -> str:
    """``2026-12-20 00:00 to 2027-01-02 00:00 Europe/Berlin``."""
    start, end = freeze.window()
    return f"{start:%Y-%m-%d %H:%M} to {end:%Y-%m-%d %H:%M} {freeze.timezone}"


def seconds_text(seconds: int | None) -> str:
    """A duration in seconds as ``1h30m``; ``None`` → ``-``."""
    return "-" if seconds is None else format_duration(seconds)
