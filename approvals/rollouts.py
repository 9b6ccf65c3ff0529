"""Following the rollouts of executing requests from one periodic job.

A restart, scale or rollback is applied by its kind's ``execute`` in a worker, which returns at
once with the workload to follow (:attr:`actions.base.Outcome.rollout`). The request stays
``executing``, with what was applied stored in ``requests.rollout``; :meth:`RolloutJob.run`,
woken every ``OPSGATE_ROLLOUT_POLL_INTERVAL`` seconds, reads each such workload once and finishes
the requests whose rollout completed, stopped progressing or ran out of time
(``OPSGATE_ROLLOUT_TIMEOUT`` seconds after the change), with the semantics of
``kubectl rollout status`` (:func:`actions.rollout.follow_rollout`). So a hundred slow rollouts
cost one job's reads, never a hundred waiting threads; and since the database says what is being
followed, a restarted bot (or another replica) carries on where this one stopped. Finishing is a
guarded transition, so two replicas that read the same rollout finish it once.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime
from typing import Any, Protocol

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from actions.base import Outcome, RolloutWatch
from actions.errors import ActionError, RolloutFailed
from actions.rollout import RolloutResult, conclude
from approvals.models import Request, Status

log = logging.getLogger(__name__)


class RolloutChecker(Protocol):
    """One reading of a followed rollout (:class:`actions.rollout.RolloutReader`)."""

    def check(
        self, watch: RolloutWatch, *, elapsed: float, timeout: float
    ) -> RolloutResult | None: ...


Finish = Callable[[int, Status, dict[str, Any], str | None, str | None], None]
"""How the gate ends a request: (ID, succeeded | failed, audit detail, result, error)."""


def rollout_state(outcome: Outcome, started: datetime, timeout: float) -> dict[str, Any]:
    """The JSON stored in ``requests.rollout`` for ``outcome`` (its ``rollout`` must be set):
    what was applied, its facts, the workload, when (``started``, aware UTC) and ``timeout``
    (seconds; the watch's own ``timeout`` when it has one)."""
    assert outcome.rollout is not None
    return {
        "applied": outcome.summary,
        "facts": outcome.facts,
        "watch": outcome.rollout.as_json(),
        "started_at": started.isoformat(),
        "timeout": outcome.rollout.timeout or timeout,
    }


class RolloutJob:
    """Finish executing requests whose rollout has ended.

    ``sessions`` makes database sessions; ``checker`` reads a rollout once; ``clock`` returns an
    aware UTC datetime; ``finish`` is the gate's way to end a request (it notifies people).
    """

    def __init__(
        self,
        *,
        sessions: sessionmaker[Session],
        checker: RolloutChecker,
        clock: Callable[[], datetime],
        finish: Finish,
    ) -> None:
        self._sessions = sessions
        self._checker = checker
        self._clock = clock
        self._finish = finish

    def run(self) -> list[int]:
        """Read each followed rollout once; finish those that ended. Returns their IDs.

        One query for the requests being followed, then one Kubernetes read per workload. A
        workload that is gone, or a read opsgate may not make, fails its request (the change
        was applied: the message says so); a read that fails for now is tried again next time.
        """
        with self._sessions() as session:
            rows = session.execute(
                select(Request.id, Request.rollout)
                .where(Request.status == Status.EXECUTING.value, Request.rollout.is_not(None))
                .order_by(Request.id)
            ).all()
        finished = []
        for request_id, state in rows:
            if self._check(request_id, state):
                finished.append(request_id)
        return finished

    def _check(self, request_id: int, state: dict[str, Any]) -> bool:
        applied: str = state["applied"]
        facts: dict[str, Any] = state["facts"]
        elapsed = (self._clock() - datetime.fromisoformat(state["started_at"])).total_seconds()
        try:
            result = self._checker.check(
                RolloutWatch.from_json(state["watch"]),
                elapsed=elapsed,
                timeout=float(state["timeout"]),
            )
        except ActionError as exc:
            error = f"{applied}, but its rollout cannot be followed: {exc}"
            log.warning("request #%s: %s", request_id, error)
            self._finish(request_id, Status.FAILED, {**facts, "error": error}, None, error)
            return True
        if result is None:
            return False
        try:
            outcome = conclude(applied, result, facts)
        except RolloutFailed as exc:
            log.warning("request #%s failed: %s", request_id, exc)
            self._finish(
                request_id, Status.FAILED, {**exc.facts, "error": str(exc)}, None, str(exc)
            )
            return True
        self._finish(request_id, Status.SUCCEEDED, outcome.facts, outcome.summary, None)
        return True
