"""Helpers shared by the catalog, entitlement and simulate tests."""

from __future__ import annotations

from typing import Any

import httpx

GRADUATED: dict[str, Any] = {
    "code": "tokens_out",
    "type": "usage",
    "meter": "output_tokens",
    "asset": "USD",
    "billing": "real_time",
    "model": "graduated",
    "tiers": [
        {"up_to": "1000", "unit_amount": "0.01", "flat_amount": "1"},
        {"up_to": None, "unit_amount": "0.008"},
    ],
}


async def product(client: httpx.AsyncClient, **fields: Any) -> dict[str, Any]:
    response = await client.post("/v1/products", json=fields)
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


async def version(client: httpx.AsyncClient, code: str, **fields: Any) -> dict[str, Any]:
    response = await client.post(f"/v1/products/{code}/versions", json=fields)
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


async def subscribe(client: httpx.AsyncClient, **fields: Any) -> dict[str, Any]:
    response = await client.post("/v1/subscriptions", json=fields)
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


async def output_tokens_meter(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/v1/meters",
        json={
            "code": "output_tokens",
            "event_type": "llm.completion",
            "aggregation": "sum",
            "field": "output_tokens",
        },
    )
    assert response.status_code == 201, response.text
