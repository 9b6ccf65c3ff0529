"""The Slack notifier against the fake Slack Web API: where the break-glass notice goes when the
audit channel refuses it."""

from __future__ import annotations

from dataclasses import replace

from slack_sdk import WebClient

from approvals.policy import parse_policy
from bot.notifier import SlackNotifier
from tests.conftest import POLICY
from tests.fakes import slack
from tests.test_blocks import make_view


def notifier(fake: slack.FakeSlack) -> SlackNotifier:
    loaded = parse_policy(POLICY)
    client = WebClient(token=slack.BOT_TOKEN, base_url=fake.api_url)
    return SlackNotifier(client, lambda: loaded)


def test_the_break_glass_notice_goes_to_the_audit_channel(fake_slack: slack.FakeSlack) -> None:
    view = replace(make_view(), break_glass=True, min_approvals=0)
    ref = notifier(fake_slack).review_opened(view)
    [post] = fake_slack.calls_of("chat.postMessage")
    assert post.args["channel"] == "C0AUDIT"
    assert ref is not None
    assert ref.channel_id == "C0AUDIT"
    assert "BREAK-GLASS" in post.args["text"]


def test_a_refused_break_glass_notice_falls_back_to_the_approval_channel(
    fake_slack: slack.FakeSlack,
) -> None:
    fake_slack.fail("chat.postMessage", "not_in_channel", channel="C0AUDIT")
    view = replace(make_view(), break_glass=True, min_approvals=0)
    ref = notifier(fake_slack).review_opened(view)
    assert [c.args["channel"] for c in fake_slack.calls_of("chat.postMessage")] == [
        "C0AUDIT",
        "C0APPROVALS",
    ]
    assert ref is not None
    assert ref.channel_id == "C0APPROVALS"


def test_no_channel_takes_the_notice(fake_slack: slack.FakeSlack) -> None:
    fake_slack.fail("chat.postMessage", "channel_not_found", times=3)
    view = replace(make_view(), break_glass=True, min_approvals=0)
    assert notifier(fake_slack).review_opened(view) is None
