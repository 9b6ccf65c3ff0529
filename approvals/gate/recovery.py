"""The recovery room: at start, finish what a stopped bot left behind.

Run once per start (``bot.app``), before the scheduler: a request left ``approved`` is executed,
one ``executing`` for long with no rollout being followed is marked ``unknown`` (it may have taken
effect; running it twice is worse than asking a person to look), one left ``pending`` before it
reached its approvers is cancelled.
"""

from __future__ import annotations

import logging
from datetime import timedelta

from sqlalchemy import select

from approvals.gate.context import GateContext
from approvals.gate.executing import Executing
from approvals.gate.timers import Timers
from approvals.models import Request, Status

log = logging.getLogger(__name__)


class Recovery:
    """Finish the requests a previous run left ``approved``, ``executing`` or stranded."""

    def __init__(self, ctx: GateContext, executing: Executing, timers: Timers) -> None:
        self._ctx = ctx
        self._executing = executing
        self._timers = timers

    def recover(self, *, stale_after: float = 900.0) -> list[int]:
        """Finish what a stopped bot left behind; returns the IDs of the requests it touched.

        A request left ``approved`` never started, so it is executed now (the guarded
        transition keeps another instance from running it too). One ``executing`` for more than
        ``stale_after`` seconds, with no rollout being followed, may or may not have taken
        effect: it is marked ``unknown`` with a message that says so, rather than run twice.
        Younger ones may belong to another live instance and are left alone. One whose change
        was applied and whose rollout is being followed is left to ``follow_rollouts``. One
        left ``pending`` before it was put to its approvers is cancelled (``cancel_stranded``).
        """
        cutoff = self._ctx.clock() - timedelta(seconds=stale_after)
        with self._ctx.sessions() as session:
            approved = session.scalars(
                select(Request.id).where(Request.status == Status.APPROVED.value)
            ).all()
            interrupted = session.scalars(
                select(Request.id).where(
                    Request.status == Status.EXECUTING.value,
                    Request.updated_at < cutoff,
                    Request.rollout.is_(None),
                )
            ).all()
        for request_id in interrupted:
            log.warning("request #%s was interrupted while executing", request_id)
            self._executing.finish(
                request_id,
                Status.UNKNOWN,
                error=(
                    "opsgate stopped while executing this request; it may have taken effect: "
                    "check the target before asking again"
                ),
                detail={"interrupted": True},
            )
        for request_id in approved:
            log.info("request #%s was approved before a restart; executing it now", request_id)
            self._executing.execute(request_id)
        return [*interrupted, *approved, *self._timers.cancel_stranded()]
