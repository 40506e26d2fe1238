from __future__ import annotations

from datetime import datetime

from pydantic import Field

from billfold import limits
from billfold.api.schemas import RequestSchema, Schema


class GatewayKeyCreate(RequestSchema):
    name: str = Field(
        default="unnamed", min_length=1, max_length=limits.gateway_key_name_length_max
    )


class GatewayKeyOut(Schema):
    id: str
    customer_id: str
    name: str
    key_prefix: str
    created_at: datetime
    revoked_at: datetime | None = None


class GatewayKeyCreated(GatewayKeyOut):
    key: str = Field(
        description="The secret key for the gateway (`Authorization: Bearer …` or "
        "`x-api-key`). Shown only in this response; store it now."
    )
