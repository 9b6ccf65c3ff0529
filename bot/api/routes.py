"""The routes of ``/api/v1`` (:mod:`bot.api.app` builds the app around them).

Each route authenticates its caller (:func:`caller`) and reaches the gate through the app's
:class:`ApiContext` (:func:`context`); request bodies are :data:`bot.api.models.RequestBody`.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Annotated

from fastapi import APIRouter, Depends, Header, Path, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.security import HTTPBearer
from sqlalchemy.orm import Session, sessionmaker

from approvals.gate import Gate, Origin, Submission, UnknownRequest
from approvals.grants import GrantError
from approvals.idempotency import IdempotencyStore
from approvals.lifecycle import TERMINAL
from approvals.listing import request_ids_of
from approvals.models import Status
from approvals.notifier import GrantView, RequestView
from approvals.policy import LoadedPolicy
from bot.api.auth import Authenticator, Principal
from bot.api.models import (
    Approval,
    Explanation,
    GrantOut,
    GrantPage,
    Links,
    RequestBody,
    Requester,
    RequestOut,
    RequestPage,
    StepOut,
)
from bot.grammar import CHANGES_SINCE, CHANGES_SINCE_MAX, MAX_ID, parse_words

PREFIX = "/api/v1"
"""Where :func:`bot.app.create_app` mounts the API."""

MAX_WAIT = 120
"""The longest ``?wait=`` in seconds (a proxy's idle timeout is often 60 to 120 s)."""

POLL_INTERVAL = 0.25
"""Seconds between two reads of a request while ``?wait=`` holds the answer."""

PASSING = frozenset({Status.APPROVED.value, Status.EXECUTING.value})
"""Statuses a request passes through without anyone: ``?wait=`` does not stop at them."""

RequestId = Annotated[int, Path(ge=1, le=MAX_ID, description="the request's ID")]
GrantId = Annotated[int, Path(ge=1, le=MAX_ID, description="the grant's ID")]
IdempotencyHeader = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        max_length=255,
        pattern=r"^[\x21-\x7e]{1,255}$",
        description="a retry with the same key (and body) returns the first request",
    ),
]

_bearer = HTTPBearer(auto_error=False, description="an opsgate token: `opsgate token create`")


def caller(request: Request, _token: Annotated[object, Depends(_bearer)]) -> Principal:
    """The authenticated caller (the app's :class:`Authenticator`). Raises
    :class:`bot.api.auth.Unauthenticated`."""
    authenticator: Authenticator = request.app.state.authenticator
    return authenticator(
        request.headers.get("authorization"), method=request.method, path=request.url.path
    )


Caller = Annotated[Principal, Depends(caller)]


def request_out(view: RequestView, agent: str | None, base: str) -> RequestOut:
    """``view`` as the API shows it; ``agent`` is the requester's name in ``agents``."""
    link = f"{base}/requests/{view.id}"
    return RequestOut(
        id=view.id,
        action=view.action,
        status=view.status,
        requester=Requester(id=view.requester_id, kind=view.requester_kind, agent=agent),
        target=view.target,
        environment=view.environment,
        namespace=view.namespace,
        reason=view.reason,
        preview=list(view.preview_lines),
        rule=view.rule,
        approval=Approval(
            needed=view.needs_approval,
            min_approvals=view.min_approvals,
            approver_groups=list(view.approver_groups),
            approved_by=list(view.approved_by),
            steps=[
                StepOut(
                    groups=list(s.groups),
                    min_approvals=s.min_approvals,
                    approved_by=list(s.approved_by),
                )
                for s in view.steps
            ],
            channel=view.approval_channel,
            expires_at=view.expires_at,
        ),
        decided_by=view.decided_by,
        result=view.result,
        error=view.error,
        break_glass=view.break_glass,
        created_at=view.created_at,
        updated_at=view.updated_at,
        links=Links(self=link, wait=f"{link}?wait=60", cancel=f"{link}/cancel"),
    )


def grant_out(grant: GrantView) -> GrantOut:
    return GrantOut(
        id=grant.id,
        grantee=grant.grantee_id,
        namespace=grant.namespace,
        role=grant.role,
        status=grant.status,
        started_at=grant.started_at,
        expires_at=grant.expires_at,
    )


def body_digest(body: RequestBody) -> str:
    """The SHA-256 of ``body``'s canonical JSON (what an Idempotency-Key is bound to)."""
    canonical = json.dumps(body.model_dump(mode="json", exclude_none=True), sort_keys=True)
    return hashlib.sha256(canonical.encode()).hexdigest()


def submission(body: RequestBody, principal: Principal) -> Submission:
    """``body`` parsed as the ``/ops`` command it stands for. Raises
    :class:`bot.grammar.CommandError` with the reason Slack would give."""
    parsed = parse_words(body.words())
    assert parsed.params is not None  # every REQUEST_MODELS kind has params
    return Submission(
        action=parsed.name,
        params=parsed.params,
        requester=principal.actor,
        namespace=parsed.namespace,
        env=parsed.env,
        reason=parsed.reason,
        origin=Origin(),
        path=parsed.path,
        break_glass=parsed.break_glass,
    )


@dataclass(frozen=True)
class ApiContext:
    """What the routes use: the gate, the database sessions (listing), the policy in force
    (agents' names) and the Idempotency-Key store."""

    gate: Gate
    sessions: sessionmaker[Session]
    policy: Callable[[], LoadedPolicy]
    idempotency: IdempotencyStore

    def out(self, view: RequestView) -> RequestOut:
        """``view`` as the API shows it, its agent named."""
        agent = self.policy().policy.agents.get(view.requester_id)
        return request_out(view, agent.name if agent is not None else None, PREFIX)


def context(request: Request) -> ApiContext:
    """The app's :class:`ApiContext`."""
    ctx: ApiContext = request.app.state.context
    return ctx


Ctx = Annotated[ApiContext, Depends(context)]
router = APIRouter()


@router.post("/requests", status_code=201, response_model=RequestOut)
def file_request(
    body: RequestBody,
    principal: Caller,
    ctx: Ctx,
    response: Response,
    idempotency_key: IdempotencyHeader = None,
) -> RequestOut:
    """File a request: checked against the policy, previewed, and posted in Slack for
    approval (naming the agent, for a token of one) or approved by the policy itself."""
    sub = submission(body, principal)
    who = principal.actor.id
    if idempotency_key is not None:
        earlier = ctx.idempotency.claim(who, idempotency_key, body_digest(body))
        if earlier is not None:
            response.headers["Idempotent-Replayed"] = "true"
            return ctx.out(ctx.gate.get(earlier))
    try:
        view = ctx.gate.submit(sub)
    except BaseException:
        if idempotency_key is not None:
            ctx.idempotency.release(who, idempotency_key)
        raise
    if idempotency_key is not None:
        ctx.idempotency.settle(who, idempotency_key, view.id)
    response.headers["Location"] = f"{PREFIX}/requests/{view.id}"
    return ctx.out(view)


@router.get("/requests/{request_id}", response_model=RequestOut)
async def get_request(
    request_id: RequestId,
    principal: Caller,
    ctx: Ctx,
    wait: Annotated[
        int,
        Query(
            ge=0,
            le=MAX_WAIT,
            description="seconds to hold the answer until the request leaves its status "
            "(passing through approved and executing) or ends",
        ),
    ] = 0,
) -> RequestOut:
    """A request of the caller's (or one they may approve or audit)."""
    view = await run_in_threadpool(ctx.gate.get_for, request_id, principal.actor)
    first = view.status
    deadline = time.monotonic() + wait
    while (
        time.monotonic() < deadline
        and Status(view.status) not in TERMINAL
        and (view.status == first or view.status in PASSING)
    ):
        await asyncio.sleep(POLL_INTERVAL)
        view = await run_in_threadpool(ctx.gate.get_for, request_id, principal.actor)
    return ctx.out(view)


@router.get("/requests", response_model=RequestPage)
def list_requests(
    principal: Caller,
    ctx: Ctx,
    status: Annotated[Status | None, Query(description="only requests in this status")] = None,
    page: Annotated[int, Query(ge=1, le=100_000)] = 1,
    size: Annotated[int, Query(ge=1, le=100)] = 20,
) -> RequestPage:
    """The caller's own requests, newest first."""
    ids, total = request_ids_of(
        ctx.sessions,
        principal.actor.id,
        status=status.value if status else None,
        page=page,
        size=size,
    )
    return RequestPage(
        items=[ctx.out(v) for v in ctx.gate.views(ids)], total=total, page=page, size=size
    )


@router.get("/changes", response_model=RequestPage)
def list_changes(
    principal: Caller,
    ctx: Ctx,
    since: Annotated[
        int, Query(ge=1, le=CHANGES_SINCE_MAX, description="how far back to look, in seconds")
    ] = CHANGES_SINCE,
    namespace: Annotated[str | None, Query(max_length=253)] = None,
    workload: Annotated[str | None, Query(max_length=253)] = None,
    page: Annotated[int, Query(ge=1, le=100_000)] = 1,
    size: Annotated[int, Query(ge=1, le=100)] = 20,
) -> RequestPage:
    """What opsgate changed in the last ``since`` seconds, newest first, as ``/ops changes``
    answers it: the requests that reached execution that the caller may see."""
    found = ctx.gate.changes(
        principal.actor,
        since=ctx.gate.now() - timedelta(seconds=since),
        namespace=namespace,
        workload=workload,
        page=page,
        size=size,
    )
    return RequestPage(items=[ctx.out(v) for v in found], total=found.total, page=page, size=size)


@router.post("/requests/{request_id}/cancel", response_model=RequestOut)
def cancel_request(request_id: RequestId, principal: Caller, ctx: Ctx) -> RequestOut:
    """Withdraw one's own pending request (never anyone else's: no endpoint decides)."""
    return ctx.out(ctx.gate.cancel(request_id, principal.actor))


@router.post("/explain", response_model=Explanation)
def explain(body: RequestBody, principal: Caller, ctx: Ctx) -> Explanation:
    """What the policy would decide, and the preview (dry run included), filing nothing."""
    explained = ctx.gate.explain(submission(body, principal))
    decision = explained.decision
    return Explanation(
        outcome=decision.outcome.value,
        reason=decision.reason.value,
        message=decision.message,
        rule=decision.rule_label,
        steps=[
            StepOut(groups=list(s.groups), min_approvals=s.min_approvals, approved_by=[])
            for s in decision.steps
        ],
        approval_channel=decision.approval_channel,
        environment=explained.environment,
        target=explained.preview.target if explained.preview else None,
        preview=list(explained.preview.lines) if explained.preview else [],
        preview_error=explained.preview_error,
    )


@router.get("/grants", response_model=GrantPage)
def list_grants(
    principal: Caller, ctx: Ctx, page: Annotated[int, Query(ge=1, le=100_000)] = 1
) -> GrantPage:
    """The caller's own active grants, the soonest to end first."""
    if ctx.gate.grants is None:
        return GrantPage(items=[], total=0, page=page, size=20)
    grants = ctx.gate.grants.active(principal.actor.id, page=page, size=20)
    return GrantPage(
        items=[grant_out(g) for g in grants.items],
        total=grants.total,
        page=page,
        size=grants.size,
    )


@router.post("/grants/{grant_id}/revoke", response_model=GrantOut)
def revoke_grant(grant_id: GrantId, principal: Caller, ctx: Ctx) -> GrantOut:
    """End one of the caller's own grants now."""
    if ctx.gate.grants is None:
        raise UnknownRequest(f"There is no grant #{grant_id}.")
    try:
        grant = ctx.gate.grants.get(grant_id)
    except GrantError:
        grant = None
    if grant is None or grant.grantee_id != principal.actor.id:
        raise UnknownRequest(f"There is no grant #{grant_id} of yours.")
    return grant_out(ctx.gate.revoke_grant(grant_id, principal.actor, reason="through the API"))
