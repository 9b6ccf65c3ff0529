"""Counting what the bot sent to the fake Slack (issue 13: one card per request, updated in
place): calls per method and channel, the audit lines, the requester's message and its
updates."""

from __future__ import annotations

from collections import Counter

from tests.fakes import slack

AUDIT = "C0AUDIT"


def tally(fake: slack.FakeSlack) -> Counter[str]:
    """``method channel`` (``+thread`` for a thread reply) → how many calls, ``auth.test``,
    ``views.publish`` and ``response_url`` aside."""
    counts: Counter[str] = Counter()
    for call in fake.calls:
        if call.method in ("auth.test", "views.publish", "response_url"):
            continue
        thread = "+thread" if call.args.get("thread_ts") else ""
        counts[f"{call.method} {call.args.get('channel')}{thread}"] += 1
    return counts


def audit_lines(fake: slack.FakeSlack) -> list[str]:
    return [
        str(c.args["text"]) for c in fake.calls_of("chat.postMessage") if c.args["channel"] == AUDIT
    ]


def updates_of(fake: slack.FakeSlack, message: slack.Call) -> list[str]:
    return [
        str(c.args["text"])
        for c in fake.calls_of("chat.update")
        if c.args["ts"] == message.response["ts"] and c.args["channel"] == message.args["channel"]
    ]


def requester_message(fake: slack.FakeSlack, channel: str = "C0DEV") -> slack.Call:
    [message] = [
        c
        for c in fake.calls_of("chat.postMessage")
        if c.args["channel"] == channel and not c.args.get("thread_ts")
    ]
    return message
