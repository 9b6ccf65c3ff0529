"""Driving the running bot as Slack does, and reading back what it did: its Slack calls, the
cluster's writes, the database's rows."""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import create_engine, select
from sqlalchemy.orm import Session

from approvals.models import Request
from bot.settings import Settings
from tests.fakes import slack
from tests.fakes.kube import FakeKubernetes
from tests.helpers.bot import RunningBot, wait_for

RESTARTED_AT = "kubectl.kubernetes.io/restartedAt"


def annotations(kube: FakeKubernetes, namespace: str, name: str) -> dict[str, str]:
    obj = kube.get_object("apps/v1", "Deployment", namespace, name)
    assert obj is not None
    return obj["spec"]["template"].get("metadata", {}).get("annotations", {}) or {}


def patches(kube: FakeKubernetes) -> list[Any]:
    """Every PATCH the cluster received that was not a server-side dry run."""
    return [r for r in kube.requests_matching(method="PATCH") if "dryRun" not in r.query]


def dry_runs(kube: FakeKubernetes) -> list[Any]:
    """The ``dryRun=All`` PATCHes (previews)."""
    return [r for r in kube.requests_matching(method="PATCH") if r.query.get("dryRun") == "All"]


def rows(settings: Settings, model: type[Any]) -> list[Any]:
    engine = create_engine(settings.database_url)
    try:
        with Session(engine) as session:
            return list(session.scalars(select(model).order_by(model.id)))
    finally:
        engine.dispose()


def action_ids(blocks: Any) -> list[str]:
    if isinstance(blocks, str):
        blocks = json.loads(blocks)
    return [
        element["action_id"]
        for block in blocks
        if block["type"] == "actions"
        for element in block["elements"]
    ]


def ephemerals_to(fake: slack.FakeSlack, user: str) -> list[str]:
    return [c.args["text"] for c in fake.calls_of("chat.postEphemeral") if c.args["user"] == user]


def responses(fake: slack.FakeSlack, response_url: str) -> list[str]:
    path = response_url.split("127.0.0.1", 1)[1].split("/", 1)[1]
    return [c.args.get("text", "") for c in fake.calls if c.path == "/" + path]


def submit(bot: RunningBot, text: str, **kw: Any) -> str:
    """Send a command, check the immediate ack, and return its response_url."""
    answer, response_url = bot.command(text, **kw)
    assert answer.status_code == 200
    return response_url


def wait_approval_message(bot: RunningBot) -> slack.Call:
    return wait_for(
        lambda: [c for c in bot.fake_slack.calls_of("chat.postMessage") if c.args.get("blocks")],
        what="the approval message",
    )[-1]


def request_status(settings: Settings, request_id: int = 1) -> str | None:
    """Request ``request_id``'s status, or None while it does not exist yet."""
    return next((r.status for r in rows(settings, Request) if r.id == request_id), None)
