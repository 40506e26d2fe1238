"""Tenant isolation: another organization's key gets exactly the 404 a missing
id gets, on every endpoint that takes an id, and nothing changes; lists and
idempotency keys never cross organizations."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from billfold.api.context import AppContext
from billfold.webhooks.delivery import WebhookSender
from tests.conftest import Tenant
from tests.support import assert_problem, count_rows, fetch_row, without_request_id


@dataclass
class Owned:
    """Rows that belong to the first organization."""

    api_key_id: str
    api_key: str
    endpoint_id: str
    delivery_id: str


@pytest.fixture
async def owned(client: httpx.AsyncClient, ctx: AppContext) -> Owned:
    key = (await client.post("/v1/api-keys", json={"name": "mine"})).json()
    endpoint = await client.post(
        "/v1/webhook-endpoints",
        # Nothing listens there; the delivery only has to exist, not succeed.
        json={"url": "http://127.0.0.1:9/hooks", "topics": ["*"], "description": "mine"},
    )
    assert endpoint.status_code == 201, endpoint.text
    endpoint_id = endpoint.json()["id"]
    test = await client.post(f"/v1/webhook-endpoints/{endpoint_id}/test")
    assert test.status_code == 202, test.text
    return Owned(key["id"], key["key"], endpoint_id, test.json()["id"])


@dataclass(frozen=True)
class IdRoute:
    method: str
    path: str  # with `{id}` where the id goes
    code: str  # the not-found code, same for missing and foreign ids
    json: dict[str, Any] | None = None

    def url(self, ident: str) -> str:
        return self.path.format(id=ident)


def _owned_id(route: IdRoute, owned: Owned) -> str:
    if route.path.startswith("/v1/api-keys"):
        return owned.api_key_id
    if route.path.startswith("/v1/webhook-deliveries"):
        return owned.delivery_id
    return owned.endpoint_id


ID_ROUTES = [
    IdRoute("DELETE", "/v1/api-keys/{id}", "api_key_not_found"),
    IdRoute("GET", "/v1/webhook-endpoints/{id}", "webhook_endpoint_not_found"),
    IdRoute(
        "PATCH",
        "/v1/webhook-endpoints/{id}",
        "webhook_endpoint_not_found",
        {"url": "https://attacker.example/steal", "topics": ["*"], "status": "disabled"},
    ),
    IdRoute("DELETE", "/v1/webhook-endpoints/{id}", "webhook_endpoint_not_found"),
    IdRoute("POST", "/v1/webhook-endpoints/{id}/rotate-secret", "webhook_endpoint_not_found"),
    IdRoute("POST", "/v1/webhook-endpoints/{id}/test", "webhook_endpoint_not_found"),
    IdRoute("GET", "/v1/webhook-endpoints/{id}/deliveries", "webhook_endpoint_not_found"),
    IdRoute("POST", "/v1/webhook-deliveries/{id}/retry", "webhook_delivery_not_found"),
]


async def _snapshot(ctx: AppContext, owned: Owned) -> dict[str, Any]:
    """Everything an intruder's request could have changed."""
    return {
        "api_key": await fetch_row(ctx, "api_keys", owned.api_key_id),
        "endpoint": await fetch_row(ctx, "webhook_endpoints", owned.endpoint_id),
        "delivery": await fetch_row(ctx, "webhook_deliveries", owned.delivery_id),
        "deliveries": await count_rows(ctx, "webhook_deliveries"),
        "events": await count_rows(ctx, "webhook_events"),
        "idempotency_keys": await count_rows(ctx, "idempotency_keys"),
    }


class TestForeignIdsAreMissingIds:
    @pytest.mark.parametrize("route", ID_ROUTES, ids=lambda r: f"{r.method} {r.path}")
    async def test_foreign_id_answers_exactly_like_a_missing_one(
        self,
        route: IdRoute,
        owned: Owned,
        intruder: httpx.AsyncClient,
        ctx: AppContext,
    ) -> None:
        before = await _snapshot(ctx, owned)
        foreign = await intruder.request(
            route.method, route.url(_owned_id(route, owned)), json=route.json
        )
        missing = await intruder.request(
            route.method, route.url("zz_does_not_exist"), json=route.json
        )
        foreign_problem = assert_problem(foreign, 404, route.code, field="id")
        missing_problem = assert_problem(missing, 404, route.code, field="id")
        assert without_request_id(foreign_problem) == without_request_id(missing_problem)
        assert foreign.headers.keys() == missing.headers.keys()
        assert await _snapshot(ctx, owned) == before

    @pytest.mark.parametrize("route", ID_ROUTES, ids=lambda r: f"{r.method} {r.path}")
    async def test_the_owner_can_use_the_same_route(
        self, route: IdRoute, owned: Owned, client: httpx.AsyncClient
    ) -> None:
        # Proves the foreign 404 above is isolation, not a broken route.
        response = await client.request(
            route.method, route.url(_owned_id(route, owned)), json=route.json
        )
        assert response.status_code < 300, response.text

    async def test_foreign_key_cannot_be_used_after_failed_revoke(
        self, owned: Owned, intruder: httpx.AsyncClient, anonymous: httpx.AsyncClient
    ) -> None:
        await intruder.delete(f"/v1/api-keys/{owned.api_key_id}")
        still_works = await anonymous.get(
            "/v1/api-keys", headers={"authorization": f"Bearer {owned.api_key}"}
        )
        assert still_works.status_code == 200

    async def test_foreign_retry_leaves_a_finished_delivery_alone(
        self, owned: Owned, intruder: httpx.AsyncClient, ctx: AppContext
    ) -> None:
        # The owner's delivery fails (nothing listens) and waits for its retry.
        sender = WebhookSender(ctx.sessions, ctx.clock)
        try:
            assert await sender.run_once() == 1
        finally:
            await sender.aclose()
        before = await fetch_row(ctx, "webhook_deliveries", owned.delivery_id)
        assert before["attempt_count"] == 1
        response = await intruder.post(f"/v1/webhook-deliveries/{owned.delivery_id}/retry")
        assert_problem(response, 404, "webhook_delivery_not_found", field="id")
        assert await fetch_row(ctx, "webhook_deliveries", owned.delivery_id) == before


class TestListsStayWithinTheOrganization:
    async def test_api_keys(
        self,
        owned: Owned,
        client: httpx.AsyncClient,
        intruder: httpx.AsyncClient,
        tenant: Tenant,
        other_tenant: Tenant,
    ) -> None:
        mine = {k["id"] for k in (await client.get("/v1/api-keys?limit=100")).json()["data"]}
        theirs = {k["id"] for k in (await intruder.get("/v1/api-keys?limit=100")).json()["data"]}
        assert owned.api_key_id in mine
        assert len(mine) == 2
        assert len(theirs) == 1
        assert not mine & theirs

    async def test_webhook_endpoints(
        self, owned: Owned, client: httpx.AsyncClient, intruder: httpx.AsyncClient
    ) -> None:
        mine = (await client.get("/v1/webhook-endpoints")).json()
        assert [e["id"] for e in mine["data"]] == [owned.endpoint_id]
        theirs = (await intruder.get("/v1/webhook-endpoints")).json()
        assert theirs == {"data": [], "has_more": False}

    async def test_deliveries_of_own_endpoint_never_include_foreign_ones(
        self, owned: Owned, client: httpx.AsyncClient, intruder: httpx.AsyncClient
    ) -> None:
        created = await intruder.post("/v1/webhook-endpoints", json={"url": "http://127.0.0.1:9/"})
        their_endpoint = created.json()["id"]
        await intruder.post(f"/v1/webhook-endpoints/{their_endpoint}/test")
        theirs = (await intruder.get(f"/v1/webhook-endpoints/{their_endpoint}/deliveries")).json()
        assert len(theirs["data"]) == 1
        assert owned.delivery_id not in {d["id"] for d in theirs["data"]}
        mine = (await client.get(f"/v1/webhook-endpoints/{owned.endpoint_id}/deliveries")).json()
        assert [d["id"] for d in mine["data"]] == [owned.delivery_id]


class TestIdempotencyKeysAreScopedToTheOrganization:
    async def test_same_key_in_two_orgs_are_two_requests(
        self, client: httpx.AsyncClient, intruder: httpx.AsyncClient, ctx: AppContext
    ) -> None:
        headers = {"Idempotency-Key": "shared-key-1"}
        mine = await client.post("/v1/api-keys", json={"name": "a"}, headers=headers)
        theirs = await intruder.post("/v1/api-keys", json={"name": "b"}, headers=headers)
        assert mine.status_code == theirs.status_code == 201
        assert "idempotent-replayed" not in theirs.headers
        assert theirs.json()["name"] == "b"
        # Same body too: still not a replay of the other organization's answer.
        again = await intruder.post(
            "/v1/api-keys", json={"name": "a"}, headers={"Idempotency-Key": "shared-key-2"}
        )
        stolen = await intruder.post("/v1/api-keys", json={"name": "a"}, headers=headers)
        assert again.status_code == 201
        assert_problem(stolen, 409, "idempotency_key_reused", field="Idempotency-Key")
        assert mine.json()["key"] not in stolen.text
        assert await count_rows(ctx, "api_keys") == 2 + 3
