"""``opsgate audit verify`` / ``export`` and the webhook sink, against a real HTTP receiver that
fails, goes down and comes back: every event arrives, in order, signed."""

from __future__ import annotations

import json
import threading
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from cloudevents.core.formats.json import JSONFormat
from cloudevents.core.v1.event import CloudEvent
from pydantic import SecretStr
from slack_sdk import WebClient
from sqlalchemy import Engine, select, update
from sqlalchemy.orm import Session, sessionmaker

from approvals.audit_chain import event_hash
from approvals.audit_sink import WebhookSink, signature
from approvals.db import make_engine, make_sessionmaker
from approvals.lifecycle import Actor, record
from approvals.models import ActorKind, AuditEvent, AuditSink, Request, Status
from approvals.policy_store import PolicyStore
from bot.audit_jobs import post_anchor
from bot.cli import main
from bot.settings import Settings
from tests.fakes import slack
from tests.fakes.kube import FakeKubernetes
from tests.helpers.bot import running_bot, wait_for

NOW = datetime(2026, 12, 4, 3, 0, tzinfo=UTC)
SECRET = b"sink-secret"


@pytest.fixture
def cli_env(monkeypatch: pytest.MonkeyPatch, database_url: str) -> str:
    monkeypatch.setenv("OPSGATE_DATABASE_URL", database_url)
    return database_url


def write_events(sessions: sessionmaker[Session], count: int, *, start: int = 0) -> None:
    with sessions.begin() as session:
        request = Request(
            action="restart",
            params={"name": "payments-api", "namespace": "payments"},
            status=Status.PENDING.value,
            requester_id="U0DEV1",
            target="deployment/payments-api",
            policy_sha256="0" * 64,
            created_at=NOW,
            updated_at=NOW,
        )
        session.add(request)
        session.flush()
        for i in range(start, start + count):
            record(
                session,
                request,
                event="approval",
                actor=Actor(f"U{i:04d}", ActorKind.HUMAN),
                now=NOW + timedelta(minutes=i),
                detail={"i": i},
            )


def test_verify_says_ok_then_names_the_changed_event(
    cli_env: str,
    engine: Engine,
    sessions: sessionmaker[Session],
    capsys: pytest.CaptureFixture[str],
) -> None:
    write_events(sessions, 5)
    assert main(["audit", "verify"]) == 0
    assert "audit chain OK: 5 events, head seq 5" in capsys.readouterr().out
    with engine.begin() as conn:
        conn.execute(update(AuditEvent).where(AuditEvent.seq == 3).values(actor_id="U0EVIL"))
    assert main(["audit", "verify"]) == 1
    assert "Event seq 3 (id 3) was changed." in capsys.readouterr().err
    assert main(["audit", "verify", "--since", "4"]) == 0  # the part after it still holds
    assert main(["audit", "verify", "--anchor", "3:nothex"]) == 2
    assert "--anchor takes SEQ:HASH" in capsys.readouterr().err


def test_export_writes_every_event_once_in_order_and_the_cursor_resumes(
    cli_env: str, sessions: sessionmaker[Session], tmp_path: Path
) -> None:
    cursor, out = tmp_path / "cursor", tmp_path / "events.jsonl"
    write_events(sessions, 4)
    assert main(["audit", "export", "--cursor", str(cursor), "--output", str(out)]) == 0
    assert cursor.read_text() == "4\n"
    assert main(["audit", "export", "--cursor", str(cursor), "--output", str(out)]) == 0
    write_events(sessions, 3, start=4)
    assert main(["audit", "export", "--cursor", str(cursor), "--output", str(out)]) == 0
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert [e["seq"] for e in lines] == list(range(1, 8))
    assert [e["detail"]["i"] for e in lines] == list(range(7))
    assert lines[0]["created_at"] == "2026-12-04T03:00:00Z"
    # an exported event carries what verifies it
    first = {**lines[0], "created_at": NOW}
    assert event_hash(first) == lines[0]["hash"]
    assert cursor.read_text() == "7\n"


def test_export_since_a_position_or_a_time_and_as_cloudevents(
    cli_env: str,
    sessions: sessionmaker[Session],
    capsys: pytest.CaptureFixture[str],
) -> None:
    write_events(sessions, 5)
    assert main(["audit", "export", "--since", "4"]) == 0
    assert [json.loads(x)["seq"] for x in capsys.readouterr().out.splitlines()] == [4, 5]
    assert main(["audit", "export", "--since", "2026-12-04T03:03:00"]) == 0
    assert [json.loads(x)["seq"] for x in capsys.readouterr().out.splitlines()] == [4, 5]
    assert main(["audit", "export", "--since", "yesterday"]) == 2
    capsys.readouterr()
    assert main(["audit", "export", "--format", "cloudevents"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 5
    parsed = JSONFormat().read(CloudEvent, lines[1].encode())
    attributes = parsed.get_attributes()
    assert attributes["specversion"] == "1.0"
    assert attributes["id"] == "opsgate-audit-2"
    assert attributes["type"] == "io.opsgate.audit.approval"
    assert attributes["subject"] == "request/1"
    assert attributes["sequence"] == "2"
    data = parsed.get_data()
    assert isinstance(data, dict)
    assert data["seq"] == 2


class Receiver:
    """A webhook receiver on a fixed loopback port: fails the first ``fail_first`` POSTs with
    503, records the others; can be stopped (connections refused) and started again."""

    def __init__(self, fail_first: int = 0) -> None:
        self.fail_first = fail_first
        self.received: list[tuple[dict[str, str], bytes]] = []
        self.attempts = 0
        self._lock = threading.Lock()
        self.port = 0
        self._server: ThreadingHTTPServer | None = None
        self.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/audit"

    def start(self) -> None:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                with receiver._lock:
                    receiver.attempts += 1
                    failing = receiver.attempts <= receiver.fail_first
                    if not failing:
                        receiver.received.append((dict(self.headers.items()), body))
                self.send_response(503 if failing else 204)
                self.end_headers()

            def log_message(self, *_: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.port = self._server.server_address[1]
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        assert self._server is not None
        self._server.shutdown()
        self._server.server_close()

    def seqs(self) -> list[int]:
        return [int(headers["X-Opsgate-Audit-Seq"]) for headers, _ in self.received]


class Clock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> datetime:
        return self.now


def test_the_webhook_sink_delivers_everything_in_order_through_failures_and_a_restart(
    sessions: sessionmaker[Session],
) -> None:
    receiver = Receiver(fail_first=2)
    clock = Clock()
    write_events(sessions, 6)
    sink = WebhookSink(sessions, receiver.url, SECRET, clock=clock, timeout=5)
    try:
        assert sink.deliver_due() == 0  # 503: backoff 1 s
        assert sink.deliver_due() == 0  # not due yet: no attempt
        assert receiver.attempts == 1
        clock.now += timedelta(seconds=1)
        assert sink.deliver_due() == 0  # 503 again: backoff 2 s
        clock.now += timedelta(seconds=2)
        assert sink.deliver_due() == 6
        receiver.stop()  # the receiver goes down; opsgate writes on and restarts meanwhile
        write_events(sessions, 3, start=6)
        assert sink.deliver_due() == 0
        with sessions() as session:
            state = session.get(AuditSink, "webhook")
            assert state is not None
            assert (state.delivered_seq, state.attempts) == (6, 1)
            assert state.last_error is not None
            assert state.last_error.startswith("ConnectError")
        receiver.start()
        clock.now += timedelta(seconds=1)
        restarted = WebhookSink(sessions, receiver.url, SECRET, clock=clock, timeout=5)
        assert restarted.deliver_due() == 3
        assert restarted.deliver_due() == 0
    finally:
        receiver.stop()
    assert receiver.seqs() == list(range(1, 10))
    for headers, body in receiver.received:
        expected = signature(SECRET, headers["X-Opsgate-Request-Timestamp"], body)
        assert headers["X-Opsgate-Signature"] == expected
        assert json.loads(body)["seq"] == int(headers["X-Opsgate-Audit-Seq"])
    assert (
        signature(b"other", "1", receiver.received[0][1])
        != receiver.received[0][0]["X-Opsgate-Signature"]
    )


def test_two_replicas_running_the_sink_at_once_deliver_each_event_once(
    sessions: sessionmaker[Session],
) -> None:
    receiver = Receiver()
    write_events(sessions, 20)
    replicas = [WebhookSink(sessions, receiver.url, SECRET, timeout=5) for _ in range(2)]
    barrier = threading.Barrier(len(replicas))
    counts: list[int] = []

    def run(sink: WebhookSink) -> None:
        barrier.wait(timeout=30)
        counts.append(sink.deliver_due())

    threads = [threading.Thread(target=run, args=(sink,)) for sink in replicas]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
    finally:
        receiver.stop()
    assert sorted(counts) == [0, 20]
    assert receiver.seqs() == list(range(1, 21))
    with sessions() as session:
        assert session.scalar(select(AuditSink.delivered_seq)) == 20


def test_serve_ships_a_restarts_events_to_the_webhook_and_anchors_the_head(
    settings: Settings, fake_slack: slack.FakeSlack, kube: FakeKubernetes, tmp_path: Path
) -> None:
    """``opsgate serve`` with OPSGATE_AUDIT_WEBHOOK_URL: an auto-approved restart's four events
    reach the receiver signed; the anchor posted to the audit channel verifies the chain."""
    receiver = Receiver(fail_first=1)
    configured = settings.model_copy(
        update={
            "audit_webhook_url": receiver.url,
            "audit_webhook_secret": SecretStr(SECRET.decode()),
            "audit_webhook_format": "cloudevents",
            "audit_webhook_interval": 0.1,
        }
    )
    try:
        with running_bot(configured, fake_slack) as bot:
            answer, _ = bot.command("restart deploy/web -n staging-web")
            assert answer.status_code == 200
            wait_for(lambda: len(receiver.received) >= 4, what="4 audit events delivered")
    finally:
        receiver.stop()
    bodies = [JSONFormat().read(CloudEvent, body) for _, body in receiver.received]
    assert [b.get_attributes()["type"] for b in bodies] == [
        "io.opsgate.audit.submitted",
        "io.opsgate.audit.auto_approved",
        "io.opsgate.audit.executing",
        "io.opsgate.audit.succeeded",
    ]
    for headers, body in receiver.received:
        assert headers["Content-Type"] == "application/cloudevents+json"
        expected = signature(SECRET, headers["X-Opsgate-Request-Timestamp"], body)
        assert headers["X-Opsgate-Signature"] == expected
    engine = make_engine(settings.database_url)
    try:
        store = PolicyStore(settings.policy_path)
        client = WebClient(token=slack.BOT_TOKEN, base_url=fake_slack.api_url)
        assert post_anchor(make_sessionmaker(engine), client, store)
        posted = fake_slack.calls_of("chat.postMessage")[-1]
        assert posted.args["channel"] == store.current().policy.audit_channel
        anchor = posted.args["text"].split("--anchor ")[1].rstrip("`.")
        assert anchor.startswith("4:")
    finally:
        engine.dispose()
    assert main_with_db(settings.database_url, ["audit", "verify", "--anchor", anchor]) == 0


def main_with_db(database_url: str, argv: list[str]) -> int:
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("OPSGATE_DATABASE_URL", database_url)
        return main(argv)
