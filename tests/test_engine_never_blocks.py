"""Acks never wait on work; every failure after the ack is answered; a replay makes nothing twice.

Driven as Slack drives the bot: signed HTTP requests to a running ``opsgate serve`` app, the fake
Slack and the fake Kubernetes API over real HTTP.
"""

from __future__ import annotations

import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from slack_sdk import WebClient
from sqlalchemy import create_engine, make_url, select
from sqlalchemy.orm import Session

from approvals.db import make_engine
from approvals.lifecycle import Actor
from approvals.models import AuditEvent, Request
from bot.listeners import listener_failed
from bot.settings import Settings
from bot.work import DATABASE_DOWN, Workers
from tests.fakes import slack
from tests.fakes.kube import FakeKubernetes, deployment
from tests.fakes.tcp_proxy import TcpProxy
from tests.helpers.bot import RunningBot, running_bot, wait_for
from tests.helpers.gate import World, built_gate, restart
from tests.helpers.gate import world as world
from tests.helpers.slack_flow import patches, responses, submit, wait_approval_message

STALLED = 12
ACK_BUDGET = 3.0
"""Seconds Slack waits for an ack."""


def statuses(settings: Settings) -> list[str]:
    engine = create_engine(settings.database_url)
    try:
        with Session(engine) as session:
            return list(session.scalars(select(Request.status).order_by(Request.id)))
    finally:
        engine.dispose()


def timed(call: object) -> tuple[httpx.Response, float]:
    start = time.monotonic()
    response = call()  # type: ignore[operator]
    return response, time.monotonic() - start


def test_slow_rollouts_never_delay_an_ack(
    bot: RunningBot, kube: FakeKubernetes, settings: Settings
) -> None:
    """Twelve auto-approved restarts whose rollouts stall hold no thread: help, status and an
    Approve click each ack within Slack's 3 s and are answered."""
    for i in range(STALLED):
        kube.add(deployment(f"web-{i}", "staging-web", replicas=2))
        kube.stall("staging-web", f"web-{i}", after_reads=1_000_000)  # never done in the test
    with ThreadPoolExecutor(STALLED) as pool:
        acks = list(
            pool.map(lambda i: bot.command(f"restart web-{i} -n staging-web")[0], range(STALLED))
        )
    assert [a.status_code for a in acks] == [200] * STALLED
    wait_for(
        lambda: statuses(settings).count("executing") == STALLED,
        what="twelve restarts applied and following their rollouts",
    )
    wait_for(lambda: len(patches(kube)) == STALLED, what="the twelve restart PATCHes")
    applied = STALLED

    help_answer, seconds = timed(lambda: bot.command("help")[0])
    assert help_answer.status_code == 200
    assert seconds < ACK_BUDGET
    assert "/ops restart" in help_answer.json()["text"]

    status_answer, response_url = bot.command("status")
    assert status_answer.status_code == 200
    [listed] = wait_for(lambda: responses(bot.fake_slack, response_url), what="/ops status")
    assert "Request #" in listed

    submit(bot, "restart payments-api -n payments")
    wait_for(lambda: len(statuses(settings)) == STALLED + 1, what="the prod request")
    wait_for(
        lambda: [
            c
            for c in bot.fake_slack.calls_of("chat.postMessage")
            if c.args.get("blocks") and f"#{STALLED + 1}" in c.args.get("text", "")
        ],
        what="its approval message",
    )
    click, seconds = timed(lambda: bot.click("approve", str(STALLED + 1), user="U0SRE1"))
    assert click.status_code == 200
    assert seconds < ACK_BUDGET
    wait_for(lambda: len(patches(kube)) == applied + 1, what="the approved restart's PATCH")
    wait_for(lambda: statuses(settings)[-1] == "succeeded", what="the prod restart to finish")
    assert statuses(settings)[:STALLED] == ["executing"] * STALLED  # still followed


def test_a_replayed_slash_command_makes_nothing_twice(
    bot: RunningBot, kube: FakeKubernetes, settings: Settings
) -> None:
    body = slack.slash_command_body(
        "restart payments-api -n payments",
        user_id="U0DEV1",
        response_url=bot.fake_slack.response_url(),
        trigger_id="13345224609.738474920.8088930838d88f008e0",
    )
    first = bot.post(body)
    assert first.status_code == 200
    # the same signed body again (a replay), then as Slack's retry would carry it
    assert bot.post(body).status_code == 200
    retry_headers = {**slack.signed_headers(body), "X-Slack-Retry-Num": "1"}
    assert bot.post(body, headers=retry_headers).status_code == 200
    wait_for(lambda: statuses(settings) == ["pending"], what="the one request")
    time.sleep(0.3)  # a second request, if any, would have been filed by now
    assert statuses(settings) == ["pending"]


def test_ids_out_of_range_are_answered_before_the_database(
    bot: RunningBot, settings: Settings
) -> None:
    for text, expected in [
        ("status 99999999999999999999", "request IDs go from 1 to 2147483647"),
        ("revoke 99999999999999999999", "grant IDs go from 1 to 2147483647"),
        ("extend 99999999999999999999 1h", "grant IDs go from 1 to 2147483647"),
        ("status ٣", "is not a request ID"),
    ]:
        answer, _ = bot.command(text)
        assert answer.status_code == 200
        assert expected in answer.json()["text"], text
    submit(bot, "restart payments-api -n payments")
    wait_approval_message(bot)
    before = len(bot.fake_slack.calls_of("chat.postEphemeral"))
    assert bot.click("approve", "99999999999999999999", user="U0SRE1").status_code == 200
    [told] = wait_for(
        lambda: bot.fake_slack.calls_of("chat.postEphemeral")[before:], what="the clicker told"
    )
    assert told.args["user"] == "U0SRE1"
    assert "does not name a request" in told.args["text"]
    assert statuses(settings) == ["pending"]


def test_an_unreachable_database_is_answered_to_the_person(tmp_path: Path) -> None:
    """A real refused connection (nothing listens on the port) becomes the answer, once."""
    engine = make_engine("postgresql+psycopg://postgres@127.0.0.1:9/none?connect_timeout=2")
    told: list[str] = []
    try:

        def read() -> None:
            with engine.connect() as connection:
                connection.exec_driver_sql("select 1")

        Workers.run(read, answer=told.append, what="`/ops status`", reference="ref1")
    finally:
        engine.dispose()
    assert len(told) == 1
    assert DATABASE_DOWN in told[0]


def test_an_unexpected_error_is_answered_once_with_its_reference(
    caplog: object,
) -> None:
    told: list[str] = []

    def broken() -> None:
        raise KeyError("boom")

    Workers.run(broken, answer=told.append, what="`/ops status 3`", reference="abc123")
    assert len(told) == 1
    assert "unexpected error (KeyError)" in told[0]
    assert "abc123" in told[0]
    assert "boom" not in told[0]  # an unexpected message might hold anything


def test_a_followed_rollout_survives_a_restart_of_the_bot(
    world: World, database_url: str, kube: FakeKubernetes, tmp_path: Path
) -> None:
    """The database says what is being followed: a new gate (the bot after a restart, or
    another replica) finishes a rollout the first one started."""
    kube.stall("payments", "payments-api", after_reads=1_000_000)
    view = world.gate.submit(restart())
    world.gate.approve(view.id, Actor("U0SRE1"))
    assert world.gate.get(view.id).status == "executing"
    assert world.gate.follow_rollouts() == []  # still rolling out
    kube.unstall("payments", "payments-api")

    with built_gate(
        database_url,
        kube=kube,
        kubeconfig=tmp_path / "kc2",
        contexts=("prod",),
        policy=world.gate._policy,
        notifier=world.notifier,
        clock=world.clock,
        actions={},
    ) as built:
        restarted = built.gate
        assert restarted.recover() == []  # nothing to re-run, nothing marked failed
        for _ in range(20):
            if restarted.follow_rollouts():
                break
        view = restarted.get(view.id)
        assert view.status == "succeeded"
        assert view.result is not None
        assert "rolled out" in view.result


def test_a_rollout_that_runs_out_of_time_fails_and_says_it_was_applied(world: World) -> None:
    world.kube.stall("payments", "payments-api", after_reads=1_000_000)
    view = world.gate.submit(restart())
    world.gate.approve(view.id, Actor("U0SRE1"))
    assert world.gate.follow_rollouts() == []
    world.clock.now += timedelta(seconds=301)  # past the default rollout timeout
    assert world.gate.follow_rollouts() == [view.id]
    failed = world.gate.get(view.id)
    assert failed.status == "failed"
    assert failed.error is not None
    assert failed.error.startswith("restarted deployment/payments-api in payments")
    assert "but not complete after 301 s" in failed.error
    with world.sessions() as session:  # type: ignore[operator]
        events = session.scalars(
            select(AuditEvent.event).where(AuditEvent.request_id == view.id)
        ).all()
    assert events[-1] == "failed"


def test_a_database_that_goes_away_is_answered_and_readyz_says_503(
    database_url: str, settings: Settings, fake_slack: slack.FakeSlack
) -> None:
    """PostgreSQL behind a proxy that the test cuts: commands and clicks are answered with
    "cannot reach its database", /readyz says 503, and all is well once it is back."""
    url = make_url(database_url)
    if url.get_backend_name() != "postgresql":
        pytest.skip("needs a database server to take away (the suite on PostgreSQL runs it)")
    proxy = TcpProxy(url.port or 5432)
    proxied = url.set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False)
    try:
        with running_bot(settings.model_copy(update={"database_url": proxied}), fake_slack) as bot:
            assert bot.http.get(f"{bot.url}/readyz").status_code == 200
            proxy.cut()
            ready = bot.http.get(f"{bot.url}/readyz")
            assert ready.status_code == 503
            assert ready.json()["database"].startswith("unreachable")
            for text in ("status", "restart payments-api -n payments"):
                answer, response_url = bot.command(text)
                assert answer.status_code == 200, text
                told = answer.json().get("text", "")
                if DATABASE_DOWN not in told:  # answered after the ack, through response_url
                    told = wait_for(lambda u=response_url: responses(fake_slack, u), what=text)[0]
                assert DATABASE_DOWN in told, text
            time.sleep(0.5)  # the scheduler's loop reads its job table many times meanwhile
            proxy.restore()
            wait_for(lambda: bot.http.get(f"{bot.url}/readyz").status_code == 200, what="ready")
            # the scheduler survived the outage (APScheduler 3 lets one failed read of its job
            # table end its thread for good, and grants would no longer be revoked on time),
            # or was started once the database came back (a start during an outage retries)
            wait_for(
                lambda: [t for t in threading.enumerate() if t.name == "APScheduler"],
                what="the scheduler's thread",
            )
            time.sleep(0.3)
            assert [t for t in threading.enumerate() if t.name == "APScheduler"]
            submit(bot, "restart payments-api -n payments")
            wait_approval_message(bot)
    finally:
        proxy.cut()


def test_a_listener_that_raises_is_acked_200_and_answered_with_its_reference(
    fake_slack: slack.FakeSlack, caplog: pytest.LogCaptureFixture
) -> None:
    workers = Workers(1)
    client = WebClient(token=slack.BOT_TOKEN, base_url=fake_slack.api_url)
    try:
        command = listener_failed(
            KeyError("secret-ish"), {"command": "/ops", "text": "status"}, client, workers
        )
        assert command.status == 200
        text = json.loads(command.body)["text"]
        assert "unexpected error (KeyError)" in text
        assert "secret-ish" not in text
        response_url = fake_slack.response_url()
        click = listener_failed(
            ValueError("x"),
            {"type": "block_actions", "user": {"id": "U0SRE1"}, "response_url": response_url},
            client,
            workers,
        )
        assert click.status == 200
        [told] = wait_for(lambda: responses(fake_slack, response_url), what="the clicker told")
        assert "unexpected error (ValueError)" in told
    finally:
        workers.shutdown()
    failures = [r for r in caplog.records if "failed unexpectedly" in r.getMessage()]
    assert len(failures) == 2  # logged once each
