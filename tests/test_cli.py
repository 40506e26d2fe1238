"""The installed `billfold` console script, run as a user would: `org create
NAME --json` prints a working key, `migrate` can run any number of times,
`serve` answers HTTP and delivers webhooks, `worker` delivers on its own — on
SQLite and on PostgreSQL."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa

from billfold.api.app import create_app
from billfold.api.context import AppContext
from billfold.config import Settings
from billfold.db.engine import create_sync_engine
from tests.support import Receiver, empty_database, run_receiver, verify_at

BILLFOLD = Path(sys.executable).parent / "billfold"
CLI_TIMEOUT_S = 60
# How long a started process may take to become ready or to deliver.
READY_TIMEOUT_S = 30.0
POLL_S = 0.05


@pytest.fixture
def empty_url(backend: str, tmp_path: Path) -> Iterator[str]:
    with empty_database(backend, tmp_path) as url:
        yield url


def run_cli(database_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = os.environ | {"BILLFOLD_DATABASE_URL": database_url, "BILLFOLD_LOG_LEVEL": "WARNING"}
    return subprocess.run(
        [str(BILLFOLD), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=CLI_TIMEOUT_S,
        check=False,
    )


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _wait_for(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(POLL_S)


@contextlib.contextmanager
def background(database_url: str, log: Path, *args: str) -> Iterator[subprocess.Popen[bytes]]:
    """`billfold ARGS` running until the block ends, then stopped with SIGTERM."""
    env = os.environ | {"BILLFOLD_DATABASE_URL": database_url, "BILLFOLD_LOG_LEVEL": "INFO"}
    with log.open("wb") as output:
        process = subprocess.Popen(
            [str(BILLFOLD), *args], env=env, stdout=output, stderr=subprocess.STDOUT
        )
        try:
            yield process
        finally:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=CLI_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def _served(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1.0).status_code == 200
    except httpx.TransportError:
        return False


def _verify_now(secret: str, receiver: Receiver) -> object:
    (received,) = receiver.received
    return verify_at(secret, received, datetime.now(UTC))


def _revision(database_url: str) -> str | None:
    engine = create_sync_engine(database_url)
    try:
        with engine.connect() as connection:
            return connection.execute(sa.text("SELECT version_num FROM alembic_version")).scalar()
    finally:
        engine.dispose()


class TestOrgCreate:
    async def test_prints_a_key_that_works(self, empty_url: str) -> None:
        assert BILLFOLD.exists(), "the package is installed with its console script"
        result = run_cli(empty_url, "org", "create", "Acme Inc", "--json")
        assert result.returncode == 0, result.stderr
        printed = json.loads(result.stdout)
        assert set(printed) == {"organization_id", "api_key"}
        assert printed["organization_id"].startswith("org_")
        assert printed["api_key"].startswith("bf_sk_")

        ctx = AppContext.create(
            Settings(database_url=empty_url, log_level="WARNING", run_worker_in_server=False)
        )
        try:
            transport = httpx.ASGITransport(app=create_app(ctx, run_worker=False))
            async with httpx.AsyncClient(transport=transport, base_url="http://cli.test") as http:
                headers = {"authorization": f"Bearer {printed['api_key']}"}
                keys = await http.get("/v1/api-keys", headers=headers)
                created = await http.post("/v1/api-keys", json={"name": "ci"}, headers=headers)
                wrong = await http.get("/v1/api-keys", headers={"authorization": "Bearer bf_sk_x"})
        finally:
            await ctx.engine.dispose()
        assert keys.status_code == 200, keys.text
        assert len(keys.json()["data"]) == 1
        assert created.status_code == 201
        assert wrong.status_code == 401

    def test_two_organizations_get_different_keys(self, empty_url: str) -> None:
        first = json.loads(run_cli(empty_url, "org", "create", "A", "--json").stdout)
        second = json.loads(run_cli(empty_url, "org", "create", "B", "--json").stdout)
        assert first["organization_id"] != second["organization_id"]
        assert first["api_key"] != second["api_key"]

    def test_blank_name_fails_without_a_traceback(self, empty_url: str) -> None:
        result = run_cli(empty_url, "org", "create", "   ", "--json")
        assert result.returncode != 0
        assert result.stdout == ""


class TestMigrate:
    def test_is_idempotent(self, empty_url: str) -> None:
        for _ in range(2):
            result = run_cli(empty_url, "migrate")
            assert result.returncode == 0, result.stderr
        assert _revision(empty_url) is not None
        engine = create_sync_engine(empty_url)
        try:
            tables = set(sa.inspect(engine).get_table_names())
        finally:
            engine.dispose()
        assert {"organizations", "api_keys", "idempotency_keys", "webhook_endpoints"} <= tables


class TestServe:
    def test_serves_the_api_and_delivers_webhooks(self, empty_url: str, tmp_path: Path) -> None:
        api_key = json.loads(run_cli(empty_url, "org", "create", "Acme", "--json").stdout)[
            "api_key"
        ]
        port = _free_port()
        log = tmp_path / "serve.log"
        with (
            run_receiver() as receiver,
            background(empty_url, log, "serve", "--port", str(port)) as server,
        ):
            _wait_for(lambda: server.poll() is not None or _served(port), "the server")
            assert server.poll() is None, log.read_text()
            base = f"http://127.0.0.1:{port}"
            headers = {"authorization": f"Bearer {api_key}"}
            ready = httpx.get(f"{base}/readyz")
            assert ready.status_code == 200
            assert ready.headers["x-request-id"]
            endpoint = httpx.post(
                f"{base}/v1/webhook-endpoints", json={"url": receiver.url}, headers=headers
            ).json()
            queued = httpx.post(
                f"{base}/v1/webhook-endpoints/{endpoint['id']}/test", headers=headers
            )
            assert queued.status_code == 202, queued.text
            _wait_for(lambda: len(receiver.received) > 0, "the embedded worker to deliver")
            assert _verify_now(endpoint["secret"], receiver) == queued.json()["payload"]
        assert server.returncode == 0, log.read_text()
        # Logs are JSON lines and carry the request id.
        lines = [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]
        assert any(line.get("request_id") == ready.headers["x-request-id"] for line in lines)


class TestWorker:
    async def test_a_separate_worker_delivers_what_was_committed_before_it_started(
        self, empty_url: str, tmp_path: Path
    ) -> None:
        api_key = json.loads(run_cli(empty_url, "org", "create", "Acme", "--json").stdout)[
            "api_key"
        ]
        ctx = AppContext.create(
            Settings(database_url=empty_url, log_level="WARNING", run_worker_in_server=False)
        )
        with run_receiver() as receiver:
            try:
                transport = httpx.ASGITransport(app=create_app(ctx, run_worker=False))
                async with httpx.AsyncClient(
                    transport=transport,
                    base_url="http://cli.test",
                    headers={"authorization": f"Bearer {api_key}"},
                ) as http:
                    endpoint = (
                        await http.post("/v1/webhook-endpoints", json={"url": receiver.url})
                    ).json()
                    queued = await http.post(f"/v1/webhook-endpoints/{endpoint['id']}/test")
            finally:
                await ctx.engine.dispose()
            assert receiver.received == []
            with background(empty_url, tmp_path / "worker.log", "worker") as worker:
                _wait_for(
                    lambda: worker.poll() is not None or len(receiver.received) > 0,
                    "the worker to deliver",
                )
                assert worker.poll() is None, (tmp_path / "worker.log").read_text()
            assert worker.returncode == 0, (tmp_path / "worker.log").read_text()
        assert _verify_now(endpoint["secret"], receiver) == queued.json()["payload"]
