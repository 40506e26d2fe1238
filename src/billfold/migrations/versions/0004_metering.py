"""metering: usage events and meters

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-24 05:48:12.666152
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

import billfold.db.base

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # One row per (organization, client event id), forever: the primary key is
    # the dedup guard.
    op.create_table(
        "events",
        sa.Column("organization_id", sa.String(length=40), nullable=False),
        sa.Column("id", sa.String(length=255), nullable=False),
        sa.Column("customer_id", sa.String(length=40), nullable=False),
        sa.Column("type", sa.String(length=100), nullable=False),
        sa.Column("timestamp", billfold.db.base.UTCDateTime(timezone=True), nullable=False),
        sa.Column(
            "data",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("fingerprint", sa.String(length=64), nullable=False),
        sa.Column("received_at", billfold.db.base.UTCDateTime(timezone=True), nullable=False),
        sa.Column("authorization_id", sa.String(length=64), nullable=True),
        sa.Column(
            "costs",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=True,
        ),
        sa.ForeignKeyConstraint(
            ["organization_id"],
            ["organizations.id"],
            name=op.f("fk_events_organization_id_organizations"),
        ),
        sa.PrimaryKeyConstraint("organization_id", "id", name=op.f("pk_events")),
    )
    op.create_index(
        "ix_events_usage",
        "events",
        ["organization_id", "customer_id", "type", "timestamp"],
        unique=False,
    )
    op.create_table(
        "meters",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("organization_id", sa.String(length=40), nullable=False),
        sa.Column("code", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=True),
        sa.Column("event_type", sa.String(length=100), nullable=False),
        sa.Column("aggregation", sa.String(length=16), nullable=False),
        sa.Column("field", sa.String(length=200), nullable=True),
        sa.Column(
            "filters",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("group_by", sa.JSON(), nullable=False),
        sa.Column("created_at", billfold.db.base.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["organization_id"],
            ["organizations.id"],
            name=op.f("fk_meters_organization_id_organizations"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_meters")),
        sa.UniqueConstraint("organization_id", "code", name=op.f("uq_meters_organization_id_code")),
    )
    op.create_index(
        "ix_meters_organization_id_event_type",
        "meters",
        ["organization_id", "event_type"],
        unique=False,
    )
    op.create_index(
        "ix_meters_organization_id_id", "meters", ["organization_id", "id"], unique=False
    )


def downgrade() -> None:
    op.drop_index("ix_meters_organization_id_id", table_name="meters")
    op.drop_index("ix_meters_organization_id_event_type", table_name="meters")
    op.drop_table("meters")
    op.drop_index("ix_events_usage", table_name="events")
    op.drop_table("events")
