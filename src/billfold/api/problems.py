"""RFC 9457 problem details for every error the API returns."""

from __future__ import annotations

import json
import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from billfold.errors import BillfoldError

logger = logging.getLogger("billfold.api")

PROBLEM_MEDIA_TYPE = "application/problem+json"
PROBLEM_TYPE_BASE = "https://billfold.dev/problems/"


class FieldError(BaseModel):
    field: str
    code: str
    message: str


class Problem(BaseModel):
    """An RFC 9457 problem. `code` is stable and meant for programs; `detail` for people."""

    type: str = Field(examples=["https://billfold.dev/problems/not_found"])
    title: str
    status: int
    detail: str
    code: str = Field(examples=["not_found"])
    field: str | None = None
    errors: list[FieldError] | None = None
    request_id: str | None = None


def problem_response(
    status: int,
    code: str,
    title: str,
    detail: str,
    *,
    field: str | None = None,
    errors: list[dict[str, str]] | None = None,
    request_id: str | None = None,
    headers: dict[str, str] | None = None,
) -> Response:
    body: dict[str, Any] = {
        "type": PROBLEM_TYPE_BASE + code,
        "title": title,
        "status": status,
        "detail": detail,
        "code": code,
    }
    if field is not None:
        body["field"] = field
    if errors:
        body["errors"] = errors
    if request_id is not None:
        body["request_id"] = request_id
    return Response(
        content=json.dumps(body, separators=(",", ":")),
        status_code=status,
        media_type=PROBLEM_MEDIA_TYPE,
        headers=headers,
    )


def request_id_of(request: Request) -> str | None:
    value = getattr(request.state, "request_id", None)
    return value if isinstance(value, str) else None


def billfold_error_response(request: Request, exc: BillfoldError) -> Response:
    return problem_response(
        exc.status,
        exc.code,
        exc.title,
        exc.detail,
        field=exc.field,
        request_id=request_id_of(request),
        headers=exc.headers,
    )


_HTTP_CODES = {
    400: ("bad_request", "Bad request"),
    401: ("unauthorized", "Unauthorized"),
    403: ("forbidden", "Forbidden"),
    404: ("route_not_found", "Not found"),
    405: ("method_not_allowed", "Method not allowed"),
    413: ("payload_too_large", "Payload too large"),
    415: ("unsupported_media_type", "Unsupported media type"),
}


def _field_path(loc: tuple[Any, ...] | list[Any]) -> str:
    # Drop the "body"/"query"/"path" location marker; callers know their own fields.
    parts = [str(p) for p in loc]
    if parts and parts[0] in ("body", "query", "path", "header"):
        parts = parts[1:]
    return ".".join(parts)


def validation_error_response(request: Request, exc: RequestValidationError) -> Response:
    raw = exc.errors()
    if any(err.get("type") == "json_invalid" for err in raw):
        return problem_response(
            400,
            "malformed_json",
            "Malformed JSON",
            "The request body is not valid JSON.",
            request_id=request_id_of(request),
        )
    errors = [
        {
            "field": _field_path(err.get("loc", ())),
            "code": str(err.get("type", "invalid")),
            "message": str(err.get("msg", "")),
        }
        for err in raw
    ]
    first = errors[0] if errors else {"field": "", "message": "invalid request"}
    field = first["field"] or None
    detail = f"{field}: {first['message']}" if field else first["message"]
    return problem_response(
        422,
        "validation_error",
        "Validation failed",
        detail,
        field=field,
        errors=errors,
        request_id=request_id_of(request),
    )


def http_error_response(request: Request, exc: StarletteHTTPException) -> Response:
    code, title = _HTTP_CODES.get(exc.status_code, ("http_error", "HTTP error"))
    detail = exc.detail if isinstance(exc.detail, str) else title
    if exc.status_code == 404 and detail == "Not Found":
        detail = f"No route matches {request.method} {request.url.path}."
    return problem_response(
        exc.status_code,
        code,
        title,
        detail,
        request_id=request_id_of(request),
        headers=dict(exc.headers) if exc.headers else None,
    )


def internal_error_response(request: Request) -> Response:
    return problem_response(
        500,
        "internal_error",
        "Internal error",
        "Billfold hit an unexpected error; nothing was changed. "
        "The request id names it in our logs.",
        request_id=request_id_of(request),
    )


def install(app: FastAPI) -> None:
    async def on_billfold_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, BillfoldError)
        return billfold_error_response(request, exc)

    async def on_validation_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        return validation_error_response(request, exc)

    async def on_http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        return http_error_response(request, exc)

    async def on_unexpected(request: Request, exc: Exception) -> Response:
        logger.exception("unhandled error", exc_info=exc)
        return internal_error_response(request)

    app.add_exception_handler(BillfoldError, on_billfold_error)
    app.add_exception_handler(RequestValidationError, on_validation_error)
    app.add_exception_handler(StarletteHTTPException, on_http_error)
    app.add_exception_handler(Exception, on_unexpected)


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI declarations of the problem responses a route can give."""
    common = {400, 401, 413, 415, 422, 500}
    declared: dict[int | str, dict[str, Any]] = {}
    for status in sorted(common | set(statuses)):
        declared[status] = {
            "model": Problem,
            "description": "Problem details (RFC 9457)",
            "content": {PROBLEM_MEDIA_TYPE: {"schema": {"$ref": "#/components/schemas/Problem"}}},
        }
    return declared
