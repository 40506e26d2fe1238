"""ASGI middleware: request ids, body limits, content types, metrics, access log.

Written as raw ASGI rather than BaseHTTPMiddleware: it sits on every request,
and the raw form costs no extra task or stream copy.
"""

from __future__ import annotations

import logging
import re
import time
import uuid

from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from billfold import limits
from billfold.api.problems import internal_error_response, problem_response
from billfold.observability import (
    http_request_duration_seconds,
    http_requests_total,
    request_id_var,
)

logger = logging.getLogger("billfold.access")

_REQUEST_ID_RE = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key == name:
            return str(value.decode("latin-1"))
    return None


def _is_json(content_type: str | None) -> bool:
    if content_type is None:
        return False
    media = content_type.split(";", 1)[0].strip().lower()
    return media == "application/json" or (
        media.startswith("application/") and media.endswith("+json")
    )


class RequestMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        incoming = _header(scope, b"x-request-id")
        request_id = (
            incoming if incoming and _REQUEST_ID_RE.match(incoming) else f"req_{uuid.uuid4().hex}"
        )
        scope.setdefault("state", {})["request_id"] = request_id
        token = request_id_var.set(request_id)
        status_holder = [500]
        response_started = [False]

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                response_started[0] = True
                status_holder[0] = message["status"]
                headers = list(message.get("headers", []))
                headers.append((b"x-request-id", request_id.encode("latin-1")))
                message["headers"] = headers
            await send(message)

        try:
            rejection, receive = await self._read_body(scope, receive, request_id)
            if rejection is not None:
                await rejection(scope, receive, send_with_id)
            else:
                try:
                    await self.app(scope, receive, send_with_id)
                except Exception:
                    # Starlette answers unhandled errors from its outermost
                    # middleware, whose `send` bypasses ours: answer here so the
                    # 500 carries the request id, then let the error go on to
                    # be logged (it sends nothing once a response started).
                    if not response_started[0]:
                        await internal_error_response(Request(scope))(scope, receive, send_with_id)
                    raise
        finally:
            elapsed = time.perf_counter() - started
            route = scope.get("route")
            route_path = getattr(route, "path", "unmatched")
            method = scope["method"]
            http_requests_total.labels(method, route_path, str(status_holder[0])).inc()
            http_request_duration_seconds.labels(method, route_path).observe(elapsed)
            logger.info(
                "request",
                extra={
                    "method": method,
                    "path": scope["path"],
                    "route": route_path,
                    "status": status_holder[0],
                    "duration_ms": round(elapsed * 1000, 3),
                },
            )
            request_id_var.reset(token)

    async def _read_body(
        self, scope: Scope, receive: Receive, request_id: str
    ) -> tuple[ASGIApp | None, Receive]:
        """Buffer the body (bounded) so oversized or non-JSON bodies are refused
        before any endpoint sees them."""
        if scope["method"] not in _BODY_METHODS:
            return None, receive
        declared = _header(scope, b"content-length")
        if (
            declared is not None
            and declared.isdigit()
            and int(declared) > limits.request_body_bytes_max
        ):
            return self._too_large(request_id), receive
        chunks: list[bytes] = []
        size = 0
        more = True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return None, receive
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limits.request_body_bytes_max:
                return self._too_large(request_id), receive
            chunks.append(chunk)
            more = message.get("more_body", False)
        body = b"".join(chunks)
        if body and not _is_json(_header(scope, b"content-type")):
            return (
                problem_response(
                    415,
                    "unsupported_media_type",
                    "Unsupported media type",
                    "Send the request body as JSON with Content-Type: application/json.",
                    request_id=request_id,
                ),
                receive,
            )
        delivered = False

        async def replay() -> Message:
            nonlocal delivered
            if not delivered:
                delivered = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        return None, replay

    @staticmethod
    def _too_large(request_id: str) -> ASGIApp:
        return problem_response(
            413,
            "payload_too_large",
            "Payload too large",
            f"The request body exceeds {limits.request_body_bytes_max} bytes.",
            request_id=request_id,
        )
