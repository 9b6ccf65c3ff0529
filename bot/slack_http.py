"""``POST /slack/events``: the boundary between the internet and slack-bolt.

Every request goes through, in this order, and stops at the first refusal:

1. Slack's signature (``X-Slack-Signature: v0=HMAC-SHA256(signing secret,
   "v0:{X-Slack-Request-Timestamp}:{raw body}")``, the timestamp an integer within 5 minutes of
   now: "Verifying requests from Slack" on docs.slack.dev), checked on the raw bytes with
   slack_sdk's :class:`~slack_sdk.signature.SignatureVerifier`, before the body is even decoded:
   401, one log line at INFO. A body over :data:`MAX_BODY_BYTES` is not read: 413.
2. The body, parsed as Slack sends it and checked (:mod:`bot.slack_payloads`): a signed but
   malformed request gets 400 (415 for a media type Slack never sends) and one WARNING line.
3. slack-bolt's :meth:`~slack_bolt.App.dispatch` (which verifies the signature again), given the
   payload parsed in step 2: slack-bolt 1.30 reads any form body that contains the text
   ``payload`` as an interaction, so ``/ops restart payload-worker …`` would reach no listener.
   An exception in slack-bolt's middleware (logged by slack-bolt with a traceback by default) is
   logged here in one ERROR line instead, and a 5xx from slack-bolt never leaves: a slash command
   gets an ephemeral answer with a reference to the log line, an event is acknowledged (Slack
   would only redeliver it), anything else gets 400.

Nothing that reaches this endpoint gets a 5xx and no input logs a traceback.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
import uuid
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from typing import Any

from fastapi import Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from slack_bolt import App, BoltRequest, BoltResponse
from slack_bolt.adapter.starlette.handler import to_starlette_response
from slack_bolt.middleware.middleware_error_handler import MiddlewareErrorHandler
from slack_bolt.request import payload_utils
from slack_sdk.signature import SignatureVerifier
from starlette.background import BackgroundTask
from starlette.requests import ClientDisconnect

from bot import slack_payloads
from bot.slack_payloads import Malformed, Payload

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 1024 * 1024
"""The largest body read, in bytes; Slack's payloads are a few kilobytes."""

_TIMESTAMP = re.compile(r"[0-9]{1,12}")
_SIGNATURE = re.compile(r"v0=[0-9a-f]{64}")
_BOLT_ERROR = "opsgate_bolt_error"
"""The key under which :class:`_OneLineErrors` leaves slack-bolt's error in the context."""


class RawBodyVerifier(SignatureVerifier):
    """slack_sdk's verifier (the 5-minute window, the constant-time comparison), with the HMAC
    over the raw body bytes as Slack defines it: slack_sdk decodes bytes as UTF-8 first, which
    raises on a body that is not UTF-8 instead of saying whether it was signed."""

    def generate_signature(self, *, timestamp: str, body: str | bytes) -> str | None:
        if isinstance(body, str):
            return super().generate_signature(timestamp=timestamp, body=body)
        base = b"v0:" + timestamp.encode("ascii") + b":" + body
        digest = hmac.new(self.signing_secret.encode(), base, hashlib.sha256).hexdigest()
        return f"v0={digest}"


class _OneLineErrors(MiddlewareErrorHandler):
    """slack-bolt's handler for an exception in its middleware or a listener matcher: instead of
    a traceback per request, the error is left in the request's context for the endpoint to log
    once (slack-bolt answers such a request with 500)."""

    def handle(self, error: Exception, request: BoltRequest, response: BoltResponse | None) -> None:
        request.context[_BOLT_ERROR] = f"{type(error).__name__}: {error}"


def _only(request: Request, name: str) -> str | None:
    values = request.headers.getlist(name)
    return values[0] if len(values) == 1 else None


def _header_problem(request: Request) -> str | None:
    """Why the signature headers cannot be right, or None when they can be checked."""
    timestamp = _only(request, "x-slack-request-timestamp")
    signature = _only(request, "x-slack-signature")
    if timestamp is None or signature is None:
        return "missing (or repeated) X-Slack-Request-Timestamp or X-Slack-Signature"
    if not _TIMESTAMP.fullmatch(timestamp):
        return "X-Slack-Request-Timestamp is not an integer"
    if not _SIGNATURE.fullmatch(signature):
        return "X-Slack-Signature is not v0=<64 hex digits>"
    return None


class _Unread(Exception):
    """The body was not read: ``status`` and a reason for the log."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status


async def _read_body(request: Request) -> bytes:
    """The body. Raises :class:`_Unread` when it is larger than :data:`MAX_BODY_BYTES` (413) or
    the client went away before sending all of it (400, which nobody receives)."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        raise _Unread(413, f"body over {MAX_BODY_BYTES} bytes")
    chunks: list[bytes] = []
    size = 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > MAX_BODY_BYTES:
                raise _Unread(413, f"body over {MAX_BODY_BYTES} bytes")
            chunks.append(chunk)
    except ClientDisconnect:
        raise _Unread(400, "the client went away before sending its body") from None
    return b"".join(chunks)


def _refuse(status: int, error: str) -> JSONResponse:
    return JSONResponse({"ok": False, "error": error}, status_code=status)


class SlackEndpoint:
    """The ASGI handler of ``POST /slack/events`` for ``app``; see the module docstring.

    ``signing_secret`` is the app's signing secret (the one ``app`` verifies with too).
    ``holding`` (:meth:`bot.work.Workers.holding`) holds the work the listeners hand off until
    the answer is sent (a Starlette background task), so that it does not delay the ack.
    Installs its own middleware error handler on ``app`` (see :class:`_OneLineErrors`).
    """

    def __init__(
        self,
        app: App,
        signing_secret: str,
        *,
        holding: Callable[[], AbstractContextManager[Callable[[], None]]] | None = None,
    ) -> None:
        self._app = app
        self._holding = holding
        self._verifier = RawBodyVerifier(signing_secret)
        # slack-bolt has no public setter for the middleware error handler alone (App.error also
        # replaces the listeners' error handler)
        app._middleware_error_handler = _OneLineErrors()

    async def __call__(self, request: Request) -> Response:
        peer = request.client.host if request.client else "?"
        problem = _header_problem(request)
        if problem is not None:
            log.info("refused an unsigned request from %s: %s", peer, problem)
            return _refuse(401, "invalid_signature")
        try:
            body = await _read_body(request)
        except _Unread as exc:
            log.info("refused a request from %s: %s", peer, exc)
            return _refuse(exc.status, "body_not_read")
        timestamp = request.headers["x-slack-request-timestamp"]
        if not self._verifier.is_valid(body, timestamp, request.headers["x-slack-signature"]):
            log.info("refused a request from %s: bad or expired signature", peer)
            return _refuse(401, "invalid_signature")
        try:
            payload = slack_payloads.parse(request.headers.get("content-type"), body)
            slack_payloads.check(payload)
            bolt_request = self._bolt_request(request, payload, body)
        except Malformed as exc:
            log.warning("refused a signed request from %s: %.300s", peer, exc)
            return _refuse(exc.status, "malformed_request")
        if self._holding is None:
            return await self._dispatch(bolt_request, payload)
        with self._holding() as start:
            response = await self._dispatch(bolt_request, payload)
        if response.background is None:
            response.background = BackgroundTask(start)
        else:  # pragma: no cover - no answer of ours has one
            start()
        return response

    def _bolt_request(self, request: Request, payload: Payload, body: bytes) -> BoltRequest:
        """The request for slack-bolt, with the ``payload`` parsed here and the raw body its own
        verification checks. Raises :class:`Malformed` when slack-bolt cannot read the payload
        (its context and listener arguments are built here, once, to find out)."""
        headers: dict[str, str | Sequence[str]] = {
            name: request.headers.getlist(name) for name in request.headers
        }
        try:
            # a dict body is only accepted in Socket Mode; the mode is set back to HTTP so that
            # slack-bolt verifies the signature of raw_body
            bolt_request = BoltRequest(
                body=payload.body, query=request.url.query, headers=headers, mode="socket_mode"
            )
            bolt_request.mode = "http"
            bolt_request.raw_body = body.decode("utf-8")
            _payload_arguments(bolt_request.body)
        except Exception as exc:  # noqa: BLE001 -- whatever slack-bolt cannot read is malformed
            raise Malformed(f"slack-bolt cannot read it: {type(exc).__name__}: {exc}") from None
        return bolt_request

    async def _dispatch(self, bolt_request: BoltRequest, payload: Payload) -> Response:
        what = slack_payloads.describe(payload)
        try:
            bolt_response = await run_in_threadpool(self._app.dispatch, bolt_request)
        except Exception as exc:  # noqa: BLE001 -- no input reaches a 5xx
            error = f"{type(exc).__name__}: {exc}"
        else:
            if bolt_response.status < 500:
                return to_starlette_response(bolt_response)
            error = bolt_request.context.get(_BOLT_ERROR) or f"HTTP {bolt_response.status}"
        reference = uuid.uuid4().hex[:12]
        log.error("slack-bolt failed on %s (reference %s): %s", what, reference, error)
        if payload.kind == "command":
            text = (
                f":warning: opsgate failed to handle this command (reference `{reference}`) and "
                "it may not have been carried out: check `/ops status` before retrying."
            )
            return JSONResponse({"response_type": "ephemeral", "text": text})
        if payload.kind == "events_api":
            return Response(status_code=200)
        return _refuse(400, f"failed (reference {reference})")


def _payload_arguments(body: dict[str, Any]) -> None:
    """Build what slack-bolt hands a listener (``action``, ``view``, ``event``, ``step``…) from
    ``body``, as slack-bolt does for every listener; raises what slack-bolt would raise."""
    for extract in _PAYLOAD_ARGUMENTS:
        extract(body)


_PAYLOAD_ARGUMENTS = (
    payload_utils.to_options,
    payload_utils.to_shortcut,
    payload_utils.to_action,
    payload_utils.to_view,
    payload_utils.to_command,
    payload_utils.to_event,
    payload_utils.to_message,
    payload_utils.to_step,
)
