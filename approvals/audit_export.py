"""The audit trail as JSON lines or CloudEvents, in chain order, from a position onwards.

An exported event is a JSON object with the columns of ``audit_events`` (``seq`` first, the chain
position that ``--since`` and cursors count in; ``created_at`` in RFC 3339 UTC). As a CloudEvent
(CloudEvents 1.0, JSON format, written by the ``cloudevents`` SDK) the same object is the
``data``; ``id`` is ``opsgate-audit-<seq>``, ``type`` ``io.opsgate.audit.<event>``, ``subject``
``request/<request id>`` when there is one, and the extension ``sequence`` is the chain position.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any, Literal, cast

from cloudevents.core.formats.json import JSONFormat
from cloudevents.core.v1.event import CloudEvent
from sqlalchemy import Connection, Table, select

from approvals.audit_chain import FIELDS
from approvals.models import AuditEvent

Format = Literal["jsonl", "cloudevents"]
SOURCE = "urn:opsgate:audit"
"""The CloudEvents ``source`` of every exported event."""

_TABLE = cast(Table, AuditEvent.__table__)
_COLUMNS = ("seq", *(name for name in FIELDS if name != "seq"), "hash")


def events(
    connection: Connection,
    *,
    after_seq: int = 0,
    since_time: datetime | None = None,
    batch: int = 1000,
) -> Iterator[dict[str, Any]]:
    """The chained events with ``seq > after_seq`` (and ``created_at >= since_time`` when given),
    in chain order, as JSON-ready dicts; read ``batch`` at a time, so memory stays bounded."""
    after = after_seq
    while True:
        query = select(_TABLE).where(_TABLE.c.seq > after)
        if since_time is not None:
            query = query.where(_TABLE.c.created_at >= since_time)
        page = connection.execute(query.order_by(_TABLE.c.seq).limit(batch)).mappings().all()
        if not page:
            return
        for row in page:
            yield _plain(row)
        after = page[-1]["seq"]


def _plain(row: Any) -> dict[str, Any]:
    plain = {name: row[name] for name in _COLUMNS}
    created: datetime = plain["created_at"]
    plain["created_at"] = created.astimezone(UTC).isoformat().replace("+00:00", "Z")
    return plain


def render(event: dict[str, Any], fmt: Format) -> bytes:
    """One exported event (from :func:`events`) as one line of ``fmt``, without the newline."""
    if fmt == "jsonl":
        return json.dumps(event, separators=(",", ":"), ensure_ascii=False).encode()
    attributes: dict[str, Any] = {
        "id": f"opsgate-audit-{event['seq']}",
        "source": SOURCE,
        "type": f"io.opsgate.audit.{event['event']}",
        "time": datetime.fromisoformat(event["created_at"].replace("Z", "+00:00")),
        "datacontenttype": "application/json",
        "sequence": str(event["seq"]),
    }
    if event["request_id"] is not None:
        attributes["subject"] = f"request/{event['request_id']}"
    return JSONFormat().write(CloudEvent(attributes, event))
