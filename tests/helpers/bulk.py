"""Bulk rows and statement counts for the tests that measure how the database is read: many
pending requests inserted at once, and the SQL statements an engine sends (an SQLAlchemy event
listener)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Engine, event, insert, text

from approvals.models import Request


@contextmanager
def counting(engine: Engine) -> Iterator[list[str]]:
    """The SQL statements ``engine`` sends while the block runs (executemany counts once)."""
    statements: list[str] = []

    def before(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        statements.append(statement)

    event.listen(engine, "before_cursor_execute", before)
    try:
        yield statements
    finally:
        event.remove(engine, "before_cursor_execute", before)


def seed_pending(
    engine: Engine,
    count: int,
    now: datetime,
    *,
    requester: Callable[[int], str] = lambda i: "U0DEV1",
    approvers: Callable[[int], list[str]] = lambda i: ["U0SRE1", "U0SRE2"],
) -> list[int]:
    """``count`` pending restart requests, in bulk; returns their IDs, oldest first."""
    with engine.begin() as conn:
        first = conn.execute(text("SELECT coalesce(max(id), 0) FROM requests")).scalar_one()
        ids = list(range(first + 1, first + 1 + count))
        conn.execute(
            insert(Request),
            [
                {
                    "id": i,
                    "action": "restart",
                    "params": {"name": "payments-api", "namespace": "payments"},
                    "status": "pending",
                    "requester_id": requester(i),
                    "requester_kind": "human",
                    "environment": "prod",
                    "namespace": "payments",
                    "target": "deployment/payments-api",
                    "policy_sha256": "0" * 64,
                    "min_approvals": 1,
                    "approvers": {
                        "groups": ["sre"],
                        "users": approvers(i),
                        "escalate_to": "oncall",
                        "steps": [],
                    },
                    "preview": {"lines": ["restart deployment/payments-api"]},
                    "incident": False,
                    "break_glass": False,
                    "expires_at": now + timedelta(hours=2),
                    "escalate_at": now + timedelta(minutes=30),
                    "created_at": now,
                    "updated_at": now,
                }
                for i in ids
            ],
        )
        if engine.dialect.name == "postgresql":
            conn.execute(text("SELECT setval('requests_id_seq', (SELECT max(id) FROM requests))"))
    return ids
