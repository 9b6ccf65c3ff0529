"""The ``/ops`` slash command: parse, ack at once, then hand the request to opsgate's workers.

The listener only validates (the grammar), writes what is owed (one ``INSERT``, which also finds a
redelivery of the same command: :meth:`bot.work.Workers.hand_off`) and acks, touching no other
table and not Slack; the rest (a preview from the cluster, an approval message, an execution) runs
on :class:`bot.work.Workers`, and again after a restart if the process died first. :func:`run` is
shared with the ``app_mention`` listener (``@opsgate rollback …`` in an incident channel works
like the slash command); ``reply`` answers the person who asked, alone.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from datetime import timedelta
from typing import Any

from slack_bolt import Ack, App
from slack_sdk.webhook import WebhookClient

from actions.registry import KINDS_BY_NAME
from approvals.catalogue import catalogue
from approvals.gate import Gate, GateError, Origin, Submission
from approvals.lifecycle import Actor
from approvals.notifier import RequestView
from bot import blocks, grant_blocks
from bot.changes_blocks import changes_list
from bot.grammar import CHANGES_SINCE, Command, CommandError, help_text, parse
from bot.modal_blocks import Prefill
from bot.mrkdwn import escape
from bot.work import Job, Workers

log = logging.getLogger(__name__)

Reply = Callable[[str], None]

READS = frozenset({"help", "status", "history", "grants", "revoke", "changes", "catalogue"})
"""Commands answered at once, without a request (and without approval)."""


def register(app: App, gate: Gate, workers: Workers) -> None:
    """Listen for ``/ops``: validate, owe and ack here, work on ``workers``."""

    def ops(ack: Ack, command: dict[str, Any]) -> None:
        text = (command.get("text") or "").strip()
        if not text and command.get("trigger_id") and command.get("user_id"):
            ack()  # the form opens at once; nothing to say in the channel
            _open_form(app, workers, command)
            return
        try:
            parsed = parse(text)
        except CommandError as exc:
            ack(response_type="ephemeral", text=blocks.error_message(str(exc)))
            return
        if parsed.name == "help":
            ack(response_type="ephemeral", text=help_text(parsed.topic))
            return
        user = command.get("user_id")
        trigger = command.get("trigger_id")
        if not user:
            ack(response_type="ephemeral", text=blocks.error_message("This command names no user."))
            return
        response_url = command.get("response_url")
        payload = {
            "text": text,
            "user_id": str(user),
            "channel_id": command.get("channel_id"),
            "channel_name": command.get("channel_name"),
            "response_url": response_url,
        }
        # a replay of the same signed command, or Slack's retry of it, makes nothing twice
        if not workers.hand_off(
            "command",
            payload,
            user_id=str(user),
            response_url=response_url,
            dedupe_key=f"command:{trigger}" if trigger else None,
        ):
            log.info("command %s was already delivered; ignoring the redelivery", trigger)
        if parsed.name in READS:
            ack(response_type="ephemeral")
        else:
            ack(response_type="ephemeral", text=blocks.checking(text))

    def job(owed: int | None, payload: dict[str, Any]) -> Job:
        text = str(payload["text"])
        response_url = payload.get("response_url")

        def reply(message: str) -> None:
            if response_url:
                WebhookClient(str(response_url)).send(
                    text=message, response_type="ephemeral", replace_original=False
                )

        origin = Origin(
            channel_id=payload.get("channel_id"),
            channel_name=payload.get("channel_name"),
            response_url=response_url,
        )

        def work() -> bool:
            parsed = parse(text)  # it parsed at the ack: the same text parses the same
            return run(
                gate, parsed, user=str(payload["user_id"]), origin=origin, reply=reply, owed=owed
            )

        action = text.split(maxsplit=1)[0] if text.strip() else None
        return Job(work, reply, f"`/ops {text}`", actor=str(payload["user_id"]), action=action)

    app.command("/ops")(ops)
    workers.handles("command", job)


def _open_form(app: App, workers: Workers, command: dict[str, Any]) -> None:
    """Open the request form for ``/ops`` without arguments, from a worker (within the 3 s
    Slack gives a ``trigger_id``); a failure is answered through the ``response_url``."""
    from bot.listeners.modal import open_or_answer  # the form files through run() below

    response_url = command.get("response_url")
    origin = {
        "channel_id": command.get("channel_id"),
        "channel_name": command.get("channel_name"),
        "response_url": response_url,  # valid 30 minutes: answers the form's request there too
    }

    def answer(message: str) -> None:
        if response_url:
            WebhookClient(str(response_url)).send(
                text=message, response_type="ephemeral", replace_original=False
            )

    def work() -> None:
        open_or_answer(app.client, str(command["trigger_id"]), origin, Prefill(), answer)

    workers.submit(
        work,
        answer=answer,
        what="the request form",
        actor=str(command["user_id"]),
    )


def run(
    gate: Gate,
    parsed: Command,
    *,
    user: str,
    origin: Origin,
    reply: Reply,
    owed: int | None = None,
) -> bool:
    """Carry out a parsed command for ``user``; every answer for them alone goes to ``reply``.
    A request is filed with its inbox row ``owed`` settled in the same transaction; returns True
    when it was (raises :class:`approvals.inbox.AlreadyDone` when it had been before)."""
    try:
        if parsed.name == "help":
            reply(help_text(parsed.topic))
        elif parsed.name == "status":
            _status(gate, parsed.request_id, user, reply, parsed.page)
        elif parsed.name == "history":
            assert parsed.namespace is not None
            assert parsed.workload is not None
            lines = gate.history(parsed.namespace, parsed.env, parsed.workload)
            reply(blocks.history_lines(lines))
        elif parsed.name == "grants":
            _grants(gate, user, reply, parsed.page)
        elif parsed.name == "changes":
            _changes(gate, parsed, user, origin, reply)
        elif parsed.name == "catalogue":
            assert parsed.kind is not None
            loaded, spec = gate.policy(), KINDS_BY_NAME[parsed.kind]
            lines = catalogue(loaded, gate.group_members(), gate.actor(Actor(user), loaded), spec)
            reply("\n".join(escape(line) for line in lines))
        elif parsed.name == "revoke":
            assert parsed.grant_id is not None
            gate.revoke_grant(parsed.grant_id, Actor(user), reason=parsed.reason)
            reply(f"Grant #{parsed.grant_id} was revoked.")
        else:
            assert parsed.params is not None
            gate.submit(
                Submission(
                    action=parsed.name,
                    params=parsed.params,
                    requester=Actor(user),
                    namespace=parsed.namespace,
                    env=parsed.env,
                    reason=parsed.reason,
                    origin=origin,
                    path=parsed.path,
                    break_glass=parsed.break_glass,
                    owed=owed,
                )
            )
            return owed is not None
    except GateError as exc:
        reply(blocks.error_message(str(exc)))
    return False


def _status(gate: Gate, request_id: int | None, user_id: str, reply: Reply, page: int) -> None:
    """Answer ``/ops status [ID]``: one request, or the user's latest ones."""
    views: Sequence[RequestView]
    if request_id is None:
        views = gate.latest(requester_id=user_id, limit=STATUS_LIMIT, page=page)
    else:
        views = [gate.get_for(request_id, Actor(user_id))]
    reply(blocks.status_list(views))


def _grants(gate: Gate, user_id: str, reply: Reply, page: int) -> None:
    """Answer ``/ops grants``: the user's active grants, or every one for an approver."""
    grants, everyone = gate.active_grants(user_id, page=page)
    reply(grant_blocks.grants_list(grants, gate.now(), everyone=everyone))


def _changes(gate: Gate, parsed: Command, user_id: str, origin: Origin, reply: Reply) -> None:
    """Answer ``/ops changes``: what opsgate changed, newest first; in an incident channel and
    with no workload or namespace given, on what that channel's requests touched."""
    since = parsed.since or CHANGES_SINCE
    channel = None
    if parsed.workload is None and parsed.namespace is None and gate.is_incident(origin):
        channel = origin.channel_id
    page = gate.changes(
        Actor(user_id),
        since=gate.now() - timedelta(seconds=since),
        namespace=parsed.namespace,
        workload=parsed.workload,
        channel=channel,
        page=parsed.page,
    )
    scope = "".join(
        [
            f" on {escape(parsed.workload)}" if parsed.workload else "",
            f" in {escape(parsed.namespace)}" if parsed.namespace else "",
            " to what this incident channel's requests touched" if channel else "",
        ]
    )
    reply(changes_list(page, since, scope))


STATUS_LIMIT = 5
"""How many of a user's latest requests ``/ops status`` lists."""
