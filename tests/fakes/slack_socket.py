"""A fake Slack Socket Mode endpoint: a real WebSocket server (``websockets``) on loopback.

``FakeSocketMode(fake_slack)`` listens on ``ws://127.0.0.1:PORT/link/`` and sets
``fake_slack.socket_mode_url``, so the fake Web API's ``apps.connections.open`` hands that URL
out with a one-time ``?ticket=…&app_id=…``. The opening handshake is refused (HTTP 401) unless it
carries a ticket the fake issued and has not seen used, as Slack refuses a stale URL.

Each accepted connection is a :class:`SocketSession`. As Slack does, the server first sends
``{"type": "hello", …}``; the test then sends envelopes (``send_envelope``) and reads the app's
acknowledgements (``ack_for``), ``{"envelope_id": …, "payload": {…}}``. Every text frame the app
sends is recorded (``SocketSession.received``); when the app goes away, ``closed`` is set and
``close_frame`` says whether it sent a WebSocket Close frame (and which code) before the TCP
connection ended.
"""

from __future__ import annotations

import http
import json
import threading
import uuid
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlsplit

from websockets.exceptions import ConnectionClosed
from websockets.frames import Close
from websockets.http11 import Request, Response
from websockets.sync.server import Server, ServerConnection, serve

from tests.fakes.slack import APP_ID, FakeSlack

LINK_PATH = "/link/"


@dataclass
class SocketSession:
    """One WebSocket connection of the app to the fake Socket Mode endpoint."""

    connection: ServerConnection
    path: str
    received: list[dict[str, Any]] = field(default_factory=list)
    closed: threading.Event = field(default_factory=threading.Event)
    close_frame: Close | None = None
    """The Close frame the app sent, or ``None`` when it just dropped the TCP connection."""
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def ticket(self) -> str | None:
        return _ticket(self.path)

    def send(self, message: dict[str, Any]) -> None:
        self.connection.send(json.dumps(message))

    def send_envelope(
        self,
        type_: str,
        payload: dict[str, Any],
        *,
        accepts_response_payload: bool,
        envelope_id: str | None = None,
    ) -> str:
        """Send ``{"envelope_id", "type", "payload", "accepts_response_payload"}`` as Slack
        does; returns the envelope ID the app must acknowledge."""
        envelope_id = envelope_id or str(uuid.uuid4())
        self.send(
            {
                "envelope_id": envelope_id,
                "type": type_,
                "payload": payload,
                "accepts_response_payload": accepts_response_payload,
            }
        )
        return envelope_id

    def ack_for(self, envelope_id: str) -> dict[str, Any] | None:
        """The app's acknowledgement of ``envelope_id``, once it arrived."""
        with self._lock:
            for message in self.received:
                if message.get("envelope_id") == envelope_id:
                    return message
        return None

    def acks(self) -> list[dict[str, Any]]:
        with self._lock:
            return [m for m in self.received if "envelope_id" in m]

    def _record(self, message: dict[str, Any]) -> None:
        with self._lock:
            self.received.append(message)


class FakeSocketMode:
    """The WebSocket side of a fake Slack in Socket Mode; see the module docstring."""

    def __init__(self, fake_slack: FakeSlack) -> None:
        self.fake_slack = fake_slack
        self.sessions: list[SocketSession] = []
        self.refused: list[str] = []
        """Paths of opening handshakes refused for a missing, unknown or reused ticket."""
        self._lock = threading.Lock()
        self._server: Server = serve(
            self._handle,
            "127.0.0.1",
            0,
            process_request=self._check_ticket,
            compression=None,  # Slack's builtin client does not negotiate permessage-deflate
            open_timeout=5,
            close_timeout=2,
        )
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="fake-socket-mode", daemon=True
        )

    @property
    def url(self) -> str:
        port = self._server.socket.getsockname()[1]
        return f"ws://127.0.0.1:{port}{LINK_PATH}"

    def start(self) -> FakeSocketMode:
        self._thread.start()
        self.fake_slack.socket_mode_url = self.url
        return self

    def stop(self) -> None:
        """Stop listening, close open connections (code 1001) and wait for their handlers."""
        self.fake_slack.socket_mode_url = None
        self._server.shutdown()
        self._thread.join(timeout=10)

    def session(self) -> SocketSession | None:
        """The latest connection, if any."""
        with self._lock:
            return self.sessions[-1] if self.sessions else None

    # --- the server side ---------------------------------------------------------------------

    def _check_ticket(self, connection: ServerConnection, request: Request) -> Response | None:
        path = urlsplit(request.path).path
        if path != LINK_PATH or not self.fake_slack.use_ticket(_ticket(request.path)):
            with self._lock:
                self.refused.append(request.path)
            return connection.respond(http.HTTPStatus.UNAUTHORIZED, "invalid ticket\n")
        return None

    def _handle(self, connection: ServerConnection) -> None:
        assert connection.request is not None
        session = SocketSession(connection, connection.request.path)
        with self._lock:
            self.sessions.append(session)
        try:
            session.send(
                {
                    "type": "hello",
                    "num_connections": 1,
                    "debug_info": {
                        "host": "applink-fake-1",
                        "build_number": 1,
                        "approximate_connection_time": 18060,
                    },
                    "connection_info": {"app_id": APP_ID},
                }
            )
            for message in connection:
                session._record(json.loads(message))
        except ConnectionClosed:
            pass
        finally:
            session.close_frame = connection.protocol.close_rcvd
            session.closed.set()


def _ticket(path: str) -> str | None:
    tickets = parse_qs(urlsplit(path).query).get("ticket")
    return tickets[0] if tickets else None
