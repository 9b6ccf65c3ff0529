"""Shared fixtures: a real database, the fakes over real HTTP, and the bot on a real socket.

The database is SQLite in a temporary directory, or the PostgreSQL named by
``OPSGATE_TEST_DATABASE_URL`` (``.ci/run`` runs the suite both ways); each test gets a freshly
migrated schema.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from hypothesis import settings as hypothesis_settings
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from bot.app import create_app
from bot.settings import Settings
from tests import message_scan
from tests.fakes import slack
from tests.fakes.kube import FakeKubernetes, deployment, write_kubeconfig
from tests.required_tools import require_kubectl

pytest_plugins = ["tests.fixtures_vault"]

TEST_DATABASE_ENV = "OPSGATE_TEST_DATABASE_URL"

# Hypothesis: with CI set (or ``--hypothesis-profile=ci``) every property runs the same examples
# on every run (``derandomize``: they derive from the test's name), so that a red run can be
# replayed; elsewhere the properties explore new random examples on each run. ``make mutation``
# runs the same derandomized properties with fewer examples (the examples tests carry the edges).
hypothesis_settings.register_profile(
    "ci", derandomize=True, database=None, deadline=None, print_blob=True, max_examples=250
)
hypothesis_settings.register_profile(
    "mutation", hypothesis_settings.get_profile("ci"), max_examples=40
)
if os.environ.get("CI"):
    hypothesis_settings.load_profile("ci")

POLICY = """\
version: 1
approval_channel: C0APPROVALS
audit_channel: C0AUDIT
incident_channels: ["inc-*"]

groups:
  sre: {users: [U0SRE1, U0SRE2]}
  security: {users: [U0SEC1]}

environments:
  prod:    {kube_context: prod, namespaces: [payments, checkout]}
  staging: {kube_context: staging, namespaces: ["staging-*"]}
  sandbox: {kube_context: staging, namespaces: [sandbox]}

rules:
  - match: {action: restart, environment: staging}
    approval: auto
  - name: checkout needs two
    match: {action: restart, environment: prod, namespace: checkout}
    approvers: [sre]
    min_approvals: 2
  - match: {action: restart, environment: prod}
    approvers: [sre]
"""


def pytest_runtest_setup(item: pytest.Item) -> None:
    """A test marked ``kubectl`` runs the real binary: skipped where it is missing, failed in CI
    (see :mod:`tests.required_tools`)."""
    if item.get_closest_marker("kubectl") is not None:
        require_kubectl()


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


@pytest.fixture
def database_url(tmp_path: Path) -> str:
    url = os.environ.get(TEST_DATABASE_ENV)
    if not url:
        return f"sqlite:///{tmp_path / 'opsgate.db'}"
    assert make_url(url).get_backend_name() == "postgresql", f"{TEST_DATABASE_ENV}: {url}"
    engine = create_engine(url)
    with engine.begin() as conn:
        conn.execute(text("DROP SCHEMA IF EXISTS public CASCADE"))
        conn.execute(text("CREATE SCHEMA public"))
    engine.dispose()
    return url


@pytest.fixture
def fake_slack() -> Iterator[slack.FakeSlack]:
    fake = slack.start_fake_slack()
    try:
        yield fake
    finally:
        fake.server.clear()
        fake.server.stop()


@pytest.fixture(autouse=True)
def no_none_nor_repr_in_messages(request: pytest.FixtureRequest) -> Iterator[None]:
    """Fail the test whose run made the bot show ``None``, a Python repr (``{'``, ``[]``) or a
    ``Traceback`` to someone in Slack: every call the fake Slack recorded (Web API and
    ``response_url``) and every answer the bot gave over HTTP (``tests/message_scan.py``)."""
    yield
    fake = request.node.funcargs.get("fake_slack") if hasattr(request.node, "funcargs") else None
    if not isinstance(fake, slack.FakeSlack):
        return
    found = [
        (call.method, text) for call in list(fake.calls) for text in message_scan.leaks(call.args)
    ]
    found += [
        ("HTTP answer", text) for answer in fake.answers for text in message_scan.leaks(answer)
    ]
    assert not found, f"a message shows None, a repr or a traceback: {found[:3]}"


@pytest.fixture
def kube() -> Iterator[FakeKubernetes]:
    """One fake cluster that serves both the ``prod`` and ``staging`` contexts."""
    fake = FakeKubernetes()
    fake.start()
    fake.add(deployment("payments-api", "payments", replicas=3, image="payments:1.4.2"))
    fake.add(deployment("cart", "checkout", replicas=2, image="cart:7"))
    fake.add(deployment("web", "staging-web", replicas=1, image="web:2"))
    try:
        yield fake
    finally:
        fake.stop()


@pytest.fixture
def policy_text() -> str:
    """The policy the bot runs; a module overrides this fixture to run its own."""
    return POLICY


@pytest.fixture
def policy_path(tmp_path: Path, policy_text: str) -> Path:
    path = tmp_path / "policy.yml"
    path.write_text(policy_text)
    return path


@pytest.fixture
def settings(
    tmp_path: Path,
    database_url: str,
    fake_slack: slack.FakeSlack,
    kube: FakeKubernetes,
    policy_path: Path,
) -> Settings:
    kubeconfig = write_kubeconfig(tmp_path / "kubeconfig", {"prod": kube, "staging": kube})
    return Settings(
        database_url=database_url,
        policy_path=str(policy_path),
        slack_bot_token=slack.BOT_TOKEN,
        slack_signing_secret=slack.SIGNING_SECRET,
        slack_api_url=fake_slack.api_url,
        kubeconfig=str(kubeconfig),
        kube_request_timeout=2.0,
        rollout_timeout=10.0,
        rollout_poll_interval=0.05,
        _env_file=None,
    )


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


@pytest.fixture
def bot(settings: Settings, fake_slack: slack.FakeSlack) -> Iterator[RunningBot]:
    with running_bot(settings, fake_slack) as running:
        yield running


def buttons(message: slack.Call) -> dict[str, str]:
    """``{action_id: value}`` of every button of a message the bot posted."""
    found: dict[str, str] = {}
    raw = message.args.get("blocks") or []
    for block in json.loads(raw) if isinstance(raw, str) else raw:
        for element in block.get("elements", []) if block.get("type") == "actions" else []:
            if element.get("type") == "button":
                found[element["action_id"]] = element["value"]
    return found
