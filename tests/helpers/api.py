"""The HTTP API's test helpers: the policy of its end-to-end tests, the bot's token store and
an authenticated call."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import httpx
from sqlalchemy import create_engine
from sqlalchemy.orm import sessionmaker
from sqlalchemy.pool import NullPool

from approvals.tokens import TokenStore
from bot.settings import Settings
from tests.helpers.bot import RunningBot

POLICY = """\
version: 1
approval_channel: C0APPROVALS
audit_channel: C0AUDIT

groups:
  sre: {users: [U0SRE1, U0SRE2]}

agents:
  U0DEPLOYBOT: {name: deploy-bot}

environments:
  prod:    {kube_context: prod, namespaces: [payments, checkout]}
  staging: {kube_context: staging, namespaces: ["staging-*"]}

rules:
  - name: automation scales nothing
    match: {action: scale, requester_kind: agent}
    deny: "automation may not scale; ask a person"
  - name: prod restarts
    match: {action: restart, environment: prod}
    approvers: [sre]
  - match: {action: restart, environment: staging}
    approval: auto
"""

RESTART = {"action": "restart", "workload": "payments-api", "namespace": "payments"}


def now() -> datetime:
    return datetime.now(UTC)


def store(settings: Settings) -> TokenStore:
    """The bot's tokens; NullPool: no connection outlives its session."""
    return TokenStore(sessionmaker(create_engine(settings.database_url, poolclass=NullPool)), now)


def call(
    bot: RunningBot, method: str, path: str, token: str | None, **kwargs: Any
) -> httpx.Response:
    headers = dict(kwargs.pop("headers", {}))
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    return bot.http.request(method, f"{bot.url}/api/v1{path}", headers=headers, **kwargs)
