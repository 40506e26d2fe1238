"""The SDK's errors. Every one carries `code`, `status` and `request_id`
(`None` where there is no HTTP answer), like the problem bodies they come from."""

from __future__ import annotations

from typing import Any


class BillfoldError(Exception):
    """Anything the SDK raises."""

    code: str = "error"
    status: int | None = None
    request_id: str | None = None

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        status: int | None = None,
        request_id: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        self.status = status
        self.request_id = request_id


class APIConnectionError(BillfoldError):
    """No answer: the connection failed or dropped. Retried before it is raised."""

    code = "connection_error"


class APITimeoutError(APIConnectionError):
    code = "timeout"


class APIStatusError(BillfoldError):
    """An HTTP error answer, with its RFC 9457 problem body."""

    def __init__(
        self,
        message: str,
        *,
        code: str,
        status: int,
        request_id: str | None,
        body: dict[str, Any],
    ) -> None:
        super().__init__(message, code=code, status=status, request_id=request_id)
        self.body = body
        self.title: str | None = _str_or_none(body.get("title"))
        self.detail: str | None = _str_or_none(body.get("detail"))
        self.field: str | None = _str_or_none(body.get("field"))


class BadRequestError(APIStatusError):
    """400 and 422: the request was wrong and changed nothing."""


class AuthenticationError(APIStatusError):
    """401: the API key is missing, unknown or revoked."""


class PaymentRequiredError(APIStatusError):
    """402: the wallet cannot pay for this."""


class PermissionDeniedError(APIStatusError):
    """403."""


class NotFoundError(APIStatusError):
    """404: missing, or another organization's (the two are never told apart)."""


class ConflictError(APIStatusError):
    """409: a state conflict (already captured, an Idempotency-Key reused …)."""


class RateLimitError(APIStatusError):
    """429."""


class InternalServerError(APIStatusError):
    """5xx."""


_BY_STATUS: dict[int, type[APIStatusError]] = {
    400: BadRequestError,
    401: AuthenticationError,
    402: PaymentRequiredError,
    403: PermissionDeniedError,
    404: NotFoundError,
    409: ConflictError,
    422: BadRequestError,
    429: RateLimitError,
}


def _str_or_none(value: object) -> str | None:
    return value if isinstance(value, str) else None


def status_error(status: int, body: object, request_id: str | None) -> APIStatusError:
    """The error for an HTTP error answer; `body` is its parsed JSON, if any."""
    problem = body if isinstance(body, dict) else {}
    code = _str_or_none(problem.get("code")) or f"http_{status}"
    message = (
        _str_or_none(problem.get("detail"))
        or _str_or_none(problem.get("title"))
        or f"HTTP {status}"
    )
    kind = _BY_STATUS.get(status) or (InternalServerError if status >= 500 else APIStatusError)
    return kind(
        f"{message} ({code}, HTTP {status})",
        code=code,
        status=status,
        request_id=request_id or _str_or_none(problem.get("request_id")),
        body=problem,
    )
