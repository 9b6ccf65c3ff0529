"""Schemathesis (the real tool) against the served OpenAPI document of ``/api/v1``.

The bot is served on a loopback port with its fakes; schemathesis loads
``/api/v1/openapi.json`` over HTTP, generates calls for every operation (with an agent's bearer
token) and checks each answer: never a 5xx, and every status, content type, header and body as
the document says. ``positive_data_acceptance`` is left out: a body the schema allows may still
be refused on its meaning (a workload that does not exist, a rule that denies), with a 4xx
problem the document lists.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from schemathesis.specs.openapi.checks import positive_data_acceptance
from sqlalchemy import create_engine, func, select

from approvals.models import AuditEvent
from bot.settings import Settings
from tests.fakes import slack
from tests.helpers.api import POLICY, store
from tests.helpers.bot import running_bot


@pytest.fixture
def policy_text() -> str:
    return POLICY


@pytest.fixture
def served(settings: Settings, fake_slack: slack.FakeSlack) -> Iterator[tuple[str, str]]:
    """The bot's URL and an agent's token."""
    with running_bot(settings, fake_slack) as bot:
        token, _ = store(settings).create(
            subject_id="U0DEPLOYBOT", subject_kind="agent", name="deploy-bot"
        )
        yield bot.url, token


@pytest.fixture
def api_schema(served: tuple[str, str]) -> Any:
    url, _ = served
    return schemathesis.openapi.from_url(f"{url}/api/v1/openapi.json")


def test_the_api_answers_as_its_openapi_document_says(
    api_schema: Any, served: tuple[str, str], settings: Settings
) -> None:
    url, token = served
    operations = [result.ok() for result in api_schema.get_all_operations()]
    assert {f"{op.method.upper()} {op.path}" for op in operations} >= {
        "POST /requests",
        "GET /requests/{request_id}",
        "GET /requests",
        "POST /requests/{request_id}/cancel",
        "POST /explain",
        "GET /grants",
        "POST /grants/{grant_id}/revoke",
    }
    for operation in operations:

        @given(case=operation.as_strategy())
        @hypothesis_settings(
            max_examples=12,
            deadline=None,
            suppress_health_check=list(HealthCheck),
            derandomize=True,
            database=None,
        )
        def check(case: Any) -> None:
            if case.query and isinstance(case.query.get("wait"), int):
                case.query["wait"] = min(case.query["wait"], 1)  # never hold an answer long
            case.call_and_validate(
                base_url=f"{url}/api/v1",
                headers={"Authorization": f"Bearer {token}"},
                excluded_checks=[positive_data_acceptance],
            )

        check()
    engine = create_engine(settings.database_url)
    with engine.connect() as conn:
        calls = conn.scalar(
            select(func.count()).select_from(AuditEvent).where(AuditEvent.event == "api_call")
        )
    engine.dispose()
    assert calls is not None
    assert calls > 3 * len(operations)  # the calls were made, authenticated
