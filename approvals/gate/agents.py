"""The agents room: what the gate would decide without filing (``explain``), and the autonomy an
agent earns under a rule (:mod:`approvals.autonomy`) and loses again with the Undo button."""

from __future__ import annotations

import logging
from dataclasses import replace
from datetime import datetime

from actions.base import ActionKind
from approvals import autonomy
from approvals.explain import Explained, explain
from approvals.gate.context import GateContext
from approvals.gate.errors import NotAllowed, Rejected, Submission
from approvals.lifecycle import Actor
from approvals.models import ActorKind
from approvals.notifier import RequestView
from approvals.policy import Decision, LoadedPolicy, NamespaceError

log = logging.getLogger(__name__)


class Agents:
    """Explain a submission; apply and take back earned autonomy."""

    def __init__(self, ctx: GateContext) -> None:
        self._ctx = ctx

    def explain(self, submission: Submission) -> Explained:
        """The decision and preview ``submission`` would get, filing, auditing and announcing
        nothing (:func:`approvals.explain.explain`). Raises :class:`Rejected` for a kind opsgate
        cannot execute or a namespace the policy does not know."""
        loaded = self._ctx.policy()
        sub = replace(submission, requester=self._ctx.actor(submission.requester, loaded))
        kind = self._ctx.actions.get(sub.action)
        if kind is None:
            raise Rejected(f"opsgate cannot execute '{sub.action}' requests yet")
        now = self._ctx.clock()
        try:
            return explain(
                loaded,
                kind,
                params=sub.params,
                requester=sub.requester,
                namespace=sub.namespace,
                env=sub.env,
                path=sub.path,
                reason=sub.reason,
                break_glass=sub.break_glass is not None,
                groups=self._ctx.groups(loaded),
                now=now,
                adjust=lambda d: self.earned(d, sub, loaded, kind, now),
            )
        except NamespaceError as exc:
            raise Rejected(str(exc)) from exc

    def earned(
        self,
        decision: Decision,
        sub: Submission,
        loaded: LoadedPolicy,
        kind: ActionKind,
        now: datetime,
    ) -> Decision:
        """``decision``, made ``auto`` where the agent has earned autonomy under its rule
        (:func:`approvals.autonomy.apply`)."""
        return autonomy.apply(
            self._ctx.sessions,
            loaded,
            decision,
            requester=sub.requester,
            reversible=kind.reversible,
            break_glass=sub.break_glass is not None,
            now=now,
        )

    def undo_autonomy(self, request_id: int, actor: Actor) -> RequestView:
        """The Undo button of an earned-autonomy notice: request ``request_id``'s agent needs
        approval again under its rule (:func:`approvals.autonomy.undo`); returns the request.
        Raises :class:`UnknownRequest` or :class:`NotAllowed` (not one of the rule's approvers,
        or a request not made by an agent)."""
        view = self._ctx.get(request_id)
        if view.requester_kind != ActorKind.AGENT or view.rule is None:
            raise NotAllowed(f"Request #{request_id} was not made by an agent.")
        loaded = self._ctx.policy()
        try:
            autonomy.undo(
                self._ctx.sessions,
                loaded,
                self._ctx.groups(loaded),
                agent_id=view.requester_id,
                rule=view.rule,
                by=self._ctx.actor(actor),
                now=self._ctx.clock(),
                request_id=request_id,
            )
        except autonomy.UndoRefused as exc:
            raise NotAllowed(str(exc)) from exc
        log.info("request #%s: %s took %s's autonomy back", request_id, actor.id, view.requester_id)
        return view
