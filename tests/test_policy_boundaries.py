"""Examples at the edges of the decision that random properties hit only by chance: the instants a
freeze starts and ends, an ``approval: auto`` rule with ``during_freeze`` approvers, break-glass
on a rule whose reason is optional, and the reason length at its minimum and one below.

Each example here once let a planted bug (a mutant of ``approvals/policy.py``) survive the whole
suite; ``make mutation`` checks that they stay killed.
"""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from approvals.policy import (
    DEFAULT_REASON_MIN_LENGTH,
    DecisionReason,
    Outcome,
    RequestContext,
    decide,
    explain_mismatches,
    parse_policy,
    static_groups,
)

POLICY = parse_policy("""\
version: 1
approval_channel: C0APPROVALS
groups:
  sre: {users: [U0SRE1, U0SRE2]}
  security: {users: [U0SEC1]}
environments:
  prod: {namespaces: [payments, checkout, billing]}
  staging: {namespaces: ["staging-*"]}
freezes:
  - name: year-end
    start: "2026-12-20 00:00"
    end: "2027-01-02 00:00"
    timezone: Europe/Berlin
    reason: "year-end freeze"
rules:
  - name: staging restarts
    match: {action: restart, environment: staging}
    approval: auto
    during_freeze: {approvers: [security]}
  - name: staging access
    match: {action: access, environment: staging}
    approval: auto
    extend: auto
    during_freeze: {approvers: [sre], min_approvals: 2}
  - name: payments
    match: {action: restart, environment: prod, namespace: payments}
    approvers: [sre]
    break_glass: [sre]
    during_freeze: {approvers: [sre]}
  - name: checkout
    match: {action: restart, environment: prod, namespace: checkout}
    approvers: [sre]
    reason: required
    reason_min_length: 4
    break_glass: [sre]
    during_freeze: {approvers: [sre]}
  - name: billing
    match: {action: restart, environment: prod, namespace: billing}
    approvers: [sre]
    reason: required
    reason_min_length: 20
    during_freeze: {approvers: [sre]}
  - name: prod scaling
    match: {action: scale, environment: prod}
    approvers: [sre]
    reason: required
    during_freeze: {approvers: [sre]}
""")

# The freeze's wall times in Europe/Berlin (UTC+1 in winter), as UTC instants.
START = datetime(2026, 12, 19, 23, 0, tzinfo=UTC)
END = datetime(2027, 1, 1, 23, 0, tzinfo=UTC)
TICK = timedelta(microseconds=1)
OUTSIDE = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)
INSIDE = datetime(2026, 12, 24, 12, 0, tzinfo=UTC)


def ctx(action: str, namespace: str, **kwargs: Any) -> RequestContext:
    environment = "staging" if namespace.startswith("staging-") else "prod"
    kwargs.setdefault("requester", "U0DEV1")
    kwargs.setdefault("at", OUTSIDE)
    return RequestContext(action, environment=environment, namespace=namespace, **kwargs)


# --- the freeze window: start <= at < end -------------------------------------------------------


@pytest.mark.parametrize(
    ("at", "in_force"),
    [
        pytest.param(START - TICK, False, id="just-before-start"),
        pytest.param(START, True, id="at-start"),
        pytest.param(START + TICK, True, id="just-after-start"),
        pytest.param(END - TICK, True, id="just-before-end"),
        pytest.param(END, False, id="at-end"),
    ],
)
def test_the_freeze_window_includes_its_start_and_excludes_its_end(
    at: datetime, in_force: bool
) -> None:
    [freeze] = POLICY.policy.freezes
    assert freeze.in_force(at) is in_force
    decision = decide(POLICY, ctx("restart", "payments", at=at))
    expected = (
        DecisionReason.FREEZE_REQUIRES_APPROVAL
        if in_force
        else DecisionReason.RULE_REQUIRES_APPROVAL
    )
    assert (decision.outcome, decision.reason) == (Outcome.APPROVAL, expected)
    assert decision.freeze == ("year-end" if in_force else None)


def test_the_freeze_window_in_another_time_zone_is_the_same_instant() -> None:
    [freeze] = POLICY.policy.freezes
    berlin_midnight = datetime.fromisoformat("2026-12-20T00:00:00+01:00")
    new_york = datetime.fromisoformat("2026-12-19T18:00:00-05:00")
    assert berlin_midnight == new_york == START
    assert freeze.in_force(berlin_midnight)
    assert freeze.in_force(new_york)
    assert not freeze.in_force(new_york - TICK)


# --- approval: auto with during_freeze approvers ------------------------------------------------


def test_an_auto_rule_needs_its_during_freeze_approvers_in_a_freeze() -> None:
    outside = decide(POLICY, ctx("restart", "staging-web"))
    assert (outside.outcome, outside.reason) == (Outcome.AUTO, DecisionReason.RULE_AUTO_APPROVES)
    inside = decide(POLICY, ctx("restart", "staging-web", at=INSIDE))
    assert (inside.outcome, inside.reason) == (
        Outcome.APPROVAL,
        DecisionReason.FREEZE_REQUIRES_APPROVAL,
    )
    assert inside.approver_groups == ("security",)
    assert inside.approvers == {"U0SEC1"}
    assert inside.min_approvals == 1
    assert inside.freeze == "year-end"
    assert inside.may_approve("U0SEC1", requester="U0DEV1")


def test_an_auto_rule_at_the_freeze_start_instant_is_no_longer_auto() -> None:
    assert decide(POLICY, ctx("restart", "staging-web", at=START - TICK)).outcome is Outcome.AUTO
    assert decide(POLICY, ctx("restart", "staging-web", at=START)).outcome is Outcome.APPROVAL
    assert decide(POLICY, ctx("restart", "staging-web", at=END)).outcome is Outcome.AUTO


def test_an_auto_extension_needs_the_during_freeze_approvers_in_a_freeze() -> None:
    assert decide(POLICY, ctx("extend", "staging-web")).outcome is Outcome.AUTO
    inside = decide(POLICY, ctx("extend", "staging-web", at=INSIDE))
    assert inside.outcome is Outcome.APPROVAL
    assert inside.approver_groups == ("sre",)
    assert inside.min_approvals == 2


def test_break_glass_on_an_auto_rule_in_a_freeze_is_a_break_glass_request() -> None:
    """In a freeze the auto rule is an approval rule: ``--break-glass`` needs a reason, and only
    the rule's ``break_glass`` groups (none here) may use it."""
    no_reason = decide(POLICY, ctx("restart", "staging-web", at=INSIDE, break_glass=True))
    assert no_reason.reason is DecisionReason.REASON_REQUIRED
    assert no_reason.message.startswith("--break-glass needs a reason")
    refused = decide(
        POLICY,
        ctx("restart", "staging-web", at=INSIDE, break_glass=True, reason="site down, P1 now"),
    )
    assert refused.reason is DecisionReason.BREAK_GLASS_NOT_ALLOWED
    assert "'staging restarts' (line 16) does not allow break-glass" in refused.message
    # outside the freeze --break-glass changes nothing on an auto rule
    auto = decide(POLICY, ctx("restart", "staging-web", break_glass=True))
    assert auto.outcome is Outcome.AUTO


# --- break-glass on a rule whose reason is optional --------------------------------------------


def test_break_glass_needs_a_reason_even_when_the_rule_does_not_require_one() -> None:
    plain = decide(POLICY, ctx("restart", "payments", requester="U0SRE1"))
    assert plain.outcome is Outcome.APPROVAL  # without --break-glass no reason is needed
    for reason in (None, "", "   ", "x" * (DEFAULT_REASON_MIN_LENGTH - 1)):
        denied = decide(
            POLICY, ctx("restart", "payments", requester="U0SRE1", break_glass=True, reason=reason)
        )
        assert (denied.outcome, denied.reason) == (Outcome.DENY, DecisionReason.REASON_REQUIRED)
        assert denied.message == (
            f"--break-glass needs a reason of at least {DEFAULT_REASON_MIN_LENGTH} characters "
            '(--reason "…")'
        )
    enough = decide(
        POLICY,
        ctx(
            "restart",
            "payments",
            requester="U0SRE1",
            break_glass=True,
            reason="x" * DEFAULT_REASON_MIN_LENGTH,
        ),
    )
    assert (enough.outcome, enough.reason) == (Outcome.BREAK_GLASS, DecisionReason.BREAK_GLASS)


def test_break_glass_uses_the_rules_minimum_length_when_it_sets_one() -> None:
    def glass(reason: str) -> DecisionReason:
        context = ctx("restart", "checkout", requester="U0SRE1", break_glass=True, reason=reason)
        return decide(POLICY, context).reason

    assert glass("abc") is DecisionReason.REASON_REQUIRED
    assert glass("  abc  ") is DecisionReason.REASON_REQUIRED
    assert glass("abcd") is DecisionReason.BREAK_GLASS


# --- the reason length: the minimum passes, one less does not -----------------------------------


@pytest.mark.parametrize(
    ("namespace", "action", "needed"),
    [
        pytest.param("billing", "restart", 20, id="reason_min_length"),
        pytest.param("payments", "scale", DEFAULT_REASON_MIN_LENGTH, id="default"),
    ],
)
def test_a_required_reason_of_exactly_the_minimum_length_is_enough(
    namespace: str, action: str, needed: int
) -> None:
    def decision(reason: str | None) -> tuple[Outcome, DecisionReason, str]:
        made = decide(POLICY, ctx(action, namespace, reason=reason))
        return made.outcome, made.reason, made.message

    short = decision("r" * (needed - 1))
    assert short[:2] == (Outcome.DENY, DecisionReason.REASON_REQUIRED)
    assert short[2] == f'this request needs a reason of at least {needed} characters (--reason "…")'
    assert decision(f"  {'r' * (needed - 1)}  ")[1] is DecisionReason.REASON_REQUIRED
    assert decision(None)[1] is DecisionReason.REASON_REQUIRED
    assert decision("r" * needed)[:2] == (Outcome.APPROVAL, DecisionReason.RULE_REQUIRES_APPROVAL)
    assert decision(f"\t{'r' * needed}\n")[1] is DecisionReason.RULE_REQUIRES_APPROVAL


def test_a_required_reason_is_checked_in_a_freeze_too() -> None:
    short = decide(POLICY, ctx("restart", "billing", at=INSIDE, reason="r" * 19))
    assert (short.reason, short.freeze) == (DecisionReason.REASON_REQUIRED, "year-end")
    enough = decide(POLICY, ctx("restart", "billing", at=INSIDE, reason="r" * 20))
    assert enough.reason is DecisionReason.FREEZE_REQUIRES_APPROVAL


# --- freezes: which one applies, and what they say ---------------------------------------------

FREEZES = parse_policy("""\
version: 1
approval_channel: C0APPROVALS
groups:
  sre: {users: [U0SRE1, U0SRE2]}
environments:
  prod: {namespaces: [payments]}
  staging: {namespaces: ["staging-*"]}
freezes:
  - name: staging only
    start: "2026-12-01 00:00"
    end: "2027-02-01 00:00"
    reason: "staging rebuild"
    environments: [staging]
  - name: grants allowed
    start: "2026-12-01 00:00"
    end: "2027-02-01 00:00"
    reason: "access and extensions go on"
    allow: [access]
  - start: "2026-12-20T00:00:00+01:00"
    end: "2026-12-27T00:00:00+01:00"
    reason: "christmas"
rules:
  - match: {action: restart, environment: prod}
    approvers: [sre]
  - match: {action: access, environment: prod}
    approval: auto
""")


def test_a_freeze_that_does_not_apply_does_not_hide_a_later_one() -> None:
    """The first freeze is for staging only, the second allows access: a prod restart in the
    second's window is frozen by the second, an access request by none until the third."""
    frozen = decide(FREEZES, ctx("restart", "payments", at=datetime(2026, 12, 5, tzinfo=UTC)))
    assert (frozen.reason, frozen.freeze) == (DecisionReason.FREEZE, "grants allowed")
    assert frozen.message == (
        "change freeze 'grants allowed' until 2027-02-01 00:00 UTC: access and extensions go on"
    )
    at = datetime(2026, 12, 5, tzinfo=UTC)
    assert decide(FREEZES, ctx("access", "payments", at=at)).outcome is Outcome.AUTO
    # an extension is decided as the access it extends: allowed too
    assert decide(FREEZES, ctx("extend", "payments", at=at)).outcome is Outcome.AUTO
    # at christmas the third freeze, which allows nothing, stops access too
    christmas = decide(FREEZES, ctx("access", "payments", at=datetime(2026, 12, 24, tzinfo=UTC)))
    assert (christmas.reason, christmas.freeze) == (DecisionReason.FREEZE, "christmas")


def test_a_freeze_without_a_name_says_so_and_keeps_its_offset() -> None:
    """The third freeze has no name and times with an offset (+01:00), which win over its
    time zone (UTC)."""
    [_, _, christmas] = FREEZES.policy.freezes
    start, end = christmas.window()
    assert start == datetime(2026, 12, 19, 23, 0, tzinfo=UTC)
    assert end == datetime(2026, 12, 26, 23, 0, tzinfo=UTC)
    assert christmas.in_force(datetime(2026, 12, 19, 23, 0, tzinfo=UTC))
    assert not christmas.in_force(datetime(2026, 12, 19, 22, 59, tzinfo=UTC))
    assert christmas.label() == "christmas"


def test_an_unnamed_freeze_is_named_by_nobody_in_its_message() -> None:
    text = """\
version: 1
approval_channel: C0APPROVALS
groups:
  sre: {users: [U0SRE1, U0SRE2]}
environments:
  prod: {namespaces: [payments]}
freezes:
  - start: "2026-12-20 00:00"
    end: "2026-12-27 00:00"
    reason: "christmas"
rules:
  - match: {action: restart, environment: prod}
    approvers: [sre]
"""
    denied = decide(parse_policy(text), ctx("restart", "payments", at=INSIDE))
    assert denied.message == "change freeze until 2026-12-27 00:00 UTC: christmas"


def test_a_policy_with_freezes_needs_an_aware_time() -> None:
    with pytest.raises(
        ValueError, match=r"^RequestContext\.at is required: the policy has freezes$"
    ):
        decide(POLICY, ctx("restart", "payments", at=None))
    naive = datetime(2026, 12, 24, 12, 0)
    with pytest.raises(ValueError, match=r"^RequestContext\.at must be an aware datetime$"):
        decide(POLICY, ctx("restart", "payments", at=naive))


# --- who may ask, and what a denial says ----------------------------------------------------

ASKERS = parse_policy("""\
version: 1
approval_channel: C0APPROVALS
groups:
  sre: {users: [U0SRE1, U0SRE2]}
  dev: {users: [U0DEV1]}
  security: {users: [U0SEC1]}
  finance: {users: [U0FIN1]}
agents:
  B0DEPLOY: {name: deploy-bot}
environments:
  prod: {namespaces: [payments, billing]}
  staging: {namespaces: ["staging-*"]}
rules:
  - match: {action: restart, environment: prod, requesters: [dev, security], requester_kind: human}
    approvers: [sre]
  - match: {action: scale, environment: prod, requester_kind: agent}
    approval: auto
  - match: {action: rollback, environment: prod}
    steps:
      - {approvers: [sre, security]}
      - {approvers: [finance], min_approvals: 1}
  - name: access
    match: {action: access, environment: prod}
    approval: auto
    max_duration: 2h
  - name: long access
    match: {action: access, environment: staging}
    approvers: [sre]
    default_duration: 90m
""")


def test_a_rule_that_misses_only_on_who_asks_says_who_may() -> None:
    # an agent outside the requesters: both conditions miss, still the rule that says most
    agent = decide(ASKERS, ctx("restart", "payments", requester="B0DEPLOY"))
    assert (agent.outcome, agent.reason) == (Outcome.DENY, DecisionReason.REQUESTER_NOT_ALLOWED)
    assert agent.message == "automation may not ask for restart in prod"
    outsider = decide(ASKERS, ctx("restart", "payments", requester="U0SRE1"))
    assert outsider.message == "only members of dev, security may ask for restart in prod"
    human = decide(ASKERS, ctx("scale", "payments", requester="U0DEV1"))
    assert human.message == "only automation may ask for scale in prod"


def test_a_denial_for_no_rule_says_whether_the_change_could_be_undone() -> None:
    rotate = decide(ASKERS, RequestContext("rotate", "U0DEV1", path="secret/prod/db"))
    assert (rotate.reason, rotate.reversible) == (DecisionReason.NO_RULE_MATCHES, False)
    restore = decide(ASKERS, RequestContext("restore", "B0DEPLOY", path="secret/prod/db"))
    assert restore.reversible is False
    outsider = decide(ASKERS, RequestContext("rotate", "U0SRE1", environment="prod"))
    assert outsider.reversible is False
    asked = decide(
        ASKERS, RequestContext("scale", "U0DEV1", environment="prod", namespace="payments")
    )
    assert (asked.reason, asked.reversible) == (DecisionReason.REQUESTER_NOT_ALLOWED, True)
    irreversible = dataclasses.replace(
        RequestContext("restart", "U0SRE1", environment="prod", namespace="payments"),
        kind_reversible=False,
    )
    denied = decide(ASKERS, irreversible)
    assert (denied.reason, denied.reversible) == (DecisionReason.REQUESTER_NOT_ALLOWED, False)


def test_steps_of_several_groups_are_named_with_or() -> None:
    decision = decide(ASKERS, ctx("rollback", "payments"))
    assert decision.message == "needs approvals: 1 from sre or security and 1 from finance"


# --- what a decision hands to the request kind ----------------------------------------------------


def test_an_auto_access_rule_extends_automatically_unless_it_says_otherwise() -> None:
    [access] = [r for r in ASKERS.policy.rules if r.name == "access"]
    assert access.extend is None
    assert access.extend_mode() == "auto"
    decision = decide(ASKERS, ctx("extend", "payments"))
    assert (decision.outcome, decision.settings["extend"]) == (Outcome.AUTO, "auto")
    staged = decide(ASKERS, ctx("extend", "staging-web"))
    assert (staged.outcome, staged.settings["extend"]) == (Outcome.APPROVAL, "approval")


def test_access_durations_in_seconds() -> None:
    capped = decide(ASKERS, ctx("access", "payments")).settings
    assert (capped["max_duration"], capped["default_duration"]) == (7200, 3600)
    given = decide(ASKERS, ctx("access", "staging-web")).settings
    assert (given["max_duration"], given["default_duration"]) == (None, 5400)


def test_explain_names_every_condition_a_rule_misses() -> None:
    """``opsgate policy explain``'s reasons, for a rule whose every condition misses."""
    loaded = parse_policy("""\
version: 1
approval_channel: C0APPROVALS
incident_channels: ["inc-*"]
groups:
  sre: {users: [U0SRE1, U0SRE2]}
  dev: {users: [U0DEV1]}
environments:
  prod: {namespaces: [payments, checkout]}
  staging: {namespaces: ["staging-*"]}
rules:
  - match:
      action: [rotate, scale]
      environment: [prod, staging]
      namespace: [payments, "pay*"]
      path: ["secret/prod/*", "secret/x/*"]
      channel: incident
      requesters: [dev, sre]
      requester_kind: human
    approvers: [sre]
""")
    context = RequestContext("restart", "U0OTHER", requester_kind="agent")
    [why] = explain_mismatches(loaded, context)
    assert why == [
        "action 'restart' is not rotate, scale",
        "environment (none) is not prod, staging",
        "namespace (none) is not payments, pay*",
        "path (none) is not secret/prod/*, secret/x/*",
        "the request was not made in an incident channel",
        "the requester is not human",
        "the requester is not in dev, sre",
    ]


# --- break-glass and other denials: what they say ------------------------------------------

GLASS = parse_policy("""\
version: 1
approval_channel: C0APPROVALS
groups:
  sre: {users: [U0SRE1, U0SRE2]}
  security: {users: [U0SEC1]}
  oncall: {users: [U0ONCALL]}
  leads: {users: [U0LEAD]}
  solo: {users: [U0SOLO]}
agents:
  B0BOT: {name: a bot}
environments:
  prod: {namespaces: [payments, checkout, billing, ledger]}
freezes:
  - name: audit
    start: "2026-12-20 00:00"
    end: "2026-12-27 00:00"
    reason: "audit"
rules:
  - name: payments
    match: {action: restart, environment: prod, namespace: payments}
    steps:
      - {approvers: [sre]}
      - {approvers: [security]}
    break_glass: [oncall, leads]
    approval_channel: C0PAYMENTS
    during_freeze: {approvers: [security]}
  - name: checkout
    match: {action: restart, environment: prod, namespace: checkout}
    approvers: [sre]
    during_freeze: {approvers: [solo]}
  - name: billing
    match: {action: restart, environment: prod, namespace: billing}
    approvers: [sre]
    break_glass: [oncall]
  - name: ledger
    match: {action: rotate, environment: prod}
    approval: auto
    allow_irreversible_auto: true
""")


def glass(namespace: str, requester: str, **kwargs: Any) -> RequestContext:
    kwargs.setdefault("reason", "site down, pager storm")
    kwargs.setdefault("at", OUTSIDE)
    return RequestContext(
        "restart", requester, environment="prod", namespace=namespace, break_glass=True, **kwargs
    )


def test_break_glass_decisions_say_who_reviews_and_where() -> None:
    made = decide(GLASS, glass("payments", "U0LEAD"))
    assert (made.outcome, made.approval_channel) == (Outcome.BREAK_GLASS, "C0PAYMENTS")
    assert made.message == (
        "break-glass under rules[0] 'payments' (line 19): executed at once; "
        "sre, security will review it"
    )
    other = decide(GLASS, glass("billing", "U0ONCALL"))
    assert (other.outcome, other.approval_channel) == (Outcome.BREAK_GLASS, "C0APPROVALS")


def test_break_glass_refusals_say_why() -> None:
    agent = decide(GLASS, glass("payments", "B0BOT"))
    assert agent.message == (
        "automation can never break the glass; ask without --break-glass to request approval"
    )
    outsider = decide(GLASS, glass("payments", "U0SRE1", at=INSIDE))
    assert outsider.message == (
        "only members of oncall, leads may break the glass here; "
        "ask without --break-glass to request approval"
    )
    assert (outsider.reason, outsider.freeze) == (DecisionReason.BREAK_GLASS_NOT_ALLOWED, "audit")


def test_a_request_nobody_else_may_approve_says_so_and_names_the_freeze() -> None:
    denied = decide(GLASS, RequestContext("restart", "U0SOLO", "prod", "checkout", at=INSIDE))
    assert (denied.reason, denied.freeze) == (DecisionReason.NOT_ENOUGH_APPROVERS, "audit")
    assert denied.message == (
        "this request needs 1 approval(s) from solo, but not enough people other than you may "
        "approve it; ask the platform team to fix the policy"
    )


def test_during_freeze_approvers_never_include_automation() -> None:
    members = {**static_groups(GLASS.policy), "security": frozenset({"U0SEC1", "B0BOT"})}
    inside = decide(
        GLASS, RequestContext("restart", "U0DEV1", "prod", "payments", at=INSIDE), groups=members
    )
    assert inside.approvers == {"U0SEC1"}


def test_an_irreversible_auto_rule_without_the_permission_says_why() -> None:
    rule = GLASS.policy.rules[3].model_copy(update={"allow_irreversible_auto": False})
    policy = GLASS.policy.model_copy(update={"rules": [*GLASS.policy.rules[:3], rule]})
    loaded = dataclasses.replace(GLASS, policy=policy)
    denied = decide(loaded, RequestContext("rotate", "U0DEV1", "prod", path="secret/x", at=OUTSIDE))
    assert denied.reason is DecisionReason.IRREVERSIBLE_AUTO_REFUSED
    assert denied.message == (
        "rotate cannot be undone and rules[3] 'ledger' (line 35) does not allow irreversible "
        "requests to be approved automatically"
    )
