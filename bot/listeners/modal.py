"""The request form: ``/ops`` with no arguments, the global shortcut "Request an operation" and
the message shortcut "Roll back / restart from this message" open it (``views.open``); picking an
action redraws it with that action's fields (``views.update``); the namespace and workload
selects search as one types (``block_suggestion``); submitting it files the same request as the
slash command.

Slack wants ``views.open`` within 3 s of the ``trigger_id``: the listeners ack and open it from a
worker at once, as slack-bolt apps do. The two answers that must come in the HTTP response are
answered there: an options load (the namespaces are the policy's; the workloads one list call to
the cluster, the data the person asked for), and a ``view_submission``, whose ack carries the field
errors (``response_action: errors``) after pure validation: the grammar
(``bot.grammar.parse_words``) and where the policy places the namespace. A good form is acked with
``response_action: clear`` and filed on a worker, owed in the database like a slash command.
"""

from __future__ import annotations

import fnmatch
import logging
import re
from collections.abc import Callable
from typing import Any, Protocol

from slack_bolt import Ack, App
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError
from slack_sdk.webhook import WebhookClient

from actions.errors import ActionError
from actions.registry import KINDS, KINDS_BY_NAME
from actions.spec import KindSpec
from approvals.gate import Gate, GateError, Origin, Submission
from approvals.lifecycle import Actor
from bot import blocks, modal_blocks
from bot.grammar import CommandError, parse_words
from bot.listeners.commands import run
from bot.modal_blocks import Prefill
from bot.mrkdwn import escape
from bot.notifier import SLACK_FAILURES
from bot.work import Job, Workers

log = logging.getLogger(__name__)

SHORTCUT = "ops_request_shortcut"
"""The ``callback_id`` of the global shortcut "Request an operation" (manifest.yml)."""
MESSAGE_SHORTCUT = "ops_from_message"
"""The ``callback_id`` of the message shortcut "Roll back / restart from this message"."""


class WorkloadLister(Protocol):
    """The workloads of a namespace as ``(kind, name)`` pairs, each list call bounded by
    ``timeout`` seconds, as ``actions.backends.kubernetes.KubernetesBackend.list_workloads``
    lists them."""

    def __call__(
        self, context: str | None, namespace: str, *, timeout: float | None = None
    ) -> list[tuple[str, str]]: ...


SEARCH_TIMEOUT = 0.8
"""Seconds each list call of a workload search may take: Slack reads the options from the
HTTP answer within 3 s, and a search makes three calls (Deployments, StatefulSets, DaemonSets)."""

_WORKLOAD_IN_TEXT = re.compile(
    r"\b(deployment|deploy|statefulset|sts|daemonset|ds)/([a-z0-9](?:[a-z0-9.-]*[a-z0-9])?)\b"
)
_NAMESPACE_IN_TEXT = re.compile(
    r"(?:(?<!\S)-n|--namespace|\bnamespace|\bns)[\s:=]+`?([a-z0-9](?:[a-z0-9-]*[a-z0-9])?)\b"
)
_KIND_WORD = {"deploy": "deployment", "sts": "statefulset", "ds": "daemonset"}


def open_form(
    client: WebClient, trigger_id: str, origin: dict[str, str | None], prefill: Prefill
) -> dict[str, Any]:
    """Open the request form (``views.open``) for ``trigger_id``; ``origin`` is where it was
    asked from (``channel_id``, ``channel_name``, ``message_ts``). Returns the view Slack
    opened (with its ``id`` and ``hash``). Raises ``SlackApiError``."""
    spec = KINDS_BY_NAME.get(prefill.kind or "")
    view = modal_blocks.request_modal(KINDS, spec, prefill, modal_blocks.metadata(**origin))
    opened: dict[str, Any] = client.views_open(trigger_id=trigger_id, view=view)["view"]
    return opened


def open_or_answer(
    client: WebClient,
    trigger_id: str,
    origin: dict[str, str | None],
    prefill: Prefill,
    answer: Callable[[str], None],
) -> dict[str, Any] | None:
    """:func:`open_form`; when Slack refuses (a ``trigger_id`` used twice or older than 3 s),
    the person is told with ``answer`` and the refusal logged once, and None is returned."""
    try:
        return open_form(client, trigger_id, origin, prefill)
    except SlackApiError as exc:
        error = exc.response.get("error")
        log.warning("Slack did not open the request form: %s", error)
        answer(
            blocks.error_message(
                f"Slack did not open the request form ({error}). Try again, or type the "
                "command (`/ops help` lists them)."
            )
        )
        return None


def prefill_from(text: str, kind: str = "restart") -> Prefill:
    """The form's start from an alert's text: the first ``kind/name`` workload it names and
    the namespace after ``namespace``, ``ns`` or ``-n`` (``namespace payments``, ``-n
    payments``, ``namespace: payments``)."""
    values: dict[str, str] = {}
    workload = _WORKLOAD_IN_TEXT.search(text)
    if workload:
        word = _KIND_WORD.get(workload.group(1), workload.group(1))
        values["workload"] = values["deployment"] = f"{word}/{workload.group(2)}"
    namespace = _NAMESPACE_IN_TEXT.search(text)
    if namespace:
        values["namespace"] = namespace.group(1)
    return Prefill(kind=kind, values=values)


def message_text(message: dict[str, Any]) -> str:
    """The words of a message as a person reads them: its ``text``, its attachments' title,
    pretext, text and fallback, and every ``text`` inside its blocks (alerting bots often post
    only attachments or blocks)."""
    found: list[str] = [str(message.get("text") or "")]

    def walk(value: Any) -> None:
        if isinstance(value, dict):
            for key, item in value.items():
                if key in ("text", "title", "pretext", "fallback") and isinstance(item, str):
                    found.append(item)
                else:
                    walk(item)
        elif isinstance(value, list):
            for item in value:
                walk(item)

    walk([message.get("attachments") or [], message.get("blocks") or []])
    return "\n".join(found)


def register(app: App, gate: Gate, workers: Workers, workloads: WorkloadLister | None) -> None:
    """Listen for the shortcuts, the form's action select, its searches and its submission."""
    client = app.client

    def opening(trigger: str, user: str, origin: dict[str, str | None], prefill: Prefill) -> None:
        def answer(message: str) -> None:
            _say(client, origin.get("channel_id"), user, message)

        def work() -> None:
            view = open_or_answer(client, trigger, origin, prefill, answer)
            spec = KINDS_BY_NAME.get(prefill.kind or "")
            if view is not None and spec is not None and prefill.values:  # show the decision
                values = {f"arg_{name}": value for name, value in prefill.values.items()}
                _redraw(gate, client, view, spec, values, user)

        workers.submit(
            work,
            answer=answer,
            what="the request form",
            actor=user,
        )

    def shortcut(ack: Ack, shortcut: dict[str, Any]) -> None:
        ack()
        user = (shortcut.get("user") or {}).get("id")
        if isinstance(user, str) and shortcut.get("trigger_id"):
            opening(str(shortcut["trigger_id"]), user, {}, Prefill())

    def from_message(ack: Ack, shortcut: dict[str, Any]) -> None:
        ack()
        user = (shortcut.get("user") or {}).get("id")
        channel = shortcut.get("channel") or {}
        message = shortcut.get("message") or {}
        if not isinstance(user, str) or not shortcut.get("trigger_id"):
            return
        origin = {
            "channel_id": channel.get("id"),
            "channel_name": channel.get("name"),
            "message_ts": message.get("ts"),
            "response_url": shortcut.get("response_url"),
        }
        prefill = prefill_from(message_text(message))
        opening(str(shortcut["trigger_id"]), user, origin, prefill)

    app.shortcut(SHORTCUT)(shortcut)
    app.shortcut(MESSAGE_SHORTCUT)(from_message)
    _register_form(app, gate, workers, workloads)


def _register_form(
    app: App, gate: Gate, workers: Workers, workloads: WorkloadLister | None
) -> None:
    """The form's own interactions: the action select, the searches, the submission."""
    client = app.client

    def changed(ack: Ack, body: dict[str, Any]) -> None:
        ack()
        view = body.get("view") or {}
        values = modal_blocks.form_values(view)
        for action in body.get("actions") or []:  # the choice just made, whatever the state says
            chosen = modal_blocks.state_value(action)
            if chosen is not None and action.get("block_id"):
                values[str(action["block_id"])] = chosen
        spec = KINDS_BY_NAME.get(values.get(modal_blocks.KIND_BLOCK, ""))
        user = str((body.get("user") or {}).get("id") or "")
        if not view.get("id") or spec is None or not user:
            return
        workers.submit(
            lambda: _redraw(gate, client, view, spec, values, user),
            answer=lambda message: _say(client, None, user, message),
            what="the request form",
            actor=user,
        )

    def namespaces(ack: Ack, payload: dict[str, Any]) -> None:
        query = str(payload.get("value") or "")
        ack(options=modal_blocks.options(_namespace_choices(gate, query), query))

    def workload_options(ack: Ack, payload: dict[str, Any], body: dict[str, Any]) -> None:
        query = str(payload.get("value") or "")
        values = modal_blocks.form_values(body.get("view") or {})
        namespace = values.get("arg_namespace")
        ack(options=modal_blocks.options(_workload_choices(gate, workloads, namespace), query))

    for action_id in (
        modal_blocks.KIND_ACTION,
        modal_blocks.NAMESPACE_ACTION,
        modal_blocks.WORKLOAD_ACTION,
    ):
        app.action(action_id)(changed)
    app.options(modal_blocks.NAMESPACE_ACTION)(namespaces)
    app.options(modal_blocks.WORKLOAD_ACTION)(workload_options)
    _register_submission(app, gate, workers)


def _redraw(
    gate: Gate,
    client: WebClient,
    view: dict[str, Any],
    spec: KindSpec,
    values: dict[str, str],
    user: str,
) -> None:
    """Update the form (``views.update``) to ``spec``'s fields, keeping what was filled in, with
    what the gate would decide once the fields parse (:meth:`approvals.gate.Gate.explain`: the
    policy's decision and the cluster's preview). A newer form (``hash_conflict``) wins."""
    carried = _carried(spec, values)
    current = {**values, **{f"arg_{name}": value for name, value in carried.items()}}
    kept = {a.name: current[f"arg_{a.name}"] for a in spec.grammar if f"arg_{a.name}" in current}
    decision, reason_required = _decided(gate, spec, current, user)
    prefill = Prefill(
        spec.name, kept, values.get(modal_blocks.REASON_BLOCK), decision, reason_required
    )
    form = modal_blocks.request_modal(KINDS, spec, prefill, view.get("private_metadata", ""))
    try:
        client.views_update(view_id=view["id"], hash=view.get("hash"), view=form)
    except SlackApiError as exc:
        if exc.response.get("error") != "hash_conflict":
            raise
        log.info("the request form %s changed again; this update is dropped", view["id"])


def _decided(
    gate: Gate, spec: KindSpec, values: dict[str, str], user: str
) -> tuple[str | None, bool]:
    """What the gate would decide for the form's ``values`` (mrkdwn) and whether a reason is
    required; None while the fields do not parse yet."""
    if modal_blocks.field_problems(spec, values):
        return None, False
    try:
        parsed = parse_words(modal_blocks.form_words(spec, values))
    except CommandError:
        return None, False
    assert parsed.params is not None
    submission = Submission(
        action=parsed.name,
        params=parsed.params,
        requester=Actor(user),
        namespace=parsed.namespace,
        env=parsed.env,
        reason=parsed.reason,
        path=parsed.path,
        break_glass=parsed.break_glass,
    )
    try:
        return modal_blocks.decision_text(gate.explain(submission))
    except GateError as exc:
        return f":no_entry: {escape(str(exc))}", False


def _carried(spec: KindSpec, values: dict[str, str]) -> dict[str, str]:
    """What the form held before another action was picked that the new one also has: the
    namespace, and the workload into the new action's workload field."""
    found: dict[str, str] = {}
    workload = next((v for b, v in values.items() if b in ("arg_workload", "arg_deployment")), None)
    for arg in spec.grammar:
        if arg.name == "namespace" and "arg_namespace" in values:
            found["namespace"] = values["arg_namespace"]
        elif arg.name in ("workload", "deployment") and workload is not None:
            found[arg.name] = workload
    return found


def _namespace_choices(gate: Gate, query: str) -> list[tuple[str, str]]:
    """The policy's namespaces; for a glob (``staging-*``), what was typed when it matches."""
    listed = gate.namespaces()
    names = [(n, n) for n in listed if not _is_glob(n)]
    typed = query.strip()
    if typed and typed not in dict(names) and any(fnmatch.fnmatchcase(typed, n) for n in listed):
        names.insert(0, (typed, typed))
    return names


def _is_glob(name: str) -> bool:
    return any(c in name for c in "*?[")


def _workload_choices(
    gate: Gate, workloads: WorkloadLister | None, namespace: str | None
) -> list[tuple[str, str]]:
    """The workloads of ``namespace`` as ``(kind/name, kind/name)`` options; none when no
    namespace is picked yet, the policy does not place it, or the cluster does not answer
    (logged: the person sees no options and may type the name in the slash command)."""
    if workloads is None or namespace is None:
        return []
    try:
        _env, context = gate.place(namespace)
        found = workloads(context, namespace, timeout=SEARCH_TIMEOUT)
    except (GateError, ActionError) as exc:
        log.warning("cannot list the workloads of %s for the request form: %s", namespace, exc)
        return []
    return [(f"{kind.lower()}/{name}", f"{kind.lower()}/{name}") for kind, name in found]


def _say(client: WebClient, channel: str | None, user: str, message: str) -> None:
    """Answer ``user`` alone: ephemeral in ``channel``, else in a direct message."""
    try:
        if channel:
            client.chat_postEphemeral(channel=channel, user=user, text=message)
        else:
            client.chat_postMessage(channel=user, text=message)
    except SLACK_FAILURES as exc:
        log.warning("could not answer %s: %s", user, exc)


def _register_submission(app: App, gate: Gate, workers: Workers) -> None:
    """Validate a submitted form in its ack, and file it on a worker."""
    client = app.client

    def submitted(ack: Ack, body: dict[str, Any], view: dict[str, Any]) -> None:
        user = str((body.get("user") or {}).get("id") or "")
        values = modal_blocks.form_values(view)
        spec = KINDS_BY_NAME.get(values.get(modal_blocks.KIND_BLOCK, ""))
        if spec is None or not user:
            ack(response_action="errors", errors={modal_blocks.KIND_BLOCK: "Pick an action."})
            return
        errors, words = _validate(gate, spec, values)
        if errors:
            ack(response_action="errors", errors=errors)
            return
        payload = {
            "words": words,
            "user": user,
            **modal_blocks.read_metadata(view.get("private_metadata")),
        }
        view_id = view.get("id")
        workers.hand_off(
            "form", payload, user_id=user, dedupe_key=f"view:{view_id}:{view.get('hash')}"
        )
        ack(response_action="clear")

    def job(owed: int | None, payload: dict[str, Any]) -> Job:
        user, words = str(payload["user"]), [str(w) for w in payload["words"]]
        channel, response_url = payload.get("channel_id"), payload.get("response_url")

        def reply(message: str) -> None:
            if response_url:  # as the slash command answers: to them alone, where they asked
                WebhookClient(str(response_url)).send(
                    text=message, response_type="ephemeral", replace_original=False
                )
            else:
                _say(client, channel, user, message)

        def work() -> bool:
            link = _permalink(client, channel, payload.get("message_ts"))
            parsed = parse_words(_linked(words, link) if link else words)
            origin = Origin(
                channel_id=channel or user,  # no channel (the global shortcut): a DM
                channel_name=payload.get("channel_name"),
                response_url=response_url,
            )
            return run(gate, parsed, user=user, origin=origin, reply=reply, owed=owed)

        return Job(work, reply, modal_blocks.submitted_title(words), actor=user, action=words[0])

    app.view(modal_blocks.MODAL_CALLBACK)(submitted)
    workers.handles("form", job)


def _validate(
    gate: Gate, spec: KindSpec, values: dict[str, str]
) -> tuple[dict[str, str], list[str]]:
    """``({block_id: message}, words)``: the form's field errors (none: it parses as the slash
    command does and the policy places its namespace) and its ``/ops`` words."""
    errors = modal_blocks.field_problems(spec, values)
    words = modal_blocks.form_words(spec, values)
    if errors:
        return errors, words
    try:
        parsed = parse_words(words)
    except CommandError as exc:
        message = str(exc).split("\nUsage", 1)[0].strip()
        return {modal_blocks.error_block(spec, message): message[:150]}, words
    if parsed.namespace is not None:
        try:
            gate.place(parsed.namespace, parsed.env)
        except GateError as exc:
            return {"arg_namespace": str(exc)[:150]}, words
    return {}, words


def _linked(words: list[str], link: str) -> list[str]:
    """``words`` whose reason ends with where the form was opened from (a message's link)."""
    reasons = [w for w in words if w.startswith("--reason=")]
    reason = reasons[-1].removeprefix("--reason=") if reasons else ""
    rest = [w for w in words if not w.startswith("--reason=")]
    return [*rest, f"--reason={reason} (from {link})" if reason else f"--reason=from {link}"]


def _permalink(client: WebClient, channel: str | None, message_ts: str | None) -> str | None:
    """The link to the message a form was opened from, or None (none, or Slack refused)."""
    if not channel or not message_ts:
        return None
    try:
        response = client.chat_getPermalink(channel=channel, message_ts=message_ts)
    except SLACK_FAILURES as exc:
        log.warning("chat.getPermalink %s %s failed: %s", channel, message_ts, exc)
        return None
    link = response.get("permalink")
    return str(link) if link else None
