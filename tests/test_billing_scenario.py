"""Four months of one customer's life, end to end through the API and the billing run.

Goal: a trial, usage in arrears, a late event after its period was
finalized, an upgrade mid-month with proration on both sides, a second late
event on the new plan, tax and a cancel at period end give the invoices a
person would compute by hand, numbered without gaps, and the run stays
idempotent throughout. Method: a FrozenClock moved by hand, every amount
written out below, on both backends.

Plans: pro (31.00 a month in advance, tokens 0.01 each in arrears) and max
(62.00 a month, tokens 0.005 each); VAT 10% exclusive (not charged on a
negative subtotal); a negative invoice total is credited to the wallet.
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


def at(month: int, day: int, hour: int = 0) -> datetime:
    return datetime(2030, month, day, hour, tzinfo=UTC)


def _plan(base: str, unit: str) -> list[dict[str, Any]]:
    return [
        {"code": "base", "type": "fixed", "asset": "USD", "amount": base},
        {
            "code": "tokens",
            "type": "usage",
            "meter": "output_tokens",
            "asset": "USD",
            "billing": "in_arrears",
            "model": "per_unit",
            "unit_amount": unit,
        },
    ]


@pytest.fixture
def clock() -> FrozenClock:
    return FrozenClock(at(1, 1))


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


def _totals(invoice: dict[str, Any]) -> tuple[str, str, str]:
    return invoice["subtotal"], invoice["tax"], invoice["total"]


async def test_trial_usage_late_events_upgrade_and_cancel_over_four_months(
    client: httpx.AsyncClient, ctx: AppContext, clock: FrozenClock
) -> None:
    await output_tokens_meter(client)
    await create_customer(client, "u1")
    await product(client, code="pro", name="Pro", prices=_plan("31", "0.01"))
    await product(client, code="max", name="Max", prices=_plan("62", "0.005"))
    await _post(client, "/v1/tax-rates", {"code": "vat", "name": "VAT", "rate_percent": "10"})

    async def run(when: datetime) -> int:
        clock.set(when)
        made = (await run_billing(ctx.sessions, clock)).invoices
        assert (await run_billing(ctx.sessions, clock)).invoices == 0
        return made

    async def use(event_id: str, when: datetime, tokens: int, now: datetime) -> None:
        clock.set(now)
        await ingest(client, event(event_id, when, output_tokens=tokens))

    # January 1: a 10-day trial; the fee covers Jan 11 – Feb 1, 21 of 31 days.
    pro = await _post(
        client, "/v1/subscriptions", {"customer_id": "ext:u1", "product": "pro", "trial_days": 10}
    )
    assert pro["trial_end_at"].startswith("2030-01-11")
    [opening] = await _invoices(client)
    assert (opening["number"], _lines(opening)) == ("ACME-2030-000001", [("fixed", "21.00")])
    assert _totals(opening) == ("21.00", "2.10", "23.10")

    # Usage is charged during the trial too.
    await use("j1", at(1, 5), 1000, at(1, 5, 1))
    await use("j2", at(1, 20), 500, at(1, 20, 1))
    assert await run(at(1, 25)) == 0
    assert await run(at(2, 1, 1)) == 1
    *_, january = await _invoices(client)
    assert january["number"] == "ACME-2030-000002"
    assert _lines(january) == [("usage", "15.00"), ("fixed", "31.00")]
    assert _totals(january) == ("46.00", "4.60", "50.60")

    # February 3: a late event for January 25 (January is finalized).
    await use("late1", at(1, 25), 200, at(2, 3))
    await use("f1", at(2, 8), 700, at(2, 8, 1))
    # February 15, half of February's 28 days: upgrade to max. The old plan's
    # final invoice: its February usage, January's late usage, and half the
    # fee back; the new plan's opening charges half of max's fee.
    clock.set(at(2, 15))
    max_ = await _post(client, f"/v1/subscriptions/{pro['id']}/change", {"product": "max"})
    assert max_["current_period_start"].startswith("2030-02-15")
    assert max_["current_period_end"].startswith("2030-03-01")
    *_, pro_final, max_opening = await _invoices(client)
    assert pro_final["subscription_id"] == pro["id"]
    assert _lines(pro_final) == [
        ("usage", "7.00"),
        ("late_usage", "2.00"),
        ("proration", "-15.50"),
    ]
    assert _totals(pro_final) == ("-6.50", "0.00", "-6.50")
    assert (pro_final["status"], pro_final["amount_due"]) == ("paid", "0.00")
    # The 6.50 the customer is owed is kept as wallet balance.
    wallet = (await client.get("/v1/customers/ext:u1/wallet")).json()
    assert [(b["asset"], b["available"]) for b in wallet["balances"]] == [("USD", "6.50")]
    assert max_opening["subscription_id"] == max_["id"]
    assert _lines(max_opening) == [("fixed", "31.00")]
    assert _totals(max_opening) == ("31.00", "3.10", "34.10")
    assert [pro_final["number"], max_opening["number"]] == [
        "ACME-2030-000003",
        "ACME-2030-000004",
    ]

    # Usage on max at its own price; the old plan's usage is not billed twice.
    await use("f2", at(2, 20), 1000, at(2, 20, 1))
    assert await run(at(3, 1, 1)) == 1
    *_, february = await _invoices(client)
    assert (february["period_start"][:10], february["period_end"][:10]) == (
        "2030-02-15",
        "2030-03-01",
    )
    assert _lines(february) == [("usage", "5.00"), ("fixed", "62.00")]
    assert _totals(february) == ("67.00", "6.70", "73.70")

    # March: usage, and a late event for February 18 on the new plan.
    await use("m1", at(3, 12), 2000, at(3, 12, 1))
    await use("late2", at(2, 18), 400, at(3, 14))
    # Canceled at the end of April: still billed for April in advance.
    assert await run(at(4, 1, 1)) == 1
    *_, march = await _invoices(client)
    assert _lines(march) == [("usage", "10.00"), ("late_usage", "2.00"), ("fixed", "62.00")]
    assert _totals(march) == ("74.00", "7.40", "81.40")
    canceled = await _post(
        client, f"/v1/subscriptions/{max_['id']}/cancel", {"at_period_end": True}
    )
    assert (canceled["status"], canceled["ends_at"][:10]) == ("active", "2030-05-01")

    # May 1: April's invoice closes the subscription, with nothing in advance.
    await use("a1", at(4, 2), 100, at(4, 2, 1))
    assert await run(at(5, 1, 1)) == 1
    *_, april = await _invoices(client)
    assert _lines(april) == [("usage", "0.50")]
    assert _totals(april) == ("0.50", "0.05", "0.55")
    response = await client.get(f"/v1/subscriptions/{max_['id']}")
    assert response.json()["status"] == "canceled"
    assert await run(at(8, 1)) == 0
    numbers = [invoice["number"] for invoice in await _invoices(client)]
    assert numbers == [f"ACME-2030-{n:06d}" for n in range(1, 8)]
    async with ctx.sessions() as session:
        report = await verify(session)
    assert report.ok, report.violation
