"""The billing run bills subscriptions in groups exactly as it bills them one by one.

Goal: the group path (one transaction per group, usage and invoices read
ahead in a few queries, numbers and rows written at the group's end) makes
the same invoices, lines, numbers and wallet payments as billing each
subscription alone; a catch-up over many periods and a late event go through
it too, and the ledger stays balanced. Method: two organizations with the
same customers a day apart; the first is billed with groups of one, the
second with groups of 100; their invoices are compared field by field, on
both backends.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from billfold import limits
from billfold.api.context import AppContext
from billfold.clock import FrozenClock
from billfold.invoicing.service import run_billing
from billfold.ledger.verify import verify
from tests.catalog_support import output_tokens_meter, product
from tests.metering_support import event, ingest

CREATED = datetime(2029, 12, 1, tzinfo=UTC)
START = datetime(2030, 1, 1, tzinfo=UTC)
CUSTOMERS = 6

TOKENS: dict[str, Any] = {
    "code": "tokens",
    "type": "usage",
    "meter": "output_tokens",
    "asset": "USD",
    "billing": "in_arrears",
    "model": "graduated",
    "tiers": [
        {"up_to": "1000", "unit_amount": "0.01"},
        {"up_to": None, "unit_amount": "0.008"},
    ],
}


@pytest.fixture
def clock() -> FrozenClock:
    return FrozenClock(CREATED)


async def _post(client: httpx.AsyncClient, path: str, body: Any = None) -> dict[str, Any]:
    response = await client.post(path, json=body)
    assert response.status_code in (200, 201), response.text
    result: dict[str, Any] = response.json()
    return result


async def _populate(client: httpx.AsyncClient, clock: FrozenClock, shift: timedelta) -> None:
    """Customers c0..c5 subscribed from START + shift (in the future when made)."""
    clock.set(CREATED)
    await output_tokens_meter(client)
    await product(
        client,
        code="pro",
        name="Pro",
        prices=[{"code": "base", "type": "fixed", "asset": "USD", "amount": "30"}, TOKENS],
    )
    await product(client, code="metered", name="Metered", prices=[TOKENS])
    response = await client.patch("/v1/invoice-settings", json={"pay_from_wallet": True})
    assert response.status_code == 200, response.text
    for n in range(CUSTOMERS):
        await _post(client, "/v1/customers", {"external_id": f"c{n}"})
    await _post(
        client,
        "/v1/tax-rates",
        {"code": "vat", "name": "VAT", "rate_percent": "20", "customer_id": "ext:c1"},
    )
    await _post(
        client,
        "/v1/coupons",
        {
            "code": "half",
            "name": "Half",
            "percent_off": "50",
            "duration": "repeating",
            "duration_periods": 2,
        },
    )
    await _post(client, "/v1/customers/ext:c2/coupons", {"coupon": "half"})
    await _post(
        client,
        "/v1/customers/ext:c3/adjustments",
        {"asset": "USD", "amount": "45", "reason": "external_topup"},
    )
    start = (START + shift).isoformat()
    for n in range(CUSTOMERS - 1):
        await _post(
            client,
            "/v1/subscriptions",
            {"customer_id": f"ext:c{n}", "product": "pro", "start_at": start},
        )
    # Weekly: five boundaries fall due in the first run, a catch-up.
    await _post(
        client,
        "/v1/subscriptions",
        {"customer_id": "ext:c5", "product": "metered", "start_at": start, "interval": "week"},
    )


async def _use(client: httpx.AsyncClient, clock: FrozenClock, shift: timedelta, tag: str) -> None:
    clock.set(START + shift + timedelta(days=30))
    await ingest(
        client,
        *[
            event(
                f"{tag}{n}-{k}",
                START + shift + timedelta(days=3 + 5 * k, hours=n),
                customer=f"c{n}",
                output_tokens=300 * (n + 1) + 17 * k,
            )
            for n in range(CUSTOMERS)
            for k in range(4)
        ],
    )


async def _late(client: httpx.AsyncClient, clock: FrozenClock, shift: timedelta) -> None:
    clock.set(START + shift + timedelta(days=40))
    await ingest(
        client,
        event("late", START + shift + timedelta(days=20), customer="c4", output_tokens=500),
    )


async def _summary(client: httpx.AsyncClient) -> list[list[tuple[Any, ...]]]:
    out = []
    for n in range(CUSTOMERS):
        response = await client.get(
            "/v1/invoices", params={"customer_id": f"ext:c{n}", "limit": 100}
        )
        assert response.status_code == 200, response.text
        invoices = []
        for item in reversed(response.json()["data"]):
            full = (await client.get(f"/v1/invoices/{item['id']}")).json()
            invoices.append(
                (
                    full["kind"],
                    full["status"],
                    full["number"] is not None,
                    full["subtotal"],
                    full["discount"],
                    full["tax"],
                    full["total"],
                    full["paid"],
                    full["amount_due"],
                    [(line["kind"], line["quantity"], line["amount"]) for line in full["lines"]],
                )
            )
        out.append(invoices)
    return out


async def test_groups_bill_exactly_like_one_subscription_at_a_time(
    client: httpx.AsyncClient,
    ctx: AppContext,
    clock: FrozenClock,
    app: FastAPI,
    other_tenant: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(
        transport=transport, base_url="http://billfold.test", headers=other_tenant.headers
    ) as other:
        day = timedelta(days=1)
        await _populate(client, clock, timedelta(0))
        await _populate(other, clock, day)
        await _use(client, clock, timedelta(0), "a")
        await _use(other, clock, day, "b")

        async def bill(at: datetime, group_size: int) -> None:
            monkeypatch.setattr(limits, "billing_run_group_size", group_size)
            clock.set(at)
            report = await run_billing(ctx.sessions, clock)
            assert report.failed == 0

        first = datetime(2030, 2, 1, 0, 0, 1, tzinfo=UTC)
        await bill(first, 1)
        await bill(first + day, 100)
        await _late(client, clock, timedelta(0))
        await _late(other, clock, day)
        second = datetime(2030, 3, 1, 0, 0, 1, tzinfo=UTC)
        await bill(second, 1)
        await bill(second + day, 100)

        alone, grouped = await _summary(client), await _summary(other)
        assert grouped == alone
        # Numbers are gap-free in both (the order among subscriptions due at the
        # same instant follows their ids, which differ between the two).
        for http in (client, other):
            response = await http.get("/v1/invoices", params={"limit": 100})
            numbers = sorted(
                int(item["number"].rsplit("-", 1)[1])
                for item in response.json()["data"]
                if item["number"] is not None
            )
            assert numbers == list(range(1, len(numbers) + 1))
    # The comparison means something: every kind of line and payment is there.
    kinds = {line[0] for invoices in alone for invoice in invoices for line in invoice[-1]}
    assert {"fixed", "usage", "late_usage"} <= kinds
    assert len(alone[5]) >= 8
    assert any(invoice[4] != "0.00" for invoice in alone[2])
    assert any(invoice[5] != "0.00" for invoice in alone[1])
    assert any(invoice[7] != "0.00" for invoice in alone[3])
    async with ctx.sessions() as session:
        report = await verify(session)
    assert report.ok, report.violation
