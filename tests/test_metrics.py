"""``GET /metrics`` (issue 14 item 5) after a scripted scenario through signed Slack requests: one
request approved and executed, one denied, one access grant that expires; and the Slack client's
retries and error counter against a Slack Web API served over real HTTP.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from pytest_httpserver import HTTPServer
from slack_sdk.errors import SlackApiError
from sqlalchemy import create_engine

from actions.access import role_binding_body
from actions.backends.kubernetes import KubernetesBackend
from actions.errors import NotFound, TemporaryError
from bot.metrics import MeteredWebClient
from bot.settings import Settings
from tests.fakes import slack
from tests.fakes.kube import FakeKubernetes, cluster_role, write_kubeconfig
from tests.helpers.access import AccessBot, serve_access_bot
from tests.helpers.bot import buttons, wait_for
from tests.helpers.clock import Clock

POLICY = """\
version: 1
approval_channel: C0APPROVALS
audit_channel: C0AUDIT

groups:
  sre: {users: [U0SRE1, U0SRE2]}

identities:
  U0DEV1: {kubernetes_user: alice@example.com}

environments:
  prod: {kube_context: prod, namespaces: [payments, checkout]}

rules:
  - match: {action: restart, environment: prod}
    approvers: [sre]
  - match: {action: access, environment: prod}
    approvers: [sre]
    roles: [view]
    max_duration: 4h
"""

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(url: str) -> Samples:
    """Every sample of ``GET /metrics``, by name and sorted labels."""
    answer = httpx.get(f"{url}/metrics", timeout=10)
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/plain; version=")
    samples: Samples = {}
    for family in text_string_to_metric_families(answer.text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


@pytest.fixture
def policy_text() -> str:
    return POLICY


@pytest.fixture
def clock() -> Clock:
    return Clock(datetime.now(UTC).replace(microsecond=0))


@pytest.fixture
def metered_bot(
    settings: Settings, fake_slack: slack.FakeSlack, kube: FakeKubernetes, clock: Clock
) -> Iterator[AccessBot]:
    kube.add(cluster_role("view"))
    db = create_engine(settings.database_url)
    try:
        every = settings.model_copy(update={"drift_interval": 0.3})
        with serve_access_bot(every, fake_slack, kube, db, sweep_interval=0.2, clock=clock) as b:
            yield b
    finally:
        db.dispose()


def decide(bot: AccessBot, text: str, action_id: str) -> int:
    """``/ops <text>`` by U0DEV1, then U0SRE1 clicks ``action_id``; returns the request ID."""
    before = len(bot.approvals())
    bot.command(text)
    message = wait_for(lambda: bot.approvals()[before:], what=f"the approval of /ops {text}")[0]
    request_id = int(buttons(message)["approve"])
    bot.click(message, action_id, user="U0SRE1")
    return request_id


def test_metrics_after_one_approved_one_denied_and_one_expired_grant(
    metered_bot: AccessBot, clock: Clock
) -> None:
    bot = metered_bot
    before = scrape(bot.url)
    assert value(before, "opsgate_database_up") == 1

    approved = decide(bot, "restart payments-api -n payments", "approve")
    wait_for(lambda: bot.request(approved).status == "succeeded", what="the restart")
    denied = decide(bot, "restart cart -n checkout", "deny")
    wait_for(lambda: bot.request(denied).status == "denied", what="the denial")
    pending = len(bot.approvals())
    bot.command("restart cart -n checkout")
    wait_for(lambda: len(bot.approvals()) > pending, what="a third request, left pending")
    grant = bot.grant_access("access payments --for 30m")

    during = scrape(bot.url)
    assert value(during, "opsgate_pending_requests") == 1
    assert value(during, "opsgate_active_grants") == 1
    assert value(during, "opsgate_overdue_grants") == 0

    clock.advance(31 * 60)
    wait_for(lambda: bot.grant(grant).status == "revoked", what="the grant to expire")
    lag = "opsgate_grant_revocation_lag_seconds_count"

    def lag_observed() -> Samples | None:  # counted right after the revocation commits
        samples = scrape(bot.url)
        return samples if value(samples, lag) > value(before, lag) else None

    after: Samples = wait_for(lag_observed, what="the revocation lag to be observed")

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert delta("opsgate_requests_total", action="restart", outcome="approved") == 1
    assert delta("opsgate_requests_total", action="restart", outcome="succeeded") == 1
    assert delta("opsgate_requests_total", action="restart", outcome="denied") == 1
    assert delta("opsgate_requests_total", action="access", outcome="approved") == 1
    assert delta("opsgate_requests_total", action="access", outcome="active") == 1
    assert delta("opsgate_request_decision_seconds_count") == 3  # two approvals, one denial
    assert delta("opsgate_execution_seconds_count", action="restart") == 1
    assert delta("opsgate_execution_seconds_count", action="access") == 1
    assert delta("opsgate_grant_revocation_lag_seconds_count") == 1
    assert delta("opsgate_grant_revocation_failures_total") == 0
    assert value(after, "opsgate_active_grants") == 0
    assert value(after, "opsgate_pending_requests") == 1
    assert value(after, "opsgate_overdue_grants") == 0


def test_revocation_failures_and_drift_corrections_are_counted(
    metered_bot: AccessBot, kube: FakeKubernetes, clock: Clock
) -> None:
    bot = metered_bot
    before = scrape(bot.url)
    failures = "opsgate_grant_revocation_failures_total"
    grant = bot.grant_access("access payments --for 30m")
    kube.fail_next(1, status=500, method="DELETE", path_contains="rolebindings")
    clock.advance(31 * 60)
    wait_for(
        lambda: value(scrape(bot.url), failures) > value(before, failures),
        what="the failed revocation to be counted",
    )
    assert value(scrape(bot.url), "opsgate_overdue_grants") == 1
    clock.advance(10 * 60)  # past the retry delay
    wait_for(lambda: bot.grant(grant).status == "revoked", what="the retried revocation")
    kube.add(
        role_binding_body(
            grant_id=999,
            namespace="payments",
            cluster_role="view",
            kubernetes_user="mallory@example.com",
            expires_at=clock() + timedelta(hours=1),
        )
    )
    drift = "opsgate_drift_corrections_total"
    wait_for(
        lambda: value(scrape(bot.url), drift) == value(before, drift) + 1,
        what="the drift correction to be counted",
    )
    after = scrape(bot.url)
    assert value(after, failures) == value(before, failures) + 1
    assert value(after, "opsgate_overdue_grants") == 0
    errors = value(after, "opsgate_backend_errors_total", backend="kubernetes")
    assert errors == value(before, "opsgate_backend_errors_total", backend="kubernetes") + 1


def test_backend_errors_count_failures_not_answers_about_the_request(
    kube: FakeKubernetes, tmp_path: object
) -> None:
    from pathlib import Path

    assert isinstance(tmp_path, Path)
    config = write_kubeconfig(tmp_path / "kubeconfig", {"prod": kube})
    backend = KubernetesBackend(kubeconfig=str(config))

    def errors() -> float:
        samples = scrape_registry()
        return value(samples, "opsgate_backend_errors_total", backend="kubernetes")

    try:
        start = errors()
        with pytest.raises(NotFound):
            backend.get_workload("prod", "Deployment", "payments", "nope")
        assert errors() == start  # a 404 is an answer, not a failing backend
        kube.fail_next(status=503, reason="ServiceUnavailable", message="etcd is down")
        with pytest.raises(TemporaryError):
            backend.get_workload("prod", "Deployment", "payments", "payments-api")
        assert errors() == start + 1
    finally:
        backend.close()


def scrape_registry() -> Samples:
    from prometheus_client import REGISTRY, generate_latest

    samples: Samples = {}
    for family in text_string_to_metric_families(generate_latest(REGISTRY).decode()):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


# --- the Slack client: retries (item 7) and the error counter ----------------------------------


def test_slack_client_waits_out_a_429_and_retries_a_5xx(httpserver: HTTPServer) -> None:
    ok = json.dumps({"ok": True, "channel": "C1", "ts": "1.2"})
    httpserver.expect_ordered_request("/api/chat.postMessage").respond_with_data(
        "", status=429, headers={"Retry-After": "1"}
    )
    httpserver.expect_ordered_request("/api/chat.postMessage").respond_with_data(
        "upstream failed", status=503
    )
    httpserver.expect_ordered_request("/api/chat.postMessage").respond_with_data(
        ok, content_type="application/json"
    )
    client = MeteredWebClient(token="xoxb-test", base_url=httpserver.url_for("/api/"))
    before = value(scrape_registry(), "opsgate_slack_api_errors_total", method="chat.postMessage")
    answer = client.chat_postMessage(channel="C1", text="hello")
    assert answer["ts"] == "1.2"
    assert len(httpserver.log) == 3
    after = value(scrape_registry(), "opsgate_slack_api_errors_total", method="chat.postMessage")
    assert after == before


def test_slack_errors_are_counted_by_method(httpserver: HTTPServer) -> None:
    httpserver.expect_request("/api/chat.update").respond_with_data(
        json.dumps({"ok": False, "error": "message_not_found"}), content_type="application/json"
    )
    client = MeteredWebClient(token="xoxb-test", base_url=httpserver.url_for("/api/"))
    name = "opsgate_slack_api_errors_total"
    before = value(scrape_registry(), name, method="chat.update")
    with pytest.raises(SlackApiError):
        client.chat_update(channel="C1", ts="1.2", text="x")
    assert value(scrape_registry(), name, method="chat.update") == before + 1


def test_every_metric_the_alerting_rules_use_is_exported(metered_bot: AccessBot) -> None:
    """docs/alerts.yml: valid YAML of Prometheus rule groups, on metrics ``/metrics`` serves."""
    import re
    from pathlib import Path

    import yaml

    rules = yaml.safe_load((Path(__file__).parent.parent / "docs" / "alerts.yml").read_text())
    exprs = [rule["expr"] for group in rules["groups"] for rule in group["rules"]]
    assert all(rule["alert"] for group in rules["groups"] for rule in group["rules"])
    used = {name for expr in exprs for name in re.findall(r"opsgate_[a-z_]+", expr)}
    answer = httpx.get(f"{metered_bot.url}/metrics", timeout=10).text
    described = set(re.findall(r"^# TYPE (\S+) ", answer, re.MULTILINE))
    for name in used:  # a histogram's _bucket, a counter's _total: their family is described
        base = re.sub(r"_(bucket|total)$", "", name)
        assert base in described or f"{base}_total" in described, name
