"""The access grants' policy and App Home of the end-to-end tests."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from tests.helpers.policy import policy

POLICY = policy(
    """\
  - name: payments access
    match: {action: access, environment: prod, namespace: payments}
    approvers: [sre]
    roles: [view, edit]
    max_duration: 4h
    default_duration: 1h
    extend: approval
  - name: checkout access
    match: {action: access, environment: prod, namespace: checkout}
    approvers: [sre]
    roles: [view]
    max_duration: 2h
    extend: auto
  - name: staging access
    match: {action: access, environment: staging}
    approvers: [sre]
    roles: [view]
    max_duration: 1m
""",
    settings={"incident_channels": None},
    groups={"security": None},
    identities={
        "U0DEV1": "{kubernetes_user: alice@example.com}",
        "U0DEV2": "{kubernetes_user: bob@example.com}",
    },
    environments={"sandbox": None},
)


def app_home_opened(user: str) -> dict[str, Any]:
    """The ``app_home_opened`` event Slack sends when ``user`` opens the bot's Home tab."""
    return {
        "type": "app_home_opened",
        "user": user,
        "channel": "D0HOME" + user[-4:],
        "tab": "home",
        "event_ts": f"{datetime.now(UTC).timestamp():.6f}",
    }
