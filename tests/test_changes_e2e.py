"""``/ops changes`` end to end: after a restart, a scale and an access grant that ended, it answers
the asker what opsgate changed, newest first, who asked and who approved; filtered by namespace,
workload and window; only what the asker may see; and, in an incident channel, on what that
channel's requests touched."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import Engine, create_engine, select

from approvals.models import Request
from bot.settings import Settings
from tests.fakes import slack
from tests.fakes.kube import FakeKubernetes, cluster_role, deployment
from tests.helpers.access import AccessBot, serve_access_bot
from tests.helpers.bot import wait_for
from tests.helpers.policy import policy

POLICY = policy(
    """\
  - match: {action: [restart, scale], environment: staging}
    approval: auto
  - match: {action: restart, environment: prod}
    approvers: [sre]
  - name: staging access
    match: {action: access, environment: staging}
    approvers: [sre]
    roles: [view]
    max_duration: 1h
""",
    settings={"audit_readers": "[security]"},
    identities={"U0DEV1": "{kubernetes_user: alice@example.com}"},
)


@pytest.fixture
def policy_text() -> str:
    return POLICY


@pytest.fixture
def db(settings: Settings) -> Iterator[Engine]:
    engine = create_engine(settings.database_url)
    yield engine
    engine.dispose()


@pytest.fixture
def bot(
    settings: Settings, fake_slack: slack.FakeSlack, kube: FakeKubernetes, db: Engine
) -> Iterator[AccessBot]:
    kube.add(cluster_role("view"))
    kube.add(deployment("api", "staging-api", replicas=2, image="api:1"))
    with serve_access_bot(settings, fake_slack, kube, db, sweep_interval=0.2) as running:
        yield running


def ask(bot: AccessBot, text: str, *, user: str = "U0DEV1", channel: str = "dev") -> str:
    """``/ops <text>`` from ``user`` in ``channel``; the one answer it gets."""
    response_url = send(bot, text, user=user, channel=channel)
    return wait_for(lambda: bot.answers(response_url), what=f"the answer to /ops {text}")[-1]


def send(bot: AccessBot, text: str, *, user: str, channel: str) -> str:
    """``/ops <text>`` from ``user`` in ``channel``; returns its response_url."""
    response_url = bot.fake.response_url()
    bot.post(
        slack.slash_command_body(
            text,
            user_id=user,
            channel_id=f"C0{channel.upper().replace('-', '')}",
            channel_name=channel,
            response_url=response_url,
        )
    )
    return response_url


def done(bot: AccessBot, request_id: int, *statuses: str) -> None:
    def status() -> str | None:
        with bot.db.connect() as conn:
            return conn.execute(
                select(Request.status).where(Request.id == request_id)
            ).scalar_one_or_none()

    wait_for(lambda: status() in statuses, what=f"#{request_id} to end")


def test_changes_lists_a_restart_a_scale_and_an_ended_grant_newest_first(bot: AccessBot) -> None:
    bot.command("restart deploy/web -n staging-web --reason 'OOM'")
    done(bot, 1, "succeeded")
    bot.command("scale deploy/web 3 -n staging-web")
    done(bot, 2, "succeeded")
    grant_id = bot.grant_access("access staging-web --role view --for 30m --reason debug")
    bot.command(f"revoke {grant_id} --reason 'done debugging'")
    done(bot, grant_id, "revoked")

    answer = ask(bot, "changes -n staging-web")
    assert answer.startswith("*What opsgate changed in staging-web in the last 2h*")
    lines = answer.splitlines()[1:]
    assert [line.split("*#")[1].split("*")[0] for line in lines] == [str(grant_id), "2", "1"]
    access, scale, restart = lines
    assert "access" in access
    assert "approved by <@U0SRE1>" in access
    assert "access granted, then ended" in access
    assert "scale deployment/web in staging-web (staging)" in scale
    assert "asked by <@U0DEV1>, auto-approved by the policy: succeeded" in scale
    assert "from 1 to 3" in scale
    assert "restart deployment/web in staging-web (staging)" in restart
    assert "restartedAt" in restart
    for line in lines:
        assert line.startswith("• <!date^")
        assert "None" not in line

    # the same through a workload filter, and nothing outside the window or the namespace
    assert len(ask(bot, "changes web -n staging-web").splitlines()) == 3
    assert "changed nothing in staging-api" in ask(bot, "changes -n staging-api")
    assert "in the last 1m" in ask(bot, "changes -n staging-web --since 1m")


def test_changes_shows_each_asker_only_what_they_may_see(bot: AccessBot) -> None:
    bot.command("restart deploy/web -n staging-web")
    done(bot, 1, "succeeded")
    stranger = ask(bot, "changes", user="U0DEV2")
    assert stranger.startswith("opsgate changed nothing in the last 2h that you may see")
    reader = ask(bot, "changes", user="U0SEC1")  # security: the policy's audit_readers
    assert "*#1*" in reader
    assert "*#1*" in ask(bot, "changes")  # the requester


def test_in_an_incident_channel_changes_lists_what_its_requests_touched(bot: AccessBot) -> None:
    send(bot, "restart deploy/web -n staging-web", user="U0DEV1", channel="inc-web-down")
    done(bot, 1, "succeeded")
    bot.command("restart deploy/api -n staging-api")  # elsewhere, for something else
    done(bot, 2, "succeeded")
    bot.command("restart deploy/web -n staging-web")  # elsewhere, the same workload
    done(bot, 3, "succeeded")
    answer = ask(bot, "changes", channel="inc-web-down", user="U0SEC1")
    assert "to what this incident channel's requests touched" in answer.splitlines()[0]
    listed = [line.split("*#")[1].split("*")[0] for line in answer.splitlines()[1:]]
    assert listed == ["3", "1"]
    everything = ask(bot, "changes", user="U0SEC1")
    assert len(everything.splitlines()) == 4


def test_bad_changes_commands_are_answered_with_the_usage(bot: AccessBot) -> None:
    def ack(text: str) -> str:  # a malformed command is answered in the ack itself
        body = slack.slash_command_body(text, user_id="U0DEV1", response_url="http://x.invalid")
        return str(bot.post(body).json()["text"])

    assert "--since looks back at most 90d" in ack("changes --since 100d")
    assert "/ops changes [WORKLOAD]" in ack("changes --since soon")
    assert "changed nothing" in ask(bot, "changes --page 5")  # no change at all: no page
