"""`BILLFOLD_AUTHORIZATION_BATCHING=0`: the naive path, one transaction per
request, is a real switch of the product (the benchmark measures it), so it
must give the same correct answers as the batching writer.

Every test here runs on SQLite and PostgreSQL with the writer's batching off.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Sequence

import pytest
import sqlalchemy as sa

from billfold.api.context import AppContext
from billfold.authorizations.service import Answer, WalletRequest
from billfold.clock import FrozenClock
from billfold.config import Settings
from billfold.ledger.verify import verify
from tests.wallet_support import WalletDriver


@pytest.fixture
async def ctx(database_url: str, clock: FrozenClock) -> AsyncIterator[AppContext]:
    """The shared `ctx`, with batching off: `app` and `client` are built on it."""
    settings = Settings(
        database_url=database_url,
        log_level="WARNING",
        run_worker_in_server=False,
        authorization_batching=False,
    )
    context = AppContext.create(settings, clock=clock)
    yield context
    await context.engine.dispose()


@pytest.fixture
def batch_sizes(ctx: AppContext) -> list[int]:
    """The size of every batch the writer runs."""
    writer = ctx.wallet_writer
    original = writer._run_batch
    sizes: list[int] = []

    async def spy(key: str, requests: Sequence[WalletRequest]) -> list[Answer]:
        sizes.append(len(requests))
        return await original(key, requests)

    writer._run_batch = spy  # type: ignore[method-assign]
    return sizes


@pytest.fixture
async def wallet(client, ctx: AppContext) -> AsyncIterator[WalletDriver]:
    driver = await WalletDriver.create(client)
    yield driver
    async with ctx.sessions() as session:
        report = await verify(session)
    assert report.ok, report.violation


@pytest.mark.parametrize(("environment", "batching"), [(None, True), ("1", True), ("0", False)])
def test_the_switch_is_read_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, environment: str | None, batching: bool
) -> None:
    monkeypatch.setenv("BILLFOLD_DATABASE_URL", "sqlite:////tmp/unused.db")
    if environment is None:
        monkeypatch.delenv("BILLFOLD_AUTHORIZATION_BATCHING", raising=False)
    else:
        monkeypatch.setenv("BILLFOLD_AUTHORIZATION_BATCHING", environment)
    settings = Settings.from_env()
    assert settings.authorization_batching is batching
    context = AppContext.create(settings)
    assert context.wallet_writer.batching is batching


async def test_concurrent_holds_one_transaction_each(
    wallet: WalletDriver, ctx: AppContext, batch_sizes: list[int]
) -> None:
    """200 concurrent holds of 0.02 on 2.00: exactly 100 held, each alone."""
    await wallet.grant("2.00")
    keys = [f"naive-{i}" for i in range(200)]
    body = {"customer_id": wallet.customer_id, "asset": "USD", "amount": "0.02"}

    async def post(key: str) -> tuple[int, bytes]:
        response = await wallet.http.post(
            "/v1/authorizations", json=body, headers={"Idempotency-Key": key}
        )
        return response.status_code, response.content

    first = await asyncio.gather(*(post(key) for key in keys))
    assert batch_sizes == [1] * 200, "no queue, no batch: one request per transaction"
    assert {status for status, _ in first} == {200}
    statuses = [wallet_status(content) for _, content in first]
    assert statuses.count("authorized") == 100
    assert statuses.count("declined") == 100
    balance = await wallet.balance()
    assert (balance["available"], balance["held"]) == ("0.00", "2.00")

    rows = await _count(ctx, "journal_entries"), await _count(ctx, "authorizations")
    again = await asyncio.gather(*(post(key) for key in keys))
    assert again == first, "a replay answers the same bytes"
    assert (await _count(ctx, "journal_entries"), await _count(ctx, "authorizations")) == rows


async def test_concurrent_resolutions_have_one_winner(
    wallet: WalletDriver, batch_sizes: list[int]
) -> None:
    await wallet.grant("10.00")
    held = await wallet.authorize("4.00")
    capture, release = await asyncio.gather(
        wallet.capture(held["id"], "1.00"), wallet.release(held["id"])
    )
    assert sorted([capture.status_code, release.status_code]) == [200, 409]
    assert max(batch_sizes) == 1
    balance = await wallet.balance()
    assert balance["held"] == "0.00"
    assert balance["available"] in ("9.00", "10.00")


def wallet_status(content: bytes) -> str:
    status: str = json.loads(content)["status"]
    return status


async def _count(ctx: AppContext, table: str) -> int:
    async with ctx.sessions() as session:
        return int(await session.scalar(sa.text(f"SELECT count(*) FROM {table}")) or 0)
