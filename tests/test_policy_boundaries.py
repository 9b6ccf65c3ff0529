"""Examples at the edges of the decision that random properties hit only by chance: the instants a
freeze starts and ends, an ``approval: auto`` rule with ``during_freeze`` approvers, break-glass
on a rule whose reason is optional, and the reason length at its minimum and one below.

Each example here once let a planted bug (a mutant of ``approvals/policy.py``) survive the whole
suite; ``make mutation`` checks that they stay killed.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from approvals.policy import (
    DEFAULT_REASON_MIN_LENGTH,
    DecisionReason,
    Outcome,
    RequestContext,
    decide,
    parse_policy,
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
