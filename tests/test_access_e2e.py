"""End to end for issue 4 (time-bound access): signed Slack requests into the bot on a real socket,
the fake Kubernetes API and the fake Slack Web API over real HTTP, a real database.

The bot runs with an injected, mutable clock and a sweep every 0.2 s of real time: the clock
decides what is due (reminders, expiry), the periodic sweep acts on it within a fraction of a
second. One test lets a 2-second grant expire in real time with the real clock.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import Engine, create_engine
from sqlalchemy.orm import Session

from actions.access import parse_rfc3339, rfc3339, role_binding_body
from approvals.models import Grant
from bot.settings import Settings
from tests.fakes import slack
from tests.fakes.kube import FakeKubernetes, cluster_role
from tests.helpers.access import (
    EXPIRES_AT,
    GRANT_ID,
    MANAGED_BY,
    POLICY,
    AccessBot,
    app_home_opened,
    serve_access_bot,
)
from tests.helpers.bot import buttons, wait_for
from tests.helpers.clock import Clock

# --- fixtures -------------------------------------------------------------------------------------


@pytest.fixture
def policy_text() -> str:
    return POLICY


@pytest.fixture
def cluster(kube: FakeKubernetes) -> FakeKubernetes:
    """conftest's fake cluster, with the ClusterRoles the rules name."""
    for name in ("view", "edit"):
        kube.add(cluster_role(name))
    return kube


@pytest.fixture
def clock() -> Clock:
    return Clock(datetime.now(UTC).replace(microsecond=0))


@pytest.fixture
def db(settings: Settings) -> Iterator[Engine]:
    """The bot's database, read by the test."""
    engine = create_engine(settings.database_url)
    yield engine
    engine.dispose()


@pytest.fixture
def access_bot(
    settings: Settings,
    fake_slack: slack.FakeSlack,
    cluster: FakeKubernetes,
    clock: Clock,
    db: Engine,
) -> Iterator[AccessBot]:
    """The bot with the injected clock, sweeping every 0.2 s of real time."""
    with serve_access_bot(
        settings, fake_slack, cluster, db, sweep_interval=0.2, clock=clock
    ) as bot:
        yield bot


# --- the whole life of a grant --------------------------------------------------------------------


def test_request_approve_remind_extend_by_approval_and_expire(
    access_bot: AccessBot, clock: Clock
) -> None:
    bot = access_bot
    start = clock()
    grant_id = bot.grant_access("access payments --role edit --for 1h --reason 'debug the leak'")

    # the RoleBinding: the requester's Kubernetes user bound to the ClusterRole, until the end
    binding = bot.binding(grant_id, "payments")
    assert binding is not None
    assert binding["metadata"]["name"] == f"opsgate-grant-{grant_id}"
    assert binding["subjects"] == [
        {"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "alice@example.com"}
    ]
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "ClusterRole",
        "name": "edit",
    }
    assert binding["metadata"]["labels"][MANAGED_BY] == "opsgate"
    annotations = binding["metadata"]["annotations"]
    assert annotations[GRANT_ID] == str(grant_id)
    end = start + timedelta(hours=1)
    assert annotations[EXPIRES_AT] == rfc3339(end)  # RFC 3339, the clock started at approval
    assert parse_rfc3339(annotations[EXPIRES_AT]) == end
    grant = bot.grant(grant_id)
    assert (grant.status, grant.grantee_id, grant.expires_at) == ("active", "U0DEV1", end)
    assert bot.request(grant_id).decided_by == "U0SRE1"

    started = bot.dm_saying("U0DEV1", "has started")
    assert f"Grant #{grant_id}" in started.args["text"]
    wait_for(
        lambda: any(
            f"Grant #{grant_id}" in c.args.get("text", "") for c in bot.posts_to("C0AUDIT")
        ),
        what="the audit channel's mirror of the start",
    )

    # /ops grants lists it for its grantee
    listed = bot.command("grants")
    [answer] = wait_for(lambda: bot.answers(listed), what="the /ops grants answer")
    assert f"*#{grant_id}*" in answer
    assert "*edit* in *payments*" in answer

    # App Home: opening the tab publishes the user's grants with Extend / End now
    home_before = len(bot.fake.calls_of("views.publish"))
    bot.event(app_home_opened("U0DEV1"))
    home = wait_for(lambda: bot.fake.calls_of("views.publish")[home_before:], what="views.publish")[
        -1
    ]
    assert home.args["user_id"] == "U0DEV1"
    view = home.args["view"]
    view = json.loads(view) if isinstance(view, str) else view
    assert view["type"] == "home"
    assert f"*#{grant_id}*" in json.dumps(view)
    actions = [b for b in view["blocks"] if b.get("type") == "actions"]
    assert [e["action_id"] for e in actions[0]["elements"]] == ["grant_extend", "grant_end"]
    assert {e["value"] for e in actions[0]["elements"]} == {str(grant_id)}

    # ten minutes before the end: a DM with Extend and End now
    assert not [c for c in bot.dms("U0DEV1") if "ends in" in c.args.get("text", "")]
    clock.advance(3600 - 300)
    reminder = bot.dm_saying("U0DEV1", "ends in")
    assert buttons(reminder) == {"grant_extend": str(grant_id), "grant_end": str(grant_id)}
    assert "5m" in reminder.args["text"]

    # Extend: the rule says extend: approval, so it waits for an approver
    approvals_before = len(bot.approvals())
    bot.click(reminder, "grant_extend", user="U0DEV1")
    extension = wait_for(
        lambda: bot.approvals()[approvals_before:], what="the extension's approval message"
    )[0]
    extend_id = int(buttons(extension)["approve"])
    assert extend_id != grant_id
    assert f"Extend grant *#{grant_id}*" in json.dumps(extension.args["blocks"])
    assert bot.request(extend_id).status == "pending"
    assert bot.grant(grant_id).expires_at == end  # nothing moved before the approval
    binding = bot.binding(grant_id, "payments")
    assert binding is not None
    assert binding["metadata"]["annotations"][EXPIRES_AT] == rfc3339(end)

    bot.click(extension, "approve", user="U0SRE2")
    new_end = end + timedelta(hours=1)
    wait_for(lambda: bot.grant(grant_id).expires_at == new_end, what="the grant to be extended")
    binding = bot.binding(grant_id, "payments")
    assert binding is not None
    assert binding["metadata"]["annotations"][EXPIRES_AT] == rfc3339(new_end)
    assert bot.grant(grant_id).duration_seconds == 2 * 3600
    wait_for(lambda: bot.request(extend_id).status == "succeeded", what="the extension to end")
    [extended] = [e for e in bot.audit(grant_id) if e.event == "grant_extended"]
    assert extended.detail["to"] == rfc3339(new_end)
    assert extended.actor_id == "U0DEV1"  # who asked for it; the approval is on the request
    bot.dm_saying("U0DEV1", "was extended")

    # beyond max_duration (4h): refused, and nothing changes
    approvals_before = len(bot.approvals())
    refused = bot.command(f"extend {grant_id} 3h")
    [why] = wait_for(lambda: bot.answers(refused), what="the refusal")
    assert "more than the 4h its rule allows" in why
    assert "at most 2h" in why
    assert bot.approvals()[approvals_before:] == []
    assert bot.grant(grant_id).expires_at == new_end

    # a stranger may not end it
    stranger = bot.command(f"revoke {grant_id}", user="U0DEV2")
    [no] = wait_for(lambda: bot.answers(stranger), what="the stranger's refusal")
    assert "Only the grantee or an approver" in no
    assert bot.grant(grant_id).status == "active"
    assert bot.binding(grant_id, "payments") is not None

    # past the (new) end: the sweep removes the RoleBinding and says so
    clock.advance(3600 + 300)
    wait_for(lambda: bot.binding(grant_id, "payments") is None, what="the RoleBinding to go")
    wait_for(lambda: bot.grant(grant_id).status == "revoked", what="the grant to be revoked")
    grant = bot.grant(grant_id)
    assert (grant.revoke_reason, grant.revoked_by) == ("expired", "opsgate")
    [ended] = [e for e in bot.audit(grant_id) if e.to_status == "revoked"]
    assert ended.event == "grant_expired"
    assert ended.detail["expires_at"] == rfc3339(new_end)
    assert ended.detail["lag_seconds"] == 0.0  # the injected clock stood still past the end
    assert ended.detail["removed"]["role_binding_deleted"] is True
    bot.dm_saying("U0DEV1", "has expired")
    # the approval message of the access request says it ended
    approval = bot.approval_for(grant_id)
    wait_for(
        lambda: any("Ended: access ended: expired" in u for u in bot.updates_of(approval)),
        what="the approval message to say the access ended",
    )
    assert bot.request(grant_id).status == "revoked"


def test_auto_extension_early_revoke_and_end_now(access_bot: AccessBot, clock: Clock) -> None:
    bot = access_bot
    start = clock()

    # checkout: extend: auto, so /ops extend takes effect without an approver
    first = bot.grant_access("access checkout --for 30m")
    binding = bot.binding(first, "checkout")
    assert binding is not None
    assert binding["roleRef"]["name"] == "view"  # the rule's first role is the default
    approvals_before = len(bot.approvals())
    bot.command(f"extend {first} 30m")
    new_end = start + timedelta(hours=1)
    wait_for(lambda: bot.grant(first).expires_at == new_end, what="the automatic extension")
    binding = bot.binding(first, "checkout")
    assert binding is not None
    assert binding["metadata"]["annotations"][EXPIRES_AT] == rfc3339(new_end)
    [auto] = [e for e in bot.audit() if e.event == "auto_approved"]  # the extension
    assert auto.request_id is not None
    assert bot.request(auto.request_id).action == "extend"
    wait_for(lambda: bot.request(auto.request_id or 0).status == "succeeded", what="its end")
    assert bot.approvals()[approvals_before:] == []  # nobody was asked
    # beyond max_duration (2h): refused
    refused = bot.command(f"extend {first} 1h30m")
    [why] = wait_for(lambda: bot.answers(refused), what="the refusal")
    assert "at most 1h" in why
    assert bot.grant(first).expires_at == new_end

    # Extend on the DM asks for what the rule still allows (30m of 2h), not for a refused hour
    longer = bot.grant_access("access checkout --for 1h30m")
    started = bot.dm_saying("U0DEV1", f"Grant #{longer}: view in checkout (prod) has started")
    bot.click(started, "grant_extend", user="U0DEV1")
    wait_for(
        lambda: bot.grant(longer).expires_at == start + timedelta(hours=2),
        what="the button's extension",
    )
    assert bot.grant(longer).duration_seconds == 2 * 3600

    # early revoke by its grantee: gone at once, audited with who and why
    revoked = bot.command(f"revoke {first} --reason 'done debugging'")
    wait_for(lambda: bot.binding(first, "checkout") is None, what="the RoleBinding to go")
    [said] = wait_for(lambda: bot.answers(revoked), what="the revoke answer")
    assert f"Grant #{first} was revoked" in said
    grant = bot.grant(first)
    assert grant.status == "revoked"
    assert grant.revoked_by == "U0DEV1"
    assert grant.revoked_at == clock()
    assert grant.revoke_reason == "revoked early by <@U0DEV1>: done debugging"
    [ended] = [e for e in bot.audit(first) if e.to_status == "revoked"]
    assert (ended.event, ended.actor_id) == ("grant_revoked", "U0DEV1")
    bot.dm_saying("U0DEV1", "was ended early")
    # a second revoke changes nothing and says so
    again = bot.command(f"revoke {first}")
    [twice] = wait_for(lambda: bot.answers(again), what="the second revoke's answer")
    assert "already revoked" in twice

    # End now on the DM: a stranger's click is refused, the grantee's ends it
    second = bot.grant_access("access payments --role view --for 2h")
    started = bot.dm_saying("U0DEV1", f"Grant #{second}: view in payments (prod) has started")
    assert buttons(started) == {"grant_extend": str(second), "grant_end": str(second)}
    ephemerals = len(bot.fake.calls_of("chat.postEphemeral"))
    bot.click(started, "grant_end", user="U0DEV2")
    refusal = wait_for(
        lambda: bot.fake.calls_of("chat.postEphemeral")[ephemerals:], what="the refusal"
    )[0]
    assert refusal.args["user"] == "U0DEV2"
    assert "Only the grantee or an approver" in refusal.args["text"]
    assert bot.binding(second, "payments") is not None
    assert bot.grant(second).status == "active"

    bot.click(started, "grant_end", user="U0DEV1")
    wait_for(lambda: bot.binding(second, "payments") is None, what="End now to remove it")
    wait_for(lambda: bot.grant(second).status == "revoked", what="the grant to be revoked")
    assert bot.grant(second).revoked_by == "U0DEV1"
    [ended] = [e for e in bot.audit(second) if e.to_status == "revoked"]
    assert ended.event == "grant_revoked"
    assert ended.detail["reason"] == "revoked early by <@U0DEV1>: ended early by its grantee"
    assert bot.request(second).status == "revoked"

    # an approver may end anyone's grant; a stranger may not extend it
    third = bot.grant_access("access payments --role view --for 1h", approver="U0SRE2")
    stranger = bot.command(f"extend {third} 30m", user="U0DEV2")
    [no] = wait_for(lambda: bot.answers(stranger), what="the stranger's refusal")
    assert "is not yours" in no
    bot.command(f"revoke {third}", user="U0SRE1")
    wait_for(lambda: bot.grant(third).status == "revoked", what="the approver's revoke")
    assert bot.binding(third, "payments") is None
    assert bot.grant(third).revoke_reason == "revoked early by <@U0SRE1>"
    bot.dm_saying("U0DEV1", f"Grant #{third}: view in payments (prod) was ended early")


# --- real time ------------------------------------------------------------------------------------


def test_a_two_second_grant_expires_in_real_time(
    settings: Settings, fake_slack: slack.FakeSlack, cluster: FakeKubernetes, db: Engine
) -> None:
    """The real clock, and no periodic sweep within the test: the grant's own scheduled job
    (APScheduler, at ``expires_at``) revokes it."""
    with serve_access_bot(settings, fake_slack, cluster, db, sweep_interval=3600) as bot:
        grant_id = bot.grant_access("access staging-web --for 2s")
        binding = bot.binding(grant_id, "staging-web")
        assert binding is not None
        expires_at = bot.grant(grant_id).expires_at
        assert binding["metadata"]["annotations"][EXPIRES_AT] == rfc3339(expires_at)
        assert expires_at - bot.grant(grant_id).started_at == timedelta(seconds=2)

        wait_for(
            lambda: bot.binding(grant_id, "staging-web") is None,
            timeout=expires_at.timestamp() - datetime.now(UTC).timestamp() + 10,
            what="the 2-second grant's RoleBinding to go",
        )
        gone_at = datetime.now(UTC)
        assert gone_at >= expires_at  # not before its time
        wait_for(lambda: bot.grant(grant_id).status == "revoked", what="the revocation")
        grant = bot.grant(grant_id)
        assert grant.revoke_reason == "expired"
        assert grant.revoked_at is not None
        assert grant.revoked_at >= expires_at
        [ended] = [e for e in bot.audit(grant_id) if e.to_status == "revoked"]
        assert ended.event == "grant_expired"
        assert ended.detail["lag_seconds"] >= 0
        bot.dm_saying("U0DEV1", "has expired")


# --- what the audit of issue 4 found untested end to end ------------------------------------------


def test_a_pending_access_request_expires_after_the_default_ttl(
    access_bot: AccessBot, clock: Clock
) -> None:
    """No rule of this policy sets ``pending_ttl``: an access request nobody decides expires after
    the default hour; its approval message loses its buttons and the requester is told."""
    bot = access_bot
    asked_at = clock()
    bot.command("access payments --role view --for 30m --reason 'look at logs'")
    approval = wait_for(lambda: bot.approvals(), what="the approval message")[0]
    request_id = int(buttons(approval)["approve"])
    assert bot.request(request_id).expires_at == asked_at + timedelta(hours=1)

    clock.advance(3600 + 1)
    wait_for(lambda: bot.request(request_id).status == "expired", what="the pending TTL")
    updated = wait_for(
        lambda: [u for u in bot.updates_of(approval) if "Expired: nobody decided in time" in u],
        what="the approval message to say it expired",
    )[-1]
    assert '"type": "actions"' not in updated  # the buttons are gone
    wait_for(
        lambda: [
            c
            for c in bot.posts_to("C0DEV")
            if c.args.get("thread_ts")
            and "<@U0DEV1>" in c.args.get("text", "")
            and "Expired" in c.args.get("text", "")
        ],
        what="the requester to be told in the thread",
    )
    assert [e.event for e in bot.audit(request_id)][-1] == "expired"

    # approving it now changes nothing: no grant, no RoleBinding
    ephemerals = len(bot.fake.calls_of("chat.postEphemeral"))
    bot.click(approval, "approve", user="U0SRE1")
    refusal = wait_for(
        lambda: bot.fake.calls_of("chat.postEphemeral")[ephemerals:], what="the refusal"
    )[0]
    assert "already expired" in refusal.args["text"]
    assert bot.binding(request_id, "payments") is None
    with Session(bot.db) as session:
        assert session.get(Grant, request_id) is None


def test_approvers_see_every_grant_and_the_requests_waiting_on_them(
    access_bot: AccessBot, clock: Clock
) -> None:
    bot = access_bot
    # someone with no identity in the policy gets a clear answer, and nobody is asked
    nobody = bot.command("access payments", user="U0SRE1")
    [why] = wait_for(lambda: bot.answers(nobody), what="the refusal")
    assert "you have no identity for Kubernetes in the policy's identities" in why
    assert bot.approvals() == []

    alice = bot.grant_access("access payments --role view --for 1h")
    bob = bot.grant_access("access checkout --for 1h", user="U0DEV2")

    # /ops grants: a grantee sees their own; an approver sees every active grant
    mine = bot.command("grants", user="U0DEV2")
    [answer] = wait_for(lambda: bot.answers(mine), what="bob's /ops grants")
    assert answer.startswith("Your active grants:")
    assert f"*#{bob}*" in answer
    assert f"*#{alice}*" not in answer
    every = bot.command("grants", user="U0SRE2")
    [answer] = wait_for(lambda: bot.answers(every), what="the approver's /ops grants")
    assert answer.startswith("Active grants:")
    assert f"*#{alice}* <@U0DEV1>" in answer
    assert f"*#{bob}* <@U0DEV2>" in answer

    # a request waiting for approval: on the requester's Home as pending, on an approver's Home
    # with Approve / Deny carrying its ID
    before = len(bot.approvals())
    bot.command("access checkout --for 30m --reason 'second look'")
    pending = wait_for(lambda: bot.approvals()[before:], what="the approval message")[0]
    pending_id = int(buttons(pending)["approve"])

    def home_of(user: str) -> dict[str, Any]:
        published = len(bot.fake.calls_of("views.publish"))
        bot.event(app_home_opened(user))
        call = wait_for(
            lambda: [
                c
                for c in bot.fake.calls_of("views.publish")[published:]
                if c.args["user_id"] == user
            ],
            what=f"{user}'s App Home",
        )[-1]
        view = call.args["view"]
        return json.loads(view) if isinstance(view, str) else dict(view)

    def decision_buttons(view: dict[str, Any]) -> list[tuple[str, str]]:
        return [
            (e["action_id"], e["value"])
            for b in view["blocks"]
            if b.get("type") == "actions" and b.get("block_id", "").startswith("home_decision")
            for e in b["elements"]
        ]

    approver_home = home_of("U0SRE1")
    assert "Waiting on your approval" in json.dumps(approver_home)
    assert decision_buttons(approver_home) == [
        ("approve", str(pending_id)),
        ("deny", str(pending_id)),
    ]
    requester_home = home_of("U0DEV1")
    text = json.dumps(requester_home)
    assert "Your pending requests" in text
    assert f"#{pending_id}" in text
    assert f"*#{alice}*" in text  # only their own grants
    assert f"*#{bob}*" not in text
    assert decision_buttons(requester_home) == []  # nobody approves their own request


def test_drift_found_at_start_is_removed_and_reported_to_the_audit_channel(
    settings: Settings, fake_slack: slack.FakeSlack, cluster: FakeKubernetes, db: Engine
) -> None:
    """A RoleBinding labelled managed-by opsgate that no grant accounts for (made while the bot
    was down, say) is deleted by the drift check the start runs, and reported."""
    cluster.add(
        role_binding_body(
            grant_id=9999,
            namespace="checkout",
            cluster_role="edit",
            kubernetes_user="mallory@example.com",
            expires_at=datetime.now(UTC) + timedelta(days=30),
        )
    )
    with serve_access_bot(settings, fake_slack, cluster, db, sweep_interval=3600) as bot:
        wait_for(lambda: bot.binding(9999, "checkout") is None, what="the drift check")
        [report] = wait_for(
            lambda: [c for c in bot.posts_to("C0AUDIT") if "Drift" in c.args.get("text", "")],
            what="the drift report in the audit channel",
        )
        assert "checkout/opsgate-grant-9999" in report.args["text"]
        [event] = [e for e in bot.audit() if e.event == "drift_removed"]
        assert event.request_id is None
        assert event.detail["subjects"][0]["name"] == "mallory@example.com"
