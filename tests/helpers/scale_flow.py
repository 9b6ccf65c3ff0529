"""A scale or rollback through the running bot: the policy of those tests, new revisions as kubectl
makes them, and what the bot posted about them."""

from __future__ import annotations

import json
import re
from typing import Any

import httpx

from tests.fakes import slack
from tests.fakes.kube import (
    FakeKubernetes,
)
from tests.helpers.bot import RunningBot, wait_for
from tests.helpers.policy import policy

POLICY = policy(
    """\
  - name: incident rollbacks
    match: {action: rollback, environment: prod, channel: incident}
    approvers: [oncall]
    approval_channel: C0INCIDENTOPS
  - name: prod rollbacks
    match: {action: rollback, environment: prod}
    approvers: [sre]
  - name: prod scale
    match: {action: scale, environment: prod}
    approvers: [sre]
    limits: {min_replicas: 2, max_replicas: 10, max_factor: 3}
  - name: staging
    match: {action: [scale, rollback], environment: staging}
    approval: auto
  - name: staging restarts
    match: {action: restart, environment: staging}
    approval: auto
""",
    groups={"security": None, "oncall": "{users: [U0ONCALL]}"},
    environments={
        "prod": "{kube_context: prod, namespaces: [payments, checkout, shared]}",
        "staging": '{kube_context: staging, namespaces: ["staging-*", shared]}',
        "sandbox": None,
    },
)


CHANGE_CAUSE = "kubernetes.io/change-cause"


ROLLED_OUT = re.compile(r"rolled out: (\d+)/(\d+) ready in \d+ s")


def set_image(
    kube: FakeKubernetes, namespace: str, name: str, image: str, *, cause: str | None = None
) -> None:
    """A new revision of Deployment ``name``, as ``kubectl set image`` (and ``kubectl annotate
    kubernetes.io/change-cause``) make it, over HTTP; the next GET completes its rollout."""
    patch: dict[str, Any] = {
        "spec": {"template": {"spec": {"containers": [{"name": name, "image": image}]}}}
    }
    if cause is not None:
        patch["metadata"] = {"annotations": {CHANGE_CAUSE: cause}}
    url = f"{kube.url}/apis/apps/v1/namespaces/{namespace}/deployments/{name}"
    auth = {"Authorization": f"Bearer {kube.token}"}
    httpx.patch(
        url,
        content=json.dumps(patch),
        headers={**auth, "Content-Type": "application/strategic-merge-patch+json"},
    ).raise_for_status()
    httpx.get(url, headers=auth).raise_for_status()


def stored(kube: FakeKubernetes, namespace: str, name: str) -> dict[str, Any]:
    obj = kube.get_object("apps/v1", "Deployment", namespace, name)
    assert obj is not None
    return obj


def image_of(kube: FakeKubernetes, namespace: str, name: str) -> str:
    return str(stored(kube, namespace, name)["spec"]["template"]["spec"]["containers"][0]["image"])


def writes(kube: FakeKubernetes) -> list[Any]:
    """Every PATCH the cluster received that was not a dry run."""
    return [r for r in kube.requests_matching(method="PATCH") if "dryRun" not in r.query]


def approval_posts(fake: slack.FakeSlack) -> list[slack.Call]:
    return [c for c in fake.calls_of("chat.postMessage") if c.args.get("blocks")]


def blocks_text(call: slack.Call) -> str:
    blocks = call.args["blocks"]
    return blocks if isinstance(blocks, str) else json.dumps(blocks)


def announcement(bot: RunningBot, channel: str = "C0DEV") -> slack.Call:
    posts: list[slack.Call] = wait_for(
        lambda: [
            c
            for c in bot.fake_slack.calls_of("chat.postMessage")
            if c.args["channel"] == channel and not c.args.get("thread_ts")
        ],
        what=f"the announcement in {channel}",
    )
    return posts[0]


def thread_replies(bot: RunningBot, root: slack.Call) -> list[str]:
    return [
        str(c.args["text"])
        for c in bot.fake_slack.calls_of("chat.postMessage")
        if c.args.get("thread_ts") == root.response["ts"]
        and c.args["channel"] == root.args["channel"]
    ]


def updates_of(bot: RunningBot, root: slack.Call) -> list[str]:
    """The texts the requester's message was updated to (``chat.update``), in order."""
    return [
        str(c.args["text"])
        for c in bot.fake_slack.calls_of("chat.update")
        if c.args.get("ts") == root.response["ts"] and c.args["channel"] == root.args["channel"]
    ]


def final_reply(bot: RunningBot, root: slack.Call, word: str) -> str:
    """The result (``Done`` or ``Failed``) as the requester's message, updated in place, shows
    it (a thread reply that mentions them, for a result that needs them)."""
    replies: list[str] = wait_for(
        lambda: [t for t in updates_of(bot, root) + thread_replies(bot, root) if word in t],
        what=f"'{word}' in the requester's message",
    )
    return replies[-1]
