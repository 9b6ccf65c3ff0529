"""Delivery of the audit trail to a webhook (a SIEM collector), at least once and in chain order.

The chain itself is the outbox: every committed event has a ``seq``, and the ``audit_sinks`` row
of the sink holds ``delivered_seq``, the last event the receiver accepted (2xx). Each run of
:meth:`WebhookSink.deliver_due` (a periodic job) claims the sink for :data:`LEASE_SECONDS` by a
guarded UPDATE (so one replica delivers at a time, and a replica that died mid-run is replaced
once its lease ran out), POSTs the following events one by one, outside any transaction, and
moves ``delivered_seq`` after each. A failure (refused connection, timeout, non-2xx) stops the
run and sets ``next_attempt_at`` with exponential backoff (1 s doubling up to
:data:`MAX_BACKOFF_SECONDS`). An event accepted but not yet recorded is sent again after a crash:
receivers deduplicate on ``X-Opsgate-Audit-Seq``.

Each body is signed as Slack signs its requests: ``X-Opsgate-Signature: v1=<hex HMAC-SHA256 of
"v1:<X-Opsgate-Request-Timestamp>:<body>" under the shared secret>``; :func:`signature` computes
it, for receivers too.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from itertools import islice

import httpx
from sqlalchemy import ColumnElement, and_, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from approvals.audit_export import Format, events, render
from approvals.models import AuditSink

log = logging.getLogger(__name__)

LEASE_SECONDS = 60.0
"""How long one run may hold the sink before another replica may take it over."""
MAX_BACKOFF_SECONDS = 300.0
"""The longest wait between two attempts after failures."""


def signature(secret: bytes, timestamp: str, body: bytes) -> str:
    """``v1=`` and the hex HMAC-SHA256 of ``b"v1:" + timestamp + b":" + body`` under ``secret``."""
    digest = hmac.new(secret, b"v1:" + timestamp.encode() + b":" + body, hashlib.sha256)
    return "v1=" + digest.hexdigest()


class WebhookSink:
    """Delivers the chained audit events to ``url``, signed with ``secret``.

    ``fmt``: ``jsonl`` (the event object) or ``cloudevents`` (a CloudEvents 1.0 JSON envelope).
    ``timeout``: seconds per POST. ``batch``: events per run at most. ``clock``: aware UTC now.
    """

    def __init__(
        self,
        sessions: sessionmaker[Session],
        url: str,
        secret: bytes,
        *,
        name: str = "webhook",
        fmt: Format = "jsonl",
        timeout: float = 10.0,
        batch: int = 500,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._sessions = sessions
        self._url = url
        self._secret = secret
        self._name = name
        self._fmt: Format = fmt
        self._timeout = timeout
        self._batch = batch
        self._clock = clock
        self._owner = uuid.uuid4().hex

    def deliver_due(self) -> int:
        """Deliver what is owed, if the sink is due and not leased elsewhere; returns how many
        events the receiver accepted in this run. Never raises for a receiver's failure."""
        start = self._claim()
        if start is None:
            return 0
        delivered = 0
        try:
            with httpx.Client(timeout=self._timeout) as client:
                with self._sessions() as session:
                    owed = events(session.connection(), after_seq=start, batch=self._batch)
                    pending = list(islice(owed, self._batch))
                for event in pending:
                    error = self._post(client, event["seq"], render(event, self._fmt))
                    if error is not None:
                        self._failed(error)
                        return delivered
                    self._advance(event["seq"])
                    delivered += 1
            self._release()
        except BaseException:
            self._failed("opsgate stopped the run")
            raise
        return delivered

    def _post(self, client: httpx.Client, seq: int, body: bytes) -> str | None:
        timestamp = str(int(self._clock().timestamp()))
        headers = {
            "Content-Type": "application/cloudevents+json"
            if self._fmt == "cloudevents"
            else "application/json",
            "X-Opsgate-Audit-Seq": str(seq),
            "X-Opsgate-Request-Timestamp": timestamp,
            "X-Opsgate-Signature": signature(self._secret, timestamp, body),
        }
        try:
            response = client.post(self._url, content=body, headers=headers)
        except httpx.HTTPError as exc:
            return f"{type(exc).__name__}: {exc}"
        if not response.is_success:
            return f"HTTP {response.status_code}"
        return None

    def _claim(self) -> int | None:
        """Take the lease if the sink is due; returns ``delivered_seq``, or None."""
        now = self._clock()
        with self._sessions.begin() as session:
            if session.get(AuditSink, self._name) is None:
                try:
                    with session.begin_nested():
                        session.add(AuditSink(name=self._name, delivered_seq=0, attempts=0))
                except IntegrityError:
                    pass  # another replica created it first

            claimed = session.execute(
                update(AuditSink)
                .where(
                    AuditSink.name == self._name,
                    or_(AuditSink.next_attempt_at.is_(None), AuditSink.next_attempt_at <= now),
                    or_(AuditSink.lease_until.is_(None), AuditSink.lease_until <= now),
                )
                .values(lease_owner=self._owner, lease_until=now + timedelta(seconds=LEASE_SECONDS))
                .execution_options(synchronize_session=False)
            )
            if claimed.rowcount != 1:  # type: ignore[attr-defined]
                return None
            return session.scalar(
                select(AuditSink.delivered_seq).where(AuditSink.name == self._name)
            )

    def _mine(self) -> ColumnElement[bool]:
        return and_(AuditSink.name == self._name, AuditSink.lease_owner == self._owner)

    def _advance(self, seq: int) -> None:
        with self._sessions.begin() as session:
            session.execute(
                update(AuditSink)
                .where(self._mine())
                .values(delivered_seq=seq, attempts=0, next_attempt_at=None, last_error=None)
            )

    def _release(self) -> None:
        with self._sessions.begin() as session:
            session.execute(
                update(AuditSink).where(self._mine()).values(lease_owner=None, lease_until=None)
            )

    def _failed(self, error: str) -> None:
        with self._sessions.begin() as session:
            sink = session.execute(select(AuditSink).where(self._mine())).scalar_one_or_none()
            if sink is None:
                return
            sink.attempts += 1
            wait = min(MAX_BACKOFF_SECONDS, 2.0 ** (sink.attempts - 1))
            sink.next_attempt_at = self._clock() + timedelta(seconds=wait)
            sink.last_error = error[:500]
            sink.lease_owner, sink.lease_until = None, None
            log.warning(
                "audit sink %s: delivery after seq %s failed (%s); attempt %d, next in %.0f s",
                self._name,
                sink.delivered_seq,
                error,
                sink.attempts,
                wait,
            )
