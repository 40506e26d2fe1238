"""real-time billing: event fees, running period totals, wallet debt

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-24 08:00:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

import billfold.db.base

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "event_fees",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("organization_id", sa.String(length=40), nullable=False),
        sa.Column("event_id", sa.String(length=255), nullable=False),
        sa.Column("event_type", sa.String(length=100), nullable=False),
        sa.Column("customer_id", sa.String(length=40), nullable=False),
        sa.Column("subscription_id", sa.String(length=40), nullable=True),
        sa.Column("price_code", sa.String(length=64), nullable=False),
        sa.Column("asset_code", sa.String(length=20), nullable=False),
        sa.Column("amount_minor", sa.BigInteger(), nullable=False),
        sa.Column("quantity", sa.String(length=80), nullable=False),
        sa.Column("dimension", sa.Integer(), nullable=True),
        sa.Column(
            "lines",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("period_start", billfold.db.base.UTCDateTime(timezone=True), nullable=False),
        sa.Column("period_end", billfold.db.base.UTCDateTime(timezone=True), nullable=False),
        sa.Column("event_timestamp", billfold.db.base.UTCDateTime(timezone=True), nullable=False),
        sa.Column("entry_id", sa.String(length=40), nullable=True),
        sa.Column("authorization_id", sa.String(length=40), nullable=True),
        sa.Column("created_at", billfold.db.base.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["organization_id"],
            ["organizations.id"],
            name=op.f("fk_event_fees_organization_id_organizations"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_event_fees")),
    )
    op.create_index(
        "ix_event_fees_customer",
        "event_fees",
        ["organization_id", "customer_id", "event_timestamp"],
        unique=False,
    )
    op.create_index(
        "ix_event_fees_event", "event_fees", ["organization_id", "event_id"], unique=False
    )
    op.create_index(
        "ix_event_fees_subscription",
        "event_fees",
        ["organization_id", "subscription_id", "period_start"],
        unique=False,
    )
    op.create_table(
        "realtime_period_totals",
        sa.Column("organization_id", sa.String(length=40), nullable=False),
        sa.Column("subscription_id", sa.String(length=40), nullable=False),
        sa.Column("price_code", sa.String(length=64), nullable=False),
        sa.Column("dimension", sa.Integer(), nullable=False),
        sa.Column("period_start", billfold.db.base.UTCDateTime(timezone=True), nullable=False),
        sa.Column("quantity", sa.String(length=80), nullable=False),
        sa.Column("event_count", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", billfold.db.base.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["organization_id"],
            ["organizations.id"],
            name=op.f("fk_realtime_period_totals_organization_id_organizations"),
        ),
        sa.PrimaryKeyConstraint(
            "organization_id",
            "subscription_id",
            "price_code",
            "dimension",
            "period_start",
            name=op.f("pk_realtime_period_totals"),
        ),
    )
    # Batch mode: SQLite adds a foreign key only by rebuilding the table.
    with op.batch_alter_table("wallets") as batch:
        batch.add_column(sa.Column("debt_account_id", sa.String(length=40), nullable=True))
        batch.create_foreign_key(
            op.f("fk_wallets_debt_account_id_ledger_accounts"),
            "ledger_accounts",
            ["debt_account_id"],
            ["id"],
        )


def downgrade() -> None:
    with op.batch_alter_table("wallets") as batch:
        batch.drop_constraint(
            op.f("fk_wallets_debt_account_id_ledger_accounts"), type_="foreignkey"
        )
        batch.drop_column("debt_account_id")
    op.drop_table("realtime_period_totals")
    op.drop_index("ix_event_fees_subscription", table_name="event_fees")
    op.drop_index("ix_event_fees_event", table_name="event_fees")
    op.drop_index("ix_event_fees_customer", table_name="event_fees")
    op.drop_table("event_fees")
