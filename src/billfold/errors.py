"""The one error type services raise for the caller's mistakes.

Each error has a stable snake_case `code`, an HTTP status and, where one field
is at fault, its name. The API renders it as RFC 9457 problem details.
"""

from __future__ import annotations


class BillfoldError(Exception):
    status: int = 400
    code: str = "bad_request"
    title: str = "Bad request"

    def __init__(
        self,
        detail: str,
        *,
        code: str | None = None,
        field: str | None = None,
        status: int | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(detail)
        self.detail = detail
        if code is not None:
            self.code = code
        if status is not None:
            self.status = status
        self.field = field
        self.headers = headers


class InvalidRequest(BillfoldError):
    status = 400
    code = "invalid_request"
    title = "Invalid request"


class Unauthorized(BillfoldError):
    status = 401
    code = "unauthorized"
    title = "Unauthorized"


class NotFound(BillfoldError):
    status = 404
    code = "not_found"
    title = "Not found"

    @classmethod
    def of(cls, resource: str, field: str | None = None) -> NotFound:
        return cls(f"No such {resource}.", code=f"{resource}_not_found", field=field)


class Conflict(BillfoldError):
    status = 409
    code = "conflict"
    title = "Conflict"


class LimitExceeded(BillfoldError):
    status = 422
    code = "limit_exceeded"
    title = "Limit exceeded"
