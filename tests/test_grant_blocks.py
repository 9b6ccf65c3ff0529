"""The grant Block Kit builders: pure functions, asserted on their output."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from bot import grant_blocks
from bot.blocks import APPROVE_ACTION, DENY_ACTION
from tests.helpers.grant_views import NOW, grant, request

TITLE = "Grant #12: access: edit in payments (prod) for 2h as alice@example.com"
ENDS = "<!date^1795237200^{date_short_pretty} {time}|2026-11-21 05:00 UTC>"
"""Grant #12's end, in Slack's date formatting (issue 13)."""


def buttons(blocks: list[dict[str, Any]]) -> list[tuple[str, str]]:
    return [
        (element["action_id"], element["value"])
        for block in blocks
        if block["type"] == "actions"
        for element in block["elements"]
    ]


def test_the_reminder_carries_extend_and_end_now_with_the_grant_id_only() -> None:
    text, blocks = grant_blocks.reminder_message(grant(), NOW)
    # issue 13: the title says what, where, how long and as whom; the end in the reader's zone
    assert text == f"{TITLE} ends in 20m ({ENDS})"
    assert buttons(blocks) == [("grant_extend", "12"), ("grant_end", "12")]
    assert grant_blocks.EXTEND_ACTION == "grant_extend"
    assert grant_blocks.END_ACTION == "grant_end"
    assert "extended by at most 2h" in str(blocks)
    end = blocks[-1]["elements"][1]
    assert end["style"] == "danger"
    assert end["confirm"]["confirm"]["text"] == "End now"

    _, capped = grant_blocks.reminder_message(grant(duration_seconds=4 * 3600), NOW)
    assert "cannot be extended further" in str(capped)
    _, unlimited = grant_blocks.reminder_message(grant(max_duration_seconds=None), NOW)
    assert "at most" not in str(unlimited)


@pytest.mark.parametrize(
    ("event", "kw", "expected", "has_buttons"),
    [
        (
            "started",
            {},
            f":key: {TITLE} has started (with Vault group prod-edit): it ends {ENDS}.",
            True,
        ),
        (
            "extended",
            {"vault_group": None},
            f":hourglass: {TITLE} was extended: it now ends {ENDS} (20m left).",
            True,
        ),
        (
            "revoked",
            {"status": "revoked", "revoke_reason": "revoked early by <@U0SRE1>: done"},
            f":lock: {TITLE} was ended early: revoked early by <@U0SRE1>: done.",
            False,
        ),
        (
            "expired",
            {"status": "revoked", "revoke_reason": "expired"},
            f":lock: {TITLE} has expired; the access is removed.",
            False,
        ),
        (
            "drift_removed",
            {"status": "drift", "revoke_reason": "drift: no grant matches it"},
            ":warning: Drift: RoleBinding payments/opsgate-grant-12 was removed "
            "(drift: no grant matches it).",
            False,
        ),
    ],
)
def test_notices(event: str, kw: dict[str, Any], expected: str, has_buttons: bool) -> None:
    text, blocks = grant_blocks.grant_notice(grant(**kw), event, NOW)
    assert text == expected
    assert blocks[0]["text"]["text"] == expected
    assert bool(buttons(blocks)) is has_buttons


def test_the_reminder_notice_is_the_reminder_message() -> None:
    assert grant_blocks.grant_notice(grant(), "reminder", NOW) == grant_blocks.reminder_message(
        grant(), NOW
    )


def test_grants_list() -> None:
    assert grant_blocks.grants_list([], NOW) == "You have no active grants."
    assert grant_blocks.grants_list([], NOW, everyone=True) == "There are no active grants."
    text = grant_blocks.grants_list(
        [grant(), grant(id=13, grantee_id="U0DEV2", vault_group=None, environment=None)],
        NOW,
        everyone=True,
    )
    assert text.splitlines() == [
        "Active grants:",
        "• *#12* <@U0DEV1> *edit* in *payments* (prod) as alice@example.com, Vault group "
        f"prod-edit: ends {ENDS} (20m left)",
        f"• *#13* <@U0DEV2> *edit* in *payments* as alice@example.com: ends {ENDS} (20m left)",
    ]
    overdue = grant_blocks.grants_list([grant()], NOW + timedelta(hours=1))
    assert overdue.endswith("(ending)")


HEADERS = [
    "Waiting on your approval",
    "Your pending requests",
    "Your access grants",
    "Your last 10 requests",
]


def test_home_view() -> None:
    view = grant_blocks.home_view([grant()], [request(30, "U0DEV1")], [request(31)], NOW)
    assert view["type"] == "home"
    texts = str(view["blocks"])
    assert "20m left" in texts
    assert "Request #30" in texts
    assert "asked by <@U0DEV2> — debugging INC-7" in texts
    # issue 13: what waits on me comes first
    assert buttons(view["blocks"]) == [
        (APPROVE_ACTION, "31"),
        (DENY_ACTION, "31"),
        (DENY_ACTION, "30"),  # Cancel: a requester's Deny withdraws their own request
        ("grant_extend", "12"),
        ("grant_end", "12"),
    ]
    headers = [b["text"]["text"] for b in view["blocks"] if b["type"] == "header"]
    assert headers == HEADERS

    empty = grant_blocks.home_view([], [], [], NOW)
    headers = [b["text"]["text"] for b in empty["blocks"] if b["type"] == "header"]
    assert headers == HEADERS
    assert buttons(empty["blocks"]) == []
    assert "/ops access <namespace>" in str(empty["blocks"])


def test_home_view_stays_within_slacks_100_blocks() -> None:
    many = [grant(id=i) for i in range(80)]
    view = grant_blocks.home_view(many, [request(i) for i in range(80)], [], NOW)
    assert len(view["blocks"]) <= 100


def test_a_full_home_view_keeps_every_section_and_its_footer() -> None:
    many = [grant(id=i) for i in range(80)]
    requests = [request(i) for i in range(80)]
    view = grant_blocks.home_view(many, requests, requests, NOW, recent=requests)
    blocks = view["blocks"]
    assert len(blocks) <= 100
    headers = [b["text"]["text"] for b in blocks if b["type"] == "header"]
    assert headers == HEADERS
    # each section is capped, so the list is not merely cut at 100 blocks
    assert blocks[-1]["elements"][0]["text"] == (
        "Updated <!date^1795236000^{date_short_pretty} {time}|2026-11-21 04:40 UTC>"
    )
    # Approve and Deny, Cancel, Extend and End now: ten of each
    assert len(buttons(blocks)) == 5 * grant_blocks.HOME_MAX_ITEMS
    decisions = [b for b in blocks if b.get("block_id", "").startswith("home_decision_")]
    assert [b["block_id"] for b in decisions[:2]] == ["home_decision_0", "home_decision_1"]
