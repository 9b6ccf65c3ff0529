"""The HTTP API, ``/api/v1``: requests for people, scripts and agents through the same gate.

:func:`build_api` makes the FastAPI app mounted at ``/api/v1`` by :func:`bot.app.create_app`
(its OpenAPI document at ``/api/v1/openapi.json``, its docs page at ``/api/v1/docs``), with the
routes of :mod:`bot.api.routes`. Every call authenticates with a bearer token
(:mod:`bot.api.auth`) and goes through the :class:`~approvals.gate.Gate`, its policy, lifecycle
and audit, exactly as a Slack command does. No endpoint approves or denies: approvals stay with
people, in Slack. Errors are problem details (:mod:`bot.api.problems`).
"""

from __future__ import annotations

from collections.abc import Callable

from fastapi import FastAPI
from sqlalchemy.orm import Session, sessionmaker

from approvals.gate import Gate
from approvals.idempotency import IdempotencyStore
from approvals.policy import LoadedPolicy
from bot.api import problems, routes
from bot.api.auth import Authenticator


def build_api(
    *,
    gate: Gate,
    authenticator: Authenticator,
    sessions: sessionmaker[Session],
    policy: Callable[[], LoadedPolicy],
    idempotency: IdempotencyStore,
) -> FastAPI:
    """The ``/api/v1`` app; see the module docstring."""
    api = FastAPI(
        title="opsgate API",
        version="1",
        description=(
            "File Day 2 operations requests under the same policy as Slack. A request may need "
            "people's approval, in Slack: wait for it with `GET /requests/{id}?wait=60`."
        ),
        responses=problems.PROBLEM_RESPONSES,
    )
    problems.install(api)
    api.state.authenticator = authenticator
    api.state.context = routes.ApiContext(gate, sessions, policy, idempotency)
    api.include_router(routes.router)
    return api
