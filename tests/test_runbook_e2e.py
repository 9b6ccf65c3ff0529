"""End to end: ``/ops run`` and ``/ops runbooks`` through signed Slack requests, the bot on a real
socket, the fake cluster's Jobs over real HTTP (:mod:`tests.fakes.kube.batch`)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from sqlalchemy import create_engine, select
from sqlalchemy.orm import Session

from approvals.models import AuditEvent, Request
from bot.settings import Settings
from tests.fakes import slack
from tests.fakes.kube import JOBS, FakeKubernetes, job_controller
from tests.helpers.bot import RunningBot, wait_for

POLICY = """\
version: 1
approval_channel: C0APPROVALS
audit_channel: C0AUDIT

groups:
  sre: {users: [U0SRE1, U0SRE2]}

environments:
  prod:    {kube_context: prod, namespaces: [payments, checkout]}
  staging: {kube_context: staging, namespaces: ["staging-*"]}

runbooks:
  db-vacuum:
    description: VACUUM ANALYZE one table of the payments database
    environments: [prod]
    namespaces: [payments]
    job:
      image: registry.example.com/ops/db-tools:1.4
      command: [/scripts/vacuum.sh, --verbose]
      service_account: runbook-db
      resources: {requests: {cpu: 100m, memory: 128Mi}, limits: {memory: 256Mi}}
      active_deadline_seconds: 600
      ttl_seconds_after_finished: 3600
      env: {PGHOST: payments-db}
      secret_env:
        PGPASSWORD: {secret: payments-db, key: password}
    parameters:
      table: {type: string, pattern: "[a-z_]{1,63}", description: the table}
      batch: {type: integer, min: 1, max: 1000, default: 100}
      mode: {type: enum, values: [analyze, full], default: analyze}
  note:
    description: write a note to the audit log of the namespace
    environments: [prod]
    reversible: true
    job:
      image: busybox:1.36
      command: [/bin/echo-note]
      active_deadline_seconds: 60
    parameters:
      text: {type: string, max_length: 200}
  cache-flush:
    description: flush the staging cache
    environments: [staging]
    reversible: true
    job:
      image: busybox:1.36
      command: [/bin/flush]
      active_deadline_seconds: 60

rules:
  - match: {action: run, environment: prod}
    approvers: [sre]
  - match: {action: run, environment: staging, requesters: [sre]}
    approval: auto
"""


@pytest.fixture
def policy_text() -> str:
    return POLICY


def rows(settings: Settings, model: type[Any]) -> list[Any]:
    engine = create_engine(settings.database_url)
    try:
        with Session(engine) as session:
            return list(session.scalars(select(model).order_by(model.id)))
    finally:
        engine.dispose()


def responses(fake: slack.FakeSlack, response_url: str) -> list[str]:
    path = response_url.split("127.0.0.1", 1)[1].split("/", 1)[1]
    return [c.args.get("text", "") for c in fake.calls if c.path == "/" + path]


def status_of(settings: Settings, request_id: int = 1) -> str:
    return {r.id: r.status for r in rows(settings, Request)}.get(request_id, "")


def approval(bot: RunningBot) -> slack.Call:
    return wait_for(
        lambda: [c for c in bot.fake_slack.calls_of("chat.postMessage") if c.args.get("blocks")],
        what="the approval message",
    )[-1]


def created_job(kube: FakeKubernetes, name: str) -> dict[str, Any]:
    """The Job once created and started by the Job controller (its pod exists)."""

    def started() -> dict[str, Any] | None:
        job = kube.get_object("batch/v1", "Job", "payments", name)
        return job if job is not None and "startTime" in (job.get("status") or {}) else None

    found = wait_for(started, what=f"job/{name} to start")
    assert isinstance(found, dict)
    return found


def final_update(bot: RunningBot, word: str) -> str:
    updates = wait_for(
        # the approval card's updates (the requester's message is updated too, without blocks)
        lambda: [
            c
            for c in bot.fake_slack.calls_of("chat.update")
            if word in c.args["text"] and "blocks" in c.args
        ],
        what=f"an update saying {word}",
    )
    return json.dumps(updates[-1].args["blocks"])


def run_and_approve(bot: RunningBot, kube: FakeKubernetes, text: str) -> dict[str, Any]:
    answer, _ = bot.command(text)
    assert answer.status_code == 200
    approval(bot)
    assert bot.click("approve", "1", user="U0SRE1").status_code == 200
    return created_job(kube, "db-vacuum-1")


def test_run_through_approval_creates_the_job_follows_it_and_posts_its_log(
    bot: RunningBot, kube: FakeKubernetes, settings: Settings
) -> None:
    answer, _ = bot.command('run db-vacuum table=orders batch=500 -n payments --reason "bloat"')
    assert answer.status_code == 200
    message = json.dumps(approval(bot).args["blocks"])
    for fact in ("runbook *db-vacuum*", "registry.example.com/ops/db-tools:1.4", "BATCH='500'"):
        assert fact in message
    assert "PGPASSWORD &lt;- payments-db/password" in message
    [dry] = kube.requests_matching(method="POST", path_contains="/jobs")
    assert dry.query.get("dryRun") == "All"
    assert kube.objects("Job") == []

    assert bot.click("approve", "1", user="U0SRE1").status_code == 200
    job = created_job(kube, "db-vacuum-1")
    assert job["metadata"]["labels"]["opsgate.io/request-id"] == "1"
    assert job["metadata"]["annotations"]["opsgate.io/requester"] == "U0DEV1"
    spec = job["spec"]
    assert (spec["activeDeadlineSeconds"], spec["ttlSecondsAfterFinished"]) == (600, 3600)
    assert spec["backoffLimit"] == 0
    assert spec["template"]["metadata"]["labels"]["opsgate.io/request-id"] == "1"
    pod = spec["template"]["spec"]
    assert pod["serviceAccountName"] == "runbook-db"
    assert pod["restartPolicy"] == "Never"
    [container] = pod["containers"]
    assert container["command"] == ["/scripts/vacuum.sh", "--verbose"]
    assert "args" not in container
    assert container["resources"]["limits"] == {"memory": "256Mi"}
    assert container["env"] == [
        {"name": "TABLE", "value": "orders"},
        {"name": "BATCH", "value": "500"},
        {"name": "MODE", "value": "analyze"},
        {"name": "PGHOST", "value": "payments-db"},
        {
            "name": "PGPASSWORD",
            "valueFrom": {"secretKeyRef": {"name": "payments-db", "key": "password"}},
        },
    ]
    assert status_of(settings) == "executing"

    log = "".join(f"vacuumed page {i}\n" for i in range(1, 41)) + "<!channel> done `x`\n"
    job_controller(kube).succeed("payments", "db-vacuum-1", log=log)
    wait_for(lambda: status_of(settings) == "succeeded", what="the request to succeed")
    [request] = rows(settings, Request)
    assert request.result.startswith(
        "created job/db-vacuum-1 in payments (runbook db-vacuum); job/db-vacuum-1 succeeded in "
    )
    assert "vacuumed page 40" in request.result
    assert "vacuumed page 20\n" not in request.result  # only the last 20 lines
    shown = final_update(bot, "succeeded")
    assert "&lt;!channel&gt; done 'x'" in shown
    assert "<!channel>" not in shown
    log_reads = kube.requests_matching(method="GET", path_contains="/log")
    assert log_reads[-1].query == {"tailLines": "20", "limitBytes": "2000"}
    events = [e.event for e in rows(settings, AuditEvent)]
    assert events == ["submitted", "approval_added", "approved", "executing", "succeeded"]


def test_a_value_reaches_the_container_verbatim_never_through_a_shell(
    bot: RunningBot, kube: FakeKubernetes, settings: Settings
) -> None:
    bot.command("run note 'text=$(rm -rf /); echo `id` \"quoted\"' -n payments")
    approval(bot)
    bot.click("approve", "1", user="U0SRE1")
    job = created_job(kube, "note-1")
    [container] = job["spec"]["template"]["spec"]["containers"]
    assert container["env"] == [{"name": "TEXT", "value": '$(rm -rf /); echo `id` "quoted"'}]
    assert container["command"] == ["/bin/echo-note"]


def test_a_failed_job_fails_the_request_with_its_reason_and_log(
    bot: RunningBot, kube: FakeKubernetes, settings: Settings
) -> None:
    run_and_approve(bot, kube, "run db-vacuum table=orders -n payments")
    job_controller(kube).fail(
        "payments", "db-vacuum-1", log="connecting\nERROR: relation missing\n"
    )
    wait_for(lambda: status_of(settings) == "failed", what="the request to fail")
    [request] = rows(settings, Request)
    assert request.error.startswith(
        "created job/db-vacuum-1 in payments (runbook db-vacuum), but job/db-vacuum-1 failed: "
        "BackoffLimitExceeded: Job has reached the specified backoff limit"
    )
    assert "ERROR: relation missing" in request.error
    assert "ERROR: relation missing" in final_update(bot, "failed")
    assert rows(settings, AuditEvent)[-1].event == "failed"


def test_a_job_past_its_deadline_fails_the_request(
    bot: RunningBot, kube: FakeKubernetes, settings: Settings
) -> None:
    run_and_approve(bot, kube, "run db-vacuum table=orders mode=full -n payments")
    job_controller(kube).exceed_deadline("payments", "db-vacuum-1", log="still vacuuming\n")
    wait_for(lambda: status_of(settings) == "failed", what="the request to fail")
    [request] = rows(settings, Request)
    assert "failed: DeadlineExceeded: Job was active longer than specified deadline" in (
        request.error
    )
    assert request.error.endswith("it has no pod left to read a log from")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("run db-vacuum table=Orders -n payments", "parameter 'table': 'Orders' does not match"),
        ("run db-vacuum table=x batch=5000 -n payments", "5000 is above the maximum of 1000"),
        ("run db-vacuum table=x batch=0 -n payments", "0 is below the minimum of 1"),
        ("run db-vacuum table=x batch=ten -n payments", "'ten' is not a whole number"),
        ("run db-vacuum table=x mode=fast -n payments", "'fast' is not one of analyze, full"),
        ("run db-vacuum table=x color=red -n payments", "unknown parameter(s) color"),
        ("run db-vacuum -n payments", "missing parameter 'table' (string matching [a-z_]{1,63})"),
        ("run db-vacuum table=x -n checkout", "may not run in namespace checkout"),
        ("run db-vacuum table=x -n staging-web", "only members of sre may ask for run in staging"),
        ("run ghost -n payments", "unknown runbook 'ghost'"),
    ],
)
def test_bad_runs_are_answered_clearly_and_nothing_is_filed(
    bot: RunningBot, kube: FakeKubernetes, settings: Settings, text: str, expected: str
) -> None:
    _, response_url = bot.command(text)
    told = "\n".join(wait_for(lambda: responses(bot.fake_slack, response_url)))
    assert expected in told
    assert rows(settings, Request) == []
    assert [e.event for e in rows(settings, AuditEvent)] == ["rejected"]
    assert kube.requests_matching(method="POST", path_contains="/jobs") == []


def test_a_runbook_outside_its_environments_is_refused_even_where_a_rule_allows_run(
    bot: RunningBot, kube: FakeKubernetes, settings: Settings
) -> None:
    _, response_url = bot.command("run db-vacuum table=x -n staging-web", user="U0SRE1")
    told = "\n".join(wait_for(lambda: responses(bot.fake_slack, response_url)))
    assert (
        "runbook db-vacuum may not run in namespace staging-web (environment staging); "
        "it runs in prod (payments)"
    ) in told
    assert rows(settings, Request) == []
    assert kube.requests_matching(method="POST", path_contains="/jobs") == []


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("run db-vacuum table -n payments", "'table' is not key=value"),
        ("run db-vacuum table=a table=b -n payments", "table is given twice"),
        ("run db-vacuum table=x", "the following arguments are required: -n/--namespace"),
    ],
)
def test_malformed_run_commands_are_answered_in_the_ack(
    bot: RunningBot, settings: Settings, text: str, expected: str
) -> None:
    answer, _ = bot.command(text)
    assert expected in answer.json()["text"]
    assert "/ops run &lt;runbook&gt; [key=value …] -n &lt;namespace&gt;" in answer.json()["text"]
    assert rows(settings, Request) == []


def test_a_dry_run_the_api_server_refuses_is_answered_at_once(
    bot: RunningBot, kube: FakeKubernetes, settings: Settings
) -> None:
    kube.fail_next(
        status=422,
        method="POST",
        path_contains="/jobs",
        reason="Invalid",
        message='admission webhook "images.example.com" denied the request: unsigned image',
    )
    _, response_url = bot.command("run db-vacuum table=x -n payments")
    told = "\n".join(wait_for(lambda: responses(bot.fake_slack, response_url)))
    assert "unsigned image" in told
    assert rows(settings, Request) == []


def test_runbooks_lists_what_the_caller_may_run(bot: RunningBot) -> None:
    def listing(user: str) -> str:
        _, response_url = bot.command("runbooks", user=user)
        return "\n".join(wait_for(lambda: responses(bot.fake_slack, response_url)))

    developer = listing("U0DEV1")
    assert "*db-vacuum*: VACUUM ANALYZE one table of the payments database" in developer
    assert "`/ops run db-vacuum table=&lt;string matching [a-z_]{1,63}&gt; [batch=…]" in developer
    assert "where: payments (prod)" in developer
    assert "*note*" in developer
    assert "cache-flush" not in developer  # staging runbooks: SREs only
    sre = listing("U0SRE1")
    assert "*cache-flush*" in sre
    assert "where: staging-* (staging)" in sre


def test_a_create_without_an_answer_is_read_back_and_followed(
    bot: RunningBot, kube: FakeKubernetes, settings: Settings
) -> None:
    bot.command("run db-vacuum table=orders -n payments")
    approval(bot)  # the dry run is done: the next POST is the create
    kube.answer_late_next(4.0, method="POST", path_contains="/jobs")  # the client waits 2 s
    bot.click("approve", "1", user="U0SRE1")
    created_job(kube, "db-vacuum-1")
    job_controller(kube).succeed("payments", "db-vacuum-1", log="ok\n")
    wait_for(lambda: status_of(settings) == "succeeded", timeout=20, what="the request to succeed")
    creates = kube.requests_matching(method="POST", path_contains="/jobs")
    assert [r.query.get("dryRun") for r in creates] == ["All", None]  # created once


def test_a_create_that_never_landed_fails_saying_nothing_ran(
    bot: RunningBot, kube: FakeKubernetes, settings: Settings
) -> None:
    bot.command("run db-vacuum table=orders -n payments")
    approval(bot)
    kube.answer_late_next(0.1, method="POST", path_contains="/jobs", apply=False)  # a 504
    bot.click("approve", "1", user="U0SRE1")
    wait_for(lambda: status_of(settings) == "failed", what="the request to fail")
    [request] = rows(settings, Request)
    assert "it does not exist: nothing was run; safe to ask again" in request.error
    assert kube.objects("Job") == []


def test_a_job_deleted_while_followed_fails_the_request_saying_so(
    bot: RunningBot, kube: FakeKubernetes, settings: Settings
) -> None:
    run_and_approve(bot, kube, "run db-vacuum table=orders -n payments")
    kube.store.delete(JOBS, "payments", "db-vacuum-1")
    wait_for(lambda: status_of(settings) == "failed", what="the request to fail")
    [request] = rows(settings, Request)
    assert request.error.startswith(
        "created job/db-vacuum-1 in payments (runbook db-vacuum), but its rollout cannot be "
        "followed: Kubernetes answered 404 while reading job/db-vacuum-1 in payments"
    )
