"""The deliveries room: each Slack Events API delivery is handled once, across replicas.

Slack retries an event it got no answer to (same ``event_id``), possibly to another replica; the
``slack_events`` table remembers every ``event_id`` seen (its primary key makes the second insert
fail), and a periodic job forgets them once Slack has stopped retrying.
"""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import delete
from sqlalchemy.exc import IntegrityError

from approvals.gate.context import GateContext
from approvals.lifecycle import rows_changed
from approvals.models import SlackEvent


class Deliveries:
    """Deduplicate Slack deliveries by ``event_id``."""

    def __init__(self, ctx: GateContext) -> None:
        self._ctx = ctx

    def first_delivery(self, event_id: str) -> bool:
        """True the first time Slack delivers event ``event_id``, False for a redelivery (Slack
        retries an Events API event it got no answer to, with the same ``event_id``, possibly to
        another replica: the database remembers it for every replica)."""
        try:
            with self._ctx.sessions.begin() as session:
                session.add(SlackEvent(event_id=event_id, received_at=self._ctx.clock()))
        except IntegrityError:
            return False
        return True

    def forget_events(self, *, older_than: float = 86400.0) -> int:
        """Forget deliveries older than ``older_than`` seconds (Slack stops retrying after about
        an hour); returns how many."""
        cutoff = self._ctx.clock() - timedelta(seconds=older_than)
        with self._ctx.sessions.begin() as session:
            return rows_changed(session, delete(SlackEvent).where(SlackEvent.received_at < cutoff))
