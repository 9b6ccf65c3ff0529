"""The scan of every message for ``None``, Python reprs and tracebacks (tests/message_scan.py)
finds them, leaves ordinary messages alone, and sees the fake Slack of an end-to-end test."""

from __future__ import annotations

import json

import pytest

from tests import message_scan
from tests.helpers.bot import RunningBot


@pytest.mark.parametrize(
    "text",
    [
        "Request #1: :key: Approved by <@U0SRE1>. Active: None",
        "params {'namespace': 'payments'}",
        "approvers: []",
        "Traceback (most recent call last):",
    ],
)
def test_the_scan_finds_none_reprs_and_tracebacks(text: str) -> None:
    assert message_scan.leaks({"text": text}) == [text]
    blocks = [{"type": "section", "text": {"type": "mrkdwn", "text": text}}]
    assert message_scan.leaks({"blocks": json.dumps(blocks)}) == [text]
    assert message_scan.leaks({"view": {"type": "home", "blocks": blocks}}) == [text]


def test_the_scan_reads_words_not_the_json_around_them() -> None:
    blocks = [{"type": "actions", "block_id": "decision", "elements": []}]
    assert message_scan.leaks({"text": "Nonetheless fine", "blocks": blocks}) == []
    assert message_scan.leaks({"channel": "None", "ts": "[]"}) == []


def test_the_scan_sees_the_fake_slack_of_an_end_to_end_test(
    bot: RunningBot, request: pytest.FixtureRequest
) -> None:
    assert request.node.funcargs["fake_slack"] is bot.fake_slack
    bot.command("help")
    assert bot.fake_slack.answers  # the bot's HTTP answers are scanned too
