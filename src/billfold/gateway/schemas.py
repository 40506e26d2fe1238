from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import Field

from billfold import limits
from billfold.api.problems import PROBLEM_TYPE_BASE
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


def problem_document(
    status: int, code: str, title: str, detail: str, request_id: str | None = None
) -> dict[str, Any]:
    """RFC 9457, plus an `error` member shaped like the providers' own, so
    that their SDKs show the message in the exception they raise."""
    document: dict[str, Any] = {
        "type": PROBLEM_TYPE_BASE + code,
        "title": title,
        "status": status,
        "detail": detail,
        "code": code,
        "error": {"type": code, "code": code, "message": detail},
    }
    if request_id is not None:
        document["request_id"] = request_id
    return document
