"""Subscriptions billed over months through the API and the billing run.

Goal: a customer's life — opening invoice, usage billed in arrears with its
tier breakdown, coupon expiry, taxes, a credit note, a cancel mid-period with
the unused fee credited — gives correct, numbered invoices, and running the
billing run twice makes nothing twice. Method: a FrozenClock moved by hand,
every amount computed by hand, on both backends.
"""

from __future__ import annotations

import io
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from pypdf import PdfReader

from billfold.api.context import AppContext
from billfold.clock import FrozenClock
from billfold.invoicing.service import run_billing
from tests.catalog_support import output_tokens_meter, product
from tests.metering_support import create_customer, event, ingest

START = datetime(2030, 1, 1, tzinfo=UTC)

PRICES: list[dict[str, Any]] = [
    {"code": "base", "type": "fixed", "asset": "USD", "amount": "30"},
    {
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
    },
]


@pytest.fixture
def clock() -> FrozenClock:
    return FrozenClock(START)


async def _invoices(client: httpx.AsyncClient) -> list[dict[str, Any]]:
    response = await client.get("/v1/invoices", params={"customer_id": "ext:u1", "limit": 100})
    assert response.status_code == 200, response.text
    out = []
    for summary in reversed(response.json()["data"]):
        full = await client.get(f"/v1/invoices/{summary['id']}")
        assert full.status_code == 200, full.text
        out.append(full.json())
    return out


async def _post(client: httpx.AsyncClient, path: str, body: Any = None) -> dict[str, Any]:
    response = await client.post(path, json=body)
    assert response.status_code in (200, 201), response.text
    result: dict[str, Any] = response.json()
    return result


async def test_a_customers_months(
    client: httpx.AsyncClient, ctx: AppContext, clock: FrozenClock
) -> None:
    await output_tokens_meter(client)
    await create_customer(client, "u1")
    await product(client, code="pro", name="Pro", prices=PRICES)
    await _post(client, "/v1/tax-rates", {"code": "vat", "name": "VAT", "rate_percent": "20"})
    await _post(
        client,
        "/v1/coupons",
        {"code": "welcome", "name": "Welcome", "percent_off": "10", "duration": "once"},
    )
    await _post(client, "/v1/customers/ext:u1/coupons", {"coupon": "welcome"})

    sub = await _post(client, "/v1/subscriptions", {"customer_id": "ext:u1", "product": "pro"})
    assert (sub["interval"], sub["interval_count"]) == ("month", 1)
    assert sub["current_period_end"].startswith("2030-02-01")

    # Opening invoice, made and finalized at once (no grace period): the
    # in-advance fee, 10% off once, 20% VAT on the rest.
    [opening] = await _invoices(client)
    assert opening["status"] == "finalized"
    assert opening["number"] == "ACME-2030-000001"
    assert [(line["kind"], line["amount"]) for line in opening["lines"]] == [("fixed", "30.00")]
    assert (opening["discount"], opening["tax"], opening["total"]) == ("3.00", "5.40", "32.40")
    assert opening["amount_due"] == "32.40"

    clock.set(datetime(2030, 1, 20, tzinfo=UTC))
    await ingest(
        client,
        event("e1", datetime(2030, 1, 5, tzinfo=UTC), output_tokens=900),
        event("e2", datetime(2030, 1, 19, tzinfo=UTC), output_tokens=600),
    )
    clock.set(datetime(2030, 2, 1, 0, 0, 1, tzinfo=UTC))
    report = await run_billing(ctx.sessions, clock)
    assert (report.subscriptions, report.invoices, report.failed) == (1, 1, 0)
    again = await run_billing(ctx.sessions, clock)
    assert (again.subscriptions, again.invoices) == (0, 0)

    opening, january = await _invoices(client)
    assert january["number"] == "ACME-2030-000002"
    assert january["period_start"].startswith("2030-01-01")
    assert january["period_end"].startswith("2030-02-01")
    usage = next(line for line in january["lines"] if line["kind"] == "usage")
    # 1,000 at 0.01 and 500 at 0.008: 10 + 4.
    assert (usage["quantity"], usage["amount"]) == ("1500", "14.00")
    assert [(t["tier"], t["units"], t["amount"]) for t in usage["tiers"] if t["units"] != "0"] == [
        (0, "1000", "10.00"),
        (1, "500", "4.00"),
    ]
    fixed = next(line for line in january["lines"] if line["kind"] == "fixed")
    assert fixed["amount"] == "30.00"
    assert fixed["period_start"].startswith("2030-02-01")
    # The coupon was used up by the opening invoice.
    assert (january["subtotal"], january["discount"]) == ("44.00", "0.00")
    assert (january["tax"], january["total"], january["amount_due"]) == ("8.80", "52.80", "52.80")

    pdf = await client.get(f"/v1/invoices/{january['id']}/pdf")
    assert pdf.status_code == 200
    assert pdf.headers["content-type"] == "application/pdf"
    text = "\n".join(page.extract_text() for page in PdfReader(io.BytesIO(pdf.content)).pages)
    assert "ACME-2030-000002" in text
    assert "tokens" in text
    assert "14.00 USD" in text
    assert "52.80 USD" in text

    # A partial credit note on the usage line: 4.00 + 20% VAT.
    note = await _post(
        client,
        "/v1/credit-notes",
        {
            "invoice_id": january["id"],
            "reason": "product_unsatisfactory",
            "lines": [{"line_id": usage["id"], "amount": "4"}],
        },
    )
    assert (note["subtotal"], note["tax"], note["total"]) == ("4.00", "0.80", "4.80")
    assert note["number"] == "ACME-2030-000002-CN1"
    january = (await client.get(f"/v1/invoices/{january['id']}")).json()
    assert (january["credited"], january["amount_due"]) == ("4.80", "48.00")
    note_pdf = await client.get(f"/v1/credit-notes/{note['id']}/pdf")
    note_text = PdfReader(io.BytesIO(note_pdf.content)).pages[0].extract_text()
    assert "ACME-2030-000002-CN1" in note_text
    assert "4.80 USD" in note_text

    paid = await _post(client, f"/v1/invoices/{january['id']}/mark-paid")
    assert (paid["status"], paid["amount_due"], paid["paid"]) == ("paid", "0.00", "48.00")

    # Cancel half-way through February (14 of 28 days): the final invoice
    # credits the unused half of the fee paid in advance.
    clock.set(datetime(2030, 2, 15, tzinfo=UTC))
    await ingest(client, event("e3", datetime(2030, 2, 10, tzinfo=UTC), output_tokens=100))
    canceled = await _post(client, f"/v1/subscriptions/{sub['id']}/cancel")
    assert canceled["status"] == "canceled"
    *_, final = await _invoices(client)
    assert final["period_end"].startswith("2030-02-15")
    kinds = {line["kind"]: line["amount"] for line in final["lines"]}
    assert kinds == {"usage": "1.00", "proration": "-15.00"}
    assert (final["subtotal"], final["tax"], final["total"]) == ("-14.00", "0.00", "-14.00")
    assert final["amount_due"] == "0.00"
    assert final["number"] == "ACME-2030-000003"
    # What the customer is owed back stays with them as wallet balance.
    wallet = (await client.get("/v1/customers/ext:u1/wallet")).json()
    assert [(b["asset"], b["available"]) for b in wallet["balances"]] == [("USD", "14.00")]
    clock.set(datetime(2030, 6, 1, tzinfo=UTC))
    assert (await run_billing(ctx.sessions, clock)).invoices == 0


async def test_draft_grace_period_takes_late_events(
    client: httpx.AsyncClient, ctx: AppContext, clock: FrozenClock
) -> None:
    await output_tokens_meter(client)
    await create_customer(client, "u1")
    await product(client, code="pro", name="Pro", prices=PRICES[1:])
    response = await client.patch("/v1/invoice-settings", json={"grace_period_s": 86400})
    assert response.status_code == 200, response.text
    await _post(client, "/v1/subscriptions", {"customer_id": "ext:u1", "product": "pro"})
    clock.set(datetime(2030, 1, 31, tzinfo=UTC))
    await ingest(client, event("e1", datetime(2030, 1, 30, tzinfo=UTC), output_tokens=100))
    clock.set(datetime(2030, 2, 1, 1, tzinfo=UTC))
    await run_billing(ctx.sessions, clock)
    [draft] = await _invoices(client)
    assert (draft["status"], draft["number"], draft["total"]) == ("draft", None, "1.00")
    # A late event for January arrives during the grace period and lands.
    await ingest(client, event("e2", datetime(2030, 1, 31, 12, tzinfo=UTC), output_tokens=100))
    clock.set(datetime(2030, 2, 2, 2, tzinfo=UTC))
    report = await run_billing(ctx.sessions, clock)
    assert report.finalized == 1
    [final] = await _invoices(client)
    assert (final["status"], final["number"], final["total"]) == (
        "finalized",
        "ACME-2030-000001",
        "2.00",
    )
    # After finalization a late event goes onto the next invoice as late usage.
    await ingest(client, event("e3", datetime(2030, 1, 31, 13, tzinfo=UTC), output_tokens=50))
    clock.set(datetime(2030, 3, 3, tzinfo=UTC))
    await run_billing(ctx.sessions, clock)
    *_, february = await _invoices(client)
    late = [line for line in february["lines"] if line["kind"] == "late_usage"]
    assert [line["amount"] for line in late] == ["0.50"]
    # Made late, its grace period runs from now; finalize it by hand.
    assert february["status"] == "draft"
    finalized = await _post(client, f"/v1/invoices/{february['id']}/finalize")
    assert (finalized["status"], finalized["number"]) == ("finalized", "ACME-2030-000002")
    voided = await _post(client, f"/v1/invoices/{february['id']}/void")
    assert voided["status"] == "void"
    problem = await client.post(f"/v1/invoices/{february['id']}/void")
    assert problem.status_code == 409
    assert problem.json()["code"] == "invoice_status_invalid"


async def test_other_organizations_invoice_is_not_found(
    client: httpx.AsyncClient, ctx: AppContext, other_tenant: Any, app: Any
) -> None:
    await create_customer(client, "u1")
    await product(client, code="pro", name="Pro", prices=PRICES[:1])
    await _post(client, "/v1/subscriptions", {"customer_id": "ext:u1", "product": "pro"})
    [invoice] = await _invoices(client)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(
        transport=transport, base_url="http://billfold.test", headers=other_tenant.headers
    ) as other:
        for path in (f"/v1/invoices/{invoice['id']}", f"/v1/invoices/{invoice['id']}/pdf"):
            response = await other.get(path)
            assert response.status_code == 404
            assert response.json()["code"] == "invoice_not_found"
