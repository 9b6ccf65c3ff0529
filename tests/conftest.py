"""Shared fixtures: a real database, the fakes over real HTTP, and the bot on a real socket.

The database is SQLite in a temporary directory, or the PostgreSQL named by
``OPSGATE_TEST_DATABASE_URL`` (``.ci/run`` runs the suite both ways); each test gets a freshly
migrated schema.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import settings as hypothesis_settings
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

from approvals.db import make_engine, make_sessionmaker, migrate
from bot.settings import Settings
from tests import message_scan
from tests.fakes import slack
from tests.fakes.kube import FakeKubernetes, deployment, write_kubeconfig
from tests.helpers.bot import RunningBot, running_bot
from tests.helpers.policy import POLICY
from tests.helpers.tools import require_kubectl

pytest_plugins = ["tests.helpers.vault"]

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


def pytest_runtest_setup(item: pytest.Item) -> None:
    """A test marked ``kubectl`` runs the real binary: skipped where it is missing, failed in CI
    (see :mod:`tests.helpers.tools`)."""
    if item.get_closest_marker("kubectl") is not None:
        require_kubectl()


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
def engine(database_url: str) -> Iterator[Engine]:
    """An engine on the test database, migrated to head; disposed after the test."""
    migrate(database_url)
    engine = make_engine(database_url)
    yield engine
    engine.dispose()


@pytest.fixture
def sessions(engine: Engine) -> sessionmaker[Session]:
    """opsgate's sessions on :func:`engine` (they chain the audit events they write)."""
    return make_sessionmaker(engine)


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


@pytest.fixture
def bot(settings: Settings, fake_slack: slack.FakeSlack) -> Iterator[RunningBot]:
    with running_bot(settings, fake_slack) as running:
        yield running
