"""Unit tests of ``bot.blocks``: pure builders, a ``RequestView`` in, ``(text, blocks)`` out."""

from __future__ import annotations

import copy
from datetime import UTC, datetime
from typing import Any

import pytest

from approvals.notifier import StepView
from bot.blocks import (
    ACKNOWLEDGE_ACTION,
    APPROVE_ACTION,
    DECISION_BLOCK,
    DENY_ACTION,
    Blocks,
    approval_message,
    audit_line,
    break_glass_notice,
    error_message,
    outcome_line,
    requester_announcement,
    requester_message,
    thread_update,
    title,
)
from bot.timefmt import slack_date
from tests.helpers.request_views import RULE, make_view


def texts(blocks: Blocks) -> list[str]:
    """Every mrkdwn / plain_text string in the blocks, in order."""
    out: list[str] = []
    for block in blocks:
        if "text" in block:
            out.append(block["text"]["text"])
        for element in block.get("elements", []):
            if "text" in element:
                text = element["text"]
                out.append(text["text"] if isinstance(text, dict) else text)
    return out


def mrkdwn_texts(blocks: Blocks) -> list[str]:
    out: list[str] = []
    for block in blocks:
        candidates = [block.get("text")] + [e for e in block.get("elements", [])]
        out += [c["text"] for c in candidates if isinstance(c, dict) and c.get("type") == "mrkdwn"]
    return out


def actions_blocks(blocks: Blocks) -> list[dict[str, Any]]:
    return [b for b in blocks if b["type"] == "actions"]


def joined(blocks: Blocks) -> str:
    return "\n".join(texts(blocks))


# --- a pending request -------------------------------------------------------------------------


def test_title() -> None:
    assert title(make_view()) == "Request #12: restart deployment/payments-api in payments (prod)"
    assert title(make_view(namespace=None, environment=None, action="rotate", target="kv/x")) == (
        "Request #12: rotate kv/x"
    )


def test_pending_message_has_approve_and_deny_buttons_carrying_only_the_id() -> None:
    _, blocks = approval_message(make_view(id=4711))
    (actions,) = actions_blocks(blocks)
    assert actions["block_id"] == DECISION_BLOCK == "decision"
    buttons = actions["elements"]
    assert len(buttons) == 2
    assert [b["type"] for b in buttons] == ["button", "button"]
    assert [b["action_id"] for b in buttons] == [APPROVE_ACTION, DENY_ACTION] == ["approve", "deny"]
    assert [b["value"] for b in buttons] == ["4711", "4711"]
    assert [b["text"] for b in buttons] == [
        {"type": "plain_text", "text": "Approve", "emoji": True},
        {"type": "plain_text", "text": "Deny", "emoji": True},
    ]
    assert [b["style"] for b in buttons] == ["primary", "danger"]
    # The actions block comes last, below everything the approver must read.
    assert blocks[-1] is actions


def test_pending_message_shows_who_what_why_and_approvals() -> None:
    text, blocks = approval_message(make_view())
    assert text == (
        "Request #12: restart deployment/payments-api in payments (prod), asked by <@U0DEV1>"
    )
    assert blocks[0]["text"]["text"] == (
        "*Request #12: restart deployment/payments-api in payments (prod)*\nAsked by <@U0DEV1>"
    )
    assert blocks[1]["text"]["text"] == (
        "deployment/payments-api in payments: 3/3 ready\n"
        "image: registry.example.com/payments-api:1.4.2"
    )
    assert blocks[2]["text"]["text"] == "*Reason:* memory leak"
    context = blocks[3]
    assert context["type"] == "context"
    assert context["elements"][0]["text"] == (f"Needs 1 approval(s) from *sre* (0/1) · rule {RULE}")
    assert "Waiting for approval" not in joined(blocks)
    assert len(blocks) == 5


def test_pending_message_with_some_approvals() -> None:
    view = make_view(approver_groups=("sre", "dba"), min_approvals=2, approved_by=("U0SRE1",))
    _, blocks = approval_message(view)
    assert "Needs 2 approval(s) from *sre, dba* (1/2): approved by <@U0SRE1>" in joined(blocks)
    assert len(actions_blocks(blocks)) == 1


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ({"reason": None}, "*Reason:* (none given)"),
        ({"reason": ""}, "*Reason:* (none given)"),
        ({"preview_lines": ()}, "(no preview)"),
        ({"rule": None}, "· rule ?"),
    ],
)
def test_pending_message_placeholders(overrides: dict[str, Any], expected: str) -> None:
    _, blocks = approval_message(make_view(**overrides))
    assert expected in joined(blocks)


def test_incident_channel_is_shown_for_incident_requests_only() -> None:
    _, blocks = approval_message(make_view(incident=True, origin_channel_id="C0INC42"))
    assert "*Incident channel:* <#C0INC42>" in texts(blocks)
    _, blocks = approval_message(make_view(incident=False, origin_channel_id="C0INC42"))
    assert "Incident channel" not in joined(blocks)


def test_builders_are_pure() -> None:
    view = make_view(approved_by=("U0SRE1",))
    before = copy.deepcopy(view)
    first = approval_message(view)
    second = approval_message(view)
    assert first == second
    assert view == before
    # The result does not share structure between calls: changing one leaves the other alone.
    first[1][0]["text"]["text"] = "changed"
    assert approval_message(view) == second


# --- decided requests --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "line"),
    [
        pytest.param(
            {"status": "succeeded", "decided_by": "U0SRE1", "result": "rollout restarted"},
            ":white_check_mark: Approved by <@U0SRE1>. Done: rollout restarted",
            id="succeeded",
        ),
        pytest.param(
            {"status": "failed", "decided_by": "U0SRE2", "error": "deployment not found"},
            ":x: Approved by <@U0SRE2>. *Failed*: deployment not found",
            id="failed",
        ),
        pytest.param(
            {"status": "unknown", "decided_by": "U0SRE2", "error": "no answer (restartedAt x)"},
            ":warning: Approved by <@U0SRE2>. *May have taken effect: check before retrying*: "
            "no answer (restartedAt x)",
            id="unknown",
        ),
        pytest.param(
            {"status": "denied", "decided_by": "U0SRE1"},
            ":no_entry: Denied by <@U0SRE1>. Nothing was changed.",
            id="denied",
        ),
        pytest.param(
            {"status": "cancelled", "decided_by": "U0DEV1", "error": "withdrawn"},
            ":heavy_multiplication_x: Cancelled by <@U0DEV1>: withdrawn. Nothing was changed.",
            id="cancelled",
        ),
        pytest.param(
            {"status": "cancelled", "decided_by": "opsgate"},
            ":heavy_multiplication_x: Cancelled. Nothing was changed.",
            id="cancelled-by-the-bot",
        ),
        pytest.param(
            {"status": "expired", "decided_by": "opsgate"},
            ":alarm_clock: Expired: nobody decided in time. Nothing was changed; ask again "
            "if needed.",
            id="expired",
        ),
        pytest.param(
            {"status": "succeeded", "decided_by": "opsgate", "result": "done"},
            ":white_check_mark: Approved. Done: done",
            id="auto-approved-succeeded",
        ),
    ],
)
def test_decided_message_has_no_buttons_and_says_who_and_what(
    overrides: dict[str, Any], line: str
) -> None:
    view = make_view(**overrides)
    text, blocks = approval_message(view)
    assert actions_blocks(blocks) == []
    assert not any(e.get("type") == "button" for b in blocks for e in b.get("elements", []))
    assert blocks[-1] == {"type": "section", "text": {"type": "mrkdwn", "text": line}}
    assert outcome_line(view) == line
    assert text.endswith(f": {view.status}")
    assert text.startswith("Request #12: restart deployment/payments-api")
    # What was asked stays visible after the decision.
    assert "*Reason:* memory leak" in texts(blocks)
    assert blocks[1]["text"]["text"].startswith("deployment/payments-api in payments")


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        ("pending", ":hourglass_flowing_sand: Waiting for approval."),
        # one state, not an "executing next / executing now" pair (issue 13)
        ("approved", ":gear: Approved by <@U0SRE1>; running."),
        ("executing", ":gear: Approved by <@U0SRE1>; running."),
    ],
)
def test_outcome_line_in_flight(status: str, expected: str) -> None:
    decided_by = None if status == "pending" else "U0SRE1"
    assert outcome_line(make_view(status=status, decided_by=decided_by)) == expected


@pytest.mark.parametrize("status", ["approved", "executing"])
def test_in_flight_message_has_no_buttons(status: str) -> None:
    _, blocks = approval_message(make_view(status=status, decided_by="U0SRE1"))
    assert actions_blocks(blocks) == []


# --- limits and fallbacks ----------------------------------------------------------------------

HUGE = "x" * 10_000


@pytest.mark.parametrize(
    "overrides",
    [
        pytest.param({"preview_lines": tuple(f"line {i}: {'y' * 80}" for i in range(500))}, id="p"),
        pytest.param({"preview_lines": (HUGE,)}, id="one-huge-line"),
        pytest.param({"reason": HUGE}, id="reason"),
        pytest.param({"target": HUGE}, id="target"),
        pytest.param({"rule": HUGE}, id="rule"),
        pytest.param({"status": "failed", "decided_by": "U1", "error": HUGE}, id="error"),
        pytest.param({"status": "succeeded", "decided_by": "U1", "result": HUGE}, id="result"),
    ],
)
def test_every_mrkdwn_text_is_at_most_3000_characters(overrides: dict[str, Any]) -> None:
    _, blocks = approval_message(make_view(**overrides))
    found = mrkdwn_texts(blocks)
    assert len(found) >= 4
    assert all(0 < len(t) <= 3000 for t in found)


def test_huge_preview_keeps_its_beginning() -> None:
    lines = tuple(f"line {i}" for i in range(2000))
    _, blocks = approval_message(make_view(preview_lines=lines))
    preview = blocks[1]["text"]["text"]
    assert len(preview) == 3000
    assert preview.startswith("line 0\nline 1\n")
    assert preview.endswith(" … (cut)")


@pytest.mark.parametrize(
    "status", ["pending", "approved", "executing", "succeeded", "failed", "denied", "cancelled"]
)
def test_text_fallback_is_not_empty(status: str) -> None:
    text, _ = approval_message(make_view(status=status, reason=None, preview_lines=()))
    assert text.strip()
    assert "Request #12" in text


# --- the requester's message and the thread ----------------------------------------------------


def test_requester_announcement_when_approval_is_needed() -> None:
    view = make_view(approver_groups=("sre", "dba"), min_approvals=2)
    assert requester_announcement(view) == (
        "<@U0DEV1> asked: Request #12: restart deployment/payments-api in payments (prod). "
        "Waiting for 2 approval(s) from sre, dba in <#C0APPROVALS>."
    )


def test_requester_announcement_names_the_approval_channel_before_the_message_exists() -> None:
    text = requester_announcement(make_view(approval=None))
    assert text.endswith("Waiting for 1 approval(s) from sre in <#C0APPROVALS>.")


def test_requester_announcement_without_an_approval_channel() -> None:
    text = requester_announcement(make_view(approval=None, approval_channel=None))
    assert text.endswith("Waiting for 1 approval(s) from sre.")
    assert "<#" not in text


def test_requester_announcement_when_auto_approved() -> None:
    view = make_view(min_approvals=0, approver_groups=(), approval=None, rule="rules[0] (line 9)")
    text = requester_announcement(view)
    assert text == (
        "<@U0DEV1> asked: Request #12: restart deployment/payments-api in payments (prod). "
        "Approved automatically by policy (rules[0] (line 9))."
    )
    assert "Waiting" not in text


def test_thread_update_approval_added_names_the_latest_approver() -> None:
    view = make_view(min_approvals=2, approved_by=("U0SRE1", "U0SRE2"))
    assert thread_update(view, "approval_added", actor="U0OTHER") == (
        "<@U0SRE2> approved request #12 (2/2)."
    )
    view = make_view(min_approvals=2, approved_by=("U0SRE1",))
    assert thread_update(view, "approval_added") == "<@U0SRE1> approved request #12 (1/2)."


def test_thread_update_approval_added_falls_back_to_the_actor() -> None:
    assert thread_update(make_view(), "approval_added", actor="U0SRE1") == (
        "<@U0SRE1> approved request #12 (0/1)."
    )


@pytest.mark.parametrize("event", ["denied", "succeeded", "failed", "unknown"])
def test_thread_update_other_events_show_the_outcome(event: str) -> None:
    view = make_view(status=event, decided_by="U0SRE1", result="ok", error="boom")
    assert thread_update(view, event) == f"Request #12: {outcome_line(view)}"
    assert "<@U0SRE1>" in thread_update(view, event)


def test_error_message() -> None:
    assert error_message("Unknown command `x`.") == ":warning: Unknown command `x`."


def test_escalation_mentions_the_usergroups_and_the_people_of_its_group() -> None:
    view = make_view(
        escalate_to="oncall", escalate_users=("U0ONCALL",), escalate_usergroups=("S0PAGER",)
    )
    text = thread_update(view, "escalated")
    assert text.startswith(":mega: <!subteam^S0PAGER> <@U0ONCALL>: request #12 has waited")


def test_escalation_to_a_group_nobody_resolves_names_the_group() -> None:
    text = thread_update(make_view(escalate_to="oncall"), "escalated")
    assert text.startswith(":mega: *oncall*: request #12")


def test_the_announcement_says_a_freeze_chose_the_approvers() -> None:
    text = requester_announcement(make_view(freeze="year-end"))
    assert text.endswith("from sre in <#C0APPROVALS> (change freeze year-end).")
    _, blocks = approval_message(make_view(freeze="year-end"))
    assert "change freeze *year-end* in force" in joined(blocks)


def test_a_multi_step_request_shows_each_step_and_what_is_still_needed() -> None:
    view = make_view(
        min_approvals=2,
        approver_groups=("sre", "security"),
        approved_by=("U0SRE1",),
        steps=(
            StepView(("sre",), 1, ("U0SRE1",)),
            StepView(("security",), 1),
        ),
    )
    _, blocks = approval_message(view)
    assert (
        "Needs :white_check_mark: 1 from *sre* (1/1: <@U0SRE1>) and 1 from *security* (0/1)"
        in joined(blocks)
    )
    assert requester_announcement(view).endswith(
        "Waiting for 1 more from security in <#C0APPROVALS>."
    )
    assert thread_update(view, "approval_added") == (
        "<@U0SRE1> approved request #12 (1/2); still needed: 1 more from security."
    )


def test_the_break_glass_notice_asks_for_review_until_someone_acknowledges() -> None:
    view = make_view(break_glass=True, policy_sha256="ab" * 32)
    text, blocks = break_glass_notice(view)
    assert text.startswith(":rotating_light: BREAK-GLASS by <@U0DEV1>: Request #12: restart")
    (actions,) = actions_blocks(blocks)
    assert [(b["action_id"], b["value"]) for b in actions["elements"]] == [
        (ACKNOWLEDGE_ACTION, "12")
    ]
    assert "policy abababababab" in joined(blocks)

    text, blocks = break_glass_notice(make_view(break_glass=True, reviewed_by="U0SRE1"))
    assert actions_blocks(blocks) == []
    assert text.endswith("(reviewed by <@U0SRE1>)")
    assert ":white_check_mark: Reviewed by <@U0SRE1>." in joined(blocks)


def test_titles_read_as_plain_words() -> None:
    """Issue 13: what the request does, where, without the kind's own phrasing repeated."""
    assert title(make_view()) == "Request #12: restart deployment/payments-api in payments (prod)"
    access = make_view(action="access", target="view access to payments")
    assert title(access) == "Request #12: access: view in payments (prod)"
    scale = make_view(
        action="scale",
        target="statefulset/db",
        preview_lines=("Scale *statefulset/db* in namespace *payments*: *3 -> 5* replicas",),
    )
    assert title(scale) == "Request #12: scale statefulset/db 3 → 5 in payments (prod)"
    # a scale whose preview says nothing of replicas keeps the plain form
    assert title(make_view(action="scale", target="statefulset/db", preview_lines=())) == (
        "Request #12: scale statefulset/db in payments (prod)"
    )


def test_absolute_times_use_slacks_date_formatting() -> None:
    """Each reader sees the time in their own time zone; the fallback is UTC."""
    moment = datetime(2026, 11, 21, 5, 0, tzinfo=UTC)
    assert slack_date(moment) == (
        "<!date^1795237200^{date_short_pretty} {time}|2026-11-21 05:00 UTC>"
    )


def test_the_requester_message_reads_as_the_request_stands() -> None:
    pending = make_view(approval=None)
    assert requester_message(pending) == requester_announcement(pending)
    running = make_view(status="executing", decided_by="U0SRE1")
    assert requester_message(running) == (
        "<@U0DEV1> asked: Request #12: restart deployment/payments-api in payments (prod)\n"
        ":gear: Approved by <@U0SRE1>; running."
    )
    active = make_view(status="active", decided_by="U0SRE1", result=None)
    assert "None" not in requester_message(active)
    assert outcome_line(active) == ":key: Approved by <@U0SRE1>. Active."
    done = make_view(status="succeeded", decided_by="U0SRE1", result="restarted")
    assert audit_line(done) == (
        "[audit] Request #12: restart deployment/payments-api in payments (prod), asked by "
        "<@U0DEV1>: :white_check_mark: Approved by <@U0SRE1>. Done: restarted"
    )
