from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field

from billfold import limits
from billfold.api.schemas import RequestSchema


class EstimateIn(RequestSchema):
    event_type: str = Field(max_length=limits.event_type_length_max, examples=["llm.completion"])
    data: dict[str, Any] = Field(
        default_factory=dict,
        description="The event's data as it would be sent, e.g. prompt tokens plus max_tokens",
    )


class AuthorizationCreate(RequestSchema):
    """Either `asset` and `amount`, or an `estimate` (and `asset` only to pick
    one when the customer's prices for that event charge in several)."""

    customer_id: str = Field(max_length=300, description="`cus_…` or `ext:<external_id>`")
    asset: str | None = Field(default=None, max_length=20, examples=["USD"])
    amount: str | None = Field(default=None, max_length=40, examples=["0.02"])
    estimate: EstimateIn | None = Field(
        default=None,
        description="Hold the rated price of this event under the customer's current "
        "real-time prices instead of a plain amount",
    )
    ttl_s: int = Field(
        default=limits.authorization_ttl_default_s,
        ge=1,
        le=limits.authorization_ttl_max_s,
        description="Seconds until the hold expires by itself",
    )
    metadata: dict[str, str] | None = None


class CaptureBody(RequestSchema):
    amount: str | None = Field(
        default=None, max_length=40, description="At most the held amount; all of it when omitted"
    )


class AuthorizationOut(BaseModel):
    """Declines are answers: `status: "declined"` with a `decline_code`, HTTP 200."""

    id: str | None
    object: Literal["authorization"] = "authorization"
    status: Literal["authorized", "declined", "captured", "released", "expired"]
    decline_code: str | None
    customer_id: str | None
    asset: str | None
    amount: str
    captured_amount: str
    released_amount: str
    expires_at: datetime | None
    created_at: datetime | None
    resolved_at: datetime | None
    metadata: dict[str, str]
