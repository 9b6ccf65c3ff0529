"""Errors of the HTTP API as problem details (RFC 9457, ``application/problem+json``).

Every refusal is answered once, with the same reason Slack would give, and logged once with a
reference; an unexpected error is answered 500 with that reference (and never its message,
which might hold anything).
"""

from __future__ import annotations

import logging
import uuid
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import SQLAlchemyError
from starlette.exceptions import HTTPException as StarletteHTTPException

from approvals.gate import AlreadyDecided, GateError, NotAllowed, RateLimited, UnknownRequest
from approvals.idempotency import KeyInFlight, KeyReused
from bot.api.auth import AuthUnavailable, Unauthenticated
from bot.api.models import Problem
from bot.grammar import CommandError

log = logging.getLogger(__name__)

MEDIA_TYPE = "application/problem+json"
BASE = "https://opsgate.dev/problems/"
"""Problem types are URIs under this base (RFC 9457 §3.1.1); they name, they are not fetched."""


def problem(
    status: int,
    title: str,
    detail: str | None = None,
    *,
    kind: str | None = None,
    instance: str | None = None,
    headers: dict[str, str] | None = None,
    errors: list[dict[str, Any]] | None = None,
) -> JSONResponse:
    """A problem+json response."""
    body = Problem(
        type=BASE + kind if kind else "about:blank",
        title=title,
        status=status,
        detail=detail,
        instance=instance,
        errors=errors,
    )
    return JSONResponse(
        body.model_dump(exclude_none=True),
        status_code=status,
        media_type=MEDIA_TYPE,
        headers=headers,
    )


PROBLEM_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": Problem, "content": {MEDIA_TYPE: {}}, "description": description}
    for status, description in (
        (400, "malformed request"),
        (401, "missing, unknown, revoked or expired token"),
        (403, "not allowed by the policy"),
        (404, "no such request or grant (or not yours)"),
        (409, "already decided, or a call with this Idempotency-Key is in flight"),
        (422, "invalid body or parameters, or refused as Slack would refuse it"),
        (429, "too many requests in the last minute"),
        (500, "unexpected error (the answer carries a reference to the log line)"),
        (503, "the database cannot be reached; retry"),
    )
}
"""The problem answers every operation documents."""


def gate_problem(exc: GateError, instance: str) -> JSONResponse:
    """The answer to a refusal of the gate."""
    message = str(exc)
    if isinstance(exc, UnknownRequest):
        return problem(404, "Not found", message, kind="not-found", instance=instance)
    if isinstance(exc, NotAllowed):
        return problem(403, "Not allowed", message, kind="not-allowed", instance=instance)
    if isinstance(exc, AlreadyDecided):
        return problem(409, "Already decided", message, kind="already-decided", instance=instance)
    if isinstance(exc, RateLimited):
        return problem(
            429,
            "Too many requests",
            message,
            kind="rate-limited",
            instance=instance,
            headers={"Retry-After": "60"},
        )
    if message.startswith("Not allowed"):  # the policy's refusal (gate.Rejected)
        return problem(403, "Not allowed by the policy", message, kind="denied", instance=instance)
    return problem(422, "Request refused", message, kind="rejected", instance=instance)


def install(app: FastAPI) -> None:
    """Answer every error of ``app`` as a problem."""

    @app.exception_handler(Unauthenticated)
    async def unauthenticated(request: Request, exc: Unauthenticated) -> JSONResponse:
        return problem(
            401,
            "Unauthorized",
            str(exc),
            kind="unauthorized",
            instance=request.url.path,
            headers={"WWW-Authenticate": 'Bearer realm="opsgate", error="invalid_token"'},
        )

    @app.exception_handler(AuthUnavailable)
    async def auth_unavailable(request: Request, exc: AuthUnavailable) -> JSONResponse:
        return problem(
            503, "Unavailable", str(exc), kind="auth-unavailable", headers={"Retry-After": "5"}
        )

    @app.exception_handler(GateError)
    async def gate_error(request: Request, exc: GateError) -> JSONResponse:
        log.info("API %s %s refused: %s", request.method, request.url.path, exc)
        return gate_problem(exc, request.url.path)

    @app.exception_handler(CommandError)
    async def command_error(request: Request, exc: CommandError) -> JSONResponse:
        detail = str(exc).split("\n", 1)[0]  # the usage line is the Slack command's
        return problem(422, "Invalid request", detail, kind="invalid", instance=request.url.path)

    @app.exception_handler(KeyInFlight)
    async def in_flight(request: Request, exc: KeyInFlight) -> JSONResponse:
        detail = "a call with this Idempotency-Key is still being handled; retry in a moment"
        return problem(409, "Conflict", detail, kind="idempotency-in-flight")

    @app.exception_handler(KeyReused)
    async def reused(request: Request, exc: KeyReused) -> JSONResponse:
        detail = "this Idempotency-Key was used with another body; use a new key"
        return problem(422, "Idempotency-Key reused", detail, kind="idempotency-reused")

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [
            {"loc": [str(p) for p in e["loc"]], "msg": e["msg"], "type": e["type"]}
            for e in exc.errors()
        ]
        detail = "; ".join(f"{'.'.join(e['loc'])}: {e['msg']}" for e in errors)
        return problem(
            422, "Invalid request", detail, kind="invalid", instance=request.url.path, errors=errors
        )

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return problem(exc.status_code, str(exc.detail), instance=request.url.path)

    @app.exception_handler(SQLAlchemyError)
    async def database(request: Request, exc: SQLAlchemyError) -> JSONResponse:
        reference = uuid.uuid4().hex[:12]
        log.error("API %s: database error (reference %s): %s", request.url.path, reference, exc)
        detail = f"the database cannot be reached (reference {reference}); retry"
        return problem(503, "Unavailable", detail, headers={"Retry-After": "5"})

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        reference = uuid.uuid4().hex[:12]
        log.error(
            "API %s %s: unexpected %s (reference %s)",
            request.method,
            request.url.path,
            type(exc).__name__,
            reference,
            exc_info=exc,
        )
        detail = f"opsgate hit an unexpected error (reference {reference})"
        return problem(500, "Internal error", detail)
