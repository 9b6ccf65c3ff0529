"""End to end: where the rule requires a reason, the request form says so once the gate's decision
is shown, and marks its reason field required (Slack then refuses to submit it empty)."""

from __future__ import annotations

import pytest

from tests.helpers.bot import RunningBot
from tests.helpers.modal import (
    blocks_by_id,
    choose,
    chosen,
    context_text,
    form_state,
    open_with_command,
    pick,
)
from tests.helpers.policy import policy

POLICY = policy(
    """\
  - match: {action: restart, environment: prod}
    approvers: [sre]
    reason: required
    reason_min_length: 12
"""
)


@pytest.fixture
def policy_text() -> str:
    return POLICY


def test_a_rule_that_requires_a_reason_makes_the_forms_reason_required(bot: RunningBot) -> None:
    view = pick(bot, open_with_command(bot), "restart")
    assert blocks_by_id(view)["reason"]["optional"] is True
    state = form_state(
        "restart", workload=chosen("deployment/payments-api"), namespace=chosen("payments")
    )
    shown = choose(bot, view, "arg_namespace", "modal_namespace", "payments", state)
    assert "A reason is required" in context_text(shown, "decision")
    assert "12" in context_text(shown, "decision")
    assert blocks_by_id(shown)["reason"]["optional"] is False
