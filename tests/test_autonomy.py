"""Earned autonomy (:mod:`approvals.autonomy`) on the real database: what counts, what resets,
what never runs on autonomy, and a property: never auto-approved unless a rule or earned
autonomy says so."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import create_engine
from sqlalchemy.orm import Session, sessionmaker

from approvals import autonomy
from approvals.db import migrate
from approvals.lifecycle import SYSTEM, Actor
from approvals.models import ActorKind, AutonomyReset, Request
from approvals.policy import (
    DecisionReason,
    Outcome,
    RequestContext,
    decide,
    parse_policy,
)
from bot.cli import main

POLICY = """\
version: 1
approval_channel: C0APPROVALS
groups:
  sre: {users: [U0SRE1, U0SRE2]}
agents:
  U0DEPLOYBOT: {name: deploy-bot}
environments:
  prod: {kube_context: prod, namespaces: [payments]}
rules:
  - name: agents restart prod
    match: {action: [restart, rotate], environment: prod}
    approvers: [sre]
    autonomy: {after_approved: 5, within: 30d, reset_on: [failed, denied]}
  - name: agents scale prod
    match: {action: scale, environment: prod}
    approvers: [sre]
"""

NOW = datetime(2026, 12, 4, 12, 0, tzinfo=UTC)
LOADED = parse_policy(POLICY)
AGENT = Actor("U0DEPLOYBOT", ActorKind.AGENT)
_ids = itertools.count()


@pytest.fixture
def sessions(database_url: str) -> Iterator[sessionmaker[Session]]:
    migrate(database_url)
    engine = create_engine(database_url)
    try:
        yield sessionmaker(engine, expire_on_commit=False)
    finally:
        engine.dispose()


def decision_for(action: str = "restart", *, requester: str = AGENT.id) -> object:
    return decide(
        LOADED,
        RequestContext(
            action=action,
            requester=requester,
            requester_kind="agent",
            environment="prod",
            namespace="payments",
            at=NOW,
        ),
    )


RULE = LOADED.rule_label(0)


def add(
    sessions: sessionmaker[Session],
    status: str,
    *,
    by: str = "U0SRE1",
    at: datetime = NOW - timedelta(days=1),
    agent: str = AGENT.id,
    rule: str = RULE,
) -> None:
    with sessions.begin() as session:
        session.add(
            Request(
                action="restart",
                params={},
                status=status,
                requester_id=agent,
                requester_kind="agent",
                target="deployment/web",
                rule=rule,
                policy_sha256=LOADED.sha256,
                decided_by=by,
                created_at=at,
                updated_at=at,
            )
        )


def applied(
    sessions: sessionmaker[Session],
    *,
    action: str = "restart",
    requester: Actor = AGENT,
    reversible: bool = True,
    break_glass: bool = False,
) -> object:
    return autonomy.apply(
        sessions,
        LOADED,
        decision_for(action, requester=requester.id),  # type: ignore[arg-type]
        requester=requester,
        reversible=reversible,
        break_glass=break_glass,
        now=NOW,
    )


def test_five_approved_successes_earn_the_sixth(sessions: sessionmaker[Session]) -> None:
    for _ in range(4):
        add(sessions, "succeeded")
    assert applied(sessions).outcome is Outcome.APPROVAL  # type: ignore[attr-defined]
    add(sessions, "succeeded")
    earned = applied(sessions)
    assert earned.outcome is Outcome.AUTO  # type: ignore[attr-defined]
    assert earned.reason is DecisionReason.EARNED_AUTONOMY  # type: ignore[attr-defined]
    assert earned.steps == ()  # type: ignore[attr-defined]
    assert "5 of 5 approved successes" in earned.message  # type: ignore[attr-defined]


def test_what_does_not_count(sessions: sessionmaker[Session]) -> None:
    add(sessions, "succeeded", by=SYSTEM.id)  # auto-approved: not approved by people
    add(sessions, "succeeded", at=NOW - timedelta(days=31))  # outside `within`
    add(sessions, "succeeded", agent="U0OTHERBOT")  # another agent
    add(sessions, "succeeded", rule=LOADED.rule_label(1))  # another rule
    add(sessions, "pending")
    for _ in range(4):
        add(sessions, "succeeded")
    assert applied(sessions).outcome is Outcome.APPROVAL  # type: ignore[attr-defined]


@pytest.mark.parametrize("status", ["failed", "denied"])
def test_a_failure_or_denial_resets_it(sessions: sessionmaker[Session], status: str) -> None:
    for _ in range(5):
        add(sessions, "succeeded", at=NOW - timedelta(days=2))
    add(sessions, status, at=NOW - timedelta(days=1))
    assert applied(sessions).outcome is Outcome.APPROVAL  # type: ignore[attr-defined]
    for _ in range(5):
        add(sessions, "succeeded", at=NOW - timedelta(hours=1))
    assert applied(sessions).outcome is Outcome.AUTO  # type: ignore[attr-defined]


def test_undo_resets_it_and_only_an_approver_may(sessions: sessionmaker[Session]) -> None:
    for _ in range(5):
        add(sessions, "succeeded")
    groups = {"sre": frozenset({"U0SRE1", "U0SRE2"})}
    for who in (Actor("U0DEV1"), AGENT):
        with pytest.raises(autonomy.UndoRefused):
            autonomy.undo(sessions, LOADED, groups, agent_id=AGENT.id, rule=RULE, by=who, now=NOW)
    assert applied(sessions).outcome is Outcome.AUTO  # type: ignore[attr-defined]
    autonomy.undo(
        sessions, LOADED, groups, agent_id=AGENT.id, rule=RULE, by=Actor("U0SRE2"), now=NOW
    )
    assert applied(sessions).outcome is Outcome.APPROVAL  # type: ignore[attr-defined]
    with sessions() as session:
        assert session.query(AutonomyReset).one().reset_by == "U0SRE2"
    with pytest.raises(autonomy.UndoRefused, match="no longer in the policy"):
        autonomy.undo(
            sessions, LOADED, groups, agent_id=AGENT.id, rule="gone", by=Actor("U0SRE1"), now=NOW
        )


def test_an_irreversible_kind_a_person_or_break_glass_never_runs_on_autonomy(
    sessions: sessionmaker[Session],
) -> None:
    for _ in range(10):
        add(sessions, "succeeded")
    assert applied(sessions, action="rotate").outcome is Outcome.APPROVAL  # type: ignore[attr-defined]
    assert applied(sessions, reversible=False).outcome is Outcome.APPROVAL  # type: ignore[attr-defined]
    assert applied(sessions, break_glass=True).outcome is Outcome.APPROVAL  # type: ignore[attr-defined]
    person = Actor("U0DEV1", ActorKind.HUMAN)
    with sessions.begin() as session:  # the same history, for a person
        for row in session.query(Request).all():
            row.requester_id = person.id
    assert applied(sessions, requester=person).outcome is Outcome.APPROVAL  # type: ignore[attr-defined]


HISTORY = st.lists(
    st.tuples(
        st.sampled_from(["succeeded", "failed", "denied", "expired", "unknown", "pending"]),
        st.sampled_from(["U0SRE1", SYSTEM.id]),
        st.integers(min_value=0, max_value=40),  # days ago
    ),
    max_size=12,
)


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    history=HISTORY,
    action=st.sampled_from(["restart", "rotate", "scale"]),
    kind=st.sampled_from([ActorKind.AGENT, ActorKind.HUMAN]),
    reversible=st.booleans(),
    break_glass=st.booleans(),
)
def test_never_auto_approved_unless_a_rule_or_earned_autonomy_says_so(
    sessions: sessionmaker[Session],
    history: list[tuple[str, str, int]],
    action: str,
    kind: ActorKind,
    reversible: bool,
    break_glass: bool,
) -> None:
    requester = Actor(f"U0BOT{next(_ids)}", kind)  # a fresh history per example
    for status, by, days in history:
        at = NOW - timedelta(days=days, minutes=len(status))
        add(sessions, status, by=by, at=at, agent=requester.id, rule=LOADED.rule_label(0))
    decision = applied(
        sessions, action=action, requester=requester, reversible=reversible, break_glass=break_glass
    )
    # the model: the approved successes after the latest failure/denial, within 30 days
    resets = [NOW - timedelta(days=d, minutes=len(s)) for s, _, d in history]
    last_reset = max(
        [r for r, (s, _, _) in zip(resets, history, strict=True) if s in ("failed", "denied")]
        + [NOW - timedelta(days=30)]
    )
    earned = sum(
        1
        for r, (s, by, _) in zip(resets, history, strict=True)
        if s == "succeeded" and by != SYSTEM.id and r > last_reset
    )
    may = (
        action == "restart"
        and kind == ActorKind.AGENT
        and reversible
        and not break_glass
        and earned >= 5
    )
    assert (decision.outcome is Outcome.AUTO) == may  # type: ignore[attr-defined]
    if decision.outcome is Outcome.AUTO:  # type: ignore[attr-defined]
        assert decision.reason is DecisionReason.EARNED_AUTONOMY  # type: ignore[attr-defined]


def test_policy_explain_shows_where_an_agent_stands(
    sessions: sessionmaker[Session],
    database_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    policy = tmp_path / "policy.yml"
    policy.write_text(POLICY)
    monkeypatch.setenv("OPSGATE_DATABASE_URL", database_url)
    monkeypatch.chdir(tmp_path)
    args = ["policy", "explain", str(policy), "--action", "restart", "-n", "payments"]
    at = ["--at", (NOW - timedelta(minutes=1)).isoformat()]
    for _ in range(3):
        add(sessions, "succeeded")
    assert main([*args, "--agent", "deploy-bot", *at]) == 0
    out = capsys.readouterr().out
    assert "by U0DEPLOYBOT (agent 'deploy-bot')" in out
    assert "autonomy: not earned yet (3 of 5 approved successes since" in out
    for _ in range(2):
        add(sessions, "succeeded")
    assert main([*args, "--agent", "U0DEPLOYBOT", *at]) == 0
    assert "autonomy: earned: no human needed (5 of 5" in capsys.readouterr().out
    assert main([*args[:3], "--action", "rotate", "-n", "payments", "--agent", "deploy-bot"]) == 0
    assert "autonomy: never for rotate (irreversible)" in capsys.readouterr().out
    assert main([*args, "--agent", "nobody"]) == 1
    assert main(args) == 2
