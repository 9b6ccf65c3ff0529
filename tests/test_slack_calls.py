"""Counting Slack calls (issue 13): one card per request, updated in place.

One approved restart makes exactly one approval card (then ``chat.update``s of it), one message
in the requester's channel (then ``chat.update``s of it), no thread reply (success needs nothing
from the requester) and one audit line. A denial adds one thread reply that mentions the
requester. An access grant that expires adds the grantee's direct messages (started, with
Extend / End now, and expired) and the grant's end as its own audit line
(``tests/test_access_e2e.py``).
"""

from __future__ import annotations

from bot.settings import Settings
from tests.fakes.kube import FakeKubernetes
from tests.helpers.bot import RunningBot, wait_for
from tests.helpers.slack_calls import AUDIT, audit_lines, requester_message, tally, updates_of
from tests.helpers.slack_flow import request_status, submit, wait_approval_message


def test_one_approved_restart_is_one_card_one_requester_message_and_one_audit_line(
    bot: RunningBot, settings: Settings
) -> None:
    submit(bot, 'restart payments-api -n payments --reason "OOM after 1.4.2"')
    card = wait_approval_message(bot)
    bot.click("approve", "1", user="U0SRE1")
    wait_for(lambda: request_status(settings) == "succeeded", what="the restart")
    [line] = wait_for(lambda: audit_lines(bot.fake_slack), what="the audit line")
    fake = bot.fake_slack
    mine = requester_message(fake)

    assert tally(fake) == {
        "chat.postMessage C0APPROVALS": 1,
        "chat.postMessage C0DEV": 1,
        f"chat.postMessage {AUDIT}": 1,
        # approved (the one approval needed), executing, succeeded: each shown in place on both
        "chat.update C0APPROVALS": 3,
        "chat.update C0DEV": 3,
    }
    card_updates, my_updates = updates_of(fake, card), updates_of(fake, mine)
    assert len(card_updates) == len(my_updates) == 3
    assert "Done" in my_updates[-1]
    assert "<@U0DEV1>" in my_updates[-1]
    assert not any("executing next" in t or "executing now" in t for t in my_updates)
    assert line.startswith("[audit] Request #1: restart deployment/payments-api in payments")
    assert "Approved by <@U0SRE1>. Done" in line


def test_one_denied_request_replies_once_in_the_requesters_thread(
    bot: RunningBot, settings: Settings, kube: FakeKubernetes
) -> None:
    submit(bot, "restart payments-api -n payments")
    card = wait_approval_message(bot)
    bot.click("deny", "1", user="U0SRE2")
    wait_for(lambda: request_status(settings) == "denied", what="the denial")
    wait_for(lambda: audit_lines(bot.fake_slack), what="the audit line")
    fake = bot.fake_slack
    mine = requester_message(fake)

    assert tally(fake) == {
        "chat.postMessage C0APPROVALS": 1,
        "chat.postMessage C0DEV": 1,
        "chat.postMessage C0DEV+thread": 1,
        f"chat.postMessage {AUDIT}": 1,
        "chat.update C0APPROVALS": 1,
        "chat.update C0DEV": 1,
    }
    assert len(updates_of(fake, card)) == len(updates_of(fake, mine)) == 1
    [reply] = [c for c in fake.calls_of("chat.postMessage") if c.args.get("thread_ts")]
    assert reply.args["thread_ts"] == mine.response["ts"]
    assert reply.args["text"].startswith("<@U0DEV1> ")
    assert "Denied by <@U0SRE2>" in reply.args["text"]
