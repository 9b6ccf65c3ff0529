"""The grant Block Kit builders: pure functions, asserted on their output."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from bot import grant_blocks
from bot.blocks import APPROVE_ACTION, DENY_ACTION
from tests.helpers.grant_views import NOW, grant, request


def buttons(blocks: list[dict[str, Any]]) -> list[tuple[str, str]]:
    return [
        (element["action_id"], element["value"])
        for block in blocks
        if block["type"] == "actions"
        for element in block["elements"]
    ]


def test_the_reminder_carries_extend_and_end_now_with_the_grant_id_only() -> None:
    text, blocks = grant_blocks.reminder_message(grant(), NOW)
    assert text == "Grant #12: edit in payments (prod) ends in 20m (2026-11-21 05:00 UTC)"
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
            ":key: Grant #12: edit in payments (prod) has started: *edit* in *payments* as "
            "alice@example.com and Vault group prod-edit, until 2026-11-21 05:00 UTC (2h).",
            True,
        ),
        (
            "extended",
            {"vault_group": None},
            ":hourglass: Grant #12: edit in payments (prod) was extended: it now ends "
            "2026-11-21 05:00 UTC (20m left).",
            True,
        ),
        (
            "revoked",
            {"status": "revoked", "revoke_reason": "revoked early by <@U0SRE1>: done"},
            ":lock: Grant #12: edit in payments (prod) was ended early: "
            "revoked early by <@U0SRE1>: done.",
            False,
        ),
        (
            "expired",
            {"status": "revoked", "revoke_reason": "expired"},
            ":lock: Grant #12: edit in payments (prod) has expired; the access is removed.",
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
        "prod-edit: ends 2026-11-21 05:00 UTC (20m left)",
        "• *#13* <@U0DEV2> *edit* in *payments* as alice@example.com: ends 2026-11-21 05:00 UTC "
        "(20m left)",
    ]
    overdue = grant_blocks.grants_list([grant()], NOW + timedelta(hours=1))
    assert overdue.endswith("(ending)")


def test_home_view() -> None:
    view = grant_blocks.home_view([grant()], [request(30, "U0DEV1")], [request(31)], NOW)
    assert view["type"] == "home"
    texts = str(view["blocks"])
    assert "20m left" in texts
    assert "Request #30" in texts
    assert "asked by <@U0DEV2> — debugging INC-7" in texts
    assert buttons(view["blocks"]) == [
        ("grant_extend", "12"),
        ("grant_end", "12"),
        (APPROVE_ACTION, "31"),
        (DENY_ACTION, "31"),
    ]
    headers = [b["text"]["text"] for b in view["blocks"] if b["type"] == "header"]
    assert headers == ["Your access grants", "Your pending requests", "Waiting on your approval"]

    empty = grant_blocks.home_view([], [], [], NOW)
    headers = [b["text"]["text"] for b in empty["blocks"] if b["type"] == "header"]
    assert headers == ["Your access grants", "Your pending requests"]
    assert buttons(empty["blocks"]) == []
    assert "/ops access <namespace>" in str(empty["blocks"])


def test_home_view_stays_within_slacks_100_blocks() -> None:
    many = [grant(id=i) for i in range(80)]
    view = grant_blocks.home_view(many, [request(i) for i in range(80)], [], NOW)
    assert len(view["blocks"]) <= 100


def test_a_full_home_view_keeps_every_section_and_its_footer() -> None:
    many = [grant(id=i) for i in range(80)]
    requests = [request(i) for i in range(80)]
    view = grant_blocks.home_view(many, requests, requests, NOW)
    blocks = view["blocks"]
    assert len(blocks) <= 100
    headers = [b["text"]["text"] for b in blocks if b["type"] == "header"]
    assert headers == ["Your access grants", "Your pending requests", "Waiting on your approval"]
    # each section is capped, so the list is not merely cut at 100 blocks
    assert blocks[-1]["elements"][0]["text"] == "Updated 2026-11-21 04:40 UTC"
    assert len(buttons(blocks)) == 4 * grant_blocks.HOME_MAX_ITEMS
    decisions = [b for b in blocks if b.get("block_id", "").startswith("home_decision_")]
    assert [b["block_id"] for b in decisions[:2]] == ["home_decision_0", "home_decision_1"]
