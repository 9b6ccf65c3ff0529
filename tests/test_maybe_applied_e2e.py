"""End to end (issue 10 item 5): a restart whose PATCH the API server answers after the client gave
up (``OPSGATE_KUBE_TIMEOUT=2``, the answer after 5 s) is read back and reported as what it is:
succeeded, failed and safe to retry, or ``unknown`` ("may have taken effect: check before
retrying") with the Deployment's current state, through Slack, the database and the audit trail.
"""

from __future__ import annotations

import json

from approvals.models import AuditEvent, Request
from bot.settings import Settings
from tests.fakes.kube import FakeKubernetes
from tests.helpers.bot import RunningBot, wait_for
from tests.helpers.slack_flow import (
    RESTARTED_AT,
    annotations,
    patches,
    request_status,
    rows,
    submit,
    wait_approval_message,
)

DEPLOYMENT = "/deployments/payments-api"


def thread_replies(bot: RunningBot, needle: str) -> list[str]:
    """Replies in the requester's thread that say ``needle`` (a result that needs them)."""
    return [
        c.args["text"]
        for c in bot.fake_slack.calls_of("chat.postMessage")
        if c.args.get("thread_ts") and needle in c.args["text"]
    ]


def shown_in_place(bot: RunningBot, needle: str) -> list[str]:
    """The requester's message (in C0DEV) as updated in place, where it says ``needle``."""
    return [
        c.args["text"]
        for c in bot.fake_slack.calls_of("chat.update")
        if c.args["channel"] == "C0DEV" and needle in c.args["text"]
    ]


def test_a_restart_answered_after_the_timeout_succeeds_once(
    bot: RunningBot, kube: FakeKubernetes, settings: Settings
) -> None:
    assert settings.kube_request_timeout == 2.0
    submit(bot, "restart payments-api -n payments")
    wait_approval_message(bot)
    kube.clear_requests()
    kube.answer_late_next(5, method="PATCH", path_contains=DEPLOYMENT)
    assert bot.click("approve", "1", user="U0SRE1").status_code == 200

    wait_for(lambda: request_status(settings) == "succeeded", what="the request to succeed")
    restarted = annotations(kube, "payments", "payments-api")[RESTARTED_AT]
    [patch] = patches(kube)  # read back, never sent twice
    assert patch.body["spec"]["template"]["metadata"]["annotations"][RESTARTED_AT] == restarted
    # a success needs nothing from the requester: their message says it in place (issue 13)
    [done] = wait_for(lambda: shown_in_place(bot, "Done"), what="the result, shown in place")
    assert thread_replies(bot, "Done") == []
    assert "<@U0DEV1>" in done
    assert f"restartedAt {restarted}" in done
    assert "read back, the change is there" in done
    assert "did not answer while" not in done  # not the failure it was reported as
    events = rows(settings, AuditEvent)
    assert [e.event for e in events][-2:] == ["executing", "succeeded"]
    assert events[-1].detail["restartedAt"] == restarted


def test_a_restart_the_server_did_not_apply_fails_and_says_it_is_safe_to_retry(
    bot: RunningBot, kube: FakeKubernetes, settings: Settings
) -> None:
    submit(bot, "restart payments-api -n payments")
    wait_approval_message(bot)
    kube.answer_late_next(5, method="PATCH", path_contains=DEPLOYMENT, apply=False)
    bot.click("approve", "1", user="U0SRE1")

    wait_for(lambda: request_status(settings) == "failed", what="the request to fail")
    assert RESTARTED_AT not in annotations(kube, "payments", "payments-api")
    [failed] = wait_for(lambda: thread_replies(bot, "Failed"), what="the failure in the thread")
    assert "nothing was changed; it is safe to ask again" in failed
    assert len(patches(kube)) == 1


def test_a_restart_that_cannot_be_read_back_is_unknown_and_says_check_before_retrying(
    bot: RunningBot, kube: FakeKubernetes, settings: Settings
) -> None:
    submit(bot, "restart payments-api -n payments")
    approval = wait_approval_message(bot)
    kube.answer_late_next(
        5,
        method="PATCH",
        path_contains=DEPLOYMENT,
        then=lambda: kube.fail_next(100, status=503, method="GET", path_contains=DEPLOYMENT),
    )
    bot.click("approve", "1", user="U0SRE1")

    wait_for(lambda: request_status(settings) == "unknown", what="the request to be unknown")
    assert annotations(kube, "payments", "payments-api").get(RESTARTED_AT)  # it did take effect
    [request] = rows(settings, Request)
    assert request.error is not None
    assert "reading deployment/payments-api in payments back failed too" in request.error
    assert request.error.endswith("may have taken effect; check before retrying")

    # the approval message, the requester's thread and the audit channel all say so
    final = wait_for(
        lambda: [c for c in bot.fake_slack.calls_of("chat.update") if "unknown" in c.args["text"]]
    )[-1]
    assert final.args["ts"] == approval.response["ts"]
    shown = json.dumps(final.args["blocks"])
    assert (
        ":warning: Approved by <@U0SRE1>. *May have taken effect: check before retrying*" in shown
    )
    [told] = wait_for(
        lambda: thread_replies(bot, "May have taken effect"), what="the requester to be told"
    )
    assert told.startswith("<@U0DEV1> Request #1: :warning:")
    wait_for(
        lambda: [
            c
            for c in bot.fake_slack.calls_of("chat.postMessage")
            if c.args["channel"] == "C0AUDIT" and "May have taken effect" in c.args["text"]
        ],
        what="the audit channel",
    )
    events = rows(settings, AuditEvent)
    assert [e.event for e in events][-2:] == ["executing", "unknown"]
    assert (events[-1].from_status, events[-1].to_status) == ("executing", "unknown")
    assert "Kubernetes answered 503" in events[-1].detail["read_back_error"]
    assert len(patches(kube)) == 1
