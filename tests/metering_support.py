"""Helpers shared by the metering tests: event builders and typed calls."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import httpx


def iso(instant: datetime) -> str:
    return instant.isoformat().replace("+00:00", "Z")


def event(
    event_id: str,
    at: datetime,
    *,
    customer: str = "u1",
    type: str = "llm.completion",
    **data: Any,
) -> dict[str, Any]:
    """An event for the customer with external id `customer` (or a `cus_`/`ext:`
    reference in `customer_id` when `customer` starts with one)."""
    ref = (
        {"customer_id": customer}
        if customer.startswith(("cus_", "ext:"))
        else {"customer_external_id": customer}
    )
    return {"id": event_id, **ref, "type": type, "timestamp": iso(at), "data": data}


async def ingest(client: httpx.AsyncClient, *events: Any) -> list[dict[str, Any]]:
    """POST the events; the per-event results (200 expected)."""
    response = await client.post("/v1/events", json={"events": list(events)})
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    results: list[dict[str, Any]] = body["results"]
    assert len(results) == len(events)
    return results


async def create_customer(client: httpx.AsyncClient, external_id: str) -> str:
    response = await client.post("/v1/customers", json={"external_id": external_id})
    assert response.status_code in (200, 201), response.text
    customer_id: str = response.json()["id"]
    return customer_id


async def create_meter(client: httpx.AsyncClient, **fields: Any) -> dict[str, Any]:
    response = await client.post("/v1/meters", json=fields)
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


async def usage(client: httpx.AsyncClient, code: str, **params: Any) -> dict[str, Any]:
    query = {("from" if key == "from_" else key): value for key, value in params.items()}
    response = await client.get(f"/v1/meters/{code}/usage", params=query)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body
