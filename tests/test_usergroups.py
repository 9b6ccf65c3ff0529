"""``bot.usergroups.UsergroupDirectory`` against the fake Slack Web API over real HTTP."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest
from slack_sdk import WebClient

from approvals.policy import parse_policy, resolve_groups
from bot.usergroups import UsergroupDirectory
from tests.fakes import slack
from tests.helpers.clock import Clock


@pytest.fixture
def slack_api() -> Iterator[slack.FakeSlack]:
    fake = slack.start_fake_slack()
    try:
        yield fake
    finally:
        fake.server.clear()
        fake.server.stop()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def directory(slack_api: slack.FakeSlack, clock: Clock) -> UsergroupDirectory:
    client = WebClient(token=slack.BOT_TOKEN, base_url=slack_api.api_url)
    return UsergroupDirectory(client, ttl=300.0, min_refresh=10.0, clock=clock.monotonic)


def lookups(fake: slack.FakeSlack) -> list[str]:
    return [c.args["usergroup"] for c in fake.calls_of("usergroups.users.list")]


def test_members_are_fetched_with_the_bot_token_and_cached(
    slack_api: slack.FakeSlack, directory: UsergroupDirectory, clock: Clock
) -> None:
    slack.set_usergroup(slack_api, "S0ONCALL", ["U0A", "U0B"])
    assert directory.members("S0ONCALL") == {"U0A", "U0B"}
    call = slack_api.calls_of("usergroups.users.list")[0]
    assert call.token == slack.BOT_TOKEN
    slack.set_usergroup(slack_api, "S0ONCALL", ["U0C"])
    clock.advance(299)
    assert directory("S0ONCALL") == {"U0A", "U0B"}  # still fresh: from the cache
    assert lookups(slack_api) == ["S0ONCALL"]
    clock.advance(2)
    assert directory.members("S0ONCALL") == {"U0C"}  # older than the TTL: asked again
    assert lookups(slack_api) == ["S0ONCALL", "S0ONCALL"]


def test_refresh_forgets_entries_older_than_min_refresh(
    slack_api: slack.FakeSlack, directory: UsergroupDirectory, clock: Clock
) -> None:
    slack.set_usergroup(slack_api, "S0ONCALL", ["U0A"])
    directory.members("S0ONCALL")
    slack.set_usergroup(slack_api, "S0ONCALL", ["U0A", "U0NEW"])
    clock.advance(5)
    directory.refresh()  # too soon: a burst of stranger clicks must not hammer Slack
    assert directory.members("S0ONCALL") == {"U0A"}
    clock.advance(6)
    directory.refresh()
    assert directory.members("S0ONCALL") == {"U0A", "U0NEW"}
    assert directory.cached() == {"S0ONCALL": frozenset({"U0A", "U0NEW"})}
    assert len(lookups(slack_api)) == 2


def test_slack_error_serves_the_stale_cache(
    slack_api: slack.FakeSlack,
    directory: UsergroupDirectory,
    clock: Clock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    slack.set_usergroup(slack_api, "S0ONCALL", ["U0A"])
    directory.members("S0ONCALL")
    clock.advance(1000)
    slack_api.fail("usergroups.users.list", "ratelimited")
    with caplog.at_level(logging.ERROR, logger="bot.usergroups"):
        assert directory.members("S0ONCALL") == {"U0A"}
    assert "S0ONCALL" in caplog.text
    assert "ratelimited" in caplog.text
    assert "cached members" in caplog.text
    assert directory.members("S0ONCALL") == {"U0A"}  # the failure did not poison the cache
    assert len(lookups(slack_api)) == 3


def test_unknown_group_without_cache_is_nobody(
    slack_api: slack.FakeSlack, directory: UsergroupDirectory, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.ERROR, logger="bot.usergroups"):
        assert directory.members("S0NOPE") == frozenset()
    assert "no_such_subteam" in caplog.text
    assert directory.cached() == {}


def test_unreachable_slack_is_nobody(clock: Clock) -> None:
    client = WebClient(token=slack.BOT_TOKEN, base_url="http://127.0.0.1:9/api/", timeout=2)
    directory = UsergroupDirectory(client, clock=clock.monotonic)
    assert directory.members("S0ONCALL") == frozenset()


def test_resolve_groups_unions_users_and_usergroups(
    slack_api: slack.FakeSlack, directory: UsergroupDirectory
) -> None:
    loaded = parse_policy(
        """\
version: 1
approval_channel: C0A
groups:
  sre: {users: [U0SRE1], usergroups: [S0ONCALL, S0PLATFORM]}
  security: {usergroups: [S0ONCALL]}
  dba: {users: [U0DBA1]}
environments:
  prod: {namespaces: [payments]}
rules:
  - match: {action: restart}
    approvers: [sre]
"""
    )
    slack.set_usergroup(slack_api, "S0ONCALL", ["U0ON1", "U0ON2"])
    slack.set_usergroup(slack_api, "S0PLATFORM", ["U0PL1", "U0SRE1"])
    groups = resolve_groups(loaded.policy, directory.members)
    assert groups == {
        "sre": {"U0SRE1", "U0ON1", "U0ON2", "U0PL1"},
        "security": {"U0ON1", "U0ON2"},
        "dba": {"U0DBA1"},
    }
    # each user group is asked for once, however many groups name it
    assert sorted(lookups(slack_api)) == ["S0ONCALL", "S0PLATFORM"]
