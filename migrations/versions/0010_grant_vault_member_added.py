"""grants.vault_member_added: whether a grant's Vault group membership is opsgate's to remove

A grant records whether its requester's Vault entity was already a member of the group before
the grant added it; ``vault_member_added`` is True when this grant (or the chain of overlapping
opsgate grants of the same entity and group it joined) added the membership, False when the
entity was a member before and no opsgate grant accounted for it (the membership then stays when
the grant ends), NULL for a grant without a Vault group. Grants made before this revision always
removed the membership at their end: they are marked True, which keeps that behaviour.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-04 17:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("grants") as batch:
        batch.add_column(sa.Column("vault_member_added", sa.Boolean(), nullable=True))
    grants = sa.table(
        "grants",
        sa.column("vault_group", sa.String()),
        sa.column("vault_member_added", sa.Boolean()),
    )
    op.execute(
        grants.update()
        .where(grants.c.vault_group.is_not(None))
        .values(vault_member_added=sa.true())
    )


def downgrade() -> None:
    with op.batch_alter_table("grants") as batch:
        batch.drop_column("vault_member_added")
