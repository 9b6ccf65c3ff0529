"""Who may see a request (``Gate.get_for``, ``/ops status ID``): its requester, the people who may
approve it, the policy's ``audit_readers``; anyone else is told it does not exist.

Unit tests on the gate (injected clock, recording notifier, fake cluster, test database), the
policy's ``audit_readers`` validation, and one test end to end through the running bot.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from actions.restart import RestartParams
from approvals.gate import Gate, Origin, Submission, UnknownRequest
from approvals.lifecycle import Actor
from approvals.models import ActorKind
from approvals.policy import LoadedPolicy, PolicyError, parse_policy, policy_warnings
from bot.settings import Settings
from tests.fakes.kube import FakeKubernetes
from tests.helpers.bot import RunningBot, wait_for
from tests.helpers.clock import Clock
from tests.helpers.gate import Directory, RecordingNotifier, built_gate
from tests.helpers.policy import policy
from tests.helpers.slack_flow import request_status, responses, submit, wait_approval_message

POLICY = policy(
    """\
  - match: {action: restart, environment: staging}
    approval: auto
  - match: {action: restart, environment: prod, namespace: checkout}
    steps:
      - {approvers: [sre]}
      - {approvers: [security]}
  - match: {action: restart, environment: prod}
    approvers: [sre]
    escalate_after: 30m
    escalate_to: managers
""",
    settings={"audit_channel": None, "incident_channels": None, "audit_readers": "[auditors]"},
    groups={
        "sre": "{users: [U0SRE1, U0SRE2], usergroups: [S0ONCALL]}",
        "auditors": "{users: [U0AUD1], usergroups: [S0AUDIT]}",
        "managers": "{users: [U0MGR1]}",
    },
    agents={"U0DEPLOYBOT": "{name: deploy-bot}", "U0OTHERBOT": "{name: other-bot}"},
    environments={"sandbox": None},
    spaced=False,
)


@dataclass
class World:
    gate: Gate
    directory: Directory
    policy: list[LoadedPolicy]  # the one in force is policy[0]; a test may replace it


@pytest.fixture
def world(tmp_path: Path, database_url: str, kube: FakeKubernetes) -> Iterator[World]:
    directory = Directory()
    policy = [parse_policy(POLICY)]
    with built_gate(
        database_url,
        kube=kube,
        kubeconfig=tmp_path / "kc",
        policy=lambda: policy[0],
        notifier=RecordingNotifier(),
        clock=Clock(),
        directory=directory,
        poll_interval=0.01,
        rollout_timeout=5,
    ) as built:
        yield World(built.gate, directory, policy)


def restart(
    requester: Actor, name: str = "payments-api", namespace: str = "payments"
) -> Submission:
    return Submission(
        action="restart",
        params=RestartParams(name=name, namespace=namespace),
        requester=requester,
        namespace=namespace,
        origin=Origin("C0DEV", "dev", None),
    )


def hidden_from(gate: Gate, request_id: int, viewer: Actor) -> str:
    with pytest.raises(UnknownRequest) as refused:
        gate.get_for(request_id, viewer)
    return str(refused.value)


def test_the_requester_its_approvers_and_audit_readers_see_it_others_are_told_it_is_not_there(
    world: World,
) -> None:
    request_id = world.gate.submit(restart(Actor("U0DEV1"))).id
    for viewer in ("U0DEV1", "U0SRE1", "U0SRE2", "U0AUD1"):
        view = world.gate.get_for(request_id, Actor(viewer))
        assert (view.id, view.status) == (request_id, "pending"), viewer
    missing = hidden_from(world.gate, 999, Actor("U0DEV1"))
    assert missing == "There is no request #999."
    # another developer, an approver of other rules, the escalation group: as if it did not exist
    for stranger in ("U0DEV2", "U0SEC1", "U0MGR1"):
        assert hidden_from(world.gate, request_id, Actor(stranger)) == (
            f"There is no request #{request_id}."
        )


def test_every_step_group_may_see_a_multi_step_request(world: World) -> None:
    request_id = world.gate.submit(restart(Actor("U0DEV1"), "cart", "checkout")).id
    assert world.gate.get_for(request_id, Actor("U0SEC1")).id == request_id
    assert world.gate.get_for(request_id, Actor("U0SRE2")).id == request_id
    hidden_from(world.gate, request_id, Actor("U0MGR1"))


def test_people_just_added_to_an_approver_or_audit_reader_user_group_see_it(
    world: World,
) -> None:
    request_id = world.gate.submit(restart(Actor("U0DEV1"))).id
    hidden_from(world.gate, request_id, Actor("U0NEWSRE"))
    hidden_from(world.gate, request_id, Actor("U0NEWAUD"))
    refreshed = world.directory.refreshed
    world.directory.pending_change = {
        "S0ONCALL": frozenset({"U0NEWSRE"}),
        "S0AUDIT": frozenset({"U0NEWAUD"}),
    }
    assert world.gate.get_for(request_id, Actor("U0NEWSRE")).id == request_id
    assert world.gate.get_for(request_id, Actor("U0NEWAUD")).id == request_id
    assert world.directory.refreshed == refreshed + 1  # the second was already known
    # left the group again: no longer
    world.directory.pending_change = {"S0AUDIT": frozenset()}
    world.directory.groups["S0AUDIT"] = frozenset()
    hidden_from(world.gate, request_id, Actor("U0NEWAUD"))


def test_agents_see_their_own_requests_only(world: World) -> None:
    own = world.gate.submit(restart(Actor("U0DEPLOYBOT"), "web", "staging-web"))
    assert own.requester_kind == "agent"
    # an agent's ID is automation whatever the caller says
    assert world.gate.get_for(own.id, Actor("U0DEPLOYBOT")).status == own.status
    assert world.gate.get_for(own.id, Actor("U0DEPLOYBOT", ActorKind.AGENT)).id == own.id
    hidden_from(world.gate, own.id, Actor("U0OTHERBOT"))
    theirs = world.gate.submit(restart(Actor("U0DEV1"))).id
    hidden_from(world.gate, theirs, Actor("U0DEPLOYBOT"))
    # the auto-approved request has no approvers: the audit readers still see it
    assert world.gate.get_for(own.id, Actor("U0AUD1")).id == own.id
    hidden_from(world.gate, own.id, Actor("U0SRE1"))


def test_whoever_approved_a_request_still_sees_it_after_leaving_the_group(world: World) -> None:
    request_id = world.gate.submit(restart(Actor("U0DEV1"), "cart", "checkout")).id
    world.gate.approve(request_id, Actor("U0SRE1"))
    # a reload takes U0SRE1 out of sre; the next decision recomputes the stored approvers
    world.policy[0] = parse_policy(POLICY.replace("[U0SRE1, U0SRE2]", "[U0SRE2]"))
    # (U0SRE1's approval no longer counts, but it stays on the request)
    assert world.gate.approve(request_id, Actor("U0SEC1")).status == "pending"
    assert world.gate.get_for(request_id, Actor("U0SRE1")).approved_by == ("U0SRE1", "U0SEC1")
    hidden_from(world.gate, request_id, Actor("U0MGR1"))


# --- the policy ---------------------------------------------------------------------------------


def test_audit_readers_must_name_groups() -> None:
    text = POLICY.replace("audit_readers: [auditors]", "audit_readers: [auditors, auditers]")
    with pytest.raises(PolicyError) as error:
        parse_policy(text, source="p.yml")
    [issue] = error.value.issues
    assert (issue.line, issue.field) == (3, "audit_readers[1]")
    assert issue.message.startswith("unknown group 'auditers' (groups: auditors, managers")


def test_an_agent_in_an_audit_reader_group_is_an_error() -> None:
    text = POLICY.replace("users: [U0AUD1]", "users: [U0AUD1, U0DEPLOYBOT]")
    with pytest.raises(PolicyError) as error:
        parse_policy(text, source="p.yml")
    [issue] = error.value.issues
    assert (issue.line, issue.field) == (7, "groups.auditors.users[1]")
    assert "automation only ever sees its own requests" in issue.message


def test_a_group_used_only_as_audit_readers_is_used_and_one_name_may_stand_alone() -> None:
    loaded = parse_policy(POLICY.replace("audit_readers: [auditors]", "audit_readers: auditors"))
    assert loaded.policy.audit_readers == ["auditors"]
    assert [w.field for w in policy_warnings(loaded)] == []
    unused = parse_policy(POLICY.replace("audit_readers: [auditors]\n", ""))
    assert [(w.field, w.message) for w in policy_warnings(unused)] == [
        ("groups.auditors", "is not used by any rule")
    ]


# --- end to end ---------------------------------------------------------------------------------


@pytest.fixture
def policy_text() -> str:
    return policy(settings={"audit_readers": "[security]"})


def test_status_of_a_failed_request_is_shown_only_to_those_who_may_see_it(
    bot: RunningBot, kube: FakeKubernetes, settings: Settings
) -> None:
    submit(bot, "restart payments-api -n payments")
    wait_approval_message(bot)
    kube.fail_next(status=500, method="PATCH", message="etcdserver: leader lost at 10.0.3.7")
    bot.click("approve", "1", user="U0SRE1")
    wait_for(lambda: request_status(settings) == "failed", what="the request to fail")

    def status(text: str, user: str) -> str:
        response_url = submit(bot, text, user=user)
        [answer] = wait_for(lambda: responses(bot.fake_slack, response_url))
        return answer

    for user in ("U0DEV1", "U0SRE2", "U0SEC1"):  # requester, approver, audit reader
        answer = status("status 1", user)
        assert "Request #1: restart deployment/payments-api" in answer, user
        assert "leader lost at 10.0.3.7" in answer, user
    told = status("status 1", "U0DEV2")
    assert "There is no request #1." in told
    assert "payments" not in told
    assert status("status 2", "U0DEV2") == told.replace("#1", "#2")
