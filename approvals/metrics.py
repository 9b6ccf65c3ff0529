"""Prometheus metrics of the engine (prometheus-client), counted where it acts.

Counters and histograms are per process (each replica counts what it did; Prometheus sums them):

* ``opsgate_requests_total{action,outcome}``: a request reached ``outcome`` (``approved``,
  ``denied``, ``cancelled``, ``expired``, ``succeeded``, ``failed``, ``unknown``, or ``active``:
  an access grant started). A request counts once per outcome it reaches (approved, then
  succeeded); ``outcome`` never repeats for one request.
* ``opsgate_request_decision_seconds``: from filed to approved or denied by a person (not the
  policy's ``approval: auto``), in seconds.
* ``opsgate_execution_seconds{action}``: from ``executing`` to its end (a rollout followed to
  its end included), in seconds.
* ``opsgate_grant_revocation_lag_seconds``: how long after its ``expires_at`` a grant's removal
  was confirmed by the backends, in seconds (grants revoked early are not observed).
* ``opsgate_grant_revocation_failures_total``: removals of a grant that failed (each is retried).
* ``opsgate_drift_corrections_total``: RoleBindings and Vault group members removed by the
  drift check.

The request counters are fed by :class:`MeteredNotifier`, which the app puts around the gate's
notifier: the gate calls it once for every transition it committed, whichever replica made it.
Gauges (``opsgate_pending_requests``, ``opsgate_active_grants``, ``opsgate_overdue_grants``) are
read from the database at each scrape by :class:`DatabaseCollector`, so every replica reports the
same value (aggregate them with ``max``, not ``sum``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import UTC, datetime
from typing import Any

from prometheus_client import Counter, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy import func, select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from approvals.lifecycle import SYSTEM
from approvals.models import AuditEvent, Grant, GrantStatus, Request, Status
from approvals.notifier import MessageRef, Notifier, OpenedRefs, RequestView

OUTCOMES = frozenset(
    {"approved", "denied", "cancelled", "expired", "succeeded", "failed", "unknown", "active"}
)
"""The ``event`` values of ``Notifier.request_changed`` counted as an outcome."""

EXECUTION_ENDS = frozenset({"succeeded", "failed", "unknown", "active"})
"""The outcomes that end an execution."""

REQUESTS = Counter("opsgate_requests", "Requests that reached an outcome.", ["action", "outcome"])
DECISION_SECONDS = Histogram(
    "opsgate_request_decision_seconds",
    "Seconds from a request filed to a person's approval or denial.",
    buckets=(5, 15, 30, 60, 120, 300, 600, 1800, 3600, 7200, 14400, 43200, 86400),
)
EXECUTION_SECONDS = Histogram(
    "opsgate_execution_seconds",
    "Seconds from the start of an execution to its end (rollout included).",
    ["action"],
    buckets=(0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600),
)
REVOCATION_LAG = Histogram(
    "opsgate_grant_revocation_lag_seconds",
    "Seconds from a grant's expires_at to the backends confirming its removal.",
    buckets=(0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120, 300, 900),
)
REVOCATION_FAILURES = Counter(
    "opsgate_grant_revocation_failures", "Removals of a grant from the backends that failed."
)
DRIFT_CORRECTIONS = Counter(
    "opsgate_drift_corrections", "RoleBindings and Vault group members the drift check removed."
)


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def revocations(removals: Iterable[Any], recorded: Sequence[int]) -> None:
    """Count what one revocation pass gave: each failed removal, and the lag of each grant
    removed at or after its ``expires_at`` (by the sweep, or by the drift check when it found
    the binding past its expiry) whose removal this pass recorded (``recorded``: their grant
    IDs). ``removals`` are
    :class:`approvals.grants._Removal` (``grant``, ``at``, ``error``)."""
    done = set(recorded)
    for removal in removals:
        if removal.error is not None:
            REVOCATION_FAILURES.inc()
        elif removal.grant.id in done:
            lag = _aware(removal.at) - _aware(removal.grant.expires_at)
            if lag.total_seconds() >= 0:  # not one revoked early
                REVOCATION_LAG.observe(lag.total_seconds())


class MeteredNotifier:
    """The gate's :class:`~approvals.notifier.Notifier` ``inner``, counting each request outcome
    before passing it on (counted even when the announcement then fails: the change is
    committed). ``sessions`` reads when an execution began, from the audit trail."""

    def __init__(self, inner: Notifier, sessions: sessionmaker[Session]) -> None:
        self._inner = inner
        self._sessions = sessions

    def request_opened(
        self,
        request: RequestView,
        *,
        approval_posted: Callable[[MessageRef], None] | None = None,
        thread_posted: Callable[[MessageRef], None] | None = None,
    ) -> OpenedRefs:
        return self._inner.request_opened(
            request, approval_posted=approval_posted, thread_posted=thread_posted
        )

    def review_opened(self, request: RequestView) -> MessageRef | None:
        return self._inner.review_opened(request)

    def card_changed(self, request: RequestView) -> None:
        self._inner.card_changed(request)

    def request_changed(self, request: RequestView, *, event: str) -> None:
        self.count(request, event)
        self._inner.request_changed(request, event=event)

    def count(self, request: RequestView, event: str) -> None:
        """Count ``event`` of ``request`` (a view read after the transition was committed)."""
        if event not in OUTCOMES:
            return
        REQUESTS.labels(request.action, event).inc()
        at = _aware(request.updated_at)
        if event in ("approved", "denied") and request.decided_by not in (None, SYSTEM.id):
            DECISION_SECONDS.observe((at - _aware(request.created_at)).total_seconds())
        if event in EXECUTION_ENDS:
            began = self._execution_began(request.id)
            if began is not None:
                seconds = (at - _aware(began)).total_seconds()
                EXECUTION_SECONDS.labels(request.action).observe(max(seconds, 0.0))

    def _execution_began(self, request_id: int) -> datetime | None:
        try:
            with self._sessions() as session:
                return session.scalar(
                    select(func.max(AuditEvent.created_at)).where(
                        AuditEvent.request_id == request_id,
                        AuditEvent.to_status == Status.EXECUTING.value,
                    )
                )
        except SQLAlchemyError:
            return None


class DatabaseCollector(Collector):
    """Gauges read from the database at each scrape, the same from every replica:
    ``opsgate_pending_requests``, ``opsgate_active_grants``, ``opsgate_overdue_grants`` (active
    or being revoked past their ``expires_at`` by the ``clock``) and ``opsgate_database_up``
    (0 when the database could not be read; then the others are absent)."""

    def __init__(self, sessions: sessionmaker[Session], clock: Callable[[], datetime]) -> None:
        self._sessions = sessions
        self._clock = clock

    def collect(self) -> Iterator[GaugeMetricFamily]:
        up = GaugeMetricFamily("opsgate_database_up", "1 when the database answered the scrape.")
        try:
            with self._sessions() as session:
                pending = session.scalar(
                    select(func.count()).where(Request.status == Status.PENDING.value)
                )
                active = session.scalar(
                    select(func.count()).where(Grant.status == GrantStatus.ACTIVE.value)
                )
                overdue = session.scalar(
                    select(func.count()).where(
                        Grant.status.in_([GrantStatus.ACTIVE.value, GrantStatus.REVOKING.value]),
                        Grant.expires_at <= self._clock(),
                    )
                )
        except SQLAlchemyError:
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        yield GaugeMetricFamily(
            "opsgate_pending_requests", "Requests waiting for a decision.", value=pending or 0
        )
        yield GaugeMetricFamily(
            "opsgate_active_grants", "Access grants in force.", value=active or 0
        )
        yield GaugeMetricFamily(
            "opsgate_overdue_grants",
            "Access grants past their expires_at and not yet revoked.",
            value=overdue or 0,
        )
