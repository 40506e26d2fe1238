from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import ConfigDict, Field, model_validator

from billfold import limits
from billfold.api.schemas import RequestSchema, Schema

Aggregation = Literal["count", "sum", "max", "min", "unique_count", "latest"]
Granularity = Literal["hour", "day", "month"]


class EventIn(RequestSchema):
    """One usage event. Validated one by one, so a bad event is rejected alone."""

    # Strict: an id or a type sent as a number is a mistake, not a string.
    model_config = ConfigDict(extra="forbid", strict=True)

    id: str = Field(
        min_length=1,
        max_length=limits.event_id_length_max,
        description="Your id for the event; resending it never counts the event twice.",
        examples=["evt_2025_01_31_0001"],
    )
    customer_id: str | None = Field(
        default=None, max_length=300, description="`cus_…` or `ext:<external_id>`"
    )
    customer_external_id: str | None = Field(
        default=None,
        max_length=limits.customer_external_id_length_max,
        description="Your id for the customer, instead of `customer_id`.",
    )
    type: str = Field(
        min_length=1, max_length=limits.event_type_length_max, examples=["llm.completion"]
    )
    timestamp: str = Field(
        max_length=limits.timestamp_string_length_max,
        description="When the usage happened (RFC 3339 with an offset): at most "
        f"{limits.event_backfill_window_default_s // 86400} days back (by default) and "
        f"{limits.event_future_skew_max_s // 60} minutes ahead of the server clock.",
        examples=["2025-01-31T12:00:00Z"],
    )
    data: dict[str, Any] = Field(
        default_factory=dict,
        description="Free-form properties meters read by dotted path. Numbers are exact "
        'decimals; numbers in strings ("0.25") count as numbers too.',
        examples=[{"model": "gpt-4o", "input_tokens": 1200, "output_tokens": 350}],
    )
    costs: list[dict[str, Any]] | None = Field(
        default=None,
        max_length=limits.event_costs_max,
        description="Vendor costs of this event; stored, used by a later release.",
    )
    authorization_id: str | None = Field(
        default=None,
        max_length=limits.event_authorization_id_length_max,
        description="A hold this event settles; stored, used by a later release.",
    )

    @model_validator(mode="after")
    def _one_customer_reference(self) -> EventIn:
        if (self.customer_id is None) == (self.customer_external_id is None):
            raise ValueError("give exactly one of customer_id and customer_external_id")
        return self


class EventBatchIn(RequestSchema):
    """Documents `POST /v1/events`; the endpoint reads the body itself so that
    each event is validated on its own and numbers stay exact."""

    events: list[EventIn] = Field(max_length=limits.events_per_batch_max)


class EventResultOut(Schema):
    id: str | None = Field(description="The event's id as sent (null if it had none).")
    status: Literal["accepted", "duplicate", "rejected"]
    code: str | None = Field(
        default=None,
        description="Why it was rejected: `invalid_data`, `customer_not_found`, "
        "`timestamp_out_of_range` or `event_id_conflict`.",
    )
    field: str | None = Field(default=None, description="The field at fault, when one is.")
    detail: str | None = None


class EventSummaryOut(Schema):
    accepted: int
    duplicate: int
    rejected: int


class EventBatchOut(Schema):
    """One result per event, in the order sent; `code`, `field` and `detail`
    appear on rejected events only."""

    results: list[EventResultOut]
    summary: EventSummaryOut


class MeterCreate(RequestSchema):
    code: str = Field(
        max_length=limits.meter_code_length_max,
        examples=["output_tokens"],
        description='Unique in your organization: letters, digits, "_", "-" and ".".',
    )
    name: str | None = Field(default=None, max_length=limits.meter_name_length_max)
    event_type: str = Field(max_length=limits.event_type_length_max, examples=["llm.completion"])
    aggregation: str = Field(
        max_length=16,
        description="`count`, `sum`, `max`, `min`, `unique_count` or `latest`.",
        examples=["sum"],
    )
    field: str | None = Field(
        default=None,
        max_length=limits.meter_path_length_max,
        description="Dotted path into `data` (required except for count).",
        examples=["output_tokens"],
    )
    filters: dict[str, list[str]] | None = Field(
        default=None,
        description="Dotted key -> the values an event must have there to count.",
        examples=[{"model": ["gpt-4o", "gpt-4o-mini"]}],
    )
    group_by: list[str] | None = Field(
        default=None,
        description="Dotted keys usage can be grouped by.",
        examples=[["model"]],
    )


class MeterOut(Schema):
    id: str
    code: str
    name: str | None
    event_type: str
    aggregation: Aggregation
    field: str | None
    filters: dict[str, list[str]]
    group_by: list[str]
    created_at: datetime


class UsageRowOut(Schema):
    start: datetime
    end: datetime
    group: dict[str, str | None] = Field(
        description="The value of each requested group_by key (null where events lack it)."
    )
    value: str | None = Field(
        description="A decimal string; null for max, min and latest over no numeric value."
    )


class UsageOut(Schema):
    model_config = ConfigDict(populate_by_name=True)

    meter: str
    aggregation: Aggregation
    customer_id: str | None
    from_: datetime = Field(alias="from")
    to: datetime
    granularity: Granularity | None
    group_by: list[str]
    data: list[UsageRowOut]
