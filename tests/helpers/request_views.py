"""Request views as the notifier gets them, for the Block Kit tests."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from approvals.notifier import MessageRef, RequestView

NOW = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


RULE = "rules[1] 'prod restarts' (line 14)"


def make_view(**overrides: Any) -> RequestView:
    """A pending restart in prod that needs one approval from sre; override any field."""
    fields: dict[str, Any] = {
        "id": 12,
        "action": "restart",
        "status": "pending",
        "requester_id": "U0DEV1",
        "requester_kind": "user",
        "target": "deployment/payments-api",
        "environment": "prod",
        "namespace": "payments",
        "reason": "memory leak",
        "preview_lines": (
            "deployment/payments-api in payments: 3/3 ready",
            "image: registry.example.com/payments-api:1.4.2",
        ),
        "rule": RULE,
        "approver_groups": ("sre",),
        "min_approvals": 1,
        "approved_by": (),
        "decided_by": None,
        "result": None,
        "error": None,
        "origin_channel_id": "C0DEV",
        "incident": False,
        "response_url": None,
        "approval_channel": "C0APPROVALS",
        "approval": MessageRef("C0APPROVALS", "1714564800.000100"),
        "thread": MessageRef("C0DEV", "1714564800.000200"),
        "created_at": NOW,
        "updated_at": NOW,
    }
    fields.update(overrides)
    return RequestView(**fields)
