"""Helpers for the tests of ``POST /slack/events``: signing raw bytes, what was logged, what the
database holds."""

from __future__ import annotations

import hashlib
import hmac
import logging
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from sqlalchemy import create_engine, text

from tests.fakes import slack
from tests.helpers.bot import RunningBot

FORM = "application/x-www-form-urlencoded"
JSON = "application/json"
TABLES = ("requests", "approvals", "audit_events", "grants", "slack_events")
QUIET_LOGGERS = ("apscheduler", "bot.policy_watch", "approvals.expiry", "httpx", "werkzeug")
"""Background jobs that log at INFO whatever requests come in, the test's HTTP client and the
fake Slack's server."""


def sign(
    body: bytes,
    content_type: str,
    *,
    secret: str = slack.SIGNING_SECRET,
    timestamp: str | None = None,
) -> dict[str, str]:
    """Headers as Slack signs ``body``: HMAC-SHA256 over ``v0:{timestamp}:`` + the raw bytes."""
    ts = str(int(time.time())) if timestamp is None else timestamp
    base = b"v0:" + ts.encode() + b":" + body
    digest = hmac.new(secret.encode(), base, hashlib.sha256).hexdigest()
    return {
        "Content-Type": content_type,
        "X-Slack-Request-Timestamp": ts,
        "X-Slack-Signature": f"v0={digest}",
    }


def post(bot: RunningBot, body: bytes, headers: Any) -> httpx.Response:
    return bot.http.post(f"{bot.url}/slack/events", content=body, headers=headers)


def row_counts(database_url: str) -> dict[str, int]:
    engine = create_engine(database_url)
    try:
        with engine.connect() as conn:
            return {
                t: int(conn.execute(text(f"SELECT count(*) FROM {t}")).scalar_one()) for t in TABLES
            }
    finally:
        engine.dispose()


def tracebacks(records: list[logging.LogRecord]) -> list[str]:
    return [
        f"{r.name}: {r.getMessage()}"
        for r in records
        if r.exc_info or "Traceback (most recent call last)" in r.getMessage()
    ]


def request_log(records: list[logging.LogRecord]) -> list[logging.LogRecord]:
    """What a request logged: everything but the background jobs' routine lines."""
    return [
        r for r in records if r.levelno >= logging.WARNING or not r.name.startswith(QUIET_LOGGERS)
    ]


@pytest.fixture(name="logs")
def logs_fixture(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    """``caplog`` at INFO, also fed by uvicorn's loggers (which do not propagate), where an
    exception that escapes the app is logged."""
    caplog.set_level(logging.INFO)
    uvicorn_logger = logging.getLogger("uvicorn")
    uvicorn_logger.addHandler(caplog.handler)
    try:
        yield caplog
    finally:
        uvicorn_logger.removeHandler(caplog.handler)
