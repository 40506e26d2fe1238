from __future__ import annotations

from datetime import datetime

from pydantic import Field

from billfold import limits
from billfold.api.schemas import RequestSchema, Schema


class CustomerCreate(RequestSchema):
    external_id: str = Field(
        max_length=limits.customer_external_id_length_max,
        examples=["user_42"],
        description='Your id for the customer; unique in your organization. No "/".',
    )
    name: str | None = Field(default=None, max_length=limits.customer_name_length_max)
    email: str | None = Field(default=None, max_length=limits.customer_email_length_max)
    metadata: dict[str, str] | None = Field(
        default=None,
        description=f"Up to {limits.customer_metadata_keys_max} string labels.",
    )


class CustomerOut(Schema):
    id: str
    external_id: str
    name: str | None
    email: str | None
    metadata: dict[str, str]
    created_at: datetime
