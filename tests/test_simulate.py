"""Simulate (`POST /v1/products/{code}/versions/{n}/simulate`).

Goal: the fees a version's usage prices would charge for a set of events are
exactly what rating says for the meters' aggregates (per customer and
dimension), each event's fee is its real-time marginal fee and they sum to
the period's price, the breakdown shows each tier, and nothing is written.
Method: hand-computed figures cross-checked with `billfold.rating.rate`, and
row counts of every table before and after.
"""

from __future__ import annotations

import copy
from decimal import Decimal
from typing import Any

import httpx
import pytest

from billfold import limits, models
from billfold.api.context import AppContext
from billfold.assets.builtin import BUILTIN_ASSETS
from billfold.rating import parse_price, rate
from tests.catalog_support import GRADUATED, output_tokens_meter, product, version
from tests.support import assert_problem, count_rows

USD = BUILTIN_ASSETS["USD"]

CALLS: dict[str, Any] = {
    "code": "calls",
    "type": "usage",
    "meter": "gpt4o_calls",
    "asset": "USD",
    "billing": "in_arrears",
    "model": "per_unit",
    "unit_amount": "0.5",
}
BY_MODEL: dict[str, Any] = {
    "code": "by_model",
    "type": "usage",
    "meter": "output_tokens",
    "asset": "USD",
    "billing": "in_arrears",
    "model": "per_unit",
    "unit_amount": "0.001",
    "dimensions": [{"match": {"model": "gpt-4o-mini"}, "unit_amount": "0.0001"}],
}


def _event(tokens: Any, model: str = "gpt-4o", **extra: Any) -> dict[str, Any]:
    return {"type": "llm.completion", "data": {"output_tokens": tokens, "model": model}, **extra}


@pytest.fixture
async def catalog(client: httpx.AsyncClient) -> None:
    await output_tokens_meter(client)
    response = await client.post(
        "/v1/meters",
        json={
            "code": "gpt4o_calls",
            "event_type": "llm.completion",
            "aggregation": "count",
            "filters": {"model": ["gpt-4o"]},
        },
    )
    assert response.status_code == 201, response.text
    await product(
        client,
        code="pro",
        name="Pro",
        prices=[
            GRADUATED,
            CALLS,
            BY_MODEL,
            {"code": "base", "type": "fixed", "asset": "USD", "amount": "20"},
        ],
    )


async def _simulate(
    client: httpx.AsyncClient, events: list[dict[str, Any]], number: int = 1
) -> dict[str, Any]:
    response = await client.post(
        f"/v1/products/pro/versions/{number}/simulate", json={"events": events}
    )
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def _by_code(body: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {price["price"]: price for price in body["prices"]}


async def _all_rows(ctx: AppContext) -> dict[str, int]:
    return {table: await count_rows(ctx, table) for table in models.Base.metadata.tables}


@pytest.mark.usefixtures("catalog")
class TestSimulate:
    async def test_fees_breakdown_and_totals(self, client: httpx.AsyncClient) -> None:
        events = [
            _event(600),
            _event(700, "gpt-4o-mini"),
            _event(300),
            {"type": "other", "data": {"output_tokens": 10**6}},
        ]
        body = await _simulate(client, events)
        assert (body["product"], body["version"]) == ("pro", 1)
        prices = _by_code(body)
        # Fixed prices do not depend on events: not simulated.
        assert set(prices) == {"tokens_out", "calls", "by_model"}

        tokens = prices["tokens_out"]
        assert (tokens["events"], tokens["quantity"], tokens["amount"]) == (3, "1600", "15.80")
        assert (tokens["billing"], tokens["model"], tokens["meter"]) == (
            "real_time",
            "graduated",
            "output_tokens",
        )
        assert tokens["lines"] == [
            {
                "dimension": None,
                "kind": "tier",
                "tier": 0,
                "units": "1000",
                "unit_amount": "0.01",
                "flat_amount": "1",
                "amount": "11.00",
            },
            {
                "dimension": None,
                "kind": "tier",
                "tier": 1,
                "units": "600",
                "unit_amount": "0.008",
                "flat_amount": "0",
                "amount": "4.80",
            },
        ]
        # The same as rating the period's total directly.
        price = parse_price(GRADUATED, asset=USD)
        assert rate(price, Decimal(1600), asset=USD).amount_minor == 15_800_000_000

        # Each event's real-time fee: 600 (+ the first tier's flat fee), then marginal.
        assert [fees["fees"] for fees in body["events"]][:3] == [
            [
                {"price": "tokens_out", "asset": "USD", "quantity": "600", "amount": "7.00"},
                {"price": "calls", "asset": "USD", "quantity": "1", "amount": "0.50"},
                {"price": "by_model", "asset": "USD", "quantity": "600", "amount": "0.60"},
            ],
            [
                {"price": "tokens_out", "asset": "USD", "quantity": "700", "amount": "6.40"},
                {"price": "by_model", "asset": "USD", "quantity": "700", "amount": "0.07"},
            ],
            [
                {"price": "tokens_out", "asset": "USD", "quantity": "300", "amount": "2.40"},
                {"price": "calls", "asset": "USD", "quantity": "1", "amount": "0.50"},
                {"price": "by_model", "asset": "USD", "quantity": "300", "amount": "0.30"},
            ],
        ]
        assert body["events"][3] == {"index": 3, "fees": []}

        # The meter's filter: only gpt-4o calls count.
        assert (prices["calls"]["quantity"], prices["calls"]["amount"]) == ("2", "1.00")
        by_model = prices["by_model"]
        assert by_model["amount"] == "0.97"
        assert [
            (line["dimension"], line["units"], line["amount"]) for line in by_model["lines"]
        ] == [
            (None, "900", "0.90"),
            (0, "700", "0.07"),
        ]
        assert body["totals"] == [{"asset": "USD", "amount": "17.77"}]

    async def test_aggregates_are_per_customer(self, client: httpx.AsyncClient) -> None:
        together = _by_code(await _simulate(client, [_event(1000), _event(1000)]))
        apart = _by_code(
            await _simulate(
                client,
                [_event(1000, customer_id="ext:a"), _event(1000, customer_id="ext:b")],
            )
        )
        # One customer at 2000 reaches tier 1; two at 1000 each pay tier 0's flat fee twice.
        assert together["tokens_out"]["amount"] == "19.00"
        assert apart["tokens_out"]["amount"] == "22.00"

    async def test_order_is_by_timestamp(self, client: httpx.AsyncClient) -> None:
        body = await _simulate(
            client,
            [
                _event(1000, timestamp="2030-01-01T00:00:02Z"),
                _event(500, timestamp="2030-01-01T00:00:01Z"),
            ],
        )
        fees = [event["fees"][0]["amount"] for event in body["events"]]
        # The later event (index 0) crosses into tier 1.
        assert fees == ["9.00", "6.00"]

    async def test_exact_decimals(self, client: httpx.AsyncClient) -> None:
        # A JSON number is read exactly, never as a float: 0.1 + 0.2 is 0.3.
        raw = (
            b'{"events": [{"type": "llm.completion", "data": {"output_tokens": "0.1"}},'
            b' {"type": "llm.completion", "data": {"output_tokens": 0.2}}]}'
        )
        response = await client.post(
            "/v1/products/pro/versions/1/simulate",
            content=raw,
            headers={"content-type": "application/json"},
        )
        assert response.status_code == 200, response.text
        assert _by_code(response.json())["tokens_out"]["quantity"] == "0.3"

    async def test_each_version_rates_with_its_own_prices(self, client: httpx.AsyncClient) -> None:
        cheaper = copy.deepcopy(GRADUATED)
        cheaper["tiers"][1]["unit_amount"] = "0.001"
        await version(client, "pro", prices=[cheaper])
        events = [_event(2000)]
        v1 = _by_code(await _simulate(client, events, 1))["tokens_out"]["amount"]
        v2 = _by_code(await _simulate(client, events, 2))["tokens_out"]["amount"]
        assert (v1, v2) == ("19.00", "12.00")

    async def test_writes_nothing(self, client: httpx.AsyncClient, ctx: AppContext) -> None:
        before = await _all_rows(ctx)
        await _simulate(client, [_event(n) for n in range(1, 200)])
        await client.post("/v1/products/pro/versions/1/simulate", json={"events": [_event("x")]})
        assert await _all_rows(ctx) == before

    async def test_refusals(self, client: httpx.AsyncClient) -> None:
        url = "/v1/products/pro/versions/1/simulate"
        cases = [
            ([_event("many")], 400, "invalid_event", "events.0.data.output_tokens"),
            ([_event(1), _event(-5)], 400, "invalid_event", "events.1.data.output_tokens"),
            ([_event("0.0000000001")], 400, "invalid_quantity", "events.0.data.output_tokens"),
            ([{"data": {}}], 400, "invalid_event", "events.0.type"),
            ([_event(1, timestamp="soon")], 400, "invalid_timestamp", "events.0.timestamp"),
            ([_event(1, colour="red")], 400, "invalid_event", "events.0.colour"),
            ([_event(1)] * (limits.simulate_events_max + 1), 422, "too_many_events", "events"),
        ]
        for events, status, code, field in cases:
            response = await client.post(url, json={"events": events})
            assert_problem(response, status, code, field)
        malformed = await client.post(
            url, content=b"{not json", headers={"content-type": "application/json"}
        )
        assert_problem(malformed, 400, "malformed_json")
        assert_problem(
            await client.post("/v1/products/pro/versions/9/simulate", json={"events": []}),
            404,
            "product_version_not_found",
        )
