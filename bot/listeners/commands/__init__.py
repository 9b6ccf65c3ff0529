"""The ``/ops`` slash command: ack at once, parse, then hand the request to the gate."""

from __future__ import annotations

import logging
from typing import Any

from slack_bolt import Ack, App, Respond

from approvals.gate import Gate, GateError, Origin, Submission
from approvals.lifecycle import Actor
from bot import blocks
from bot.grammar import CommandError, help_text, parse

log = logging.getLogger(__name__)


def register(app: App, gate: Gate) -> None:
    """Listen for ``/ops``."""

    def ops(ack: Ack, command: dict[str, Any], respond: Respond) -> None:
        text = (command.get("text") or "").strip()
        try:
            parsed = parse(text)
        except CommandError as exc:
            ack(response_type="ephemeral", text=blocks.error_message(str(exc)))
            return
        if parsed.name == "help":
            ack(response_type="ephemeral", text=help_text())
            return
        if parsed.name == "status":
            ack(response_type="ephemeral")
            _status(gate, parsed.request_id, command["user_id"], respond)
            return
        ack(response_type="ephemeral", text=f":hourglass_flowing_sand: Checking `/ops {text}`…")
        assert parsed.params is not None
        submission = Submission(
            action=parsed.name,
            params=parsed.params,
            requester=Actor(command["user_id"]),
            namespace=parsed.namespace,
            env=parsed.env,
            reason=parsed.reason,
            origin=Origin(
                channel_id=command.get("channel_id"),
                channel_name=command.get("channel_name"),
                response_url=command.get("response_url"),
            ),
        )
        try:
            gate.submit(submission)
        except GateError as exc:
            respond(response_type="ephemeral", text=blocks.error_message(str(exc)))

    app.command("/ops")(ops)


def _status(gate: Gate, request_id: int | None, user_id: str, respond: Respond) -> None:
    """Answer ``/ops status [ID]``: one request, or the user's latest ones."""
    if request_id is None:
        views = gate.latest(requester_id=user_id, limit=STATUS_LIMIT)
    else:
        try:
            views = [gate.get(request_id)]
        except GateError as exc:
            respond(response_type="ephemeral", text=blocks.error_message(str(exc)))
            return
    respond(response_type="ephemeral", text=blocks.status_list(views))


STATUS_LIMIT = 5
"""How many of a user's latest requests ``/ops status`` lists."""
