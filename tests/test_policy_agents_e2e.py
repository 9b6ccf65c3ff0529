"""End to end: automation asks opsgate through Slack (issue 6, item 7).

An agent is a bot the policy lists under ``agents`` (by bot user ID, bot ID or app ID). It asks
by posting a message that mentions opsgate; Slack delivers an ``app_mention`` event carrying its
``bot_id`` (and ``app_id``/``bot_profile``, and for a bot user its ``user``). The same rules
apply to it as to people, it is answered in the thread (a bot cannot read ephemeral messages),
its click never counts, and a bot the policy does not list is ignored.
"""

from __future__ import annotations

from typing import Any

import pytest

from approvals.models import AuditEvent, Request
from bot.settings import Settings
from tests.fakes import slack
from tests.fakes.kube import FakeKubernetes
from tests.helpers.bot import RunningBot, wait_for
from tests.helpers.policy import POLICY as BASE_POLICY
from tests.helpers.policy import policy
from tests.helpers.slack_flow import (
    RESTARTED_AT,
    annotations,
    ephemerals_to,
    patches,
    request_status,
    rows,
)

POLICY = policy(
    """\
  - name: bots restart staging
    match: {action: restart, environment: staging, requester_kind: agent, requesters: [bots]}
    approval: auto
  - name: automation scales nothing
    match: {action: scale, requester_kind: agent}
    deny: "automation may not scale; ask a person"
  - name: prod restarts
    match: {action: restart, environment: prod}
    approvers: [sre]
""",
    settings={"incident_channels": None},
    groups={"security": None, "bots": "{users: [U0DEPLOYBOT]}"},
    agents={"U0DEPLOYBOT": "{name: deploy-bot}", "B0ALERTS": "{name: alertmanager}"},
    environments={"sandbox": None},
)
assert BASE_POLICY.startswith("version: 1")


@pytest.fixture
def policy_path(tmp_path: Any) -> Any:
    path = tmp_path / "policy.yml"
    path.write_text(POLICY)
    return path


@pytest.fixture(autouse=True)
def channels(fake_slack: slack.FakeSlack) -> None:
    fake_slack.channels.update({"C0DEV": "dev"})


def bot_mention(
    bot: RunningBot, text: str, *, bot_id: str, app_id: str, user: str | None = None
) -> dict[str, Any]:
    """A signed ``app_mention`` of opsgate in C0DEV, posted by a bot (``bot_id``, ``app_id``;
    ``user`` is the bot user, absent for a legacy bot or an incoming webhook)."""
    event = slack.app_mention_event(text, user=user or "", channel="C0DEV")
    if user is None:
        del event["user"]
        event["subtype"] = "bot_message"
    event |= {"bot_id": bot_id, "app_id": app_id, "bot_profile": {"id": bot_id, "app_id": app_id}}
    assert bot.post(slack.event_callback_body(event)).status_code == 200
    return event


def approvals(bot: RunningBot) -> list[slack.Call]:
    return [c for c in bot.fake_slack.calls_of("chat.postMessage") if c.args.get("blocks")]


def thread_posts(fake: slack.FakeSlack, ts: str) -> list[str]:
    return [
        c.args["text"]
        for c in fake.calls_of("chat.postMessage")
        if c.args["channel"] == "C0DEV" and c.args.get("thread_ts") == ts
    ]


def test_an_alerting_bot_asks_and_a_person_approves(
    bot: RunningBot, kube: FakeKubernetes, settings: Settings
) -> None:
    bot_mention(
        bot,
        'restart payments-api -n payments --reason "error rate above 5% for 10m"',
        bot_id="B0ALERTS",
        app_id="A0ALERTMANAGER",
    )
    [request] = wait_for(lambda: rows(settings, Request), timeout=5, what="the request")
    assert (request.requester_id, request.requester_kind) == ("B0ALERTS", "agent")
    assert request.status == "pending"
    [submitted] = rows(settings, AuditEvent)
    assert (submitted.actor_id, submitted.actor_kind) == ("B0ALERTS", "agent")
    wait_for(lambda: approvals(bot), what="the approval message")
    bot.click("approve", "1", user="U0SRE1")
    wait_for(lambda: request_status(settings) == "succeeded", what="the restart")
    assert RESTARTED_AT in annotations(kube, "payments", "payments-api")


def test_the_same_rules_apply_and_the_agent_is_answered_in_the_thread(
    bot: RunningBot, kube: FakeKubernetes, settings: Settings
) -> None:
    event = bot_mention(
        bot, "scale payments-api 5 -n payments", bot_id="B0ALERTS", app_id="A0ALERTMANAGER"
    )
    [answer] = wait_for(
        lambda: thread_posts(bot.fake_slack, event["ts"]), timeout=5, what="the answer"
    )
    assert "Not allowed: automation may not scale; ask a person" in answer
    assert bot.fake_slack.calls_of("chat.postEphemeral") == []
    assert rows(settings, Request) == []
    [rejected] = rows(settings, AuditEvent)
    assert (rejected.event, rejected.actor_kind) == ("rejected", "agent")
    assert patches(kube) == []


def test_a_listed_bot_user_restarts_staging_at_once_and_never_approves(
    bot: RunningBot, kube: FakeKubernetes, settings: Settings
) -> None:
    bot_mention(
        bot,
        "restart web -n staging-web",
        bot_id="B0DEPLOY",
        app_id="A0DEPLOY",
        user="U0DEPLOYBOT",
    )
    wait_for(lambda: request_status(settings) == "succeeded", timeout=5, what="the restart")
    assert rows(settings, Request)[0].rule == "rules[0] 'bots restart staging' (line 18)"
    assert RESTARTED_AT in annotations(kube, "staging-web", "web")

    # a person's prod restart: the deploy bot's click (as its bot user) never counts
    bot.command("restart payments-api -n payments")
    wait_for(lambda: len(rows(settings, Request)) == 2 and approvals(bot), what="the approval")
    bot.click("approve", "2", user="U0DEPLOYBOT")
    [refused] = wait_for(lambda: ephemerals_to(bot.fake_slack, "U0DEPLOYBOT"))
    assert "Automation cannot approve or deny requests" in refused
    assert request_status(settings, 2) == "pending"


def test_a_bot_the_policy_does_not_list_is_ignored(
    bot: RunningBot, kube: FakeKubernetes, settings: Settings
) -> None:
    event = bot_mention(
        bot, "restart web -n staging-web", bot_id="B0RANDOM", app_id="A0RANDOM", user="U0RANDOM"
    )
    # a person's request afterwards is handled; the bot's event made nothing
    bot.command("restart payments-api -n payments", user="U0DEV1")
    wait_for(lambda: approvals(bot), timeout=5, what="the approval message")
    assert [r.requester_id for r in rows(settings, Request)] == ["U0DEV1"]
    assert [(e.event, e.actor_id) for e in rows(settings, AuditEvent)] == [("submitted", "U0DEV1")]
    assert patches(kube) == []
    assert thread_posts(bot.fake_slack, event["ts"]) == []
    assert bot.fake_slack.calls_of("chat.postEphemeral") == []
