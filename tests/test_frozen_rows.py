"""Product versions and meters are kept in memory once read (billfold.frozen):
the copies never cross organizations or versions, and rows that do change
(subscriptions, running totals) are still read for every request."""

from __future__ import annotations

from typing import Any

import httpx

from billfold.clock import FrozenClock
from billfold.frozen import FrozenCache
from tests.catalog_support import product, subscribe, version
from tests.metering_support import create_meter, event, ingest
from tests.wallet_support import WalletDriver


def test_a_full_cache_starts_over() -> None:
    cache: FrozenCache[str, int] = FrozenCache(entries_max=2)
    cache.put("a", 1)
    cache.put("b", 2)
    assert (cache.get("a"), cache.get("b")) == (1, 2)
    cache.put("c", 3)
    assert (cache.get("a"), cache.get("b"), cache.get("c")) == (None, None, 3)


def _per_unit(amount: str) -> dict[str, Any]:
    return {
        "code": "tokens",
        "type": "usage",
        "meter": "tokens",
        "asset": "USD",
        "billing": "real_time",
        "model": "per_unit",
        "unit_amount": amount,
    }


async def _meter(http: httpx.AsyncClient, aggregation: str) -> None:
    field = {} if aggregation == "count" else {"field": "tokens"}
    await create_meter(
        http, code="tokens", event_type="llm.completion", aggregation=aggregation, **field
    )


async def _fee(http: httpx.AsyncClient, clock: FrozenClock, event_id: str, customer: str) -> str:
    [result] = await ingest(http, event(event_id, clock.now(), customer=customer, tokens=10))
    assert result["status"] == "accepted", result
    [fee] = result["fees"]
    amount: str = fee["amount"]
    return amount


async def _estimate(http: httpx.AsyncClient, customer: str) -> str:
    response = await http.post(
        "/v1/authorizations",
        json={
            "customer_id": customer,
            "asset": "USD",
            "estimate": {"event_type": "llm.completion", "data": {"tokens": 10}},
        },
    )
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "authorized", response.text
    amount: str = response.json()["amount"]
    return amount


async def test_same_codes_in_two_organizations_keep_their_own_definitions(
    client: httpx.AsyncClient, intruder: httpx.AsyncClient, clock: FrozenClock
) -> None:
    """Both organizations name their meter and product the same; one sums
    tokens at 0.01, the other counts events at 0.02. Each is billed, and
    estimated, by its own rows, whichever was read first."""
    for http, aggregation, amount in ((client, "sum", "0.01"), (intruder, "count", "0.02")):
        await _meter(http, aggregation)
        await product(http, code="api", name="API", prices=[_per_unit(amount)])
        wallet = await WalletDriver.create(http)
        await wallet.grant("100.00")
        await subscribe(http, customer_id=wallet.customer_id, product="api")
    for _ in range(2):  # the second time from memory
        assert await _estimate(client, "ext:acme") == "0.10"
        assert await _estimate(intruder, "ext:acme") == "0.02"
    assert await _fee(client, clock, "e1", "ext:acme") == "0.10"
    assert await _fee(intruder, clock, "e1", "ext:acme") == "0.02"


async def test_each_version_bills_its_own_prices(
    client: httpx.AsyncClient, clock: FrozenClock
) -> None:
    await _meter(client, "sum")
    await product(client, code="api", name="API", prices=[_per_unit("0.01")])
    first = await WalletDriver.create(client, "first")
    await first.grant("100.00")
    await subscribe(client, customer_id=first.customer_id, product="api")
    assert await _fee(client, clock, "e1", "ext:first") == "0.10"

    await version(client, "api", prices=[_per_unit("0.03")])
    second = await WalletDriver.create(client, "second")
    await second.grant("100.00")
    await subscribe(client, customer_id=second.customer_id, product="api")
    assert await _fee(client, clock, "e2", "ext:second") == "0.30"
    assert await _fee(client, clock, "e3", "ext:first") == "0.10"
    assert await _estimate(client, "ext:first") == "0.10"
    assert await _estimate(client, "ext:second") == "0.30"
