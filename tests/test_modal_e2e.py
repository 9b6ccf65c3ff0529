"""End to end: the request form (a Slack modal), through signed requests into the running bot and
the fakes over real HTTP: /ops and the shortcuts open it, its searches read the policy and the
cluster, a bad submission is answered on the field, a good one files the request."""

from __future__ import annotations

import json

from actions.registry import KINDS
from approvals.models import Request
from bot.listeners.modal import message_text, prefill_from
from bot.settings import Settings
from tests.fakes import slack
from tests.fakes.kube import FakeKubernetes
from tests.helpers.bot import RunningBot, wait_for
from tests.helpers.modal import (
    blocks_by_id,
    choose,
    chosen,
    context_text,
    form_state,
    interact,
    open_with_command,
    opened,
    pick,
    search,
    submit_form,
    typed,
)
from tests.helpers.slack_flow import responses, rows, wait_approval_message


def test_ops_without_arguments_opens_the_form_and_an_action_brings_its_fields(
    bot: RunningBot,
) -> None:
    view = open_with_command(bot)
    assert view["callback_id"] == "ops_request"
    kinds = blocks_by_id(view)["kind"]["element"]
    assert [o["value"] for o in kinds["options"]] == [spec.name for spec in KINDS]
    assert "restart" in [spec.name for spec in KINDS]
    assert json.loads(view["private_metadata"])["channel_id"] == "C0DEV"

    scale = blocks_by_id(pick(bot, view, "scale"))
    assert scale["arg_workload"]["element"]["type"] == "external_select"
    assert scale["arg_namespace"]["element"]["type"] == "external_select"
    replicas = scale["arg_replicas"]["element"]
    assert replicas["type"] == "number_input"
    assert replicas["is_decimal_allowed"] is False
    assert int(replicas["min_value"]) == 0
    assert scale["reason"]["optional"] is True


def test_the_global_shortcut_opens_the_same_form(bot: RunningBot) -> None:
    payload = slack.shortcut_payload("ops_request_shortcut", user_id="U0DEV1")
    interact(bot, payload)
    view = opened(bot, payload["trigger_id"])
    assert view["callback_id"] == "ops_request"
    assert "kind" in blocks_by_id(view)


def test_searches_list_the_policys_namespaces_and_the_clusters_workloads(
    bot: RunningBot, kube: FakeKubernetes
) -> None:
    view = pick(bot, open_with_command(bot), "restart")
    assert search(bot, view, "arg_namespace", "modal_namespace", "") == [
        "payments",
        "checkout",
        "sandbox",
    ]
    # a namespace the policy places by a glob (staging-*) is offered once it is typed
    assert search(bot, view, "arg_namespace", "modal_namespace", "staging-web") == ["staging-web"]
    assert search(bot, view, "arg_namespace", "modal_namespace", "nowhere") == []

    in_payments = {"arg_namespace": {"modal_namespace": chosen("payments")}}
    found = search(bot, view, "arg_workload", "modal_workload", "", state=in_payments)
    assert found == ["deployment/payments-api"]
    lists = kube.requests_matching(method="GET")
    assert any(r.path == "/apis/apps/v1/namespaces/payments/deployments" for r in lists)
    assert search(bot, view, "arg_workload", "modal_workload", "cart", state=in_payments) == []
    # no namespace picked yet: nothing to search
    assert search(bot, view, "arg_workload", "modal_workload", "") == []


def test_a_bad_submission_is_answered_on_its_fields_and_files_nothing(
    bot: RunningBot, settings: Settings
) -> None:
    view = pick(bot, open_with_command(bot), "scale")
    answer = submit_form(
        bot,
        view,
        form_state(
            "scale",
            workload=chosen("deployment/a/b"),
            replicas=typed("-3", "number_input"),
            namespace=chosen("payments"),
        ),
    )
    assert answer["response_action"] == "errors"
    assert set(answer["errors"]) == {"arg_workload", "arg_replicas"}
    assert "not a workload" in answer["errors"]["arg_workload"]

    unplaced = submit_form(
        bot,
        view,
        form_state(
            "scale", workload=chosen("deployment/web"), replicas=typed("2"), namespace=chosen("x")
        ),
    )
    assert unplaced["response_action"] == "errors"
    assert "in no environment" in unplaced["errors"]["arg_namespace"]

    no_action = submit_form(bot, view, {})
    assert no_action == {"response_action": "errors", "errors": {"kind": "Pick an action."}}
    assert rows(settings, Request) == []


def test_a_good_submission_files_the_request_as_the_slash_command_does(
    bot: RunningBot, settings: Settings
) -> None:
    view = pick(bot, open_with_command(bot), "restart")
    values = form_state(
        "restart",
        workload=chosen("deployment/payments-api"),
        namespace=chosen("payments"),
        reason=typed("-5% error budget & OOM"),
    )
    assert submit_form(bot, view, values) == {"response_action": "clear"}

    approval = wait_approval_message(bot)
    assert "deployment/payments-api" in json.dumps(approval.args["blocks"])
    [request] = rows(settings, Request)
    assert (request.action, request.namespace) == ("restart", "payments")
    assert request.reason == "-5% error budget & OOM"
    assert request.requester_id == "U0DEV1"
    # the requester is told in the channel the form was opened from
    wait_for(
        lambda: [
            c for c in bot.fake_slack.calls_of("chat.postMessage") if c.args["channel"] == "C0DEV"
        ]
    )
    # the same submission delivered again files nothing twice
    assert submit_form(bot, view, values) == {"response_action": "clear"}
    assert len(rows(settings, Request)) == 1


def test_the_message_shortcut_prefills_the_form_and_links_the_request(
    bot: RunningBot, settings: Settings
) -> None:
    message = {
        "type": "message",
        "ts": "1765000000.000200",
        "user": "U0ALERTS",
        "text": "FIRING: 5xx rate 12% on `deployment/payments-api` namespace payments",
    }
    payload = slack.message_action_payload(
        "ops_from_message",
        user_id="U0SRE2",
        channel_id="C0INC",
        channel_name="inc-payments",
        message=message,
        response_url=bot.fake_slack.response_url(),
    )
    interact(bot, payload)
    view = opened(bot, payload["trigger_id"])
    fields = blocks_by_id(view)
    assert fields["kind"]["element"]["initial_option"]["value"] == "restart"
    assert fields["arg_workload"]["element"]["initial_option"]["value"] == "deployment/payments-api"
    assert fields["arg_namespace"]["element"]["initial_option"]["value"] == "payments"
    # then, on the same worker, what the gate would decide (an incident channel: the same rule)
    wait_for(lambda: bot.fake_slack.calls_of("views.update"), what="the decision")
    decided = slack.view_of(bot.fake_slack, view["id"])
    assert "Needs 1 approval" in context_text(decided, "decision")

    values = form_state(
        "restart",
        workload=chosen("deployment/payments-api"),
        namespace=chosen("payments"),
        reason=typed("5xx after deploy"),
    )
    assert submit_form(bot, view, values, user="U0SRE2") == {"response_action": "clear"}
    wait_approval_message(bot)
    [request] = rows(settings, Request)
    link = "https://test.slack.com/archives/C0INC/p1765000000000200"
    assert request.reason == f"5xx after deploy (from {link})"
    assert request.origin_channel_id == "C0INC"


def test_the_global_shortcut_tells_the_requester_in_a_direct_message(
    bot: RunningBot, settings: Settings
) -> None:
    payload = slack.shortcut_payload("ops_request_shortcut", user_id="U0DEV1")
    interact(bot, payload)
    view = opened(bot, payload["trigger_id"])
    values = form_state(
        "restart", workload=chosen("deployment/payments-api"), namespace=chosen("payments")
    )
    assert submit_form(bot, view, values) == {"response_action": "clear"}
    wait_approval_message(bot)
    wait_for(
        lambda: [
            c for c in bot.fake_slack.calls_of("chat.postMessage") if c.args["channel"] == "U0DEV1"
        ],
        what="the requester's direct message",
    )


def test_the_form_shows_the_decision_and_keeps_what_was_filled_in(
    bot: RunningBot, settings: Settings
) -> None:
    view = pick(bot, open_with_command(bot), "restart")
    assert "Pick the namespace" in context_text(view, "decision")
    state = form_state(
        "restart", workload=chosen("deployment/payments-api"), namespace=chosen("payments")
    )
    shown = choose(bot, view, "arg_namespace", "modal_namespace", "payments", state)
    decision = context_text(shown, "decision")
    assert "Needs 1 approval" in decision
    assert "sre" in decision
    assert "payments:1.4.2" in decision  # the cluster's preview
    fields = blocks_by_id(shown)
    assert fields["arg_workload"]["element"]["initial_option"]["value"] == (
        "deployment/payments-api"
    )
    # a staging restart is approved by the policy
    staging = form_state(
        "restart", workload=chosen("deployment/web"), namespace=chosen("staging-web")
    )
    auto = choose(bot, view, "arg_namespace", "modal_namespace", "staging-web", staging)
    assert "Approved by the policy" in context_text(auto, "decision")
    # picking rollback keeps the workload (as its Deployment) and the namespace
    rollback = choose(bot, view, "kind", "modal_kind", "rollback", state)
    kept = blocks_by_id(rollback)
    assert kept["arg_deployment"]["element"]["initial_option"]["value"] == "deployment/payments-api"
    assert kept["arg_namespace"]["element"]["initial_option"]["value"] == "payments"
    assert rows(settings, Request) == []  # explaining files nothing


def test_a_failing_views_open_is_answered_to_the_person(bot: RunningBot) -> None:
    bot.fake_slack.fail("views.open", "expired_trigger_id")
    response_url = bot.fake_slack.response_url()
    body = slack.slash_command_body("", user_id="U0DEV1", response_url=response_url)
    assert bot.post(body).status_code == 200
    answer = wait_for(lambda: responses(bot.fake_slack, response_url), what="the answer")
    assert answer == [
        ":warning: Slack did not open the request form (expired_trigger_id). Try again, or type"
        " the command (`/ops help` lists them)."
    ]


def test_an_alerts_text_names_the_workload_and_namespace() -> None:
    assert prefill_from("deploy/api is down -n shop").values == {
        "workload": "deployment/api",
        "deployment": "deployment/api",
        "namespace": "shop",
    }
    assert prefill_from("sts/db lagging, namespace: data").values["namespace"] == "data"
    assert prefill_from("all quiet").values == {}


def test_an_alert_posted_as_attachments_or_blocks_is_read_too() -> None:
    alert = {
        "text": "",
        "attachments": [{"title": "HighErrorRate", "text": "sts/db-main in -n data"}],
        "blocks": [{"type": "section", "text": {"type": "mrkdwn", "text": "see runbook"}}],
    }
    assert prefill_from(message_text(alert)).values == {
        "workload": "statefulset/db-main",
        "deployment": "statefulset/db-main",
        "namespace": "data",
    }


def test_a_workload_search_the_cluster_cannot_answer_in_time_offers_nothing(
    bot: RunningBot, kube: FakeKubernetes
) -> None:
    view = pick(bot, open_with_command(bot), "restart")
    in_payments = {"arg_namespace": {"modal_namespace": chosen("payments")}}
    kube.hang_next(5, method="GET", path_contains="/deployments")
    assert search(bot, view, "arg_workload", "modal_workload", "", state=in_payments) == []
    kube.fail_next(method="GET", path_contains="/statefulsets", status=403, reason="Forbidden")
    assert search(bot, view, "arg_workload", "modal_workload", "", state=in_payments) == []
    # the next search, the cluster answering, lists them again
    found = search(bot, view, "arg_workload", "modal_workload", "", state=in_payments)
    assert found == ["deployment/payments-api"]


def test_a_request_the_gate_refuses_is_answered_where_the_form_was_opened(
    bot: RunningBot, settings: Settings
) -> None:
    trigger = slack.new_trigger_id()
    response_url = bot.fake_slack.response_url()
    body = slack.slash_command_body(
        "", user_id="U0DEV1", response_url=response_url, trigger_id=trigger
    )
    assert bot.post(body).status_code == 200
    view = opened(bot, trigger)
    values = form_state(
        "restart", workload=chosen("deployment/nothere"), namespace=chosen("payments")
    )
    assert submit_form(bot, view, values) == {"response_action": "clear"}
    answer = wait_for(lambda: responses(bot.fake_slack, response_url), what="the refusal")
    assert answer == [":warning: no Deployment named 'nothere' in namespace payments"]
    assert rows(settings, Request) == []  # refused before anyone is asked, as /ops restart is
