"""The App Home (issue 13): built with a fixed number of SQL statements whatever the number of
pending requests, paginated within Slack's 100 blocks, through the fake Slack over real HTTP."""

from __future__ import annotations

import json
from typing import Any

from slack_sdk import WebClient
from sqlalchemy import Engine

from approvals.gate import Gate
from bot import grant_blocks
from bot.listeners.events import publish_home
from tests.fakes import slack
from tests.test_gate import Clock, RecordingNotifier
from tests.test_scale import counting, gate_world, seed_pending

__all__ = ["gate_world"]  # the fixture, shared with tests/test_scale.py

World = tuple[Gate, RecordingNotifier, Clock, Engine]


def published(fake: slack.FakeSlack) -> dict[str, Any]:
    view = fake.calls_of("views.publish")[-1].args["view"]
    return dict(json.loads(view) if isinstance(view, str) else view)


def texts(view: dict[str, Any]) -> str:
    return json.dumps(view["blocks"])


def action_ids(view: dict[str, Any]) -> list[str]:
    return [
        element["action_id"]
        for block in view["blocks"]
        if block["type"] == "actions"
        for element in block["elements"]
    ]


def test_the_app_home_reads_a_fixed_number_of_statements_with_5000_pending(
    gate_world: World, fake_slack: slack.FakeSlack
) -> None:
    gate, _, clock, engine = gate_world
    client = WebClient(token=slack.BOT_TOKEN, base_url=fake_slack.api_url)
    seed_pending(engine, 50, clock.now, approvers=lambda i: ["U0SRE1"])
    seed_pending(engine, 3, clock.now, requester=lambda i: "U0SRE1")
    with counting(engine) as few:
        publish_home(gate, client, "U0SRE1")
    seed_pending(engine, 5_000, clock.now, approvers=lambda i: ["U0SRE1"])
    with counting(engine) as many:
        publish_home(gate, client, "U0SRE1")
    assert len(many) == len(few), many
    assert len(many) <= 12, many

    view = published(fake_slack)
    assert view["type"] == "home"
    assert len(view["blocks"]) <= 100
    # what waits on me, with Approve / Deny, ten at a time, and the way to the next ten
    assert action_ids(view).count("approve") == action_ids(view).count("deny") == 10
    assert "Showing 1 to 10 of 5,050 requests waiting on you, oldest first." in texts(view)
    assert "home_page_next" in action_ids(view)
    assert "home_page_prev" not in action_ids(view)
    # my pending requests and my last 10 requests
    for heading in ("Your pending requests", "Your access grants", "Your last 10 requests"):
        assert heading in texts(view)
    assert texts(view).count("Request #") >= 10 + 3 + 3


def test_the_app_home_pages_through_what_waits_on_me(
    gate_world: World, fake_slack: slack.FakeSlack
) -> None:
    gate, _, clock, engine = gate_world
    client = WebClient(token=slack.BOT_TOKEN, base_url=fake_slack.api_url)
    ids = seed_pending(engine, 25, clock.now, approvers=lambda i: ["U0SRE1"])
    publish_home(gate, client, "U0SRE1", page=3)
    view = published(fake_slack)
    shown = [int(b["elements"][0]["value"]) for b in view["blocks"] if b["type"] == "actions"]
    assert shown[:5] == ids[20:]
    assert "Showing 21 to 25 of 25" in texts(view)
    assert "home_page_prev" in action_ids(view)
    assert "home_page_next" not in action_ids(view)
    # a page past the end (the list shrank under the user) shows the last one
    publish_home(gate, client, "U0SRE1", page=9)
    assert "Showing 21 to 25 of 25" in texts(published(fake_slack))


def test_an_empty_app_home_says_so() -> None:
    view = grant_blocks.home_view([], [], [], Clock().now)
    text = texts(view)
    for empty in ("Nothing waits on you.", "Nothing pending.", "No active grants."):
        assert empty in text
    assert "You have not asked for anything yet." in text
