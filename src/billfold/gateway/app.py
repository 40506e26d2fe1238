"""The gateway: the providers' own HTTP APIs, every call held and settled.

Clients keep their SDK and point its base URL here with a gateway key as
their API key. For each call: authenticate the key (its customer) →
estimate the worst case → hold it → forward with the operator's provider key
→ answer (streamed as it arrives) → settle with the usage the provider
reported. State lives only in the database: holds, keys and events.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Coroutine, Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from billfold import limits
from billfold.api.context import AppContext
from billfold.errors import BillfoldError
from billfold.gateway.billing import Caller, LocalBilling
from billfold.gateway.schemas import problem_document
from billfold.llm import _estimate
from billfold.llm._billing import AuthorizationDeclined, Opened, Options
from billfold.llm._estimate import Estimate
from billfold.llm._usage import RESERVED_DATA_KEYS

logger = logging.getLogger("billfold.gateway")

#: After a client leaves mid-stream, how long the gateway keeps reading the
#: provider's stream for its final usage before settling on an estimate.
DRAIN_AFTER_DISCONNECT_S = 60.0
#: Connecting, then each read: a long generation may pause between tokens,
#: but never for ten minutes.
UPSTREAM_TIMEOUT = aiohttp.ClientTimeout(total=None, sock_connect=10.0, sock_read=600.0)
#: What a failed or broken-off exchange with the provider raises.
UPSTREAM_ERRORS = (aiohttp.ClientError, TimeoutError)


@dataclass(frozen=True, slots=True)
class Upstream:
    base_url: str
    api_key: str | None


@dataclass(frozen=True, slots=True)
class GatewayConfig:
    openai: Upstream | None
    anthropic: Upstream | None
    hold_amount: str | None = None
    asset: str = "USD"
    hold_ttl_s: int = 900
    on_provider_error: str = "release"
    #: How long a key's customer and that customer's prices, once read, serve
    #: later calls (0: read them for every call).
    lookup_ttl_s: float = limits.gateway_lookup_ttl_s
    #: A settler process (`billfold gateway` starts one) ingests the queued
    #: usage events; this process leaves them to it (see `Settler`).
    settler_process: bool = False


def origin(url: str) -> str:
    """`https://api.openai.com/v1/` and `https://api.openai.com` alike → the origin."""
    url = url.rstrip("/")
    return url[: -len("/v1")] if url.endswith("/v1") else url


def problem(
    status: int,
    code: str,
    title: str,
    detail: str,
    request_id: str | None = None,
    headers: Mapping[str, str] | None = None,
) -> Response:
    merged = dict(headers or {})
    if request_id:
        merged["x-request-id"] = request_id
    return JSONResponse(
        problem_document(status, code, title, detail, request_id),
        status,
        headers=merged,
        media_type="application/problem+json",
    )


async def _body(request: Request) -> bytes | None:
    """The body, or None past the limit (read no further than that)."""
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limits.gateway_request_body_bytes_max:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


def _secret(request: Request) -> str | None:
    authorization = request.headers.get("authorization")
    if authorization:
        scheme, _, value = authorization.partition(" ")
        if scheme.lower() == "bearer":
            return value.strip()
    return request.headers.get("x-api-key")


def _tags(request: Request, caller: Caller) -> dict[str, Any] | None:
    """The caller's `X-Billfold-Tags` (a JSON object) plus the key's id; None
    when the header is not an object or uses a name the usage event sets."""
    tags: dict[str, Any] = {}
    given = request.headers.get("x-billfold-tags")
    if given:
        try:
            parsed = json.loads(given)
        except ValueError:
            return None
        if not isinstance(parsed, dict) or RESERVED_DATA_KEYS & set(parsed):
            return None
        tags = {str(k): str(v) for k, v in parsed.items()}
    tags["gateway_key_id"] = caller.gateway_key_id
    return tags


@dataclass(frozen=True, slots=True)
class _Surface:
    provider: str
    estimator: Callable[[Mapping[str, Any]], Estimate]


_SURFACES = {
    "/v1/chat/completions": _Surface("openai", _estimate.openai_chat),
    "/v1/responses": _Surface("openai", _estimate.openai_responses),
    "/v1/embeddings": _Surface("openai", _estimate.openai_embeddings),
    "/v1/messages": _Surface("anthropic", _estimate.anthropic_messages),
}

_RETRYABLE = frozenset({408, 409, 429, 500, 502, 503, 504, 529})
_FORWARDED_HEADERS = ("anthropic-version", "anthropic-beta", "openai-beta", "accept")


def _upstream_headers(
    provider: str, upstream: Upstream, request: Request, request_id: str
) -> dict[str, str]:
    """The operator's key instead of the caller's, and the few headers that
    change what the provider does."""
    headers = {"content-type": "application/json", "x-request-id": request_id}
    if provider == "openai":
        if upstream.api_key:
            headers["authorization"] = f"Bearer {upstream.api_key}"
    else:
        headers["anthropic-version"] = "2023-06-01"
        if upstream.api_key:
            headers["x-api-key"] = upstream.api_key
    for name in _FORWARDED_HEADERS:
        value = request.headers.get(name)
        if value is not None:
            headers[name] = value
    return headers


class Gateway:
    def __init__(self, ctx: AppContext, config: GatewayConfig) -> None:
        self.ctx = ctx
        self.config = config
        self.billing = LocalBilling(
            ctx,
            hold_amount=config.hold_amount,
            asset=config.asset,
            ttl_s=config.hold_ttl_s,
            settler_process=config.settler_process,
            lookup_ttl_s=config.lookup_ttl_s,
        )
        # aiohttp, not httpx, to the provider: a call to the benchmark's fake
        # provider took 0.8 ms through httpx, 0.25 ms through aiohttp. Made on
        # first use, in the event loop that serves the calls.
        self._http: aiohttp.ClientSession | None = None
        self._drains: set[asyncio.Task[None]] = set()

    def _client(self) -> aiohttp.ClientSession:
        if self._http is None:
            self._http = aiohttp.ClientSession(
                timeout=UPSTREAM_TIMEOUT,
                connector=aiohttp.TCPConnector(limit=1000, limit_per_host=0),
            )
        return self._http

    async def close(self) -> None:
        if self._drains:
            await asyncio.gather(*self._drains, return_exceptions=True)
        await self.billing.close()  # after the settles above have queued
        if self._http is not None:
            await self._http.close()

    async def _failed(
        self,
        caller: Caller,
        options: Options,
        opened: Opened,
        logical_key: str | None,
        status: int | None,
    ) -> None:
        """A provider error: release the hold (or charge the input, by policy),
        except that a call the client names with an Idempotency-Key keeps its
        hold through a retryable error, so that its retry runs under the same
        hold (unclaimed, it expires by itself and charges nothing)."""
        if logical_key is not None and (status is None or status in _RETRYABLE):
            await self.billing.release_claim(caller, logical_key)
            return
        await self.billing.fail(caller, options, opened)

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._drains.add(task)
        task.add_done_callback(self._drains.discard)

    def _upstream(self, provider: str) -> Upstream | None:
        return self.config.openai if provider == "openai" else self.config.anthropic

    async def _open(
        self,
        session: AsyncSession,
        request: Request,
        caller: Caller,
        options: Options,
        estimate: Estimate,
        raw: bytes,
        logical_key: str | None,
        request_id: str,
    ) -> Opened | Response:
        """Hold the call, first claiming the client's Idempotency-Key for it;
        or the answer that refuses it."""
        if logical_key is not None:
            try:
                ended = await self.billing.claim_call(
                    session, caller, logical_key, request.url.path, raw
                )
            except BillfoldError as exc:
                return _refusal(exc, request_id)
            if ended is not None:
                return Response(
                    ended.body,
                    ended.status,
                    headers={"x-request-id": request_id, "x-should-retry": "false"},
                    media_type=ended.content_type,
                )
        try:
            opened = await self.billing.open(
                caller, options, estimate, logical_key, request_id, session
            )
        except BaseException as exc:
            if logical_key is not None:
                # Not held, so not called: a repeat may run it (a declined
                # hold's key answers its retry with the same decline).
                with contextlib.suppress(Exception):
                    await self.billing.release_claim(caller, logical_key)
            if isinstance(exc, AuthorizationDeclined):
                return problem(
                    402,
                    exc.code,
                    "Payment required",
                    f"The customer's wallet cannot cover this call ({exc.code}).",
                    request_id,
                )
            if isinstance(exc, BillfoldError):
                return _refusal(exc, request_id)
            raise
        return opened

    async def handle(self, request: Request) -> Response:
        request_id = request.headers.get("x-request-id") or f"req_{uuid.uuid4().hex}"
        surface = _SURFACES[request.url.path]
        upstream = self._upstream(surface.provider)
        if upstream is None:
            return problem(
                404,
                "provider_not_configured",
                "Not configured",
                f"This gateway has no upstream for {surface.provider}.",
                request_id,
            )
        raw = await _body(request)
        if raw is None:
            return problem(
                413,
                "request_too_large",
                "Request too large",
                f"A model request is at most {limits.gateway_request_body_bytes_max} bytes.",
                request_id,
            )
        # One session finds the key and prices the call; `open` ends it.
        # Reads only, none of which needs another's snapshot: autocommit.
        session = self.ctx.autocommit_sessions()
        try:
            caller = await self.billing.authenticate(session, _secret(request))
            if caller is None:
                return problem(
                    401,
                    "invalid_gateway_key",
                    "Unauthorized",
                    "Send a gateway key (bf_gk_…) as the API key.",
                    request_id,
                )
            try:
                params = json.loads(raw) if raw else {}
            except ValueError:
                params = None
            if not isinstance(params, dict):
                return problem(
                    400, "malformed_json", "Bad request", "The body is a JSON object.", request_id
                )
            estimate = surface.estimator(params)
            streaming = params.get("stream") is True
            hide_usage = False
            if streaming and estimate.api == "chat":
                options_given = params.get("stream_options")
                stream_options = dict(options_given) if isinstance(options_given, dict) else {}
                hide_usage = stream_options.get("include_usage") is not True
                params["stream_options"] = stream_options | {"include_usage": True}
                raw = json.dumps(params).encode()
            tags = _tags(request, caller)
            if tags is None:
                return problem(
                    400,
                    "invalid_tags",
                    "Bad request",
                    "X-Billfold-Tags is a JSON object of names the usage event does not "
                    "set itself.",
                    request_id,
                )
            options = self.billing.options(caller, tags, self.config.on_provider_error)
            logical_key = request.headers.get("idempotency-key")
            held = await self._open(
                session, request, caller, options, estimate, raw, logical_key, request_id
            )
            if isinstance(held, Response):
                return held
            opened = held
        finally:
            await session.close()
        try:
            # The answer's head; its body is read or relayed below.
            answer = await self._client().post(
                origin(upstream.base_url) + request.url.path,
                data=raw,
                headers=_upstream_headers(surface.provider, upstream, request, request_id),
            )
        except UPSTREAM_ERRORS as exc:
            await self._failed(caller, options, opened, logical_key, None)
            return problem(
                502,
                "upstream_unreachable",
                "Bad gateway",
                f"The provider could not be reached: {type(exc).__name__}.",
                request_id,
            )
        if not streaming or answer.status >= 300:
            return await self._whole(caller, options, opened, answer, request_id, logical_key)
        return _RelayResponse(
            self._relay(caller, options, opened, answer, hide_usage),
            status_code=answer.status,
            headers={"x-request-id": request_id, "cache-control": "no-cache"},
            media_type=answer.headers.get("content-type", "text/event-stream"),
        )

    async def _whole(
        self,
        caller: Caller,
        options: Options,
        opened: Opened,
        answer: aiohttp.ClientResponse,
        request_id: str,
        logical_key: str | None,
    ) -> Response:
        try:
            content = await answer.read()
        except UPSTREAM_ERRORS:
            answer.release()
            await self._failed(caller, options, opened, logical_key, None)
            return problem(
                502,
                "upstream_dropped",
                "Bad gateway",
                "The provider's answer broke off.",
                request_id,
            )
        if answer.status >= 300:
            await self._failed(caller, options, opened, logical_key, answer.status)
        else:
            try:
                document = json.loads(content)
            except ValueError:
                document = None
            if isinstance(document, dict):
                opened.tracker.response(document)
            # After the answer, off its path: the hold already bounds the charge.
            self._spawn(self.billing.settle(caller, options, opened))
        return Response(
            content,
            answer.status,
            headers={"x-request-id": request_id},
            media_type=answer.headers.get("content-type", "application/json"),
        )

    async def _relay(
        self,
        caller: Caller,
        options: Options,
        opened: Opened,
        answer: aiohttp.ClientResponse,
        hide_usage: bool,
    ) -> AsyncIterator[bytes]:
        events = _sse_events(answer)
        finished = False
        try:
            async for arrived in events:
                # What arrived together leaves together: one send each, not
                # one per event (each is a write to the client's socket).
                relayed = []
                for block, document in arrived:
                    if document is not None:
                        opened.tracker.event(document)
                        if hide_usage and not document.get("choices") and document.get("usage"):
                            continue
                    relayed.append(block)
                if relayed:
                    yield b"".join(relayed)
            finished = True
        except UPSTREAM_ERRORS:
            # The provider's stream broke off: bill what it showed, and tell
            # the client in the provider's own terms (its SDK raises on it).
            finished = True
            yield _stream_error(opened.tracker.estimate.provider)
        finally:
            # Settling runs detached from the request: a client that leaves
            # (even just after the last event) cancels the request's scope,
            # and the call must be settled all the same. A client that left
            # mid-stream: keep reading the provider's stream (it bills us) for
            # its final usage, then settle.
            self._spawn(self._drain(caller, options, opened, answer, None if finished else events))

    async def _drain(
        self,
        caller: Caller,
        options: Options,
        opened: Opened,
        answer: aiohttp.ClientResponse,
        events: AsyncIterator[list[tuple[bytes, dict[str, Any] | None]]] | None,
    ) -> None:
        try:
            if events is not None:
                async with asyncio.timeout(DRAIN_AFTER_DISCONNECT_S):
                    async for arrived in events:
                        for _, document in arrived:
                            if document is not None:
                                opened.tracker.event(document)
        except (*UPSTREAM_ERRORS, RuntimeError):
            pass
        finally:
            # Back to the pool if read to its end; closed otherwise.
            answer.release()
            await self.billing.settle(caller, options, opened)


def _refusal(error: BillfoldError, request_id: str) -> Response:
    headers = dict(error.headers or {})
    if error.status == 409 and "Retry-After" not in headers:
        # The SDKs retry a 409, which only a call still in progress is worth
        # (it comes with Retry-After); not a key reused for another body.
        headers["x-should-retry"] = "false"
    return problem(error.status, error.code, error.title, error.detail, request_id, headers)


def _stream_error(provider: str) -> bytes:
    error = {
        "type": "upstream_dropped",
        "code": "upstream_dropped",
        "message": "The provider's stream broke off.",
    }
    if provider == "anthropic":
        return (
            b"event: error\ndata: "
            + json.dumps({"type": "error", "error": error}).encode()
            + b"\n\n"
        )
    return b"data: " + json.dumps({"error": error}).encode() + b"\n\n"


class _RelayResponse(StreamingResponse):
    """A stream whose generator is always closed when the answer ends, the
    client's disconnect included, so that its `finally` settles the call at
    once rather than whenever the abandoned generator is collected."""

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            body = self.body_iterator
            if isinstance(body, AsyncGenerator):
                await body.aclose()


async def _sse_events(
    answer: aiohttp.ClientResponse,
) -> AsyncIterator[list[tuple[bytes, dict[str, Any] | None]]]:
    """The SSE events each read from the provider completed, each as its raw
    bytes and its parsed `data` (None if not JSON)."""
    buffer = b""
    async for chunk in answer.content.iter_any():
        buffer += chunk
        arrived = []
        while True:
            cut = buffer.find(b"\n\n")
            if cut < 0:
                break
            block, buffer = buffer[: cut + 2], buffer[cut + 2 :]
            arrived.append((block, _data_of(block)))
        if arrived:
            yield arrived
    if buffer.strip():
        yield [(buffer, _data_of(buffer))]


def _data_of(block: bytes) -> dict[str, Any] | None:
    lines = [line[5:].strip() for line in block.split(b"\n") if line.startswith(b"data:")]
    if not lines:
        return None
    try:
        document = json.loads(b"\n".join(lines))
    except ValueError:
        return None
    return document if isinstance(document, dict) else None


def create_gateway_app(ctx: AppContext, config: GatewayConfig) -> Starlette:
    gateway = Gateway(ctx, config)

    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    @contextlib.asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        gateway.billing.start()
        try:
            yield
        finally:
            await gateway.close()

    routes = [Route("/healthz", healthz, methods=["GET"])]
    routes += [Route(path, gateway.handle, methods=["POST"]) for path in _SURFACES]
    app = Starlette(routes=routes, lifespan=lifespan)
    app.state.gateway = gateway
    return app
