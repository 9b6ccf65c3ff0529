"""Grant and request views as the grant notifier gets them."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime
from typing import Any

from approvals.notifier import GrantView, RequestView

NOW = datetime(2026, 11, 21, 4, 40, tzinfo=UTC)


def grant(**kw: Any) -> GrantView:
    values: dict[str, Any] = {
        "id": 12,
        "grantee_id": "U0DEV1",
        "environment": "prod",
        "kube_context": "prod",
        "namespace": "payments",
        "role": "edit",
        "kubernetes_user": "alice@example.com",
        "role_binding": "opsgate-grant-12",
        "vault_group": "prod-edit",
        "vault_entity": "alice",
        "status": "active",
        "started_at": datetime(2026, 11, 21, 3, 0, tzinfo=UTC),
        "expires_at": datetime(2026, 11, 21, 5, 0, tzinfo=UTC),
        "duration_seconds": 7200,
        "max_duration_seconds": 4 * 3600,
    }
    values.update(kw)
    return GrantView(**values)


def request(request_id: int, requester: str = "U0DEV2") -> RequestView:
    fields: dict[str, Any] = {}
    for f in dataclasses.fields(RequestView):
        if f.default is not dataclasses.MISSING:
            continue
        if f.default_factory is not dataclasses.MISSING:
            continue
        fields[f.name] = None
    fields.update(
        id=request_id,
        action="access",
        status="pending",
        requester_id=requester,
        requester_kind="human",
        target="view access to checkout",
        environment="prod",
        namespace="checkout",
        reason="debugging INC-7",
        preview_lines=(),
        approver_groups=("sre",),
        min_approvals=1,
        approved_by=(),
        incident=False,
        created_at=NOW,
        updated_at=NOW,
    )
    return RequestView(**fields)
