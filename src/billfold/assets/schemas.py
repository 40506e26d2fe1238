from __future__ import annotations

from datetime import datetime

from pydantic import Field, StrictInt

from billfold import limits
from billfold.api.schemas import RequestSchema, Schema


class AssetCreate(RequestSchema):
    code: str = Field(
        max_length=limits.asset_code_length_max,
        examples=["TOKENS"],
        description='2 to 20 characters: an uppercase letter, then A-Z, 0-9 or "_".',
    )
    name: str = Field(min_length=1, max_length=limits.asset_name_length_max)
    scale: StrictInt = Field(
        description=f"Decimal places stored, 0 to {limits.asset_scale_max}. Fixed for good.",
        examples=[0],
    )
    kind: str | None = Field(default=None, description='Always "custom" (the default).')
    symbol: str | None = Field(default=None, max_length=limits.asset_symbol_length_max)


class AssetOut(Schema):
    code: str
    name: str
    scale: int = Field(description="Decimal places stored.")
    kind: str = Field(description='"fiat" (built in) or "custom".')
    symbol: str | None
    display_exponent: int | None = Field(
        description="ISO 4217 decimals of a fiat currency, which invoices round to."
    )
    created_at: datetime | None = Field(description="None for built-in currencies.")


class RateCreate(RequestSchema):
    base: str = Field(max_length=limits.asset_code_length_max, examples=["USD"])
    rate: str = Field(
        max_length=limits.rate_string_length_max,
        examples=["0.000002"],
        description="What one unit of the asset costs in units of `base`, as a decimal string.",
    )
    valid_from: str | None = Field(
        default=None,
        max_length=limits.timestamp_string_length_max,
        json_schema_extra={"format": "date-time"},
        description="RFC 3339 instant the rate applies from; default now.",
    )


class RateOut(Schema):
    id: str
    asset: str
    base: str
    rate: str = Field(description="What one unit of `asset` costs in units of `base`.")
    valid_from: datetime
    created_at: datetime


class QuoteOut(Schema):
    asset: str
    base: str
    amount: str = Field(description="The amount of `base` paid.")
    quantity: str = Field(
        description="How much of `asset` it buys, rounded down to the asset's scale."
    )
    rate: str
    rate_id: str
    valid_from: datetime = Field(description="When the rate used came into force.")
    at: datetime = Field(description="The instant the quote is for.")
