"""The access grants' policy and App Home of the end-to-end tests."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from approvals.models import AuditEvent, Grant, Request
from bot.settings import Settings
from tests.fakes import slack
from tests.fakes.kube import FakeKubernetes
from tests.helpers.bot import buttons, running_bot, wait_for
from tests.helpers.clock import Clock
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


RB_API = "rbac.authorization.k8s.io/v1"
MANAGED_BY = "app.kubernetes.io/managed-by"
GRANT_ID = "opsgate.io/grant-id"
EXPIRES_AT = "opsgate.io/expires-at"


@dataclass
class AccessBot:
    """The bot on a real socket, and a way to talk to it and read what it did, as Slack sees it."""

    url: str
    fake: slack.FakeSlack
    kube: FakeKubernetes
    http: httpx.Client
    db: Engine

    def post(self, body: str) -> httpx.Response:
        answer = self.http.post(
            f"{self.url}/slack/events", content=body, headers=slack.signed_headers(body)
        )
        assert answer.status_code == 200, answer.text
        return answer

    def command(self, text: str, *, user: str = "U0DEV1") -> str:
        """``/ops <text>`` from ``user``; returns the command's response_url."""
        response_url = self.fake.response_url()
        self.post(slack.slash_command_body(text, user_id=user, response_url=response_url))
        return response_url

    def click(self, message: slack.Call, action_id: str, *, user: str) -> None:
        """``user`` clicks the button ``action_id`` of a message the bot posted."""
        value = buttons(message)[action_id]
        self.post(
            slack.block_action_body(
                action_id,
                value,
                user_id=user,
                channel_id=message.response["channel"],
                message_ts=message.response["ts"],
                response_url=self.fake.response_url(),
            )
        )

    def event(self, event: dict[str, Any]) -> None:
        self.post(slack.event_callback_body(event))

    # --- what the bot sent to Slack ---------------------------------------------------------

    def answers(self, response_url: str) -> list[str]:
        """What the bot answered through ``response_url`` (the requester alone)."""
        path = "/" + response_url.split("/", 3)[3]
        return [c.args.get("text", "") for c in self.fake.calls if c.path == path]

    def approvals(self) -> list[slack.Call]:
        """Approval messages (posted to the approval channel with Approve / Deny)."""
        return [
            c
            for c in self.fake.calls_of("chat.postMessage")
            if c.args.get("channel") == "C0APPROVALS" and "approve" in buttons(c)
        ]

    def approval_for(self, request_id: int) -> slack.Call:
        found: slack.Call = wait_for(
            lambda: next(
                (c for c in self.approvals() if buttons(c)["approve"] == str(request_id)), None
            ),
            what=f"the approval message of request #{request_id}",
        )
        return found

    def dms(self, user: str) -> list[slack.Call]:
        """Direct messages to ``user`` (``chat.postMessage`` with ``channel`` = the user ID)."""
        return self.posts_to(user)

    def posts_to(self, channel: str) -> list[slack.Call]:
        return [
            c for c in self.fake.calls_of("chat.postMessage") if c.args.get("channel") == channel
        ]

    def dm_saying(self, user: str, words: str) -> slack.Call:
        found: slack.Call = wait_for(
            lambda: next((c for c in self.dms(user) if words in c.args.get("text", "")), None),
            what=f"a DM to {user} saying {words!r}",
        )
        return found

    def updates_of(self, message: slack.Call) -> list[str]:
        """The texts of every ``chat.update`` of ``message``."""
        return [
            c.args.get("text", "") + json.dumps(c.args.get("blocks"))
            for c in self.fake.calls_of("chat.update")
            if c.args.get("ts") == message.response["ts"]
        ]

    # --- the cluster and the database -------------------------------------------------------

    def binding(self, grant_id: int, namespace: str) -> dict[str, Any] | None:
        return self.kube.get_object(RB_API, "RoleBinding", namespace, f"opsgate-grant-{grant_id}")

    def grant(self, grant_id: int) -> Grant:
        with Session(self.db) as session:
            grant = session.get(Grant, grant_id)
        assert grant is not None, f"no grant #{grant_id}"
        return grant

    def request(self, request_id: int) -> Request:
        with Session(self.db) as session:
            request = session.get(Request, request_id)
        assert request is not None, f"no request #{request_id}"
        return request

    def audit(self, request_id: int | None = None) -> list[AuditEvent]:
        """The audit trail (of one request), oldest first."""
        query = select(AuditEvent).order_by(AuditEvent.id)
        if request_id is not None:
            query = query.where(AuditEvent.request_id == request_id)
        with Session(self.db) as session:
            return list(session.scalars(query))

    # --- a whole request ----------------------------------------------------------------------

    def grant_access(self, text: str, *, user: str = "U0DEV1", approver: str = "U0SRE1") -> int:
        """``/ops <text>`` (an access request), approved by ``approver``; returns the grant ID
        once the grant is active."""
        before = len(self.approvals())
        self.command(text, user=user)
        message = wait_for(
            lambda: self.approvals()[before:], what=f"the approval message of /ops {text}"
        )[0]
        grant_id = int(buttons(message)["approve"])
        self.click(message, "approve", user=approver)
        wait_for(lambda: self.request(grant_id).status == "active", what="the grant to start")
        return grant_id


@contextmanager
def serve_access_bot(
    settings: Settings,
    fake_slack: slack.FakeSlack,
    cluster: FakeKubernetes,
    db: Engine,
    *,
    sweep_interval: float,
    clock: Clock | None = None,
) -> Iterator[AccessBot]:
    """The bot sweeping every ``sweep_interval`` s of real time, with ``clock`` (None: the real
    one), served until the block ends."""
    every = settings.model_copy(update={"sweep_interval": sweep_interval})
    with running_bot(every, fake_slack, clock=clock) as running:
        yield AccessBot(running.url, fake_slack, cluster, running.http, db)
