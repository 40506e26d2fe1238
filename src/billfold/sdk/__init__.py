"""The Billfold Python SDK: typed sync and async clients over the HTTP API.

Imports httpx and nothing of the server, so `import billfold` stays cheap.
"""

from billfold.sdk._call import ROUTES
from billfold.sdk._client import DEFAULT_MAX_RETRIES, DEFAULT_TIMEOUT, AsyncBillfold, Billfold
from billfold.sdk._errors import (
    APIConnectionError,
    APIStatusError,
    APITimeoutError,
    AuthenticationError,
    BadRequestError,
    BillfoldError,
    ConflictError,
    InternalServerError,
    NotFoundError,
    PaymentRequiredError,
    PermissionDeniedError,
    RateLimitError,
)

__all__ = [
    "DEFAULT_MAX_RETRIES",
    "DEFAULT_TIMEOUT",
    "ROUTES",
    "APIConnectionError",
    "APIStatusError",
    "APITimeoutError",
    "AsyncBillfold",
    "AuthenticationError",
    "BadRequestError",
    "Billfold",
    "BillfoldError",
    "ConflictError",
    "InternalServerError",
    "NotFoundError",
    "PaymentRequiredError",
    "PermissionDeniedError",
    "RateLimitError",
]
