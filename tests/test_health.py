"""Liveness, readiness and metrics for load balancers and Prometheus:
`/healthz` is up, `/readyz` follows the database (503 `database_unavailable`
when it cannot be reached), `/metrics` counts requests."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import create_async_engine

from billfold.api.app import create_app
from billfold.api.context import AppContext
from billfold.clock import FrozenClock
from billfold.config import Settings
from tests.support import assert_problem


@pytest.fixture(
    params=[
        # Nothing listens on port 1: the connection is refused at once.
        "postgresql://postgres@127.0.0.1:1/billfold",
        # Not a missing file: aiosqlite leaves a thread behind when opening
        # fails, which trips once the test's event loop has closed.
        "sqlite:///{tmp}/not-a-database.db",
    ],
    ids=["postgresql-refused", "sqlite-corrupt"],
)
async def unreachable(
    request: pytest.FixtureRequest, tmp_path: Path, clock: FrozenClock
) -> AsyncIterator[httpx.AsyncClient]:
    """A client of an app whose database cannot be reached."""
    url = str(request.param).format(tmp=tmp_path)
    (tmp_path / "not-a-database.db").write_bytes(b"this is not an SQLite file" * 200)
    settings = Settings(database_url=url, log_level="WARNING", run_worker_in_server=False)
    ctx = AppContext.create(settings, clock=clock)
    transport = httpx.ASGITransport(app=create_app(ctx, run_worker=False))
    async with httpx.AsyncClient(transport=transport, base_url="http://billfold.test") as http:
        yield http
    await ctx.engine.dispose()


class TestHealth:
    async def test_healthz(self, anonymous: httpx.AsyncClient) -> None:
        response = await anonymous.get("/healthz")
        assert response.status_code == 200
        assert response.json() == {"status": "ok"}

    async def test_readyz_with_a_database(self, anonymous: httpx.AsyncClient) -> None:
        response = await anonymous.get("/readyz")
        assert response.status_code == 200
        assert response.json() == {"status": "ready"}

    async def test_readyz_without_a_database_is_503(self, unreachable: httpx.AsyncClient) -> None:
        assert_problem(await unreachable.get("/readyz"), 503, "database_unavailable")

    async def test_healthz_needs_no_database(self, unreachable: httpx.AsyncClient) -> None:
        assert (await unreachable.get("/healthz")).status_code == 200


class TestMetrics:
    async def test_requests_are_counted_by_route_template(
        self, client: httpx.AsyncClient, anonymous: httpx.AsyncClient
    ) -> None:
        await client.get("/v1/api-keys")
        await client.get("/v1/webhook-endpoints/we_missing")
        response = await anonymous.get("/metrics")
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/plain")
        text = response.text
        assert "# TYPE billfold_http_requests_total counter" in text
        assert (
            'billfold_http_requests_total{method="GET",route="/v1/api-keys",status="200"}' in text
        )
        # Ids stay out of the labels, or every id would be a new time series.
        assert 'route="/v1/webhook-endpoints/{endpoint_id}",status="404"' in text
        assert "we_missing" not in text
        assert "billfold_http_request_duration_seconds_bucket" in text

    async def test_metrics_are_not_in_the_api_schema(self, anonymous: httpx.AsyncClient) -> None:
        spec = (await anonymous.get("/openapi.json")).json()
        assert "/metrics" not in spec["paths"]


class TestDroppedConnections:
    async def test_connections_the_database_dropped_are_replaced_not_failed(
        self, client: httpx.AsyncClient, ctx: AppContext, backend: str
    ) -> None:
        """After a database restart or failover the pool holds dead
        connections; a request must get a live one, not a 500."""
        if backend != "postgresql":
            pytest.skip("SQLite has no server to drop a connection")
        # Several pooled connections at once.
        answers = await asyncio.gather(*(client.get("/v1/api-keys") for _ in range(5)))
        assert {answer.status_code for answer in answers} == {200}
        dropped = await _drop_other_connections(ctx.settings.database_url)
        assert dropped >= 1
        await asyncio.sleep(0.2)  # their sockets see the server's end
        for _ in range(3):
            answers = await asyncio.gather(*(client.get("/v1/api-keys") for _ in range(5)))
            assert [answer.status_code for answer in answers] == [200] * 5


async def _drop_other_connections(database_url: str) -> int:
    """What a restart does to the server side of the pool: every other
    connection to this database ends."""
    url = database_url.replace("postgresql://", "postgresql+psycopg://", 1)
    engine = create_async_engine(url, poolclass=sa.pool.NullPool)
    try:
        async with engine.connect() as connection:
            ended = await connection.scalar(
                sa.text(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                    "WHERE datname = current_database() AND pid <> pg_backend_pid()"
                )
            )
            await connection.commit()
    finally:
        await engine.dispose()
    return int(ended or 0)
