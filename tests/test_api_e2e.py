"""End to end through real HTTP: the HTTP API (issue 12) with bearer tokens.

An agent's token files a restart; it is posted in Slack for approval naming the agent; a person
approves with a signed click; ``GET …?wait=`` answers ``succeeded``. Idempotency-Key returns the
first request; the agent cannot approve by any route; a revoked or expired token gets 401.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import create_engine, select

from approvals.models import AuditEvent
from bot.blocks import APPROVE_ACTION
from bot.cli import main
from bot.settings import Settings
from tests.fakes import slack
from tests.helpers.api import POLICY, RESTART, call, now, store
from tests.helpers.bot import RunningBot, running_bot, wait_for
from tests.helpers.slack_flow import RESTARTED_AT, annotations, patches


@pytest.fixture
def policy_text() -> str:
    return POLICY


@pytest.fixture
def api_bot(settings: Settings, fake_slack: slack.FakeSlack) -> Iterator[RunningBot]:
    with running_bot(settings, fake_slack) as running:
        yield running


@pytest.fixture
def agent_token(api_bot: RunningBot, settings: Settings) -> str:
    token, _ = store(settings).create(
        subject_id="U0DEPLOYBOT", subject_kind="agent", name="deploy-bot"
    )
    return token


def test_an_agent_files_a_restart_a_person_approves_and_wait_says_succeeded(
    api_bot: RunningBot, agent_token: str, kube: Any, settings: Settings
) -> None:
    body = {**RESTART, "reason": "OOM after 1.4.2 <!channel>"}
    filed = call(api_bot, "POST", "/requests", agent_token, json=body)
    assert filed.status_code == 201, filed.text
    request = filed.json()
    assert request["status"] == "pending"
    assert request["requester"] == {"id": "U0DEPLOYBOT", "kind": "agent", "agent": "deploy-bot"}
    assert "prod restarts" in request["rule"]
    assert request["approval"]["approver_groups"] == ["sre"]
    assert filed.headers["location"] == f"/api/v1/requests/{request['id']}"
    assert any("payments-api" in line for line in request["preview"])

    card = api_bot.approval_message()
    assert "agent *deploy-bot* (<@U0DEPLOYBOT>)" in card.args["text"]
    assert "&lt;!channel&gt;" in json.dumps(card.args["blocks"])  # escaped as Slack shows it

    # nothing answered yet: a short wait returns the request still pending
    waited = call(api_bot, "GET", f"/requests/{request['id']}", agent_token, params={"wait": 1})
    assert waited.json()["status"] == "pending"

    api_bot.click(APPROVE_ACTION, str(request["id"]), user="U0SRE1")
    waited = call(api_bot, "GET", f"/requests/{request['id']}", agent_token, params={"wait": 30})
    assert waited.status_code == 200
    assert waited.json()["status"] == "succeeded", waited.json()
    assert waited.json()["approval"]["approved_by"] == ["U0SRE1"]
    assert RESTARTED_AT in annotations(kube, "payments", "payments-api")

    listed = call(api_bot, "GET", "/requests", agent_token, params={"status": "succeeded"})
    assert [r["id"] for r in listed.json()["items"]] == [request["id"]]
    # /ops changes through the API: the restart, newest first; nothing in another namespace
    changes = call(api_bot, "GET", "/changes", agent_token, params={"since": 3600})
    assert changes.status_code == 200, changes.text
    assert [(r["id"], r["status"]) for r in changes.json()["items"]] == [
        (request["id"], "succeeded")
    ]
    elsewhere = call(api_bot, "GET", "/changes", agent_token, params={"namespace": "checkout"})
    assert elsewhere.json()["total"] == 0
    too_far = call(api_bot, "GET", "/changes", agent_token, params={"since": 10**9})
    assert too_far.status_code == 422
    assert (
        call(api_bot, "GET", "/requests", agent_token, params={"status": "pending"}).json()["total"]
        == 0
    )

    engine = create_engine(settings.database_url)
    with engine.connect() as conn:
        uses = conn.execute(
            select(AuditEvent.actor_id, AuditEvent.detail).where(AuditEvent.event == "api_call")
        ).all()
    engine.dispose()
    assert uses
    assert all(actor == "U0DEPLOYBOT" for actor, _ in uses)
    assert {"method": "POST", "path": "/api/v1/requests"}.items() <= uses[0][1].items()


def test_the_same_idempotency_key_returns_the_first_request(
    api_bot: RunningBot, agent_token: str, kube: Any
) -> None:
    key = {"Idempotency-Key": "deploy-42-restart"}
    first = call(api_bot, "POST", "/requests", agent_token, json=RESTART, headers=key)
    again = call(api_bot, "POST", "/requests", agent_token, json=RESTART, headers=key)
    assert first.status_code == 201
    assert again.status_code == 201
    assert again.json()["id"] == first.json()["id"]
    assert again.headers["idempotent-replayed"] == "true"
    assert len(api_bot.fake_slack.calls_of("chat.postMessage")) == 1  # asked once

    other = call(
        api_bot, "POST", "/requests", agent_token, json={**RESTART, "reason": "x"}, headers=key
    )
    assert other.status_code == 422
    assert other.headers["content-type"] == "application/problem+json"
    assert "another body" in other.json()["detail"]

    fresh = call(
        api_bot, "POST", "/requests", agent_token, json=RESTART, headers={"Idempotency-Key": "2"}
    )
    assert fresh.json()["id"] != first.json()["id"]


def test_a_refused_request_is_answered_as_slack_would_and_its_key_is_free_again(
    api_bot: RunningBot, agent_token: str
) -> None:
    key = {"Idempotency-Key": "scale-1"}
    body = {"action": "scale", "workload": "payments-api", "replicas": 5, "namespace": "payments"}
    refused = call(api_bot, "POST", "/requests", agent_token, json=body, headers=key)
    assert refused.status_code == 403
    assert refused.json()["detail"] == "Not allowed: automation may not scale; ask a person"
    again = call(api_bot, "POST", "/requests", agent_token, json=body, headers=key)
    assert again.status_code == 403  # decided afresh, not replayed

    unknown = call(api_bot, "POST", "/requests", agent_token, json={**RESTART, "namespace": "x"})
    assert unknown.status_code == 422
    assert "x" in unknown.json()["detail"]
    missing = call(api_bot, "POST", "/requests", agent_token, json={"action": "restart"})
    assert missing.status_code == 422
    assert {tuple(e["loc"][-1:]) for e in missing.json()["errors"]} >= {
        ("workload",),
        ("namespace",),
    }
    bad_kind = call(
        api_bot,
        "POST",
        "/requests",
        agent_token,
        json={**RESTART, "workload": "cronjob/nightly"},
    )
    assert bad_kind.status_code == 422
    assert "not a workload kind" in bad_kind.json()["detail"]


def test_the_agent_cannot_approve_by_any_route(
    api_bot: RunningBot, agent_token: str, settings: Settings
) -> None:
    request = call(api_bot, "POST", "/requests", agent_token, json=RESTART).json()
    rid = request["id"]
    for method, path in (
        ("POST", f"/requests/{rid}/approve"),
        ("POST", f"/requests/{rid}/approval"),
        ("PUT", f"/requests/{rid}"),
        ("PATCH", f"/requests/{rid}"),
    ):
        answer = call(api_bot, method, path, agent_token, json={"status": "approved"})
        assert answer.status_code in (404, 405), (method, path, answer.status_code)
    # nor in Slack: its click is refused
    api_bot.click(APPROVE_ACTION, str(rid), user="U0DEPLOYBOT")
    state = call(api_bot, "GET", f"/requests/{rid}", agent_token, params={"wait": 1}).json()
    assert state["status"] == "pending"
    assert state["approval"]["approved_by"] == []
    # a person's token may not cancel (deny) someone else's request through the API
    person, _ = store(settings).create(subject_id="U0SRE1", subject_kind="human", name="U0SRE1")
    refused = call(api_bot, "POST", f"/requests/{rid}/cancel", person)
    assert refused.status_code == 404
    cancelled = call(api_bot, "POST", f"/requests/{rid}/cancel", agent_token)
    assert cancelled.status_code == 200
    assert cancelled.json()["status"] == "cancelled"


def test_revoked_expired_unknown_and_missing_tokens_get_401(
    api_bot: RunningBot, agent_token: str, settings: Settings
) -> None:
    tokens = store(settings)
    assert call(api_bot, "GET", "/requests", agent_token).status_code == 200
    info = next(t for t in tokens.list() if t.name == "deploy-bot")
    tokens.revoke(info.id)
    revoked = call(api_bot, "GET", "/requests", agent_token)
    assert revoked.status_code == 401
    assert revoked.headers["www-authenticate"].startswith("Bearer")
    assert revoked.json()["detail"] == f"token refused: token #{info.id} is revoked"
    assert agent_token not in revoked.text

    expiring, _ = tokens.create(
        subject_id="U0DEPLOYBOT", subject_kind="agent", name="deploy-bot", expires_in=1
    )
    wait_for(lambda: tokens.list()[0].state(now()) == "expired", timeout=5)
    assert call(api_bot, "GET", "/requests", expiring).status_code == 401
    assert call(api_bot, "GET", "/requests", "ogt_not-a-token").status_code == 401
    assert call(api_bot, "GET", "/requests", None).status_code == 401
    basic = call(api_bot, "GET", "/requests", None, headers={"Authorization": "Basic eDp5"})
    assert basic.status_code == 401
    assert call(api_bot, "POST", "/requests", None, json=RESTART).status_code == 401


def test_explain_decides_and_previews_without_filing(
    api_bot: RunningBot, agent_token: str, kube: Any
) -> None:
    explained = call(api_bot, "POST", "/explain", agent_token, json=RESTART)
    assert explained.status_code == 200, explained.text
    answer = explained.json()
    assert answer["outcome"] == "approval"
    assert "prod restarts" in answer["rule"]
    assert answer["target"] == "deployment/payments-api"
    assert answer["preview"]
    denied = call(
        api_bot,
        "POST",
        "/explain",
        agent_token,
        json={"action": "scale", "workload": "cart", "replicas": 1, "namespace": "checkout"},
    )
    assert denied.json()["outcome"] == "deny"
    assert call(api_bot, "GET", "/requests", agent_token).json()["total"] == 0
    assert not patches(kube)


def test_token_cli_prints_the_token_alone_and_lists_and_revokes(
    settings: Settings,
    policy_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("OPSGATE_DATABASE_URL", settings.database_url)
    monkeypatch.setenv("OPSGATE_POLICY", str(policy_path))
    monkeypatch.chdir(policy_path.parent)
    assert main(["token", "create", "--agent", "deploy-bot", "--expires", "30d"]) == 0
    out, err = capsys.readouterr()
    token = out.strip()
    assert out == token + "\n"
    assert token.startswith("ogt_")
    assert len(token) > 40
    assert "deploy-bot (U0DEPLOYBOT)" in err
    assert main(["token", "create", "--agent", "nobody"]) == 1
    assert "not in the policy's agents" in capsys.readouterr().err
    assert main(["token", "create", "--user", "U0SRE1", "--expires", "soon"]) == 2
    capsys.readouterr()
    assert main(["token", "list"]) == 0
    listing = capsys.readouterr().out
    assert token[:10] in listing
    assert token not in listing
    assert "active" in listing
    assert main(["token", "revoke", "1"]) == 0
    assert main(["token", "list"]) == 0
    assert "revoked" in capsys.readouterr().out
    assert main(["token", "revoke", "99"]) == 1


def test_cli_client_files_waits_and_exits_with_the_outcome(
    api_bot: RunningBot,
    agent_token: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("OPSGATE_URL", api_bot.url)
    monkeypatch.setenv("OPSGATE_TOKEN", agent_token)

    def approve() -> None:
        wait_for(lambda: api_bot.fake_slack.calls_of("chat.postMessage"), what="the card")
        api_bot.click(APPROVE_ACTION, "1", user="U0SRE1")

    approver = threading.Thread(target=approve)
    approver.start()
    code = main(
        ["request", "restart", "payments-api", "-n", "payments", "--reason", "OOM", "--wait"]
    )
    approver.join()
    out = capsys.readouterr().out
    assert code == 0, out
    assert "request #1: restart deployment/payments-api: succeeded" in out
    assert main(["status", "1"]) == 0
    assert main(["explain", "scale", "cart", "1", "-n", "checkout"]) == 3
    assert "automation may not scale" in capsys.readouterr().out
    assert main(["request", "scale", "cart", "1", "-n", "checkout"]) == 3
    assert main(["status", "99"]) == 6
    monkeypatch.setenv("OPSGATE_TOKEN", "ogt_wrong")
    assert main(["status", "1"]) == 6
    assert "401" in capsys.readouterr().err


def test_racing_retries_with_one_idempotency_key_file_one_request(
    api_bot: RunningBot, agent_token: str, settings: Settings
) -> None:
    racers = 6
    barrier = threading.Barrier(racers)
    answers: list[httpx.Response] = []
    lock = threading.Lock()

    def race() -> None:
        with httpx.Client(timeout=30) as http:
            barrier.wait()
            answer = http.post(
                f"{api_bot.url}/api/v1/requests",
                json=RESTART,
                headers={"Authorization": f"Bearer {agent_token}", "Idempotency-Key": "race"},
            )
        with lock:
            answers.append(answer)

    threads = [threading.Thread(target=race) for _ in range(racers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert {a.status_code for a in answers} <= {201, 409}
    filed = {a.json()["id"] for a in answers if a.status_code == 201}
    assert len(filed) == 1
    in_flight = [a for a in answers if a.status_code == 409]
    assert all("still being handled" in a.json()["detail"] for a in in_flight)
    listed = call(api_bot, "GET", "/requests", agent_token).json()
    assert listed["total"] == 1
    retry = call(
        api_bot, "POST", "/requests", agent_token, json=RESTART, headers={"Idempotency-Key": "race"}
    )
    assert retry.json()["id"] in filed
