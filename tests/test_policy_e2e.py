"""End to end, issue 6: the policy's approval features through signed Slack requests.

Multi-step approval, escalation and the pending TTL (an injected clock decides what is due while
the periodic jobs run every 0.2 s of real time), a change freeze, break-glass with its review,
Slack user groups (a fake ``usergroups.users.list``), and a policy file rewritten under the
running bot (invalid, then valid). Requests from automation (agents) are in
tests/test_policy_agents_e2e.py.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from approvals.models import Approval, AuditEvent, Request
from bot.settings import Settings
from tests.fakes import slack
from tests.fakes.kube import FakeKubernetes
from tests.helpers.bot import RunningBot, running_bot, wait_for
from tests.helpers.clock import Clock
from tests.helpers.policy import YEAR_END_FREEZE, policy
from tests.helpers.slack_flow import (
    RESTARTED_AT,
    action_ids,
    annotations,
    ephemerals_to,
    patches,
    request_status,
    responses,
    rows,
    submit,
)

POLICY = policy(
    """\
  - name: checkout two steps
    match: {action: restart, environment: prod, namespace: checkout}
    steps:
      - {approvers: [sre], min_approvals: 1}
      - {approvers: [security], min_approvals: 1}
    pending_ttl: 2h
    escalate_after: 30m
    escalate_to: oncall
    during_freeze: {approvers: [security]}
  - name: payments
    match: {action: restart, environment: prod, namespace: payments}
    approvers: [sre]
    break_glass: [oncall]
  - match: {action: restart, environment: staging}
    approval: auto
""",
    groups={
        "sre": "{users: [U0SRE1, U0SRE2], usergroups: [S0ONCALL]}",
        "oncall": "{users: [U0ONCALL]}",
    },
    environments={"sandbox": None},
    sections=YEAR_END_FREEZE,
)

START = datetime(2026, 11, 21, 3, 0, tzinfo=UTC)
ONCALL_USERGROUP = "S0ONCALL"
PAGER = "U0PAGER"
"""A member of the sre group only through the Slack user group S0ONCALL."""


@pytest.fixture
def policy_text() -> str:
    return POLICY


@pytest.fixture
def clock() -> Clock:
    return Clock(START)


@pytest.fixture
def bot(settings: Settings, fake_slack: slack.FakeSlack, clock: Clock) -> Iterator[RunningBot]:
    """conftest's bot, with the injected clock and the periodic jobs every 0.2 s."""
    slack.set_usergroup(fake_slack, ONCALL_USERGROUP, [PAGER])
    fast = settings.model_copy(update={"sweep_interval": 0.2})
    with running_bot(fast, fake_slack, clock=clock) as running:
        yield running


# --- helpers ------------------------------------------------------------------------------------


def posts(fake: slack.FakeSlack, channel: str, thread_ts: str | None = None) -> list[slack.Call]:
    """``chat.postMessage`` calls to ``channel`` (replies in ``thread_ts`` when given)."""
    return [
        c
        for c in fake.calls_of("chat.postMessage")
        if c.args["channel"] == channel
        and (thread_ts is None or c.args.get("thread_ts") == thread_ts)
    ]


def updates_of(fake: slack.FakeSlack, ts: str) -> list[slack.Call]:
    return [c for c in fake.calls_of("chat.update") if c.args["ts"] == ts]


def context_text(blocks: object) -> str:
    """The text of a message's context blocks (the approvals line lives there)."""
    if isinstance(blocks, str):
        blocks = json.loads(blocks)
    assert isinstance(blocks, list)
    return " ".join(
        element["text"]
        for block in blocks
        if block["type"] == "context"
        for element in block["elements"]
    )


def approval_of(bot: RunningBot, settings: Settings, request_id: int = 1) -> slack.Call:
    """Wait for the approval message of request ``request_id``, and for the gate to have stored
    where it is: a click before that would approve, but find no message to update."""
    wait_for(
        lambda: [r for r in rows(settings, Request) if r.id == request_id and r.approval_ts],
        what=f"request #{request_id} to be announced",
    )
    return next(
        c
        for c in reversed(bot.fake_slack.calls_of("chat.postMessage"))
        if c.args.get("blocks") and c.args["text"].startswith(f"Request #{request_id}:")
    )


def announcement(bot: RunningBot) -> slack.Call:
    """The requester's announcement in C0DEV, whose thread carries progress."""
    return wait_for(
        lambda: [c for c in posts(bot.fake_slack, "C0DEV") if not c.args.get("thread_ts")],
        what="the requester's announcement",
    )[-1]


def click_on(
    bot: RunningBot, message: slack.Call, action_id: str, value: str, *, user: str
) -> None:
    """A signed click on button ``action_id`` of the posted ``message``."""
    body = slack.block_action_body(
        action_id,
        value,
        user_id=user,
        channel_id=str(message.response["channel"]),
        message_ts=str(message.response["ts"]),
        response_url=bot.fake_slack.response_url(),
    )
    assert bot.post(body).status_code == 200


def audit_events(settings: Settings) -> list[str]:
    return [e.event for e in rows(settings, AuditEvent)]


def told(bot: RunningBot, user: str) -> list[str]:
    """Wait until ``user`` has been answered alone (ephemeral); returns the answers."""
    return wait_for(
        lambda: ephemerals_to(bot.fake_slack, user), what=f"an ephemeral answer to {user}"
    )


# --- multi-step approval ------------------------------------------------------------------------


def test_two_steps_need_one_approval_from_each_group(
    bot: RunningBot, kube: FakeKubernetes, settings: Settings
) -> None:
    submit(bot, 'restart cart -n checkout --reason "cart pods leak memory"')
    approval = approval_of(bot, settings)
    ts = str(approval.response["ts"])
    assert action_ids(approval.args["blocks"]) == ["approve", "deny"]
    assert "Needs 1 from *sre* (0/1) and 1 from *security* (0/1)" in context_text(
        approval.args["blocks"]
    )
    assert "Waiting for 1 more from sre and 1 more from security" in announcement(bot).args["text"]

    bot.click("approve", "1", user="U0SRE1")
    first = wait_for(lambda: updates_of(bot.fake_slack, ts), what="the first update")[-1]
    assert "1 from *sre* (1/1: <@U0SRE1>) and 1 from *security* (0/1)" in context_text(
        first.args["blocks"]
    )
    assert action_ids(first.args["blocks"]) == ["approve", "deny"]
    # the requester's message is updated in place to say what is still needed (issue 13)
    mine = str(announcement(bot).response["ts"])
    wait_for(
        lambda: [
            c
            for c in updates_of(bot.fake_slack, mine)
            if "Waiting for 1 more from security" in c.args["text"]
        ],
        what="the requester's message to say what is still needed",
    )

    # a second sre is recorded but does not satisfy the security step
    bot.click("approve", "1", user="U0SRE2")
    wait_for(lambda: len(updates_of(bot.fake_slack, ts)) >= 2, what="the second update")
    second = wait_for(lambda: updates_of(bot.fake_slack, mine)[1:], what="its update")[-1]
    # it counts for no step: security is still needed
    assert "Waiting for 1 more from security" in second.args["text"]
    assert "1 from *sre* (1/1: <@U0SRE1>)" in second.args["text"]
    assert posts(bot.fake_slack, "C0DEV", mine) == []  # nothing that needs a reply
    assert request_status(settings) == "pending"
    assert patches(kube) == []
    assert RESTARTED_AT not in annotations(kube, "checkout", "cart")

    bot.click("approve", "1", user="U0SEC1")
    wait_for(lambda: request_status(settings) == "succeeded", what="the request to succeed")
    assert len(patches(kube)) == 1
    assert RESTARTED_AT in annotations(kube, "checkout", "cart")
    final = wait_for(
        lambda: [c for c in updates_of(bot.fake_slack, ts) if "succeeded" in c.args["text"]]
    )[-1]
    assert action_ids(final.args["blocks"]) == []
    assert ":white_check_mark: 1 from *security* (1/1: <@U0SEC1>)" in context_text(
        final.args["blocks"]
    )
    assert "Approved by <@U0SEC1>" in json.dumps(final.args["blocks"])
    assert audit_events(settings) == [
        "submitted",
        "approval_added",
        "approval_added",
        "approval_added",
        "approved",
        "executing",
        "succeeded",
    ]
    assert [a.approver_id for a in rows(settings, Approval)] == ["U0SRE1", "U0SRE2", "U0SEC1"]
    # every decision on the request records the policy it was made under
    [request] = rows(settings, Request)
    assert request.policy_sha256 == hashlib.sha256(POLICY.encode()).hexdigest()
    assert {e.policy_sha256 for e in rows(settings, AuditEvent)} == {request.policy_sha256}
    assert {e.rule for e in rows(settings, AuditEvent)} == {
        "rules[0] 'checkout two steps' (line 24)"
    }


# --- escalation and the pending TTL (injected clock) -----------------------------------------


def test_escalation_pings_once_then_the_request_expires(
    bot: RunningBot, kube: FakeKubernetes, settings: Settings, clock: Clock
) -> None:
    submit(bot, "restart cart -n checkout")
    approval = approval_of(bot, settings)
    ts = str(approval.response["ts"])
    thread = str(announcement(bot).response["ts"])
    [request] = rows(settings, Request)
    assert request.expires_at == START + timedelta(hours=2)
    assert request.escalate_at == START + timedelta(minutes=30)

    clock.move_to(START + timedelta(minutes=29), then_run="escalate_due")
    assert posts(bot.fake_slack, "C0APPROVALS", ts) == []
    assert "escalated" not in audit_events(settings)

    clock.move_to(START + timedelta(minutes=31), then_run="escalate_due")
    [ping] = wait_for(lambda: posts(bot.fake_slack, "C0APPROVALS", ts), what="the escalation")
    assert ping.args["text"].startswith(
        ":mega: <@U0ONCALL>: request #1 has waited since "
        "<!date^1795230000^{date_short_pretty} {time}|2026-11-21 03:00 UTC>"
    )
    assert "1 from *sre* (0/1) and 1 from *security* (0/1)" in ping.args["text"]
    [reply] = wait_for(
        lambda: [c for c in posts(bot.fake_slack, "C0DEV", thread) if ":mega:" in c.args["text"]]
    )
    assert "<@U0ONCALL>" in reply.args["text"]
    assert request_status(settings) == "pending"

    # later sweeps do not ping again; the TTL then runs out
    clock.move_to(START + timedelta(hours=1), then_run="escalate_due")
    clock.move_to(START + timedelta(hours=2, minutes=1), then_run="expire_pending")
    assert request_status(settings) == "expired"
    assert len(posts(bot.fake_slack, "C0APPROVALS", ts)) == 1
    assert audit_events(settings).count("escalated") == 1
    assert audit_events(settings)[-1] == "expired"
    expired = wait_for(
        lambda: [c for c in updates_of(bot.fake_slack, ts) if "expired" in c.args["text"]]
    )[-1]
    assert action_ids(expired.args["blocks"]) == []
    assert "Expired: nobody decided in time" in json.dumps(expired.args["blocks"])
    wait_for(
        lambda: [
            c
            for c in posts(bot.fake_slack, "C0DEV", thread)
            if "<@U0DEV1>" in c.args["text"] and "Expired" in c.args["text"]
        ],
        what="the requester to hear of the expiry",
    )

    # an expired request can no longer be approved
    bot.click("approve", "1", user="U0SRE1")
    [refused] = told(bot, "U0SRE1")
    assert "Request #1 is already expired" in refused
    assert patches(kube) == []


# --- a change freeze ----------------------------------------------------------------------------


def test_a_freeze_denies_or_asks_for_its_approvers_until_it_ends(
    bot: RunningBot, kube: FakeKubernetes, settings: Settings, clock: Clock
) -> None:
    clock.move_to(datetime(2026, 12, 24, 10, 0, tzinfo=UTC), then_run="expire_pending")

    # payments has no during_freeze: denied with the freeze's reason, nothing posted
    response_url = submit(bot, "restart payments-api -n payments")
    [answer] = wait_for(lambda: responses(bot.fake_slack, response_url))
    assert (
        "Not allowed: change freeze 'year-end' until 2027-01-04 00:00 Europe/Berlin: "
        "year-end change freeze"
    ) in answer
    assert not [c for c in bot.fake_slack.calls_of("chat.postMessage") if c.args.get("blocks")]
    assert rows(settings, Request) == []
    [rejected] = rows(settings, AuditEvent)
    assert rejected.event == "rejected"
    assert "year-end change freeze" in rejected.detail["reason"]

    # checkout's during_freeze asks security alone instead of its two steps
    submit(bot, "restart cart -n checkout")
    approval = approval_of(bot, settings)
    assert "Needs 1 approval(s) from *security* (0/1)" in context_text(approval.args["blocks"])
    assert "change freeze *year-end* in force" in context_text(approval.args["blocks"])
    [request] = rows(settings, Request)
    assert request.approvers["groups"] == ["security"]
    assert audit_events(settings)[-1] == "submitted"
    assert rows(settings, AuditEvent)[-1].detail["decision"] == "freeze_requires_approval"
    bot.click("approve", "1", user="U0SRE1")
    [refused] = told(bot, "U0SRE1")
    assert "Only members of security may decide request #1" in refused
    assert request_status(settings) == "pending"
    bot.click("approve", "1", user="U0SEC1")
    wait_for(lambda: request_status(settings) == "succeeded", what="the request to succeed")
    assert RESTARTED_AT in annotations(kube, "checkout", "cart")

    # after the freeze the payments rule applies again
    clock.move_to(datetime(2027, 1, 4, 0, 0, tzinfo=UTC), then_run="expire_pending")
    submit(bot, "restart payments-api -n payments")
    approval = approval_of(bot, settings, 2)
    assert "Needs 1 approval(s) from *sre* (0/1)" in context_text(approval.args["blocks"])


# --- break-glass and its review -----------------------------------------------------------------


def test_break_glass_executes_at_once_and_is_reviewed_from_the_audit_channel(
    bot: RunningBot, kube: FakeKubernetes, settings: Settings
) -> None:
    # only oncall may break the glass here
    response_url = submit(
        bot, 'restart payments-api -n payments --break-glass "I would like it now"'
    )
    [answer] = wait_for(lambda: responses(bot.fake_slack, response_url))
    assert "only members of oncall may break the glass here" in answer
    assert patches(kube) == []
    assert rows(settings, Request) == []

    submit(
        bot,
        'restart payments-api -n payments --break-glass "checkout down, P1 incident"',
        user="U0ONCALL",
    )
    wait_for(lambda: request_status(settings) == "succeeded", what="the request to succeed")
    assert len(patches(kube)) == 1
    assert RESTARTED_AT in annotations(kube, "payments", "payments-api")
    # no approval message: the loud notice with its review item goes to the audit channel
    [notice] = [c for c in bot.fake_slack.calls_of("chat.postMessage") if c.args.get("blocks")]
    assert notice.args["channel"] == "C0AUDIT"
    assert notice.args["text"].startswith(":rotating_light: BREAK-GLASS by <@U0ONCALL>")
    assert "executed without approval" in notice.args["text"]
    sha = hashlib.sha256(POLICY.encode()).hexdigest()
    assert f"rule rules[1] 'payments' (line 33) · policy {sha[:12]}" in context_text(
        notice.args["blocks"]
    )
    assert "Needs review by *sre*" in json.dumps(notice.args["blocks"])
    assert action_ids(notice.args["blocks"]) == ["break_glass_ack"]
    buttons = next(b for b in notice.args["blocks"] if b["type"] == "actions")
    assert [e["value"] for e in buttons["elements"]] == ["1"]
    assert "checkout down, P1 incident" in json.dumps(notice.args["blocks"])
    assert "Break-glass: executing now, without approval" in announcement(bot).args["text"]
    [request] = rows(settings, Request)
    assert request.break_glass
    assert request.decided_by == "U0ONCALL"
    assert request.review_ts == notice.response["ts"]
    assert request.reviewed_by is None
    assert audit_events(settings) == [
        "rejected",
        "submitted",
        "break_glass",
        "executing",
        "succeeded",
    ]
    assert rows(settings, AuditEvent)[2].detail["justification"] == "checkout down, P1 incident"

    # the requester, and someone outside the rule's approvers, may not review it
    click_on(bot, notice, "break_glass_ack", "1", user="U0ONCALL")
    assert "You cannot review your own break-glass request" in told(bot, "U0ONCALL")[0]
    click_on(bot, notice, "break_glass_ack", "1", user="U0SEC1")
    assert "Only members of sre may review request #1" in told(bot, "U0SEC1")[0]
    assert rows(settings, Request)[0].reviewed_by is None

    ts = str(notice.response["ts"])
    before = len(updates_of(bot.fake_slack, ts))
    click_on(bot, notice, "break_glass_ack", "1", user="U0SRE1")
    reviewed = wait_for(
        lambda: [
            c for c in updates_of(bot.fake_slack, ts)[before:] if "reviewed" in c.args["text"]
        ],
        what="the notice to show the review",
    )[-1]
    assert reviewed.args["channel"] == "C0AUDIT"
    assert action_ids(reviewed.args["blocks"]) == []
    assert "Reviewed by <@U0SRE1>" in json.dumps(reviewed.args["blocks"])
    [request] = rows(settings, Request)
    assert request.reviewed_by == "U0SRE1"
    assert request.reviewed_at is not None

    click_on(bot, notice, "break_glass_ack", "1", user="U0SRE2")
    assert "Request #1 was already reviewed" in told(bot, "U0SRE2")[0]
    assert audit_events(settings).count("break_glass_reviewed") == 1
    assert rows(settings, Request)[0].reviewed_by == "U0SRE1"
    assert len(patches(kube)) == 1


# --- Slack user groups --------------------------------------------------------------------------


def test_a_usergroup_member_counts_and_a_stranger_is_refused_alone(
    bot: RunningBot, kube: FakeKubernetes, settings: Settings
) -> None:
    submit(bot, "restart payments-api -n payments")
    approval = approval_of(bot, settings)
    asked = [c.args for c in bot.fake_slack.calls_of("usergroups.users.list")]
    assert {"usergroup": ONCALL_USERGROUP} in [{"usergroup": a.get("usergroup")} for a in asked]
    [request] = rows(settings, Request)
    assert PAGER in request.approvers["users"]

    bot.click("approve", "1", user="U0STRANGER")
    [refused] = told(bot, "U0STRANGER")
    assert "Only members of sre may decide request #1; nothing was changed." in refused
    [ephemeral] = bot.fake_slack.calls_of("chat.postEphemeral")
    assert ephemeral.args["channel"] == "C0APPROVALS"
    assert request_status(settings) == "pending"
    assert rows(settings, Approval) == []
    assert bot.fake_slack.calls_of("chat.update") == []
    assert patches(kube) == []
    assert audit_events(settings) == ["submitted"]

    bot.click("approve", "1", user=PAGER)
    wait_for(lambda: request_status(settings) == "succeeded", what="the request to succeed")
    assert len(patches(kube)) == 1
    final = wait_for(
        lambda: [
            c
            for c in updates_of(bot.fake_slack, str(approval.response["ts"]))
            if "succeeded" in c.args["text"]
        ]
    )[-1]
    assert f"Approved by <@{PAGER}>" in json.dumps(final.args["blocks"])
    assert [e.actor_id for e in rows(settings, AuditEvent)][:3] == ["U0DEV1", PAGER, PAGER]


# --- reloading the policy file under the running bot ----------------------------------------


def readyz_policy(bot: RunningBot) -> str:
    return str(bot.http.get(f"{bot.url}/readyz").json()["policy"])


def test_an_invalid_policy_file_is_reported_and_the_old_policy_stays_in_force(
    bot: RunningBot, kube: FakeKubernetes, settings: Settings, policy_path: Path
) -> None:
    old_sha = hashlib.sha256(POLICY.encode()).hexdigest()
    assert readyz_policy(bot) == old_sha
    wait_for(
        lambda: any(t.name == "opsgate-policy-watch" for t in threading.enumerate()),
        what="the policy watcher",
    )
    submit(bot, "restart payments-api -n payments")
    approval_of(bot, settings)

    # an unclosed flow mapping: YAML that does not parse
    broken = POLICY.replace("security: {users: [U0SEC1]}", "security: {users: [U0SEC1]")
    policy_path.write_text(broken)
    [warning] = wait_for(
        lambda: [c for c in posts(bot.fake_slack, "C0AUDIT") if "invalid" in c.args["text"]],
        what="the audit channel to hear of the invalid policy",
    )
    assert "The policy file changed but is invalid" in warning.args["text"]
    assert f"the previous policy stays in force (sha256 {old_sha[:12]})" in warning.args["text"]
    assert (
        f"{policy_path}:9: (yaml): while parsing a flow mapping started on line 8"
        in warning.args["text"]
    )
    assert readyz_policy(bot) == old_sha

    # what the old policy allows still works, under the old policy's digest
    submit(bot, "restart payments-api -n payments")
    approval_of(bot, settings, 2)
    assert [r.policy_sha256 for r in rows(settings, Request)] == [old_sha, old_sha]
    bot.click("approve", "2", user="U0SRE1")
    wait_for(lambda: request_status(settings, 2) == "succeeded", what="request #2 to succeed")

    # a valid new version, saved as editors and git do (a rename over the file), takes over
    fixed = POLICY.replace(
        "    approvers: [sre]\n    break_glass: [oncall]\n",
        '    deny: "payments restarts go through the deploy pipeline now"\n',
    )
    assert fixed != POLICY
    new_sha = hashlib.sha256(fixed.encode()).hexdigest()
    staged = policy_path.with_name(".policy.yml.tmp")
    staged.write_text(fixed)
    os.replace(staged, policy_path)
    wait_for(lambda: readyz_policy(bot) == new_sha, what="the new policy to be in force")

    response_url = submit(bot, "restart payments-api -n payments")
    [answer] = wait_for(lambda: responses(bot.fake_slack, response_url))
    assert "Not allowed: payments restarts go through the deploy pipeline now" in answer
    assert len(rows(settings, Request)) == 2
    rejected = rows(settings, AuditEvent)[-1]
    assert rejected.event == "rejected"
    assert rejected.policy_sha256 == new_sha
    assert len(patches(kube)) == 1
    # one warning only: the valid version is not reported as invalid
    assert len([c for c in posts(bot.fake_slack, "C0AUDIT") if "invalid" in c.args["text"]]) == 1
