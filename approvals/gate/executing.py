"""The executing room: an approved request is run exactly once, and ended.

``approved → executing`` is a guarded transition, so of two workers (or two replicas) that try
to run the same request one does. The kind's ``execute`` then answers one of three ways: done
(``succeeded``; ``active`` for an access grant, handed to :class:`approvals.grants.GrantService`),
failed, or "sent, unanswered, and the read-back could not tell" (``unknown``: never retried,
because running a change twice is worse than asking a person to look). A change whose rollout
is still going stays ``executing`` with the rollout stored; one periodic job
(:meth:`Executing.follow_rollouts`, :class:`approvals.rollouts.RolloutJob`) ends it.
"""

from __future__ import annotations

import logging
from typing import Any

from pydantic import BaseModel

from actions.base import ActionKind, Outcome, Preview, Target
from actions.errors import ActionError, OutcomeUnknown, RolloutFailed
from approvals.gate.context import GateContext
from approvals.grants import GrantError
from approvals.lifecycle import SYSTEM, transition
from approvals.models import Status
from approvals.rollouts import RolloutChecker, RolloutJob, rollout_state

log = logging.getLogger(__name__)

_Run = tuple[ActionKind, BaseModel, Target, Preview]


class Executing:
    """Run approved requests and end them; ``rollouts`` reads a rollout once and
    ``rollout_timeout`` (seconds) bounds how long one is followed."""

    def __init__(
        self, ctx: GateContext, *, rollouts: RolloutChecker, rollout_timeout: float
    ) -> None:
        self._ctx = ctx
        self._rollout_timeout = rollout_timeout
        self._rollout_job = RolloutJob(
            sessions=ctx.sessions,
            checker=rollouts,
            clock=ctx.clock,
            finish=lambda rid, to, detail, result, error: self.finish(
                rid, to, detail=detail, result=result, error=error
            ),
        )

    def execute(self, request_id: int) -> None:
        """Run an approved request exactly once: approved → executing → succeeded | failed |
        unknown (or ``active``, for a grant; or still ``executing``, its rollout followed)."""
        run = self._start(request_id)
        if run is None:
            return
        self._ctx.notify(request_id, "executing")
        outcome = self._run(request_id, *run)
        if outcome is not None:
            self._settle(request_id, outcome)

    def _start(self, request_id: int) -> _Run | None:
        """Move the request ``approved → executing`` and read what to run; None when another
        worker (or replica) moved it first."""
        with self._ctx.sessions.begin() as session:
            request = self._ctx.load(session, request_id)
            if not transition(
                session,
                request,
                expected=Status.APPROVED,
                to=Status.EXECUTING,
                actor=SYSTEM,
                now=self._ctx.clock(),
            ):
                return None
            kind = self._ctx.actions[request.action]
            params = kind.params_model.model_validate(request.params)
            stored: dict[str, Any] = request.preview
            preview = Preview(
                target=stored["target"], lines=tuple(stored["lines"]), facts=stored["facts"]
            )
            target = Target(
                environment=request.environment or "",
                kube_context=stored.get("kube_context"),
                namespace=request.namespace,
                settings={
                    **stored.get("settings", {}),
                    "request_id": request_id,
                    "requester_id": request.requester_id,
                },
            )
        return kind, params, target, preview

    def _run(
        self,
        request_id: int,
        kind: ActionKind,
        params: BaseModel,
        target: Target,
        preview: Preview,
    ) -> Outcome | None:
        """The kind's ``execute``; None when it raised (the request is then ended)."""
        try:
            return kind.execute(params, target=target, preview=preview)
        except OutcomeUnknown as exc:  # sent, unanswered, and the read-back could not tell
            log.warning("request #%s may have taken effect: %s", request_id, exc)
            self.finish(
                request_id, Status.UNKNOWN, error=str(exc), detail={**exc.facts, "error": str(exc)}
            )
        except ActionError as exc:
            log.warning("request #%s failed: %s", request_id, exc)
            # a RolloutFailed change WAS applied: its facts (what, the rollout) go to the audit
            facts = exc.facts if isinstance(exc, RolloutFailed) else {}
            self.finish(
                request_id, Status.FAILED, error=str(exc), detail={**facts, "error": str(exc)}
            )
        except Exception as exc:  # a bug: the requester must still hear of it
            # only the type's name: an unexpected message might hold anything, a secret included
            log.error(
                "request #%s: unexpected %s while executing",
                request_id,
                type(exc).__name__,
                exc_info=True,
            )
            why = (
                f"opsgate hit an unexpected error ({type(exc).__name__}) while executing; "
                "it may have taken effect: check the target before asking again"
            )
            self.finish(request_id, Status.UNKNOWN, error=why, detail={"error": why})
        return None

    def _settle(self, request_id: int, outcome: Outcome) -> None:
        """End a request whose kind's ``execute`` returned ``outcome``, or hand it on: to the
        rollout job (a rollout to follow) or to the grants service (a grant)."""
        ctx = self._ctx
        if outcome.rollout is not None:
            # applied; follow_rollouts ends the request when its rollout does
            with ctx.sessions.begin() as session:
                ctx.load(session, request_id).rollout = rollout_state(
                    outcome, ctx.clock(), self._rollout_timeout
                )
            return
        if "grant" in outcome.facts and ctx.grants is not None:
            with ctx.sessions.begin() as session:
                ctx.load(session, request_id).result = outcome.summary
            try:
                ctx.grants.activate(request_id, outcome.facts, SYSTEM)
            except GrantError as exc:
                log.error("request #%s: the grant could not be recorded: %s", request_id, exc)
                why = (
                    f"access was set up but could not be recorded ({exc}); the drift check "
                    "removes it within minutes"
                )
                self.finish(request_id, Status.FAILED, error=why, detail={"error": str(exc)})
                return
            ctx.notify(request_id, "active")
            return
        self.finish(request_id, Status.SUCCEEDED, result=outcome.summary, detail=outcome.facts)

    def follow_rollouts(self) -> list[int]:
        """Read each rollout being followed once and finish the requests whose rollout ended
        (:class:`approvals.rollouts.RolloutJob`); returns their IDs. Run periodically."""
        return self._rollout_job.run()

    def finish(
        self,
        request_id: int,
        to: Status,
        *,
        detail: dict[str, Any],
        result: str | None = None,
        error: str | None = None,
    ) -> None:
        """End an ``executing`` request in ``to`` (a guarded transition) and announce it."""
        if self._ctx.move(
            request_id, Status.EXECUTING, to, detail=detail, result=result, error=error
        ):
            self._ctx.notify(request_id, to.value)
