"""Rate limits on new requests (the policy's ``rate_limit``), counted with the ``limits`` library.

Unit tests on the gate (injected clock, recording notifier, fake cluster, test database; the
library's own time moved with time-machine), the policy's ``rate_limit`` validation, and one test
end to end through the running bot.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest
import time_machine
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from actions.restart import RestartParams
from approvals.gate import Gate, Origin, RateLimited, Rejected, Submission
from approvals.lifecycle import Actor
from approvals.models import AuditEvent, Request
from approvals.policy import DEFAULT_REQUESTS_PER_MINUTE, PolicyError, parse_policy
from bot.settings import Settings
from tests.fakes.kube import FakeKubernetes
from tests.helpers.bot import RunningBot, wait_for
from tests.helpers.clock import Clock
from tests.helpers.gate import RecordingNotifier, built_gate
from tests.helpers.policy import policy
from tests.helpers.slack_flow import responses as answers_to
from tests.helpers.slack_flow import rows, submit, wait_approval_message

POLICY = policy(
    """\
  - match: {action: restart, environment: staging}
    approval: auto
  - match: {action: restart, environment: prod}
    approvers: [sre]
""",
    settings={
        "audit_channel": None,
        "incident_channels": None,
        "rate_limit": "{requests_per_minute: 3, agents_per_minute: 2}",
    },
    groups={"security": None},
    agents={"U0DEPLOYBOT": "{name: deploy-bot}"},
    environments={"sandbox": None},
    spaced=False,
)

T0 = datetime(2026, 11, 21, 3, 0, tzinfo=UTC)


def limited(n: int) -> str:
    return (
        f"You have made {n} requests in the last minute; opsgate allows {n} per minute. "
        "Wait a moment and try again; nothing was changed."
    )


@dataclass
class World:
    gate: Gate
    notifier: RecordingNotifier
    sessions: sessionmaker[Session]
    kube: FakeKubernetes

    def opened(self) -> int:
        """How many requests were announced (posted for approval or executed)."""
        return sum(1 for _, event, _ in self.notifier.events if event == "opened")

    def audit(self) -> list[AuditEvent]:
        with self.sessions() as session:
            return list(session.scalars(select(AuditEvent).order_by(AuditEvent.id)))

    def requests(self) -> int:
        with self.sessions() as session:
            return len(session.scalars(select(Request.id)).all())


@pytest.fixture
def world(tmp_path: Path, database_url: str, kube: FakeKubernetes) -> Iterator[World]:
    notifier = RecordingNotifier()
    loaded = parse_policy(POLICY)
    with built_gate(
        database_url,
        kube=kube,
        kubeconfig=tmp_path / "kc",
        policy=lambda: loaded,
        notifier=notifier,
        clock=Clock(),
        poll_interval=0.01,
        rollout_timeout=5,
    ) as built:
        yield World(built.gate, notifier, built.sessions, kube)


def restart(requester: str, namespace: str = "payments", name: str = "payments-api") -> Submission:
    return Submission(
        action="restart",
        params=RestartParams(name=name, namespace=namespace),
        requester=Actor(requester),
        namespace=namespace,
        origin=Origin("C0DEV", "dev", None),
    )


def test_one_request_too_many_in_a_minute_is_refused_until_the_window_has_passed(
    world: World,
) -> None:
    with time_machine.travel(T0, tick=True) as traveller:
        for _ in range(3):
            assert world.gate.submit(restart("U0DEV1")).status == "pending"
        cluster_calls = len(world.kube.requests)
        with pytest.raises(RateLimited) as refused:
            world.gate.submit(restart("U0DEV1"))
        assert str(refused.value) == limited(3)
        assert isinstance(refused.value, Rejected)
        # refused before the cluster was asked anything; nothing posted, nothing stored
        assert len(world.kube.requests) == cluster_calls
        assert (world.opened(), world.requests()) == (3, 3)
        rejected = world.audit()[-1]
        assert (rejected.event, rejected.actor_id, rejected.request_id) == (
            "rejected",
            "U0DEV1",
            None,
        )
        assert rejected.detail["reason"] == limited(3)
        # another person is counted apart; reads are not limited
        assert world.gate.submit(restart("U0DEV2")).status == "pending"
        assert world.gate.get_for(1, Actor("U0DEV1")).id == 1
        assert len(world.gate.latest(requester_id="U0DEV1", limit=5)) == 3

        traveller.shift(30)  # a moving window: still three in the last minute
        with pytest.raises(RateLimited):
            world.gate.submit(restart("U0DEV1"))
        traveller.shift(31)
        # the refused ones did not count: three more are allowed, and the fourth is refused
        for _ in range(3):
            assert world.gate.submit(restart("U0DEV1")).status == "pending"
        with pytest.raises(RateLimited):
            world.gate.submit(restart("U0DEV1"))
    assert world.requests() == 7
    assert [e.event for e in world.audit()].count("rejected") == 3


def test_agents_have_their_own_limit(world: World) -> None:
    with time_machine.travel(T0, tick=True):
        for _ in range(2):
            # an agent's ID is automation whatever the caller says
            view = world.gate.submit(restart("U0DEPLOYBOT", "staging-web", "web"))
            assert view.requester_kind == "agent"
        with pytest.raises(RateLimited) as refused:
            world.gate.submit(restart("U0DEPLOYBOT", "staging-web", "web"))
        assert str(refused.value) == limited(2)
        assert world.audit()[-1].actor_kind == "agent"
        assert world.opened() == 2


def test_concurrent_requests_get_exactly_the_limit(world: World) -> None:
    barrier = threading.Barrier(8)
    outcomes: list[str] = []

    def ask() -> None:
        barrier.wait()
        try:
            world.gate.submit(restart("U0DEV1"))
            outcomes.append("submitted")
        except RateLimited:
            outcomes.append("limited")

    threads = [threading.Thread(target=ask) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(outcomes) == ["limited"] * 5 + ["submitted"] * 3
    assert world.requests() == 3


# --- the policy ---------------------------------------------------------------------------------


def test_the_default_limit_and_the_agents_default() -> None:
    plain = parse_policy(POLICY.replace(POLICY.splitlines()[2] + "\n", ""))
    assert DEFAULT_REQUESTS_PER_MINUTE == 20
    assert plain.policy.rate_limit.per_minute(agent=False) == 20
    assert plain.policy.rate_limit.per_minute(agent=True) == 20
    humans = parse_policy(POLICY.replace(", agents_per_minute: 2", ""))
    assert humans.policy.rate_limit.per_minute(agent=True) == 3


@pytest.mark.parametrize(
    ("value", "field", "message"),
    [
        ("{requests_per_minute: 0}", "rate_limit.requests_per_minute", "greater than or equal"),
        ("{agents_per_minute: -5}", "rate_limit.agents_per_minute", "greater than or equal"),
        ("{requests_per_minute: lots}", "rate_limit.requests_per_minute", "valid integer"),
        ("{per_minute: 5}", "rate_limit.per_minute", "Extra inputs are not permitted"),
        ("20", "rate_limit", "valid dictionary"),
    ],
)
def test_a_bad_rate_limit_is_refused_with_its_line(value: str, field: str, message: str) -> None:
    text = POLICY.replace("{requests_per_minute: 3, agents_per_minute: 2}", value)
    with pytest.raises(PolicyError) as error:
        parse_policy(text, source="p.yml")
    [issue] = error.value.issues
    assert (issue.line, issue.field) == (3, field)
    assert message in issue.message


# --- end to end ---------------------------------------------------------------------------------


@pytest.fixture
def policy_text() -> str:
    return policy(settings={"rate_limit": "{requests_per_minute: 2}"})


def test_the_requester_over_the_limit_is_told_and_nothing_is_asked(
    bot: RunningBot, settings: Settings
) -> None:
    for expected in (1, 2):
        submit(bot, "restart payments-api -n payments")
        wait_for(lambda n=expected: len(rows(settings, Request)) == n, what=f"request #{expected}")
    wait_approval_message(bot)
    response_url = submit(bot, "restart payments-api -n payments")
    [told] = wait_for(lambda: answers_to(bot.fake_slack, response_url))
    assert limited(2) in told
    approvals = [c for c in bot.fake_slack.calls_of("chat.postMessage") if c.args.get("blocks")]
    assert len(approvals) == 2
    assert len(rows(settings, Request)) == 2
    assert rows(settings, AuditEvent)[-1].event == "rejected"
    # reads are not limited
    response_url = submit(bot, "status 1")
    [status] = wait_for(lambda: answers_to(bot.fake_slack, response_url))
    assert "Request #1" in status
