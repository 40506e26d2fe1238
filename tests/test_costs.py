"""Vendors, event costs, LLM cost over HTTP, overrides, margins and cost alerts."""

from __future__ import annotations

from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

import httpx
import sqlalchemy as sa

from billfold.api.context import AppContext
from billfold.clock import FrozenClock
from billfold.costs.service import (
    Unpriced,
    VendorCost,
    evaluate_cost_alerts,
    record_event_costs,
    vendor_cost_of,
)
from billfold.ids import new_id
from billfold.metering.realtime import AcceptedEvent
from billfold.realtime.models import EventFee
from billfold.webhooks.models import WebhookEvent
from tests.conftest import Tenant
from tests.metering_support import create_customer, event, ingest, iso

SONNET_USAGE = {"input_tokens": 1_000, "cache_read_input_tokens": 10_000, "output_tokens": 500}
# $3 × 1,000 + $0.30 × 10,000 + $15 × 500 per million tokens.
SONNET_COST = "0.0135"


async def test_vendors(client: httpx.AsyncClient, app: Any, other_tenant: Tenant) -> None:
    created = await client.post("/v1/vendors", json={"code": "openai", "name": "OpenAI"})
    assert created.status_code == 201, created.text
    again = await client.post("/v1/vendors", json={"code": "openai"})
    assert again.status_code == 200
    assert again.json()["id"] == created.json()["id"]
    listed = await client.get("/v1/vendors")
    assert [v["code"] for v in listed.json()["data"]] == ["openai"]
    vendor_id = created.json()["id"]
    assert (await client.get(f"/v1/vendors/{vendor_id}")).json()["name"] == "OpenAI"
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app),
        base_url="http://billfold.test",
        headers=other_tenant.headers,
    ) as other:
        missing = await other.get(f"/v1/vendors/{vendor_id}")
    assert missing.status_code == 404
    assert missing.json()["code"] == "vendor_not_found"
    bad = await client.post("/v1/vendors", json={"code": " spaced "})
    assert bad.json()["code"] == "invalid_vendor_code"


async def test_llm_cost_endpoint(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/v1/llm/cost",
        json={"provider": "anthropic", "model": "claude-sonnet-4-5", "usage": SONNET_USAGE},
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["cost"] == {"amount": SONNET_COST, "asset": "USD"}
    assert body["breakdown"] == [
        {
            "bucket": "input",
            "tokens": 1000,
            "unit": "1M tokens",
            "unit_price": "3",
            "amount": "0.003",
        },
        {
            "bucket": "cache_read",
            "tokens": 10000,
            "unit": "1M tokens",
            "unit_price": "0.3",
            "amount": "0.003",
        },
        {
            "bucket": "output",
            "tokens": 500,
            "unit": "1M tokens",
            "unit_price": "15",
            "amount": "0.0075",
        },
    ]
    assert body["price_table_version"].endswith("genai-prices-0.2.3")
    unknown = await client.post(
        "/v1/llm/cost",
        json={
            "provider": "openai",
            "model": "gpt-unheard-of",
            "usage": {"prompt_tokens": 1, "completion_tokens": 1},
        },
    )
    assert unknown.status_code == 422
    assert unknown.json()["code"] == "unknown_model"
    fractional = await client.post(
        "/v1/llm/cost",
        json={
            "provider": "openai",
            "model": "gpt-4o",
            "usage": {"prompt_tokens": 1.5, "completion_tokens": 1},
        },
    )
    assert fractional.status_code == 400
    assert fractional.json()["code"] == "invalid_usage"
    assert fractional.json()["field"] == "usage.prompt_tokens"


async def test_overrides_and_settings(
    client: httpx.AsyncClient, ctx: AppContext, tenant: Tenant
) -> None:
    settings = await client.get("/v1/llm/settings")
    assert settings.json()["unknown_model_policy"] == "block"
    override = await client.post(
        "/v1/llm/price-overrides",
        json={"provider": "anthropic", "model": "claude-sonnet-4-5", "multiplier": "0.5"},
    )
    assert override.status_code == 201, override.text
    body = {"provider": "anthropic", "model": "claude-sonnet-4-5", "usage": SONNET_USAGE}
    halved = (await client.post("/v1/llm/cost", json=body)).json()
    assert halved["cost"]["amount"] == "0.00675"
    assert halved["override_id"] == override.json()["id"]
    # A private model becomes priced with explicit rates.
    await client.post(
        "/v1/llm/price-overrides",
        json={"provider": "openai", "model": "ft:acme-1", "rates": {"input": "1", "output": "4"}},
    )
    async with ctx.sessions() as session:
        private = await vendor_cost_of(
            session,
            tenant.organization_id,
            {
                "provider": "openai",
                "model": "ft:acme-1",
                "usage": {"prompt_tokens": 1_000_000, "completion_tokens": 500_000},
            },
        )
        unknown = await vendor_cost_of(
            session,
            tenant.organization_id,
            {
                "provider": "openai",
                "model": "ft:other",
                "usage": {"prompt_tokens": 1, "completion_tokens": 1},
            },
        )
    assert private == VendorCost(3_000_000_000, "USD", private.price_table_version)  # type: ignore[union-attr]
    assert isinstance(unknown, Unpriced)
    assert (unknown.reason, unknown.policy) == ("unknown_model", "block")
    changed = await client.post(
        "/v1/llm/settings",
        json={"unknown_model_policy": "record", "markup_percent": "25"},
    )
    assert changed.json()["unknown_model_policy"] == "record"
    assert changed.json()["markup_percent"] == "25"
    bad = await client.post("/v1/llm/settings", json={"unknown_model_policy": "free"})
    assert bad.json()["code"] == "invalid_policy"


async def test_malformed_costs_are_rejected_at_ingest(
    client: httpx.AsyncClient, clock: FrozenClock
) -> None:
    await create_customer(client, "u1")
    bad = event("e1", clock.now(), customer="u1")
    bad["costs"] = [{"vendor": "openai", "amount": 0.5, "asset": "USD"}]
    missing = event("e2", clock.now(), customer="u1")
    missing["costs"] = [{"vendor": "openai", "asset": "USD"}]
    good = event("e3", clock.now(), customer="u1")
    good["costs"] = [{"vendor": "openai", "amount": "0.5", "asset": "USD", "id": "c1"}]
    results = await ingest(client, bad, missing, good)
    assert [(r["status"], r.get("code"), r.get("field")) for r in results] == [
        ("rejected", "invalid_costs", "costs[0].amount"),
        ("rejected", "invalid_costs", "costs[0].amount"),
        ("accepted", None, None),
    ]


def accepted(
    event_id: str,
    customer_id: str,
    at: datetime,
    *,
    type: str = "llm.call",
    data: dict[str, Any] | None = None,
    costs: list[Any] | None = None,
) -> AcceptedEvent:
    return AcceptedEvent(event_id, customer_id, type, at, data or {}, costs, None, at)


async def test_one_batch_prices_each_call_at_the_override_in_force_at_its_time(
    client: httpx.AsyncClient, ctx: AppContext, tenant: Tenant, clock: FrozenClock
) -> None:
    """A batch reads the overrides once (`PriceBook`), for all its calls;
    each call still gets the one in force at its own time."""
    customer = await create_customer(client, "u1")
    start = clock.now() - timedelta(hours=1)
    override = await client.post(
        "/v1/llm/price-overrides",
        json={
            "provider": "anthropic",
            "model": "claude-sonnet-4-5",
            "multiplier": "0.5",
            "effective_from": iso(start),
        },
    )
    assert override.status_code == 201, override.text
    llm = {"provider": "anthropic", "model": "claude-sonnet-4-5", "usage": SONNET_USAGE}
    events = [
        accepted("after", customer, start + timedelta(minutes=1), data={"llm": llm}),
        accepted("before", customer, start - timedelta(minutes=1), data={"llm": llm}),
        accepted("at", customer, start, data={"llm": llm}),
    ]
    async with ctx.sessions() as session:
        answer = await record_event_costs(session, clock, tenant.organization_id, events)
        await session.commit()
        rows = (
            await session.execute(
                sa.text("SELECT event_id, override_id FROM event_costs ORDER BY event_id")
            )
        ).all()
    assert [answer[e][0]["amount"] for e in ("before", "at", "after")] == [
        SONNET_COST,
        "0.00675",
        "0.00675",
    ]
    assert [tuple(row) for row in rows] == [
        ("after", override.json()["id"]),
        ("at", override.json()["id"]),
        ("before", None),
    ]


async def test_event_costs_are_recorded_converted_flagged_and_idempotent(
    client: httpx.AsyncClient, ctx: AppContext, tenant: Tenant, clock: FrozenClock
) -> None:
    customer = await create_customer(client, "u1")
    rate = await client.post(
        "/v1/assets/EUR/rates",
        json={"base": "USD", "rate": "1.1", "valid_from": iso(clock.now() - timedelta(days=1))},
    )
    assert rate.status_code == 201, rate.text
    now = clock.now()
    events = [
        accepted(
            "e1",
            customer,
            now,
            costs=[
                {"vendor": "gpu-cloud", "amount": "2.00", "asset": "EUR", "id": "inv-1"},
                {"vendor": "search", "amount": "0.10", "asset": "USD", "category": "tools"},
            ],
        ),
        accepted(
            "e2",
            customer,
            now,
            data={
                "llm": {
                    "provider": "anthropic",
                    "model": "claude-sonnet-4-5",
                    "usage": SONNET_USAGE,
                }
            },
        ),
        accepted(
            "e3",
            customer,
            now,
            data={
                "llm": {
                    "provider": "openai",
                    "model": "gpt-9x",
                    "usage": {"prompt_tokens": 5, "completion_tokens": 5},
                }
            },
        ),
        accepted(
            "e4",
            customer,
            now,
            data={
                "llm": {"provider": "openai", "model": "gpt-4o", "usage": {"prompt_tokens": "many"}}
            },
        ),
        accepted(
            "e5",
            customer,
            now,
            costs=[
                {"vendor": "gpu-cloud", "amount": "9", "asset": "EUR", "id": "inv-1"},
                {"vendor": "x", "amount": "0.1234567891", "asset": "USD"},
            ],
        ),
    ]
    async with ctx.sessions() as session:
        answer = await record_event_costs(session, clock, tenant.organization_id, events)
        await session.commit()
    e1 = answer["e1"]
    assert (e1[0]["amount"], e1[0]["asset"], e1[0]["original"]) == (
        "2.20",
        "USD",
        {"amount": "2.00", "asset": "EUR"},
    )
    assert (e1[1]["amount"], e1[1]["category"], e1[1]["id"]) == ("0.10", "tools", None)
    assert answer["e2"][0]["amount"] == SONNET_COST
    assert answer["e2"][0]["status"] == "ok"
    assert [line["bucket"] for line in answer["e2"][0]["breakdown"]] == [
        "input",
        "cache_read",
        "output",
    ]
    assert (answer["e3"][0]["status"], answer["e3"][0]["amount"]) == ("unknown_model", None)
    assert (answer["e4"][0]["status"], answer["e4"][0]["amount"]) == ("invalid_usage", None)
    # The same cost id on another event is not stored twice; a bad amount is flagged.
    assert answer["e5"][0]["duplicate"] is True
    assert answer["e5"][0]["amount"] == "2.20"
    assert answer["e5"][1]["status"] == "invalid_cost"
    async with ctx.sessions() as session:
        replay = await record_event_costs(session, clock, tenant.organization_id, events[:2])
        await session.commit()
    assert all(cost.get("duplicate") for costs in replay.values() for cost in costs)
    # Ingested for real, the event answers its stored cost (not counted twice).
    ingested = await ingest(client, event("e2", now, customer=customer, llm=events[1].data["llm"]))
    assert ingested[0]["costs"][0]["duplicate"] is True
    stored = (await client.get("/v1/events/e2/costs")).json()["data"]
    assert stored[0]["amount"] == SONNET_COST
    missing = await client.get("/v1/events/nope/costs")
    assert (missing.status_code, missing.json()["code"]) == (404, "event_not_found")
    vendors = {v["code"] for v in (await client.get("/v1/vendors")).json()["data"]}
    assert vendors == {"gpu-cloud", "search", "anthropic", "openai", "x"}


async def _fee(
    ctx: AppContext,
    organization_id: str,
    event_id: str,
    customer_id: str,
    at: datetime,
    amount_minor: int,
    event_type: str = "llm.call",
) -> None:
    async with ctx.sessions() as session:
        session.add(
            EventFee(
                id=new_id("fee"),
                organization_id=organization_id,
                event_id=event_id,
                event_type=event_type,
                customer_id=customer_id,
                subscription_id="sub_x",
                price_code="p",
                asset_code="USD",
                amount_minor=amount_minor,
                quantity="1",
                dimension=None,
                lines=[],
                period_start=at,
                period_end=at,
                event_timestamp=at,
                entry_id=None,
                authorization_id=None,
                created_at=at,
            )
        )
        await session.commit()


USD = 10**9  # minor units per dollar


async def _free_plan(client: httpx.AsyncClient, customers: list[str], start: datetime) -> None:
    meter = {"code": "calls", "event_type": "llm.completion", "aggregation": "count"}
    assert (await client.post("/v1/meters", json=meter)).status_code == 201
    price = {
        "code": "calls",
        "type": "usage",
        "meter": "calls",
        "asset": "USD",
        "billing": "real_time",
        "model": "per_unit",
        "unit_amount": "0",
    }
    made = await client.post(
        "/v1/products", json={"code": "free", "name": "Free", "prices": [price]}
    )
    assert made.status_code == 201, made.text
    for customer in customers:
        subscribed = await client.post(
            "/v1/subscriptions",
            json={"customer_id": customer, "product": "free", "start_at": iso(start)},
        )
        assert subscribed.status_code == 201, subscribed.text


async def test_margins_over_a_month_of_mixed_events(
    client: httpx.AsyncClient, ctx: AppContext, tenant: Tenant, clock: FrozenClock
) -> None:
    org = tenant.organization_id
    alice = await create_customer(client, "alice")
    bob = await create_customer(client, "bob")
    start = clock.now() - timedelta(days=28)
    # Both are subscribed to a free real-time price that counts their calls, so
    # the default LLM price (vendor cost × markup) stays out of the way and the
    # revenue is the fee rows this test writes itself.
    await _free_plan(client, [alice, bob], start)
    expected_cost = {alice: 0, bob: 0}
    expected_revenue = {alice: 0, bob: 0}
    by_model: dict[str, int] = {}
    raw_events = []
    accepted_events = []
    for day in range(28):
        at = start + timedelta(days=day, hours=1)
        for customer, ext, model, usage, fee in (
            (alice, "alice", "claude-sonnet-4-5", SONNET_USAGE, 20_000_000),  # cost 13.5M
            (
                bob,
                "bob",
                "gpt-4o",
                {"prompt_tokens": 4_000, "completion_tokens": 1_000},
                15_000_000,
            ),
        ):
            event_id = f"{ext}-{day}"
            data = {
                "llm": {
                    "provider": "anthropic" if "claude" in model else "openai",
                    "model": model,
                    "usage": usage,
                },
                "session_id": f"s{day % 2}",
            }
            raw_events.append(event(event_id, at, customer=ext, **data))
            accepted_events.append(accepted(event_id, customer, at, data=data))
            await _fee(ctx, org, event_id, customer, at, fee)
            expected_revenue[customer] += fee
            cost = 13_500_000 if "claude" in model else 20_000_000  # gpt-4o: $0.01 + $0.01
            expected_cost[customer] += cost
            by_model[model] = by_model.get(model, 0) + cost
        # A vendor invoice on Bob's events every week, in dollars.
        if day % 7 == 0:
            extra = accepted(
                f"gpu-{day}",
                bob,
                at,
                type="gpu",
                costs=[{"vendor": "gpu-cloud", "amount": "0.25", "asset": "USD", "id": f"g{day}"}],
            )
            accepted_events.append(extra)
            raw_events.append(event(f"gpu-{day}", at, customer="bob", type="gpu"))
            expected_cost[bob] += USD // 4
    await ingest(client, *raw_events)
    async with ctx.sessions() as session:
        await record_event_costs(session, clock, org, accepted_events)
        await session.commit()
    window = {"from": iso(start), "to": iso(clock.now())}

    alice_p = (await client.get(f"/v1/customers/{alice}/profitability", params=window)).json()
    assert alice_p["revenue"]["amount"] == "0.56"  # 28 × $0.02
    assert alice_p["cost"]["amount"] == "0.378"  # 28 × $0.0135
    assert alice_p["net"]["amount"] == "0.182"
    assert alice_p["margin_percent"] == "32.50"
    assert alice_p["invoiced_revenue_included"] is False
    bob_p = (await client.get("/v1/customers/ext:bob/profitability", params=window)).json()
    assert bob_p["revenue"]["amount"] == "0.42"
    assert bob_p["cost"]["amount"] == "1.56"  # 28 × $0.02 + 4 × $0.25
    assert bob_p["margin_percent"] == str((Decimal(42 - 156) * 100 / 42).quantize(Decimal("0.01")))

    by_customer = (
        await client.get(
            "/v1/analytics/profitability",
            params={**window, "group_by": "customer", "granularity": "month"},
        )
    ).json()
    assert [row["key"] for row in by_customer["data"]] == [bob, alice]  # most costly first
    assert sum(
        Decimal(bucket["cost"]["amount"]) for bucket in by_customer["data"][0]["buckets"]
    ) == Decimal("1.56")
    models = (
        await client.get("/v1/analytics/profitability", params={**window, "group_by": "model"})
    ).json()
    assert [(row["key"], row["cost"]["amount"]) for row in models["data"]] == [
        ("gpt-4o", "0.56"),
        ("claude-sonnet-4-5", "0.378"),
    ]
    assert models["data"][0]["revenue"]["amount"] == "0.42"
    assert len(models["data"][0]["buckets"]) == 28  # one per day
    sessions = (
        await client.get("/v1/analytics/profitability", params={**window, "group_by": "session_id"})
    ).json()
    assert {row["key"] for row in sessions["data"]} == {"s0", "s1"}
    assert sum(Decimal(row["cost"]["amount"]) for row in sessions["data"]) == Decimal("0.938")
    assert sessions["unattributed"]["cost"]["amount"] == "1.00"  # gpu events have no session
    vendors = (
        await client.get("/v1/analytics/profitability", params={**window, "group_by": "vendor"})
    ).json()
    assert [row["key"] for row in vendors["data"]] == ["gpu-cloud", "openai", "anthropic"]
    bad = await client.get("/v1/analytics/profitability", params={**window, "group_by": "a b"})
    assert bad.json()["code"] == "invalid_group_by"

    # Alerts: Bob loses money (margin below 10 %) and is the costliest customer.
    await client.post("/v1/llm/settings", json={"margin_low_percent": "10"})
    async with ctx.sessions() as session:
        assert await evaluate_cost_alerts(session, clock, org) == 2
        await session.commit()
    async with ctx.sessions() as session:
        assert await evaluate_cost_alerts(session, clock, org) == 0  # on entry only
        topics = list(
            await session.scalars(
                sa.select(WebhookEvent.type).where(
                    WebhookEvent.organization_id == org, WebhookEvent.type.like("customer.%")
                )
            )
        )
    assert sorted(topics) == ["customer.cost_top_percentile", "customer.margin_low"]
