from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import Field

from billfold import limits
from billfold.api.schemas import RequestSchema, Schema


class VendorCreate(RequestSchema):
    code: str = Field(max_length=limits.vendor_code_length_max, examples=["openai"])
    name: str | None = Field(default=None, max_length=limits.vendor_name_length_max)


class VendorOut(Schema):
    id: str
    code: str
    name: str | None
    created_at: datetime


class LlmCostIn(RequestSchema):
    provider: str = Field(examples=["anthropic"])
    api: str | None = Field(default=None, examples=["messages"])
    model: str = Field(examples=["claude-sonnet-4-5"])
    usage: dict[str, Any] = Field(description="The provider's usage object, as it returned it.")
    processing: str | None = Field(default=None, description='"sync" (default) or "batch".')
    service_tier: str | None = None


class CostSettingsIn(RequestSchema):
    unknown_model_policy: str | None = Field(default=None, description='"block" or "record".')
    markup_percent: str | None = Field(default=None, examples=["25"])
    reporting_asset: str | None = Field(default=None, examples=["USD"])
    margin_low_percent: str | None = Field(default=None, examples=["20"])
    alert_window_days: int | None = None


class CostSettingsOut(Schema):
    unknown_model_policy: str
    markup_percent: str
    reporting_asset: str
    margin_low_percent: str | None
    alert_window_days: int


class PriceOverrideIn(RequestSchema):
    provider: str
    model: str | None = Field(default=None, description="Null for every model of the provider.")
    rates: dict[str, Any] | None = Field(
        default=None, description='Rate key -> decimal string per MTok, e.g. {"input": "2"}.'
    )
    multiplier: str | None = Field(default=None, examples=["0.8"])
    effective_from: str | None = None


class PriceOverrideOut(Schema):
    id: str
    provider: str
    model: str | None
    rates: dict[str, Any]
    multiplier: str | None
    effective_from: datetime
    created_at: datetime
