"""The app factory: settings in, a FastAPI app serving Slack out.

``create_app(settings)`` loads the policy (refusing an invalid one), builds the database engine,
the Kubernetes adapter, the gate and the slack-bolt app, and mounts one ``POST /slack/events``
(slash commands, interactivity and events) beside ``GET /healthz``, ``GET /readyz`` and
``GET /metrics`` (Prometheus), and the HTTP API under ``/api/v1``; in
Socket Mode (``SLACK_APP_TOKEN`` set) Slack is reached over the WebSocket instead, and
``/slack/events`` is not mounted. Migrations are applied when the app starts.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import AsyncIterator, Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime

from fastapi import FastAPI, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry
from slack_bolt import App
from slack_bolt.adapter.socket_mode import SocketModeHandler
from slack_sdk import WebClient
from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from actions.access import Access
from actions.backends.kubernetes import KubernetesBackend
from actions.backends.vault import VaultBackend
from actions.base import ActionKind
from actions.history import render_history, rollout_history
from actions.registry import build_follower, build_registry
from approvals.db import make_engine, make_sessionmaker, migrate, ping
from approvals.expiry import ExpiryScheduler
from approvals.extend import Extend
from approvals.gate import Gate
from approvals.grants import GrantService
from approvals.idempotency import IdempotencyStore
from approvals.inbox import Inbox
from approvals.metrics import MeteredNotifier
from approvals.notifier import GrantView, RequestView
from approvals.policy import LoadedPolicy, PolicyError
from approvals.policy_store import PolicyStore
from approvals.tokens import TokenStore
from approvals.vault_drift import policy_vault_groups
from bot import listeners
from bot.api.app import build_api
from bot.api.auth import Authenticator
from bot.audit_jobs import add_audit_jobs
from bot.listeners import autonomy as autonomy_listeners
from bot.listeners.events import publish_home
from bot.metrics import MeteredWebClient, exposition, metrics_registry
from bot.notifier import SlackGrantNotifier, SlackNotifier
from bot.policy_watch import install_sighup, watch_policy
from bot.settings import Settings
from bot.slack_http import SlackEndpoint
from bot.usergroups import UsergroupDirectory
from bot.work import Workers

log = logging.getLogger(__name__)


def utcnow() -> datetime:
    """The real clock: an aware UTC datetime."""
    return datetime.now(UTC)


@dataclass
class Services:
    """Everything the app holds, built once from the settings."""

    policy: PolicyStore
    engine: Engine
    kube: KubernetesBackend
    vault: VaultBackend | None
    gate: Gate
    grants: GrantService
    scheduler: ExpiryScheduler
    slack: App
    notifier: SlackGrantNotifier
    listener_executor: ThreadPoolExecutor
    workers: Workers
    metrics: CollectorRegistry

    def close(self) -> None:
        """Stop, finishing what was started: the listeners, the work they handed off (an
        execution, say; a rollout being followed is picked up again at the next start) and the
        scheduler's running jobs, then close every connection."""
        self.listener_executor.shutdown(wait=True)
        self.workers.shutdown(wait=True)
        self.scheduler.shutdown(wait=True)
        self.kube.close()
        if self.vault is not None:
            self.vault.close()
        self.engine.dispose()


def build_services(settings: Settings, *, clock: Callable[[], datetime] = utcnow) -> Services:
    """Build the services. Raises ``approvals.policy.PolicyError`` for an invalid policy and
    ``ValueError`` when a required Slack variable is missing."""
    settings.require_slack()
    assert settings.slack_bot_token is not None
    client = MeteredWebClient(
        token=settings.slack_bot_token.get_secret_value(), base_url=settings.slack_api_url
    )
    store, grant_notifier = _policy_store(settings, client, clock)
    engine = make_engine(settings.database_url)
    sessions = make_sessionmaker(engine)
    kube, vault = _backends(settings)
    registry = dict(
        build_registry(
            kube=kube,
            clock=clock,
            vault=vault,
            rollout_timeout=settings.rollout_timeout,
            poll_interval=settings.rollout_poll_interval,
        )
    )
    grants = _grant_service(settings, sessions, registry, grant_notifier, store, clock)
    registry["extend"] = Extend(grants=grants)

    def history(context: str | None, namespace: str, name: str) -> list[str]:
        return render_history(rollout_history(kube, context, namespace, name), clock())

    gate = Gate(
        sessions=sessions,
        policy=store,
        actions=registry,
        notifier=MeteredNotifier(SlackNotifier(client, store), sessions),
        clock=clock,
        directory=UsergroupDirectory(client, ttl=settings.usergroup_cache_ttl),
        grants=grants,  # the gate subscribes to the grants' ends
        history=history,
        rollouts=build_follower(kube=kube, clock=clock),
        rollout_timeout=settings.rollout_timeout,
    )

    def home_changed(grant: GrantView, _event: str) -> None:
        publish_home(gate, client, grant.grantee_id)

    # after the gate's own subscription: the App Home shows the request as the gate left it
    grants.subscribe(home_changed)
    inbox = Inbox(engine, clock=clock, instance=instance_name(settings), lease=settings.work_lease)
    workers = Workers(settings.workers, inbox=inbox)
    scheduler = _scheduler(settings, engine, grants, gate, clock)
    _more_jobs(scheduler, settings, sessions, client, store, vault, workers, inbox)
    listener_executor, slack = _slack_app(settings, client)
    listeners.register(slack, gate, workers, kube.list_workloads)
    autonomy_listeners.register(slack, gate, workers, _agent_name(store))
    return Services(
        store,
        engine,
        kube,
        vault,
        gate,
        grants,
        scheduler,
        slack,
        grant_notifier,
        listener_executor,
        workers,
        metrics_registry(sessions, clock),
    )


def _agent_name(store: PolicyStore) -> Callable[[RequestView], str | None]:
    """The name the policy in force gives the agent who made a request (None: a person)."""

    def agent_name(view: RequestView) -> str | None:
        agent = store.current().policy.agents.get(view.requester_id)
        return agent.name if agent is not None else None

    return agent_name


def instance_name(settings: Settings) -> str:
    """``OPSGATE_INSTANCE`` made safe for table and owner names: lower case, ``[a-z0-9_]``,
    at most 40 characters."""
    return re.sub(r"[^a-z0-9_]", "_", settings.instance.lower())[:40] or "opsgate"


def _policy_store(
    settings: Settings, client: WebClient, clock: Callable[[], datetime]
) -> tuple[PolicyStore, SlackGrantNotifier]:
    """The policy store (raises ``PolicyError`` for an invalid policy) and the grants' Slack
    notifier, which also reports a reload that kept the previous policy in force."""
    grant_notifier: SlackGrantNotifier | None = None

    def reload_failed(error: PolicyError) -> None:
        log.error("policy reload failed; the previous policy stays in force:\n%s", error)
        if grant_notifier is not None:
            grant_notifier.policy_reload_failed(str(error))

    def reloaded(loaded: LoadedPolicy) -> None:
        log.info("policy reloaded: %s (sha256 %s)", loaded.source, loaded.sha256[:12])

    store = PolicyStore(settings.policy_path, on_error=reload_failed, on_reload=reloaded)
    grant_notifier = SlackGrantNotifier(client, store, clock)
    return store, grant_notifier


def _backends(settings: Settings) -> tuple[KubernetesBackend, VaultBackend | None]:
    """The Kubernetes adapter, and the Vault one when ``VAULT_ADDR`` is set with a token or a
    login method (``VAULT_AUTH``)."""
    kube = KubernetesBackend(
        kubeconfig=settings.kubeconfig, request_timeout=settings.kube_request_timeout
    )
    vault: VaultBackend | None = None
    login = settings.vault_login()  # None: VAULT_TOKEN, as it is
    static = settings.vault_token.get_secret_value() if settings.vault_token else None
    if settings.vault_addr and (login is not None or static is not None):
        vault = VaultBackend(
            url=settings.vault_addr,
            token=None if login is not None else static,
            timeout=settings.vault_timeout,
            login=login,
            check_interval=settings.vault_renew_interval,
        )
    return kube, vault


def _grant_service(
    settings: Settings,
    sessions: sessionmaker[Session],
    registry: Mapping[str, ActionKind],
    notifier: SlackGrantNotifier,
    store: PolicyStore,
    clock: Callable[[], datetime],
) -> GrantService:
    """The grants service over the ``access`` kind; its drift check looks in the kubeconfig
    context of every environment of the policy in force, and in the Vault groups of its access
    rules."""
    access = registry["access"]
    assert isinstance(access, Access)

    def kube_contexts() -> list[str | None]:
        return sorted(
            {env.kube_context for env in store.current().policy.environments.values()},
            key=lambda c: c or "",
        )

    return GrantService(
        sessions=sessions,
        access=access,
        notifier=notifier,
        clock=clock,
        kube_contexts=kube_contexts,
        vault_groups=lambda: policy_vault_groups(store.current().policy),
        reminder_before=settings.reminder_before,
    )


def _scheduler(
    settings: Settings,
    engine: Engine,
    grants: GrantService,
    gate: Gate,
    clock: Callable[[], datetime],
) -> ExpiryScheduler:
    """The APScheduler jobs: grant expiry, reminders and drift (in :class:`ExpiryScheduler`),
    then the gate's periodic jobs (pending TTL, escalation, stranded requests, forgetting
    Slack deliveries, following rollouts)."""
    scheduler = ExpiryScheduler(
        engine,
        grants=grants,
        clock=clock,
        sweep_interval=settings.sweep_interval,
        drift_interval=settings.drift_interval,
        instance=instance_name(settings),
    )
    scheduler.add_periodic("opsgate-pending-expiry", gate.expire_pending, settings.sweep_interval)
    scheduler.add_periodic("opsgate-escalation", gate.escalate_due, settings.sweep_interval)
    scheduler.add_periodic("opsgate-stranded", gate.cancel_stranded, settings.sweep_interval)
    scheduler.add_periodic("opsgate-forget-events", gate.forget_events, 3600.0)
    scheduler.add_periodic("opsgate-rollouts", gate.follow_rollouts, settings.rollout_poll_interval)
    return scheduler


def _more_jobs(
    scheduler: ExpiryScheduler,
    settings: Settings,
    sessions: sessionmaker[Session],
    client: WebClient,
    store: PolicyStore,
    vault: VaultBackend | None,
    workers: Workers,
    inbox: Inbox,
) -> None:
    """The periodic jobs beside the gate's: the audit trail's anchor and sink, the Vault token's
    renewal, the replay of owed work a dead replica left and forgetting done work."""
    add_audit_jobs(scheduler, sessions, settings, client, store)
    if vault is not None and vault.token_keeper is not None:
        scheduler.add_periodic(
            "opsgate-vault-token", vault.token_keeper.keep, settings.vault_renew_interval
        )
    scheduler.add_periodic("opsgate-owed-work", workers.replay_owed, settings.sweep_interval)
    scheduler.add_periodic("opsgate-forget-owed", inbox.forget, 3600.0)


def _slack_app(settings: Settings, client: WebClient) -> tuple[ThreadPoolExecutor, App]:
    """The slack-bolt app, with the executor its listeners run on."""
    secret = settings.slack_signing_secret
    listener_executor = ThreadPoolExecutor(max_workers=10, thread_name_prefix="opsgate-listener")
    slack = App(
        client=client,
        signing_secret=secret.get_secret_value() if secret is not None else None,
        # auth.test runs on the first request instead of at start, so the bot starts (and
        # /healthz answers) even while Slack is unreachable.
        token_verification_enabled=False,
        request_verification_enabled=not settings.socket_mode,
        # our own executor, so that a stop lets the listeners finish what they started
        listener_executor=listener_executor,
        # every listener only validates, acks and hands off to the workers: run it before
        # answering, so that the ack is its answer (no thread hop, no polling for the ack)
        process_before_response=True,
    )
    return listener_executor, slack


START_JOIN_TIMEOUT = 60.0
"""Seconds a stop waits for the start's recovery and first sweep to finish."""


START_RETRY_MAX = 30.0
"""Seconds, at most, between two tries of the start's recovery while the database is down."""


def _start_background(services: Services, stopping: threading.Event) -> None:
    """What a start does off the event loop: finish the requests a previous run left approved
    or executing, replay the work it acked and did not finish (:meth:`Workers.replay_owed`),
    then start the expiry scheduler (which first revokes every overdue grant).

    While the database cannot be reached, both are tried again (after 1 s, 2 s, … at most
    :data:`START_RETRY_MAX`) until they succeed or ``stopping`` is set: a bot that starts during
    a database outage still recovers and revokes on time once it is back.
    """
    delay = 1.0
    recovered = False
    if services.vault is not None and services.vault.token_keeper is not None:
        services.vault.token_keeper.keep()  # the first login; then every vault_renew_interval
    while not stopping.is_set():
        try:
            if not recovered:
                services.gate.recover()
                services.workers.replay_owed()
                recovered = True
            services.scheduler.start()
            return
        except SQLAlchemyError as exc:
            log.error(
                "start: the database cannot be reached (%s); trying again in %.0f s",
                type(exc).__name__,
                delay,
            )
            stopping.wait(delay)
            delay = min(delay * 2, START_RETRY_MAX)


def http_api(services: Services, clock: Callable[[], datetime]) -> FastAPI:
    """The HTTP API's app (:mod:`bot.api.app`), mounted at ``/api/v1``."""
    sessions = make_sessionmaker(services.engine)
    return build_api(
        gate=services.gate,
        authenticator=Authenticator(
            TokenStore(sessions, clock), services.policy, review=services.kube.review_token
        ),
        sessions=sessions,
        policy=services.policy,
        idempotency=IdempotencyStore(sessions, clock),
    )


def create_app(settings: Settings, *, clock: Callable[[], datetime] = utcnow) -> FastAPI:
    """The FastAPI app for ``settings``; see the module docstring."""
    services = build_services(settings, clock=clock)
    socket_handler: SocketModeHandler | None = None
    stop_watching = threading.Event()
    starter = threading.Thread(
        target=_start_background, args=(services, stop_watching), name="opsgate-start", daemon=True
    )

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        nonlocal socket_handler
        try:
            await run_in_threadpool(migrate, settings.database_url)
            # Requests a previous run left approved or executing; in the background, so that
            # /healthz answers while it works.
            starter.start()
            watch_policy(services.policy, stop_watching)
            install_sighup(services.policy)
            if settings.socket_mode:
                assert settings.slack_app_token is not None
                socket_handler = SocketModeHandler(
                    services.slack, settings.slack_app_token.get_secret_value()
                )
                await run_in_threadpool(socket_handler.connect)
            loaded = services.policy.current()
            log.info(
                "opsgate ready: policy %s (sha256 %s), %s",
                loaded.source,
                loaded.sha256[:12],
                "Socket Mode" if settings.socket_mode else "HTTP mode on /slack/events",
            )
            yield
        finally:
            stop_watching.set()
            if socket_handler is not None:
                await run_in_threadpool(socket_handler.close)
            if starter.is_alive():
                # a stop right after a start: let the start finish, or the scheduler would be
                # started (and hold database connections) after everything was closed
                await run_in_threadpool(starter.join, START_JOIN_TIMEOUT)
            await run_in_threadpool(services.close)

    api = FastAPI(title="opsgate", lifespan=lifespan)

    # In Socket Mode requests are not signed (request verification is off and no signing secret
    # is needed), so an HTTP endpoint would dispatch anyone's forged command or click.
    if not settings.socket_mode:
        assert settings.slack_signing_secret is not None  # settings.require_slack()
        endpoint = SlackEndpoint(
            services.slack,
            settings.slack_signing_secret.get_secret_value(),
            holding=services.workers.holding,
        )

        @api.post("/slack/events")
        async def slack_events(request: Request) -> Response:
            return await endpoint(request)

    api.mount("/api/v1", http_api(services, clock))

    _mount_probes(api, services, lambda: socket_handler)
    return api


def _mount_probes(
    api: FastAPI, services: Services, socket: Callable[[], SocketModeHandler | None]
) -> None:
    """``GET /healthz`` (the process answers), ``GET /metrics`` (Prometheus) and ``GET /readyz``
    (200 when the database answers and, in Socket Mode, the WebSocket (``socket()``) is
    connected; 503 otherwise)."""

    @api.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @api.get("/metrics")
    async def metrics() -> Response:
        body = await run_in_threadpool(exposition, services.metrics)
        return Response(body, media_type=CONTENT_TYPE_LATEST)

    @api.get("/readyz")
    async def readyz() -> JSONResponse:
        checks = {"policy": services.policy.current().sha256}
        try:
            await run_in_threadpool(ping, services.engine)
            checks["database"] = "ok"
        except SQLAlchemyError as exc:
            checks["database"] = f"unreachable: {type(exc).__name__}"
        if (socket_handler := socket()) is not None:
            connected = socket_handler.client.is_connected()
            checks["socket_mode"] = "connected" if connected else "disconnected"
        ready = checks["database"] == "ok" and checks.get("socket_mode") != "disconnected"
        return JSONResponse(
            {"status": "ready" if ready else "not ready", **checks},
            status_code=200 if ready else 503,
        )
