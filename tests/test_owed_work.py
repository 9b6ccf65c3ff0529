"""Work acked and not yet done survives the process: the database says what is owed.

A listener writes an inbox row before its ack (:mod:`approvals.inbox`); a process killed after the
ack and before the work ran leaves the row owed, and the next start (or, after the lease, another
replica) replays it exactly once.
"""

from __future__ import annotations

import subprocess
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from sqlalchemy import Engine, select, update
from sqlalchemy.orm import Session

from approvals.db import make_engine, migrate
from approvals.inbox import MAX_ATTEMPTS, AlreadyDone, Inbox
from approvals.models import OwedWork, Request
from bot.settings import Settings
from bot.work import Job, Workers
from tests.fakes import slack
from tests.fakes.kube import FakeKubernetes, write_kubeconfig
from tests.helpers.bot import running_bot, wait_for
from tests.helpers.gate import World, restart
from tests.helpers.gate import world as world
from tests.helpers.serve import OPSGATE, env_for, free_port
from tests.helpers.slack_flow import patches, responses, submit, wait_approval_message

TRIGGER = "13345224609.738474920.8088930838d88f008e0"


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    migrate(database_url)
    made = make_engine(database_url)
    yield made
    made.dispose()


def owed_rows(engine: Engine) -> list[OwedWork]:
    with Session(engine) as session:
        return list(session.scalars(select(OwedWork).order_by(OwedWork.id)))


def requests(engine: Engine) -> list[Request]:
    with Session(engine) as session:
        return list(session.scalars(select(Request).order_by(Request.id)))


def serve(tmp_path: Path, env: dict[str, str], name: str) -> tuple[subprocess.Popen[bytes], str]:
    """``opsgate serve`` in its own process; its URL once it answers /healthz."""
    port = free_port()
    with (tmp_path / f"{name}.log").open("wb") as log:  # the child keeps its own descriptor
        proc = subprocess.Popen(
            [OPSGATE, "serve", "--host", "127.0.0.1", "--port", str(port)],
            env=env,
            cwd=tmp_path,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"

    def up() -> bool:
        assert proc.poll() is None, (tmp_path / f"{name}.log").read_text()
        try:
            return httpx.get(f"{url}/healthz", timeout=1).status_code == 200
        except httpx.TransportError:
            return False

    wait_for(up, timeout=30, what=f"{name} to answer /healthz")
    return proc, url


def test_a_command_acked_by_a_killed_process_is_filed_once_after_the_restart(
    tmp_path: Path,
    database_url: str,
    fake_slack: slack.FakeSlack,
    kube: FakeKubernetes,
    policy_path: Path,
) -> None:
    """SIGKILL after the ack, while the work waits on the cluster (the preview's read of the
    Deployment hangs): the next process files the request once, puts it to the approvers and
    answers the requester through the command's response_url; the same command redelivered
    afterwards makes nothing."""
    kubeconfig = write_kubeconfig(tmp_path / "kubeconfig", {"prod": kube, "staging": kube})
    env = env_for(
        tmp_path,
        database_url,
        policy_path,
        SLACK_API_URL=fake_slack.api_url,
        KUBECONFIG=str(kubeconfig),
        OPSGATE_INSTANCE="opsgate-1",
    )
    kube.hang_next(30, method="GET", path_contains="/deployments/payments-api")
    # the bot is not in the requester's channel: the requester is answered through response_url
    fake_slack.fail("chat.postMessage", "not_in_channel", times=5, channel="C0DEV")
    response_url = fake_slack.response_url()
    body = slack.slash_command_body(
        "restart payments-api -n payments --reason 'after a crash'",
        user_id="U0DEV1",
        channel_id="C0DEV",
        response_url=response_url,
        trigger_id=TRIGGER,
    )
    first, url = serve(tmp_path, env, "first")
    try:
        ack = httpx.post(f"{url}/slack/events", content=body, headers=slack.signed_headers(body))
        assert ack.status_code == 200
        assert "Checking" in ack.json()["text"]
        wait_for(
            lambda: kube.requests_matching(method="GET", path_contains="/deployments/payments-api"),
            what="the preview's read of the Deployment (which hangs)",
        )
    finally:
        first.kill()  # SIGKILL: no shutdown, nothing finished
        first.wait(timeout=15)
    migrate(database_url)
    engine = make_engine(database_url)
    try:
        [owed] = owed_rows(engine)
        assert owed.done_at is None
        assert owed.kind == "command"
        assert owed.dedupe_key == f"command:{TRIGGER}"
        assert "token" not in owed.payload  # the verification token is not kept
        assert requests(engine) == []

        second, url = serve(tmp_path, env, "second")
        try:
            approval = wait_for(
                lambda: [
                    c for c in fake_slack.calls_of("chat.postMessage") if c.args.get("blocks")
                ],
                what="the approval message, posted by the new process",
            )
            [told] = wait_for(lambda: responses(fake_slack, response_url), what="the answer")
            assert "#1" in told
            again = httpx.post(
                f"{url}/slack/events", content=body, headers=slack.signed_headers(body)
            )
            assert again.status_code == 200
            wait_for(lambda: all(r.done_at for r in owed_rows(engine)), what="the row done")
            [request] = requests(engine)
            assert request.status == "pending"
            assert request.reason == "after a crash"
            assert len(approval) == 1
            assert len(owed_rows(engine)) == 1
            assert owed_rows(engine)[0].attempts == 2
        finally:
            second.terminate()
            second.wait(timeout=15)
        assert "replaying `/ops restart payments-api" in (tmp_path / "second.log").read_text()
    finally:
        engine.dispose()


def test_a_replay_of_a_filed_command_files_nothing(world: World, database_url: str) -> None:
    """The row is settled in the transaction that files the request: a process that died just
    after filing leaves nothing owed, and a replay of a settled row is refused whole."""
    engine = make_engine(database_url)
    try:
        inbox = Inbox(engine, clock=world.clock, instance="a", lease=300)
        owed = inbox.owe(
            "command", {"text": "x"}, user_id="U0DEV1", response_url=None, dedupe_key="command:1"
        )
        assert owed is not None
        view = world.gate.submit(replace(restart(), owed=owed))
        assert owed_rows(engine)[0].done_at is not None
        with pytest.raises(AlreadyDone):
            world.gate.submit(replace(restart(), owed=owed))
        assert [r.id for r in requests(engine)] == [view.id]
        assert (
            inbox.owe("command", {}, user_id="U0DEV1", response_url=None, dedupe_key="command:1")
            is None
        )
    finally:
        engine.dispose()


def test_owed_rows_are_claimed_after_the_lease_or_at_once_from_an_earlier_run(
    engine: Engine, world: World
) -> None:
    clock = world.clock
    a1 = Inbox(engine, clock=clock, instance="a", lease=60)
    first = a1.owe("command", {"n": 1}, user_id="U1", response_url=None, dedupe_key=None)
    b = Inbox(engine, clock=clock, instance="b", lease=60)
    assert b.claim() == []  # a1's lease runs
    a2 = Inbox(engine, clock=clock, instance="a", lease=60)  # a restart of instance a
    [taken] = a2.claim()
    assert (taken.id, taken.attempts, taken.payload) == (first, 2, {"n": 1})
    assert a2.claim() == []
    assert b.claim() == []
    clock.now += timedelta(seconds=61)  # a2 died too: its lease ran out
    [again] = b.claim()
    assert (again.id, again.attempts) == (first, 3)
    b.done(first)
    clock.now += timedelta(seconds=61)
    assert b.claim() == []
    assert a1.claim() == []
    clock.now += timedelta(days=2)
    assert b.forget() == 1


def test_two_replicas_claiming_at_once_take_each_row_once(engine: Engine, world: World) -> None:
    """Real threads released together by a barrier; on PostgreSQL through ``FOR UPDATE SKIP
    LOCKED``, on SQLite under the writer lock: every owed row is taken by exactly one."""
    clock = world.clock
    dead = Inbox(engine, clock=clock, instance="dead", lease=10)
    owed = [
        dead.owe("click", {"n": n}, user_id="U1", response_url=None, dedupe_key=None)
        for n in range(60)
    ]
    clock.now += timedelta(seconds=11)
    for trial in range(10):
        replicas = [Inbox(engine, clock=clock, instance=f"r{i}", lease=10) for i in range(2)]
        barrier = threading.Barrier(len(replicas))

        def claim(inbox: Inbox, barrier: threading.Barrier = barrier) -> list[int]:
            barrier.wait(timeout=30)
            taken: list[int] = []
            while batch := inbox.claim(7):
                taken += [o.id for o in batch]
            return taken

        with ThreadPoolExecutor(len(replicas)) as pool:
            taken = list(pool.map(claim, replicas))
        everything = sorted(taken[0] + taken[1])
        assert everything == owed, f"trial {trial}"
        clock.now += timedelta(seconds=11)  # both replicas die; the next trial claims again
    assert {r.attempts for r in owed_rows(engine)} == {11}


def test_work_that_keeps_killing_the_process_is_given_up_and_its_person_told(
    engine: Engine, world: World
) -> None:
    clock = world.clock
    told: list[str] = []
    ran: list[int] = []
    for attempt in range(MAX_ATTEMPTS + 1):
        inbox = Inbox(engine, clock=clock, instance="a", lease=60)
        workers = Workers(1, inbox=inbox)
        workers.handles(
            "command",
            lambda owed, payload: Job(lambda: ran.append(1), told.append, "`/ops status`"),
        )
        try:
            if attempt == 0:
                inbox.owe("command", {}, user_id="U1", response_url=None, dedupe_key=None)
            else:
                assert len(workers.replay_owed()) == 1
        finally:
            workers.shutdown()
        if attempt < MAX_ATTEMPTS:  # the process "dies" before marking it done
            with engine.begin() as connection:
                connection.execute(OwedWork.__table__.update().values(done_at=None))
    assert len(told) == 1
    assert "will not try again" in told[0]
    assert owed_rows(engine)[0].done_at is not None


def test_a_click_left_owed_is_replayed_at_start_once_and_a_second_replay_changes_nothing(
    settings: Settings, fake_slack: slack.FakeSlack, kube: FakeKubernetes
) -> None:
    """An Approve click a killed process acked (its row owed by an earlier run of the same
    instance) is carried out by the next start: one PATCH. Replayed once more after it took
    effect, the gate refuses it as already decided, tells the clicker, and patches nothing."""
    settings = settings.model_copy(update={"instance": "replay_test"})
    with running_bot(settings, fake_slack) as bot:
        submit(bot, "restart payments-api -n payments")
        bot.wait_stored(wait_approval_message(bot).response["ts"])
    engine = make_engine(settings.database_url)
    try:
        dead = Inbox(engine, clock=lambda: datetime.now(UTC), instance="replay_test", lease=300)
        click = {"action_id": "approve", "id": 1, "user": "U0SRE1", "channel": "C0APPROVALS"}
        owed = dead.owe("click", click, user_id="U0SRE1", response_url=None, dedupe_key=None)
        with running_bot(settings, fake_slack):
            wait_for(lambda: len(patches(kube)) == 1, what="the approved restart's PATCH")
            wait_for(lambda: owed_rows(engine)[0].done_at is not None, what="the row done")
        with engine.begin() as connection:  # as if the process had died before marking it
            connection.execute(
                update(OwedWork)
                .where(OwedWork.id == owed)
                .values(done_at=None, owner="replay_test/earlier")
            )
        before = len(fake_slack.calls_of("chat.postEphemeral"))
        with running_bot(settings, fake_slack):
            [told] = wait_for(
                lambda: fake_slack.calls_of("chat.postEphemeral")[before:], what="the clicker"
            )
            wait_for(lambda: owed_rows(engine)[0].done_at is not None, what="the row done")
        assert told.args["user"] == "U0SRE1"
        assert "already" in told.args["text"]
        assert len(patches(kube)) == 1
        assert [(r.kind, r.done_at is not None) for r in owed_rows(engine)] == [
            ("command", True),
            ("click", True),
        ]
        assert len(requests(engine)) == 1
    finally:
        engine.dispose()
