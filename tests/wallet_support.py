"""A small typed driver for wallet and authorization tests over HTTP."""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any

import httpx

_keys = itertools.count()


def new_key() -> str:
    return f"test-key-{next(_keys)}"


@dataclass
class WalletDriver:
    http: httpx.AsyncClient
    customer_id: str

    @classmethod
    async def create(cls, http: httpx.AsyncClient, external_id: str = "acme") -> WalletDriver:
        response = await http.post("/v1/customers", json={"external_id": external_id})
        assert response.status_code in (200, 201), response.text
        return cls(http, response.json()["id"])

    async def grant(self, amount: str, asset: str = "USD", **fields: Any) -> dict[str, Any]:
        body = {"asset": asset, "amount": amount, "purpose": "paid"} | fields
        response = await self.http.post(f"/v1/customers/{self.customer_id}/grants", json=body)
        assert response.status_code == 201, response.text
        result: dict[str, Any] = response.json()
        return result

    async def adjust(
        self, amount: str, reason: str = "external_topup", asset: str = "USD"
    ) -> httpx.Response:
        return await self.http.post(
            f"/v1/customers/{self.customer_id}/adjustments",
            json={"asset": asset, "amount": amount, "reason": reason},
        )

    async def authorize(
        self, amount: str, *, asset: str = "USD", ttl_s: int | None = None, key: str | None = None
    ) -> dict[str, Any]:
        body: dict[str, Any] = {"customer_id": self.customer_id, "asset": asset, "amount": amount}
        if ttl_s is not None:
            body["ttl_s"] = ttl_s
        response = await self.http.post(
            "/v1/authorizations", json=body, headers={"Idempotency-Key": key or new_key()}
        )
        assert response.status_code == 200, response.text
        result: dict[str, Any] = response.json()
        return result

    async def capture(self, authorization_id: str, amount: str | None = None) -> httpx.Response:
        body = {} if amount is None else {"amount": amount}
        return await self.http.post(
            f"/v1/authorizations/{authorization_id}/capture",
            json=body,
            headers={"Idempotency-Key": new_key()},
        )

    async def release(self, authorization_id: str) -> httpx.Response:
        return await self.http.post(
            f"/v1/authorizations/{authorization_id}/release", headers={"Idempotency-Key": new_key()}
        )

    async def balance(self, asset: str = "USD") -> dict[str, Any]:
        response = await self.http.get(f"/v1/customers/{self.customer_id}/wallet")
        assert response.status_code == 200, response.text
        for balance in response.json()["balances"]:
            if balance["asset"] == asset:
                found: dict[str, Any] = balance
                return found
        raise AssertionError(f"no {asset} balance")

    async def grant_view(self, grant_id: str, asset: str = "USD") -> dict[str, Any]:
        for grant in (await self.balance(asset))["grants"]:
            if grant["id"] == grant_id:
                found: dict[str, Any] = grant
                return found
        raise AssertionError(f"grant {grant_id} is not live")
