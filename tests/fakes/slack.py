"""A fake Slack: the Web API over real HTTP (pytest-httpserver), and requests signed as Slack signs.

``FakeSlack`` answers ``auth.test``, ``chat.postMessage``, ``chat.update``, ``chat.postEphemeral``
and the ``response_url`` of slash commands and interactions, checks the bot token, and records
every call (:attr:`FakeSlack.calls`). Point ``SLACK_API_URL`` at :attr:`FakeSlack.api_url`.
``fail(method, error)`` makes a method answer ``{"ok": false, "error": error}``.

For Socket Mode it also answers ``apps.connections.open``, which (as in real Slack) takes the
app-level token (``xapp-…``, :data:`APP_TOKEN`) and refuses the bot token with
``not_allowed_token_type``, as every other method refuses the app-level token. Set
:attr:`FakeSlack.socket_mode_url` (the WebSocket server of ``tests/fakes/slack_socket.py``) first;
each call answers it with a fresh one-time ``?ticket=…&app_id=…`` (:attr:`FakeSlack.tickets`).

``SlackSigner`` builds the bodies and headers Slack sends to a Request URL: form-encoded slash
commands, ``payload=`` interactions, and ``X-Slack-Signature: v0=HMAC-SHA256(secret,
"v0:{timestamp}:{body}")`` with ``X-Slack-Request-Timestamp``.
"""

from __future__ import annotations

import hashlib
import hmac
import itertools
import json
import re
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, urlencode

from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

BOT_TOKEN = "xoxb-test-0000000000-opsgate"
SIGNING_SECRET = "8f742231b10e8888abcd99yyyzzz85a5"
APP_TOKEN = "xapp-1-test"
APP_ID = "A0OPSGATE"
TEAM_ID = "T0TEST"
BOT_USER_ID = "U0OPSGATE"


@dataclass(frozen=True)
class Call:
    """One recorded call: the Web API method (or ``response_url``) and its arguments."""

    method: str
    args: dict[str, Any]
    path: str
    response: dict[str, Any]
    token: str | None = None
    """The Bearer token of the ``Authorization`` header (``None`` for a ``response_url``)."""


@dataclass
class FakeSlack:
    server: HTTPServer
    calls: list[Call] = field(default_factory=list)
    _failures: dict[str, list[tuple[str, str | None]]] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _ts: Any = field(default_factory=lambda: itertools.count(1))
    _urls: Any = field(default_factory=lambda: itertools.count(1))
    socket_mode_url: str | None = None
    """Base ``ws://`` URL that ``apps.connections.open`` hands out; unset: Socket Mode is off."""
    app_token: str = APP_TOKEN
    channels: dict[str, str] = field(default_factory=dict)
    """Channel ID -> name, for ``conversations.info`` (unknown IDs answer ``channel_not_found``)."""
    answers: list[dict[str, Any]] = field(default_factory=list)
    """The JSON bodies the bot answered Slack's requests with (``RunningBot.post`` records
    them), for the message scan of ``tests/message_scan.py``."""
    tickets: set[str] = field(default_factory=set)
    """Tickets handed out by ``apps.connections.open`` and not yet used (see ``use_ticket``)."""

    def use_ticket(self, ticket: str | None) -> bool:
        """Consume a ticket of ``apps.connections.open``: true once per ticket it issued."""
        with self._lock:
            if ticket in self.tickets:
                self.tickets.discard(ticket)
                return True
            return False

    @property
    def api_url(self) -> str:
        return self.server.url_for("/api/")

    def response_url(self) -> str:
        """A fresh response_url, as Slack puts in a slash command or an interaction."""
        return self.server.url_for(f"/response/{next(self._urls)}")

    def fail(self, method: str, error: str, *, times: int = 1, channel: str | None = None) -> None:
        """The next ``times`` calls of ``method`` (to ``channel``, if given) answer ``ok: false``
        with ``error``."""
        with self._lock:
            self._failures.setdefault(method, []).extend([(error, channel)] * times)

    def calls_of(self, method: str) -> list[Call]:
        with self._lock:
            return [c for c in self.calls if c.method == method]

    def all_text(self) -> str:
        """Everything the bot sent to Slack, as one JSON string (for searching for secrets)."""
        with self._lock:
            return json.dumps([c.args for c in self.calls], sort_keys=True)

    # --- the HTTP side ---------------------------------------------------------------------------

    def _record(
        self,
        method: str,
        args: dict[str, Any],
        path: str,
        response: dict[str, Any],
        token: str | None = None,
    ) -> None:
        with self._lock:
            self.calls.append(Call(method, args, path, response, token))

    def _next_failure(self, method: str, channel: str | None) -> str | None:
        with self._lock:
            queue = self._failures.get(method, [])
            for i, (error, only) in enumerate(queue):
                if only is None or only == channel:
                    del queue[i]
                    return error
            return None

    def handle_api(self, request: Request) -> Response:
        method = request.path.rsplit("/", 1)[-1]
        args = _request_args(request)
        authorization = request.headers.get("Authorization")
        answer = self._answer(method, args, authorization)
        token = authorization.removeprefix("Bearer ") if authorization else None
        self._record(method, args, request.path, answer, token)
        return Response(json.dumps(answer), status=200, content_type="application/json")

    def _answer(
        self, method: str, args: dict[str, Any], authorization: str | None
    ) -> dict[str, Any]:
        wanted, other = BOT_TOKEN, self.app_token
        if method in _APP_TOKEN_METHODS:
            wanted, other = other, wanted
        if authorization == f"Bearer {other}":
            return {"ok": False, "error": "not_allowed_token_type"}
        if authorization != f"Bearer {wanted}":
            return {"ok": False, "error": "invalid_auth"}
        error = self._next_failure(method, args.get("channel"))
        if error is not None:
            return {"ok": False, "error": error}
        handler = _HANDLERS.get(method)
        if handler is None:
            return {"ok": False, "error": "unknown_method"}
        return handler(self, args)

    def handle_response_url(self, request: Request) -> Response:
        self._record("response_url", _request_args(request), request.path, {})
        return Response("ok", status=200, content_type="text/html")

    def new_ts(self) -> str:
        return f"{1_700_000_000 + next(self._ts)}.000100"


def _request_args(request: Request) -> dict[str, Any]:
    if request.mimetype == "application/json":
        data = json.loads(request.get_data(as_text=True) or "{}")
        return dict(data)
    return dict(parse_qsl(request.get_data(as_text=True)))


def _auth_test(fake: FakeSlack, args: dict[str, Any]) -> dict[str, Any]:
    return {
        "ok": True,
        "url": "https://test.slack.com/",
        "team": "test",
        "user": "opsgate",
        "team_id": TEAM_ID,
        "user_id": BOT_USER_ID,
        "bot_id": "B0OPSGATE",
    }


def _post_message(fake: FakeSlack, args: dict[str, Any]) -> dict[str, Any]:
    ts = fake.new_ts()
    message = {"type": "message", "text": args.get("text"), "ts": ts, "bot_id": "B0OPSGATE"}
    return {"ok": True, "channel": args.get("channel"), "ts": ts, "message": message}


def _update(fake: FakeSlack, args: dict[str, Any]) -> dict[str, Any]:
    return {
        "ok": True,
        "channel": args.get("channel"),
        "ts": args.get("ts"),
        "text": args.get("text"),
    }


def _post_ephemeral(fake: FakeSlack, args: dict[str, Any]) -> dict[str, Any]:
    return {"ok": True, "message_ts": fake.new_ts()}


def _conversations_info(fake: FakeSlack, args: dict[str, Any]) -> dict[str, Any]:
    channel = args.get("channel")
    name = fake.channels.get(str(channel))
    if name is None:
        return {"ok": False, "error": "channel_not_found"}
    return {"ok": True, "channel": {"id": channel, "name": name, "is_channel": True}}


def _views_publish(fake: FakeSlack, args: dict[str, Any]) -> dict[str, Any]:
    view = args.get("view")
    if isinstance(view, str):
        view = json.loads(view)
    if not args.get("user_id") or not isinstance(view, dict) or view.get("type") != "home":
        return {"ok": False, "error": "invalid_arguments"}
    return {"ok": True, "view": {"id": "V0HOME", **view}}


def _connections_open(fake: FakeSlack, args: dict[str, Any]) -> dict[str, Any]:
    if fake.socket_mode_url is None:
        # this fake's own answer when no test set up a Socket Mode server
        return {"ok": False, "error": "socket_mode_not_enabled"}
    ticket = str(uuid.uuid4())
    with fake._lock:
        fake.tickets.add(ticket)
    return {"ok": True, "url": f"{fake.socket_mode_url}?ticket={ticket}&app_id={APP_ID}"}


# Methods that take the app-level token (and refuse the bot token).
_APP_TOKEN_METHODS = frozenset({"apps.connections.open"})
_TRIGGERS = itertools.count(1)

_HANDLERS: dict[str, Callable[[FakeSlack, dict[str, Any]], dict[str, Any]]] = {
    "apps.connections.open": _connections_open,
    "auth.test": _auth_test,
    "chat.postMessage": _post_message,
    "chat.update": _update,
    "chat.postEphemeral": _post_ephemeral,
    "conversations.info": _conversations_info,
    "views.publish": _views_publish,
}


def start_fake_slack() -> FakeSlack:
    """Start a fake Slack on a free loopback port; stop it with ``fake.server.stop()``."""
    server = HTTPServer(host="127.0.0.1", port=0)
    server.start()
    fake = FakeSlack(server)
    server.expect_request(re.compile(r"^/api/.+")).respond_with_handler(fake.handle_api)
    server.expect_request(re.compile(r"^/response/\d+$")).respond_with_handler(
        fake.handle_response_url
    )
    return fake


# --- requests into the bot, signed as Slack signs them --------------------------------------------


def signature(secret: str, timestamp: str, body: str) -> str:
    """``v0=`` + hex HMAC-SHA256 of ``v0:{timestamp}:{body}``, as Slack computes it."""
    base = f"v0:{timestamp}:{body}".encode()
    return "v0=" + hmac.new(secret.encode(), base, hashlib.sha256).hexdigest()


def signed_headers(
    body: str,
    *,
    secret: str = SIGNING_SECRET,
    timestamp: int | None = None,
    content_type: str | None = None,
) -> dict[str, str]:
    ts = str(int(time.time()) if timestamp is None else timestamp)
    if content_type is None:
        json_body = body.startswith("{")
        content_type = "application/json" if json_body else "application/x-www-form-urlencoded"
    return {
        "Content-Type": content_type,
        "X-Slack-Request-Timestamp": ts,
        "X-Slack-Signature": signature(secret, ts, body),
    }


def slash_command_body(
    text: str,
    *,
    user_id: str,
    channel_id: str = "C0DEV",
    channel_name: str = "dev",
    response_url: str,
    trigger_id: str | None = None,
) -> str:
    """The form body Slack posts for ``/ops <text>``."""
    return urlencode(
        slash_command_payload(
            text,
            user_id=user_id,
            channel_id=channel_id,
            channel_name=channel_name,
            response_url=response_url,
            trigger_id=trigger_id,
        )
    )


def slash_command_payload(
    text: str,
    *,
    user_id: str,
    channel_id: str = "C0DEV",
    channel_name: str = "dev",
    response_url: str,
    trigger_id: str | None = None,
) -> dict[str, str]:
    """The fields of ``/ops <text>``: the HTTP form, or the ``payload`` of a Socket Mode
    ``slash_commands`` envelope."""
    return {
        "token": "legacy-verification-token",
        "team_id": TEAM_ID,
        "team_domain": "test",
        "channel_id": channel_id,
        "channel_name": channel_name,
        "user_id": user_id,
        "user_name": user_id.lower(),
        "command": "/ops",
        "text": text,
        "api_app_id": "A0OPSGATE",
        "is_enterprise_install": "false",
        "response_url": response_url,
        # Slack gives each invocation its own trigger_id (a replay carries the same one)
        "trigger_id": trigger_id or f"{next(_TRIGGERS)}.1234567890.{uuid.uuid4().hex[:32]}",
    }


def block_action_body(
    action_id: str,
    value: str,
    *,
    user_id: str,
    channel_id: str,
    message_ts: str,
    response_url: str,
) -> str:
    """The form body (``payload=`` JSON) Slack posts when a button of a message is clicked."""
    payload = block_action_payload(
        action_id,
        value,
        user_id=user_id,
        channel_id=channel_id,
        message_ts=message_ts,
        response_url=response_url,
    )
    return urlencode({"payload": json.dumps(payload)})


def block_action_payload(
    action_id: str,
    value: str,
    *,
    user_id: str,
    channel_id: str,
    message_ts: str,
    response_url: str,
) -> dict[str, Any]:
    """The ``block_actions`` payload of a click on a message's button: JSON in the HTTP form's
    ``payload=``, or the ``payload`` of a Socket Mode ``interactive`` envelope."""
    return {
        "type": "block_actions",
        "user": {"id": user_id, "username": user_id.lower(), "team_id": TEAM_ID},
        "api_app_id": "A0OPSGATE",
        "token": "legacy-verification-token",
        "container": {
            "type": "message",
            "message_ts": message_ts,
            "channel_id": channel_id,
            "is_ephemeral": False,
        },
        "trigger_id": "4.5.6",
        "team": {"id": TEAM_ID, "domain": "test"},
        "channel": {"id": channel_id, "name": "approvals"},
        "message": {"type": "message", "ts": message_ts, "text": "approval request"},
        "response_url": response_url,
        "actions": [
            {
                "action_id": action_id,
                "block_id": "decision",
                "text": {"type": "plain_text", "text": action_id.capitalize()},
                "value": value,
                "type": "button",
                "action_ts": f"{time.time():.6f}",
            }
        ],
    }


def event_callback_body(event: dict[str, Any], *, event_id: str | None = None) -> str:
    """The JSON body Slack posts to the Request URL for an Events API event (``event_callback``).
    Sign it with :func:`signed_headers` and send it as ``application/json``."""
    return json.dumps(
        {
            "token": "legacy-verification-token",
            "team_id": TEAM_ID,
            "api_app_id": APP_ID,
            "event": event,
            "type": "event_callback",
            "event_id": event_id or f"Ev{uuid.uuid4().hex[:10].upper()}",
            "event_time": int(time.time()),
            "authorizations": [
                {"team_id": TEAM_ID, "user_id": BOT_USER_ID, "is_bot": True, "enterprise_id": None}
            ],
        }
    )


def app_mention_event(
    text: str, *, user: str, channel: str, ts: str | None = None
) -> dict[str, Any]:
    """An ``app_mention`` event: ``<@U0OPSGATE> rollback …`` posted by ``user`` in ``channel``."""
    return {
        "type": "app_mention",
        "user": user,
        "text": f"<@{BOT_USER_ID}> {text}",
        "ts": ts or f"{time.time():.6f}",
        "channel": channel,
        "event_ts": f"{time.time():.6f}",
    }


# --- usergroups.users.list ----------------------------------------------------------------------


def set_usergroup(fake: FakeSlack, usergroup_id: str, users: list[str]) -> None:
    """Make ``usergroups.users.list`` answer ``users`` for ``usergroup_id`` (an ``S…`` ID)."""
    with fake._lock:
        fake.__dict__.setdefault("usergroups", {})[usergroup_id] = list(users)


def _usergroups_users_list(fake: FakeSlack, args: dict[str, Any]) -> dict[str, Any]:
    with fake._lock:
        users = fake.__dict__.get("usergroups", {}).get(args.get("usergroup"))
    if users is None:
        return {"ok": False, "error": "no_such_subteam"}  # Slack's error for an unknown group
    return {"ok": True, "users": list(users)}


_HANDLERS["usergroups.users.list"] = _usergroups_users_list


# --- modals: views.open / views.update / views.push, chat.getPermalink ---------------------------


def _view_arg(args: dict[str, Any]) -> dict[str, Any] | None:
    view = args.get("view")
    if isinstance(view, str):
        view = json.loads(view)
    if not isinstance(view, dict) or view.get("type") != "modal" or not view.get("blocks"):
        return None
    return view


def _opened(fake: FakeSlack, view: dict[str, Any], view_id: str) -> dict[str, Any]:
    stored = {"id": view_id, "hash": uuid.uuid4().hex[:16], "state": {"values": {}}, **view}
    with fake._lock:
        fake.__dict__.setdefault("views", {})[view_id] = stored
    return {"ok": True, "view": stored}


def _views_open(fake: FakeSlack, args: dict[str, Any]) -> dict[str, Any]:
    """``views.open`` (and ``views.push``): a modal for a ``trigger_id``, which Slack accepts
    once (``invalid_trigger_id`` otherwise, as for one it never issued)."""
    view, trigger = _view_arg(args), args.get("trigger_id")
    if view is None:
        return {"ok": False, "error": "invalid_arguments"}
    with fake._lock:
        used = fake.__dict__.setdefault("triggers_used", set())
        if not trigger or trigger in used:
            return {"ok": False, "error": "invalid_trigger_id"}
        used.add(trigger)
    return _opened(fake, view, f"V0MODAL{next(fake._ts)}")


def _views_update(fake: FakeSlack, args: dict[str, Any]) -> dict[str, Any]:
    view, view_id = _view_arg(args), args.get("view_id")
    with fake._lock:
        known = view_id in fake.__dict__.get("views", {})
    if view is None:
        return {"ok": False, "error": "invalid_arguments"}
    if not known:
        return {"ok": False, "error": "not_found"}
    return _opened(fake, view, str(view_id))


def _get_permalink(fake: FakeSlack, args: dict[str, Any]) -> dict[str, Any]:
    channel, ts = args.get("channel"), str(args.get("message_ts") or "")
    if not channel or not ts:
        return {"ok": False, "error": "invalid_arguments"}
    link = f"https://test.slack.com/archives/{channel}/p{ts.replace('.', '')}"
    return {"ok": True, "channel": channel, "permalink": link}


def view_of(fake: FakeSlack, view_id: str) -> dict[str, Any]:
    """The modal ``view_id`` as the last ``views.open``/``views.update`` left it."""
    with fake._lock:
        view: dict[str, Any] = fake.__dict__["views"][view_id]
        return view


_HANDLERS["views.open"] = _views_open
_HANDLERS["views.push"] = _views_open
_HANDLERS["views.update"] = _views_update
_HANDLERS["chat.getPermalink"] = _get_permalink


# --- interactions with a modal, signed as Slack sends them --------------------------------------


def _interaction(kind: str, user_id: str, **fields: Any) -> dict[str, Any]:
    return {
        "type": kind,
        "user": {"id": user_id, "username": user_id.lower(), "team_id": TEAM_ID},
        "api_app_id": APP_ID,
        "token": "legacy-verification-token",
        "team": {"id": TEAM_ID, "domain": "test"},
        "is_enterprise_install": False,
        **fields,
    }


def new_trigger_id() -> str:
    return f"{next(_TRIGGERS)}.1234567890.{uuid.uuid4().hex[:32]}"


def shortcut_payload(callback_id: str, *, user_id: str) -> dict[str, Any]:
    """A global shortcut (the lightning menu) chosen by ``user_id``."""
    return _interaction(
        "shortcut", user_id, callback_id=callback_id, trigger_id=new_trigger_id(), action_ts="1.2"
    )


def message_action_payload(
    callback_id: str,
    *,
    user_id: str,
    channel_id: str,
    channel_name: str,
    message: dict[str, Any],
    response_url: str,
) -> dict[str, Any]:
    """A message shortcut chosen on ``message`` (with its ``text`` and ``ts``) in a channel."""
    return _interaction(
        "message_action",
        user_id,
        callback_id=callback_id,
        trigger_id=new_trigger_id(),
        message_ts=message["ts"],
        message=message,
        channel={"id": channel_id, "name": channel_name},
        response_url=response_url,
    )


def view_block_action_payload(
    view: dict[str, Any], block_id: str, action_id: str, selected: str, *, user_id: str
) -> dict[str, Any]:
    """A ``block_actions`` payload from a ``static_select`` of a modal (``selected``: the
    option's value), with the view as Slack sends it."""
    option = {"text": {"type": "plain_text", "text": selected}, "value": selected}
    action = {
        "type": "static_select",
        "action_id": action_id,
        "block_id": block_id,
        "selected_option": option,
        "action_ts": f"{time.time():.6f}",
    }
    return _interaction(
        "block_actions",
        user_id,
        container={"type": "view", "view_id": view["id"]},
        trigger_id=new_trigger_id(),
        view=view,
        actions=[action],
    )


def block_suggestion_payload(
    view: dict[str, Any], block_id: str, action_id: str, query: str, *, user_id: str
) -> dict[str, Any]:
    """The options load of an ``external_select`` of a modal: what was typed so far."""
    return _interaction(
        "block_suggestion",
        user_id,
        container={"type": "view", "view_id": view["id"]},
        view=view,
        block_id=block_id,
        action_id=action_id,
        value=query,
    )


def view_submission_payload(
    view: dict[str, Any], values: dict[str, dict[str, Any]], *, user_id: str
) -> dict[str, Any]:
    """A ``view_submission`` of ``view`` with its state ``values`` (``{block_id: {action_id:
    {"type": …, "value" | "selected_option": …}}}``)."""
    submitted = {**view, "state": {"values": values}}
    return _interaction(
        "view_submission", user_id, trigger_id=new_trigger_id(), view=submitted, response_urls=[]
    )


def interaction_body(payload: dict[str, Any]) -> str:
    """The form body (``payload=`` JSON) of an interaction posted to the Request URL."""
    return urlencode({"payload": json.dumps(payload)})
