"""When to retry and how long to wait: shared by the sync and async clients."""

from __future__ import annotations

import email.utils
import random
import time

import httpx

#: Waits are capped so that a bad Retry-After cannot park a caller for hours.
RETRY_WAIT_MAX_S = 30.0
BACKOFF_BASE_S = 0.25
BACKOFF_MAX_S = 8.0
_RETRYABLE_STATUSES = frozenset({408, 429, 500, 502, 503, 504})


def should_retry(response: httpx.Response) -> bool:
    if response.status_code in _RETRYABLE_STATUSES:
        return True
    # The first request with this Idempotency-Key is still running: its answer
    # is worth waiting for, and a retry then replays it.
    return response.status_code == 409 and _code_of(response) == "idempotency_key_in_use"


def _code_of(response: httpx.Response) -> str | None:
    try:
        body = response.json()
    except ValueError:
        return None
    code = body.get("code") if isinstance(body, dict) else None
    return code if isinstance(code, str) else None


def retry_after_s(response: httpx.Response | None) -> float | None:
    """The server's Retry-After (seconds or an HTTP date), if it sent one."""
    if response is None:
        return None
    value = response.headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    parsed = email.utils.parsedate_to_datetime(value) if value else None
    if parsed is None:
        return None
    return max(0.0, parsed.timestamp() - time.time())


def wait_s(attempt: int, response: httpx.Response | None) -> float:
    """Retry-After when given, else exponential backoff with jitter (so that
    many clients that failed together do not retry together)."""
    told = retry_after_s(response)
    if told is not None:
        return min(told, RETRY_WAIT_MAX_S)
    ceiling = min(BACKOFF_BASE_S * 2.0**attempt, BACKOFF_MAX_S)
    jitter = random.random()  # noqa: S311 - jitter, not a secret
    return ceiling * (0.5 + jitter / 2)
