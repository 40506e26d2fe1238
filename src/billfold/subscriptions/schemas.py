from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import Field

from billfold import limits
from billfold.api.schemas import RequestSchema, Schema


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
        description="When it starts counting (RFC 3339); now if absent.",
    )


class SubscriptionOut(Schema):
    id: str
    customer_id: str
    product: str = Field(description="The product's code.")
    version: int
    status: Literal["active", "canceled"]
    start_at: datetime
    created_at: datetime
    canceled_at: datetime | None


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
