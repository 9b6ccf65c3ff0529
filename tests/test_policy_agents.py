"""Requests from automation (issue 6, item 7): the policy's ``agents``, and the risk each request
kind declares.

``agents`` lists the Slack IDs (bot user ``U…``, bot ``B…``, app ``A…``) whose requests are
requester kind ``agent``: the same rules apply to them as to people, a rule may be limited to one
kind, and an agent never approves, never reviews and never breaks the glass, whatever group it
has been put in. Tables for each feature, a hypothesis property over random policies, and
``opsgate policy explain`` / ``check`` on a policy with agents.
"""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from actions.access import Access
from actions.restart import Restart
from actions.restore import Restore
from actions.rollback import Rollback
from actions.rotate import Rotate
from actions.scale import Scale
from approvals.extend import Extend
from approvals.policy import (
    REVERSIBLE,
    DecisionReason,
    Outcome,
    PolicyError,
    RequestContext,
    agent_of,
    decide,
    explain_mismatches,
    parse_policy,
    policy_warnings,
    requester_kind,
)
from bot import cli
from tests.helpers.policy_cases import PROPERTY_SETTINGS, cases, first_match, reference_matches

AT = datetime(2026, 11, 2, 10, 0, tzinfo=UTC)

POLICY = """\
version: 1
approval_channel: C0APPROVALS
groups:
  sre: {users: [U0SRE1, U0SRE2]}
  bots: {users: [U0DEPLOYBOT]}
agents:
  U0DEPLOYBOT: {name: deploy-bot, description: "the CD pipeline's Slack app"}
  B0ALERTS: {name: alertmanager}
  A0RUNBOOKS: {name: runbook-app}
environments:
  prod: {namespaces: [payments]}
  staging: {namespaces: ["staging-*"]}
rules:
  - name: bots restart staging
    match: {action: restart, environment: staging, requester_kind: agent, requesters: [bots]}
    approval: auto
  - name: people restart staging
    match: {action: restart, environment: staging, requester_kind: human}
    approval: auto
  - name: prod restarts
    match: {action: restart, environment: prod}
    approvers: [sre]
    break_glass: [sre]
  - name: automation scales nothing
    match: {action: scale, requester_kind: agent}
    deny: "automation may not scale; ask a person"
  - match: {action: scale, environment: prod}
    approvers: [sre]
"""


@pytest.fixture(scope="module")
def loaded() -> Any:
    return parse_policy(POLICY)


def ctx(action: str, requester: str, environment: str, **kw: Any) -> RequestContext:
    namespace = {"prod": "payments", "staging": "staging-web"}[environment]
    return RequestContext(action, requester, environment, namespace, at=AT, **kw)


# --- the file format -----------------------------------------------------------------------------


def test_agents_are_parsed_with_their_names(loaded: Any) -> None:
    agents = loaded.policy.agents
    assert {k: a.name for k, a in agents.items()} == {
        "U0DEPLOYBOT": "deploy-bot",
        "B0ALERTS": "alertmanager",
        "A0RUNBOOKS": "runbook-app",
    }
    assert agents["U0DEPLOYBOT"].description == "the CD pipeline's Slack app"
    assert policy_warnings(loaded) == []


@pytest.mark.parametrize(
    ("agents", "words"),
    [
        (
            "  deploy-bot: {name: x}\n",
            ["agents", "'deploy-bot' is not a Slack user, bot or app ID"],
        ),
        ("  C0CHANNEL: {name: x}\n", ["'C0CHANNEL' is not a Slack user, bot or app ID"]),
        ("  B0X: {}\n", ["agents.B0X.name", "Field required"]),
        ("  B0X: {name: x, token: y}\n", ["agents.B0X.token", "Extra inputs"]),
    ],
)
def test_invalid_agents_name_the_line(agents: str, words: list[str]) -> None:
    text = POLICY.replace(
        'agents:\n  U0DEPLOYBOT: {name: deploy-bot, description: "the CD pipeline\'s Slack app"}\n'
        "  B0ALERTS: {name: alertmanager}\n  A0RUNBOOKS: {name: runbook-app}\n",
        "agents:\n" + agents,
    ).replace("  bots: {users: [U0DEPLOYBOT]}\n", "  bots: {users: [U0SRE1]}\n")
    with pytest.raises(PolicyError) as info:
        parse_policy(text)
    message = str(info.value)
    for word in words:
        assert word in message
    assert "policy.yml:7:" in message  # the agents entry's line


@pytest.mark.parametrize(
    ("outcome", "how"),
    [
        ("approvers: [bots]", "approvers"),
        ("steps: [{approvers: [sre]}, {approvers: [bots]}]", "steps"),
        ("approvers: [sre]\n    during_freeze: {approvers: [bots]}", "during_freeze"),
        ("approvers: [sre]\n    break_glass: [bots]", "break_glass"),
    ],
)
def test_an_agent_in_an_approving_group_is_an_error(outcome: str, how: str) -> None:
    text = POLICY.replace("    approvers: [sre]\n    break_glass: [sre]\n", f"    {outcome}\n")
    with pytest.raises(PolicyError) as info:
        parse_policy(text)
    assert (
        "policy.yml:5: groups.bots.users[0]: 'U0DEPLOYBOT' is an agent (agents.U0DEPLOYBOT); "
        f"automation can never approve or break the glass, but rules[2] uses group 'bots' "
        f"for {how}"
    ) in str(info.value)


def test_agents_that_no_rule_lets_ask_are_a_warning() -> None:
    text = (
        "version: 1\napproval_channel: C0A\n"
        "agents:\n  B0ALERTS: {name: alertmanager}\n"
        "environments:\n  prod: {namespaces: [payments]}\n"
        "rules:\n  - match: {action: restart, requester_kind: human}\n    approval: auto\n"
    )
    [warning] = policy_warnings(parse_policy(text))
    assert (warning.line, warning.field) == (3, "agents")
    assert "no rule lets automation ask" in warning.message


def test_a_rule_for_automation_without_agents_is_a_warning() -> None:
    text = (
        "version: 1\napproval_channel: C0A\n"
        "environments:\n  prod: {namespaces: [payments]}\n"
        "rules:\n  - match: {action: restart, requester_kind: agent}\n    approval: auto\n"
    )
    [warning] = policy_warnings(parse_policy(text))
    assert (warning.line, warning.field) == (6, "rules[0].match.requester_kind")
    assert warning.message == (
        "matches only automation, but the policy lists no agents (top-level 'agents')"
    )


# --- who is an agent -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ids", "expected"),
    [
        (("U0DEPLOYBOT", "B0DEPLOY", "A0DEPLOY"), "U0DEPLOYBOT"),  # the bot user is listed
        (("U0OTHERBOT", "B0ALERTS", "A0ALERTS"), "B0ALERTS"),  # its bot ID is
        ((None, "B0NEW", "A0RUNBOOKS"), "A0RUNBOOKS"),  # a legacy bot message: no user
        (("U0DEV1", None, None), None),  # a person
        (("U0OTHERBOT", "B0OTHER", "A0OTHER"), None),  # a bot nobody listed
        ((None, None, None), None),
    ],
)
def test_agent_of(loaded: Any, ids: tuple[str | None, ...], expected: str | None) -> None:
    assert agent_of(loaded.policy, *ids) == expected


def test_the_policy_can_make_a_requester_automation_but_never_a_person(loaded: Any) -> None:
    assert requester_kind(loaded.policy, "U0DEPLOYBOT") == "agent"
    assert requester_kind(loaded.policy, "U0DEPLOYBOT", "human") == "agent"
    assert requester_kind(loaded.policy, "U0DEV1") == "human"
    assert requester_kind(loaded.policy, "U0DEV1", "agent") == "agent"


# --- the decision --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("context", "outcome", "reason", "rule", "words"),
    [
        # a listed agent is an agent even when the caller says "human"
        (
            ctx("restart", "U0DEPLOYBOT", "staging"),
            Outcome.AUTO,
            DecisionReason.RULE_AUTO_APPROVES,
            0,
            ["bots restart staging"],
        ),
        # a listed agent outside the requesters group: the people's rule does not take it
        (
            ctx("restart", "B0ALERTS", "staging"),
            Outcome.DENY,
            DecisionReason.REQUESTER_NOT_ALLOWED,
            None,
            ["only members of bots may ask for restart in staging"],
        ),
        (
            ctx("restart", "U0DEV1", "staging"),
            Outcome.AUTO,
            DecisionReason.RULE_AUTO_APPROVES,
            1,
            ["people restart staging"],
        ),
        # the same rule applies to automation as to people
        (
            ctx("restart", "B0ALERTS", "prod"),
            Outcome.APPROVAL,
            DecisionReason.RULE_REQUIRES_APPROVAL,
            2,
            ["needs 1 approval(s) from sre"],
        ),
        (
            ctx("scale", "A0RUNBOOKS", "prod"),
            Outcome.DENY,
            DecisionReason.RULE_DENIES,
            3,
            ["automation may not scale"],
        ),
        (
            ctx("scale", "U0DEV1", "prod"),
            Outcome.APPROVAL,
            DecisionReason.RULE_REQUIRES_APPROVAL,
            4,
            ["sre"],
        ),
        # automation never breaks the glass, even when a group says it may
        (
            ctx("restart", "B0ALERTS", "prod", reason="pager says so, P1", break_glass=True),
            Outcome.DENY,
            DecisionReason.BREAK_GLASS_NOT_ALLOWED,
            2,
            ["automation can never break the glass"],
        ),
        (
            ctx("restart", "U0SRE1", "prod", reason="pager says so, P1", break_glass=True),
            Outcome.BREAK_GLASS,
            DecisionReason.BREAK_GLASS,
            2,
            ["executed at once"],
        ),
    ],
)
def test_decide_for_agents(
    loaded: Any,
    context: RequestContext,
    outcome: Outcome,
    reason: DecisionReason,
    rule: int | None,
    words: list[str],
) -> None:
    decision = decide(loaded, context)
    assert (decision.outcome, decision.reason, decision.rule_index) == (outcome, reason, rule)
    for word in words:
        assert word in decision.message or word in (decision.rule_label or "")


def test_an_agent_resolved_into_a_group_never_approves_nor_breaks_the_glass(loaded: Any) -> None:
    # a Slack user group (or a group resolved at run time) that contains an agent
    groups = {"sre": frozenset({"U0SRE1", "B0ALERTS"}), "bots": frozenset({"U0DEPLOYBOT"})}
    decision = decide(loaded, ctx("restart", "U0DEV1", "prod"), groups=groups)
    assert decision.approvers == frozenset({"U0SRE1"})
    assert not decision.may_approve("B0ALERTS", requester="U0DEV1")
    assert decision.may_approve("U0SRE1", requester="U0DEV1")
    # with only the agent left besides the requester, nobody can approve: refused at once
    alone = decide(loaded, ctx("restart", "U0SRE1", "prod"), groups=groups)
    assert alone.reason is DecisionReason.NOT_ENOUGH_APPROVERS
    glass = decide(
        loaded,
        ctx("restart", "B0ALERTS", "prod", reason="pager says so, P1", break_glass=True),
        groups=groups,
    )
    assert glass.reason is DecisionReason.BREAK_GLASS_NOT_ALLOWED


def test_explain_mismatches_sees_a_listed_agent_as_an_agent(loaded: Any) -> None:
    why = explain_mismatches(loaded, ctx("restart", "B0ALERTS", "staging"))
    assert why[0] == ["the requester is not in bots"]
    assert why[1] == ["the requester is not human"]


# --- risk: what each request kind declares -------------------------------------------------------


def test_a_kind_that_declares_itself_irreversible_is_never_auto_approved(loaded: Any) -> None:
    people = ctx("restart", "U0DEV1", "staging")
    assert decide(loaded, people).outcome is Outcome.AUTO
    declared = decide(loaded, dataclasses.replace(people, kind_reversible=False))
    assert declared.reason is DecisionReason.IRREVERSIBLE_AUTO_REFUSED
    assert declared.reversible is False
    # a kind cannot make reversible what the policy's table calls irreversible
    assert not RequestContext("rotate", "U0DEV1", kind_reversible=True).reversible


KINDS = [Restart, Scale, Rollback, Access, Extend, Rotate, Restore]


@pytest.mark.parametrize("kind", KINDS, ids=[k.name for k in KINDS])
def test_each_kind_declares_the_reversibility_the_policy_applies(kind: Any) -> None:
    assert kind.reversible == REVERSIBLE[kind.name]


# --- a property over random policies -------------------------------------------------------------

AGENT = "B0AGENT"


@PROPERTY_SETTINGS
@given(cases(), st.sampled_from(["human", "agent"]))
def test_property_a_listed_agent_is_decided_as_automation(
    case: tuple[dict[str, Any], RequestContext], claimed: str
) -> None:
    data, context = case
    data = {**data, "agents": {AGENT: {"name": "a bot"}}}
    # the agent may ask wherever a rule names requesters: it is in every such rule's groups
    data["groups"] = {**data["groups"], "robots": {"users": [AGENT]}}
    data["rules"] = [
        {**r, "match": {**r["match"], "requesters": [*r["match"]["requesters"], "robots"]}}
        if "requesters" in r["match"]
        else r
        for r in data["rules"]
    ]
    loaded = parse_policy(yaml.safe_dump(data, sort_keys=False))
    as_agent = dataclasses.replace(context, requester=AGENT, requester_kind=claimed)
    decision = decide(loaded, as_agent)
    truth = dataclasses.replace(as_agent, requester_kind="agent")
    assert decision == decide(loaded, truth)
    assert decision.outcome is not Outcome.BREAK_GLASS
    assert AGENT not in decision.approvers
    assert AGENT not in decision.escalate_to_users
    for user in ["U1", "U2", AGENT]:
        assert not decision.may_approve(AGENT, requester=user)
    # the agent is in every rule's requesters: read the rules without them
    unrestricted = [
        {**r, "match": {k: v for k, v in r["match"].items() if k != "requesters"}}
        for r in data["rules"]
    ]
    index = first_match({**data, "rules": unrestricted}, truth)
    assert decision.rule_index == index
    if index is not None:
        assert reference_matches(unrestricted[index], truth)
        assert data["rules"][index]["match"].get("requester_kind", "any") != "human"


# --- opsgate policy explain / check ---------------------------------------------------------------


@pytest.fixture
def policy_file(tmp_path: Path) -> Path:
    path = tmp_path / "policy.yml"
    path.write_text(POLICY)
    return path


def test_explain_treats_a_listed_agent_as_automation(
    capsys: pytest.CaptureFixture[str], policy_file: Path
) -> None:
    code = cli.main(
        [
            "policy",
            "explain",
            str(policy_file),
            "--user",
            "B0ALERTS",
            "--action",
            "scale",
            "-n",
            "payments",
        ]
    )
    out = capsys.readouterr().out
    assert code == 0
    assert "by B0ALERTS (agent 'alertmanager')" in out
    assert "decision: deny (rule_denies)" in out
    assert "rules[3] 'automation scales nothing'" in out
    args = ["policy", "explain", str(policy_file), "--action", "scale", "-n", "payments"]
    human = cli.main([*args, "--user", "U0DEV1"])
    out = capsys.readouterr().out
    assert human == 0
    assert "by U0DEV1 (human)" in out
    assert "decision: approval" in out
    assert "'extend'" not in out  # a scale rule's explanation shows no access setting
    assert "rules[3] 'automation scales nothing' (line 24): the requester is not agent" in out
