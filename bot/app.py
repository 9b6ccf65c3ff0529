"""The app factory: settings in, a FastAPI app serving Slack out.

``create_app(settings)`` loads the policy (refusing an invalid one), builds the database engine,
the Kubernetes adapter, the gate and the slack-bolt app, and mounts one ``POST /slack/events``
(slash commands, interactivity and events) beside ``GET /healthz`` and ``GET /readyz``; in
Socket Mode (``SLACK_APP_TOKEN`` set) Slack is reached over the WebSocket instead, and
``/slack/events`` is not mounted. Migrations are applied when the app starts.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime

from fastapi import FastAPI, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from slack_bolt import App
from slack_bolt.adapter.socket_mode import SocketModeHandler
from slack_bolt.adapter.starlette.handler import to_bolt_request, to_starlette_response
from slack_sdk import WebClient
from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError

from actions.backends.kubernetes import KubernetesBackend
from actions.registry import build_registry
from approvals.db import make_engine, make_sessionmaker, migrate, ping
from approvals.gate import Gate
from approvals.policy import LoadedPolicy, load_policy
from bot import listeners
from bot.notifier import SlackNotifier
from bot.settings import Settings

log = logging.getLogger(__name__)


def utcnow() -> datetime:
    """The real clock: an aware UTC datetime."""
    return datetime.now(UTC)


@dataclass
class Services:
    """Everything the app holds, built once from the settings."""

    policy: LoadedPolicy
    engine: Engine
    kube: KubernetesBackend
    gate: Gate
    slack: App

    def close(self) -> None:
        self.kube.close()
        self.engine.dispose()


def build_services(settings: Settings, *, clock: Callable[[], datetime] = utcnow) -> Services:
    """Build the services. Raises ``approvals.policy.PolicyError`` for an invalid policy and
    ``ValueError`` when a required Slack variable is missing."""
    settings.require_slack()
    loaded = load_policy(settings.policy_path)
    engine = make_engine(settings.database_url)
    sessions = make_sessionmaker(engine)
    kube = KubernetesBackend(
        kubeconfig=settings.kubeconfig, request_timeout=settings.kube_request_timeout
    )
    assert settings.slack_bot_token is not None
    client = WebClient(
        token=settings.slack_bot_token.get_secret_value(), base_url=settings.slack_api_url
    )

    def current_policy() -> LoadedPolicy:
        return loaded

    gate = Gate(
        sessions=sessions,
        policy=current_policy,
        actions=build_registry(kube=kube, clock=clock),
        notifier=SlackNotifier(client, current_policy),
        clock=clock,
    )
    secret = settings.slack_signing_secret
    slack = App(
        client=client,
        signing_secret=secret.get_secret_value() if secret is not None else None,
        # auth.test runs on the first request instead of at start, so the bot starts (and
        # /healthz answers) even while Slack is unreachable.
        token_verification_enabled=False,
        request_verification_enabled=not settings.socket_mode,
    )
    listeners.register(slack, gate)
    return Services(loaded, engine, kube, gate, slack)


def create_app(settings: Settings, *, clock: Callable[[], datetime] = utcnow) -> FastAPI:
    """The FastAPI app for ``settings``; see the module docstring."""
    services = build_services(settings, clock=clock)
    socket_handler: SocketModeHandler | None = None

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        nonlocal socket_handler
        try:
            await run_in_threadpool(migrate, settings.database_url)
            # Requests a previous run left approved or executing; in the background, so that
            # /healthz answers while it works.
            threading.Thread(
                target=services.gate.recover, name="opsgate-recover", daemon=True
            ).start()
            if settings.socket_mode:
                assert settings.slack_app_token is not None
                socket_handler = SocketModeHandler(
                    services.slack, settings.slack_app_token.get_secret_value()
                )
                await run_in_threadpool(socket_handler.connect)
            log.info(
                "opsgate ready: policy %s (sha256 %s), %s",
                services.policy.source,
                services.policy.sha256[:12],
                "Socket Mode" if settings.socket_mode else "HTTP mode on /slack/events",
            )
            yield
        finally:
            if socket_handler is not None:
                await run_in_threadpool(socket_handler.close)
            services.close()

    api = FastAPI(title="opsgate", lifespan=lifespan)

    async def slack_events(request: Request) -> Response:
        body = await request.body()
        bolt_response = await run_in_threadpool(
            services.slack.dispatch, to_bolt_request(request, body)
        )
        return to_starlette_response(bolt_response)

    # In Socket Mode requests are not signed (request verification is off and no signing secret
    # is needed), so an HTTP endpoint would dispatch anyone's forged command or click.
    if not settings.socket_mode:
        api.post("/slack/events")(slack_events)

    @api.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @api.get("/readyz")
    async def readyz() -> JSONResponse:
        checks = {"policy": services.policy.sha256}
        try:
            await run_in_threadpool(ping, services.engine)
            checks["database"] = "ok"
        except SQLAlchemyError as exc:
            checks["database"] = f"unreachable: {type(exc).__name__}"
        if socket_handler is not None:
            connected = socket_handler.client.is_connected()
            checks["socket_mode"] = "connected" if connected else "disconnected"
        ready = checks["database"] == "ok" and checks.get("socket_mode") != "disconnected"
        return JSONResponse(
            {"status": "ready" if ready else "not ready", **checks},
            status_code=200 if ready else 503,
        )

    return api
