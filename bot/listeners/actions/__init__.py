"""Buttons: Approve / Deny, Acknowledge (break-glass review), and a grant's Extend / End now.

Each listener acks at once and hands the click to opsgate's workers (:class:`bot.work.Workers`),
where the gate decides who may do what; a button carries only an ID (checked before anything
reads the database), everything else is read from the database.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from slack_bolt import Ack, App
from slack_sdk import WebClient

from approvals.extend import ExtendParams
from approvals.gate import Gate, Origin, Submission
from approvals.lifecycle import Actor
from bot import blocks, grant_blocks
from bot.grammar import parse_id
from bot.notifier import SLACK_FAILURES
from bot.work import Workers

log = logging.getLogger(__name__)


Clicked = Callable[[int, str, str | None], None]
"""What a button does: (the ID its ``value`` carries, the clicker's user ID, the channel)."""

Listener = Callable[[Ack, dict[str, Any], dict[str, Any], WebClient], None]


def _button(names: str, handle: Clicked, workers: Workers) -> Listener:
    """A listener that acks at once, reads the ID the button carries (``names``: what it names,
    for the message when it carries none or a malformed one), and hands ``handle`` to
    ``workers``, which answer any failure to the clicker alone."""

    def listener(ack: Ack, body: dict[str, Any], action: dict[str, Any], client: WebClient) -> None:
        ack()
        user = _id_of(body.get("user"))
        channel = _id_of(body.get("channel"))
        if user is None:
            log.warning("a click without a user; ignored")
            return

        def say(message: str) -> None:
            _say(client, channel, user, message)

        try:
            value = parse_id(str(action.get("value", "")), names)
        except ValueError:
            why = f"This button does not name a {names}; nothing changed."
            workers.submit(lambda: _tell(client, channel, user, why), answer=say, what="a click")
            return
        workers.submit(
            lambda: handle(value, user, channel),
            answer=say,
            what=f"your click on {names} #{value}",
            actor=user,
        )

    return listener


def register(app: App, gate: Gate, workers: Workers) -> None:
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

    app.action(blocks.APPROVE_ACTION)(_button("request", approve, workers))
    app.action(blocks.DENY_ACTION)(_button("request", deny, workers))
    app.action(blocks.ACKNOWLEDGE_ACTION)(_button("request", acknowledge, workers))
    app.action(grant_blocks.EXTEND_ACTION)(_button("grant", extend, workers))
    app.action(grant_blocks.END_ACTION)(_button("grant", end_now, workers))


EXTEND_BUTTON_SECONDS = 3600
"""How much the reminder's Extend button asks for: the grant's duration, at most an hour, and
at most what the rule's ``max_duration`` still allows."""


def _id_of(field: object) -> str | None:
    """The ``id`` of a payload's ``user`` or ``channel`` object, or None if it has none."""
    value = field.get("id") if isinstance(field, dict) else None
    return value if isinstance(value, str) and value else None


def _tell(client: WebClient, channel: str | None, user: str, text: str) -> None:
    """Answer an error to the clicker alone (see :func:`_say`)."""
    _say(client, channel, user, blocks.error_message(text))


def _say(client: WebClient, channel: str | None, user: str, message: str) -> None:
    """Answer the clicker alone: ephemeral in the message's channel, or in a direct message for
    a click in the App Home tab (which has no channel)."""
    try:
        if channel is not None:
            client.chat_postEphemeral(channel=channel, user=user, text=message)
        else:
            client.chat_postMessage(channel=user, text=message)
    except SLACK_FAILURES as exc:
        log.warning("could not answer %s: %s", user, exc)
