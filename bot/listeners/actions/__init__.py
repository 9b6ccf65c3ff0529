"""Buttons: Approve / Deny, Acknowledge (break-glass review), and a grant's Extend / End now.

Each listener acks at once, then lets the gate decide who may do what; a button carries only an
ID, everything else is read from the database.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
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


Clicked = Callable[[int, str, str | None], None]
"""What a button does: (the ID its ``value`` carries, the clicker's user ID, the channel)."""

Listener = Callable[[Ack, dict[str, Any], dict[str, Any], WebClient], None]


def _button(names: str, handle: Clicked) -> Listener:
    """A listener that acks at once, reads the ID the button carries (``names``: what it names,
    for the message when it carries none), runs ``handle`` and answers a :class:`GateError` to
    the clicker alone."""

    def listener(ack: Ack, body: dict[str, Any], action: dict[str, Any], client: WebClient) -> None:
        ack()
        user = body["user"]["id"]
        channel = body.get("channel", {}).get("id")
        try:
            value = int(action["value"])
        except (KeyError, TypeError, ValueError):
            _tell(client, channel, user, f"This button does not name a {names}; nothing changed.")
            return
        try:
            handle(value, user, channel)
        except (GateError, GrantError) as exc:
            _tell(client, channel, user, str(exc))

    return listener


def register(app: App, gate: Gate) -> None:
    """Listen for Approve / Deny, Acknowledge, and a grant's Extend / End now."""

    def approve(request_id: int, user: str, _channel: str | None) -> None:
        gate.approve(request_id, Actor(user))

    def deny(request_id: int, user: str, _channel: str | None) -> None:
        gate.deny(request_id, Actor(user))

    def acknowledge(request_id: int, user: str, _channel: str | None) -> None:
        gate.acknowledge(request_id, Actor(user))

    def end_now(grant_id: int, user: str, _channel: str | None) -> None:
        gate.revoke_grant(grant_id, Actor(user))

    def extend(grant_id: int, user: str, channel: str | None) -> None:
        grant = gate.grants.get(grant_id) if gate.grants else None
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

    app.action(blocks.APPROVE_ACTION)(_button("request", approve))
    app.action(blocks.DENY_ACTION)(_button("request", deny))
    app.action(blocks.ACKNOWLEDGE_ACTION)(_button("request", acknowledge))
    app.action(grant_blocks.EXTEND_ACTION)(_button("grant", extend))
    app.action(grant_blocks.END_ACTION)(_button("grant", end_now))


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
