"""Buttons: Approve / Deny, Acknowledge (break-glass review), and a grant's Extend / End now.

Each listener acks at once, then lets the gate decide who may do what; a button carries only an
ID, everything else is read from the database.
"""

from __future__ import annotations

import logging
from typing import Any

from slack_bolt import Ack, App
from slack_sdk import WebClient

from approvals.extend import ExtendParams
from approvals.gate import Gate, GateError, Origin, Submission
from approvals.grants import GrantError
from approvals.lifecycle import Actor
from bot import blocks, grant_blocks
from bot.notifier import SLACK_FAILURES

log = logging.getLogger(__name__)


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

    def acknowledge(
        ack: Ack, body: dict[str, Any], action: dict[str, Any], client: WebClient
    ) -> None:
        ack()
        user = body["user"]["id"]
        channel = body.get("channel", {}).get("id")
        try:
            request_id = int(action["value"])
        except (KeyError, TypeError, ValueError):
            _tell(client, channel, user, "This button does not name a request; nothing changed.")
            return
        try:
            gate.acknowledge(request_id, Actor(user))
        except GateError as exc:
            _tell(client, channel, user, str(exc))

    def grant_button(
        ack: Ack, body: dict[str, Any], action: dict[str, Any], client: WebClient
    ) -> None:
        ack()
        user = body["user"]["id"]
        channel = body.get("channel", {}).get("id")
        try:
            grant_id = int(action["value"])
        except (KeyError, TypeError, ValueError):
            _tell(client, channel, user, "This button does not name a grant; nothing changed.")
            return
        try:
            if action["action_id"] == grant_blocks.END_ACTION:
                gate.revoke_grant(grant_id, Actor(user))
                return
            try:
                grant = gate.grants.get(grant_id) if gate.grants else None
            except GrantError as exc:
                _tell(client, channel, user, str(exc))
                return
            seconds = min(grant.duration_seconds, EXTEND_BUTTON_SECONDS) if grant else 0
            room = grant.extendable_by() if grant else None
            if room:  # what the rule's max_duration still allows (0: the gate says so)
                seconds = min(seconds, room)
            gate.submit(
                Submission(
                    action="extend",
                    params=ExtendParams(grant_id=grant_id, seconds=max(seconds, 60)),
                    requester=Actor(user),
                    reason="extended from the reminder",
                    origin=Origin(channel_id=channel),
                )
            )
        except GateError as exc:
            _tell(client, channel, user, str(exc))

    app.action(blocks.ACKNOWLEDGE_ACTION)(acknowledge)
    app.action(grant_blocks.EXTEND_ACTION)(grant_button)
    app.action(grant_blocks.END_ACTION)(grant_button)


EXTEND_BUTTON_SECONDS = 3600
"""How much the reminder's Extend button asks for: the grant's duration, at most an hour, and
at most what the rule's ``max_duration`` still allows."""


def _tell(client: WebClient, channel: str | None, user: str, text: str) -> None:
    """Answer the clicker alone: ephemeral in the message's channel, or in a direct message for
    a click in the App Home tab (which has no channel)."""
    message = blocks.error_message(text)
    try:
        if channel is not None:
            client.chat_postEphemeral(channel=channel, user=user, text=message)
        else:
            client.chat_postMessage(channel=user, text=message)
    except SLACK_FAILURES as exc:
        log.warning("could not answer %s: %s", user, exc)
