from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import Field

from billfold import limits
from billfold.api.schemas import RequestSchema, Schema


class WebhookEndpointCreate(RequestSchema):
    url: str = Field(
        max_length=limits.webhook_url_length_max, examples=["https://example.com/hooks"]
    )
    topics: list[str] = Field(
        default_factory=lambda: ["*"],
        max_length=limits.webhook_topics_per_endpoint_max,
        description='Topics to receive: exact names, a family such as "wallet.*", or "*".',
    )
    description: str | None = Field(default=None, max_length=500)


class WebhookEndpointUpdate(RequestSchema):
    url: str | None = Field(default=None, max_length=limits.webhook_url_length_max)
    topics: list[str] | None = Field(
        default=None, max_length=limits.webhook_topics_per_endpoint_max
    )
    description: str | None = Field(default=None, max_length=500)
    status: Literal["enabled", "disabled"] | None = None


class WebhookEndpointOut(Schema):
    id: str
    url: str
    topics: list[str]
    description: str | None
    status: str
    disabled_reason: str | None
    created_at: datetime


class WebhookEndpointWithSecret(WebhookEndpointOut):
    secret: str = Field(description="The signing secret (`whsec_…`). Shown only in this response.")


class WebhookAttemptOut(Schema):
    attempt_number: int
    attempted_at: datetime
    status_code: int | None
    response_body: str | None
    error: str | None
    duration_ms: int


class WebhookDeliveryOut(Schema):
    id: str
    event_id: str
    event_type: str
    endpoint_id: str
    status: str
    attempt_count: int
    next_attempt_at: datetime | None
    last_status_code: int | None
    created_at: datetime
    delivered_at: datetime | None
    payload: dict[str, Any]
    attempts: list[WebhookAttemptOut]
