"""Events: ``app_mention`` (``@opsgate rollback … `` works like ``/ops``) and ``app_home_opened``
(the App Home tab: your grants, your pending requests, and what waits on your approval).

slack-bolt acks events itself before it calls a listener; the listeners here only check who
asked, write what a mention owes (one ``INSERT``, which also finds Slack's redelivery of the same
``event_id``: :meth:`bot.work.Workers.hand_off`), and hand the rest (the channel's name, the
gate's work, ``views.publish``) to opsgate's workers, so bolt's threads are free for the next ack.
An App Home refresh is not owed (the next opening of the tab renders it again).
"""

from __future__ import annotations

import logging
import re
from typing import Any

from slack_bolt import App
from slack_sdk import WebClient

from approvals.gate import Gate, Origin
from bot import blocks, grant_blocks
from bot.grammar import CommandError, parse
from bot.listeners.commands import run
from bot.notifier import SLACK_FAILURES
from bot.work import Job, Workers

log = logging.getLogger(__name__)

_MENTION = re.compile(r"^\s*(?:<@[A-Z0-9]+(?:\|[^>]*)?>\s*)+")


def command_text(text: str) -> str:
    """The command in a mention: ``<@U0BOT> rollback x -n ns`` → ``rollback x -n ns``."""
    return _MENTION.sub("", text, count=1).strip()


def register(app: App, gate: Gate, workers: Workers) -> None:
    """Listen for mentions of the bot and for the App Home tab being opened; work on
    ``workers``."""
    client = app.client

    def mention(event: dict[str, Any], body: dict[str, Any]) -> None:
        channel = event.get("channel")
        app_id = event.get("app_id") or (event.get("bot_profile") or {}).get("app_id")
        agent = gate.agent_of(event.get("user"), event.get("bot_id"), app_id)
        if event.get("bot_id") and agent is None:
            return  # a bot the policy does not list under agents never asks for anything
        user = agent or event.get("user")
        if not user or not channel:
            return
        event_id = body.get("event_id")
        payload = {
            "text": command_text(str(event.get("text") or "")),
            "user": user,
            "agent": agent is not None,
            "channel": channel,
            "thread_ts": event.get("thread_ts") or event.get("ts"),
        }
        if not workers.hand_off(
            "mention",
            payload,
            user_id=str(user),
            dedupe_key=f"event:{event_id}" if event_id else None,
        ):
            log.info("event %s was already delivered; ignoring Slack's retry", event_id)

    def job(owed: int | None, payload: dict[str, Any]) -> Job:
        user, channel, text = str(payload["user"]), str(payload["channel"]), str(payload["text"])
        thread_ts, agent = payload.get("thread_ts"), bool(payload.get("agent"))

        def reply(message: str) -> None:
            try:
                if agent:  # automation cannot read ephemeral messages
                    client.chat_postMessage(channel=channel, text=message, thread_ts=thread_ts)
                else:
                    client.chat_postEphemeral(
                        channel=channel, user=user, text=message, thread_ts=thread_ts
                    )
            except SLACK_FAILURES as exc:
                log.warning("could not answer %s in %s: %s", user, channel, exc)

        def work() -> bool:
            try:
                parsed = parse(text)
            except CommandError as exc:
                reply(blocks.error_message(str(exc)))
                return False
            origin = Origin(channel_id=channel, channel_name=_channel_name(client, channel))
            return run(gate, parsed, user=user, origin=origin, reply=reply, owed=owed)

        return Job(work, reply, f"`@opsgate {text}`", actor=user)

    def home(event: dict[str, Any], client: WebClient) -> None:
        user = event.get("user")
        if event.get("tab", "home") != "home" or not isinstance(user, str):
            return
        workers.submit(
            lambda: publish_home(gate, client, user),
            answer=lambda _message: None,  # nobody asked: the log line is the answer
            what=f"the App Home of {user}",
        )

    app.event("app_mention")(mention)
    app.event("app_home_opened")(home)
    workers.handles("mention", job)


def _channel_name(client: WebClient, channel: str) -> str | None:
    """The channel's name (incident channels are matched by name), or None if unknown."""
    try:
        response = client.conversations_info(channel=channel)
    except SLACK_FAILURES as exc:
        log.warning("conversations.info %s failed: %s", channel, exc)
        return None
    channel_info: dict[str, Any] = response.data.get("channel") or {}  # type: ignore[union-attr]
    name = channel_info.get("name")
    return str(name) if name else None


def publish_home(gate: Gate, client: WebClient, user: str) -> None:
    """Publish ``user``'s App Home: active grants with time left, their pending requests, and
    for approvers the requests waiting on them (``views.publish``)."""
    # the user's own grants only: no need to resolve who approves grants (gate.active_grants)
    mine = gate.grants.active(user) if gate.grants is not None else []
    view = grant_blocks.home_view(mine, gate.pending_of(user), gate.pending_for(user), gate.now())
    try:
        client.views_publish(user_id=user, view=view)
    except SLACK_FAILURES as exc:
        log.warning("views.publish for %s failed: %s", user, exc)
