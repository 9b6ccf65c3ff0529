"""Approve / Deny buttons: ack at once, then let the gate decide who may do what."""

from __future__ import annotations

from typing import Any

from slack_bolt import Ack, App
from slack_sdk import WebClient

from approvals.gate import Gate, GateError
from approvals.lifecycle import Actor
from bot import blocks


def register(app: App, gate: Gate) -> None:
    """Listen for the ``approve`` and ``deny`` buttons of approval messages."""

    def decide(ack: Ack, body: dict[str, Any], action: dict[str, Any], client: WebClient) -> None:
        ack()
        user = body["user"]["id"]
        channel = body.get("channel", {}).get("id")
        try:
            request_id = int(action["value"])
        except (KeyError, TypeError, ValueError):
            _tell(client, channel, user, "This button does not name a request; nothing changed.")
            return
        try:
            if action["action_id"] == blocks.APPROVE_ACTION:
                gate.approve(request_id, Actor(user))
            else:
                gate.deny(request_id, Actor(user))
        except GateError as exc:
            _tell(client, channel, user, str(exc))

    app.action(blocks.APPROVE_ACTION)(decide)
    app.action(blocks.DENY_ACTION)(decide)


def _tell(client: WebClient, channel: str | None, user: str, text: str) -> None:
    """Answer the clicker alone."""
    if channel is not None:
        client.chat_postEphemeral(channel=channel, user=user, text=blocks.error_message(text))
