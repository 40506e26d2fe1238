"""Typed helpers shared by the test modules: problem assertions, a real local
webhook receiver, signature verification at a chosen time, row counts and
throw-away empty databases."""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from unittest import mock

import httpx
import psycopg
import sqlalchemy as sa
from standardwebhooks import webhooks as standard_webhooks

from billfold.api.context import AppContext

PROBLEM_MEDIA_TYPE = "application/problem+json"
PG_ADMIN_URL = os.environ.get(
    "BILLFOLD_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)
_ABSENT = object()
_databases = itertools.count()


def assert_problem(
    response: httpx.Response, status: int, code: str, field: object = _ABSENT
) -> dict[str, Any]:
    """`response` is an RFC 9457 problem with this status and stable code.

    `field` is checked when given; pass None to require that no field is named.
    """
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith(PROBLEM_MEDIA_TYPE), response.headers
    body: dict[str, Any] = response.json()
    assert body["status"] == status
    assert body["code"] == code, body
    assert body["type"].endswith("/" + code)
    for member in ("title", "detail"):
        assert isinstance(body[member], str)
        assert body[member], member
    if field is not _ABSENT:
        assert body.get("field") == field, body
    request_id = response.headers.get("x-request-id")
    assert request_id, "every response carries X-Request-Id"
    assert body.get("request_id") == request_id
    return body


def without_request_id(problem: dict[str, Any]) -> dict[str, Any]:
    """A problem body minus the one part that differs between any two requests."""
    return {k: v for k, v in problem.items() if k != "request_id"}


async def count_rows(ctx: AppContext, table: str, **where: str) -> int:
    clauses = " AND ".join(f"{column} = :{column}" for column in where)
    sql = f"SELECT count(*) FROM {table}" + (f" WHERE {clauses}" if clauses else "")
    async with ctx.engine.connect() as connection:
        return int((await connection.execute(sa.text(sql), where)).scalar_one())


async def fetch_row(ctx: AppContext, table: str, row_id: str) -> dict[str, Any]:
    async with ctx.engine.connect() as connection:
        result = await connection.execute(
            sa.text(f"SELECT * FROM {table} WHERE id = :id"), {"id": row_id}
        )
        return dict(result.mappings().one())


# --- a real webhook receiver -------------------------------------------------


@dataclass(frozen=True)
class Received:
    path: str
    headers: dict[str, str]
    body: bytes

    @property
    def webhook_id(self) -> str:
        return self.headers["webhook-id"]

    @property
    def timestamp_s(self) -> int:
        return int(self.headers["webhook-timestamp"])


@dataclass
class Receiver:
    """An HTTP server on 127.0.0.1 that answers from a script of statuses
    (then 200 forever) and records every request it gets."""

    statuses: list[int] = field(default_factory=list)
    received: list[Received] = field(default_factory=list)
    url: str = ""
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def fail_next(self, *statuses: int) -> None:
        with self._lock:
            self.statuses.extend(statuses)

    def _record(self, received: Received) -> int:
        with self._lock:
            self.received.append(received)
            return self.statuses.pop(0) if self.statuses else 200


@contextlib.contextmanager
def run_receiver() -> Iterator[Receiver]:
    receiver = Receiver()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("content-length", "0"))
            body = self.rfile.read(length)
            headers = {k.lower(): v for k, v in self.headers.items()}
            status = receiver._record(Received(self.path, headers, body))
            payload = json.dumps({"status": status}).encode()
            self.send_response(status)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, format: str, *args: Any) -> None:
            pass  # keep test output clean

    class Server(ThreadingHTTPServer):
        # The sender posts a whole batch at once; a short listen queue would
        # drop connections and stall the test on TCP retransmits.
        request_queue_size = 128
        daemon_threads = True

    server = Server(("127.0.0.1", 0), Handler)
    receiver.url = f"http://127.0.0.1:{server.server_address[1]}/hooks"
    thread = threading.Thread(target=server.serve_forever, args=(0.01,), daemon=True)
    thread.start()
    try:
        yield receiver
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def verify_at(secret: str, received: Received, at: datetime) -> Any:
    """Verify with the independent `standardwebhooks` package, as a receiver
    whose clock reads `at` would; tests run on a FrozenClock that may be days
    away from the wall clock, and the verifier's ±5 min tolerance still applies."""

    class _At(datetime):
        @classmethod
        def now(cls, tz: Any = None) -> datetime:  # type: ignore[override]
            return at.astimezone(tz or UTC)

    with mock.patch.object(standard_webhooks, "datetime", _At):
        return standard_webhooks.Webhook(secret).verify(received.body, received.headers)


# --- empty databases -----------------------------------------------------------


def _pg_url(database: str) -> str:
    base, _, _ = PG_ADMIN_URL.rpartition("/")
    return f"{base}/{database}"


def _pg_admin(sql: str) -> None:
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as connection:
        connection.execute(sql)


@contextlib.contextmanager
def empty_database(backend: str, tmp_path: Path) -> Iterator[str]:
    """A URL to a database with no tables at all, dropped afterwards."""
    if backend == "sqlite":
        yield f"sqlite:///{tmp_path / f'empty_{next(_databases)}.db'}"
        return
    name = f"billfold_e_{os.getpid()}_{next(_databases)}"
    _pg_admin(f"CREATE DATABASE {name}")
    try:
        yield _pg_url(name)
    finally:
        _pg_admin(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
