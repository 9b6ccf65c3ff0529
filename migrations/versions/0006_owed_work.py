"""owed_work: what Slack's listeners acked and handed off, until it is done

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-04 15:45:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "owed_work",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("dedupe_key", sa.String(length=128), nullable=True),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("payload", sa.JSON(), nullable=False),
        sa.Column("user_id", sa.String(length=64), nullable=False),
        sa.Column("response_url", sa.Text(), nullable=True),
        sa.Column("owner", sa.String(length=128), nullable=False),
        sa.Column("lease_until", sa.DateTime(timezone=True), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("done_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_owed_work")),
        sa.UniqueConstraint("dedupe_key", name=op.f("uq_owed_work_dedupe_key")),
    )
    op.create_index(op.f("ix_owed_work_lease_until"), "owed_work", ["lease_until"], unique=False)
    op.create_index(op.f("ix_owed_work_received_at"), "owed_work", ["received_at"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_owed_work_received_at"), table_name="owed_work")
    op.drop_index(op.f("ix_owed_work_lease_until"), table_name="owed_work")
    op.drop_table("owed_work")
