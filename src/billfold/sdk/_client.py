"""`Billfold` and `AsyncBillfold`: the resources over httpx, with retries."""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from collections.abc import Coroutine, Mapping
from types import TracebackType
from typing import Any, Self

import httpx

from billfold.sdk import _retries
from billfold.sdk._call import Call
from billfold.sdk._errors import APIConnectionError, APITimeoutError, status_error
from billfold.sdk._resources import Json, Resources

DEFAULT_BASE_URL = "http://127.0.0.1:8080"
#: Timeouts are always on: a hung connection must not hang the caller's request.
DEFAULT_TIMEOUT = httpx.Timeout(30.0, connect=5.0)
DEFAULT_MAX_RETRIES = 2
_VERSION = "0.1.0"


def _headers(api_key: str | None, extra: Mapping[str, str] | None) -> dict[str, str]:
    key = api_key if api_key is not None else os.environ.get("BILLFOLD_API_KEY")
    if not key:
        raise ValueError("Pass api_key= or set BILLFOLD_API_KEY.")
    return {
        "Authorization": f"Bearer {key}",
        "User-Agent": f"billfold-python/{_VERSION}",
        **(extra or {}),
    }


def _base_url(base_url: str | None) -> str:
    return base_url or os.environ.get("BILLFOLD_BASE_URL") or DEFAULT_BASE_URL


def _request_headers(call: Call) -> dict[str, str]:
    if call.method != "POST":
        return {}
    # One key per logical call, the same on each retry: the server then
    # applies the call once however many attempts reach it.
    return {"Idempotency-Key": call.idempotency_key or f"bfsdk_{uuid.uuid4().hex}"}


def _answer(call: Call, response: httpx.Response) -> Json:
    if not response.is_success:
        try:
            problem: object = response.json()
        except ValueError:
            problem = None
        raise status_error(response.status_code, problem, response.headers.get("x-request-id"))
    if call.raw:
        return {"content": response.content, "content_type": response.headers.get("content-type")}
    if not response.content:
        return {}
    document = response.json()
    return document if isinstance(document, dict) else {"data": document}


def _transport_error(exc: httpx.TransportError) -> APIConnectionError:
    if isinstance(exc, httpx.TimeoutException):
        return APITimeoutError(f"Billfold did not answer in time: {exc!r}")
    return APIConnectionError(f"Could not reach Billfold: {exc!r}")


class Billfold(Resources[Json]):
    """The synchronous client.

    >>> billfold = Billfold(api_key="bf_sk_…", base_url="http://127.0.0.1:8080")
    >>> billfold.customers.create(external_id="acme")["id"]
    """

    def __init__(
        self,
        api_key: str | None = None,
        *,
        base_url: str | None = None,
        timeout: float | httpx.Timeout = DEFAULT_TIMEOUT,
        max_retries: int = DEFAULT_MAX_RETRIES,
        transport: httpx.BaseTransport | None = None,
        default_headers: Mapping[str, str] | None = None,
    ) -> None:
        if max_retries < 0:
            raise ValueError("max_retries is 0 or more")
        self.max_retries = max_retries
        self._http = httpx.Client(
            base_url=_base_url(base_url),
            headers=_headers(api_key, default_headers),
            timeout=timeout,
            transport=transport,
        )
        super().__init__(self._send)

    def _send(self, call: Call) -> Json:
        headers = _request_headers(call)
        for attempt in range(self.max_retries + 1):
            last = attempt == self.max_retries
            try:
                response = self._http.request(
                    call.method, call.path, json=call.json, params=call.params, headers=headers
                )
            except httpx.TransportError as exc:
                if last:
                    raise _transport_error(exc) from exc
                time.sleep(_retries.wait_s(attempt, None))
                continue
            if not last and _retries.should_retry(response):
                time.sleep(_retries.wait_s(attempt, response))
                continue
            return _answer(call, response)
        raise AssertionError("unreachable: the last attempt returns or raises")

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()


class AsyncBillfold(Resources[Coroutine[Any, Any, Json]]):
    """The asynchronous client: the same resources, each method awaited."""

    def __init__(
        self,
        api_key: str | None = None,
        *,
        base_url: str | None = None,
        timeout: float | httpx.Timeout = DEFAULT_TIMEOUT,
        max_retries: int = DEFAULT_MAX_RETRIES,
        transport: httpx.AsyncBaseTransport | None = None,
        default_headers: Mapping[str, str] | None = None,
        max_connections: int = 100,
    ) -> None:
        if max_retries < 0:
            raise ValueError("max_retries is 0 or more")
        self.max_retries = max_retries
        self._http = httpx.AsyncClient(
            base_url=_base_url(base_url),
            headers=_headers(api_key, default_headers),
            timeout=timeout,
            transport=transport,
            limits=httpx.Limits(
                max_connections=max_connections, max_keepalive_connections=max_connections
            ),
        )
        super().__init__(self._send)

    def _send(self, call: Call) -> Coroutine[Any, Any, Json]:
        return self._request(call)

    async def _request(self, call: Call) -> Json:
        headers = _request_headers(call)
        for attempt in range(self.max_retries + 1):
            last = attempt == self.max_retries
            try:
                response = await self._http.request(
                    call.method, call.path, json=call.json, params=call.params, headers=headers
                )
            except httpx.TransportError as exc:
                if last:
                    raise _transport_error(exc) from exc
                await asyncio.sleep(_retries.wait_s(attempt, None))
                continue
            if not last and _retries.should_retry(response):
                await asyncio.sleep(_retries.wait_s(attempt, response))
                continue
            return _answer(call, response)
        raise AssertionError("unreachable: the last attempt returns or raises")

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.aclose()
