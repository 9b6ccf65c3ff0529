"""End to end for issue 3's incident-channel path: ``/ops`` and ``@opsgate`` in an incident channel.

A channel is an incident channel when its name matches the policy's ``incident_channels`` globs:
a slash command carries ``channel_name``, an ``app_mention`` event only the channel ID (the bot
asks ``conversations.info``). The policy of ``tests/test_scale_rollback_e2e.py`` routes incident
rollbacks to the ``oncall`` group in ``C0INCIDENTOPS``; other rollbacks go to ``sre``.
"""

from __future__ import annotations

import logging
from typing import Any

import pytest

from approvals.models import AuditEvent, Request
from bot.settings import Settings
from tests.fakes import slack
from tests.fakes.kube import FakeKubernetes
from tests.helpers.bot import RunningBot, running_bot, wait_for
from tests.helpers.scale_flow import (
    POLICY,
    ROLLED_OUT,
    announcement,
    approval_posts,
    blocks_text,
    final_reply,
    image_of,
    set_image,
    thread_replies,
    writes,
)
from tests.helpers.slack_flow import request_status, rows, submit, wait_approval_message

INCIDENT = "C0INC4711"
INCIDENT_NAME = "inc-4711-payments"
INCIDENT_LINE = f"*Incident channel:* <#{INCIDENT}> (#{INCIDENT_NAME})"


@pytest.fixture
def policy_text() -> str:
    return POLICY


@pytest.fixture(autouse=True)
def revisions(kube: FakeKubernetes, fake_slack: slack.FakeSlack) -> None:
    """payments-api at revision 2 (payments:1.5.0), and the channels conversations.info knows."""
    set_image(kube, "payments", "payments-api", "payments:1.5.0", cause="deploy 1.5.0")
    kube.clear_requests()
    fake_slack.channels.update({INCIDENT: INCIDENT_NAME, "C0DEV": "dev"})


def mention(bot: RunningBot, text: str, *, user: str = "U0DEV1", channel: str = INCIDENT) -> Any:
    """Post a signed ``app_mention`` event (``@opsgate <text>`` in ``channel``)."""
    body = slack.event_callback_body(slack.app_mention_event(text, user=user, channel=channel))
    answer = bot.post(body)
    assert answer.status_code == 200
    return answer


def ephemerals(fake: slack.FakeSlack, user: str) -> list[slack.Call]:
    return [c for c in fake.calls_of("chat.postEphemeral") if c.args["user"] == user]


def ephemeral_texts(fake: slack.FakeSlack, user: str) -> list[str]:
    return [str(c.args["text"]) for c in ephemerals(fake, user)]


def check_incident_rollback(bot: RunningBot, kube: FakeKubernetes, settings: Settings) -> None:
    """The request went to the incident rule; only oncall may approve; the thread is in the
    incident channel; the rollback is carried out."""
    approval = wait_approval_message(bot)
    assert approval.args["channel"] == "C0INCIDENTOPS"
    text = blocks_text(approval)
    assert INCIDENT_LINE in text
    assert "incident rollbacks" in text
    assert "To: *revision 1*: `payments:1.4.2`" in text
    root = announcement(bot, INCIDENT)
    assert "<@U0DEV1> asked: Request #1: rollback deployment/payments-api" in root.args["text"]
    assert "C0INCIDENTOPS" in root.args["text"]
    [request] = rows(settings, Request)
    assert request.incident is True
    assert request.origin_channel_id == INCIDENT
    assert request.origin_channel_name == INCIDENT_NAME
    assert request.rule.startswith("rules[0] 'incident rollbacks'")

    # sre may approve ordinary rollbacks, not this one
    bot.click("approve", "1", user="U0SRE1")
    [told] = wait_for(lambda: ephemeral_texts(bot.fake_slack, "U0SRE1"))
    assert "Only members of oncall may decide request #1" in told
    assert request_status(settings) == "pending"
    assert writes(kube) == []

    bot.click("approve", "1", user="U0ONCALL")
    wait_for(lambda: request_status(settings) == "succeeded", what="the rollback to succeed")
    assert image_of(kube, "payments", "payments-api") == "payments:1.4.2"
    assert len(writes(kube)) == 1
    done = final_reply(bot, root, "Done")
    assert "<@U0DEV1>" in done
    assert "from revision 2 to revision 1 (payments:1.4.2)" in done
    assert ROLLED_OUT.search(done)
    # the progress showed in place on the requester's message in the incident channel: no
    # "executing next / executing now" replies (issue 13)
    assert thread_replies(bot, root) == []
    final = wait_for(
        lambda: [c for c in bot.fake_slack.calls_of("chat.update") if "succeeded" in c.args["text"]]
    )[-1]
    assert final.args["channel"] == "C0INCIDENTOPS"
    assert INCIDENT_LINE in blocks_text(final)
    assert "Approved by <@U0ONCALL>" in blocks_text(final)


def test_slash_command_in_an_incident_channel_uses_the_incident_rule(
    bot: RunningBot, kube: FakeKubernetes, settings: Settings
) -> None:
    submit(
        bot,
        'rollback payments-api -n payments --reason "SEV1: checkout 5xx"',
        channel_id=INCIDENT,
        channel_name=INCIDENT_NAME,
    )
    check_incident_rollback(bot, kube, settings)
    # the slash command carried the channel's name: Slack was not asked for it
    assert bot.fake_slack.calls_of("conversations.info") == []


def test_app_mention_in_an_incident_channel_uses_the_incident_rule(
    bot: RunningBot, kube: FakeKubernetes, settings: Settings
) -> None:
    mention(bot, 'rollback payments-api -n payments --reason "SEV1: checkout 5xx"')
    check_incident_rollback(bot, kube, settings)
    [info] = bot.fake_slack.calls_of("conversations.info")
    assert info.args["channel"] == INCIDENT
    [request] = rows(settings, Request)
    assert request.reason == "SEV1: checkout 5xx"
    assert request.response_url is None
    assert [e.event for e in rows(settings, AuditEvent)] == [
        "submitted",
        "approval_added",
        "approved",
        "executing",
        "succeeded",
    ]


@pytest.mark.parametrize(
    "channel",
    [
        "C0DEV",  # a channel whose name is no incident channel's
        "C0UNKNOWN",  # conversations.info answers channel_not_found: not an incident channel
    ],
)
def test_app_mention_elsewhere_uses_the_ordinary_rule(
    bot: RunningBot, kube: FakeKubernetes, settings: Settings, channel: str
) -> None:
    mention(bot, "rollback payments-api -n payments", channel=channel)
    approval = wait_approval_message(bot)
    assert approval.args["channel"] == "C0APPROVALS"
    assert "Incident channel" not in blocks_text(approval)
    announcement(bot, channel)
    [request] = rows(settings, Request)
    assert request.incident is False
    assert request.rule.startswith("rules[1] 'prod rollbacks'")
    bot.click("approve", "1", user="U0SRE1")
    wait_for(lambda: request_status(settings) == "succeeded")
    assert image_of(kube, "payments", "payments-api") == "payments:1.4.2"


def test_scale_from_an_incident_channel_names_it_in_the_approval_message(
    bot: RunningBot, kube: FakeKubernetes, settings: Settings
) -> None:
    submit(bot, "scale payments-api 6 -n payments", channel_id=INCIDENT, channel_name=INCIDENT_NAME)
    approval = wait_approval_message(bot)
    # no incident rule for scale: the ordinary one decides, but the approvers see the incident
    assert approval.args["channel"] == "C0APPROVALS"
    assert INCIDENT_LINE in blocks_text(approval)
    assert rows(settings, Request)[0].rule.startswith("rules[2] 'prod scale'")
    announcement(bot, INCIDENT)


def test_app_mention_with_bad_syntax_answers_the_person_alone(
    bot: RunningBot, kube: FakeKubernetes, settings: Settings
) -> None:
    mention(bot, "rollback payments-api --to-revision two -n payments")
    [told] = wait_for(lambda: ephemerals(bot.fake_slack, "U0DEV1"))
    assert told.args["channel"] == INCIDENT
    assert "'two' is not a revision number" in told.args["text"]
    assert (
        "Usage: `/ops rollback &lt;deployment&gt; [--to-revision N] -n &lt;namespace&gt;"
        in told.args["text"]
    )
    assert approval_posts(bot.fake_slack) == []
    assert rows(settings, Request) == []


def test_app_mention_rejection_answers_the_person_alone_in_the_thread(
    bot: RunningBot, kube: FakeKubernetes, settings: Settings
) -> None:
    event = slack.app_mention_event(
        "rollback payments-api --to-revision 7 -n payments", user="U0DEV1", channel=INCIDENT
    )
    bot.post(slack.event_callback_body(event))
    [told] = wait_for(lambda: ephemerals(bot.fake_slack, "U0DEV1"))
    assert told.args["channel"] == INCIDENT
    assert told.args["thread_ts"] == event["ts"]
    assert "revision 7 is not in the history of deployment/payments-api" in told.args["text"]
    assert approval_posts(bot.fake_slack) == []
    assert writes(kube) == []
    [event_row] = rows(settings, AuditEvent)
    assert event_row.event == "rejected"


def test_a_retried_app_mention_makes_one_request(
    bot: RunningBot, kube: FakeKubernetes, settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    """Slack redelivers an event it thinks was not acknowledged, with the same ``event_id`` and
    ``X-Slack-Retry-Num``; the request must not be made twice."""
    caplog.set_level(logging.INFO, logger="bot.listeners.events")
    event = slack.app_mention_event(
        "rollback payments-api -n payments", user="U0DEV1", channel=INCIDENT
    )
    body = slack.event_callback_body(event, event_id="Ev0RETRY0001")
    assert bot.post(body).status_code == 200
    wait_approval_message(bot)
    retry = slack.signed_headers(body) | {
        "X-Slack-Retry-Num": "1",
        "X-Slack-Retry-Reason": "http_timeout",
    }
    assert bot.post(body, retry).status_code == 200
    wait_for(lambda: "event Ev0RETRY0001 was already delivered" in caplog.text, what="the drop")
    assert len(rows(settings, Request)) == 1
    assert len(approval_posts(bot.fake_slack)) == 1
    assert len(bot.fake_slack.calls_of("conversations.info")) == 1


def test_a_retry_whose_first_delivery_was_lost_is_handled(
    bot: RunningBot, kube: FakeKubernetes, settings: Settings
) -> None:
    event = slack.app_mention_event(
        "rollback payments-api -n payments", user="U0DEV1", channel=INCIDENT
    )
    body = slack.event_callback_body(event, event_id="Ev0LOST00001")
    retry = slack.signed_headers(body) | {
        "X-Slack-Retry-Num": "1",
        "X-Slack-Retry-Reason": "connection_failed",
    }
    assert bot.post(body, retry).status_code == 200
    assert INCIDENT_LINE in blocks_text(wait_approval_message(bot))
    assert len(rows(settings, Request)) == 1


def test_a_retry_delivered_to_another_replica_makes_no_second_request(
    bot: RunningBot, kube: FakeKubernetes, settings: Settings, fake_slack: slack.FakeSlack
) -> None:
    """Behind a load balancer Slack's redelivery may reach another replica on the same database:
    the database, not one process, remembers the ``event_id``."""
    event = slack.app_mention_event(
        "rollback payments-api -n payments", user="U0DEV1", channel=INCIDENT
    )
    body = slack.event_callback_body(event, event_id="Ev0REPLICA01")
    assert bot.post(body).status_code == 200
    wait_approval_message(bot)
    other = settings.model_copy(update={"instance": "replica-b"})
    with running_bot(other, fake_slack) as replica:
        retry = slack.signed_headers(body) | {"X-Slack-Retry-Num": "1"}
        assert replica.post(body, retry).status_code == 200
        # a later, different mention on the replica is handled: it is alive and listening
        second = slack.event_callback_body(
            slack.app_mention_event(
                "history payments-api -n payments", user="U0DEV1", channel=INCIDENT
            ),
            event_id="Ev0REPLICA02",
        )
        assert replica.post(second).status_code == 200
        wait_for(
            lambda: any(
                "revision" in c.args.get("text", "")
                for c in fake_slack.calls_of("chat.postEphemeral")
            )
        )
    assert len(rows(settings, Request)) == 1
    assert len(approval_posts(fake_slack)) == 1
