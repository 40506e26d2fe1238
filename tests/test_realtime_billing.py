"""Real-time billing: events rated and debited from the wallet as they are ingested.

Every test ends with `ledger verify` over the whole journal.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import timedelta
from decimal import Decimal
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from billfold.api.context import AppContext
from billfold.assets.amounts import AssetInfo
from billfold.clock import FrozenClock
from billfold.ledger.verify import verify
from billfold.metering.models import Meter
from billfold.rating import parse_price, rate
from billfold.realtime.repository import Total
from billfold.realtime.service import Fee as RealtimeFee
from billfold.realtime.service import rate_fee
from tests.catalog_support import GRADUATED, output_tokens_meter, product, subscribe
from tests.support import assert_problem
from tests.wallet_support import WalletDriver

USD = AssetInfo(
    code="USD", name="US Dollar", scale=9, kind="currency", symbol="$", display_exponent=2
)


@pytest.fixture
async def wallet(client, ctx: AppContext) -> AsyncIterator[WalletDriver]:
    driver = await WalletDriver.create(client)
    yield driver
    async with ctx.sessions() as session:
        report = await verify(session)
    assert report.ok, report.violation


@pytest.fixture
async def subscribed(client, wallet: WalletDriver) -> WalletDriver:
    """`acme` on a product whose output tokens bill in real time, graduated:
    the first 1,000 at 0.01 (plus a 1.00 flat fee), then 0.008."""
    await output_tokens_meter(client)
    await product(client, code="api", name="API", prices=[GRADUATED])
    await subscribe(client, customer_id=wallet.customer_id, product="api")
    return wallet


def event(clock: FrozenClock, index: int, tokens: int | str, **fields: Any) -> dict[str, Any]:
    return {
        "id": f"evt-{index}",
        "customer_id": "ext:acme",
        "type": "llm.completion",
        "timestamp": clock.now().isoformat(),
        "data": {"output_tokens": tokens},
    } | fields


async def send(client: httpx.AsyncClient, *events: dict[str, Any]) -> list[dict[str, Any]]:
    response = await client.post("/v1/events", json={"events": list(events)})
    assert response.status_code == 200, response.text
    results: list[dict[str, Any]] = response.json()["results"]
    return results


async def balance(client: httpx.AsyncClient, wallet: WalletDriver) -> dict[str, Any]:
    response = await client.get(f"/v1/customers/{wallet.customer_id}/wallet")
    assert response.status_code == 200, response.text
    balances: list[dict[str, Any]] = response.json()["balances"]
    return next(b for b in balances if b["asset"] == "USD")


class TestDebits:
    async def test_the_wallet_falls_event_by_event(self, client, subscribed, clock):
        await subscribed.grant("100.00")
        first = await send(client, event(clock, 1, 500))
        # 500 tokens at 0.01 plus the first tier's flat 1.00.
        assert first[0]["status"] == "accepted"
        assert first[0]["fees"] == [
            {
                "price": "tokens_out",
                "subscription_id": first[0]["fees"][0]["subscription_id"],
                "asset": "USD",
                "quantity": "500",
                "amount": "6.00",
            }
        ]
        assert (await balance(client, subscribed))["available"] == "94.00"
        # 700 more cross the tier: 500 at 0.01 and 200 at 0.008.
        second = await send(client, event(clock, 2, 700))
        assert second[0]["fees"][0]["amount"] == "6.60"
        assert (await balance(client, subscribed))["available"] == "87.40"

    async def test_a_batch_sums_to_the_price_of_its_total(self, client, subscribed, clock):
        await subscribed.grant("100.00")
        results = await send(client, *(event(clock, i, 300) for i in range(5)))
        fees = [Decimal(r["fees"][0]["amount"]) for r in results]
        # 1,500 tokens: 1.00 + 1,000 × 0.01 + 500 × 0.008 = 15.00.
        assert sum(fees) == Decimal("15.00")
        assert (await balance(client, subscribed))["available"] == "85.00"

    async def test_a_duplicate_is_never_billed_again(self, client, subscribed, clock):
        await subscribed.grant("100.00")
        await send(client, event(clock, 1, 100))
        again = await send(client, event(clock, 1, 100))
        assert again[0]["status"] == "duplicate"
        assert "fees" not in again[0]
        assert (await balance(client, subscribed))["available"] == "98.00"

    async def test_events_of_a_new_period_start_the_tiers_again(self, client, subscribed, clock):
        await subscribed.grant("100.00")
        await send(client, event(clock, 1, 1000))  # 11.00: the whole first tier
        clock.advance(timedelta(days=32))
        later = await send(client, event(clock, 2, 10))
        assert later[0]["fees"][0]["amount"] == "1.10"  # flat fee again, tier 1 price

    async def test_events_no_price_counts_are_free(self, client, subscribed, clock):
        await subscribed.grant("10.00")
        other = event(clock, 1, 100, type="llm.embedding")
        results = await send(client, other)
        assert results[0] == {"id": "evt-1", "status": "accepted", "fees": []}
        assert (await balance(client, subscribed))["available"] == "10.00"

    async def test_a_customer_without_subscription_is_not_billed(self, client, wallet, clock):
        await output_tokens_meter(client)
        results = await send(client, event(clock, 1, 100))
        assert results[0] == {"id": "evt-1", "status": "accepted", "fees": []}


class TestDebt:
    async def test_a_shortfall_becomes_debt_and_the_next_top_up_repays_it(
        self, client, subscribed, clock
    ):
        hook = await client.post(
            "/v1/webhook-endpoints", json={"url": "http://127.0.0.1:9/h", "topics": ["wallet.*"]}
        )
        await subscribed.grant("2.00")
        results = await send(client, event(clock, 1, 500))  # costs 6.00
        assert results[0]["status"] == "accepted"
        state = await balance(client, subscribed)
        assert (state["available"], state["debt"]) == ("0.00", "4.00")
        deliveries = await client.get(f"/v1/webhook-endpoints/{hook.json()['id']}/deliveries")
        overdrawn = [d for d in deliveries.json()["data"] if d["event_type"] == "wallet.overdrawn"]
        assert len(overdrawn) == 1
        assert overdrawn[0]["payload"]["data"]["debt"] == "4.00"
        # A promotional grant does not repay debt; a paid one does, first.
        await subscribed.grant("1.00", purpose="promotional")
        assert (await balance(client, subscribed))["debt"] == "4.00"
        await subscribed.grant("10.00")
        state = await balance(client, subscribed)
        assert (state["available"], state["debt"]) == ("7.00", "0.00")

    async def test_a_positive_adjustment_repays_debt(self, client, subscribed, clock):
        await send(client, event(clock, 1, 100))  # 2.00 on an empty wallet
        assert (await balance(client, subscribed))["debt"] == "2.00"
        response = await subscribed.adjust("5.00")
        assert response.status_code == 201, response.text
        state = await balance(client, subscribed)
        assert (state["available"], state["debt"]) == ("3.00", "0.00")

    async def test_a_top_up_repays_debt_with_its_own_money_not_the_credit_line(
        self, client, subscribed, clock
    ):
        # Found by the wallet state machine: a repayment once drew on the credit limit.
        await send(client, event(clock, 1, 100))  # 2.00 on an empty wallet: all debt
        configured = await client.patch(
            f"/v1/customers/{subscribed.customer_id}/wallet/balances/USD",
            json={"credit_limit": "1.00"},
        )
        assert configured.status_code == 200, configured.text
        assert (await subscribed.adjust("0.50")).status_code == 201
        state = await balance(client, subscribed)
        assert (state["posted"], state["debt"], state["available"]) == ("0.00", "1.50", "1.00")

    async def test_the_credit_limit_is_used_before_debt(self, client, subscribed, clock):
        configured = await client.patch(
            f"/v1/customers/{subscribed.customer_id}/wallet/balances/USD",
            json={"credit_limit": "3.00"},
        )
        assert configured.status_code == 200, configured.text
        await send(client, event(clock, 1, 500))  # 6.00
        state = await balance(client, subscribed)
        assert (state["available"], state["debt"]) == ("0.00", "3.00")


class TestHolds:
    async def test_an_event_settles_its_hold(self, client, subscribed, clock):
        await subscribed.grant("10.00")
        hold = await subscribed.authorize("8.00")
        results = await send(client, event(clock, 1, 500, authorization_id=hold["id"]))
        assert results[0]["fees"][0]["amount"] == "6.00"
        settled = (await client.get(f"/v1/authorizations/{hold['id']}")).json()
        assert (settled["status"], settled["captured_amount"], settled["released_amount"]) == (
            "captured",
            "6.00",
            "2.00",
        )
        state = await balance(client, subscribed)
        assert (state["available"], state["held"]) == ("4.00", "0.00")

    async def test_a_fee_above_the_hold_takes_the_rest_from_available(
        self, client, subscribed, clock
    ):
        await subscribed.grant("10.00")
        hold = await subscribed.authorize("2.00")
        await send(client, event(clock, 1, 500, authorization_id=hold["id"]))  # 6.00
        settled = (await client.get(f"/v1/authorizations/{hold['id']}")).json()
        assert settled["captured_amount"] == "2.00"
        assert (await balance(client, subscribed))["available"] == "4.00"

    async def test_a_fee_above_the_hold_that_runs_into_debt_settles_the_hold_once(
        self, client, subscribed, clock
    ):
        # Found by the wallet state machine: opening the debt account flushed
        # the session, and with it the hold's new state before its guarded write.
        configured = await client.patch(
            f"/v1/customers/{subscribed.customer_id}/wallet/balances/USD",
            json={"credit_limit": "1.00"},
        )
        assert configured.status_code == 200, configured.text
        hold = await subscribed.authorize("1.00")
        results = await send(client, event(clock, 1, 500, authorization_id=hold["id"]))  # 6.00
        assert results[0]["status"] == "accepted"
        settled = (await client.get(f"/v1/authorizations/{hold['id']}")).json()
        assert (settled["status"], settled["captured_amount"]) == ("captured", "1.00")
        state = await balance(client, subscribed)
        assert (state["available"], state["debt"]) == ("0.00", "5.00")

    async def test_a_resolved_hold_leaves_the_event_to_pay_from_available(
        self, client, subscribed, clock
    ):
        await subscribed.grant("10.00")
        hold = await subscribed.authorize("2.00")
        released = await subscribed.release(hold["id"])
        assert released.status_code == 200
        await send(client, event(clock, 1, 100, authorization_id=hold["id"]))  # 2.00
        assert (await client.get(f"/v1/authorizations/{hold['id']}")).json()["status"] == (
            "released"
        )
        assert (await balance(client, subscribed))["available"] == "8.00"

    async def test_an_expired_hold_is_expired_then_the_event_pays(self, client, subscribed, clock):
        await subscribed.grant("10.00")
        hold = await subscribed.authorize("5.00", ttl_s=60)
        clock.advance(timedelta(seconds=61))
        await send(client, event(clock, 1, 100, authorization_id=hold["id"]))
        assert (await client.get(f"/v1/authorizations/{hold['id']}")).json()["status"] == "expired"
        assert (await balance(client, subscribed))["available"] == "8.00"

    async def test_unknown_and_foreign_holds_are_rejected(
        self, client, subscribed, clock, other_tenant, app
    ):
        await subscribed.grant("10.00")
        other = await WalletDriver.create(client, "globex")
        await other.grant("10.00")
        theirs = await other.authorize("1.00")
        results = await send(
            client,
            event(clock, 1, 100, authorization_id="auth_missing"),
            event(clock, 2, 100, authorization_id=theirs["id"]),
        )
        for result in results:
            assert (result["status"], result["code"], result["field"]) == (
                "rejected",
                "authorization_not_found",
                "authorization_id",
            )
        assert (await balance(client, subscribed))["available"] == "10.00"


class TestConcurrency:
    async def test_identical_batches_from_two_clients_bill_once(self, client, subscribed, clock):
        await subscribed.grant("100.00")
        batch = [event(clock, i, 100) for i in range(20)]
        first, second = await asyncio.gather(send(client, *batch), send(client, *batch))
        statuses = [a["status"] + "/" + b["status"] for a, b in zip(first, second, strict=True)]
        assert set(statuses) <= {"accepted/duplicate", "duplicate/accepted"}
        # 2,000 tokens: 1.00 + 10.00 + 1,000 × 0.008 = 19.00, once.
        assert (await balance(client, subscribed))["available"] == "81.00"

    async def test_batches_over_the_same_customers_in_any_order_never_deadlock(
        self, client, subscribed, clock
    ):
        others = [await WalletDriver.create(client, f"c{i}") for i in range(3)]
        for other in others:
            await subscribe(client, customer_id=other.customer_id, product="api")
            await other.grant("100.00")
        await subscribed.grant("100.00")
        everyone = ["acme", "c0", "c1", "c2"]

        def batch(tag: str, order: list[str]) -> list[dict[str, Any]]:
            return [
                event(clock, 0, 10, id=f"{tag}-{who}-{n}", customer_id=f"ext:{who}")
                for n in range(5)
                for who in order
            ]

        batches = [batch(f"b{i}", everyone if i % 2 else everyone[::-1]) for i in range(6)]
        results = await asyncio.gather(*(send(client, *b) for b in batches))
        assert all(r["status"] == "accepted" for rs in results for r in rs)
        # 6 batches × 5 events × 10 tokens = 300 tokens each: 1.00 + 300 × 0.01.
        for driver in [subscribed, *others]:
            assert (await balance(client, driver))["available"] == "96.00"


class TestCatalog:
    async def test_unique_count_cannot_bill_in_real_time(self, client):
        meter = await client.post(
            "/v1/meters",
            json={
                "code": "users",
                "event_type": "login",
                "aggregation": "unique_count",
                "field": "user",
            },
        )
        assert meter.status_code == 201, meter.text
        price = {
            "code": "seats",
            "type": "usage",
            "meter": "users",
            "asset": "USD",
            "billing": "real_time",
            "model": "per_unit",
            "unit_amount": "1",
        }
        response = await client.post(
            "/v1/products", json={"code": "p", "name": "P", "prices": [price]}
        )
        assert_problem(response, 400, "real_time_aggregation_unsupported", field="prices.0.billing")


# --- properties of the running total, pure --------------------------------------------


@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(
    quantities=st.lists(
        st.decimals(min_value=0, max_value=5000, places=3, allow_nan=False), max_size=30
    )
)
def test_marginal_fees_sum_to_the_price_of_the_total(quantities: list[Decimal]) -> None:
    price = parse_price(GRADUATED, asset=USD)
    total = Total(Decimal(0), 0)
    charged = 0
    for quantity in quantities:
        fee = RealtimeFee(
            target=_Target(price),  # type: ignore[arg-type]
            key=None,  # type: ignore[arg-type]
            period_end=None,  # type: ignore[arg-type]
            quantity=quantity,
        )
        rate_fee(fee, total, {})
        assert fee.rating is not None
        assert fee.rating.amount_minor >= 0
        charged += fee.rating.amount_minor
    expected = rate(price, total.quantity, asset=USD).amount_minor if quantities else 0
    assert charged == expected


class _Target:
    def __init__(self, price: Any) -> None:
        self.price = price
        self.asset = USD
        self.meter = Meter(aggregation="sum", field="n")


class TestEstimates:
    async def authorize(
        self, client: httpx.AsyncClient, customer_id: str, **fields: Any
    ) -> httpx.Response:
        return await client.post(
            "/v1/authorizations",
            json={"customer_id": customer_id} | fields,
            headers={"Idempotency-Key": f"est-{customer_id}-{fields}"},
        )

    async def test_an_estimate_holds_the_marginal_fee(self, client, subscribed, clock):
        await subscribed.grant("100.00")
        await send(client, event(clock, 1, 900))  # 1.00 + 9.00
        estimate = {"event_type": "llm.completion", "data": {"output_tokens": 200}}
        response = await self.authorize(client, subscribed.customer_id, estimate=estimate)
        assert response.status_code == 200, response.text
        hold = response.json()
        # 100 tokens left in the first tier at 0.01, 100 in the second at 0.008.
        assert (hold["status"], hold["asset"], hold["amount"]) == ("authorized", "USD", "1.80")
        assert (await balance(client, subscribed))["held"] == "1.80"
        # The real event used less; it settles the hold and the rest returns.
        await send(client, event(clock, 2, 100, authorization_id=hold["id"]))
        settled = (await client.get(f"/v1/authorizations/{hold['id']}")).json()
        assert (settled["captured_amount"], settled["released_amount"]) == ("1.00", "0.80")
        assert (await balance(client, subscribed))["available"] == "89.00"

    async def test_an_estimate_is_rated_against_the_totals_its_wallet_lock_shows(
        self, client, subscribed, clock, ctx, backend
    ):
        """An ingest that commits while the hold waits for the wallet's lock
        moved the totals the estimate is rated against: it counts."""
        if backend != "postgresql":
            pytest.skip("SQLite runs one writer at a time: no ingest is ever in progress")
        await subscribed.grant("100.00")
        await send(client, event(clock, 1, 900))
        estimate = {"event_type": "llm.completion", "data": {"output_tokens": 200}}
        async with ctx.sessions() as ingest, ctx.autocommit_sessions() as watcher:
            # As an ingest does: the wallet locked, then the period's total moved.
            await ingest.execute(
                sa.text("SELECT 1 FROM wallets WHERE customer_id = :c FOR UPDATE"),
                {"c": subscribed.customer_id},
            )
            await ingest.execute(
                sa.text(
                    "UPDATE realtime_period_totals SET quantity = '1000', event_count = 2 "
                    "WHERE price_code = 'tokens_out'"
                )
            )
            hold = asyncio.create_task(
                self.authorize(client, subscribed.customer_id, estimate=estimate)
            )
            waiting = (
                "SELECT count(*) FROM pg_stat_activity "
                "WHERE datname = current_database() AND wait_event_type = 'Lock'"
            )
            for _ in range(500):
                if await watcher.scalar(sa.text(waiting)):
                    break
                await asyncio.sleep(0.01)
            else:
                raise AssertionError("the hold never waited for the wallet's lock")
            await ingest.commit()
            response = await hold
        # 200 tokens past the first tier's 1,000 at 0.008; rated against the
        # total read before the lock (900) it would hold 1.80.
        assert response.json()["amount"] == "1.60", response.text

    async def test_an_estimate_the_wallet_cannot_cover_declines(self, client, subscribed):
        await subscribed.grant("1.00")
        estimate = {"event_type": "llm.completion", "data": {"output_tokens": 500}}
        response = await self.authorize(client, subscribed.customer_id, estimate=estimate)
        assert response.json()["status"] == "declined"
        assert response.json()["decline_code"] == "insufficient_funds"

    async def test_an_estimate_of_nothing_holds_nothing_and_settles(self, client, wallet, clock):
        await output_tokens_meter(client)
        free = {
            "code": "tokens",
            "type": "usage",
            "meter": "output_tokens",
            "asset": "USD",
            "billing": "real_time",
            "model": "package",
            "package_size": "1000",
            "package_amount": "5",
            "free_units": "100",
        }
        await product(client, code="free", name="Free", prices=[free])
        await subscribe(client, customer_id=wallet.customer_id, product="free")
        await wallet.grant("10.00")
        estimate = {"event_type": "llm.completion", "data": {"output_tokens": 50}}
        response = await self.authorize(client, wallet.customer_id, estimate=estimate)
        hold = response.json()
        assert (hold["status"], hold["amount"]) == ("authorized", "0.00")
        # Used more than estimated: the hold covers nothing, the wallet pays.
        results = await send(client, event(clock, 1, 150, authorization_id=hold["id"]))
        assert results[0]["fees"][0]["amount"] == "5.00"
        settled = (await client.get(f"/v1/authorizations/{hold['id']}")).json()
        assert (settled["status"], settled["captured_amount"]) == ("captured", "0.00")
        assert (await balance(client, wallet))["available"] == "5.00"

    async def test_an_unpriced_event_cannot_be_estimated(self, client, subscribed):
        estimate = {"event_type": "llm.embedding", "data": {}}
        response = await self.authorize(client, subscribed.customer_id, estimate=estimate)
        assert_problem(response, 422, "estimate_not_priced", field="estimate.event_type")
        other_asset = await self.authorize(
            client,
            subscribed.customer_id,
            asset="EUR",
            estimate=estimate | {"event_type": "llm.completion"},
        )
        assert_problem(other_asset, 422, "estimate_not_priced", field="asset")

    async def test_amount_and_estimate_together_are_refused(self, client, subscribed):
        response = await self.authorize(
            client,
            subscribed.customer_id,
            asset="USD",
            amount="1.00",
            estimate={"event_type": "llm.completion", "data": {}},
        )
        assert_problem(response, 400, "invalid_estimate", field="amount")
        missing = await self.authorize(client, subscribed.customer_id, asset="USD")
        assert_problem(missing, 400, "invalid_amount", field="amount")

    async def test_bad_estimate_data_is_refused(self, client, subscribed):
        await subscribed.grant("10.00")
        response = await client.post(
            "/v1/authorizations",
            content=(
                '{"customer_id": "ext:acme", "estimate": {"event_type": "llm.completion",'
                ' "data": {"output_tokens": NaN}}}'
            ),
            headers={"content-type": "application/json", "Idempotency-Key": "nan"},
        )
        assert_problem(response, 400, "invalid_data", field="estimate.data.output_tokens")
        assert (await balance(client, subscribed))["held"] == "0.00"


def llm_event(
    clock: FrozenClock, index: int, model: str = "gpt-4o", **fields: Any
) -> dict[str, Any]:
    usage = {"prompt_tokens": 1000, "completion_tokens": 500}
    return {
        "id": f"llm-{index}",
        "customer_id": "ext:acme",
        "type": "llm.call",
        "timestamp": clock.now().isoformat(),
        "data": {"llm": {"provider": "openai", "model": model, "usage": usage}},
    } | fields


class TestDefaultLlmPrice:
    """No subscribed price counts the event: vendor cost × the organization's markup."""

    async def test_vendor_cost_is_charged_at_markup(self, client, wallet, clock):
        await wallet.grant("1.00")
        results = await send(client, llm_event(clock, 1))
        # gpt-4o: 1,000 input at 2.50 and 500 output at 10.00 per million tokens.
        assert results[0]["fees"] == [
            {
                "price": "llm_default",
                "subscription_id": None,
                "asset": "USD",
                "quantity": "1",
                "amount": "0.0075",
            }
        ]
        assert results[0]["costs"][0]["amount"] == "0.0075"
        settings_ = await client.post("/v1/llm/settings", json={"markup_percent": "20"})
        assert settings_.status_code == 200, settings_.text
        await send(client, llm_event(clock, 2))
        assert (await balance(client, wallet))["available"] == "0.9835"  # 1 − 0.0075 − 0.009

    async def test_an_unknown_model_is_never_billed_as_free_nor_estimated(
        self, client, wallet, clock
    ):
        await wallet.grant("1.00")
        results = await send(client, llm_event(clock, 1, model="gpt-nonexistent"))
        assert results[0]["fees"] == []
        assert results[0]["costs"][0]["amount"] is None
        llm = llm_event(clock, 2, model="gpt-nonexistent")["data"]
        declined = await client.post(
            "/v1/authorizations",
            json={"customer_id": "ext:acme", "estimate": {"event_type": "llm.call", "data": llm}},
        )
        assert (declined.json()["status"], declined.json()["decline_code"]) == (
            "declined",
            "unknown_model",
        )

    async def test_an_estimate_holds_the_marked_up_cost_and_the_event_settles_it(
        self, client, wallet, clock
    ):
        await wallet.grant("1.00")
        worst = llm_event(clock, 0)["data"]
        worst["llm"]["usage"] = {"prompt_tokens": 1000, "completion_tokens": 4000}
        hold = await client.post(
            "/v1/authorizations",
            json={"customer_id": "ext:acme", "estimate": {"event_type": "llm.call", "data": worst}},
        )
        assert (hold.json()["status"], hold.json()["amount"]) == ("authorized", "0.0425")
        await send(client, llm_event(clock, 1, authorization_id=hold.json()["id"]))
        settled = (await client.get(f"/v1/authorizations/{hold.json()['id']}")).json()
        assert (settled["captured_amount"], settled["released_amount"]) == ("0.0075", "0.035")
        assert (await balance(client, wallet))["available"] == "0.9925"

    async def test_a_batch_reads_the_price_book_once_for_all_its_calls(
        self, client, wallet, ctx: AppContext, clock
    ):
        await wallet.grant("100.00")
        statements: list[str] = []

        def record(*args: Any) -> None:
            statements.append(str(args[2]))

        async def ingested(count: int, first: int) -> int:
            statements.clear()
            results = await send(client, *[llm_event(clock, first + i) for i in range(count)])
            assert [r["fees"][0]["amount"] for r in results] == ["0.0075"] * count
            return len(statements)

        sa.event.listen(ctx.engine.sync_engine, "before_cursor_execute", record)
        try:
            await ingested(1, 0)  # the first also stores the vendor
            one = await ingested(1, 1)
            many = await ingested(50, 2)
        finally:
            sa.event.remove(ctx.engine.sync_engine, "before_cursor_execute", record)
        assert many == one, statements
        assert (await balance(client, wallet))["available"] == "99.61"  # 100 − 52 × 0.0075


class TestIssueFourJourney:
    """Issue 4's "done when", in one customer's afternoon over HTTP."""

    async def test_meter_product_subscribe_events_usage_entitlement_simulate_estimate(
        self, client, wallet, clock
    ):
        await output_tokens_meter(client)
        in_arrears = {
            "code": "tokens_report",
            "type": "usage",
            "meter": "output_tokens",
            "asset": "USD",
            "billing": "in_arrears",
            "model": "per_unit",
            "unit_amount": "0.001",
        }
        tokens = {"code": "tokens", "type": "metered", "meter": "output_tokens", "limit": 2000}
        await product(
            client, code="api", name="API", prices=[GRADUATED, in_arrears], features=[tokens]
        )
        await subscribe(client, customer_id=wallet.customer_id, product="api")
        await wallet.grant("50.00")
        clock.advance(timedelta(seconds=1))

        # The wallet falls event by event; the in-arrears price waits for the invoice.
        seen = []
        for index, used in enumerate((400, 400, 400)):
            (result,) = await send(client, event(clock, index, used))
            assert [fee["price"] for fee in result["fees"]] == ["tokens_out"]
            seen.append((await balance(client, wallet))["available"])
        assert seen == ["45.00", "41.00", "37.40"]  # 1.00 + 4.00, then 4.00, then 2.00 + 1.60

        usage = await client.get(
            "/v1/meters/output_tokens/usage",
            params={
                "customer_id": wallet.customer_id,
                "from": (clock.now() - timedelta(hours=1)).isoformat(),
                "to": (clock.now() + timedelta(hours=1)).isoformat(),
            },
        )
        assert usage.status_code == 200, usage.text
        assert sum(Decimal(row["value"]) for row in usage.json()["data"]) == 1200, usage.text

        entitlement = await client.get(f"/v1/customers/{wallet.customer_id}/entitlements/tokens")
        assert entitlement.status_code == 200, entitlement.text
        assert (entitlement.json()["used"], entitlement.json()["remaining"]) == ("1200", "800")

        cheaper = dict(GRADUATED, tiers=[{"up_to": None, "unit_amount": "0.005"}])
        new = await client.post("/v1/products/api/versions", json={"prices": [cheaper]})
        assert new.status_code == 201, new.text
        simulated = await client.post(
            "/v1/products/api/versions/2/simulate",
            json={"events": [{"type": "llm.completion", "data": {"output_tokens": 1200}}]},
        )
        assert simulated.status_code == 200, simulated.text
        assert simulated.json()["prices"][0]["amount"] == "6.00"

        hold = await client.post(
            "/v1/authorizations",
            json={
                "customer_id": wallet.customer_id,
                "estimate": {"event_type": "llm.completion", "data": {"output_tokens": 100}},
            },
        )
        assert (hold.json()["status"], hold.json()["amount"]) == ("authorized", "0.80")
