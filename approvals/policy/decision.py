"""The decision's vocabulary and arithmetic: :class:`Outcome`, :class:`DecisionReason`,
:class:`RequestContext` (what rules match on), :class:`Step` and :class:`Decision`; who may approve
(:func:`approval_refusal`), whether approvals satisfy the steps (:func:`count_satisfied`), and why a
rule does not match a request (:func:`explain_mismatches`). :mod:`approvals.policy.rules` decides.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any, Literal

from approvals.policy.lookup import requester_kind, static_groups
from approvals.policy.model import (
    DEFAULT_PENDING_TTL,
    LoadedPolicy,
    Policy,
    Rule,
    StepModel,
    actions_covered,
    is_reversible,
    matches_any,
)


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


def mismatches(
    rule: Rule, ctx: RequestContext, members: Mapping[str, frozenset[str]]
) -> list[tuple[str, str]]:
    """Why ``rule`` does not match ``ctx``: ``(field, explanation)`` pairs; empty: it matches."""
    m = rule.match
    out: list[tuple[str, str]] = []
    action = "access" if ctx.action == "extend" else ctx.action
    if action not in actions_covered(m.action):
        out.append(("action", f"action '{ctx.action}' is not {', '.join(m.action)}"))
    if m.environment is not None and ctx.environment not in m.environment:
        out.append(
            (
                "environment",
                f"environment {ctx.environment or '(none)'} is not {', '.join(m.environment)}",
            )
        )
    if m.namespace is not None and (
        ctx.namespace is None or not matches_any(ctx.namespace, m.namespace)
    ):
        out.append(
            ("namespace", f"namespace {ctx.namespace or '(none)'} is not {', '.join(m.namespace)}")
        )
    if m.path is not None and (ctx.path is None or not matches_any(ctx.path, m.path)):
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
    ctx = as_listed(loaded.policy, ctx)
    return [[why for _f, why in mismatches(r, ctx, members)] for r in loaded.policy.rules]


def as_listed(policy: Policy, ctx: RequestContext) -> RequestContext:
    """``ctx`` as the policy sees it: a requester listed under ``agents`` is automation."""
    kind = requester_kind(policy, ctx.requester, ctx.requester_kind)
    return ctx if kind == ctx.requester_kind else dataclasses.replace(ctx, requester_kind=kind)


def resolve_steps(
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


def needs_text(steps: Sequence[Step]) -> str:
    if len(steps) == 1:
        return f"needs {steps[0].min_approvals} approval(s) from {', '.join(steps[0].groups)}"
    parts = [f"{s.min_approvals} from {' or '.join(s.groups)}" for s in steps]
    return "needs approvals: " + " and ".join(parts)
