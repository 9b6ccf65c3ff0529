"""End to end for issue 3: scale, rollback and history through signed Slack requests.

The bot runs on a real socket against the fake Slack and TWO fake Kubernetes API servers: the
``prod`` context is the ``kube`` fixture's cluster, the ``staging`` context another one, so a
request that reaches the wrong cluster fails these tests. Revisions are made over HTTP the way
``kubectl set image`` makes them. The incident-channel path (slash command and ``app_mention``)
is in ``tests/test_incident_e2e.py``.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from approvals.models import AuditEvent, Request
from bot.mrkdwn import escape
from bot.settings import Settings
from tests.fakes.kube import (
    FakeKubernetes,
    daemonset,
    deployment,
    horizontal_pod_autoscaler,
    statefulset,
    write_kubeconfig,
)
from tests.helpers.bot import RunningBot, wait_for
from tests.helpers.scale_flow import (
    CHANGE_CAUSE,
    POLICY,
    ROLLED_OUT,
    announcement,
    approval_posts,
    blocks_text,
    final_reply,
    image_of,
    set_image,
    stored,
    writes,
)
from tests.helpers.slack_flow import request_status, responses, rows, submit, wait_approval_message

RESTARTED_AT = "kubectl.kubernetes.io/restartedAt"
REVISION = "deployment.kubernetes.io/revision"


# --- fixtures: the policy above, and a second cluster for the staging context ----------------


@pytest.fixture
def policy_text() -> str:
    return POLICY


@pytest.fixture
def staging_kube() -> Iterator[FakeKubernetes]:
    """The staging cluster: ``api`` in the namespace ``shared`` that both environments hold."""
    fake = FakeKubernetes(token="staging-token")
    fake.start()
    fake.add(deployment("api", "shared", replicas=2, image="api:2.0-rc1"))
    try:
        yield fake
    finally:
        fake.stop()


@pytest.fixture
def rollout_timeout(request: pytest.FixtureRequest) -> float | None:
    """Seconds the bot follows a rollout; None: conftest's (10). Parametrize it indirectly."""
    return getattr(request, "param", None)


@pytest.fixture
def settings(
    settings: Settings,
    tmp_path: Path,
    kube: FakeKubernetes,
    staging_kube: FakeKubernetes,
    rollout_timeout: float | None,
) -> Settings:
    """conftest's settings, with a kubeconfig whose two contexts are two different clusters."""
    kube.add(deployment("api", "shared", replicas=2, image="api:1.9"))
    kubeconfig = write_kubeconfig(
        tmp_path / "kubeconfig-two-clusters", {"prod": kube, "staging": staging_kube}
    )
    update: dict[str, Any] = {"kubeconfig": str(kubeconfig)}
    if rollout_timeout is not None:
        update["rollout_timeout"] = rollout_timeout
    return settings.model_copy(update=update)


# --- helpers ---------------------------------------------------------------------------------


@pytest.fixture
def revisions(kube: FakeKubernetes) -> None:
    """payments-api at revision 3: 1 = payments:1.4.2, 2 = payments:1.5.0, 3 = payments:1.6.0."""
    set_image(kube, "payments", "payments-api", "payments:1.5.0", cause="deploy 1.5.0")
    set_image(kube, "payments", "payments-api", "payments:1.6.0", cause="deploy 1.6.0")
    kube.clear_requests()


def dry_runs(kube: FakeKubernetes) -> list[Any]:
    return [r for r in kube.requests_matching(method="PATCH") if r.query.get("dryRun") == "All"]


def answer_to(bot: RunningBot, response_url: str) -> str:
    """What the requester was told alone, through the command's response_url."""
    return "\n".join(wait_for(lambda: responses(bot.fake_slack, response_url)))


# --- scale -----------------------------------------------------------------------------------


def test_scale_through_approval_patches_the_scale_subresource_and_reports_the_rollout(
    bot: RunningBot, kube: FakeKubernetes, staging_kube: FakeKubernetes, settings: Settings
) -> None:
    submit(bot, 'scale payments-api 5 -n payments --reason "checkout campaign"')
    approval = wait_approval_message(bot)
    assert approval.args["channel"] == "C0APPROVALS"
    text = blocks_text(approval)
    for fact in (
        "Scale *deployment/payments-api* in namespace *payments* (environment prod)",
        "*3 -&gt; 5* replicas",  # escaped for mrkdwn: Slack shows ->
        "Ready now: 3/3",
        "payments:1.4.2",
        "checkout campaign",
        "prod scale",
    ):
        assert fact in text, fact
    assert "HorizontalPodAutoscaler" not in text
    root = announcement(bot)
    # previewed with a server-side dry run, nothing stored yet
    [dry] = dry_runs(kube)
    assert dry.path == "/apis/apps/v1/namespaces/payments/deployments/payments-api/scale"
    assert stored(kube, "payments", "payments-api")["spec"]["replicas"] == 3
    assert writes(kube) == []

    bot.click("approve", "1", user="U0SRE1")
    wait_for(lambda: request_status(settings) == "succeeded", what="the request to succeed")

    [patch] = writes(kube)
    assert patch.path == "/apis/apps/v1/namespaces/payments/deployments/payments-api/scale"
    assert patch.content_type == "application/merge-patch+json"
    assert patch.body == {"spec": {"replicas": 5}}
    assert stored(kube, "payments", "payments-api")["spec"]["replicas"] == 5
    assert stored(kube, "payments", "payments-api")["status"]["readyReplicas"] == 5

    done = final_reply(bot, root, "Done")
    assert "<@U0DEV1>" in done
    assert "scaled deployment/payments-api in payments from 3 to 5" in done
    match = ROLLED_OUT.search(done)
    assert match is not None, done
    assert match.groups() == ("5", "5")
    update = wait_for(
        lambda: [c for c in bot.fake_slack.calls_of("chat.update") if "succeeded" in c.args["text"]]
    )[-1]
    assert update.args["ts"] == approval.response["ts"]
    assert ROLLED_OUT.search(blocks_text(update))

    events = rows(settings, AuditEvent)
    assert [e.event for e in events] == [
        "submitted",
        "approval_added",
        "approved",
        "executing",
        "succeeded",
    ]
    assert events[-1].detail["from_replicas"] == 3
    assert events[-1].detail["replicas"] == 5
    assert events[-1].detail["rollout"]["done"] is True
    assert events[-1].detail["rollout"]["ready"] == 5
    assert rows(settings, Request)[0].rule.startswith("rules[2] 'prod scale'")
    # the staging cluster was never asked anything
    assert staging_kube.requests_matching(path_contains="/namespaces/") == []


@pytest.mark.parametrize(
    ("replicas", "expected"),
    [
        ("11", "11 replicas is above this rule's max_replicas of 10"),
        ("1", "1 replicas is below this rule's min_replicas of 2"),
        ("0", "scaling to 0 needs a rule that allows it (limits.min_replicas: 0)"),
        ("10", "3 -> 10 replicas scales up by a factor of 3.33333, more than this rule's "),
        ("3", "deployment/payments-api already has 3 replicas; nothing to change"),
    ],
)
def test_limit_violations_are_refused_before_anyone_is_asked(
    bot: RunningBot, kube: FakeKubernetes, settings: Settings, replicas: str, expected: str
) -> None:
    response_url = submit(bot, f"scale payments-api {replicas} -n payments")
    told = answer_to(bot, response_url)
    assert escape(expected) in told  # as mrkdwn: Slack shows ->
    assert approval_posts(bot.fake_slack) == []
    assert kube.requests_matching(method="PATCH") == []  # not even a dry run
    assert stored(kube, "payments", "payments-api")["spec"]["replicas"] == 3
    assert rows(settings, Request) == []
    [event] = rows(settings, AuditEvent)
    assert event.event == "rejected"
    assert expected in event.detail["reason"]


def test_max_factor_allows_a_step_within_it(
    bot: RunningBot, kube: FakeKubernetes, settings: Settings
) -> None:
    submit(bot, "scale payments-api 9 -n payments")  # 3 -> 9 is a factor of exactly 3
    assert "*3 -&gt; 9* replicas" in blocks_text(wait_approval_message(bot))


def test_the_approval_message_warns_of_an_autoscaler_that_may_undo_the_scale(
    bot: RunningBot, kube: FakeKubernetes, settings: Settings
) -> None:
    kube.add(
        horizontal_pod_autoscaler(
            "payments-api-hpa",
            "payments",
            target_name="payments-api",
            min_replicas=3,
            max_replicas=8,
        )
    )
    kube.add(horizontal_pod_autoscaler("cart", "payments", target_name="cart"))
    submit(bot, "scale payments-api 6 -n payments")
    text = blocks_text(wait_approval_message(bot))
    assert (
        ":warning: HorizontalPodAutoscaler *payments-api-hpa* targets it (min 3, max 8) "
        "and may undo a manual scale"
    ) in text
    assert "*cart*" not in text  # another workload's autoscaler is not mentioned
    [request] = rows(settings, Request)
    assert request.preview["facts"]["autoscalers"] == [
        {"name": "payments-api-hpa", "min_replicas": 3, "max_replicas": 8}
    ]
    # a warning, not a refusal: the scale can still be approved and carried out
    bot.click("approve", "1", user="U0SRE2")
    wait_for(lambda: request_status(settings) == "succeeded")
    assert stored(kube, "payments", "payments-api")["spec"]["replicas"] == 6


def test_a_dry_run_the_api_server_refuses_is_answered_and_nothing_is_asked(
    bot: RunningBot, kube: FakeKubernetes, settings: Settings
) -> None:
    message = (
        'admission webhook "quota.example.com" denied the request: '
        "payments would exceed its CPU quota"
    )
    kube.fail_next(
        status=422, method="PATCH", path_contains="/scale", reason="Invalid", message=message
    )
    response_url = submit(bot, "scale payments-api 6 -n payments")
    told = answer_to(bot, response_url)
    assert "exceed its CPU quota" in told
    [refused] = kube.requests_matching(method="PATCH")
    assert refused.query.get("dryRun") == "All"
    assert approval_posts(bot.fake_slack) == []
    assert rows(settings, Request) == []
    assert [e.event for e in rows(settings, AuditEvent)] == ["rejected"]
    assert stored(kube, "payments", "payments-api")["spec"]["replicas"] == 3


def test_a_stalled_rollout_fails_the_request_and_says_the_change_was_applied(
    bot: RunningBot, kube: FakeKubernetes, settings: Settings
) -> None:
    kube.stall("payments", "payments-api", after_reads=2)
    submit(bot, "scale payments-api 5 -n payments")
    wait_approval_message(bot)
    root = announcement(bot)
    bot.click("approve", "1", user="U0SRE1")
    wait_for(lambda: request_status(settings) == "failed", what="the request to fail")

    [request] = rows(settings, Request)
    assert request.error.startswith(
        "scaled deployment/payments-api in payments from 3 to 5, but not progressing: "
        'ProgressDeadlineExceeded: ReplicaSet "payments-api-'
    )
    assert request.error.endswith('" has timed out progressing.')
    failed = final_reply(bot, root, "Failed")
    assert "<@U0DEV1>" in failed
    assert "not progressing: ProgressDeadlineExceeded" in failed
    update = wait_for(
        lambda: [c for c in bot.fake_slack.calls_of("chat.update") if "failed" in c.args["text"]]
    )[-1]
    assert "not progressing: ProgressDeadlineExceeded" in blocks_text(update)
    # the change itself was made, once
    assert len(writes(kube)) == 1
    assert stored(kube, "payments", "payments-api")["spec"]["replicas"] == 5
    failed_event = rows(settings, AuditEvent)[-1]
    assert failed_event.event == "failed"
    assert failed_event.detail["error"] == request.error
    assert failed_event.detail["from_replicas"] == 3
    assert failed_event.detail["replicas"] == 5
    assert failed_event.detail["rollout"]["done"] is False
    assert failed_event.detail["rollout"]["reason"] == "ProgressDeadlineExceeded"


@pytest.mark.parametrize("rollout_timeout", [0.3], indirect=True)
def test_a_rollout_still_under_way_at_the_timeout_fails_the_request(
    bot: RunningBot, kube: FakeKubernetes, settings: Settings
) -> None:
    kube.stall("payments", "payments-api", after_reads=1_000_000)  # never past its deadline
    submit(bot, "scale payments-api 4 -n payments")
    wait_approval_message(bot)
    root = announcement(bot)
    bot.click("approve", "1", user="U0SRE1")
    wait_for(lambda: request_status(settings) == "failed", what="the request to fail")
    failed = final_reply(bot, root, "Failed")
    assert "scaled deployment/payments-api in payments from 3 to 4, but not complete after" in (
        failed
    )
    assert 'Waiting for deployment "payments-api" rollout to finish' in failed
    assert rows(settings, AuditEvent)[-1].detail["rollout"]["reason"] == "Timeout"
    assert stored(kube, "payments", "payments-api")["spec"]["replicas"] == 4


# --- rollback --------------------------------------------------------------------------------


@pytest.mark.usefixtures("revisions")
def test_rollback_to_the_previous_revision_as_kubectl_rollout_undo(
    bot: RunningBot, kube: FakeKubernetes, staging_kube: FakeKubernetes, settings: Settings
) -> None:
    submit(bot, 'rollback payments-api -n payments --reason "5xx since 1.6.0"')
    approval = wait_approval_message(bot)
    assert approval.args["channel"] == "C0APPROVALS"
    text = blocks_text(approval)
    for fact in (
        "Roll back *deployment/payments-api* in namespace *payments* (environment prod)",
        "From: *revision 3* (current): `payments:1.6.0`",
        "change-cause: deploy 1.6.0",
        "To: *revision 2*: `payments:1.5.0`",
        "change-cause: deploy 1.5.0",
        "5xx since 1.6.0",
        "prod rollbacks",
    ):
        assert fact in text, fact
    # each revision with its age (kubectl's format) and change-cause
    assert re.search(
        r"From: \*revision 3\* \(current\): `payments:1\.6\.0`, \d+s old, "
        r"change-cause: deploy 1\.6\.0",
        text,
    ), text
    assert re.search(
        r"To: \*revision 2\*: `payments:1\.5\.0`, \d+s old, change-cause: deploy 1\.5\.0", text
    ), text
    assert "Incident channel" not in text
    root = announcement(bot)
    assert [r.content_type for r in dry_runs(kube)] == ["application/json-patch+json"]
    assert writes(kube) == []

    bot.click("approve", "1", user="U0SRE2")
    wait_for(lambda: request_status(settings) == "succeeded", what="the rollback to succeed")

    [patch] = writes(kube)
    assert patch.content_type == "application/json-patch+json"
    assert [(op["op"], op["path"]) for op in patch.body] == [
        ("replace", "/spec/template"),
        ("replace", "/metadata/annotations"),
    ]
    template = patch.body[0]["value"]
    assert template["spec"]["containers"][0]["image"] == "payments:1.5.0"
    assert "pod-template-hash" not in template["metadata"]["labels"]
    assert patch.body[1]["value"][CHANGE_CAUSE] == "deploy 1.5.0"
    assert image_of(kube, "payments", "payments-api") == "payments:1.5.0"
    # the controller reuses revision 2's ReplicaSet under the next number, as a real one does
    annotations = stored(kube, "payments", "payments-api")["metadata"]["annotations"]
    assert annotations[REVISION] == "4"

    done = final_reply(bot, root, "Done")
    assert (
        "rolled back deployment/payments-api in payments from revision 3 to revision 2 "
        "(payments:1.5.0)"
    ) in done
    match = ROLLED_OUT.search(done)
    assert match is not None, done
    assert match.groups() == ("3", "3")
    events = rows(settings, AuditEvent)
    assert events[-1].event == "succeeded"
    assert events[-1].detail["from_revision"] == 3
    assert events[-1].detail["to_revision"] == 2
    assert events[-1].detail["rollout"]["done"] is True
    assert staging_kube.requests_matching(path_contains="/namespaces/") == []

    # the history now reads as kubectl's would: 2 became 4
    response_url = submit(bot, "history payments-api -n payments")
    history = answer_to(bot, response_url)
    assert re.findall(r"\*revision (\d+)\*", history) == ["1", "3", "4"]
    assert "*revision 4* (current): `payments:1.5.0`" in history


@pytest.mark.usefixtures("revisions")
def test_rollback_to_a_given_revision(
    bot: RunningBot, kube: FakeKubernetes, settings: Settings
) -> None:
    submit(bot, "rollback deploy/payments-api --to-revision 1 -n payments")
    text = blocks_text(wait_approval_message(bot))
    assert "From: *revision 3* (current): `payments:1.6.0`" in text
    assert "To: *revision 1*: `payments:1.4.2`" in text
    root = announcement(bot)
    bot.click("approve", "1", user="U0SRE1")
    wait_for(lambda: request_status(settings) == "succeeded")
    assert image_of(kube, "payments", "payments-api") == "payments:1.4.2"
    assert len(writes(kube)) == 1
    done = final_reply(bot, root, "Done")
    assert "from revision 3 to revision 1 (payments:1.4.2)" in done
    assert ROLLED_OUT.search(done)


@pytest.mark.usefixtures("revisions")
@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "rollback payments-api --to-revision 9 -n payments",
            "revision 9 is not in the history of deployment/payments-api (revisions: 1, 2, 3)",
        ),
        (
            "rollback payments-api --to-revision 3 -n payments",
            "revision 3 is the current revision of deployment/payments-api",
        ),
        ("rollback cart -n checkout", "deployment/cart has no previous revision to roll back to"),
        ("rollback ghost -n payments", "no Deployment named 'ghost' in namespace payments"),
    ],
)
def test_rollback_refusals_answer_the_requester_alone(
    bot: RunningBot, kube: FakeKubernetes, settings: Settings, text: str, expected: str
) -> None:
    told = answer_to(bot, submit(bot, text))
    assert expected in told
    assert approval_posts(bot.fake_slack) == []
    assert writes(kube) == []
    assert rows(settings, Request) == []
    assert [e.event for e in rows(settings, AuditEvent)] == ["rejected"]


@pytest.mark.usefixtures("revisions")
def test_a_rollback_whose_dry_run_is_refused_is_not_asked_for(
    bot: RunningBot, kube: FakeKubernetes, settings: Settings
) -> None:
    kube.fail_next(
        status=422,
        method="PATCH",
        reason="Invalid",
        message='Deployment.apps "payments-api" is invalid: spec.template: image policy says no',
    )
    told = answer_to(bot, submit(bot, "rollback payments-api -n payments"))
    assert "image policy says no" in told
    assert approval_posts(bot.fake_slack) == []
    assert image_of(kube, "payments", "payments-api") == "payments:1.6.0"


@pytest.mark.usefixtures("revisions")
def test_a_stalled_rollback_reports_progress_deadline_exceeded(
    bot: RunningBot, kube: FakeKubernetes, settings: Settings
) -> None:
    kube.stall("payments", "payments-api", after_reads=1)
    submit(bot, "rollback payments-api -n payments")
    wait_approval_message(bot)
    root = announcement(bot)
    bot.click("approve", "1", user="U0SRE1")
    wait_for(lambda: request_status(settings) == "failed")
    failed = final_reply(bot, root, "Failed")
    assert "rolled back deployment/payments-api in payments from revision 3 to revision 2" in failed
    assert "but not progressing: ProgressDeadlineExceeded: ReplicaSet" in failed
    assert image_of(kube, "payments", "payments-api") == "payments:1.5.0"


# --- history ---------------------------------------------------------------------------------


@pytest.mark.usefixtures("revisions")
def test_history_lists_the_revisions_without_a_request(
    bot: RunningBot, kube: FakeKubernetes, settings: Settings
) -> None:
    answer, response_url = bot.command("history deployment/payments-api -n payments")
    assert answer.status_code == 200
    assert answer.json()["response_type"] == "ephemeral"
    [history] = wait_for(lambda: responses(bot.fake_slack, response_url))
    lines = history.splitlines()
    assert len(lines) == 3
    assert all(re.search(r"`, \d+s old, change-cause: ", line) for line in lines), lines
    assert lines[0].startswith("*revision 1*: `payments:1.4.2`, ")
    assert lines[0].endswith("change-cause: &lt;none&gt;")  # escaped: Slack shows <none>
    assert lines[1].startswith("*revision 2*: `payments:1.5.0`, ")
    assert lines[1].endswith("change-cause: deploy 1.5.0")
    assert lines[2].startswith("*revision 3* (current): `payments:1.6.0`, ")
    assert lines[2].endswith("change-cause: deploy 1.6.0")
    # a read: no request, no approval message, no announcement, no write, nothing audited
    assert rows(settings, Request) == []
    assert rows(settings, AuditEvent) == []
    assert bot.fake_slack.calls_of("chat.postMessage") == []
    assert kube.requests_matching(method="PATCH") == []


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("history ghost -n payments", "no Deployment named 'ghost' in namespace payments"),
        ("history payments-api -n nowhere", "namespace 'nowhere' is in no environment"),
    ],
)
def test_history_errors_answer_the_requester_alone(
    bot: RunningBot, text: str, expected: str
) -> None:
    told = answer_to(bot, submit(bot, text))
    assert expected in told
    assert bot.fake_slack.calls_of("chat.postMessage") == []


def test_history_refuses_what_has_no_rollout_history(bot: RunningBot) -> None:
    answer, _ = bot.command("history statefulset/db -n payments")
    body = answer.json()
    assert "only Deployments have a rollout history" in body["text"]
    assert (
        "Usage: `/ops history &lt;deployment&gt; -n &lt;namespace&gt; [--env ENV]`" in body["text"]
    )


# --- several environments: kube_context picks the cluster; a shared namespace needs --env ------


@pytest.mark.parametrize(
    "text", ["scale api 4 -n shared", "rollback api -n shared", "history api -n shared"]
)
def test_a_namespace_in_two_environments_needs_env(
    bot: RunningBot,
    kube: FakeKubernetes,
    staging_kube: FakeKubernetes,
    settings: Settings,
    text: str,
) -> None:
    kube.clear_requests()
    told = answer_to(bot, submit(bot, text))
    assert (
        "namespace 'shared' is in several environments (prod, staging); pick one with --env"
    ) in told
    assert approval_posts(bot.fake_slack) == []
    assert kube.requests_matching(path_contains="/namespaces/shared") == []
    assert staging_kube.requests_matching(path_contains="/namespaces/shared") == []


def test_env_staging_scales_the_staging_cluster_only(
    bot: RunningBot, kube: FakeKubernetes, staging_kube: FakeKubernetes, settings: Settings
) -> None:
    kube.clear_requests()
    submit(bot, "scale api 4 -n shared --env staging")
    wait_for(lambda: rows(settings, Request) and request_status(settings) == "succeeded")
    assert stored(staging_kube, "shared", "api")["spec"]["replicas"] == 4
    assert stored(kube, "shared", "api")["spec"]["replicas"] == 2
    assert kube.requests_matching(path_contains="/namespaces/shared") == []
    [request] = rows(settings, Request)
    assert request.environment == "staging"
    assert request.preview["kube_context"] == "staging"
    root = announcement(bot)
    assert "Approved automatically by policy" in str(root.args["text"])
    done = final_reply(bot, root, "Done")
    assert "scaled deployment/api in shared from 2 to 4" in done
    assert ROLLED_OUT.search(done)


def test_env_prod_scales_the_prod_cluster_only(
    bot: RunningBot, kube: FakeKubernetes, staging_kube: FakeKubernetes, settings: Settings
) -> None:
    submit(bot, "scale api 4 -n shared --env prod")
    text = blocks_text(wait_approval_message(bot))
    assert "(environment prod)" in text
    assert "api:1.9" in text  # read from the prod cluster
    bot.click("approve", "1", user="U0SRE1")
    wait_for(lambda: request_status(settings) == "succeeded")
    assert stored(kube, "shared", "api")["spec"]["replicas"] == 4
    assert stored(staging_kube, "shared", "api")["spec"]["replicas"] == 2
    assert staging_kube.requests_matching(path_contains="/namespaces/shared") == []


def test_history_with_env_reads_that_environments_cluster(
    bot: RunningBot, kube: FakeKubernetes, staging_kube: FakeKubernetes
) -> None:
    staging = answer_to(bot, submit(bot, "history api -n shared --env staging"))
    assert "*revision 1* (current): `api:2.0-rc1`" in staging
    prod = answer_to(bot, submit(bot, "history api -n shared --env prod"))
    assert "*revision 1* (current): `api:1.9`" in prod


def test_env_that_does_not_hold_the_namespace_is_refused(
    bot: RunningBot, kube: FakeKubernetes, settings: Settings
) -> None:
    told = answer_to(bot, submit(bot, "scale payments-api 4 -n payments --env staging"))
    assert "namespace 'payments' is not in environment 'staging'" in told
    assert kube.requests_matching(method="PATCH") == []


# --- restart of the other workload kinds, followed to the end ---------------------------------


@pytest.mark.parametrize(
    ("ref", "kind", "name", "ready"),
    [
        ("sts/ledger", "StatefulSet", "ledger", "2/2"),
        ("daemonset/agent", "DaemonSet", "agent", "3/3"),
        ("ledger", "StatefulSet", "ledger", "2/2"),  # found by name alone
    ],
)
def test_restart_of_a_stateful_set_or_daemon_set_is_followed_and_reported(
    bot: RunningBot,
    staging_kube: FakeKubernetes,
    settings: Settings,
    ref: str,
    kind: str,
    name: str,
    ready: str,
) -> None:
    staging_kube.add(statefulset("ledger", "staging-db", replicas=2, image="ledger:3"))
    staging_kube.add(daemonset("agent", "staging-db", desired=3, image="agent:1"))
    staging_kube.controllers.steps = 2
    submit(bot, f"restart {ref} -n staging-db")
    wait_for(lambda: rows(settings, Request) and request_status(settings) == "succeeded")
    obj = staging_kube.get_object("apps/v1", kind, "staging-db", name)
    assert obj is not None
    assert RESTARTED_AT in obj["spec"]["template"]["metadata"]["annotations"]
    assert obj["status"]["observedGeneration"] == obj["metadata"]["generation"] == 2
    [patch] = writes(staging_kube)
    assert patch.path.endswith(f"/namespaces/staging-db/{kind.lower()}s/{name}")
    done = final_reply(bot, announcement(bot), "Done")
    assert f"restarted {kind.lower()}/{name} in staging-db (restartedAt " in done
    assert f"rolled out: {ready} ready in " in done
    [request] = rows(settings, Request)
    assert request.rule.startswith("rules[4] 'staging restarts'")
