"""The Slack notifier against the fake Slack Web API: where the break-glass notice goes when the
audit channel refuses it."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
from slack_sdk import WebClient

from approvals.notifier import NotifyError
from approvals.policy import parse_policy
from bot.notifier import SlackGrantNotifier, SlackNotifier
from tests.fakes import slack
from tests.helpers.grant_views import NOW, grant
from tests.helpers.policy import POLICY
from tests.helpers.request_views import make_view


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


def grant_notifier(fake: slack.FakeSlack, ended: list[int]) -> SlackGrantNotifier:
    loaded = parse_policy(POLICY)
    client = WebClient(token=slack.BOT_TOKEN, base_url=fake.api_url)
    return SlackGrantNotifier(
        client, lambda: loaded, lambda: NOW, on_ended=lambda g: ended.append(g.id)
    )


def test_a_grant_that_could_not_be_told_is_still_audited_and_ended(
    fake_slack: slack.FakeSlack,
) -> None:
    fake_slack.fail("chat.postMessage", "channel_not_found", channel="U0DEV1")
    ended: list[int] = []
    with pytest.raises(NotifyError, match="grant #12"):
        grant_notifier(fake_slack, ended).grant_changed(
            grant(status="revoked", revoke_reason="expired"), event="expired"
        )
    posts = fake_slack.calls_of("chat.postMessage")
    assert [c.args["channel"] for c in posts] == ["U0DEV1", "C0AUDIT"]
    assert posts[1].args["text"].startswith("[audit] :lock: Grant #12")
    assert ended == [12]


def test_the_reminder_goes_to_the_grantee_alone_with_its_buttons(
    fake_slack: slack.FakeSlack,
) -> None:
    grant_notifier(fake_slack, []).grant_changed(grant(), event="reminder")
    [post] = fake_slack.calls_of("chat.postMessage")
    assert post.args["channel"] == "U0DEV1"
    assert "grant_extend" in json.dumps(post.args["blocks"])


def test_an_invalid_policy_is_reported_to_the_audit_channel(fake_slack: slack.FakeSlack) -> None:
    grant_notifier(fake_slack, []).policy_reload_failed("rules[0]: bad")
    [post] = fake_slack.calls_of("chat.postMessage")
    assert post.args["channel"] == "C0AUDIT"
    assert f"sha256 {parse_policy(POLICY).sha256[:12]}" in post.args["text"]
    assert "rules[0]: bad" in post.args["text"]
