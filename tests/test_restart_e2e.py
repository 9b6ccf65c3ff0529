"""End to end: signed Slack requests into the bot on a real socket, the fakes over real HTTP."""

from __future__ import annotations

import json
import threading
import time

import pytest

from approvals.models import AuditEvent, Request
from bot.settings import Settings
from tests.fakes import slack
from tests.fakes.kube import FakeKubernetes
from tests.helpers.bot import RunningBot, wait_for
from tests.helpers.slack_flow import (
    RESTARTED_AT,
    action_ids,
    annotations,
    dry_runs,
    ephemerals_to,
    patches,
    request_status,
    responses,
    rows,
    submit,
    wait_approval_message,
)


def test_restart_through_approval_end_to_end(
    bot: RunningBot, kube: FakeKubernetes, settings: Settings
) -> None:
    answer, _ = bot.command('restart payments-api -n payments --reason "OOM after 1.4.2"')
    assert answer.status_code == 200
    assert "Checking" in answer.json()["text"]
    assert answer.json()["response_type"] == "ephemeral"

    approval = wait_approval_message(bot)
    assert approval.args["channel"] == "C0APPROVALS"
    assert action_ids(approval.args["blocks"]) == ["approve", "deny"]
    buttons = next(b for b in approval.args["blocks"] if b["type"] == "actions")
    assert {e["value"] for e in buttons["elements"]} == {"1"}
    text = json.dumps(approval.args["blocks"])
    for fact in ("deployment/payments-api", "payments", "3/3", "payments:1.4.2", "OOM after 1.4.2"):
        assert fact in text
    announcement = wait_for(
        lambda: [
            c for c in bot.fake_slack.calls_of("chat.postMessage") if c.args["channel"] == "C0DEV"
        ]
    )[0]
    assert "<@U0DEV1>" in announcement.args["text"]
    # previewed with the same patch as a server-side dry run; nothing stored yet
    [dry] = dry_runs(kube)
    assert dry.path == "/apis/apps/v1/namespaces/payments/deployments/payments-api"
    assert dry.content_type == "application/strategic-merge-patch+json"
    assert list(dry.body["spec"]["template"]["metadata"]["annotations"]) == [RESTARTED_AT]
    assert RESTARTED_AT not in annotations(kube, "payments", "payments-api")
    assert patches(kube) == []

    assert bot.click("approve", "1", user="U0SRE1").status_code == 200
    restarted = wait_for(
        lambda: annotations(kube, "payments", "payments-api").get(RESTARTED_AT),
        what="the restartedAt annotation",
    )
    assert restarted.endswith("Z")
    wait_for(lambda: request_status(settings) == "succeeded", what="request to succeed")

    [patch] = patches(kube)
    assert patch.content_type == "application/strategic-merge-patch+json"
    assert patch.body == {
        "spec": {"template": {"metadata": {"annotations": {RESTARTED_AT: restarted}}}}
    }

    final = wait_for(
        lambda: [c for c in bot.fake_slack.calls_of("chat.update") if "succeeded" in c.args["text"]]
    )[-1]
    assert final.args["ts"] == approval.response["ts"]
    assert action_ids(final.args["blocks"]) == []
    assert "Approved by <@U0SRE1>" in json.dumps(final.args["blocks"])
    # the requester's one message is updated in place; success needs no reply from them
    done = wait_for(
        lambda: [
            c
            for c in bot.fake_slack.calls_of("chat.update")
            if c.args["ts"] == announcement.response["ts"] and "Done" in c.args["text"]
        ]
    )
    assert "deployment/payments-api" in done[-1].args["text"]
    assert wait_for(
        lambda: [
            c for c in bot.fake_slack.calls_of("chat.postMessage") if c.args["channel"] == "C0AUDIT"
        ]
    )

    events = rows(settings, AuditEvent)
    assert [e.event for e in events] == [
        "submitted",
        "approval_added",
        "approved",
        "executing",
        "succeeded",
    ]
    digest = rows(settings, Request)[0].policy_sha256
    assert len(digest) == 64
    for event in events:
        assert event.request_id == 1
        assert event.policy_sha256 == digest
        assert event.rule is not None
        assert event.rule.startswith("rules[2]")
        assert event.created_at.tzinfo is not None
    assert [e.actor_id for e in events] == ["U0DEV1", "U0SRE1", "U0SRE1", "opsgate", "opsgate"]
    assert events[-1].detail["restartedAt"] == restarted


def test_auto_approved_restart_in_staging_executes_at_once(
    bot: RunningBot, kube: FakeKubernetes, settings: Settings
) -> None:
    submit(bot, "restart deploy/web -n staging-web")
    wait_for(lambda: annotations(kube, "staging-web", "web").get(RESTARTED_AT))
    wait_for(lambda: request_status(settings) == "succeeded")
    assert not [c for c in bot.fake_slack.calls_of("chat.postMessage") if c.args.get("blocks")]
    events = [e.event for e in rows(settings, AuditEvent)]
    assert events == ["submitted", "auto_approved", "executing", "succeeded"]


def test_deny_changes_nothing_and_tells_the_requester(
    bot: RunningBot, kube: FakeKubernetes, settings: Settings
) -> None:
    submit(bot, "restart payments-api -n payments")
    wait_approval_message(bot)
    bot.click("deny", "1", user="U0SRE2")
    wait_for(lambda: request_status(settings) == "denied")
    update = wait_for(
        lambda: [c for c in bot.fake_slack.calls_of("chat.update") if c.args.get("blocks")]
    )[-1]
    assert action_ids(update.args["blocks"]) == []
    assert "Denied by <@U0SRE2>" in json.dumps(update.args["blocks"])
    wait_for(
        lambda: [
            c
            for c in bot.fake_slack.calls_of("chat.postMessage")
            if c.args.get("thread_ts") and "Denied" in c.args["text"]
        ]
    )
    assert patches(kube) == []
    assert [e.event for e in rows(settings, AuditEvent)] == ["submitted", "denied"]


def test_two_distinct_approvals_are_needed_where_the_rule_says_so(
    bot: RunningBot, kube: FakeKubernetes, settings: Settings
) -> None:
    submit(bot, "restart cart -n checkout")
    wait_approval_message(bot)
    bot.click("approve", "1", user="U0SRE1")
    wait_for(
        lambda: "(1/2)" in json.dumps([c.args for c in bot.fake_slack.calls_of("chat.update")])
    )
    # the same person again does not count twice
    bot.click("approve", "1", user="U0SRE1")
    wait_for(lambda: ephemerals_to(bot.fake_slack, "U0SRE1"))
    assert "already approved" in ephemerals_to(bot.fake_slack, "U0SRE1")[0]
    assert request_status(settings) == "pending"
    assert patches(kube) == []
    bot.click("approve", "1", user="U0SRE2")
    wait_for(lambda: request_status(settings) == "succeeded")
    assert len(patches(kube)) == 1
    assert RESTARTED_AT in annotations(kube, "checkout", "cart")


def test_double_click_and_slack_retry_patch_exactly_once(
    bot: RunningBot, kube: FakeKubernetes, settings: Settings
) -> None:
    submit(bot, "restart payments-api -n payments")
    approval = wait_approval_message(bot)
    body = slack.block_action_body(
        "approve",
        "1",
        user_id="U0SRE1",
        channel_id="C0APPROVALS",
        message_ts=approval.response["ts"],
        response_url=bot.fake_slack.response_url(),
    )
    barrier = threading.Barrier(3)
    codes: list[int] = []

    def click(retry: int | None) -> None:
        headers = slack.signed_headers(body)
        if retry is not None:
            headers |= {"X-Slack-Retry-Num": str(retry), "X-Slack-Retry-Reason": "http_timeout"}
        barrier.wait()
        codes.append(bot.post(body, headers).status_code)

    clicks = [threading.Thread(target=click, args=(r,)) for r in (None, None, 1)]
    for t in clicks:
        t.start()
    for t in clicks:
        t.join()
    assert codes == [200, 200, 200]
    wait_for(lambda: request_status(settings) == "succeeded")
    wait_for(lambda: len(ephemerals_to(bot.fake_slack, "U0SRE1")) == 2, what="two refusals")
    assert len(patches(kube)) == 1
    events = [e.event for e in rows(settings, AuditEvent)]
    assert events.count("executing") == 1
    assert events.count("approval_added") == 1


def test_two_approvers_at_once_execute_once(
    bot: RunningBot, kube: FakeKubernetes, settings: Settings
) -> None:
    submit(bot, "restart payments-api -n payments")
    approval = wait_approval_message(bot)
    barrier = threading.Barrier(2)

    def click(user: str) -> None:
        body = slack.block_action_body(
            "approve",
            "1",
            user_id=user,
            channel_id="C0APPROVALS",
            message_ts=approval.response["ts"],
            response_url=bot.fake_slack.response_url(),
        )
        barrier.wait()
        bot.post(body)

    threads = [threading.Thread(target=click, args=(u,)) for u in ("U0SRE1", "U0SRE2")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wait_for(lambda: request_status(settings) == "succeeded")
    assert len(patches(kube)) == 1
    assert [e.event for e in rows(settings, AuditEvent)].count("approved") == 1


# --- errors answer the person alone --------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("reboot payments-api -n payments", "Unknown command `reboot`"),
        ("restart payments-api", "the following arguments are required: -n/--namespace"),
        ("restart -n payments", "the following arguments are required: workload"),
        ("restart pods/x -n payments", "'pods' is not a workload kind"),
        ('restart x -n payments --reason "unterminated', "Cannot read the command"),
    ],
)
def test_bad_syntax_is_answered_in_the_ack_with_usage(
    bot: RunningBot, text: str, expected: str
) -> None:
    answer, _ = bot.command(text)
    assert answer.status_code == 200
    body = answer.json()
    assert body["response_type"] == "ephemeral"
    assert expected in body["text"]
    assert "Usage" in body["text"]
    assert bot.fake_slack.calls_of("chat.postMessage") == []


def test_help(bot: RunningBot) -> None:
    answer, _ = bot.command("help")
    assert "/ops restart <workload> -n <namespace>" in answer.json()["text"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("restart x -n nowhere", "namespace 'nowhere' is in no environment"),
        ("restart x -n payments --env moon", "unknown environment 'moon'"),
        ("restart x -n payments --env staging", "is not in environment 'staging'"),
        ("restart ghost -n payments", "no Deployment, StatefulSet or DaemonSet named 'ghost'"),
        (
            "restart statefulset/payments-api -n payments",
            "no StatefulSet named 'payments-api' in namespace payments",
        ),
        ("restart x -n sandbox", "no policy rule allows restart in sandbox"),
    ],
)
def test_rejections_answer_the_requester_alone_and_are_audited(
    bot: RunningBot, settings: Settings, text: str, expected: str
) -> None:
    response_url = submit(bot, text)
    answer = wait_for(lambda: responses(bot.fake_slack, response_url))
    assert any(expected in a for a in answer), answer
    assert not [c for c in bot.fake_slack.calls_of("chat.postMessage") if c.args.get("blocks")]
    assert rows(settings, Request) == []
    [event] = rows(settings, AuditEvent)
    assert event.event == "rejected"
    assert expected in event.detail["reason"]
    assert event.actor_id == "U0DEV1"


def test_a_restart_the_api_server_refuses_in_dry_run_is_answered_at_once(
    bot: RunningBot, kube: FakeKubernetes, settings: Settings
) -> None:
    message = (
        'admission webhook "freeze.example.com" denied the request: '
        "payments is in a change freeze until Monday"
    )
    kube.fail_next(
        status=422,
        method="PATCH",
        path_contains="/deployments/payments-api",
        reason="Invalid",
        message=message,
    )
    response_url = submit(bot, "restart payments-api -n payments")
    told = "\n".join(wait_for(lambda: responses(bot.fake_slack, response_url)))
    assert "change freeze until Monday" in told
    [refused] = kube.requests_matching(method="PATCH")
    assert refused.query.get("dryRun") == "All"
    assert not [c for c in bot.fake_slack.calls_of("chat.postMessage") if c.args.get("blocks")]
    assert rows(settings, Request) == []
    [event] = rows(settings, AuditEvent)
    assert event.event == "rejected"
    assert "change freeze until Monday" in event.detail["reason"]
    assert RESTARTED_AT not in annotations(kube, "payments", "payments-api")


def test_clicker_who_may_not_approve_is_told_and_nothing_changes(
    bot: RunningBot, kube: FakeKubernetes, settings: Settings
) -> None:
    submit(bot, "restart payments-api -n payments")
    wait_approval_message(bot)
    bot.click("approve", "1", user="U0SEC1")
    [told] = wait_for(lambda: ephemerals_to(bot.fake_slack, "U0SEC1"))
    assert "Only members of sre may decide request #1" in told
    assert request_status(settings) == "pending"
    assert patches(kube) == []
    assert bot.fake_slack.calls_of("chat.update") == []


def test_requester_cannot_approve_their_own_request(
    bot: RunningBot, kube: FakeKubernetes, settings: Settings
) -> None:
    submit(bot, "restart payments-api -n payments", user="U0SRE1")
    wait_approval_message(bot)
    bot.click("approve", "1", user="U0SRE1")
    [told] = wait_for(lambda: ephemerals_to(bot.fake_slack, "U0SRE1"))
    assert "cannot approve your own request" in told
    assert request_status(settings) == "pending"
    assert patches(kube) == []


def test_click_on_a_decided_request_is_refused(
    bot: RunningBot, kube: FakeKubernetes, settings: Settings
) -> None:
    submit(bot, "restart payments-api -n payments")
    wait_approval_message(bot)
    bot.click("deny", "1", user="U0SRE1")
    wait_for(lambda: request_status(settings) == "denied")
    bot.click("approve", "1", user="U0SRE2")
    [told] = wait_for(lambda: ephemerals_to(bot.fake_slack, "U0SRE2"))
    assert "already denied by <@U0SRE1>" in told
    assert patches(kube) == []


def test_unknown_request_id_in_a_button(bot: RunningBot) -> None:
    submit(bot, "restart payments-api -n payments")
    wait_approval_message(bot)
    bot.click("approve", "999", user="U0SRE1")
    [told] = wait_for(lambda: ephemerals_to(bot.fake_slack, "U0SRE1"))
    assert "There is no request #999" in told


# --- failures of the backends -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("fault", "expected"),
    [
        ("500", "Kubernetes answered 500"),
        ("timeout", "timed out"),
        ("down", "connection refused"),
    ],
)
def test_kubernetes_failure_marks_the_request_failed_and_slack_shows_why(
    bot: RunningBot, kube: FakeKubernetes, settings: Settings, fault: str, expected: str
) -> None:
    submit(bot, "restart payments-api -n payments")
    wait_approval_message(bot)
    if fault == "500":
        kube.fail_next(status=500, method="PATCH", message="etcdserver: request timed out")
    elif fault == "timeout":
        kube.hang_next(5, method="PATCH")
    else:
        kube.stop()
    bot.click("approve", "1", user="U0SRE1")
    wait_for(lambda: request_status(settings) == "failed", what="the request to fail")
    [request] = rows(settings, Request)
    assert expected in (request.error or "")
    update = wait_for(
        lambda: [c for c in bot.fake_slack.calls_of("chat.update") if "failed" in c.args["text"]]
    )[-1]
    assert expected in json.dumps(update.args["blocks"])
    assert action_ids(update.args["blocks"]) == []
    events = rows(settings, AuditEvent)
    assert events[-1].event == "failed"
    assert expected in events[-1].detail["error"]


def test_approval_channel_unreachable_cancels_the_request(
    bot: RunningBot, kube: FakeKubernetes, settings: Settings
) -> None:
    bot.fake_slack.fail("chat.postMessage", "channel_not_found", channel="C0APPROVALS")
    response_url = submit(bot, "restart payments-api -n payments")
    [told] = wait_for(lambda: responses(bot.fake_slack, response_url))
    assert "could not be posted" in told
    assert "channel_not_found" in told
    assert request_status(settings) == "cancelled"
    assert patches(kube) == []
    # the announcement already went out in the requester's channel: it is updated to say so
    # (the requester was told in the answer above: no thread reply on top)
    [reply] = wait_for(
        lambda: [c.args["text"] for c in bot.fake_slack.calls_of("chat.update")],
        what="the requester's message to be updated",
    )
    assert not [c for c in bot.fake_slack.calls_of("chat.postMessage") if c.args.get("thread_ts")]
    assert "Cancelled" in reply
    assert "could not be posted" in reply


def test_requester_channel_the_bot_is_not_in_falls_back_to_response_url(
    bot: RunningBot, kube: FakeKubernetes, settings: Settings
) -> None:
    bot.fake_slack.fail("chat.postMessage", "not_in_channel", channel="C0PRIVATE", times=9)
    response_url = submit(bot, "restart payments-api -n payments", channel_id="C0PRIVATE")
    approval = wait_approval_message(bot)
    assert approval.args["channel"] == "C0APPROVALS"
    [announced] = wait_for(lambda: responses(bot.fake_slack, response_url))
    assert "Waiting for 1 approval(s) from sre" in announced
    bot.click("approve", "1", user="U0SRE1")
    wait_for(lambda: request_status(settings) == "succeeded")
    wait_for(lambda: any("Done" in t for t in responses(bot.fake_slack, response_url)))


# --- signatures ---------------------------------------------------------------------------------


def test_forged_signature_is_rejected(bot: RunningBot, kube: FakeKubernetes) -> None:
    body = slack.slash_command_body(
        "restart payments-api -n payments",
        user_id="U0DEV1",
        response_url=bot.fake_slack.response_url(),
    )
    answer = bot.post(body, slack.signed_headers(body, secret="not-the-secret"))
    assert answer.status_code == 401
    tampered = bot.post(body.replace("payments-api", "payments-xyz"), slack.signed_headers(body))
    assert tampered.status_code == 401
    assert bot.fake_slack.calls == []
    assert kube.requests_matching(path_contains="payments") == []


def test_stale_timestamp_is_rejected(bot: RunningBot) -> None:
    body = slack.slash_command_body(
        "restart payments-api -n payments",
        user_id="U0DEV1",
        response_url=bot.fake_slack.response_url(),
    )
    stale = slack.signed_headers(body, timestamp=int(time.time()) - 6 * 60)
    assert bot.post(body, stale).status_code == 401
    fresh = slack.signed_headers(body, timestamp=int(time.time()) - 4 * 60)
    assert bot.post(body, fresh).status_code == 200


def test_status_answers_the_requester_alone(bot: RunningBot, settings: Settings) -> None:
    response_url = submit(bot, "status")
    [none] = wait_for(lambda: responses(bot.fake_slack, response_url))
    assert "You have no requests yet" in none
    submit(bot, "restart payments-api -n payments")
    wait_approval_message(bot)
    response_url = submit(bot, "status 1", user="U0SRE2")
    [one] = wait_for(lambda: responses(bot.fake_slack, response_url))
    assert "Request #1: restart deployment/payments-api in payments (prod)" in one
    assert "Waiting for approval" in one
    response_url = submit(bot, "status")
    [mine] = wait_for(lambda: responses(bot.fake_slack, response_url))
    assert "Request #1" in mine
    response_url = submit(bot, "status 42")
    [missing] = wait_for(lambda: responses(bot.fake_slack, response_url))
    assert "There is no request #42" in missing


def test_slack_failing_after_approval_loses_nothing(
    bot: RunningBot, kube: FakeKubernetes, settings: Settings
) -> None:
    response_url = submit(bot, "restart payments-api -n payments")
    wait_approval_message(bot)
    bot.fake_slack.fail("chat.update", "internal_error", times=20)
    bot.fake_slack.fail("chat.postMessage", "fatal_error", times=20)
    bot.click("approve", "1", user="U0SRE1")
    wait_for(lambda: request_status(settings) == "succeeded")
    assert RESTARTED_AT in annotations(kube, "payments", "payments-api")
    # the thread is gone, so the requester hears it through the command's response_url
    wait_for(lambda: any("Done" in t for t in responses(bot.fake_slack, response_url)))
    assert [e.event for e in rows(settings, AuditEvent)][-1] == "succeeded"
