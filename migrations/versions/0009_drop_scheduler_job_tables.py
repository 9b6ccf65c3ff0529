"""drop the scheduler's per-instance job tables (opsgate_jobs_<instance>)

The expiry scheduler keeps its two wake-ups in memory now (approvals/expiry.py): every start sets
them again from the grants table. The tables earlier versions created, one per instance name
(the host name by default, so one per pod that ever ran), are dropped. A replica of an earlier
version still running during a rolling upgrade only logs that its table is gone; its periodic
sweep goes on revoking on time until it is replaced.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-04 16:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from approvals.db import SCHEDULER_TABLE_PREFIX

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    bind = op.get_bind()
    for name in sa.inspect(bind).get_table_names():
        if name.startswith(SCHEDULER_TABLE_PREFIX):
            op.drop_table(name)


def downgrade() -> None:
    """Nothing: an earlier version's scheduler creates its table at its start."""
