from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import Field

from billfold import limits
from billfold.api.schemas import RequestSchema, Schema


class InvoiceLineOut(Schema):
    id: str
    kind: Literal[
        "fixed",
        "proration",
        "usage",
        "late_usage",
        "realtime",
        "commitment",
        "already_billed",
    ]
    price_code: str | None
    description: str
    quantity: str
    amount: str = Field(description="Exact, at the asset's stored scale.")
    charged: bool = Field(description="False for real-time fees already paid from the wallet.")
    period_start: datetime
    period_end: datetime
    tiers: list[dict[str, object]] = Field(description="The rating's breakdown (amounts exact).")
    credited: str


class TaxOut(Schema):
    code: str
    name: str
    rate_percent: str
    inclusive: bool
    taxable: str
    amount: str


class DiscountOut(Schema):
    coupon: str
    amount: str


class InvoiceOut(Schema):
    id: str
    number: str | None = Field(description="Set when finalized, e.g. ACME-2026-000042.")
    status: Literal["draft", "finalized", "paid", "void", "uncollectible"]
    kind: Literal["opening", "period", "progressive"] = Field(
        description="opening: the first period's in-advance fees; period: a period's close; "
        "progressive: usage invoiced mid-period when it reached the subscription's threshold."
    )
    customer_id: str
    subscription_id: str
    asset: str
    period_start: datetime
    period_end: datetime
    subtotal: str
    discount: str
    tax: str
    total_exact: str = Field(description="Lines − discount + exclusive taxes, full precision.")
    rounding: str = Field(description="total − total_exact (half-up to the ISO exponent).")
    total: str
    paid: str
    credited: str
    amount_due: str
    taxes: list[TaxOut]
    discounts: list[DiscountOut]
    lines: list[InvoiceLineOut]
    created_at: datetime
    finalize_at: datetime = Field(description="When a draft is finalized (grace period end).")
    finalized_at: datetime | None
    due_at: datetime | None
    paid_at: datetime | None
    voided_at: datetime | None


class InvoiceSummaryOut(Schema):
    id: str
    number: str | None
    status: str
    customer_id: str
    subscription_id: str
    asset: str
    period_start: datetime
    period_end: datetime
    total: str
    amount_due: str


class CreditNoteLineIn(RequestSchema):
    line_id: str = Field(max_length=40)
    amount: str = Field(max_length=64)


class CreditNoteCreate(RequestSchema):
    invoice_id: str = Field(max_length=40)
    reason: Literal[
        "duplicated_charge",
        "product_unsatisfactory",
        "order_change",
        "order_cancellation",
        "fraudulent_charge",
        "other",
    ]
    description: str | None = Field(default=None, max_length=500)
    refund: Literal["wallet", "external", "none"] = Field(
        default="none",
        description="What is paid already goes back to the wallet, was refunded outside "
        "Billfold, or (none) only the balance due goes down.",
    )
    lines: list[CreditNoteLineIn] | None = Field(
        default=None,
        max_length=limits.credit_note_lines_max,
        description="Per-line amounts (pre-tax); the whole invoice when absent.",
    )


class CreditNoteOut(Schema):
    id: str
    number: str
    invoice_id: str
    customer_id: str
    reason: str
    description: str | None
    refund: str
    asset: str
    subtotal: str
    tax: str
    total: str
    lines: list[dict[str, object]]
    created_at: datetime


class TaxRateCreate(RequestSchema):
    code: str = Field(min_length=1, max_length=limits.price_code_length_max)
    name: str = Field(min_length=1, max_length=200)
    rate_percent: str = Field(max_length=20, description='e.g. "20" or "8.875".')
    inclusive: bool = False
    customer_id: str | None = Field(
        default=None,
        max_length=300,
        description="This customer only; absent: every customer without rates of its own.",
    )


class TaxRateOut(Schema):
    id: str
    code: str
    name: str
    rate_percent: str
    inclusive: bool
    customer_id: str | None
    created_at: datetime


class CouponCreate(RequestSchema):
    code: str = Field(min_length=1, max_length=limits.price_code_length_max)
    name: str = Field(min_length=1, max_length=200)
    percent_off: str | None = Field(default=None, max_length=20)
    amount_off: str | None = Field(default=None, max_length=64)
    asset: str | None = Field(default=None, max_length=20)
    duration: Literal["once", "repeating", "forever"] = "once"
    duration_periods: int | None = Field(default=None, ge=1, le=1000)
    products: list[str] | None = Field(
        default=None, max_length=100, description="Only these product codes; all when absent."
    )


class CouponOut(Schema):
    id: str
    code: str
    name: str
    percent_off: str | None
    amount_off: str | None
    asset: str | None
    duration: str
    duration_periods: int | None
    products: list[str] | None
    created_at: datetime


class CouponApply(RequestSchema):
    coupon: str = Field(max_length=limits.price_code_length_max)


class CouponRedemptionOut(Schema):
    id: str
    coupon: str
    customer_id: str
    status: str
    periods_used: int
    created_at: datetime


class InvoiceSettingsIn(RequestSchema):
    number_prefix: str | None = Field(
        default=None,
        min_length=1,
        max_length=limits.invoice_number_prefix_length_max,
        pattern=r"^[A-Z0-9]+$",
    )
    grace_period_s: int | None = Field(default=None, ge=0, le=limits.invoice_grace_period_max_s)
    net_terms_days: int | None = Field(default=None, ge=0, le=limits.invoice_net_terms_days_max)
    pay_from_wallet: bool | None = None
    legal_name: str | None = Field(default=None, max_length=200)
    address: str | None = Field(default=None, max_length=limits.invoice_address_length_max)
    logo: str | None = Field(
        default=None,
        max_length=limits.invoice_logo_length_max,
        description="A data:image/png;base64,… URL drawn on PDFs.",
    )


class InvoiceSettingsOut(Schema):
    number_prefix: str
    grace_period_s: int
    net_terms_days: int
    pay_from_wallet: bool
    legal_name: str | None
    address: str | None
    logo: str | None
