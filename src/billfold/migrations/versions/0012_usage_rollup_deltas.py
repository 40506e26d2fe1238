"""usage rollup deltas: what each ingest adds, appended, compacted by the worker

Revision ID: 0012
Revises: 0011
Create Date: 2026-11-24 23:26:21.646351

No foreign keys: ingest appends a row per customer, hour and group of a batch,
and a key check per row would cost about as much as the row. Every row names
a meter and organization that ingest has just read, and lives until the
worker's next compaction.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import billfold.db.base

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "usage_rollup_deltas",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("organization_id", sa.String(length=40), nullable=False),
        sa.Column("meter_id", sa.String(length=40), nullable=False),
        sa.Column("customer_id", sa.String(length=40), nullable=False),
        sa.Column("hour", billfold.db.base.UTCDateTime(timezone=True), nullable=False),
        sa.Column("group_values", sa.Text(), nullable=False),
        sa.Column("event_count", sa.BigInteger(), nullable=False),
        sa.Column("value_sum", sa.Text().with_variant(sa.Numeric(), "postgresql"), nullable=False),
        sa.Column("value_min", sa.Text().with_variant(sa.Numeric(), "postgresql"), nullable=True),
        sa.Column("value_max", sa.Text().with_variant(sa.Numeric(), "postgresql"), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_usage_rollup_deltas")),
    )
    op.create_index(
        "ix_usage_rollup_deltas_key",
        "usage_rollup_deltas",
        ["organization_id", "meter_id", "customer_id", "hour"],
        unique=False,
    )


def downgrade() -> None:
    op.drop_index("ix_usage_rollup_deltas_key", table_name="usage_rollup_deltas")
    op.drop_table("usage_rollup_deltas")
