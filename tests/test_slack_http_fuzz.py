"""Fuzzing ``POST /slack/events`` of the real bot over HTTP with hypothesis.

Random bodies, headers and payload shapes (slash commands, interactions and Events API deliveries
with fields dropped, retyped or replaced), signed and unsigned, against one running bot. The
property: never a 5xx, never a traceback in the logs, 401 for whatever is not signed, and nothing
in the database but what the valid commands among them asked for.

The run is deterministic (``derandomize``). Button values and command texts stay within the
database's integer range: out-of-range IDs are the listeners' to refuse, and are tested there.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import create_engine, text

from bot.grammar import CommandError, parse
from tests.fakes import slack
from tests.helpers.bot import RunningBot, wait_for
from tests.helpers.slack_http import (
    FORM,
    JSON,
    logs_fixture,  # noqa: F401 -- the logs fixture
    post,
    sign,
    tracebacks,
)

EXAMPLES = 1500
APPROVERS = {"U0SRE1", "U0SRE2", "U0SEC1"}
CLICKERS = ["U0RAND1", "U0RAND2", "U0DEV9"]
"""Who clicks buttons: never an approver, so that no click decides a request."""
ACTION_IDS = ["approve", "deny", "acknowledge", "extend", "end_now", "approve_request", "x"]
INTERACTION_TYPES = [
    "block_actions",
    "view_submission",
    "view_closed",
    "shortcut",
    "message_action",
    "interactive_message",
    "block_suggestion",
    "workflow_step_edit",
    "dialog_submission",
    "ssl_check",
]
EVENT_TYPES = ["app_mention", "app_home_opened", "message", "app_uninstalled", "tokens_revoked"]
READS = frozenset({"help", "status", "grants"})

no_digits = st.text(alphabet=st.characters(exclude_categories=("Nd", "Cs")), max_size=12)
json_scalars = st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | no_digits
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(no_digits, inner, max_size=3),
    max_leaves=6,
)
slack_ids = st.sampled_from(["U0DEV1", "C0DEV", "U0RAND1", "T0TEST", "", "u0lower", "U" + "A" * 69])


def odd(valid: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """Mostly ``valid``, sometimes anything JSON can carry."""
    return st.one_of(valid, valid, valid, json_values)


def mutate(draw: st.DrawFn, fields: dict[str, Any], junk: st.SearchStrategy[Any]) -> dict[str, Any]:
    """``fields`` with some dropped and some replaced by ``junk``, and maybe one added."""
    out: dict[str, Any] = {}
    for key, value in fields.items():
        fate = draw(st.sampled_from(["keep"] * 12 + ["drop", "junk"]))
        if fate == "keep":
            out[key] = value
        elif fate == "junk":
            out[key] = draw(junk)
    if draw(st.booleans()):
        extra = st.sampled_from(["event", "type", "command", "payload", "actions", "view", "team"])
        out[draw(extra | no_digits)] = draw(junk)
    return out


def harmless_text(value: str) -> bool:
    """True when ``/ops value`` asks for nothing to be created."""
    try:
        return parse(value).name in READS
    except CommandError:
        return True


command_texts = st.one_of(
    st.sampled_from(["help", "", "status", "status 1", "status 2147483647", "grants", "nope"]),
    st.sampled_from(["restart", "restart payments-api", "scale cart --replicas x -n checkout"]),
    no_digits,
).filter(harmless_text)


@dataclass(frozen=True)
class Case:
    body: bytes
    content_type: str
    creates: str | None = None
    """The reason of the request this valid command creates."""


@st.composite
def slash_commands(draw: st.DrawFn, response_url: str) -> Case:
    fields = slack.slash_command_payload(
        draw(command_texts), user_id=draw(st.sampled_from(CLICKERS)), response_url=response_url
    )
    mutated = mutate(draw, fields, st.one_of(slack_ids, no_digits, st.just("/ops")))
    return Case(urlencode(mutated).encode(), FORM)


@st.composite
def interactions(draw: st.DrawFn, response_url: str) -> Case:
    user = draw(st.sampled_from(CLICKERS))
    action_id = draw(st.sampled_from(ACTION_IDS) | no_digits)
    value = draw(st.one_of(st.integers(-5, 2**31 - 1).map(str), no_digits, st.none()))
    payload = slack.block_action_payload(
        action_id,
        "",
        user_id=user,
        channel_id="C0APPROVALS",
        message_ts="1700000001.000100",
        response_url=response_url,
    )
    payload["actions"][0] = mutate(draw, payload["actions"][0] | {"value": value}, json_values)
    payload["type"] = draw(st.sampled_from(INTERACTION_TYPES) | no_digits)
    payload["view"] = draw(odd(st.just({"type": "modal", "callback_id": "x", "id": "V1"})))
    payload["callback_id"] = draw(st.sampled_from(["approve", "x"]))
    if draw(st.integers(0, 9)) == 0:  # the payload itself not an object, or not JSON at all
        encoded = draw(st.one_of(json_values.map(json.dumps), no_digits))
    else:
        encoded = json.dumps(mutate(draw, payload, odd(json_values)))
    return Case(urlencode({"payload": encoded}).encode(), FORM)


@st.composite
def events(draw: st.DrawFn) -> Case:
    kind = draw(st.sampled_from(EVENT_TYPES) | no_digits)
    event = slack.app_mention_event(
        draw(command_texts), user=draw(st.sampled_from(CLICKERS)), channel="C0DEV"
    ) | {"type": kind, "tab": draw(st.sampled_from(["home", "messages"]))}
    body = json.loads(slack.event_callback_body(mutate(draw, event, odd(slack_ids))))
    body["type"] = draw(st.sampled_from(["event_callback", "url_verification", "app_rate_limited"]))
    body["challenge"] = draw(odd(st.just("challenge-accepted")))
    return Case(json.dumps(mutate(draw, body, json_values)).encode(), JSON)


junk_bodies = st.builds(
    Case,
    st.binary(max_size=200) | json_values.map(lambda v: json.dumps(v).encode()),
    st.sampled_from([FORM, JSON, "text/plain", "application/json; charset=utf-8", "x/y"]),
)


@dataclass
class Counter:
    n: int = 0


def creating_commands(counter: Counter, response_url: str) -> st.SearchStrategy[Case]:
    """A valid ``/ops restart`` that creates a request (from its own requester)."""

    def build(_: object) -> Case:
        counter.n += 1
        reason = f"fuzz-{counter.n}"
        fields = slack.slash_command_payload(
            f"restart payments-api -n payments --reason {reason}",
            user_id=f"U0FUZZ{counter.n}",
            response_url=response_url,
        )
        return Case(urlencode(fields).encode(), FORM, creates=reason)

    return st.just(None).map(build)


SIGNINGS = ["signed"] * 6 + ["unsigned", "other secret", "tampered", "stale", "abc", "future"]


def headers_for(case: Case, how: str, data: st.DataObject) -> list[tuple[str, str]]:
    now = int(time.time())
    if how == "unsigned":
        headers = {"Content-Type": case.content_type}
    elif how == "other secret":
        headers = sign(case.body, case.content_type, secret="not-the-secret")
    elif how == "tampered":
        headers = sign(case.body + b" ", case.content_type)
    else:
        timestamp = {"stale": str(now - 301), "future": str(now + 400), "abc": "abc"}.get(how)
        headers = sign(case.body, case.content_type, timestamp=timestamp)
    pairs = list(headers.items())
    if data.draw(st.booleans()):
        pairs.append(("X-Slack-Retry-Num", data.draw(st.sampled_from(["1", "2", "x"]))))
    return pairs


def counts(database_url: str) -> dict[str, Any]:
    engine = create_engine(database_url)
    try:
        with engine.connect() as conn:
            requests = conn.execute(text("SELECT id, reason FROM requests")).all()
            audits = conn.execute(
                text("SELECT request_id, event, action, actor_id FROM audit_events")
            ).all()
            approvals = conn.execute(text("SELECT count(*) FROM approvals")).scalar_one()
            grants = conn.execute(text("SELECT count(*) FROM grants")).scalar_one()
    finally:
        engine.dispose()
    return {"requests": requests, "audits": audits, "approvals": approvals, "grants": grants}


def test_no_input_reaches_a_5xx_a_traceback_or_the_database(
    bot: RunningBot,
    database_url: str,
    logs: pytest.LogCaptureFixture,
) -> None:
    response_url = bot.fake_slack.response_url()
    counter = Counter()
    created: list[str] = []
    statuses: dict[int, int] = {}

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(data=st.data())
    def one_request(data: st.DataObject) -> None:
        case = data.draw(
            st.one_of(
                junk_bodies,
                slash_commands(response_url),
                interactions(response_url),
                events(),
                st.integers(0, 19).flatmap(
                    lambda n: creating_commands(counter, response_url) if n == 0 else junk_bodies
                ),
            )
        )
        how = data.draw(st.sampled_from(SIGNINGS))
        seen = len(logs.records)
        answer = post(bot, case.body, headers_for(case, how, data))
        statuses[answer.status_code] = statuses.get(answer.status_code, 0) + 1
        assert answer.status_code < 500, (case, how, answer.text)
        if how != "signed":
            assert answer.status_code == 401, (case, how, answer.text)
        elif case.creates:
            assert answer.status_code == 200, (case, answer.text)
            created.append(case.creates)
        assert tracebacks(logs.records[seen:]) == [], case

    one_request()

    assert created, "no valid command was sent"
    assert statuses.get(400, 0) > EXAMPLES / 10, statuses
    assert statuses.get(200, 0) > EXAMPLES / 10, statuses  # many reached a listener
    wait_for(
        lambda: len(counts(database_url)["requests"]) >= len(created),
        timeout=60,
        what="the valid commands' requests",
    )
    time.sleep(1)  # let the last clicks and events finish
    found = counts(database_url)
    assert sorted(reason for _, reason in found["requests"]) == sorted(created)
    ids = {request_id for request_id, _ in found["requests"]}
    for request_id, event, action, actor in found["audits"]:
        # a click on Extend asks for an extension, which the gate refuses (and audits) when
        # the grant does not exist
        refused_extension = (event, action, request_id) == ("rejected", "extend", None)
        assert request_id in ids or (refused_extension and actor in CLICKERS), (
            request_id,
            event,
            action,
            actor,
        )
    assert found["approvals"] == 0
    assert found["grants"] == 0
    assert tracebacks(logs.records) == []
    # and the bot still answers
    answer, _ = bot.command("help")
    assert answer.status_code == 200
    logging.getLogger(__name__).info("fuzz statuses: %s", statuses)
