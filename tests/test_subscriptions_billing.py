"""Subscription periods and fixed-fee proration through the API.

Goal: intervals, calendar anchoring, trials and upgrades charge exactly the
share of the fixed fee they cover; numbers stay gap-free when many drafts are
finalized at once. Method: a FrozenClock, hand-computed amounts (USD is
stored at 9 decimals, totals round to 2), both backends.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from billfold.api.context import AppContext
from billfold.clock import FrozenClock
from billfold.invoicing.service import run_billing
from billfold.subscriptions.periods import nominal_period, period_containing
from tests.catalog_support import product
from tests.metering_support import create_customer

START = datetime(2030, 1, 1, tzinfo=UTC)


@pytest.fixture
def clock() -> FrozenClock:
    return FrozenClock(START)


def _fixed(amount: str, **extra: Any) -> list[dict[str, Any]]:
    return [{"code": "base", "type": "fixed", "asset": "USD", "amount": amount, **extra}]


async def _post(client: httpx.AsyncClient, path: str, body: Any = None) -> dict[str, Any]:
    response = await client.post(path, json=body)
    assert response.status_code in (200, 201), response.text
    result: dict[str, Any] = response.json()
    return result


async def _invoices(client: httpx.AsyncClient, customer: str = "ext:u1") -> list[dict[str, Any]]:
    response = await client.get("/v1/invoices", params={"customer_id": customer, "limit": 100})
    assert response.status_code == 200, response.text
    return [
        (await client.get(f"/v1/invoices/{item['id']}")).json()
        for item in reversed(response.json()["data"])
    ]


async def test_calendar_anchor_prorates_the_first_period(
    client: httpx.AsyncClient, clock: FrozenClock
) -> None:
    clock.set(datetime(2030, 1, 15, tzinfo=UTC))
    await create_customer(client, "u1")
    await product(client, code="pro", name="Pro", prices=_fixed("30"))
    sub = await _post(
        client,
        "/v1/subscriptions",
        {"customer_id": "ext:u1", "product": "pro", "anchor": "calendar"},
    )
    assert sub["current_period_end"].startswith("2030-02-01")
    [opening] = await _invoices(client)
    # 17 of January's 31 days: 30 × 17 / 31 = 16.451612903…
    assert opening["lines"][0]["amount"] == "16.451612903"
    assert (opening["total_exact"], opening["total"], opening["rounding"]) == (
        "16.451612903",
        "16.45",
        "-0.001612903",
    )


async def test_trial_days_are_free_and_quarterly_price_sets_the_interval(
    client: httpx.AsyncClient, clock: FrozenClock
) -> None:
    await create_customer(client, "u1")
    await product(client, code="pro", name="Pro", prices=_fixed("90", interval="quarter"))
    sub = await _post(
        client, "/v1/subscriptions", {"customer_id": "ext:u1", "product": "pro", "trial_days": 9}
    )
    assert (sub["interval"], sub["interval_count"]) == ("month", 3)
    assert sub["current_period_end"].startswith("2030-04-01")
    [opening] = await _invoices(client)
    # Jan 1 – Apr 1 is 90 days; the trial takes 9: 90 × 81 / 90 = 81.
    assert opening["lines"][0]["amount"] == "81.00"


async def test_mismatched_intervals_are_refused(
    client: httpx.AsyncClient, clock: FrozenClock
) -> None:
    await create_customer(client, "u1")
    await product(client, code="pro", name="Pro", prices=_fixed("30"))
    response = await client.post(
        "/v1/subscriptions", json={"customer_id": "ext:u1", "product": "pro", "interval": "week"}
    )
    assert response.status_code == 400
    assert (response.json()["code"], response.json()["field"]) == ("interval_mismatch", "interval")
    response = await client.get("/v1/invoices")
    assert response.json()["data"] == []


async def test_upgrade_mid_period_credits_old_and_charges_new(
    client: httpx.AsyncClient, clock: FrozenClock
) -> None:
    await create_customer(client, "u1")
    await product(client, code="pro", name="Pro", prices=_fixed("31"))
    await product(client, code="max", name="Max", prices=_fixed("62"))
    old = await _post(client, "/v1/subscriptions", {"customer_id": "ext:u1", "product": "pro"})
    clock.set(datetime(2030, 1, 17, tzinfo=UTC))
    new = await _post(client, f"/v1/subscriptions/{old['id']}/change", {"product": "max"})
    assert new["previous_subscription_id"] == old["id"]
    assert new["current_period_end"].startswith("2030-02-01")
    opening, final, upgraded = await _invoices(client)
    assert opening["total"] == "31.00"
    # 15 of 31 days unused on the old plan, and charged on the new one.
    assert [(line["kind"], line["amount"]) for line in final["lines"]] == [("proration", "-15.00")]
    assert upgraded["lines"][0]["amount"] == "30.00"
    assert upgraded["subscription_id"] == new["id"]
    old_now = (await client.get(f"/v1/subscriptions/{old['id']}")).json()
    assert old_now["status"] == "canceled"


async def test_cancel_at_period_end_bills_no_next_period(
    client: httpx.AsyncClient, ctx: AppContext, clock: FrozenClock
) -> None:
    await create_customer(client, "u1")
    await product(client, code="pro", name="Pro", prices=_fixed("10"))
    sub = await _post(
        client,
        "/v1/subscriptions",
        {"customer_id": "ext:u1", "product": "pro", "interval": "year"},
    )
    scheduled = await _post(
        client, f"/v1/subscriptions/{sub['id']}/cancel", {"at_period_end": True}
    )
    assert scheduled["status"] == "active"
    assert scheduled["ends_at"].startswith("2031-01-01")
    clock.set(datetime(2031, 1, 2, tzinfo=UTC))
    await run_billing(ctx.sessions, clock)
    # A period with nothing to bill (no usage prices, no next period) makes no invoice.
    [opening] = await _invoices(client)
    assert opening["lines"][0]["amount"] == "120.00"
    final = (await client.get(f"/v1/subscriptions/{sub['id']}")).json()
    assert final["status"] == "canceled"


async def test_concurrent_finalization_numbers_have_no_gaps(
    client: httpx.AsyncClient, clock: FrozenClock
) -> None:
    response = await client.patch("/v1/invoice-settings", json={"grace_period_s": 3600})
    assert response.status_code == 200
    await product(client, code="pro", name="Pro", prices=_fixed("5"))
    for n in range(8):
        await create_customer(client, f"c{n}")
        await _post(client, "/v1/subscriptions", {"customer_id": f"ext:c{n}", "product": "pro"})
    drafts = (await client.get("/v1/invoices", params={"limit": 100})).json()["data"]
    assert len(drafts) == 8
    assert all(item["status"] == "draft" for item in drafts)
    results = await asyncio.gather(
        *(client.post(f"/v1/invoices/{item['id']}/finalize") for item in drafts)
    )
    assert all(r.status_code == 200 for r in results), [r.text for r in results]
    numbers = sorted(r.json()["number"] for r in results)
    assert numbers == [f"ACME-2030-{n:06d}" for n in range(1, 9)]


def test_periods_clamp_month_ends_and_calendar_weeks() -> None:
    jan31 = datetime(2030, 1, 31, tzinfo=UTC)
    assert period_containing(jan31, datetime(2030, 3, 1, tzinfo=UTC)) == (
        datetime(2030, 2, 28, tzinfo=UTC),
        datetime(2030, 3, 31, tzinfo=UTC),
    )
    wednesday = datetime(2030, 1, 2, 12, tzinfo=UTC)
    assert period_containing(wednesday, wednesday, interval="week", anchor="calendar") == (
        wednesday,
        datetime(2030, 1, 7, tzinfo=UTC),
    )
    assert nominal_period(
        wednesday, wednesday, interval="week", interval_count=1, anchor="calendar"
    ) == (datetime(2029, 12, 31, tzinfo=UTC), datetime(2030, 1, 7, tzinfo=UTC))
