"""Slack listeners, one package per listener kind; each has ``register(app, gate, workers)``.

Every listener only validates, acks and hands off (:mod:`bot.work`), so slack-bolt runs them
before it answers Slack (``process_before_response``): the ack is the listener's own answer. A
listener that raises all the same is answered by :func:`listener_failed`: one log line with a
reference, an HTTP 200 (never a 5xx: Slack would show its own error and may retry), and an
ephemeral answer to the person who caused it, with the same reference.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from slack_bolt import App, BoltResponse
from slack_sdk import WebClient
from slack_sdk.webhook import WebhookClient

from approvals.gate import Gate
from bot import blocks
from bot.listeners import actions, commands, events, modal
from bot.notifier import SLACK_FAILURES
from bot.work import Workers, answer_safely, failure_answer, new_reference

log = logging.getLogger(__name__)


def register(
    app: App, gate: Gate, workers: Workers, workloads: modal.WorkloadLister | None = None
) -> None:
    """Attach every listener to ``app``; their work runs on ``workers``. ``workloads`` lists a
    namespace's workloads for the request form's search (None: it offers none)."""
    commands.register(app, gate, workers)
    modal.register(app, gate, workers, workloads)
    actions.register(app, gate, workers)
    events.register(app, gate, workers)

    @app.error
    def failed(error: Exception, body: dict[str, Any], client: WebClient) -> BoltResponse:
        return listener_failed(error, body, client, workers)


def listener_failed(
    error: Exception, body: dict[str, Any], client: WebClient, workers: Workers
) -> BoltResponse:
    """What a listener that raised answers: logged once with a reference (see
    :func:`bot.work.failure_answer`), told to the person (in the ack for a slash command,
    through ``response_url`` or an ephemeral message otherwise, from a worker), and acked 200."""
    reference = new_reference()
    what = "your slash command" if body.get("command") else "your request"
    message = failure_answer(error, what, reference)
    if body.get("command"):
        answer = {"response_type": "ephemeral", "text": blocks.error_message(message)}
        return BoltResponse(status=200, body=json.dumps(answer))
    response_url = body.get("response_url")
    event = body.get("event") if isinstance(body.get("event"), dict) else {}
    user = _field(body, "user") or (event or {}).get("user")
    channel = _field(body, "channel") or (event or {}).get("channel")

    def tell(text: str) -> None:
        if isinstance(response_url, str) and response_url:
            WebhookClient(response_url).send(
                text=text, response_type="ephemeral", replace_original=False
            )
        elif isinstance(user, str) and isinstance(channel, str):
            client.chat_postEphemeral(channel=channel, user=user, text=text)
        elif isinstance(user, str):
            client.chat_postMessage(channel=user, text=text)

    def deliver() -> None:
        try:
            answer_safely(tell, message, reference)
        except SLACK_FAILURES as exc:  # pragma: no cover - answer_safely logs every failure
            log.warning("[%s] could not answer: %s", reference, exc)

    workers.submit(deliver, answer=lambda _text: None, what=f"the answer to {what}")
    return BoltResponse(status=200, body="")


def _field(body: dict[str, Any], name: str) -> str | None:
    value = body.get(name)
    found = value.get("id") if isinstance(value, dict) else None
    return found if isinstance(found, str) else None
