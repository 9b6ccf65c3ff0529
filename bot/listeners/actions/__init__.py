"""Buttons: Approve / Deny, Acknowledge (break-glass review), and a grant's Extend / End now.

Each listener acks at once and hands the click to opsgate's workers (:class:`bot.work.Workers`,
which owe it in the database until it is done),
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
from bot.work import Job, Workers

log = logging.getLogger(__name__)


Clicked = Callable[[int, str, str | None, int | None], bool | None]
"""What a button does: (the ID its ``value`` carries, the clicker's user ID, the channel, the
click's inbox row); True when it settled the row itself."""

Listener = Callable[[Ack, dict[str, Any], dict[str, Any], WebClient], None]


def _button(names: str, workers: Workers) -> Listener:
    """A listener that acks at once, reads the ID the button carries (``names``: what it names,
    for the message when it carries none or a malformed one), and hands the click to
    ``workers``, which answer any failure to the clicker alone."""

    def listener(ack: Ack, body: dict[str, Any], action: dict[str, Any], client: WebClient) -> None:
        ack()
        user = _id_of(body.get("user"))
        channel = _id_of(body.get("channel"))
        if user is None:
            log.warning("a click without a user; ignored")
            return
        try:
            value = parse_id(str(action.get("value", "")), names)
        except ValueError:
            why = f"This button does not name a {names}; nothing changed."
            workers.submit(
                lambda: _tell(client, channel, user, why),
                answer=lambda message: _say(client, channel, user, message),
                what="a click",
            )
            return
        payload = {"action_id": action["action_id"], "id": value, "user": user, "channel": channel}
        workers.hand_off("click", payload, user_id=user, response_url=body.get("response_url"))

    return listener


def register(app: App, gate: Gate, workers: Workers) -> None:
    """Listen for Approve / Deny, Acknowledge, and a grant's Extend / End now."""

    def approve(request_id: int, user: str, _channel: str | None, _owed: int | None) -> None:
        gate.approve(request_id, Actor(user))

    def deny(request_id: int, user: str, _channel: str | None, _owed: int | None) -> None:
        gate.deny(request_id, Actor(user))

    def acknowledge(request_id: int, user: str, _channel: str | None, _owed: int | None) -> None:
        gate.acknowledge(request_id, Actor(user))

    def end_now(grant_id: int, user: str, _channel: str | None, _owed: int | None) -> None:
        gate.revoke_grant(grant_id, Actor(user))

    def extend(grant_id: int, user: str, channel: str | None, owed: int | None) -> bool:
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
                owed=owed,
            )
        )
        return owed is not None

    buttons: dict[str, tuple[str, Clicked]] = {
        blocks.APPROVE_ACTION: ("request", approve),
        blocks.DENY_ACTION: ("request", deny),
        blocks.ACKNOWLEDGE_ACTION: ("request", acknowledge),
        grant_blocks.EXTEND_ACTION: ("grant", extend),
        grant_blocks.END_ACTION: ("grant", end_now),
    }
    client = app.client

    def job(owed: int | None, payload: dict[str, Any]) -> Job:
        """A click's work (an approval, …) is a guarded transition in the gate: replayed after
        it took effect, it changes nothing and the clicker is told it was already done."""
        names, handle = buttons[str(payload["action_id"])]
        value, user, channel = int(payload["id"]), str(payload["user"]), payload.get("channel")

        def say(message: str) -> None:
            _say(client, channel, user, message)

        return Job(
            lambda: handle(value, user, channel, owed),
            say,
            f"your click on {names} #{value}",
            actor=user,
        )

    for action_id, (names, _handle) in buttons.items():
        app.action(action_id)(_button(names, workers))
    workers.handles("click", job)


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
