"""The App Home (issue 13): built with a fixed number of SQL statements whatever the number of
pending requests, paginated within Slack's 100 blocks, through the fake Slack over real HTTP."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

import pytest
from slack_sdk import WebClient
from sqlalchemy import Engine, create_engine

from approvals.gate import Gate
from approvals.policy import parse_policy
from bot import grant_blocks
from bot.listeners.events import publish_home
from bot.settings import Settings
from tests.fakes import slack
from tests.helpers.access import POLICY as ACCESS_POLICY
from tests.helpers.bot import RunningBot, wait_for
from tests.helpers.bulk import counting, seed_pending
from tests.helpers.clock import Clock
from tests.helpers.gate import RecordingNotifier, built_gate
from tests.helpers.slack_flow import request_status

World = tuple[Gate, RecordingNotifier, Clock, Engine]


@pytest.fixture
def gate_world(database_url: str) -> Iterator[World]:
    """A gate under the access policy on the migrated database, with a recording notifier."""
    clock = Clock()
    notifier = RecordingNotifier()
    loaded = parse_policy(ACCESS_POLICY)
    with built_gate(
        database_url, policy=lambda: loaded, notifier=notifier, clock=clock, actions={}
    ) as built:
        yield built.gate, notifier, clock, built.engine


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
    assert action_ids(view).count("approve") == 10
    decisions = [b for b in view["blocks"] if b.get("block_id", "").startswith("home_decision_")]
    assert len(decisions) == 10
    # my own 3 pending requests, each with Cancel (a requester's Deny withdraws it)
    cancels = [b for b in view["blocks"] if b.get("block_id", "").startswith("home_cancel_")]
    assert [b["elements"][0]["text"]["text"] for b in cancels] == ["Cancel"] * 3
    assert action_ids(view).count("deny") == 10 + 3
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


def home_click(action_id: str, value: str, *, user: str) -> str:
    """The body Slack posts for a click on a button of the App Home tab: a ``view`` container,
    no channel, no message."""
    payload = slack.block_action_payload(
        action_id, value, user_id=user, channel_id="-", message_ts="-", response_url="-"
    )
    for key in ("channel", "message", "response_url"):
        del payload[key]
    payload["container"] = {"type": "view", "view_id": "V0HOME"}
    payload["view"] = {"id": "V0HOME", "type": "home", "blocks": []}
    return urlencode({"payload": json.dumps(payload)})


def test_next_page_and_cancel_are_clicked_in_the_app_home_end_to_end(
    bot: RunningBot, settings: Settings
) -> None:
    engine = create_engine(settings.database_url)
    try:
        seed_pending(engine, 15, datetime.now(UTC), approvers=lambda i: ["U0SRE1"])
    finally:
        engine.dispose()
    # Next: the second page of what waits on U0SRE1
    assert bot.post(home_click("home_page_next", "2", user="U0SRE1")).status_code == 200
    call = wait_for(lambda: bot.fake_slack.calls_of("views.publish"), what="views.publish")[-1]
    assert call.args["user_id"] == "U0SRE1"
    view = call.args["view"]
    view = json.loads(view) if isinstance(view, str) else view
    assert "Showing 11 to 15 of 15 requests waiting on you" in texts(view)
    assert "home_page_prev" in action_ids(view)
    # Cancel on my own pending request (the Deny action of its requester) withdraws it
    assert bot.post(home_click("deny", "3", user="U0DEV1")).status_code == 200
    wait_for(lambda: request_status(settings, 3) == "cancelled", what="the cancellation")
    assert request_status(settings, 4) == "pending"


@pytest.mark.parametrize("value", ["x", "0", "-1", "100000", ""])
def test_a_page_button_that_names_no_page_is_ignored_and_logged(
    bot: RunningBot, caplog: pytest.LogCaptureFixture, value: str
) -> None:
    caplog.set_level(logging.WARNING, logger="bot.listeners.events")
    assert bot.post(home_click("home_page_next", value, user="U0SRE1")).status_code == 200
    wait_for(lambda: "App Home page click without a user or a page" in caplog.text)
    assert bot.fake_slack.calls_of("views.publish") == []
