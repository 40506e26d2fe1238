"""Real Billfold servers for the slow tests: scratch databases, `billfold serve`
subprocesses on free loopback ports, the CLI, and an efficient HTTP client.

Everything started here is stopped by the context managers that started it,
on failure too: servers by killing their whole process group, PostgreSQL
databases by `DROP DATABASE … WITH (FORCE)`. A SIGTERM to the test run (as
`timeout` sends) unwinds those context managers like Ctrl-C instead of killing
the run on the spot; a server whose test process dies anyway is sent SIGTERM
by the kernel (PR_SET_PDEATHSIG), and databases left by a dead run are
dropped by the next one.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import itertools
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any
from urllib.parse import urlsplit

import httpx
import psycopg

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
PG_ADMIN_URL = os.environ.get(
    "BILLFOLD_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)
SERVER_START_TIMEOUT_S = 60
SERVER_STOP_TIMEOUT_S = 20
_databases = itertools.count()


def pg_url(database: str) -> str:
    base, _, _ = PG_ADMIN_URL.rpartition("/")
    return f"{base}/{database}"


def _pg_admin(sql: str) -> None:
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as connection:
        connection.execute(sql.encode())


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


@contextlib.contextmanager
def sigterm_unwinds() -> Iterator[None]:
    """Within this block SIGTERM raises KeyboardInterrupt, so `finally` runs."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _drop_orphans(prefix: str) -> None:
    """Drop `<prefix>_<pid>_<n>` databases whose test process is gone."""
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as connection:
        names = [
            str(row[0])
            for row in connection.execute(
                b"SELECT datname FROM pg_database WHERE datname LIKE %s",
                (prefix.replace("_", r"\_") + r"\_%",),
            )
        ]
    for name in names:
        pid = name[len(prefix) + 1 :].split("_")[0]
        if pid.isdigit() and not _alive(int(pid)):
            _pg_admin(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@contextlib.contextmanager
def scratch_postgres(prefix: str = "billfold_live") -> Iterator[str]:
    """An empty PostgreSQL database (the server migrates it on start), dropped after."""
    _drop_orphans(prefix)
    name = f"{prefix}_{os.getpid()}_{next(_databases)}"
    with sigterm_unwinds():
        _pg_admin(f"CREATE DATABASE {name}")
        try:
            yield pg_url(name)
        finally:
            _pg_admin(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def server_env(database_url: str, **extra: str) -> dict[str, str]:
    return os.environ | {
        "BILLFOLD_DATABASE_URL": database_url,
        "BILLFOLD_SERVE_WORKER": "0",
        "BILLFOLD_LOG_LEVEL": "WARNING",
        **extra,
    }


def billfold(database_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    """Run the `billfold` command against `database_url`; never raises on exit code."""
    return subprocess.run(
        [str(BIN / "billfold"), *args],
        env=server_env(database_url),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def create_org(database_url: str, name: str = "Live") -> str:
    """`billfold org create NAME --json`; returns the API key."""
    done = billfold(database_url, "org", "create", name, "--json")
    assert done.returncode == 0, done.stderr
    created: dict[str, str] = json.loads(done.stdout.strip().splitlines()[-1])
    assert created["api_key"].startswith("bf_sk_")
    return created["api_key"]


def _die_with_parent() -> None:
    """In the child before exec: SIGTERM when the process that started us dies."""
    if sys.platform == "linux":
        pr_set_pdeathsig = 1
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)


@dataclass
class Server:
    """One `billfold serve` process (its own process group) on a loopback port."""

    database_url: str
    workers: int = 1
    env: dict[str, str] = field(default_factory=dict)
    port: int = 0
    process: subprocess.Popen[bytes] | None = None
    _log: IO[bytes] | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        assert self.process is None, "already running"
        self.port = free_port()
        self._log = tempfile.TemporaryFile()  # noqa: SIM115 - closed by _reap()
        command = [str(BIN / "billfold"), "serve", "--host", "127.0.0.1", "--port", str(self.port)]
        command += ["--workers", str(self.workers), "--no-worker"]
        self.process = subprocess.Popen(
            command,
            env=server_env(self.database_url, **self.env),
            cwd=ROOT,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            preexec_fn=_die_with_parent,  # noqa: PLW1509 - only prctl, async-signal-safe
        )
        deadline = time.monotonic() + SERVER_START_TIMEOUT_S
        while True:
            if self.process.poll() is not None:
                log = self.log()
                self._reap()
                raise RuntimeError(f"billfold serve exited:\n{log}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.base_url}/healthz", timeout=1).status_code == 200:
                    return
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"no answer from billfold serve in {SERVER_START_TIMEOUT_S} s")
            time.sleep(0.1)

    def log(self) -> str:
        if self._log is None:
            return ""
        self._log.seek(0)
        return self._log.read().decode(errors="replace")[-5000:]

    def _signal_group(self, sig: signal.Signals) -> None:
        assert self.process is not None
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, sig)

    def kill(self) -> None:
        """SIGKILL the server and every process it started: no cleanup runs."""
        if self.process is None:
            return
        self._signal_group(signal.SIGKILL)
        self.process.wait(timeout=SERVER_STOP_TIMEOUT_S)
        self._reap()

    def stop(self) -> None:
        if self.process is None:
            return
        try:
            self._signal_group(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout=SERVER_STOP_TIMEOUT_S)
        finally:  # even if interrupted while waiting
            # What is left, workers of a dying parent included, goes with the group.
            self._signal_group(signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout=SERVER_STOP_TIMEOUT_S)
            self._reap()

    def _reap(self) -> None:
        self.process = None
        if self._log is not None:
            self._log.close()
            self._log = None


@contextlib.contextmanager
def servers(
    database_url: str, count: int = 1, *, workers: int = 1, env: dict[str, str] | None = None
) -> Iterator[list[Server]]:
    """`count` separate server processes on one database, stopped afterwards."""
    started: list[Server] = []
    with sigterm_unwinds(), contextlib.ExitStack() as stack:
        for _ in range(count):
            server = Server(database_url, workers=workers, env=dict(env or {}))
            started.append(server)
            stack.callback(server.stop)
            server.start()
        yield started


@dataclass(frozen=True)
class RawResponse:
    status_code: int
    headers: dict[str, str]  # names in lower case
    content: bytes


class Lane:
    """One coroutine's keep-alive HTTP/1.1 connections (one per server).

    A load generator for these tests, ~20x cheaper per request than httpx's
    AsyncClient (measured here: ~8 ms of client CPU per request with httpx,
    more than the server spends), so that on 2 cores the client does not
    starve the servers it measures. It speaks just what Billfold answers:
    Content-Length or chunked bodies. Any transport failure raises OSError or
    asyncio.IncompleteReadError and is never retried here.
    """

    def __init__(self, headers: dict[str, str]) -> None:
        self._headers = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        self._connections: dict[str, tuple[asyncio.StreamReader, asyncio.StreamWriter]] = {}

    async def request(
        self, method: str, url: str, body: bytes = b"", headers: dict[str, str] | None = None
    ) -> RawResponse:
        parts = urlsplit(url)
        origin = parts.netloc
        connection = self._connections.get(origin)
        if connection is None:
            connection = await asyncio.open_connection(parts.hostname, parts.port)
            self._connections[origin] = connection
        reader, writer = connection
        extra = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
        head = (
            f"{method} {parts.path or '/'}{'?' + parts.query if parts.query else ''} HTTP/1.1\r\n"
            f"host: {origin}\r\n{self._headers}{extra}content-length: {len(body)}\r\n\r\n"
        )
        try:
            writer.write(head.encode("latin-1") + body)
            status_line, _, header_block = (
                (await reader.readuntil(b"\r\n\r\n"))[:-4].decode("latin-1").partition("\r\n")
            )
            answer_headers: dict[str, str] = {}
            for line in header_block.split("\r\n"):
                name, _, value = line.partition(":")
                answer_headers[name.strip().lower()] = value.strip()
            if answer_headers.get("transfer-encoding", "").lower() == "chunked":
                content = await _read_chunked(reader)
            else:
                content = await reader.readexactly(int(answer_headers.get("content-length", "0")))
        except BaseException:
            del self._connections[origin]
            writer.close()
            raise
        if answer_headers.get("connection", "").lower() == "close":
            del self._connections[origin]
            writer.close()
        return RawResponse(int(status_line.split(" ", 2)[1]), answer_headers, content)

    async def post(
        self, url: str, body: bytes, headers: dict[str, str] | None = None
    ) -> RawResponse:
        return await self.request(
            "POST", url, body, {"content-type": "application/json", **(headers or {})}
        )

    async def aclose(self) -> None:
        for _, writer in self._connections.values():
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
        self._connections.clear()


async def _read_chunked(reader: asyncio.StreamReader) -> bytes:
    chunks = []
    for _ in range(1_000_000):
        size = int((await reader.readuntil(b"\r\n"))[:-2].split(b";")[0], 16)
        chunk = await reader.readexactly(size + 2)
        if size == 0:
            return b"".join(chunks)
        chunks.append(chunk[:-2])
    raise OSError("too many chunks")


@contextlib.asynccontextmanager
async def lanes(api_key: str, count: int) -> AsyncIterator[list[Lane]]:
    made = [Lane({"authorization": f"Bearer {api_key}"}) for _ in range(count)]
    try:
        yield made
    finally:
        for lane in made:
            await lane.aclose()


def async_client(api_key: str, connections: int) -> httpx.AsyncClient:
    """One pooled keep-alive client; base URLs are given per request."""
    return httpx.AsyncClient(
        headers={"Authorization": f"Bearer {api_key}"},
        limits=httpx.Limits(max_connections=connections, max_keepalive_connections=connections),
        timeout=httpx.Timeout(120.0),
    )


def sync_client(base_url: str, api_key: str) -> httpx.Client:
    return httpx.Client(
        base_url=base_url, headers={"Authorization": f"Bearer {api_key}"}, timeout=60.0
    )


def setup_customer(http: httpx.Client, external_id: str, grants: Sequence[str]) -> str:
    """A customer with one paid USD grant per amount in `grants`; returns its id."""
    created = http.post("/v1/customers", json={"external_id": external_id})
    assert created.status_code in (200, 201), created.text
    customer_id: str = created.json()["id"]
    for amount in grants:
        funded = http.post(
            f"/v1/customers/{customer_id}/grants",
            json={"asset": "USD", "amount": amount, "purpose": "paid"},
        )
        assert funded.status_code == 201, funded.text
    return customer_id


def pg_count_rows(database_url: str, tables: Sequence[str]) -> dict[str, int]:
    with psycopg.connect(database_url) as connection:
        counts: dict[str, int] = {}
        for table in tables:
            row = connection.execute(f"SELECT count(*) FROM {table}".encode()).fetchone()
            assert row is not None
            counts[table] = int(row[0])
        return counts


def pg_rows(database_url: str, sql: str, *params: Any) -> list[tuple[Any, ...]]:
    with psycopg.connect(database_url) as connection:
        return list(connection.execute(sql.encode(), params).fetchall())
