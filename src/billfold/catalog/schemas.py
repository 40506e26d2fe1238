from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import Field

from billfold import limits
from billfold.api.schemas import RequestSchema, Schema

_PRICE_EXAMPLE = {
    "code": "tokens_out",
    "type": "usage",
    "meter": "output_tokens",
    "asset": "USD",
    "billing": "real_time",
    "model": "graduated",
    "tiers": [
        {"up_to": "1000", "unit_amount": "0.01", "flat_amount": "0"},
        {"up_to": None, "unit_amount": "0.008"},
    ],
}
_FEATURE_EXAMPLE = {
    "code": "tokens",
    "type": "metered",
    "meter": "output_tokens",
    "limit": "1000000",
    "period": "month",
    "enforcement": "hard",
}


class VersionDefinition(RequestSchema):
    prices: list[dict[str, Any]] = Field(
        max_length=limits.prices_per_version_max,
        description="Usage, fixed and credits prices (API.md, Prices); codes unique here.",
        examples=[[_PRICE_EXAMPLE]],
    )
    features: list[dict[str, Any]] | None = Field(
        default=None,
        max_length=limits.features_per_version_max,
        description="`boolean`, `numeric` (a limit) or `metered` (a limit per period over a "
        "meter, `soft` or `hard`).",
        examples=[[_FEATURE_EXAMPLE]],
    )


class ProductCreate(VersionDefinition):
    code: str = Field(
        max_length=limits.product_code_length_max,
        examples=["pro"],
        description="Your code for the product; unique in your organization, used in URLs.",
    )
    name: str = Field(max_length=limits.product_name_length_max, examples=["Pro"])


class VersionOut(Schema):
    product: str = Field(description="The product's code.")
    number: int
    prices: list[dict[str, Any]]
    features: list[dict[str, Any]]
    created_at: datetime


class ProductOut(Schema):
    id: str
    code: str
    name: str
    latest_version: int
    created_at: datetime
    version: VersionOut = Field(description="The latest version.")


class SimulateIn(RequestSchema):
    """Documents the simulate body; the endpoint reads it itself so numbers stay exact."""

    events: list[dict[str, Any]] = Field(
        max_length=limits.simulate_events_max,
        description="Events as `POST /v1/events` takes them: `type`, `data`, and optionally "
        "`timestamp` (order; default now), `customer_id` (a label: aggregates are kept per "
        "customer) and `id`.",
        examples=[[{"type": "llm.completion", "data": {"output_tokens": 1500}}]],
    )


class LineOut(Schema):
    dimension: int | None = Field(description="The dimension that priced it; null: the base.")
    kind: Literal[
        "units", "tier", "packages", "percentage", "flat", "fixed_fee", "minimum", "maximum"
    ]
    tier: int | None
    units: str
    unit_amount: str
    flat_amount: str
    amount: str


class PriceFeeOut(Schema):
    price: str
    meter: str
    asset: str
    billing: str
    model: str
    events: int = Field(description="How many of the events this price's meter counts.")
    quantity: str
    amount: str
    lines: list[LineOut]


class EventFeeOut(Schema):
    price: str
    asset: str
    quantity: str
    amount: str


class EventFeesOut(Schema):
    index: int
    fees: list[EventFeeOut]


class TotalOut(Schema):
    asset: str
    amount: str


class SimulationOut(Schema):
    product: str
    version: int
    prices: list[PriceFeeOut]
    events: list[EventFeesOut]
    totals: list[TotalOut]
