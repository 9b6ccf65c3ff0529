"""What Slack posts to a Request URL, parsed and checked before slack-bolt sees it.

:func:`parse` turns a verified body into the dict slack-bolt dispatches on, as Slack sends it:

- ``application/x-www-form-urlencoded`` with a ``payload`` field: an interaction (a JSON object
  with a ``type``: ``block_actions``, ``view_submission``…);
- ``application/x-www-form-urlencoded`` without one: a slash command (every value a string), or
  Slack's ``ssl_check``;
- ``application/json``: an Events API delivery (``event_callback``, ``url_verification``…).

:func:`check` then refuses a payload that slack-bolt or opsgate's listeners would fail on: each
kind's fields that are read (the shapes of Slack's payload reference, "Interaction payloads",
"Events API", "Slash commands", on docs.slack.dev) must be there with the right types, IDs must look
like Slack IDs and fit the database (at most 64 characters). Fields nobody reads are not checked, so
a field Slack adds later changes nothing. Both raise :class:`Malformed` with a one-line reason.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Annotated, Any, Literal
from urllib.parse import parse_qsl

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictStr,
    StringConstraints,
    ValidationError,
)

MAX_FIELDS = 100
"""Form fields a body may have (a slash command has about 15)."""
MAX_DEPTH = 64
"""How deeply a JSON body may nest (Slack's deepest payloads, rich text in a message in a
``block_actions``, nest about 12 levels)."""

SlackId = Annotated[str, StringConstraints(strict=True, pattern=r"^[A-Z0-9]{1,64}$")]
"""A user, channel, team, bot or app ID: ``U0123ABC``, ``C0123ABC``…"""
EventId = Annotated[str, StringConstraints(strict=True, pattern=r"^[A-Za-z0-9]{1,64}$")]
Ts = Annotated[str, StringConstraints(strict=True, pattern=r"^[0-9]{1,16}\.[0-9]{1,12}$")]
"""A message timestamp, ``1700000000.000100``."""
Url = Annotated[str, StringConstraints(strict=True, pattern=r"^https?://[^\s]+$", max_length=2048)]
Name = Annotated[str, StringConstraints(strict=True, min_length=1, max_length=255)]


class Malformed(ValueError):
    """A body that is not what Slack sends; the message is one line and safe to log, ``status``
    the HTTP status that answers it."""

    status = 400


class UnsupportedMediaType(Malformed):
    status = 415


class _Shape(BaseModel):
    """Checks the fields it names; any other field is allowed and left alone."""

    model_config = ConfigDict(extra="allow", frozen=True)


def _not_null(value: Any) -> Any:
    """For a field read as ``body.get(key, {})``: absent is fine, ``null`` is not."""
    if value is None:
        raise ValueError("must be an object, not null")
    return value


NotNull = BeforeValidator(_not_null)


class IdRef(_Shape):
    id: SlackId


class Authorization(_Shape):
    team_id: SlackId | None = None
    user_id: SlackId | None = None
    enterprise_id: SlackId | None = None


class SlashCommand(_Shape):
    """The form of ``/ops …``; ``text`` may be empty."""

    command: Annotated[str, StringConstraints(pattern=r"^/[^\s/]{1,31}$")]
    user_id: SlackId
    response_url: Url
    text: str = ""
    channel_id: SlackId | None = None
    channel_name: Name | None = None
    team_id: SlackId | None = None


class Action(_Shape):
    action_id: Name
    type: Name | None = None
    block_id: Name | None = None
    value: Annotated[str, StringConstraints(strict=True, max_length=2000)] | None = None


class Message(_Shape):
    ts: Ts


class Interaction(_Shape):
    """What every interaction payload carries: who interacted."""

    type: Name
    user: IdRef


class BlockActions(Interaction):
    """A click on a button (or another interactive element) of a message or a view."""

    actions: Annotated[list[Action], Field(min_length=1)]
    channel: Annotated[IdRef | None, NotNull] = None
    message: Message | None = None
    container: dict[str, Any] | None = None
    response_url: Url | None = None


class View(_Shape):
    callback_id: Annotated[str, StringConstraints(strict=True, max_length=255)]
    type: Name


class ViewPayload(Interaction):
    """``view_submission`` and ``view_closed``."""

    view: View


class Delivery(_Shape):
    """What every Events API body carries."""

    type: Name


class UrlVerification(Delivery):
    challenge: Annotated[str, StringConstraints(strict=True, min_length=1, max_length=1024)]


class Event(_Shape):
    type: Name


class AppMention(Event):
    """``@opsgate …``, from a person (``user``) or a bot (``bot_id``, ``app_id``)."""

    channel: SlackId
    ts: Ts
    text: StrictStr = ""
    user: SlackId | None = None
    bot_id: SlackId | None = None
    app_id: SlackId | None = None
    bot_profile: dict[str, Any] | None = None
    thread_ts: Ts | None = None


class AppHomeOpened(Event):
    user: SlackId
    tab: Name | None = None


EVENTS: dict[str, type[Event]] = {"app_mention": AppMention, "app_home_opened": AppHomeOpened}


class EventCallback(Delivery):
    event: dict[str, Any]
    event_id: EventId
    team_id: SlackId | None = None
    authorizations: list[Authorization] | None = None


INTERACTIONS: dict[str, type[Interaction]] = {
    "block_actions": BlockActions,
    "view_submission": ViewPayload,
    "view_closed": ViewPayload,
}
DELIVERIES: dict[str, type[Delivery]] = {
    "url_verification": UrlVerification,
    "event_callback": EventCallback,
}
"""The shape of each ``type`` whose fields are read; other types need only what every payload of
their kind carries (slack-bolt answers 404 to a type no listener takes)."""
EVENTS_API_TYPES = frozenset({"event_callback", "url_verification", "app_rate_limited"})
"""The types of the JSON bodies of the Events API, and only of those: slack-bolt dispatches on
``type`` whatever the form of the body, so a JSON ``block_actions`` or an interaction that says it
is an ``event_callback`` is refused."""

Kind = Literal["command", "interaction", "events_api", "ssl_check"]


@dataclass(frozen=True)
class Payload:
    """A parsed body: its kind (by how Slack sent it) and the dict slack-bolt dispatches on."""

    kind: Kind
    body: dict[str, Any]


def _depth(value: Any) -> int:
    """How deeply ``value`` nests (a scalar: 0), without recursion."""
    deepest, stack = 0, [(value, 0)]
    while stack:
        item, level = stack.pop()
        deepest = max(deepest, level)
        if isinstance(item, dict):
            stack.extend((v, level + 1) for v in item.values())
        elif isinstance(item, list):
            stack.extend((v, level + 1) for v in item)
    return deepest


def _json_object(text: str, what: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except (ValueError, RecursionError) as exc:  # ValueError: also too many digits in a number
        raise Malformed(f"{what} is not JSON ({type(exc).__name__})") from exc
    if not isinstance(value, dict):
        raise Malformed(f"{what} is a JSON {type(value).__name__}, not an object")
    if "command" in value:  # slack-bolt takes any body with a "command" for a slash command
        raise Malformed(f"{what} has a command field (slash commands are forms)")
    if _depth(value) > MAX_DEPTH:
        raise Malformed(f"{what} nests deeper than {MAX_DEPTH} levels")
    return value


def _form(text: str) -> Payload:
    try:
        fields = parse_qsl(
            text, keep_blank_values=True, strict_parsing=True, max_num_fields=MAX_FIELDS
        )
    except ValueError as exc:  # a field without "=", or too many fields
        raise Malformed("the form does not parse") from exc
    form = dict(fields)
    if len(form) != len(fields):
        raise Malformed("the form repeats a field")
    if "payload" in form:
        return Payload("interaction", _json_object(form["payload"], "the form's payload"))
    if "command" in form:
        return Payload("command", form)
    if form.get("ssl_check") == "1":
        return Payload("ssl_check", form)
    raise Malformed("the form is neither a slash command nor an interaction (no payload)")


def parse(content_type: str | None, body: bytes) -> Payload:
    """The payload in ``body``, sent with ``Content-Type: content_type``: see the module
    docstring. Raises :class:`Malformed` for anything else (an empty body, another media type,
    text that is not UTF-8, JSON that is not an object)."""
    media_type = (content_type or "").split(";", 1)[0].strip().lower()
    if media_type not in ("application/json", "application/x-www-form-urlencoded"):
        raise UnsupportedMediaType(f"unsupported Content-Type {media_type or '(none)'!r}")
    if not body:
        raise Malformed("the body is empty")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise Malformed(f"the body is not UTF-8 (byte {exc.start})") from exc
    if media_type == "application/json":
        return Payload("events_api", _json_object(text, "the body"))
    return _form(text)


def _validate(model: type[_Shape], data: dict[str, Any], what: str) -> None:
    try:
        model.model_validate(data)
    except ValidationError as exc:
        errors = exc.errors(include_url=False, include_input=False)
        first = errors[0]
        where = ".".join(str(part) for part in first["loc"]) or "(top level)"
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        raise Malformed(f"{what}: {where}: {first['msg']}{more}") from None


def check(payload: Payload) -> None:
    """Refuse (:class:`Malformed`) a parsed payload that slack-bolt's dispatch or a listener
    would fail on; see the module docstring."""
    body = payload.body
    if "event" in body and not isinstance(body["event"], dict):
        # slack-bolt's middleware reads body.get("event", {}).get(...) for every request
        raise Malformed("event is not an object")
    if payload.kind == "command":
        if "type" in body or "event" in body:
            raise Malformed("a slash command with a type or an event")
        _validate(SlashCommand, body, "slash command")
    elif payload.kind == "interaction":
        _validate(Interaction, body, "interaction")
        if body["type"] in EVENTS_API_TYPES:
            raise Malformed(f"an interaction of type {body['type']}")
        _validate(INTERACTIONS.get(body["type"], Interaction), body, body["type"])
    elif payload.kind == "events_api":
        _validate(Delivery, body, "Events API body")
        if body["type"] not in EVENTS_API_TYPES:
            raise Malformed(f"an Events API body of type {body['type']}")
        _validate(DELIVERIES.get(body["type"], Delivery), body, body["type"])
        if body["type"] == "event_callback":
            _validate(Event, body["event"], "event")
            _validate(EVENTS.get(body["event"]["type"], Event), body["event"], "event")


def describe(payload: Payload) -> str:
    """A short description of a checked payload for a log line: what, which, from whom."""
    body = payload.body
    if payload.kind == "command":
        return f"slash command {body['command']} from {body['user_id']}"
    if payload.kind == "ssl_check":
        return "ssl_check"
    if payload.kind == "interaction":
        what = body["type"]
        if what == "block_actions":
            what = f"{what} {body['actions'][0]['action_id']}"
        return f"{what} from {body['user']['id']}"
    if body["type"] == "event_callback":
        return f"event_callback {body['event']['type']} {body['event_id']}"
    return str(body["type"])
