"""gateway settlements: answered calls' usage events, queued durably until ingested

Revision ID: 0011
Revises: 0010
Create Date: 2026-11-24 13:48:39.405029
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import billfold.db.base

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "gateway_settlements",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("organization_id", sa.String(length=40), nullable=False),
        sa.Column("event", sa.Text(), nullable=False),
        sa.Column("created_at", billfold.db.base.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["organization_id"],
            ["organizations.id"],
            name=op.f("fk_gateway_settlements_organization_id_organizations"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_gateway_settlements")),
    )


def downgrade() -> None:
    op.drop_table("gateway_settlements")
