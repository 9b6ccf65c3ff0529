"""``POST /slack/events`` checks Slack's signature before it parses anything.

Against the real bot over HTTP: a request Slack did not sign gets 401, a signed one that Slack
would never send gets 400 (415 for a media type), each with one log line and no traceback, and
nothing reaches the database; a 5xx from slack-bolt never leaves the endpoint.
"""

from __future__ import annotations

import json
import socket
import time
from typing import Any
from urllib.parse import urlencode

import pytest

from bot.settings import Settings
from tests.fakes import slack
from tests.helpers.bot import RunningBot, running_bot, wait_for
from tests.helpers.slack_http import (
    FORM,
    JSON,
    TABLES,
    logs_fixture,  # noqa: F401 -- the logs fixture
    post,
    request_log,
    row_counts,
    sign,
    tracebacks,
)

# --- bodies --------------------------------------------------------------------------------------


def form(fields: dict[str, Any]) -> bytes:
    return urlencode(fields).encode()


def interaction(payload: Any) -> bytes:
    return form({"payload": json.dumps(payload)})


def click(**changes: Any) -> dict[str, Any]:
    payload = slack.block_action_payload(
        "approve",
        "1",
        user_id="U0SRE1",
        channel_id="C0APPROVALS",
        message_ts="1700000001.000100",
        response_url="http://127.0.0.1:9/response/1",
    )
    return without(payload, changes)


def without(payload: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    """``payload`` with ``changes``; a value of ``...`` removes the field."""
    changed = dict(payload)
    for key, value in changes.items():
        if value is ...:
            changed.pop(key, None)
        else:
            changed[key] = value
    return changed


def command(**changes: Any) -> bytes:
    fields = slack.slash_command_payload(
        "help", user_id="U0DEV1", response_url="http://127.0.0.1:9/response/1"
    )
    return form(without(fields, changes))


def event_body(event_: dict[str, Any], **changes: Any) -> bytes:
    return json.dumps(without(json.loads(slack.event_callback_body(event_)), changes)).encode()


MENTION = slack.app_mention_event("help", user="U0DEV1", channel="C0DEV")
VIEW = {"type": "view_submission", "user": {"id": "U0DEV1"}, "view": {"type": "modal"}}

MALFORMED: dict[str, tuple[bytes, str]] = {
    "a body that is not JSON sent as JSON": (b'{"type": "event_callback", not json', JSON),
    "a body that is not UTF-8": (b"payload=%7B%7D&text=\xff\xfe", FORM),
    "a JSON body that is not UTF-8": (b'{"type": "\xc3\x28"}', JSON),
    "payload=%7Bnot-json": (b"payload=%7Bnot-json", FORM),
    "a payload that is a JSON list": (form({"payload": "[1, 2]"}), FORM),
    "a payload that is a JSON string": (form({"payload": '"block_actions"'}), FORM),
    "a JSON body that is a list": (b"[]", JSON),
    "a JSON body that is a number": (b"12", JSON),
    "an empty body": (b"", FORM),
    "a form that is neither a command nor an interaction": (form({"text": "hi"}), FORM),
    "a form that does not parse": (b"command&&&", FORM),
    "a form that repeats a field": (b"command=%2Fops&command=%2Fops", FORM),
    "JSON nested 5000 deep": (b"[" * 5000 + b"]" * 5000, JSON),
    "JSON nested 100 deep": (
        json.dumps({"type": "x", "a": json.loads("[" * 99 + "]" * 99)}).encode(),
        JSON,
    ),
    "a number with 5000 digits": (b'{"type": "event_callback", "n": ' + b"9" * 5000 + b"}", JSON),
    "block_actions without actions": (interaction(click(actions=...)), FORM),
    "block_actions with no action": (interaction(click(actions=[])), FORM),
    "block_actions without action_id": (interaction(click(actions=[{"type": "button"}])), FORM),
    "block_actions with a number for action_id": (
        interaction(click(actions=[{"action_id": 5}])),
        FORM,
    ),
    "block_actions with a string for actions": (interaction(click(actions="approve")), FORM),
    "block_actions without user": (interaction(click(user=...)), FORM),
    "block_actions with user a string": (interaction(click(user="U0SRE1")), FORM),
    "block_actions with channel null": (interaction(click(channel=None)), FORM),
    "interactive_message without actions": (
        interaction(
            {"type": "interactive_message", "callback_id": "approve", "user": {"id": "U1"}}
        ),
        FORM,
    ),
    "interactive_message without user": (
        interaction(
            without(click(type="interactive_message", callback_id="approve"), {"user": ...})
        ),
        FORM,
    ),
    "a JSON body that is a block_actions": (json.dumps(click()).encode(), JSON),
    "an interaction that says it is an event_callback": (
        interaction(json.loads(slack.event_callback_body(MENTION)) | {"user": {"id": "U0DEV1"}}),
        FORM,
    ),
    "workflow_step_edit without workflow_step": (
        interaction({"type": "workflow_step_edit", "callback_id": "approve"}),
        FORM,
    ),
    "a payload without type": (interaction(click(type=...)), FORM),
    "a payload whose type is an object": (interaction(click(type={"a": 1})), FORM),
    "a payload with a team that is a number": (interaction({"type": "shortcut", "team": 5}), FORM),
    "view_submission without view": (interaction(without(VIEW, {"view": ...})), FORM),
    "view_submission whose view has no callback_id": (interaction(VIEW), FORM),
    "event_callback without event": (event_body(MENTION, event=...), JSON),
    "event_callback whose event is a string": (event_body(MENTION, event="app_mention"), JSON),
    "event_callback whose event is null": (event_body(MENTION, event=None), JSON),
    "event_callback whose event has no type": (event_body({"user": "U0DEV1"}), JSON),
    "event_callback without event_id": (event_body(MENTION, event_id=...), JSON),
    "app_mention whose user is an object": (event_body(MENTION | {"user": {"id": "U1"}}), JSON),
    "app_mention whose text is null": (event_body(MENTION | {"text": None}), JSON),
    "app_home_opened without user": (event_body({"type": "app_home_opened", "tab": "home"}), JSON),
    "url_verification without challenge": (b'{"type": "url_verification", "token": "t"}', JSON),
    "a JSON body with a command": (json.dumps({"command": "/ops", "user_id": "U1"}).encode(), JSON),
    "a slash command without user_id": (command(user_id=...), FORM),
    "a slash command with a user_id too long for the database": (
        command(user_id="U" + "A" * 64),
        FORM,
    ),
    "a slash command whose response_url is not a URL": (command(response_url="nowhere"), FORM),
    "a slash command with an event field": (command(event="app_mention"), FORM),
    "a slash command with a type field": (command(type="workflow_step_edit"), FORM),
    "a text/plain body": (b"command=%2Fops", "text/plain"),
    "no Content-Type": (b"command=%2Fops", ""),
}


def assert_no_effect(bot: RunningBot, database_url: str) -> None:
    assert row_counts(database_url) == dict.fromkeys(TABLES, 0)
    assert [c for c in bot.fake_slack.calls if c.method != "auth.test"] == []


# --- unsigned, forged and badly timestamped: 401 -------------------------------------------------


def test_every_unsigned_or_forged_request_gets_401_in_one_line(
    bot: RunningBot, database_url: str, logs: pytest.LogCaptureFixture
) -> None:
    for name, (body, content_type) in MALFORMED.items():
        for how, headers in {
            "unsigned": {"Content-Type": content_type},
            "signed with another secret": sign(body, content_type, secret="not-the-secret"),
            "signed over another body": sign(body + b"x", content_type),
        }.items():
            logs.clear()
            answer = post(bot, body, headers)
            assert answer.status_code == 401, (name, how, answer.text)
            assert answer.json() == {"ok": False, "error": "invalid_signature"}
            lines = request_log(logs.records)
            assert [r.name for r in lines] == ["bot.slack_http"], (name, how, lines)
            assert tracebacks(logs.records) == [], (name, how)
    assert_no_effect(bot, database_url)


def test_bad_timestamps_and_signature_headers_get_401(
    bot: RunningBot, database_url: str, logs: pytest.LogCaptureFixture
) -> None:
    body = command(text="restart payments-api -n payments")
    now = int(time.time())
    signed = sign(body, FORM)
    cases: dict[str, Any] = {
        "X-Slack-Request-Timestamp: abc": sign(body, FORM, timestamp="abc"),
        "a timestamp with a sign": sign(body, FORM, timestamp=f"+{now}"),
        "a timestamp with an underscore": sign(
            body, FORM, timestamp=f"{now}"[:4] + "_" + f"{now}"[4:]
        ),
        "a negative timestamp": sign(body, FORM, timestamp=f"-{now}"),
        "a timestamp 10 minutes old": sign(body, FORM, timestamp=str(now - 600)),
        "a timestamp 10 minutes ahead": sign(body, FORM, timestamp=str(now + 600)),
        "a timestamp of 400 digits": sign(body, FORM, timestamp="9" * 400),
        "no timestamp": {k: v for k, v in signed.items() if k != "X-Slack-Request-Timestamp"},
        "no signature": {k: v for k, v in signed.items() if k != "X-Slack-Signature"},
        "an upper-case signature": signed
        | {"X-Slack-Signature": signed["X-Slack-Signature"].upper()},
        "a signature that is not ASCII": [
            ("Content-Type", FORM),
            ("X-Slack-Request-Timestamp", signed["X-Slack-Request-Timestamp"]),
            ("X-Slack-Signature", b"v0=\xe9" + b"0" * 63),
        ],
        "two signatures": [*signed.items(), ("X-Slack-Signature", signed["X-Slack-Signature"])],
    }
    for name, headers in cases.items():
        logs.clear()
        answer = post(bot, body, headers)
        assert answer.status_code == 401, (name, answer.text)
        assert [r.name for r in request_log(logs.records)] == ["bot.slack_http"], name
        assert tracebacks(logs.records) == [], name
    assert_no_effect(bot, database_url)


def test_a_body_over_the_limit_is_not_read(bot: RunningBot, logs: pytest.LogCaptureFixture) -> None:
    body = b"a=" + b"x" * (1024 * 1024)
    answer = post(bot, body, sign(body, FORM))
    assert answer.status_code == 413
    assert tracebacks(logs.records) == []


def test_a_client_that_goes_away_mid_body_logs_one_line(
    bot: RunningBot, logs: pytest.LogCaptureFixture
) -> None:
    host, port = bot.url.removeprefix("http://").split(":")
    headers = sign(b"x" * 100, JSON)
    head = "".join(f"{name}: {value}\r\n" for name, value in headers.items())
    with socket.create_connection((host, int(port))) as raw:
        raw.sendall(
            f"POST /slack/events HTTP/1.1\r\nHost: {host}\r\n{head}Content-Length: 100\r\n\r\n"
            "0123456789".encode()
        )
        time.sleep(0.2)
    line = wait_for(
        lambda: [r for r in logs.records if r.name == "bot.slack_http"], what="the log line"
    )
    assert "went away" in line[0].getMessage()
    time.sleep(0.2)
    assert tracebacks(logs.records) == []


# --- signed but malformed: 400 -------------------------------------------------------------------


def test_every_signed_malformed_request_gets_400_in_one_line(
    bot: RunningBot, database_url: str, logs: pytest.LogCaptureFixture
) -> None:
    for name, (body, content_type) in MALFORMED.items():
        logs.clear()
        answer = post(bot, body, sign(body, content_type))
        expected = 415 if content_type in ("text/plain", "") else 400
        assert answer.status_code == expected, (name, answer.text)
        assert answer.json() == {"ok": False, "error": "malformed_request"}
        lines = request_log(logs.records)
        assert [(r.name, r.levelname) for r in lines] == [("bot.slack_http", "WARNING")], (
            name,
            [r.getMessage() for r in lines],
        )
        assert "\n" not in lines[0].getMessage(), name
        assert tracebacks(logs.records) == [], name
    assert_no_effect(bot, database_url)


# --- what Slack does send still works ------------------------------------------------------------


def test_url_verification_is_answered(bot: RunningBot) -> None:
    challenge = "3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P"
    body = json.dumps({"token": "t", "challenge": challenge, "type": "url_verification"}).encode()
    answer = post(bot, body, sign(body, JSON))
    assert answer.status_code == 200
    assert answer.json() == {"challenge": challenge}


def test_a_content_type_with_a_charset_is_accepted(bot: RunningBot) -> None:
    body = command(response_url=bot.fake_slack.response_url())
    answer = post(bot, body, sign(body, f"{FORM}; charset=UTF-8"))
    assert answer.status_code == 200
    assert "/ops" in answer.json()["text"]


def test_a_slash_command_that_mentions_payload_reaches_the_listener(
    bot: RunningBot, database_url: str
) -> None:
    """slack-bolt 1.30 reads any form that contains the text "payload" as an interaction (and
    finds no listener for it): the command must still be carried out."""
    answer, _ = bot.command('restart payments-api -n payments --reason "payload queue stuck"')
    assert answer.status_code == 200, answer.text
    wait_for(lambda: row_counts(database_url)["requests"] == 1, what="the request")
    posts = wait_for(
        lambda: [c for c in bot.fake_slack.calls_of("chat.postMessage") if c.args.get("blocks")],
        what="the approval message",
    )
    assert "payload queue stuck" in json.dumps(posts[0].args["blocks"])


# --- slack-bolt's own failures never leave as a 5xx ----------------------------------------------


def test_a_slack_bolt_failure_is_answered_in_one_line(
    settings: Settings,
    fake_slack: slack.FakeSlack,
    database_url: str,
    logs: pytest.LogCaptureFixture,
) -> None:
    """Slack's Web API unreachable at the first request: slack-bolt's auth.test raises in its
    middleware (and slack-bolt answers 500)."""
    unreachable = settings.model_copy(update={"slack_api_url": "http://127.0.0.1:9/api/"})
    with running_bot(unreachable, fake_slack) as bot:
        cases = {
            "slash command": (command(), FORM),
            "click": (interaction(click()), FORM),
            "event": (event_body(MENTION), JSON),
        }
        answers = {}
        for name, (body, content_type) in cases.items():
            logs.clear()
            answers[name] = post(bot, body, sign(body, content_type))
            # slack_sdk logs each attempt to reach Slack; opsgate and slack-bolt say it once
            lines = [r for r in logs.records if r.name.startswith(("bot.", "slack_bolt"))]
            assert [(r.name, r.levelname) for r in lines] == [("bot.slack_http", "ERROR")], name
            assert "URLError" in lines[0].getMessage()
            assert tracebacks(logs.records) == [], name
    assert answers["slash command"].status_code == 200
    reply = answers["slash command"].json()
    assert reply["response_type"] == "ephemeral"
    assert "opsgate failed to handle this command (reference" in reply["text"]
    assert answers["click"].status_code == 400
    assert answers["event"].status_code == 200
    assert row_counts(database_url) == dict.fromkeys(TABLES, 0)
