from __future__ import annotations

from datetime import datetime

from pydantic import Field

from billfold import limits
from billfold.api.schemas import RequestSchema, Schema


class ApiKeyCreate(RequestSchema):
    name: str = Field(default="unnamed", min_length=1, max_length=limits.api_key_name_length_max)


class ApiKeyOut(Schema):
    id: str
    name: str
    key_prefix: str
    created_at: datetime
    revoked_at: datetime | None = None


class ApiKeyCreated(ApiKeyOut):
    key: str = Field(description="The secret key. Shown only in this response; store it now.")
