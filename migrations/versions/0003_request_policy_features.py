"""requests: pending TTL, escalation and break-glass review columns

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-21 14:05:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("requests") as batch:
        batch.add_column(sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("escalate_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("escalated_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(
            sa.Column("break_glass", sa.Boolean(), nullable=False, server_default=sa.false())
        )
        batch.add_column(sa.Column("review_channel_id", sa.String(length=64), nullable=True))
        batch.add_column(sa.Column("review_ts", sa.String(length=32), nullable=True))
        batch.add_column(sa.Column("reviewed_by", sa.String(length=64), nullable=True))
        batch.add_column(sa.Column("reviewed_at", sa.DateTime(timezone=True), nullable=True))
        batch.create_index(batch.f("ix_requests_expires_at"), ["expires_at"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("requests") as batch:
        batch.drop_index(batch.f("ix_requests_expires_at"))
        for column in (
            "reviewed_at",
            "reviewed_by",
            "review_ts",
            "review_channel_id",
            "break_glass",
            "escalated_at",
            "escalate_at",
            "expires_at",
        ):
            batch.drop_column(column)
