"""Many grants that end together are one audit summary per batch (issue 14 item 7), not one
audit post each; each grantee is still told in a direct message."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from sqlalchemy import create_engine

from bot.settings import Settings
from tests.fakes import slack
from tests.fakes.kube import FakeKubernetes, cluster_role
from tests.helpers.access import POLICY, AccessBot, serve_access_bot
from tests.helpers.bot import wait_for
from tests.helpers.clock import Clock


@pytest.fixture
def policy_text() -> str:
    return POLICY


@pytest.fixture
def clock() -> Clock:
    return Clock(datetime.now(UTC).replace(microsecond=0))


@pytest.fixture
def summary_bot(
    settings: Settings, fake_slack: slack.FakeSlack, kube: FakeKubernetes, clock: Clock
) -> Iterator[AccessBot]:
    kube.add(cluster_role("view"))
    db = create_engine(settings.database_url)
    try:
        with serve_access_bot(settings, fake_slack, kube, db, sweep_interval=0.2, clock=clock) as b:
            yield b
    finally:
        db.dispose()


def test_grants_ending_together_are_one_audit_summary(summary_bot: AccessBot, clock: Clock) -> None:
    bot = summary_bot
    grants = [bot.grant_access("access payments --role view --for 30m") for _ in range(3)]
    audit_before = len(bot.posts_to("C0AUDIT"))
    clock.advance(31 * 60)
    for grant_id in grants:
        wait_for(lambda g=grant_id: bot.grant(g).status == "revoked", what=f"grant #{grant_id}")
    for grant_id in grants:
        bot.dm_saying("U0DEV1", f"Grant #{grant_id}")
    summaries = wait_for(
        lambda: [
            c.args["text"]
            for c in bot.posts_to("C0AUDIT")[audit_before:]
            if "grants ended together" in c.args.get("text", "")
        ],
        what="the audit summary",
    )
    ended = [
        c.args.get("text", "")
        for c in bot.posts_to("C0AUDIT")[audit_before:]
        if "expired" in c.args.get("text", "")
    ]
    assert len(ended) == 1, ended  # one message, not three
    [summary] = summaries
    assert summary.startswith("[audit] 3 grants ended together:\n")
    for grant_id in grants:
        assert f"#{grant_id}" in summary
    assert summary.count("\n• ") == 3
