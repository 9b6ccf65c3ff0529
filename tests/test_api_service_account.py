"""An in-cluster agent authenticates to the HTTP API with its ServiceAccount token, checked
with a TokenReview against the fake Kubernetes API over real HTTP (issue 12): no opsgate secret
is handed out."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import create_engine, select

from approvals.models import AuditEvent
from bot.settings import Settings
from tests.fakes import slack
from tests.fakes.kube import FakeKubernetes
from tests.helpers.api import POLICY, RESTART, call
from tests.helpers.bot import RunningBot, running_bot

SA_POLICY = POLICY.replace(
    "  U0DEPLOYBOT: {name: deploy-bot}\n",
    "  U0DEPLOYBOT:\n"
    "    name: deploy-bot\n"
    "    service_account: {namespace: ci, name: deployer, environment: prod}\n",
)
assert SA_POLICY != POLICY


@pytest.fixture
def policy_text() -> str:
    return SA_POLICY


@pytest.fixture
def api_bot(settings: Settings, fake_slack: slack.FakeSlack) -> Iterator[RunningBot]:
    with running_bot(settings, fake_slack) as running:
        yield running


def test_a_service_account_token_acts_as_its_agent(
    api_bot: RunningBot, kube: FakeKubernetes, settings: Settings
) -> None:
    token = kube.token_reviews.issue("ci", "deployer")
    filed = call(api_bot, "POST", "/requests", token, json=RESTART)
    assert filed.status_code == 201, filed.text
    assert filed.json()["requester"] == {
        "id": "U0DEPLOYBOT",
        "kind": "agent",
        "agent": "deploy-bot",
    }
    assert "agent *deploy-bot*" in api_bot.approval_message().args["text"]
    assert kube.token_reviews.reviews == ["system:serviceaccount:ci:deployer"]
    engine = create_engine(settings.database_url)
    with engine.connect() as conn:
        detail = conn.execute(
            select(AuditEvent.detail).where(AuditEvent.event == "api_call")
        ).scalar_one()
    engine.dispose()
    assert detail["service_account"] == "system:serviceaccount:ci:deployer"
    assert token not in str(detail)


def test_other_and_invalidated_service_account_tokens_get_401(
    api_bot: RunningBot, kube: FakeKubernetes
) -> None:
    stranger = kube.token_reviews.issue("ci", "someone-else")
    refused = call(api_bot, "GET", "/requests", stranger)
    assert refused.status_code == 401
    assert "system:serviceaccount:ci:someone-else" in refused.json()["detail"]

    token = kube.token_reviews.issue("ci", "deployer")
    assert call(api_bot, "GET", "/requests", token).status_code == 200
    kube.token_reviews.invalidate(token)
    gone = call(api_bot, "GET", "/requests", token)
    assert gone.status_code == 401
    assert gone.headers["www-authenticate"].startswith("Bearer")
    assert call(api_bot, "GET", "/requests", "not-a-jwt").status_code == 401
