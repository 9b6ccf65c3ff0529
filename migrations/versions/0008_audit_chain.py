"""audit_events hash chain (seq, prev_hash, hash), its head, and the audit sinks' cursors

The existing events are chained in id order (the order they were written in).

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-04 16:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from approvals.audit_chain import GENESIS, event_hash
from approvals.models import UTCDateTime

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("audit_events") as batch:
        batch.add_column(sa.Column("seq", sa.BigInteger(), nullable=True))
        batch.add_column(sa.Column("prev_hash", sa.String(64), nullable=True))
        batch.add_column(sa.Column("hash", sa.String(64), nullable=True))
        batch.create_unique_constraint("uq_audit_events_seq", ["seq"])
    head = op.create_table(
        "audit_chain_head",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("hash", sa.String(64), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_audit_chain_head"),
    )
    op.create_table(
        "audit_sinks",
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("delivered_seq", sa.BigInteger(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", UTCDateTime(), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("lease_owner", sa.String(64), nullable=True),
        sa.Column("lease_until", UTCDateTime(), nullable=True),
        sa.PrimaryKeyConstraint("name", name="pk_audit_sinks"),
    )
    seq, prev = _chain_existing()
    op.bulk_insert(head, [{"id": 1, "seq": seq, "hash": prev}])


def _chain_existing() -> tuple[int, str]:
    events = sa.table(
        "audit_events",
        *(
            sa.column(name)
            for name in [
                "id",
                "request_id",
                "event",
                "from_status",
                "to_status",
                "actor_id",
                "actor_kind",
                "action",
                "target",
                "rule",
                "policy_sha256",
                "seq",
                "prev_hash",
                "hash",
            ]
        ),
        sa.column("detail", sa.JSON()),
        sa.column("created_at", UTCDateTime()),
    )
    conn = op.get_bind()
    seq, prev = 0, GENESIS
    rows = conn.execute(sa.select(events).order_by(events.c.id)).mappings().all()
    for row in rows:
        seq += 1
        digest = event_hash({**row, "seq": seq, "prev_hash": prev})
        conn.execute(
            events.update()
            .where(events.c.id == row["id"])
            .values(seq=seq, prev_hash=prev, hash=digest)
        )
        prev = digest
    return seq, prev


def downgrade() -> None:
    op.drop_table("audit_sinks")
    op.drop_table("audit_chain_head")
    with op.batch_alter_table("audit_events") as batch:
        batch.drop_constraint("uq_audit_events_seq", type_="unique")
        batch.drop_column("hash")
        batch.drop_column("prev_hash")
        batch.drop_column("seq")
