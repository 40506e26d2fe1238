"""A fake model provider speaking OpenAI's and Anthropic's wire formats, and a
Billfold API server on a thread, for the wrapper and gateway tests (and the
gateway benchmark).

The upstream is a small asyncio HTTP/1.1 server on its own thread, so the
official SDKs talk to it over real sockets. What it does is chosen by the
request's `model`:

- a name containing `error-429` / `error-500` / `error-400`: that HTTP error
  with the provider's error body;
- `drop`: a stream sends its first event(s) then the connection is cut (a
  non-streamed call is cut before any answer);
- `nousage`: an OpenAI chat stream never sends the usage chunk;
- anything else: a normal answer. Every answer reports the same usage
  (`OPENAI_USAGE` / `ANTHROPIC_USAGE`; output capped by `max_tokens`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from billfold.api.context import AppContext
from billfold.clock import Clock
from billfold.config import Settings
from billfold.gateway.app import GatewayConfig, create_gateway_app
from billfold.organizations import service as organizations

TEXT_PARTS = ["Hello", " from", " the", " fake", " upstream", ".", "!"]
OPENAI_PROMPT_TOKENS = 12
OPENAI_CACHED_TOKENS = 4
ANTHROPIC_INPUT = {
    "input_tokens": 10,
    "cache_read_input_tokens": 2,
    "cache_creation_input_tokens": 3,
}


@dataclass
class Seen:
    path: str
    headers: dict[str, str]
    body: dict[str, Any]


@dataclass
class FakeUpstream:
    host: str = "127.0.0.1"
    port: int = 0
    requests: list[Seen] = field(default_factory=list)
    _loop: asyncio.AbstractEventLoop | None = None
    _server: asyncio.Server | None = None
    _stop: asyncio.Event = field(default_factory=asyncio.Event)
    _thread: threading.Thread | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)
    #: While set and not yet opened, every answer waits (requests are still counted).
    gate: threading.Event | None = None
    #: Statuses to answer the next requests with, one each, before normal answers.
    fail_next: list[int] = field(default_factory=list)

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def count(self, path: str | None = None) -> int:
        with self._lock:
            return sum(1 for seen in self.requests if path is None or seen.path == path)

    def start(self) -> None:
        ready = threading.Event()

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop

            async def serve() -> None:
                self._stop = asyncio.Event()
                self._server = await asyncio.start_server(self._handle, self.host, self.port)
                self.port = self._server.sockets[0].getsockname()[1]
                ready.set()
                await self._stop.wait()
                self._server.close()
                handlers = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
                for task in handlers:
                    task.cancel()
                await asyncio.gather(*handlers, return_exceptions=True)
                await self._server.wait_closed()

            loop.run_until_complete(serve())
            loop.close()

        self._thread = threading.Thread(target=run, name="fake-upstream", daemon=True)
        self._thread.start()
        assert ready.wait(10), "fake upstream did not start"

    def stop(self) -> None:
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        if self._thread is not None:
            self._thread.join(10)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, ConnectionError):
                    return
                lines = head.decode("latin-1").split("\r\n")
                _, path, _ = lines[0].split(" ", 2)
                headers = {}
                for line in lines[1:]:
                    if ":" in line:
                        name, _, value = line.partition(":")
                        headers[name.strip().lower()] = value.strip()
                raw = await reader.readexactly(int(headers.get("content-length", "0")))
                body = json.loads(raw) if raw else {}
                with self._lock:
                    self.requests.append(Seen(path.split("?")[0], headers, body))
                if not await self._answer(path.split("?")[0], body, writer):
                    return
        except (ConnectionError, asyncio.CancelledError):
            return
        finally:
            writer.close()

    async def _answer(self, path: str, body: dict[str, Any], writer: asyncio.StreamWriter) -> bool:
        """Writes one answer; False when the connection was cut on purpose."""
        while self.gate is not None and not self.gate.is_set():  # noqa: ASYNC110
            await asyncio.sleep(0.005)
        model = str(body.get("model", ""))
        anthropic = path == "/v1/messages"
        with self._lock:
            scripted = self.fail_next.pop(0) if self.fail_next else None
        for status in (400, 429, 500):
            if f"error-{status}" in model or scripted == status:
                _send(writer, status, _error(anthropic, status))
                await writer.drain()
                return True
        stream = body.get("stream") is True
        if "drop" in model and not stream:
            writer.transport.abort()
            return False
        if not stream:
            if path == "/v1/chat/completions":
                document = _chat(body)
            elif path == "/v1/responses":
                document = _response(body, "completed")
            elif path == "/v1/embeddings":
                document = _embeddings(body)
            elif anthropic:
                document = _message(body)
            else:
                _send(writer, 404, {"error": {"message": "no such route", "type": "not_found"}})
                await writer.drain()
                return True
            _send(writer, 200, document)
            await writer.drain()
            return True
        events = _stream_events(path, body)
        writer.write(
            b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
            b"transfer-encoding: chunked\r\ncache-control: no-cache\r\n\r\n"
        )
        for index, event in enumerate(events):
            if "drop" in model and index == 3:
                await writer.drain()
                writer.transport.abort()
                return False
            data = event.encode()
            writer.write(b"%x\r\n%s\r\n" % (len(data), data))
            await writer.drain()
        writer.write(b"0\r\n\r\n")
        await writer.drain()
        return True


def _send(writer: asyncio.StreamWriter, status: int, document: dict[str, Any]) -> None:
    data = json.dumps(document).encode()
    reason = {200: "OK", 400: "Bad Request", 404: "Not Found", 429: "Too Many Requests"}.get(
        status, "Error"
    )
    head = (
        f"HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\n"
        f"content-length: {len(data)}\r\n"
    )
    if status == 429:
        head += "retry-after: 0\r\n"
    writer.write(head.encode() + b"\r\n" + data)


def _error(anthropic: bool, status: int) -> dict[str, Any]:
    kind = {400: "invalid_request_error", 429: "rate_limit_error", 500: "api_error"}[status]
    if anthropic:
        return {"type": "error", "error": {"type": kind, "message": f"fake {status}"}}
    return {"error": {"message": f"fake {status}", "type": kind, "param": None, "code": kind}}


def output_tokens(body: dict[str, Any]) -> int:
    limit = body.get("max_completion_tokens") or body.get("max_tokens")
    limit = limit or body.get("max_output_tokens")
    return min(len(TEXT_PARTS), limit) if isinstance(limit, int) else len(TEXT_PARTS)


def _parts(body: dict[str, Any]) -> list[str]:
    return TEXT_PARTS[: output_tokens(body)]


def openai_usage(body: dict[str, Any]) -> dict[str, Any]:
    out = output_tokens(body)
    return {
        "prompt_tokens": OPENAI_PROMPT_TOKENS,
        "completion_tokens": out,
        "total_tokens": OPENAI_PROMPT_TOKENS + out,
        "prompt_tokens_details": {"cached_tokens": OPENAI_CACHED_TOKENS, "audio_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": 0},
    }


def responses_usage(body: dict[str, Any]) -> dict[str, Any]:
    out = output_tokens(body)
    return {
        "input_tokens": OPENAI_PROMPT_TOKENS,
        "input_tokens_details": {"cached_tokens": OPENAI_CACHED_TOKENS},
        "output_tokens": out,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": OPENAI_PROMPT_TOKENS + out,
    }


def anthropic_usage(body: dict[str, Any]) -> dict[str, Any]:
    return ANTHROPIC_INPUT | {"output_tokens": output_tokens(body)}


#: What the provider answers it ran, as real ones resolve aliases to snapshots.
RESOLVED = {"gpt-4o": "gpt-4o-2024-08-06", "gpt-4.1": "gpt-4.1-2025-04-14"}


def _resolved(body: dict[str, Any]) -> str:
    model = str(body.get("model"))
    return RESOLVED.get(model, model)


def _chat(body: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": "chatcmpl-fake",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": _resolved(body),
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "".join(_parts(body))},
                "finish_reason": "stop",
                "logprobs": None,
            }
        ],
        "usage": openai_usage(body),
    }


def _response(body: dict[str, Any], status: str) -> dict[str, Any]:
    text = "".join(_parts(body))
    return {
        "id": "resp_fake",
        "object": "response",
        "created_at": int(time.time()),
        "status": status,
        "model": _resolved(body),
        "output": [
            {
                "id": "msg_fake",
                "type": "message",
                "status": "completed",
                "role": "assistant",
                "content": [{"type": "output_text", "text": text, "annotations": []}],
            }
        ],
        "parallel_tool_calls": True,
        "tool_choice": "auto",
        "tools": [],
        "usage": responses_usage(body) if status == "completed" else None,
    }


def _embeddings(body: dict[str, Any]) -> dict[str, Any]:
    given = body.get("input")
    count = len(given) if isinstance(given, list) and given and isinstance(given[0], str) else 1
    # A character a token: what short ASCII inputs come to.
    tokens = sum(len(text) for text in given) if isinstance(given, list) else len(str(given))
    return {
        "object": "list",
        "model": _resolved(body),
        "data": [
            {"object": "embedding", "index": i, "embedding": [0.1, 0.2, 0.3]} for i in range(count)
        ],
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }


def _message(body: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": "msg_fake",
        "type": "message",
        "role": "assistant",
        "model": _resolved(body),
        "content": [{"type": "text", "text": "".join(_parts(body))}],
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "usage": anthropic_usage(body),
    }


def _sse(data: dict[str, Any], event: str | None = None) -> str:
    head = f"event: {event}\n" if event else ""
    return f"{head}data: {json.dumps(data)}\n\n"


def _stream_events(path: str, body: dict[str, Any]) -> list[str]:
    model = _resolved(body)
    parts = _parts(body)
    if path == "/v1/chat/completions":
        base = {
            "id": "chatcmpl-fake",
            "object": "chat.completion.chunk",
            "created": 1,
            "model": model,
        }
        events = [
            _sse(
                base
                | {
                    "choices": [
                        {
                            "index": 0,
                            "delta": {"role": "assistant", "content": part},
                            "finish_reason": None,
                        }
                    ]
                }
            )
            for part in parts
        ]
        events.append(
            _sse(base | {"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
        )
        options = body.get("stream_options") or {}
        if options.get("include_usage") and "nousage" not in str(body.get("model")):
            events.append(_sse(base | {"choices": [], "usage": openai_usage(body)}))
        events.append("data: [DONE]\n\n")
        return events
    if path == "/v1/responses":
        created = _response(body, "in_progress")
        events = [
            _sse(
                {"type": "response.created", "sequence_number": 0, "response": created},
                "response.created",
            )
        ]
        for index, part in enumerate(parts):
            events.append(
                _sse(
                    {
                        "type": "response.output_text.delta",
                        "sequence_number": index + 1,
                        "item_id": "msg_fake",
                        "output_index": 0,
                        "content_index": 0,
                        "delta": part,
                        "logprobs": [],
                    },
                    "response.output_text.delta",
                )
            )
        done = _response(body, "completed")
        events.append(
            _sse(
                {"type": "response.completed", "sequence_number": len(parts) + 1, "response": done},
                "response.completed",
            )
        )
        return events
    message = _message(body) | {"content": [], "stop_reason": None}
    message["usage"] = ANTHROPIC_INPUT | {"output_tokens": 1}
    events = [
        _sse({"type": "message_start", "message": message}, "message_start"),
        _sse(
            {
                "type": "content_block_start",
                "index": 0,
                "content_block": {"type": "text", "text": ""},
            },
            "content_block_start",
        ),
    ]
    for part in parts:
        events.append(
            _sse(
                {
                    "type": "content_block_delta",
                    "index": 0,
                    "delta": {"type": "text_delta", "text": part},
                },
                "content_block_delta",
            )
        )
    events.append(_sse({"type": "content_block_stop", "index": 0}, "content_block_stop"))
    events.append(
        _sse(
            {
                "type": "message_delta",
                "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                "usage": {"output_tokens": len(parts)},
            },
            "message_delta",
        )
    )
    events.append(_sse({"type": "message_stop"}, "message_stop"))
    return events


@contextlib.contextmanager
def fake_upstream() -> Iterator[FakeUpstream]:
    upstream = FakeUpstream()
    upstream.start()
    try:
        yield upstream
    finally:
        upstream.stop()


@dataclass
class ThreadServer:
    """The Billfold API under uvicorn on a thread with its own event loop, so
    sync clients (and the SDKs' own sockets) reach it over real HTTP."""

    base_url: str
    api_key: str
    organization_id: str
    gateway_url: str | None = None


@contextlib.contextmanager
def billfold_server(
    database_url: str, clock: Clock | None = None, gateway: GatewayConfig | None = None
) -> Iterator[ThreadServer]:
    """The API (and, given its config, the gateway on a second port), one
    process context shared as in production one database is."""
    import uvicorn

    from billfold.api.app import create_app
    from tests.live import free_port

    port = free_port()
    gateway_port = free_port()
    made: dict[str, Any] = {}
    ready = threading.Event()
    state: dict[str, Any] = {}

    def run() -> None:
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        settings = Settings(
            database_url=database_url, log_level="WARNING", run_worker_in_server=False
        )
        ctx = AppContext.create(settings, clock=clock)

        async def main() -> None:
            async with ctx.sessions() as session:
                organization, issued = await organizations.create_organization(
                    session, ctx.clock, "LLM Co"
                )
                await session.commit()
            made["key"] = issued.secret
            made["org"] = organization.id
            config = uvicorn.Config(
                create_app(ctx, run_worker=False),
                host="127.0.0.1",
                port=port,
                log_level="warning",
                lifespan="on",
                loop="asyncio",
            )
            servers = [uvicorn.Server(config)]
            if gateway is not None:
                servers.append(
                    uvicorn.Server(
                        uvicorn.Config(
                            create_gateway_app(ctx, gateway),
                            host="127.0.0.1",
                            port=gateway_port,
                            log_level="warning",
                            lifespan="on",
                            loop="asyncio",
                        )
                    )
                )
            state["servers"] = servers
            serving = [asyncio.create_task(server.serve()) for server in servers]
            while not all(server.started for server in servers):  # noqa: ASYNC110
                await asyncio.sleep(0.01)
            ready.set()
            await asyncio.gather(*serving)
            await ctx.engine.dispose()

        loop.run_until_complete(main())
        loop.close()

    thread = threading.Thread(target=run, name="billfold-api", daemon=True)
    thread.start()
    assert ready.wait(30), "the Billfold API did not start"
    try:
        yield ThreadServer(
            f"http://127.0.0.1:{port}",
            made["key"],
            made["org"],
            f"http://127.0.0.1:{gateway_port}" if gateway is not None else None,
        )
    finally:
        for server in state["servers"]:
            server.should_exit = True
        thread.join(30)


# --- the billing side of the tests ---------------------------------------------

INPUT_PRICE = "0.001"
OUTPUT_PRICE = "0.002"


def llm_prices(event_type: str = "llm.usage") -> list[dict[str, Any]]:
    return [
        {
            "code": code,
            "type": "usage",
            "meter": meter,
            "asset": "USD",
            "billing": "real_time",
            "model": "per_unit",
            "unit_amount": price,
        }
        for code, meter, price in (
            ("tokens_in", "input_tokens", INPUT_PRICE),
            ("tokens_out", "output_tokens", OUTPUT_PRICE),
        )
    ]


def llm_customer(client: Any, external_id: str = "acme", funds: str = "100.00") -> str:
    """Meters over the usage events' token counts, a product pricing them in
    real time (0.001 USD an input token, 0.002 an output token), and a funded
    customer subscribed to it. `client` is a sync `Billfold`."""
    meters = {row["code"] for row in client.meters.list(limit=100)["data"]}
    for field_name in ("input_tokens", "output_tokens"):
        if field_name not in meters:
            client.meters.create(
                code=field_name, event_type="llm.usage", aggregation="sum", field=field_name
            )
    # The fake's trigger models (`gpt-4o-drop` …) are in no vendor price table.
    client.llm.update_settings(unknown_model_policy="record")
    products = {row["code"] for row in client.products.list(limit=100)["data"]}
    if "llm" not in products:
        client.products.create(code="llm", name="LLM", prices=llm_prices())
    customer = client.customers.create(external_id=external_id)
    client.subscriptions.create(customer_id=customer["id"], product="llm")
    if funds != "0":
        client.customers.create_grant(customer["id"], asset="USD", amount=funds, purpose="paid")
    return f"ext:{external_id}"


def db_rows(database_url: str, sql: str, **params: Any) -> list[tuple[Any, ...]]:
    import sqlalchemy as sa

    url = database_url.replace("postgresql://", "postgresql+psycopg://", 1)
    engine = sa.create_engine(url)
    try:
        with engine.connect() as connection:
            return [tuple(row) for row in connection.execute(sa.text(sql), params)]
    finally:
        engine.dispose()


def holds(database_url: str) -> list[tuple[str, int, int, int]]:
    """Every hold: (status, amount_minor, captured_minor, released_minor), oldest first."""
    return [
        (str(r[0]), int(r[1]), int(r[2]), int(r[3]))
        for r in db_rows(
            database_url,
            "SELECT status, amount_minor, captured_minor, released_minor FROM authorizations "
            "ORDER BY created_at, id",
        )
    ]


def usage_events(database_url: str) -> list[dict[str, Any]]:
    rows = db_rows(database_url, "SELECT data FROM events ORDER BY received_at, id")
    return [row[0] if isinstance(row[0], dict) else json.loads(row[0]) for row in rows]
