"""Socket Mode end to end: ``SLACK_APP_TOKEN`` set, no Request URL, no signatures.

The real app (uvicorn, lifespan, slack-bolt's ``SocketModeHandler`` over slack_sdk's builtin
``SocketModeClient``) asks the fake Web API for a WebSocket URL with the app-level token
(``apps.connections.open``), connects to a real WebSocket server on loopback
(``tests/fakes/slack_socket.py``), and is sent Slack's envelopes there.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest
import uvicorn
from pydantic import SecretStr
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError

from bot.app import create_app
from bot.settings import Settings
from tests.fakes import slack
from tests.fakes.kube import FakeKubernetes
from tests.fakes.slack_socket import FakeSocketMode, SocketSession
from tests.helpers.bot import serve_in_thread, wait_for

RESTARTED_AT = "kubectl.kubernetes.io/restartedAt"


@dataclass
class SocketBot:
    """The bot served by uvicorn with Socket Mode on; ``stop()`` runs the lifespan's shutdown."""

    server: uvicorn.Server
    thread: threading.Thread
    url: str

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=20)
        assert not self.thread.is_alive(), "uvicorn did not shut down"


@pytest.fixture
def fake_socket(fake_slack: slack.FakeSlack) -> Iterator[FakeSocketMode]:
    server = FakeSocketMode(fake_slack).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def socket_settings(settings: Settings) -> Settings:
    # Socket Mode needs no signing secret: nothing reaches the app over HTTP from Slack.
    return settings.model_copy(
        update={"slack_app_token": SecretStr(slack.APP_TOKEN), "slack_signing_secret": None}
    )


@pytest.fixture
def socket_bot(socket_settings: Settings, fake_socket: FakeSocketMode) -> Iterator[SocketBot]:
    assert socket_settings.socket_mode
    server, thread, url = serve_in_thread(create_app(socket_settings))
    bot = SocketBot(server, thread, url)
    try:
        yield bot
    finally:
        bot.stop()


def connected(fake_socket: FakeSocketMode) -> SocketSession:
    return wait_for(fake_socket.session, timeout=10, what="the app's WebSocket connection")


def restarted(kube: FakeKubernetes) -> bool:
    obj = kube.get_object("apps/v1", "Deployment", "payments", "payments-api")
    assert obj is not None
    return RESTARTED_AT in (obj["spec"]["template"]["metadata"].get("annotations") or {})


def test_restart_requested_and_approved_over_socket_mode(
    socket_bot: SocketBot,
    fake_socket: FakeSocketMode,
    fake_slack: slack.FakeSlack,
    kube: FakeKubernetes,
) -> None:
    session = connected(fake_socket)

    # The app got its URL from apps.connections.open, with the app-level token, once.
    opens = fake_slack.calls_of("apps.connections.open")
    assert len(opens) == 1
    assert opens[0].token == slack.APP_TOKEN
    assert opens[0].response["ok"] is True
    assert opens[0].response["url"].startswith(fake_socket.url)
    assert session.ticket is not None
    assert session.ticket in opens[0].response["url"]
    assert fake_socket.refused == []

    # /ops restart, as a slash_commands envelope: acked on the socket with the ephemeral answer.
    command = slack.slash_command_payload(
        "restart payments-api -n payments", user_id="U0DEV1", response_url=fake_slack.response_url()
    )
    envelope_id = session.send_envelope("slash_commands", command, accepts_response_payload=True)
    ack = wait_for(lambda: session.ack_for(envelope_id), timeout=10, what="the command's ack")
    assert set(ack) == {"envelope_id", "payload"}
    assert ack["payload"]["response_type"] == "ephemeral"
    assert "Checking `/ops restart payments-api -n payments`" in ack["payload"]["text"]

    approval = wait_for(
        lambda: [c for c in fake_slack.calls_of("chat.postMessage") if c.args.get("blocks")],
        timeout=10,
        what="the approval message",
    )[0]
    assert approval.args["channel"] == "C0APPROVALS"
    assert approval.token == slack.BOT_TOKEN
    assert not restarted(kube)

    # An SRE clicks Approve: an interactive envelope, acked with an empty body.
    click = slack.block_action_payload(
        "approve",
        "1",
        user_id="U0SRE1",
        channel_id=approval.args["channel"],
        message_ts=approval.response["ts"],
        response_url=fake_slack.response_url(),
    )
    click_id = session.send_envelope("interactive", click, accepts_response_payload=False)
    assert wait_for(lambda: session.ack_for(click_id), timeout=10) == {"envelope_id": click_id}
    wait_for(lambda: restarted(kube), timeout=15, what="the Deployment to be restarted")
    wait_for(
        lambda: [c for c in fake_slack.calls_of("chat.update") if "succeeded" in c.args["text"]],
        timeout=10,
        what="the approval message to say succeeded",
    )

    # Only apps.connections.open used the app-level token, and every call was accepted.
    for call in fake_slack.calls:
        if call.method != "response_url":
            assert call.response.get("ok") is True, call
            want = slack.APP_TOKEN if call.method == "apps.connections.open" else slack.BOT_TOKEN
            assert call.token == want, call.method
    assert [m for m in session.received if "envelope_id" not in m] == []

    # Shutting the app down closes the socket: the server sees the connection end, and the
    # client neither reconnects nor asks for a new URL.
    socket_bot.stop()
    assert session.closed.wait(timeout=5), "the app left its WebSocket connection open"
    # slack_sdk's builtin client closes the TCP connection without a WebSocket Close frame
    # (Connection.disconnect() only calls sock.close()); a Close frame, if it ever sends one,
    # must be a normal closure.
    assert session.close_frame is None or session.close_frame.code == 1000
    assert len(fake_socket.sessions) == 1
    assert len(fake_slack.calls_of("apps.connections.open")) == 1


def test_http_endpoint_takes_no_unsigned_requests_in_socket_mode(
    socket_bot: SocketBot,
    fake_socket: FakeSocketMode,
    fake_slack: slack.FakeSlack,
    kube: FakeKubernetes,
) -> None:
    """Nothing is signed in Socket Mode (no signing secret is needed), so POST /slack/events must
    not dispatch: else anyone reaching the port could request, and approve as any SRE."""
    session = connected(fake_socket)
    command = slack.slash_command_payload(
        "restart payments-api -n payments", user_id="U0DEV1", response_url=fake_slack.response_url()
    )
    session.send_envelope("slash_commands", command, accepts_response_payload=True)
    approval = wait_for(
        lambda: [c for c in fake_slack.calls_of("chat.postMessage") if c.args.get("blocks")],
        timeout=10,
        what="the approval message",
    )[0]
    forged_command = slack.slash_command_body(
        "restart cart -n checkout", user_id="U0DEV1", response_url=fake_slack.response_url()
    )
    forged_click = slack.block_action_body(
        "approve",
        "1",
        user_id="U0SRE1",
        channel_id=approval.args["channel"],
        message_ts=approval.response["ts"],
        response_url=fake_slack.response_url(),
    )
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    with httpx.Client(timeout=10) as http:
        assert http.get(f"{socket_bot.url}/healthz").status_code == 200
        ready = http.get(f"{socket_bot.url}/readyz")
        assert ready.status_code == 200
        assert ready.json()["socket_mode"] == "connected"
        for body in (forged_command, forged_click):
            forged = http.post(f"{socket_bot.url}/slack/events", content=body, headers=form)
            assert forged.status_code == 404, forged.text
    socket_bot.stop()  # waits for anything the app was still doing
    assert not restarted(kube)
    assert len([c for c in fake_slack.calls_of("chat.postMessage") if c.args.get("blocks")]) == 1


def test_fake_slack_token_types(fake_slack: slack.FakeSlack, fake_socket: FakeSocketMode) -> None:
    """apps.connections.open takes the app-level token only, every other method the bot token."""
    bot = WebClient(token=slack.BOT_TOKEN, base_url=fake_slack.api_url)
    with pytest.raises(SlackApiError) as refused:
        bot.apps_connections_open(app_token=slack.BOT_TOKEN)
    assert refused.value.response["error"] == "not_allowed_token_type"
    with pytest.raises(SlackApiError) as unknown:
        bot.apps_connections_open(app_token="xapp-1-someone-else")
    assert unknown.value.response["error"] == "invalid_auth"

    app = WebClient(token=slack.APP_TOKEN, base_url=fake_slack.api_url)
    with pytest.raises(SlackApiError) as wrong_type:
        app.chat_postMessage(channel="C0DEV", text="hi")
    assert wrong_type.value.response["error"] == "not_allowed_token_type"

    url = bot.apps_connections_open(app_token=slack.APP_TOKEN)["url"]
    assert url.startswith(fake_socket.url)
    assert "app_id=A0OPSGATE" in url
