"""Counting Slack calls (issue 13) for an access grant that expires: one approval card and one
requester message, each updated in place; the grantee's direct messages (started, with Extend /
End now, and expired); two audit lines (access granted, access expired)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy import Engine

from bot.settings import Settings
from tests.fakes import slack
from tests.fakes.kube import FakeKubernetes
from tests.helpers.access import POLICY
from tests.helpers.bot import wait_for
from tests.test_access_e2e import cluster, db, serve_access_bot
from tests.test_slack_calls import AUDIT, audit_lines, requester_message, tally, updates_of

__all__ = ["cluster", "db"]  # the fixtures of tests/test_access_e2e.py


@pytest.fixture
def policy_text() -> str:
    return POLICY


def test_one_access_grant_that_expires(
    settings: Settings, fake_slack: slack.FakeSlack, cluster: FakeKubernetes, db: Engine
) -> None:
    with serve_access_bot(settings, fake_slack, cluster, db, sweep_interval=3600) as bot:
        grant_id = bot.grant_access("access staging-web --for 2s")
        expires_at = bot.grant(grant_id).expires_at
        bot.dm_saying("U0DEV1", "has expired")
        wait_for(
            lambda: len(audit_lines(fake_slack)) == 2,
            timeout=expires_at.timestamp() - datetime.now(UTC).timestamp() + 10,
            what="the grant's two audit lines",
        )
        wait_for(lambda: bot.request(grant_id).status == "revoked", what="the request to end")
        card = bot.approval_for(grant_id)
        mine = requester_message(fake_slack)
        wait_for(lambda: "Ended" in updates_of(fake_slack, mine)[-1], what="the last update")

    counts = tally(fake_slack)
    assert counts == {
        "chat.postMessage C0APPROVALS": 1,
        "chat.postMessage C0DEV": 1,
        "chat.postMessage U0DEV1": 2,  # started (Extend / End now), expired
        f"chat.postMessage {AUDIT}": 2,  # access granted, access expired
        "chat.update C0APPROVALS": counts["chat.update C0DEV"],
        "chat.update C0DEV": len(updates_of(fake_slack, mine)),
    }
    assert len(updates_of(fake_slack, card)) == len(updates_of(fake_slack, mine)) <= 5
    started, ended = audit_lines(fake_slack)
    assert "access: view in staging-web" in started
    assert "Active" in started
    assert "has expired" in ended
