"""subscriptions with periods, invoices, credit notes, coupons, taxes

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-24 08:00:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

import billfold.db.base

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

UTC_DATETIME = billfold.db.base.UTCDateTime(timezone=True)


def _json() -> sa.types.TypeEngine[Any]:
    return sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")


def _org_fk(table: str) -> sa.ForeignKeyConstraint:
    return sa.ForeignKeyConstraint(
        ["organization_id"],
        ["organizations.id"],
        name=op.f(f"fk_{table}_organization_id_organizations"),
    )


def upgrade() -> None:
    with op.batch_alter_table("subscriptions") as batch:
        batch.add_column(
            sa.Column("interval", sa.String(length=8), server_default="month", nullable=False)
        )
        batch.add_column(
            sa.Column("interval_count", sa.Integer(), server_default="1", nullable=False)
        )
        batch.add_column(
            sa.Column("anchor", sa.String(length=16), server_default="anniversary", nullable=False)
        )
        batch.add_column(sa.Column("anchor_at", UTC_DATETIME, nullable=True))
        batch.add_column(sa.Column("trial_end_at", UTC_DATETIME, nullable=True))
        batch.add_column(sa.Column("ends_at", UTC_DATETIME, nullable=True))
        batch.add_column(sa.Column("billed_through", UTC_DATETIME, nullable=True))
        batch.add_column(sa.Column("next_billing_at", UTC_DATETIME, nullable=True))
        batch.add_column(sa.Column("previous_subscription_id", sa.String(length=40), nullable=True))
        batch.add_column(sa.Column("minimum_commitment_asset", sa.String(length=20), nullable=True))
        batch.add_column(sa.Column("minimum_commitment_minor", sa.BigInteger(), nullable=True))
        batch.add_column(sa.Column("usage_threshold_asset", sa.String(length=20), nullable=True))
        batch.add_column(sa.Column("usage_threshold_minor", sa.BigInteger(), nullable=True))
        batch.create_index("ix_subscriptions_next_billing_at", ["next_billing_at"], unique=False)
    # Subscriptions made before billing existed start billing from their start.
    op.execute(
        "UPDATE subscriptions SET next_billing_at = start_at, ends_at = canceled_at"
        " WHERE status = 'active' OR canceled_at IS NOT NULL"
    )
    op.create_table(
        "invoice_settings",
        sa.Column("organization_id", sa.String(length=40), nullable=False),
        sa.Column("number_prefix", sa.String(length=10), nullable=False),
        sa.Column("grace_period_s", sa.Integer(), nullable=False),
        sa.Column("net_terms_days", sa.Integer(), nullable=False),
        sa.Column("pay_from_wallet", sa.Boolean(), nullable=False),
        sa.Column("legal_name", sa.String(length=200), nullable=True),
        sa.Column("address", sa.String(length=500), nullable=True),
        sa.Column("logo", sa.Text(), nullable=True),
        sa.Column("updated_at", UTC_DATETIME, nullable=False),
        _org_fk("invoice_settings"),
        sa.PrimaryKeyConstraint("organization_id", name=op.f("pk_invoice_settings")),
    )
    op.create_table(
        "invoice_sequences",
        sa.Column("organization_id", sa.String(length=40), nullable=False),
        sa.Column("year", sa.Integer(), nullable=False),
        sa.Column("last_number", sa.BigInteger(), nullable=False),
        _org_fk("invoice_sequences"),
        sa.PrimaryKeyConstraint("organization_id", "year", name=op.f("pk_invoice_sequences")),
    )
    op.create_table(
        "invoices",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("organization_id", sa.String(length=40), nullable=False),
        sa.Column("customer_id", sa.String(length=40), nullable=False),
        sa.Column("subscription_id", sa.String(length=40), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("period_start", UTC_DATETIME, nullable=False),
        sa.Column("period_end", UTC_DATETIME, nullable=False),
        sa.Column("asset_code", sa.String(length=20), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("number", sa.String(length=32), nullable=True),
        sa.Column("subtotal_minor", sa.BigInteger(), nullable=False),
        sa.Column("discount_minor", sa.BigInteger(), nullable=False),
        sa.Column("tax_minor", sa.BigInteger(), nullable=False),
        sa.Column("total_minor", sa.BigInteger(), nullable=False),
        sa.Column("rounding_minor", sa.BigInteger(), nullable=False),
        sa.Column("total_rounded_minor", sa.BigInteger(), nullable=False),
        sa.Column("paid_minor", sa.BigInteger(), nullable=False),
        sa.Column("credited_minor", sa.BigInteger(), nullable=False),
        sa.Column("amount_due_minor", sa.BigInteger(), nullable=False),
        sa.Column("taxes", _json(), nullable=False),
        sa.Column("discounts", _json(), nullable=False),
        sa.Column("created_at", UTC_DATETIME, nullable=False),
        sa.Column("finalize_at", UTC_DATETIME, nullable=False),
        sa.Column("finalized_at", UTC_DATETIME, nullable=True),
        sa.Column("due_at", UTC_DATETIME, nullable=True),
        sa.Column("paid_at", UTC_DATETIME, nullable=True),
        sa.Column("voided_at", UTC_DATETIME, nullable=True),
        sa.Column("updated_at", UTC_DATETIME, nullable=False),
        sa.ForeignKeyConstraint(
            ["customer_id"], ["customers.id"], name=op.f("fk_invoices_customer_id_customers")
        ),
        _org_fk("invoices"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_invoices")),
        sa.UniqueConstraint(
            "organization_id",
            "number",
            name=op.f("uq_invoices_organization_id_number"),
        ),
        sa.UniqueConstraint(
            "organization_id",
            "subscription_id",
            "kind",
            "period_start",
            "asset_code",
            name=op.f("uq_invoices_organization_id_subscription_id_kind_period_start_asset_code"),
        ),
    )
    op.create_index("ix_invoices_customer", "invoices", ["organization_id", "customer_id", "id"])
    op.create_index("ix_invoices_finalize_at", "invoices", ["status", "finalize_at"])
    op.create_index("ix_invoices_organization_id_id", "invoices", ["organization_id", "id"])
    op.create_table(
        "invoice_lines",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("organization_id", sa.String(length=40), nullable=False),
        sa.Column("invoice_id", sa.String(length=40), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("price_code", sa.String(length=64), nullable=True),
        sa.Column("description", sa.String(length=300), nullable=False),
        sa.Column("quantity", sa.String(length=80), nullable=False),
        sa.Column("amount_minor", sa.BigInteger(), nullable=False),
        sa.Column("charged", sa.Boolean(), nullable=False),
        sa.Column("period_start", UTC_DATETIME, nullable=False),
        sa.Column("period_end", UTC_DATETIME, nullable=False),
        sa.Column("tiers", _json(), nullable=False),
        sa.Column("credited_minor", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["invoice_id"], ["invoices.id"], name=op.f("fk_invoice_lines_invoice_id_invoices")
        ),
        _org_fk("invoice_lines"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_invoice_lines")),
    )
    op.create_index("ix_invoice_lines_invoice", "invoice_lines", ["organization_id", "invoice_id"])
    op.create_table(
        "tax_rates",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("organization_id", sa.String(length=40), nullable=False),
        sa.Column("code", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("rate_percent", sa.String(length=20), nullable=False),
        sa.Column("inclusive", sa.Boolean(), nullable=False),
        sa.Column("customer_id", sa.String(length=40), nullable=True),
        sa.Column("created_at", UTC_DATETIME, nullable=False),
        sa.ForeignKeyConstraint(
            ["customer_id"], ["customers.id"], name=op.f("fk_tax_rates_customer_id_customers")
        ),
        _org_fk("tax_rates"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_tax_rates")),
        sa.UniqueConstraint(
            "organization_id", "code", name=op.f("uq_tax_rates_organization_id_code")
        ),
    )
    op.create_index("ix_tax_rates_organization_id_id", "tax_rates", ["organization_id", "id"])
    op.create_table(
        "coupons",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("organization_id", sa.String(length=40), nullable=False),
        sa.Column("code", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("percent_off", sa.String(length=20), nullable=True),
        sa.Column("amount_off_minor", sa.BigInteger(), nullable=True),
        sa.Column("asset_code", sa.String(length=20), nullable=True),
        sa.Column("duration", sa.String(length=16), nullable=False),
        sa.Column("duration_periods", sa.Integer(), nullable=True),
        sa.Column("product_codes", _json(), nullable=True),
        sa.Column("created_at", UTC_DATETIME, nullable=False),
        _org_fk("coupons"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_coupons")),
        sa.UniqueConstraint(
            "organization_id", "code", name=op.f("uq_coupons_organization_id_code")
        ),
    )
    op.create_index("ix_coupons_organization_id_id", "coupons", ["organization_id", "id"])
    op.create_table(
        "coupon_redemptions",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("organization_id", sa.String(length=40), nullable=False),
        sa.Column("coupon_id", sa.String(length=40), nullable=False),
        sa.Column("customer_id", sa.String(length=40), nullable=False),
        sa.Column("periods_used", sa.Integer(), nullable=False),
        sa.Column("remaining_minor", sa.BigInteger(), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("created_at", UTC_DATETIME, nullable=False),
        sa.ForeignKeyConstraint(
            ["coupon_id"], ["coupons.id"], name=op.f("fk_coupon_redemptions_coupon_id_coupons")
        ),
        sa.ForeignKeyConstraint(
            ["customer_id"],
            ["customers.id"],
            name=op.f("fk_coupon_redemptions_customer_id_customers"),
        ),
        _org_fk("coupon_redemptions"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_coupon_redemptions")),
    )
    op.create_index(
        "ix_coupon_redemptions_customer", "coupon_redemptions", ["organization_id", "customer_id"]
    )
    op.create_table(
        "credit_notes",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("organization_id", sa.String(length=40), nullable=False),
        sa.Column("invoice_id", sa.String(length=40), nullable=False),
        sa.Column("customer_id", sa.String(length=40), nullable=False),
        sa.Column("number", sa.String(length=40), nullable=False),
        sa.Column("reason", sa.String(length=32), nullable=False),
        sa.Column("description", sa.String(length=500), nullable=True),
        sa.Column("refund", sa.String(length=16), nullable=False),
        sa.Column("asset_code", sa.String(length=20), nullable=False),
        sa.Column("subtotal_minor", sa.BigInteger(), nullable=False),
        sa.Column("tax_minor", sa.BigInteger(), nullable=False),
        sa.Column("total_minor", sa.BigInteger(), nullable=False),
        sa.Column("lines", _json(), nullable=False),
        sa.Column("adjustment_id", sa.String(length=40), nullable=True),
        sa.Column("created_at", UTC_DATETIME, nullable=False),
        sa.ForeignKeyConstraint(
            ["invoice_id"], ["invoices.id"], name=op.f("fk_credit_notes_invoice_id_invoices")
        ),
        _org_fk("credit_notes"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_credit_notes")),
        sa.UniqueConstraint(
            "organization_id", "number", name=op.f("uq_credit_notes_organization_id_number")
        ),
    )
    op.create_index("ix_credit_notes_invoice", "credit_notes", ["organization_id", "invoice_id"])


def downgrade() -> None:
    op.drop_table("credit_notes")
    op.drop_table("coupon_redemptions")
    op.drop_table("coupons")
    op.drop_table("tax_rates")
    op.drop_table("invoice_lines")
    op.drop_table("invoices")
    op.drop_table("invoice_sequences")
    op.drop_table("invoice_settings")
    with op.batch_alter_table("subscriptions") as batch:
        batch.drop_index("ix_subscriptions_next_billing_at")
        for column in (
            "usage_threshold_minor",
            "usage_threshold_asset",
            "minimum_commitment_minor",
            "minimum_commitment_asset",
            "previous_subscription_id",
            "next_billing_at",
            "billed_through",
            "ends_at",
            "trial_end_at",
            "anchor_at",
            "anchor",
            "interval_count",
            "interval",
        ):
            batch.drop_column(column)
