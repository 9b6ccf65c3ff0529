"""The decision: :func:`decide`, a pure function of the policy, the request and the groups'
members, made of an ordered list of decision rules (:data:`DECISION_RULES`).

In the manner of Prefect's orchestration rules (each rule looks at a proposed state transition
and may reject it or let it pass), each decision rule looks at the request and the policy rule
that matched it, and either returns a :class:`~approvals.policy.decision.Decision` (the first one
returned is the answer) or passes (``None``), possibly after changing what the later rules see (a
freeze in force replaces the approvers). The order is the policy's order of precedence: the
rule's ``deny`` → a freeze in force → ``reason: required`` → ``--break-glass`` → ``approval:
auto`` → enough approvers → approval. The last rule always decides.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from actions.durations import parse_duration
from actions.registry import KINDS
from approvals.policy.decision import (
    Decision,
    DecisionReason,
    Outcome,
    RequestContext,
    Step,
    as_listed,
    count_satisfied,
    mismatches,
    needs_text,
    resolve_steps,
)
from approvals.policy.lookup import static_groups
from approvals.policy.model import (
    DEFAULT_PENDING_TTL,
    DEFAULT_REASON_MIN_LENGTH,
    Freeze,
    LoadedPolicy,
    Policy,
    Rule,
    actions_covered,
)


def freeze_in_force(policy: Policy, ctx: RequestContext) -> Freeze | None:
    """The first freeze of the policy in force for ``ctx`` (its environment, its action not
    allowed), or None. Raises ``ValueError`` when the policy has freezes and ``ctx.at`` is
    missing."""
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


def rule_settings(policy: Policy, rule: Rule) -> dict[str, Any]:
    """The rule's per-kind settings as JSON (each kind's ``RuleSettings.as_settings``: ``limits``,
    ``roles``, ``max_duration`` and ``default_duration`` in seconds, ``vault_groups``,
    ``rotate`` …), the policy's top-level settings of the kinds the rule decides, and
    ``extend``, for ``Decision.settings``."""
    covered = actions_covered(rule.match.action)
    out: dict[str, Any] = {}
    for spec in KINDS:
        settings = rule.kind_settings(spec)
        if settings is not None:
            out.update(settings.as_settings(applies=spec.name in covered))
        top_level = policy.kind_settings(spec)
        if top_level is not None and spec.name in covered:
            out.update(top_level.as_settings(applies=True))
    out["extend"] = rule.extend_mode()
    return out


@dataclass
class Deciding:
    """What the decision rules look at: the request (``ctx``, as the policy lists it), the
    policy rule that matched it (``rule``, ``label``), the groups' ``members``, and what is
    decided so far: whether it is ``auto``, its approval ``steps``, the ``approval_reason`` and
    the ``freeze`` in force. ``base`` holds the fields every decision under this rule carries."""

    loaded: LoadedPolicy
    ctx: RequestContext
    members: Mapping[str, frozenset[str]]
    rule: Rule
    label: str
    base: dict[str, Any]
    auto: bool
    steps: tuple[Step, ...]
    approval_reason: DecisionReason = DecisionReason.RULE_REQUIRES_APPROVAL
    freeze: str | None = None
    agents: frozenset[str] = field(default_factory=frozenset)

    def deny(self, reason: DecisionReason, message: str, **extra: Any) -> Decision:
        """A denial under this rule."""
        return Decision(Outcome.DENY, reason, message, **{**self.base, **extra})

    def approval_channel(self) -> str:
        """The rule's approval channel, else the policy's."""
        return self.rule.approval_channel or self.loaded.policy.approval_channel


DecisionRule = Callable[[Deciding], Decision | None]
"""A decision rule: a :class:`Decision`, or None to let the next rule decide."""


def rule_denies(d: Deciding) -> Decision | None:
    """A ``deny`` rule denies with its message."""
    if d.rule.deny is None:
        return None
    return d.deny(DecisionReason.RULE_DENIES, d.rule.deny)


def change_freeze(d: Deciding) -> Decision | None:
    """A freeze in force denies, unless the rule's ``during_freeze`` names approvers: then those
    approve instead of the rule's, and never automatically."""
    found = freeze_in_force(d.loaded.policy, d.ctx)
    if found is None:
        return None
    d.freeze = found.label()
    during = d.rule.during_freeze
    if during is None or during.deny is not None:
        _start, end = found.window()
        message = (
            during.deny
            if during is not None and during.deny is not None
            else f"change freeze{f' {found.name!r}' if found.name else ''} until "
            f"{end:%Y-%m-%d %H:%M} {found.timezone}: {found.reason}"
        )
        return d.deny(DecisionReason.FREEZE, message, freeze=d.freeze)
    d.steps = resolve_steps([(during.approvers, during.min_approvals)], d.members, d.agents)
    d.auto = False
    d.approval_reason = DecisionReason.FREEZE_REQUIRES_APPROVAL
    return None


def reason_required(d: Deciding) -> Decision | None:
    """``reason: required`` (and ``--break-glass`` when the rule is not auto) needs a reason of
    the rule's ``reason_min_length`` (default 10) characters."""
    if not (d.rule.reason == "required" or (d.ctx.break_glass and not d.auto)):
        return None
    needed = d.rule.reason_min_length or DEFAULT_REASON_MIN_LENGTH
    if len((d.ctx.reason or "").strip()) >= needed:
        return None
    what = "--break-glass needs" if d.ctx.break_glass else "this request needs"
    return d.deny(
        DecisionReason.REASON_REQUIRED,
        f'{what} a reason of at least {needed} characters (--reason "…")',
        freeze=d.freeze,
    )


def break_glass(d: Deciding) -> Decision | None:
    """``--break-glass`` (on a rule that is not auto): executed at once when the requester is a
    person in the rule's ``break_glass`` groups, its approvers reviewing it; denied otherwise."""
    if not d.ctx.break_glass or d.auto:
        return None
    allowed = frozenset(u for g in d.rule.break_glass for u in d.members.get(g, frozenset()))
    if d.ctx.requester_kind == "agent" or d.ctx.requester not in allowed - d.agents:
        why = (
            "automation can never break the glass"
            if d.ctx.requester_kind == "agent"
            else (
                f"only members of {', '.join(d.rule.break_glass)} may break the glass here"
                if d.rule.break_glass
                else f"{d.label} does not allow break-glass"
            )
        )
        return d.deny(
            DecisionReason.BREAK_GLASS_NOT_ALLOWED,
            f"{why}; ask without --break-glass to request approval",
            freeze=d.freeze,
        )
    reviewers = ", ".join(dict.fromkeys(g for s in d.steps for g in s.groups))
    return Decision(
        Outcome.BREAK_GLASS,
        DecisionReason.BREAK_GLASS,
        f"break-glass under {d.label}: executed at once; {reviewers} will review it",
        steps=d.steps,
        approval_channel=d.approval_channel(),
        freeze=d.freeze,
        **d.base,
    )


def auto_approval(d: Deciding) -> Decision | None:
    """``approval: auto`` approves, unless the kind is irreversible and the rule does not say
    ``allow_irreversible_auto``."""
    if not d.auto:
        return None
    if not d.ctx.reversible and not d.rule.allow_irreversible_auto:
        return d.deny(
            DecisionReason.IRREVERSIBLE_AUTO_REFUSED,
            f"{d.ctx.action} cannot be undone and {d.label} does not allow irreversible "
            "requests to be approved automatically",
        )
    return Decision(
        Outcome.AUTO,
        DecisionReason.RULE_AUTO_APPROVES,
        f"approved automatically by {d.label}",
        **d.base,
    )


def enough_approvers(d: Deciding) -> Decision | None:
    """Steps that the members (other than the requester) cannot satisfy deny at once."""
    possible = sorted({u for s in d.steps for u in s.approvers} - {d.ctx.requester})
    satisfiable, _ = count_satisfied(d.steps, possible, d.ctx.requester)
    if satisfiable:
        return None
    return d.deny(
        DecisionReason.NOT_ENOUGH_APPROVERS,
        f"this request {needs_text(d.steps)}, but not enough people other than you may approve "
        "it; ask the platform team to fix the policy",
        steps=d.steps,
        freeze=d.freeze,
    )


def needs_approval(d: Deciding) -> Decision:
    """The request waits for its approval steps."""
    return Decision(
        Outcome.APPROVAL,
        d.approval_reason,
        needs_text(d.steps) + (f" (change freeze: {d.freeze})" if d.freeze else ""),
        steps=d.steps,
        approval_channel=d.approval_channel(),
        freeze=d.freeze,
        **d.base,
    )


DECISION_RULES: tuple[DecisionRule, ...] = (
    rule_denies,
    change_freeze,
    reason_required,
    break_glass,
    auto_approval,
    enough_approvers,
    needs_approval,
)
"""The decision rules, in order of precedence; the last one always decides."""


def _unmatched(
    loaded: LoadedPolicy, ctx: RequestContext, near: list[tuple[Rule, set[str]]]
) -> Decision:
    """The denial when no rule matches: a rule that only the requester's groups or kind kept
    from matching says the most; else no rule allows the request at all."""
    where = f" in {ctx.environment}" if ctx.environment else ""
    if not near:
        return Decision(
            Outcome.DENY,
            DecisionReason.NO_RULE_MATCHES,
            f"no policy rule allows {ctx.action}{where}; ask the platform team to add one",
            policy_sha256=loaded.sha256,
            reversible=ctx.reversible,
        )
    rule, missing = min(near, key=lambda m: "requester_kind" in m[1])
    if "requester_kind" in missing:
        why = (
            f"only automation may ask for {ctx.action}{where}"
            if rule.match.requester_kind == "agent"
            else f"automation may not ask for {ctx.action}{where}"
        )
    else:
        groups = ", ".join(rule.match.requesters or [])
        why = f"only members of {groups} may ask for {ctx.action}{where}"
    return Decision(
        Outcome.DENY,
        DecisionReason.REQUESTER_NOT_ALLOWED,
        why,
        policy_sha256=loaded.sha256,
        reversible=ctx.reversible,
    )


def _deciding(
    loaded: LoadedPolicy,
    ctx: RequestContext,
    members: Mapping[str, frozenset[str]],
    index: int,
) -> Deciding:
    """What the decision rules start from, under ``rules[index]``."""
    policy = loaded.policy
    rule = policy.rules[index]
    agents = frozenset(policy.agents)
    ttl = rule.pending_ttl or policy.defaults.pending_ttl
    base: dict[str, Any] = {
        "rule_index": index,
        "rule_label": loaded.rule_label(index),
        "pending_ttl": parse_duration(ttl) if ttl else DEFAULT_PENDING_TTL,
        "escalate_after": parse_duration(rule.escalate_after) if rule.escalate_after else None,
        "escalate_to": rule.escalate_to,
        "escalate_to_users": (
            members.get(rule.escalate_to, frozenset()) - agents if rule.escalate_to else frozenset()
        ),
        "policy_sha256": loaded.sha256,
        "reversible": ctx.reversible,
        "settings": rule_settings(policy, rule),
    }
    auto = rule.extend_mode() == "auto" if ctx.action == "extend" else rule.approval == "auto"
    return Deciding(
        loaded=loaded,
        ctx=ctx,
        members=members,
        rule=rule,
        label=loaded.rule_label(index),
        base=base,
        auto=auto,
        steps=resolve_steps(rule.step_models(), members, agents),
        agents=agents,
    )


def decide(
    loaded: LoadedPolicy,
    ctx: RequestContext,
    *,
    groups: Mapping[str, frozenset[str]] | None = None,
) -> Decision:
    """Decide ``ctx`` by the first rule that matches it; no match means denied. Pure.

    ``groups`` maps each group name to its members (see
    :func:`~approvals.policy.lookup.resolve_groups`); default: the groups' listed ``users``
    only. The rule's ``match`` (action, environment, namespace, path, channel, requester kind,
    ``requesters``) picks the rule; then :data:`DECISION_RULES`, in order. A request whose steps
    the groups' members (other than the requester) cannot satisfy is denied at once.

    Raises ``ValueError`` when the policy has freezes and ``ctx.at`` is missing or naive.
    """
    members = static_groups(loaded.policy) if groups is None else groups
    if ctx.at is not None and ctx.at.tzinfo is None:
        raise ValueError("RequestContext.at must be an aware datetime")
    ctx = as_listed(loaded.policy, ctx)
    near: list[tuple[Rule, set[str]]] = []
    for index, candidate in enumerate(loaded.policy.rules):
        missing = {f for f, _ in mismatches(candidate, ctx, members)}
        if not missing:
            deciding = _deciding(loaded, ctx, members, index)
            for decision_rule in DECISION_RULES:
                decision = decision_rule(deciding)
                if decision is not None:
                    return decision
            raise AssertionError("the last decision rule always decides")  # pragma: no cover
        if missing <= {"requesters", "requester_kind"}:
            near.append((candidate, missing))
    return _unmatched(loaded, ctx, near)
