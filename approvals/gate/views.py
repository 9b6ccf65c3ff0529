"""How the gate shows requests: a :class:`~approvals.notifier.RequestView` of a row with its
approvals, a page of them, and the SQL that finds the requests someone may approve."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from typing import Any

from sqlalchemy import ColumnElement, cast, exists, func, select
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import InstrumentedAttribute, Session

from approvals.models import Approval, Request
from approvals.notifier import MessageRef, RequestView, StepView
from approvals.paging import Page, among, page_window
from approvals.policy import Step, count_satisfied


def views_of(session: Session, requests: Sequence[Request]) -> list[RequestView]:
    """Views of ``requests`` with their approvals, read in one query (not one per request)."""
    approved_by: dict[int, list[str]] = defaultdict(list)
    if requests:
        for request_id, approver_id in session.execute(
            select(Approval.request_id, Approval.approver_id)
            .where(among(session, Approval.request_id, [r.id for r in requests]))
            .order_by(Approval.id)
        ):
            approved_by[request_id].append(approver_id)
    return [view_of(request, tuple(approved_by[request.id])) for request in requests]


def page_of(
    session: Session,
    where: Sequence[ColumnElement[bool]],
    order: ColumnElement[Any] | InstrumentedAttribute[int],
    number: int,
    size: int,
) -> Page[RequestView]:
    """Page ``number`` of the requests matching ``where`` in ``order``: a ``COUNT``, the page
    (``LIMIT``/``OFFSET``) and its approvals."""
    offset, limit = page_window(number, size)
    total = session.scalar(select(func.count()).select_from(Request).where(*where)) or 0
    requests = session.scalars(
        select(Request).where(*where).order_by(order).offset(offset).limit(limit)
    ).all()
    return Page(tuple(views_of(session, requests)), total, number, size)


def lists_approver(session: Session, user_id: str) -> ColumnElement[bool]:
    """SQL for "``user_id`` is in the request's ``approvers.users``" (a JSON list):
    ``jsonb @>`` on PostgreSQL, ``json_each`` on SQLite."""
    if session.get_bind().dialect.name == "postgresql":
        return cast(Request.approvers, JSONB)["users"].contains([user_id])
    users = func.json_each(Request.approvers, "$.users").table_valued("value")
    return exists().where(users.c.value == user_id)


def steps_of(request: Request) -> tuple[Step, ...]:
    """The approval steps stored with ``request`` (users as resolved at submission or refresh)."""
    stored: Sequence[dict[str, Any]] = request.approvers.get("steps", [])
    return tuple(
        Step(
            groups=tuple(step["groups"]),
            approvers=frozenset(step["users"]),
            min_approvals=int(step["min_approvals"]),
        )
        for step in stored
    )


def view_of(request: Request, approved_by: tuple[str, ...]) -> RequestView:
    preview: dict[str, Any] = request.preview or {}
    steps = steps_of(request)
    _, per_step = count_satisfied(steps, list(approved_by), request.requester_id)
    return RequestView(
        id=request.id,
        action=request.action,
        status=request.status,
        requester_id=request.requester_id,
        requester_kind=request.requester_kind,
        target=request.target,
        environment=request.environment,
        namespace=request.namespace,
        reason=request.reason,
        preview_lines=tuple(preview.get("lines", ())),
        rule=request.rule,
        approver_groups=tuple(request.approvers.get("groups", [])),
        min_approvals=request.min_approvals,
        approved_by=approved_by,
        decided_by=request.decided_by,
        result=request.result,
        error=request.error,
        origin_channel_id=request.origin_channel_id,
        incident=request.incident,
        response_url=request.response_url,
        approval_channel=request.approval_channel_id,
        approval=(
            MessageRef(request.approval_channel_id, request.approval_ts)
            if request.approval_channel_id and request.approval_ts
            else None
        ),
        thread=(
            MessageRef(request.thread_channel_id, request.thread_ts)
            if request.thread_channel_id and request.thread_ts
            else None
        ),
        created_at=request.created_at,
        updated_at=request.updated_at,
        steps=tuple(
            StepView(step.groups, step.min_approvals, tuple(per_step[i]))
            for i, step in enumerate(steps)
        ),
        incident_channel=request.origin_channel_name if request.incident else None,
        expires_at=request.expires_at,
        escalate_to=request.approvers.get("escalate_to"),
        escalate_users=tuple(request.approvers.get("escalate_users", [])),
        escalate_usergroups=tuple(request.approvers.get("escalate_usergroups", [])),
        break_glass=request.break_glass,
        review=(
            MessageRef(request.review_channel_id, request.review_ts)
            if request.review_channel_id and request.review_ts
            else None
        ),
        reviewed_by=request.reviewed_by,
        reviewed_at=request.reviewed_at,
        policy_sha256=request.policy_sha256,
        freeze=request.approvers.get("freeze"),
    )
