"""Invoice payment from the prepaid wallet, progressive billing and minimum commitments.

Goal: an invoice is paid from the wallet's own funds (never its credit limit,
never into debt) with the ledger still balanced; usage that reaches a
subscription's threshold is invoiced mid-period and the period's invoice
deducts exactly what those invoices charged; a period whose fees fall short
of the minimum commitment gets a true-up line for the (prorated) difference.
Method: a FrozenClock moved by hand, the billing run, amounts computed by
hand, on both backends.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from billfold.api.context import AppContext
from billfold.clock import FrozenClock
from billfold.invoicing.service import run_billing
from billfold.ledger.verify import verify
from tests.catalog_support import output_tokens_meter, product
from tests.metering_support import create_customer, event, ingest

START = datetime(2030, 1, 1, tzinfo=UTC)

BASE: dict[str, Any] = {"code": "base", "type": "fixed", "asset": "USD", "amount": "10"}
TOKENS: dict[str, Any] = {
    "code": "tokens",
    "type": "usage",
    "meter": "output_tokens",
    "asset": "USD",
    "billing": "in_arrears",
    "model": "per_unit",
    "unit_amount": "0.01",
}


@pytest.fixture
def clock() -> FrozenClock:
    return FrozenClock(START)


async def _post(client: httpx.AsyncClient, path: str, body: Any = None) -> dict[str, Any]:
    response = await client.post(path, json=body)
    assert response.status_code in (200, 201), response.text
    result: dict[str, Any] = response.json()
    return result


async def _invoices(client: httpx.AsyncClient) -> list[dict[str, Any]]:
    response = await client.get("/v1/invoices", params={"customer_id": "ext:u1", "limit": 100})
    assert response.status_code == 200, response.text
    return [
        (await client.get(f"/v1/invoices/{item['id']}")).json()
        for item in reversed(response.json()["data"])
    ]


def _lines(invoice: dict[str, Any]) -> list[tuple[str, str]]:
    return [(line["kind"], line["amount"]) for line in invoice["lines"] if line["charged"]]


async def _balance(client: httpx.AsyncClient) -> dict[str, Any]:
    response = await client.get("/v1/customers/ext:u1/wallet")
    assert response.status_code == 200, response.text
    [balance] = [b for b in response.json()["balances"] if b["asset"] == "USD"]
    result: dict[str, Any] = balance
    return result


async def _ledger_ok(ctx: AppContext) -> None:
    async with ctx.sessions() as session:
        report = await verify(session)
    assert report.ok, report.violation


async def test_invoices_are_paid_from_the_wallet_and_a_short_wallet_pays_what_it_has(
    client: httpx.AsyncClient, ctx: AppContext, clock: FrozenClock
) -> None:
    await create_customer(client, "u1")
    await product(client, code="pro", name="Pro", prices=[{**BASE, "amount": "30"}])
    settings = await client.patch("/v1/invoice-settings", json={"pay_from_wallet": True})
    assert settings.status_code == 200, settings.text
    topup = await client.post(
        "/v1/customers/ext:u1/adjustments",
        json={"asset": "USD", "amount": "50", "reason": "external_topup"},
    )
    assert topup.status_code == 201, topup.text
    # A credit limit is not money: invoices are never paid from it.
    limit = await client.patch(
        "/v1/customers/ext:u1/wallet/balances/USD", json={"credit_limit": "100"}
    )
    assert limit.status_code == 200, limit.text

    await _post(client, "/v1/subscriptions", {"customer_id": "ext:u1", "product": "pro"})
    [opening] = await _invoices(client)
    assert (opening["status"], opening["number"]) == ("paid", "ACME-2030-000001")
    assert (opening["total"], opening["paid"], opening["amount_due"]) == ("30.00", "30.00", "0.00")
    balance = await _balance(client)
    assert (balance["posted"], balance["debt"]) == ("20.00", "0.00")
    await _ledger_ok(ctx)

    # February's fee is 30; the wallet has 20: it pays 20 and 10 stays due.
    clock.set(datetime(2030, 2, 1, 0, 0, 1, tzinfo=UTC))
    await run_billing(ctx.sessions, clock)
    _, february = await _invoices(client)
    assert (february["status"], february["number"]) == ("finalized", "ACME-2030-000002")
    assert (february["paid"], february["amount_due"]) == ("20.00", "10.00")
    balance = await _balance(client)
    assert (balance["posted"], balance["available"], balance["debt"]) == ("0.00", "100.00", "0.00")
    await _ledger_ok(ctx)

    # An empty wallet pays nothing; the rest is settled outside Billfold.
    clock.set(datetime(2030, 3, 1, 0, 0, 1, tzinfo=UTC))
    await run_billing(ctx.sessions, clock)
    *_, march = await _invoices(client)
    assert (march["status"], march["paid"], march["amount_due"]) == ("finalized", "0.00", "30.00")
    paid = await _post(client, f"/v1/invoices/{february['id']}/mark-paid")
    assert (paid["status"], paid["paid"], paid["amount_due"]) == ("paid", "30.00", "0.00")
    await _ledger_ok(ctx)


async def test_progressive_invoices_at_the_threshold_are_deducted_at_period_end(
    client: httpx.AsyncClient, ctx: AppContext, clock: FrozenClock
) -> None:
    await output_tokens_meter(client)
    await create_customer(client, "u1")
    await product(client, code="pro", name="Pro", prices=[BASE, TOKENS])
    sub = await _post(
        client,
        "/v1/subscriptions",
        {
            "customer_id": "ext:u1",
            "product": "pro",
            "usage_threshold": {"asset": "USD", "amount": "20"},
        },
    )
    assert sub["usage_threshold"] == {"asset": "USD", "amount": "20.00"}

    async def use(day: int, tokens: int) -> list[dict[str, Any]]:
        clock.set(datetime(2030, 1, day, 12, tzinfo=UTC))
        await ingest(
            client, event(f"e{day}", datetime(2030, 1, day, tzinfo=UTC), output_tokens=tokens)
        )
        await run_billing(ctx.sessions, clock)
        return await _invoices(client)

    # 15.00 of usage: under the threshold.
    assert len(await use(10, 1500)) == 1
    # 25.00: invoiced now, once however often the run repeats.
    _, first = await use(12, 1000)
    assert (await run_billing(ctx.sessions, clock)).invoices == 0
    assert (first["kind"], first["status"], first["number"]) == (
        "progressive",
        "finalized",
        "ACME-2030-000002",
    )
    assert first["period_start"].startswith("2030-01-01")
    assert first["period_end"].startswith("2030-01-12T12")
    assert _lines(first) == [("usage", "25.00")]
    # 30.00 in all, 5.00 not invoiced: under the threshold.
    assert len(await use(20, 500)) == 2
    # 50.00 in all, 25.00 not invoiced: the period's usage less the first invoice.
    *_, second = await use(25, 2000)
    assert second["period_start"] == first["period_end"]
    assert _lines(second) == [("usage", "50.00"), ("already_billed", "-25.00")]
    assert second["total"] == "25.00"

    # The period's invoice: all of January's usage less what was invoiced,
    # and February's fee in advance.
    clock.set(datetime(2030, 2, 1, 0, 0, 1, tzinfo=UTC))
    await run_billing(ctx.sessions, clock)
    *_, january = await _invoices(client)
    assert january["kind"] == "period"
    assert _lines(january) == [("usage", "50.00"), ("already_billed", "-50.00"), ("fixed", "10.00")]
    assert january["total"] == "10.00"

    # February: a progressive invoice that is voided is not deducted.
    clock.set(datetime(2030, 2, 10, tzinfo=UTC))
    await ingest(client, event("f1", datetime(2030, 2, 9, tzinfo=UTC), output_tokens=3000))
    await run_billing(ctx.sessions, clock)
    *_, progressive = await _invoices(client)
    assert (progressive["kind"], progressive["total"]) == ("progressive", "30.00")
    await _post(client, f"/v1/invoices/{progressive['id']}/void")
    clock.set(datetime(2030, 3, 1, 0, 0, 1, tzinfo=UTC))
    await run_billing(ctx.sessions, clock)
    *_, february = await _invoices(client)
    assert _lines(february) == [("usage", "30.00"), ("fixed", "10.00")]


async def test_minimum_commitment_trues_up_short_periods_prorated(
    client: httpx.AsyncClient, ctx: AppContext, clock: FrozenClock
) -> None:
    await output_tokens_meter(client)
    await create_customer(client, "u1")
    await product(client, code="pro", name="Pro", prices=[BASE, TOKENS])
    sub = await _post(
        client,
        "/v1/subscriptions",
        {
            "customer_id": "ext:u1",
            "product": "pro",
            "minimum_commitment": {"asset": "USD", "amount": "100"},
        },
    )
    assert sub["minimum_commitment"] == {"asset": "USD", "amount": "100.00"}
    [opening] = await _invoices(client)
    # No true-up up front: the commitment is checked when the period closes.
    assert _lines(opening) == [("fixed", "10.00")]

    # January: 10.00 fee (paid in advance) + 30.00 usage = 40.00, 60.00 short.
    clock.set(datetime(2030, 1, 20, tzinfo=UTC))
    await ingest(client, event("e1", clock.now(), output_tokens=3000))
    clock.set(datetime(2030, 2, 1, 0, 0, 1, tzinfo=UTC))
    await run_billing(ctx.sessions, clock)
    _, january = await _invoices(client)
    assert _lines(january) == [("usage", "30.00"), ("commitment", "60.00"), ("fixed", "10.00")]
    assert january["total"] == "100.00"

    # February: 200.00 of usage is over the commitment.
    await ingest(client, event("e2", clock.now(), output_tokens=20000))
    clock.set(datetime(2030, 3, 1, 0, 0, 1, tzinfo=UTC))
    await run_billing(ctx.sessions, clock)
    *_, february = await _invoices(client)
    assert _lines(february) == [("usage", "200.00"), ("fixed", "10.00")]

    # Canceled half-way through March? March has 31 days: cancel on the 16th
    # 12:00 is 15.5 days, half. The commitment owed is half (50.00); the fee
    # kept is half (5.00) and usage 10.00: 35.00 short.
    clock.set(datetime(2030, 3, 10, tzinfo=UTC))
    await ingest(client, event("e3", clock.now(), output_tokens=1000))
    clock.set(datetime(2030, 3, 16, 12, tzinfo=UTC))
    await _post(client, f"/v1/subscriptions/{sub['id']}/cancel")
    *_, final = await _invoices(client)
    assert _lines(final) == [("usage", "10.00"), ("commitment", "35.00"), ("proration", "-5.00")]
    assert final["total"] == "40.00"


async def test_commercial_terms_are_checked(client: httpx.AsyncClient) -> None:
    await create_customer(client, "u1")
    await product(client, code="pro", name="Pro", prices=[BASE])
    for body, status, code, field in (
        ({"usage_threshold": {"asset": "XXX", "amount": "1"}}, 404, None, "usage_threshold.asset"),
        (
            {"minimum_commitment": {"asset": "USD", "amount": "0"}},
            400,
            None,
            "minimum_commitment.amount",
        ),
    ):
        response = await client.post(
            "/v1/subscriptions", json={"customer_id": "ext:u1", "product": "pro", **body}
        )
        assert response.status_code == status, response.text
        assert response.json()["field"] == field
        assert code is None or response.json()["code"] == code
    assert (await client.get("/v1/subscriptions")).json()["data"] == []


async def test_periodic_credits_roll_over_up_to_the_cap_or_are_replaced(
    client: httpx.AsyncClient, ctx: AppContext, clock: FrozenClock
) -> None:
    await output_tokens_meter(client)
    await create_customer(client, "u1")
    await product(
        client,
        code="pro",
        name="Pro",
        prices=[
            {
                "code": "bundle",
                "type": "credits",
                "asset": "USD",
                "amount": "10",
                "refresh": "rollover",
                "rollover_cap": "15",
            },
            {
                "code": "monthly",
                "type": "credits",
                "asset": "EUR",
                "amount": "5",
                "refresh": "expire_and_replace",
            },
            {**TOKENS, "code": "live", "billing": "real_time"},
        ],
    )
    await _post(client, "/v1/subscriptions", {"customer_id": "ext:u1", "product": "pro"})

    async def available() -> tuple[str, str]:
        response = await client.get("/v1/customers/ext:u1/wallet")
        assert response.status_code == 200, response.text
        found = {b["asset"]: b["available"] for b in response.json()["balances"]}
        return found["USD"], found["EUR"]

    assert await available() == ("10.00", "5.00")
    # 4.00 of real-time usage is paid from the bundled USD credits: 6.00 unused.
    clock.set(datetime(2030, 1, 10, tzinfo=UTC))
    await ingest(client, event("e1", datetime(2030, 1, 9, tzinfo=UTC), output_tokens=400))
    assert await available() == ("6.00", "5.00")
    # February: 6.00 carries over (under the cap of 15) plus 10.00; the euros
    # lapse and are replaced.
    for month, expected in ((2, "16.00"), (3, "25.00"), (4, "25.00"), (5, "25.00")):
        clock.set(datetime(2030, month, 1, 0, 0, 1, tzinfo=UTC))
        await run_billing(ctx.sessions, clock)
        # From March on at most 15.00 carries over: 15.00 + 10.00.
        assert await available() == (expected, "5.00"), month
    await _ledger_ok(ctx)
