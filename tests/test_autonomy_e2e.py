"""End to end through real HTTP: an agent earns autonomy (issue 12).

Five restarts filed with the agent's token, each approved by a person with a signed Slack click
and succeeded; the sixth is approved by opsgate on earned autonomy and posted to the approval
channel as a notice with "Undo / require approval again"; a person's click on Undo puts the
agent back to needing approval (the agent's own click is refused).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from bot.autonomy_blocks import UNDO_ACTION
from bot.blocks import APPROVE_ACTION
from bot.settings import Settings
from tests.fakes import slack
from tests.helpers.api import RESTART, call, store
from tests.helpers.bot import RunningBot, buttons, running_bot, wait_for

POLICY = """\
version: 1
approval_channel: C0APPROVALS
audit_channel: C0AUDIT

groups:
  sre: {users: [U0SRE1, U0SRE2]}

agents:
  U0DEPLOYBOT: {name: deploy-bot}

environments:
  prod: {kube_context: prod, namespaces: [payments, checkout]}

rules:
  - name: prod restarts
    match: {action: restart, environment: prod}
    approvers: [sre]
    autonomy: {after_approved: 5, within: 30d, reset_on: [failed, denied]}
"""


@pytest.fixture
def policy_text() -> str:
    return POLICY


@pytest.fixture
def served(settings: Settings, fake_slack: slack.FakeSlack) -> Iterator[tuple[RunningBot, str]]:
    with running_bot(settings, fake_slack) as bot:
        token, _ = store(settings).create(
            subject_id="U0DEPLOYBOT", subject_kind="agent", name="deploy-bot"
        )
        yield bot, token


def file(bot: RunningBot, token: str) -> dict[str, Any]:
    filed = call(bot, "POST", "/requests", token, json=RESTART)
    assert filed.status_code == 201, filed.text
    answer: dict[str, Any] = filed.json()
    return answer


def settled(bot: RunningBot, token: str, request_id: int) -> dict[str, Any]:
    waited = call(bot, "GET", f"/requests/{request_id}", token, params={"wait": 30})
    answer: dict[str, Any] = waited.json()
    return answer


def notices(bot: RunningBot) -> list[slack.Call]:
    return [
        c
        for c in bot.fake_slack.calls_of("chat.postMessage")
        if UNDO_ACTION in buttons(c) and c.args["channel"] == "C0APPROVALS"
    ]


def click_undo(bot: RunningBot, notice: slack.Call, user: str) -> None:
    body = slack.block_action_body(
        UNDO_ACTION,
        buttons(notice)[UNDO_ACTION],
        user_id=user,
        channel_id=str(notice.response["channel"]),
        message_ts=str(notice.response["ts"]),
        response_url=bot.fake_slack.response_url(),
    )
    assert bot.post(body).status_code == 200


def test_five_approved_successes_then_the_sixth_on_autonomy_then_undo(
    served: tuple[RunningBot, str],
) -> None:
    bot, token = served
    for _ in range(5):
        request = file(bot, token)
        assert request["status"] == "pending"
        bot.click(APPROVE_ACTION, str(request["id"]), user="U0SRE1")
        assert settled(bot, token, request["id"])["status"] == "succeeded"
    explained = call(bot, "POST", "/explain", token, json=RESTART).json()
    assert explained["outcome"] == "auto"
    assert explained["reason"] == "earned_autonomy"
    assert "5 of 5 approved successes" in explained["message"]

    sixth = file(bot, token)
    assert sixth["status"] != "pending"
    assert sixth["approval"]["needed"] is False
    done = settled(bot, token, sixth["id"])
    assert done["status"] == "succeeded"
    assert done["decided_by"] == "opsgate"
    notice = wait_for(lambda: notices(bot), what="the earned-autonomy notice")[0]
    assert "agent *deploy-bot* (<@U0DEPLOYBOT>)" in notice.args["text"]
    assert "earned autonomy" in notice.args["text"]

    click_undo(bot, notice, "U0DEPLOYBOT")  # the agent itself: refused, answered alone
    wait_for(
        lambda: [
            c
            for c in bot.fake_slack.calls_of("chat.postEphemeral")
            if c.args["user"] == "U0DEPLOYBOT"
        ],
        what="the refusal",
    )
    assert file(bot, token)["status"] != "pending"  # still autonomous

    click_undo(bot, notice, "U0SRE2")
    wait_for(
        lambda: [
            c
            for c in bot.fake_slack.calls_of("chat.update")
            if "took this autonomy back" in c.args.get("text", "")
        ],
        what="the notice to say who took the autonomy back",
    )
    again = file(bot, token)
    assert again["status"] == "pending"
    assert again["approval"]["needed"] is True
