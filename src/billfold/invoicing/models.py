from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from billfold import limits
from billfold.db.base import Base, JSONType


class InvoiceSettings(Base):
    """An organization's invoicing preferences and branding; absent means defaults."""

    __tablename__ = "invoice_settings"

    organization_id: Mapped[str] = mapped_column(
        sa.String(40), sa.ForeignKey("organizations.id"), primary_key=True
    )
    #: The start of every invoice number (`ACME` in `ACME-2026-000042`).
    number_prefix: Mapped[str] = mapped_column(sa.String(limits.invoice_number_prefix_length_max))
    #: How long a new invoice stays a draft (late events and edits land) before it is finalized.
    grace_period_s: Mapped[int]
    #: Days from finalization to the due date printed on the invoice.
    net_terms_days: Mapped[int]
    #: Pay finalized invoices from the customer's prepaid wallet in the invoice's asset.
    pay_from_wallet: Mapped[bool]
    legal_name: Mapped[str | None] = mapped_column(sa.String(200))
    address: Mapped[str | None] = mapped_column(sa.String(limits.invoice_address_length_max))
    #: An https URL or a data: URL of a PNG or JPEG; drawn on PDFs when it is a data: URL.
    logo: Mapped[str | None] = mapped_column(sa.Text)
    updated_at: Mapped[datetime]


class InvoiceSequence(Base):
    """The last invoice number handed out, per organization and year.

    Finalizing increments it with an UPDATE that holds the row lock until the
    finalizing transaction ends, so a rolled-back finalization gives its
    number back: the numbers have no gaps.
    """

    __tablename__ = "invoice_sequences"
    __table_args__ = (sa.PrimaryKeyConstraint("organization_id", "year"),)

    organization_id: Mapped[str] = mapped_column(sa.String(40), sa.ForeignKey("organizations.id"))
    year: Mapped[int]
    last_number: Mapped[int] = mapped_column(sa.BigInteger)


class Invoice(Base):
    """A bill for one subscription's period in one asset.

    Amounts are minor units at the asset's stored scale. Lines keep full
    precision; `total_minor` is exact and `total_rounded_minor` is it rounded
    half-up to the currency's ISO 4217 exponent, `rounding_minor` being the
    difference. `amount_due_minor` is what the customer still owes.
    """

    __tablename__ = "invoices"
    __table_args__ = (
        # Running the billing run twice makes nothing twice.
        sa.UniqueConstraint(
            "organization_id", "subscription_id", "kind", "period_start", "asset_code"
        ),
        sa.UniqueConstraint("organization_id", "number"),
        sa.Index("ix_invoices_organization_id_id", "organization_id", "id"),
        sa.Index("ix_invoices_customer", "organization_id", "customer_id", "id"),
        # The run finalizes drafts whose grace period has passed.
        sa.Index("ix_invoices_finalize_at", "status", "finalize_at"),
    )

    id: Mapped[str] = mapped_column(sa.String(40), primary_key=True)
    organization_id: Mapped[str] = mapped_column(sa.String(40), sa.ForeignKey("organizations.id"))
    customer_id: Mapped[str] = mapped_column(sa.String(40), sa.ForeignKey("customers.id"))
    subscription_id: Mapped[str] = mapped_column(sa.String(40))
    #: `opening` (in-advance fees of the first period), `period` (a period's
    #: close) or `progressive` (usage invoiced mid-period at a threshold).
    kind: Mapped[str] = mapped_column(sa.String(16))
    period_start: Mapped[datetime]
    period_end: Mapped[datetime]
    asset_code: Mapped[str] = mapped_column(sa.String(20))
    #: draft → finalized → paid | void | uncollectible.
    status: Mapped[str] = mapped_column(sa.String(16))
    number: Mapped[str | None] = mapped_column(sa.String(limits.invoice_number_length_max))
    subtotal_minor: Mapped[int] = mapped_column(sa.BigInteger)
    discount_minor: Mapped[int] = mapped_column(sa.BigInteger)
    tax_minor: Mapped[int] = mapped_column(sa.BigInteger)
    total_minor: Mapped[int] = mapped_column(sa.BigInteger)
    rounding_minor: Mapped[int] = mapped_column(sa.BigInteger)
    total_rounded_minor: Mapped[int] = mapped_column(sa.BigInteger)
    paid_minor: Mapped[int] = mapped_column(sa.BigInteger)
    credited_minor: Mapped[int] = mapped_column(sa.BigInteger)
    amount_due_minor: Mapped[int] = mapped_column(sa.BigInteger)
    #: The taxes applied: `[{code, name, rate_percent, inclusive, taxable_minor, amount_minor}]`.
    taxes: Mapped[list[Any]] = mapped_column(JSONType)
    #: The coupons applied: `[{coupon, redemption_id, amount_minor}]`.
    discounts: Mapped[list[Any]] = mapped_column(JSONType)
    created_at: Mapped[datetime]
    finalize_at: Mapped[datetime]
    finalized_at: Mapped[datetime | None]
    due_at: Mapped[datetime | None]
    paid_at: Mapped[datetime | None]
    voided_at: Mapped[datetime | None]
    updated_at: Mapped[datetime]


class InvoiceLine(Base):
    """One line of an invoice.

    `kind`: `fixed`, `proration` (an unused in-advance fee credited back,
    negative), `usage` (in arrears, `tiers` holding the breakdown),
    `late_usage` (usage of an already finalized period), `realtime`
    (informational: already debited from the wallet, not charged),
    `commitment` (the minimum commitment's true-up), `already_billed` (what
    progressive invoices charged for the period, negative).
    """

    __tablename__ = "invoice_lines"
    __table_args__ = (sa.Index("ix_invoice_lines_invoice", "organization_id", "invoice_id"),)

    id: Mapped[str] = mapped_column(sa.String(40), primary_key=True)
    organization_id: Mapped[str] = mapped_column(sa.String(40), sa.ForeignKey("organizations.id"))
    invoice_id: Mapped[str] = mapped_column(sa.String(40), sa.ForeignKey("invoices.id"))
    position: Mapped[int]
    kind: Mapped[str] = mapped_column(sa.String(16))
    price_code: Mapped[str | None] = mapped_column(sa.String(limits.price_code_length_max))
    description: Mapped[str] = mapped_column(sa.String(300))
    #: Exact decimal text of the units (usage) or of the period fraction (fixed).
    quantity: Mapped[str] = mapped_column(sa.String(80))
    amount_minor: Mapped[int] = mapped_column(sa.BigInteger)
    #: Informational lines (real-time fees already debited) are not charged.
    charged: Mapped[bool]
    period_start: Mapped[datetime]
    period_end: Mapped[datetime]
    #: Per-tier breakdown:
    #: `[{dimension, kind, tier, units, unit_amount, flat_amount, amount_minor}]`.
    tiers: Mapped[list[Any]] = mapped_column(JSONType)
    #: What credit notes have taken back from this line so far.
    credited_minor: Mapped[int] = mapped_column(sa.BigInteger)


class TaxRate(Base):
    """A tax applied to a customer's invoices; `customer_id` null applies to
    every customer that has no rate of its own."""

    __tablename__ = "tax_rates"
    __table_args__ = (
        sa.UniqueConstraint("organization_id", "code"),
        sa.Index("ix_tax_rates_organization_id_id", "organization_id", "id"),
    )

    id: Mapped[str] = mapped_column(sa.String(40), primary_key=True)
    organization_id: Mapped[str] = mapped_column(sa.String(40), sa.ForeignKey("organizations.id"))
    code: Mapped[str] = mapped_column(sa.String(limits.price_code_length_max))
    name: Mapped[str] = mapped_column(sa.String(200))
    #: Exact decimal text, e.g. "20" or "8.875".
    rate_percent: Mapped[str] = mapped_column(sa.String(20))
    #: Inclusive: the prices already contain the tax; exclusive: it is added.
    inclusive: Mapped[bool]
    customer_id: Mapped[str | None] = mapped_column(sa.String(40), sa.ForeignKey("customers.id"))
    created_at: Mapped[datetime]


class Coupon(Base):
    """A discount: `percentage` (`percent_off`) or `fixed` (`amount_off_minor`
    of `asset_code`); `duration` `once`, `repeating` (`duration_periods`
    invoices) or `forever`; `product_codes` null applies to every product."""

    __tablename__ = "coupons"
    __table_args__ = (
        sa.UniqueConstraint("organization_id", "code"),
        sa.Index("ix_coupons_organization_id_id", "organization_id", "id"),
    )

    id: Mapped[str] = mapped_column(sa.String(40), primary_key=True)
    organization_id: Mapped[str] = mapped_column(sa.String(40), sa.ForeignKey("organizations.id"))
    code: Mapped[str] = mapped_column(sa.String(limits.price_code_length_max))
    name: Mapped[str] = mapped_column(sa.String(200))
    kind: Mapped[str] = mapped_column(sa.String(16))
    percent_off: Mapped[str | None] = mapped_column(sa.String(20))
    amount_off_minor: Mapped[int | None] = mapped_column(sa.BigInteger)
    asset_code: Mapped[str | None] = mapped_column(sa.String(20))
    duration: Mapped[str] = mapped_column(sa.String(16))
    duration_periods: Mapped[int | None]
    product_codes: Mapped[list[Any] | None] = mapped_column(JSONType)
    created_at: Mapped[datetime]


class CouponRedemption(Base):
    """A coupon applied to a customer; used up after its duration's invoices."""

    __tablename__ = "coupon_redemptions"
    __table_args__ = (sa.Index("ix_coupon_redemptions_customer", "organization_id", "customer_id"),)

    id: Mapped[str] = mapped_column(sa.String(40), primary_key=True)
    organization_id: Mapped[str] = mapped_column(sa.String(40), sa.ForeignKey("organizations.id"))
    coupon_id: Mapped[str] = mapped_column(sa.String(40), sa.ForeignKey("coupons.id"))
    customer_id: Mapped[str] = mapped_column(sa.String(40), sa.ForeignKey("customers.id"))
    #: Invoices it has discounted so far (finalized ones count).
    periods_used: Mapped[int]
    #: A fixed coupon's amount still to give (`once` across invoices).
    remaining_minor: Mapped[int | None] = mapped_column(sa.BigInteger)
    status: Mapped[str] = mapped_column(sa.String(16))
    created_at: Mapped[datetime]


class CreditNote(Base):
    """Money given back on a finalized invoice, per line, with a reason.

    `refund`: `wallet` (credited to the customer's wallet in the invoice's
    asset), `external` (refunded outside Billfold, recorded) or `none` (the
    balance due goes down).
    """

    __tablename__ = "credit_notes"
    __table_args__ = (
        sa.UniqueConstraint("organization_id", "number"),
        sa.Index("ix_credit_notes_invoice", "organization_id", "invoice_id"),
    )

    id: Mapped[str] = mapped_column(sa.String(40), primary_key=True)
    organization_id: Mapped[str] = mapped_column(sa.String(40), sa.ForeignKey("organizations.id"))
    invoice_id: Mapped[str] = mapped_column(sa.String(40), sa.ForeignKey("invoices.id"))
    customer_id: Mapped[str] = mapped_column(sa.String(40))
    number: Mapped[str] = mapped_column(sa.String(limits.invoice_number_length_max + 8))
    reason: Mapped[str] = mapped_column(sa.String(32))
    description: Mapped[str | None] = mapped_column(sa.String(500))
    refund: Mapped[str] = mapped_column(sa.String(16))
    asset_code: Mapped[str] = mapped_column(sa.String(20))
    subtotal_minor: Mapped[int] = mapped_column(sa.BigInteger)
    tax_minor: Mapped[int] = mapped_column(sa.BigInteger)
    total_minor: Mapped[int] = mapped_column(sa.BigInteger)
    #: `[{line_id, description, amount_minor}]`.
    lines: Mapped[list[Any]] = mapped_column(JSONType)
    #: The wallet adjustment of a `wallet` refund.
    adjustment_id: Mapped[str | None] = mapped_column(sa.String(40))
    created_at: Mapped[datetime]
