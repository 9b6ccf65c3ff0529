"""The inbox: work Slack's listeners acked and handed off, in the database until it is done.

A listener validates, writes one row (:meth:`Inbox.owe`: the kind of work, its payload, who asked,
the response_url, and a dedupe key, so that a redelivery of the same Slack request writes nothing
and is known as such in the same single ``INSERT``), acks, and hands the row's work to a worker;
the worker marks the row done (:meth:`Inbox.done`), or the work settles it in its own transaction
(:func:`settle`: a filed request and its row commit together, so a replay files nothing twice).

Each row has an owner (``<instance>/<process token>``) and a lease (``lease_until``). A process
that dies leaves its rows owed; :meth:`Inbox.claim` takes, exactly once across replicas, the owed
rows whose lease ran out and those an earlier run of the same instance left (the instance name is
unique among live replicas: the manifests use the pod name): in one transaction,
``SELECT id … FOR UPDATE SKIP LOCKED LIMIT n`` (rows another replica is claiming are skipped, the
ones selected stay locked) then a guarded ``UPDATE … WHERE id IN (…) AND <still owed> RETURNING``
on PostgreSQL; on SQLite the same, after ``BEGIN IMMEDIATE`` has taken the database's writer lock.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, Engine, and_, delete, insert, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from approvals.lifecycle import rows_changed
from approvals.models import OwedWork

log = logging.getLogger(__name__)

MAX_ATTEMPTS = 3
"""Runs of one piece of work, at most: a row claimed once more is given up (its person told),
so that work that kills the process cannot kill every replica in turn."""

DEDUPE_KEY_LENGTH = 128


class AlreadyDone(Exception):
    """The owed work was already done (an earlier run of it, or another replica's)."""


@dataclass(frozen=True)
class Owed:
    """One owed row as claimed: ``attempts`` counts this run."""

    id: int
    kind: str
    payload: dict[str, Any]
    user_id: str
    response_url: str | None
    attempts: int
    received_at: datetime


class Inbox:
    """The owed rows of ``engine``'s database, for the replica named ``instance``.

    ``clock`` returns an aware UTC datetime; ``lease`` is how many seconds a row stays with the
    process that wrote or claimed it before another replica may claim it.
    """

    def __init__(
        self, engine: Engine, *, clock: Callable[[], datetime], instance: str, lease: float
    ) -> None:
        self._engine = engine
        self._clock = clock
        self.lease = lease
        self._prefix = f"{instance}/"
        self.owner = f"{self._prefix}{uuid.uuid4().hex[:12]}"

    def owe(
        self,
        kind: str,
        payload: dict[str, Any],
        *,
        user_id: str,
        response_url: str | None,
        dedupe_key: str | None,
    ) -> int | None:
        """Write what is owed, in one ``INSERT``; its ID, or None when ``dedupe_key`` was
        already written (a redelivery: nothing to do). Raises ``SQLAlchemyError`` when the
        database cannot take it."""
        now = self._clock()
        values = {
            "dedupe_key": dedupe_key[:DEDUPE_KEY_LENGTH] if dedupe_key else None,
            "kind": kind,
            "payload": payload,
            "user_id": user_id,
            "response_url": response_url,
            "owner": self.owner,
            "lease_until": now + timedelta(seconds=self.lease),
            "attempts": 1,
            "received_at": now,
        }
        try:
            with self._engine.begin() as connection:
                return int(
                    connection.execute(
                        insert(OwedWork).values(values).returning(OwedWork.id)
                    ).scalar_one()
                )
        except IntegrityError:
            return None

    def _claimable(self, now: datetime) -> ColumnElement[bool]:
        return and_(
            OwedWork.done_at.is_(None),
            or_(
                OwedWork.lease_until < now,
                and_(
                    OwedWork.owner.startswith(self._prefix, autoescape=True),
                    OwedWork.owner != self.owner,
                ),
            ),
        )

    def claim(self, limit: int = 100) -> list[Owed]:
        """Take up to ``limit`` owed rows (see the module docstring), oldest first: each is
        leased to this process for :attr:`lease` seconds and its ``attempts`` counted. Rows
        another replica is claiming at the same moment are skipped, never taken twice."""
        now = self._clock()
        with self._engine.begin() as connection:
            if connection.dialect.name == "sqlite":  # the writer lock, before the read
                connection.exec_driver_sql("BEGIN IMMEDIATE")
            owed = connection.scalars(
                select(OwedWork.id)
                .where(self._claimable(now))
                .order_by(OwedWork.id)
                .limit(limit)
                .with_for_update(skip_locked=True)
            ).all()
            if not owed:
                return []
            rows = connection.execute(
                update(OwedWork)
                .where(OwedWork.id.in_(owed), self._claimable(now))
                .values(
                    owner=self.owner,
                    lease_until=now + timedelta(seconds=self.lease),
                    attempts=OwedWork.attempts + 1,
                )
                .returning(
                    OwedWork.id,
                    OwedWork.kind,
                    OwedWork.payload,
                    OwedWork.user_id,
                    OwedWork.response_url,
                    OwedWork.attempts,
                    OwedWork.received_at,
                )
            ).all()
        return sorted((Owed(*row) for row in rows), key=lambda o: o.id)

    def renew(self, owed_id: int) -> bool:
        """Extend this process's lease of row ``owed_id``; False when it is no longer ours (the
        lease ran out and another replica claimed it) or it is done."""
        now = self._clock()
        with self._engine.begin() as connection:
            changed = connection.execute(
                update(OwedWork)
                .where(
                    OwedWork.id == owed_id,
                    OwedWork.owner == self.owner,
                    OwedWork.done_at.is_(None),
                )
                .values(lease_until=now + timedelta(seconds=self.lease))
            ).rowcount
        return bool(changed == 1)

    def done(self, owed_id: int) -> None:
        """Mark row ``owed_id`` done (nothing when it already is)."""
        with self._engine.begin() as connection:
            connection.execute(
                update(OwedWork)
                .where(OwedWork.id == owed_id, OwedWork.done_at.is_(None))
                .values(done_at=self._clock())
            )

    def forget(self, *, older_than: float = 86400.0) -> int:
        """Delete the rows done and received more than ``older_than`` seconds ago (their dedupe
        keys with them: Slack stops redelivering within an hour); returns how many."""
        cutoff = self._clock() - timedelta(seconds=older_than)
        with self._engine.begin() as connection:
            return int(
                connection.execute(
                    delete(OwedWork).where(
                        OwedWork.done_at.is_not(None), OwedWork.received_at < cutoff
                    )
                ).rowcount
            )


def settle(session: Session, owed_id: int, now: datetime) -> None:
    """Mark row ``owed_id`` done in ``session``'s transaction, with the work's own writes (so
    both commit, or neither). Raises :class:`AlreadyDone` when it already was: the caller's
    transaction must roll back, the work was done before."""
    if (
        rows_changed(
            session,
            update(OwedWork)
            .where(OwedWork.id == owed_id, OwedWork.done_at.is_(None))
            .values(done_at=now)
            .execution_options(synchronize_session=False),
        )
        != 1
    ):
        raise AlreadyDone(f"owed work #{owed_id} was already done")
