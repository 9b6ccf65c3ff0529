"""``GET /metrics`` (Prometheus text format) and the Slack client's metrics and retries.

The engine's metrics are in :mod:`approvals.metrics` and :mod:`actions.metrics` (prometheus-client's
default registry); the database gauges are collected per app (:func:`metrics_registry`). This
module adds ``opsgate_slack_api_errors_total{method}`` (a Slack Web API call that failed after
its retries) and the Slack client, :class:`MeteredWebClient`, which retries as slack_sdk's own
handlers do: a 429 after its ``Retry-After`` (``RateLimitErrorRetryHandler``) and a 5xx with
exponential backoff (``ServerErrorRetryHandler``), besides the connection errors slack_sdk
retries by default.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from prometheus_client import REGISTRY, CollectorRegistry, Counter, generate_latest
from slack_sdk import WebClient
from slack_sdk.errors import SlackClientError
from slack_sdk.http_retry.builtin_handlers import (
    RateLimitErrorRetryHandler,
    ServerErrorRetryHandler,
)
from slack_sdk.web.slack_response import SlackResponse
from sqlalchemy.orm import Session, sessionmaker

from approvals.metrics import DatabaseCollector

SLACK_API_ERRORS = Counter(
    "opsgate_slack_api_errors",
    "Slack Web API calls that failed after their retries (an error answer, 429 or 5xx, or no "
    "answer).",
    ["method"],
)

RATE_LIMIT_RETRIES = 3
"""Retries of a call Slack answered 429, each after the ``Retry-After`` seconds it gave."""

SERVER_ERROR_RETRIES = 2
"""Retries of a call Slack answered 5xx, after 0.5 s then 1 s (slack_sdk's backoff)."""


class MeteredWebClient(WebClient):
    """slack_sdk's ``WebClient`` (same arguments) with the 429 and 5xx retry handlers added, and
    each call that still fails counted in ``opsgate_slack_api_errors_total{method}``."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.retry_handlers.append(RateLimitErrorRetryHandler(max_retry_count=RATE_LIMIT_RETRIES))
        self.retry_handlers.append(ServerErrorRetryHandler(max_retry_count=SERVER_ERROR_RETRIES))

    def api_call(self, api_method: str, **kwargs: Any) -> SlackResponse:
        """``WebClient.api_call``; raises what it raises, after counting it."""
        try:
            return super().api_call(api_method, **kwargs)
        except SlackClientError:
            SLACK_API_ERRORS.labels(api_method).inc()
            raise


def metrics_registry(
    sessions: sessionmaker[Session], clock: Callable[[], datetime]
) -> CollectorRegistry:
    """A registry of one app's database gauges (:class:`approvals.metrics.DatabaseCollector`)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(DatabaseCollector(sessions, clock))
    return registry


def exposition(app_registry: CollectorRegistry) -> bytes:
    """The text of ``GET /metrics``: the process's metrics, then the app's database gauges."""
    return generate_latest(REGISTRY) + generate_latest(app_registry)
