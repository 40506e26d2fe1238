"""vendors, LLM price tables, event costs

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-24 08:00:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import billfold.db.base

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "llm_price_tables",
        sa.Column("version", sa.String(length=80), nullable=False),
        sa.Column("effective_from", billfold.db.base.UTCDateTime(timezone=True), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("document", sa.Text(), nullable=False),
        sa.Column("imported_at", billfold.db.base.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("version", name=op.f("pk_llm_price_tables")),
    )
    op.create_index(
        op.f("ix_llm_price_tables_effective_from"),
        "llm_price_tables",
        ["effective_from"],
        unique=False,
    )
    op.create_table(
        "cost_alert_states",
        sa.Column("organization_id", sa.String(length=40), nullable=False),
        sa.Column("customer_id", sa.String(length=40), nullable=False),
        sa.Column("topic", sa.String(length=64), nullable=False),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("changed_at", billfold.db.base.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["organization_id"],
            ["organizations.id"],
            name=op.f("fk_cost_alert_states_organization_id_organizations"),
        ),
        sa.PrimaryKeyConstraint(
            "organization_id", "customer_id", "topic", name=op.f("pk_cost_alert_states")
        ),
    )
    op.create_table(
        "cost_settings",
        sa.Column("organization_id", sa.String(length=40), nullable=False),
        sa.Column("unknown_model_policy", sa.String(length=16), nullable=False),
        sa.Column("markup_percent", sa.String(length=40), nullable=False),
        sa.Column("reporting_asset", sa.String(length=20), nullable=False),
        sa.Column("margin_low_percent", sa.String(length=40), nullable=True),
        sa.Column("alert_window_days", sa.Integer(), nullable=False),
        sa.Column("updated_at", billfold.db.base.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["organization_id"],
            ["organizations.id"],
            name=op.f("fk_cost_settings_organization_id_organizations"),
        ),
        sa.PrimaryKeyConstraint("organization_id", name=op.f("pk_cost_settings")),
    )
    op.create_table(
        "event_costs",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("organization_id", sa.String(length=40), nullable=False),
        sa.Column("cost_key", sa.String(length=320), nullable=False),
        sa.Column("event_id", sa.String(length=255), nullable=False),
        sa.Column("event_type", sa.String(length=100), nullable=False),
        sa.Column("customer_id", sa.String(length=40), nullable=False),
        sa.Column("event_timestamp", billfold.db.base.UTCDateTime(timezone=True), nullable=False),
        sa.Column("vendor_id", sa.String(length=40), nullable=True),
        sa.Column("vendor_code", sa.String(length=64), nullable=True),
        sa.Column("category", sa.String(length=64), nullable=True),
        sa.Column("source", sa.String(length=16), nullable=False),
        sa.Column("status", sa.String(length=32), nullable=False),
        sa.Column("detail", sa.Text(), nullable=True),
        sa.Column("amount_minor", sa.BigInteger(), nullable=True),
        sa.Column("asset_code", sa.String(length=20), nullable=False),
        sa.Column("original_amount_minor", sa.BigInteger(), nullable=True),
        sa.Column("original_asset_code", sa.String(length=20), nullable=True),
        sa.Column("rate_id", sa.String(length=40), nullable=True),
        sa.Column("provider", sa.String(length=40), nullable=True),
        sa.Column("model", sa.String(length=200), nullable=True),
        sa.Column("price_table_version", sa.String(length=80), nullable=True),
        sa.Column("override_id", sa.String(length=40), nullable=True),
        sa.Column("breakdown", sa.Text(), nullable=True),
        sa.Column("raw_usage", sa.Text(), nullable=True),
        sa.Column("created_at", billfold.db.base.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["organization_id"],
            ["organizations.id"],
            name=op.f("fk_event_costs_organization_id_organizations"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_event_costs")),
        sa.UniqueConstraint(
            "organization_id", "cost_key", name=op.f("uq_event_costs_organization_id_cost_key")
        ),
    )
    op.create_index(
        "ix_event_costs_customer",
        "event_costs",
        ["organization_id", "customer_id", "event_timestamp"],
        unique=False,
    )
    op.create_index(
        "ix_event_costs_event", "event_costs", ["organization_id", "event_id"], unique=False
    )
    op.create_index(
        "ix_event_costs_time", "event_costs", ["organization_id", "event_timestamp"], unique=False
    )
    op.create_table(
        "llm_price_overrides",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("organization_id", sa.String(length=40), nullable=False),
        sa.Column("provider", sa.String(length=40), nullable=False),
        sa.Column("model", sa.String(length=200), nullable=True),
        sa.Column("rates", sa.Text(), nullable=False),
        sa.Column("multiplier", sa.String(length=40), nullable=True),
        sa.Column("effective_from", billfold.db.base.UTCDateTime(timezone=True), nullable=False),
        sa.Column("created_at", billfold.db.base.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["organization_id"],
            ["organizations.id"],
            name=op.f("fk_llm_price_overrides_organization_id_organizations"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_llm_price_overrides")),
    )
    op.create_index(
        "ix_llm_price_overrides_lookup",
        "llm_price_overrides",
        ["organization_id", "provider", "effective_from"],
        unique=False,
    )
    op.create_table(
        "vendors",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("organization_id", sa.String(length=40), nullable=False),
        sa.Column("code", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=True),
        sa.Column("created_at", billfold.db.base.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["organization_id"],
            ["organizations.id"],
            name=op.f("fk_vendors_organization_id_organizations"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_vendors")),
        sa.UniqueConstraint(
            "organization_id", "code", name=op.f("uq_vendors_organization_id_code")
        ),
    )
    op.create_index(
        "ix_vendors_organization_id_id", "vendors", ["organization_id", "id"], unique=False
    )


def downgrade() -> None:
    op.drop_index("ix_vendors_organization_id_id", table_name="vendors")
    op.drop_table("vendors")
    op.drop_index("ix_llm_price_overrides_lookup", table_name="llm_price_overrides")
    op.drop_table("llm_price_overrides")
    op.drop_index("ix_event_costs_time", table_name="event_costs")
    op.drop_index("ix_event_costs_event", table_name="event_costs")
    op.drop_index("ix_event_costs_customer", table_name="event_costs")
    op.drop_table("event_costs")
    op.drop_table("cost_settings")
    op.drop_table("cost_alert_states")
    op.drop_index(op.f("ix_llm_price_tables_effective_from"), table_name="llm_price_tables")
    op.drop_table("llm_price_tables")
