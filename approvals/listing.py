"""A requester's own requests, a page at a time, optionally of one status (the HTTP API's
``GET /api/v1/requests``)."""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from approvals.models import Request
from approvals.paging import page_window


def request_ids_of(
    sessions: sessionmaker[Session],
    requester_id: str,
    *,
    status: str | None,
    page: int,
    size: int,
) -> tuple[list[int], int]:
    """The IDs of page ``page`` (``size`` per page, newest first) of ``requester_id``'s
    requests (of ``status`` only, when given), and how many there are in all: two queries.
    Raises ``ValueError`` for a page out of range."""
    offset, limit = page_window(page, size)
    where = [Request.requester_id == requester_id]
    if status is not None:
        where.append(Request.status == status)
    with sessions() as session:
        total = session.scalar(select(func.count()).select_from(Request).where(*where)) or 0
        ids = session.scalars(
            select(Request.id).where(*where).order_by(Request.id.desc()).offset(offset).limit(limit)
        ).all()
    return list(ids), total
