"""The Undo button of an earned-autonomy notice (:mod:`bot.autonomy_blocks`).

It acks at once and hands the click to the workers: the gate checks that the clicker is one of
the rule's approvers and records the reset (:meth:`approvals.gate.Gate.undo_autonomy`); the
notice is then updated to say who took the autonomy back. A refusal is answered to the clicker
alone.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from slack_bolt import Ack, App
from slack_sdk import WebClient

from approvals.gate import Gate
from approvals.lifecycle import Actor
from approvals.notifier import RequestView
from bot import autonomy_blocks
from bot.grammar import parse_id
from bot.listeners.actions import _id_of, _say
from bot.notifier import SLACK_FAILURES
from bot.work import Workers

log = logging.getLogger(__name__)


def register(
    app: App, gate: Gate, workers: Workers, agent_name: Callable[[RequestView], str | None]
) -> None:
    """Listen for Undo; ``agent_name(view)`` names a request's agent (None if unknown)."""

    @app.action(autonomy_blocks.UNDO_ACTION)
    def undo(ack: Ack, body: dict[str, Any], action: dict[str, Any], client: WebClient) -> None:
        ack()
        user = _id_of(body.get("user"))
        channel = _id_of(body.get("channel"))
        ts = (body.get("container") or {}).get("message_ts")
        if user is None:
            log.warning("an Undo click without a user; ignored")
            return

        def say(message: str) -> None:
            _say(client, channel, user, message)

        def work() -> None:
            request_id = parse_id(str(action.get("value", "")), "request ID")
            view = gate.undo_autonomy(request_id, Actor(user))
            if channel is None or not isinstance(ts, str):
                return
            text, blocks = autonomy_blocks.autonomy_undone(view, agent_name(view), user)
            try:
                client.chat_update(channel=channel, ts=ts, text=text, blocks=blocks)
            except SLACK_FAILURES as exc:
                log.error("request #%s: the autonomy notice was not updated: %s", view.id, exc)

        workers.submit(work, answer=say, what="your click on Undo")
