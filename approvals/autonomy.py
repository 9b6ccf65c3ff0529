"""Earned autonomy: an agent's requests under a rule go through without a human once earned.

A rule's ``autonomy: {after_approved: N, within: 30d, reset_on: [failed, denied]}``
(:class:`approvals.policy.Autonomy`) lets an agent's request that the rule sends to people be
approved by opsgate instead when, since the later of ``within`` ago and the agent's last reset
under that rule, at least N of its requests under the rule were approved by people and
succeeded. A reset is a request of the agent under the rule that ended in a ``reset_on`` status,
or a person's click on Undo (an :class:`~approvals.models.AutonomyReset` row). It never applies
to an irreversible kind (rotate, restore), to break-glass, to people, nor during a change
freeze (whose approvers the freeze names), and never where the rule itself denies.

A rule is known by its label (:meth:`approvals.policy.LoadedPolicy.rule_label`, which holds
its position and line): a rule that moves in the file starts afresh, which errs on the safe side.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from approvals.lifecycle import SYSTEM, Actor
from approvals.models import ActorKind, AutonomyReset, Request, Status
from approvals.policy import (
    Autonomy,
    Decision,
    DecisionReason,
    LoadedPolicy,
    Outcome,
    parse_duration,
    step_members,
)


class UndoRefused(Exception):
    """The clicker may not take an agent's autonomy back; ``str()`` says why."""


@dataclass(frozen=True)
class Standing:
    """Where an agent stands under one rule: ``earned`` approved successes (of ``needed``)
    since ``since`` (an aware UTC datetime)."""

    rule: str
    earned: int
    needed: int
    since: datetime

    @property
    def granted(self) -> bool:
        """True when the agent's next request under the rule needs no human."""
        return self.earned >= self.needed

    def text(self) -> str:
        """``3 of 5 approved successes since 2026-11-04 10:00 UTC``."""
        return (
            f"{self.earned} of {self.needed} approved successes since {self.since:%Y-%m-%d %H:%M} "
            "UTC"
        )


def rule_autonomy(loaded: LoadedPolicy, decision: Decision) -> Autonomy | None:
    """The ``autonomy`` of the rule that made ``decision``, or None."""
    if decision.rule_index is None:
        return None
    return loaded.policy.rules[decision.rule_index].autonomy


def standing(
    session: Session, *, agent_id: str, rule: str, autonomy: Autonomy, now: datetime
) -> Standing:
    """Count ``agent_id``'s approved successes under ``rule`` (a rule label) since its last
    reset, within ``autonomy.within`` of ``now``: three queries."""
    since = now - timedelta(seconds=parse_duration(autonomy.within))
    mine = (Request.requester_id == agent_id, Request.rule == rule)
    failed = session.scalar(
        select(func.max(Request.updated_at)).where(*mine, Request.status.in_(autonomy.reset_on))
    )
    undone = session.scalar(
        select(func.max(AutonomyReset.reset_at)).where(
            AutonomyReset.agent_id == agent_id, AutonomyReset.rule == rule
        )
    )
    for reset in (failed, undone):
        if reset is not None and reset > since:
            since = reset
    earned = session.scalar(
        select(func.count())
        .select_from(Request)
        .where(
            *mine,
            Request.status == Status.SUCCEEDED.value,
            Request.decided_by != SYSTEM.id,  # approved by people, not by a rule or autonomy
            Request.updated_at > since,
        )
    )
    return Standing(rule, earned or 0, autonomy.after_approved, since)


def apply(
    sessions: sessionmaker[Session],
    loaded: LoadedPolicy,
    decision: Decision,
    *,
    requester: Actor,
    reversible: bool,
    break_glass: bool,
    now: datetime,
) -> Decision:
    """``decision``, or an ``auto`` one (reason ``earned_autonomy``, no approval steps) when
    the agent ``requester`` has earned autonomy under the rule (see the module docstring)."""
    autonomy = rule_autonomy(loaded, decision)
    if (
        autonomy is None
        or requester.kind != ActorKind.AGENT
        or not reversible
        or not decision.reversible
        or break_glass
        or decision.outcome is not Outcome.APPROVAL
        or decision.reason is not DecisionReason.RULE_REQUIRES_APPROVAL
        or decision.rule_label is None
    ):
        return decision
    with sessions() as session:
        where = standing(
            session, agent_id=requester.id, rule=decision.rule_label, autonomy=autonomy, now=now
        )
    if not where.granted:
        return decision
    return replace(
        decision,
        outcome=Outcome.AUTO,
        reason=DecisionReason.EARNED_AUTONOMY,
        message=f"approved on earned autonomy: {where.text()}",
        steps=(),
    )


def undo(
    sessions: sessionmaker[Session],
    loaded: LoadedPolicy,
    groups: Mapping[str, frozenset[str]],
    *,
    agent_id: str,
    rule: str,
    by: Actor,
    now: datetime,
    request_id: int | None = None,
) -> None:
    """Put ``agent_id`` back to needing approval under ``rule`` (a label), as ``by`` asks.

    Raises :class:`UndoRefused` unless ``by`` is a person among the approvers of that rule's
    steps (``groups``: each group's members now) in the policy in force.
    """
    if by.kind == ActorKind.AGENT or by.id in loaded.policy.agents:
        raise UndoRefused("Automation cannot change an agent's autonomy.")
    index = next((i for i in range(len(loaded.policy.rules)) if loaded.rule_label(i) == rule), None)
    if index is None:
        raise UndoRefused(
            f"The rule {rule} is no longer in the policy: its autonomy ended with it."
        )
    names = [g for step in loaded.policy.rules[index].step_models() for g in step.approvers]
    if by.id not in step_members(names, groups, loaded.policy.agents):
        raise UndoRefused(
            "Only the rule's approvers can take an agent's autonomy back; nothing changed."
        )
    with sessions.begin() as session:
        session.add(
            AutonomyReset(
                agent_id=agent_id, rule=rule, reset_at=now, reset_by=by.id, request_id=request_id
            )
        )
