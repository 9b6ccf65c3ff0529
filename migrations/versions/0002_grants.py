"""grants: time-bound access grants, one per access request

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-21 13:10:00.000000

Reviewed by hand: ``id`` is the access request's ID (no sequence of its own, hence
``autoincrement=False``); the sweep selects ``status = 'active' AND expires_at <= now`` through
``ix_grants_status_expires_at``.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "grants",
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("grantee_id", sa.String(length=64), nullable=False),
        sa.Column("kube_context", sa.String(length=253), nullable=True),
        sa.Column("environment", sa.String(length=64), nullable=True),
        sa.Column("namespace", sa.String(length=253), nullable=False),
        sa.Column("role", sa.String(length=253), nullable=False),
        sa.Column("cluster_role", sa.String(length=253), nullable=False),
        sa.Column("kubernetes_user", sa.String(length=253), nullable=False),
        sa.Column("role_binding", sa.String(length=253), nullable=False),
        sa.Column("vault_group", sa.String(length=253), nullable=True),
        sa.Column("vault_entity", sa.String(length=253), nullable=True),
        sa.Column("vault_entity_id", sa.String(length=64), nullable=True),
        sa.Column("duration_seconds", sa.Integer(), nullable=False),
        sa.Column("max_duration_seconds", sa.Integer(), nullable=True),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("reminded_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("revoked_by", sa.String(length=64), nullable=True),
        sa.Column("revoke_reason", sa.Text(), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["id"], ["requests.id"], name=op.f("fk_grants_id_requests"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_grants")),
    )
    with op.batch_alter_table("grants", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_grants_grantee_id"), ["grantee_id"], unique=False)
        batch_op.create_index("ix_grants_status_expires_at", ["status", "expires_at"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("grants", schema=None) as batch_op:
        batch_op.drop_index("ix_grants_status_expires_at")
        batch_op.drop_index(batch_op.f("ix_grants_grantee_id"))
    op.drop_table("grants")
