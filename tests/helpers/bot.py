"""The bot served on a real socket and talked to as Slack does, and waiting for what it does."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import httpx
import pytest
import uvicorn
from sqlalchemy import create_engine, text

from bot.app import create_app
from bot.settings import Settings
from tests.fakes import slack


def wait_for(predicate: Callable[[], Any], *, timeout: float = 15.0, what: str = "") -> Any:
    """Poll ``predicate`` until it returns something truthy; fail the test after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what or predicate}")
        time.sleep(0.02)


@dataclass
class RunningBot:
    """The bot served by uvicorn on a loopback port, and a way to talk to it as Slack does."""

    url: str
    fake_slack: slack.FakeSlack
    http: httpx.Client
    database_url: str | None = None

    def post(self, body: str, headers: dict[str, str] | None = None) -> httpx.Response:
        response = self.http.post(
            f"{self.url}/slack/events", content=body, headers=headers or slack.signed_headers(body)
        )
        if response.headers.get("content-type", "").startswith("application/json"):
            answer = response.json()
            if isinstance(answer, dict):
                self.fake_slack.answers.append(answer)
        return response

    def command(
        self,
        text: str,
        *,
        user: str = "U0DEV1",
        channel_id: str = "C0DEV",
        channel_name: str = "dev",
    ) -> tuple[httpx.Response, str]:
        """Send a signed ``/ops <text>``; returns the HTTP answer and the response_url used."""
        response_url = self.fake_slack.response_url()
        body = slack.slash_command_body(
            text,
            user_id=user,
            channel_id=channel_id,
            channel_name=channel_name,
            response_url=response_url,
        )
        return self.post(body), response_url

    def click(self, action_id: str, value: str, *, user: str) -> httpx.Response:
        """Send a signed click on the approval message's button ``action_id``, once the bot
        has stored that message's reference (as a person can only click a message Slack
        shows; the product copes with an earlier click too, see test_gate)."""
        approval = self.approval_message()
        self.wait_stored(self.approval_ts())
        body = slack.block_action_body(
            action_id,
            value,
            user_id=user,
            channel_id=approval.args["channel"],
            message_ts=self.approval_ts(),
            response_url=self.fake_slack.response_url(),
        )
        return self.post(body)

    def approval_message(self) -> slack.Call:
        posts = [c for c in self.fake_slack.calls_of("chat.postMessage") if c.args.get("blocks")]
        assert posts, "no approval message was posted"
        return posts[-1]

    def approval_ts(self) -> str:
        return str(self.approval_message().response["ts"])

    def wait_stored(self, ts: str) -> None:
        """Wait until a request's approval message reference ``ts`` is in the database."""
        if self.database_url is None:
            return
        engine = create_engine(self.database_url)
        try:

            def stored() -> bool:
                with engine.connect() as connection:
                    found = connection.execute(
                        text("SELECT 1 FROM requests WHERE approval_ts = :ts"), {"ts": ts}
                    ).first()
                return found is not None

            wait_for(stored, what=f"the approval message {ts} to be stored")
        finally:
            engine.dispose()


def serve_in_thread(
    app: Any, *, lifespan: str = "on"
) -> tuple[uvicorn.Server, threading.Thread, str]:
    """Serve ``app`` with uvicorn on a free loopback port; returns the server, thread and URL."""
    config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan=lifespan)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    wait_for(lambda: server.started, what="uvicorn to start")
    port = server.servers[0].sockets[0].getsockname()[1]
    return server, thread, f"http://127.0.0.1:{port}"


@contextmanager
def running_bot(
    settings: Settings,
    fake_slack: slack.FakeSlack,
    *,
    clock: Callable[[], datetime] | None = None,
) -> Iterator[RunningBot]:
    """``create_app(settings, clock=clock)`` served on a loopback port (the app's default clock
    when ``clock`` is None), as a :class:`RunningBot`; stopped on leaving the block."""
    app = create_app(settings) if clock is None else create_app(settings, clock=clock)
    server, thread, url = serve_in_thread(app)
    with httpx.Client(timeout=10) as http:
        try:
            yield RunningBot(url, fake_slack, http, settings.database_url)
        finally:
            server.should_exit = True
            thread.join(timeout=10)


def buttons(message: slack.Call) -> dict[str, str]:
    """``{action_id: value}`` of every button of a message the bot posted."""
    found: dict[str, str] = {}
    raw = message.args.get("blocks") or []
    for block in json.loads(raw) if isinstance(raw, str) else raw:
        for element in block.get("elements", []) if block.get("type") == "actions" else []:
            if element.get("type") == "button":
                found[element["action_id"]] = element["value"]
    return found
