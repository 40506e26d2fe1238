"""usage rollups: count, sum, min and max per meter, customer, hour and group

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-24 09:00:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import billfold.db.base

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Meters created before this revision have no rollups yet: build them
    # from their events.
    op.create_table(
        "usage_rollups",
        sa.Column("organization_id", sa.String(length=40), nullable=False),
        sa.Column("meter_id", sa.String(length=40), nullable=False),
        sa.Column("customer_id", sa.String(length=40), nullable=False),
        sa.Column("hour", billfold.db.base.UTCDateTime(timezone=True), nullable=False),
        sa.Column("group_values", sa.Text(), nullable=False),
        sa.Column("event_count", sa.BigInteger(), nullable=False),
        sa.Column("value_sum", sa.Text().with_variant(sa.Numeric(), "postgresql"), nullable=False),
        sa.Column("value_min", sa.Text().with_variant(sa.Numeric(), "postgresql"), nullable=True),
        sa.Column("value_max", sa.Text().with_variant(sa.Numeric(), "postgresql"), nullable=True),
        sa.ForeignKeyConstraint(
            ["meter_id"], ["meters.id"], name=op.f("fk_usage_rollups_meter_id_meters")
        ),
        sa.ForeignKeyConstraint(
            ["organization_id"],
            ["organizations.id"],
            name=op.f("fk_usage_rollups_organization_id_organizations"),
        ),
        sa.PrimaryKeyConstraint(
            "organization_id",
            "meter_id",
            "customer_id",
            "hour",
            "group_values",
            name=op.f("pk_usage_rollups"),
        ),
    )
    from billfold.metering.rollups import rebuild_all_sync

    rebuild_all_sync(op.get_bind())


def downgrade() -> None:
    op.drop_table("usage_rollups")
