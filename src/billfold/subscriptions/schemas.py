from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import Field

from billfold import limits
from billfold.api.schemas import RequestSchema, Schema


class MoneyIn(RequestSchema):
    asset: str = Field(max_length=20)
    amount: str = Field(max_length=40, description="Decimal string in major units of the asset.")


class MoneyOut(Schema):
    asset: str
    amount: str


class SubscriptionCreate(RequestSchema):
    customer_id: str = Field(max_length=300, description="`cus_…` or `ext:<external_id>`")
    product: str = Field(
        max_length=limits.product_code_length_max, description="The product's code."
    )
    version: int | None = Field(
        default=None, ge=1, description="The product version; its latest if absent."
    )
    start_at: str | None = Field(
        default=None,
        max_length=limits.timestamp_string_length_max,
        description="When it starts counting (RFC 3339); now if absent. May be past or future.",
    )
    interval: Literal["day", "week", "month", "year"] | None = Field(
        default=None,
        description="The billing period's unit; the product's first recurring fixed price's "
        "interval (month if none) when absent.",
    )
    interval_count: int | None = Field(
        default=None, ge=1, le=limits.subscription_interval_count_max
    )
    anchor: Literal["anniversary", "calendar"] = Field(
        default="anniversary",
        description="anniversary: periods start on the start date; calendar: on calendar "
        "boundaries (the first period is prorated).",
    )
    trial_days: int | None = Field(
        default=None,
        ge=1,
        le=limits.subscription_trial_days_max,
        description="Fixed fees are free until the trial ends.",
    )
    minimum_commitment: MoneyIn | None = Field(
        default=None,
        description="The least each period's fees come to: the period's invoice adds a "
        "true-up line for the shortfall (prorated over a partial period).",
    )
    usage_threshold: MoneyIn | None = Field(
        default=None,
        description="Progressive billing: when the period's in-arrears usage not yet invoiced "
        "reaches this amount, the billing run invoices it mid-period; the period's invoice "
        "deducts it.",
    )


class SubscriptionCancel(RequestSchema):
    at_period_end: bool = Field(
        default=False,
        description="Cancel when the current period ends instead of now.",
    )


class SubscriptionChange(RequestSchema):
    product: str = Field(max_length=limits.product_code_length_max)
    version: int | None = Field(default=None, ge=1)


class SubscriptionOut(Schema):
    id: str
    customer_id: str
    product: str = Field(description="The product's code.")
    version: int
    status: Literal["active", "canceled"]
    start_at: datetime
    created_at: datetime
    canceled_at: datetime | None
    interval: str
    interval_count: int
    anchor: str
    trial_end_at: datetime | None
    ends_at: datetime | None = Field(description="When it ends (now, or a period's end).")
    current_period_start: datetime
    current_period_end: datetime
    previous_subscription_id: str | None
    minimum_commitment: MoneyOut | None = None
    usage_threshold: MoneyOut | None = None


class EntitlementOut(Schema):
    feature: str
    customer_id: str
    type: Literal["boolean", "numeric", "metered"] | None = Field(
        description="Null when no active subscription of the customer defines the feature."
    )
    has_access: bool
    limit: str | None = Field(
        default=None, description="numeric and metered: null means unlimited."
    )
    used: str | None = Field(
        default=None, description="metered: the meter's usage in the current period."
    )
    remaining: str | None = Field(default=None, description="metered: max(0, limit - used).")
    enforcement: Literal["hard", "soft"] | None = None
    meter: str | None = None
    period: Literal["day", "month", "year"] | None = None
    period_start: datetime | None = None
    period_end: datetime | None = None
    granted_by: list[str] = Field(
        default_factory=list, description="The subscriptions that define it, newest first."
    )
