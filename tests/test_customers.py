"""Customers.

Goal: a customer is created once per external id (asking again returns it,
unchanged, with 200), is found by its `cus_` id or `ext:<external_id>`, never
across organizations, and bad input is a problem with a stable code and field
that writes nothing. Method: HTTP tests on SQLite and PostgreSQL, a race of
concurrent creates, and the `resolve_customer` Python API directly.
"""

from __future__ import annotations

import asyncio
from typing import Any
from urllib.parse import quote

import httpx
import pytest

from billfold import limits
from billfold.api.context import AppContext
from billfold.clock import FrozenClock
from billfold.customers import Customer, resolve_customer
from billfold.errors import NotFound
from tests.conftest import Tenant
from tests.support import assert_problem, count_rows, without_request_id


async def create(client: httpx.AsyncClient, **fields: Any) -> dict[str, Any]:
    response = await client.post("/v1/customers", json=fields)
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


class TestCreateCustomer:
    async def test_created(
        self, client: httpx.AsyncClient, ctx: AppContext, clock: FrozenClock
    ) -> None:
        body = await create(
            client,
            external_id="user_42",
            name="Ada Lovelace",
            email="ada@example.com",
            metadata={"plan": "pro", "region": "eu"},
        )
        assert body["id"].startswith("cus_")
        assert body["external_id"] == "user_42"
        assert body["name"] == "Ada Lovelace"
        assert body["email"] == "ada@example.com"
        assert body["metadata"] == {"plan": "pro", "region": "eu"}
        assert body["created_at"].replace("Z", "+00:00") == clock.now().isoformat()
        assert await count_rows(ctx, "customers") == 1

    async def test_only_external_id_is_required(self, client: httpx.AsyncClient) -> None:
        body = await create(client, external_id="bare")
        assert body["name"] is None
        assert body["email"] is None
        assert body["metadata"] == {}

    async def test_same_external_id_returns_the_existing_one_unchanged(
        self, client: httpx.AsyncClient, ctx: AppContext
    ) -> None:
        first = await create(client, external_id="user_42", name="Ada", metadata={"a": "1"})
        again = await client.post(
            "/v1/customers",
            json={
                "external_id": "user_42",
                "name": "Someone else",
                "email": "else@example.com",
                "metadata": {"b": "2"},
            },
        )
        assert again.status_code == 200, again.text
        assert again.json() == first
        fetched = await client.get(f"/v1/customers/{first['id']}")
        assert fetched.json() == first
        assert await count_rows(ctx, "customers") == 1

    async def test_concurrent_creates_make_one_customer(
        self, client: httpx.AsyncClient, ctx: AppContext
    ) -> None:
        responses = await asyncio.gather(
            *[
                client.post("/v1/customers", json={"external_id": "racer", "name": f"n{i}"})
                for i in range(12)
            ]
        )
        statuses = sorted(response.status_code for response in responses)
        assert statuses == [200] * 11 + [201], [r.text for r in responses]
        assert len({response.json()["id"] for response in responses}) == 1
        assert await count_rows(ctx, "customers") == 1

    async def test_idempotency_key_replays(
        self, client: httpx.AsyncClient, ctx: AppContext
    ) -> None:
        headers = {"Idempotency-Key": "create-user-1"}
        payload = {"external_id": "user_1"}
        first = await client.post("/v1/customers", json=payload, headers=headers)
        replay = await client.post("/v1/customers", json=payload, headers=headers)
        assert first.status_code == replay.status_code == 201
        assert replay.headers.get("idempotent-replayed") == "true"
        assert replay.json() == first.json()
        assert await count_rows(ctx, "customers") == 1

    @pytest.mark.parametrize(
        ("payload", "status", "code", "field"),
        [
            ({}, 422, "validation_error", "external_id"),
            ({"external_id": 42}, 422, "validation_error", "external_id"),
            ({"external_id": None}, 422, "validation_error", "external_id"),
            ({"external_id": ""}, 400, "invalid_external_id", "external_id"),
            ({"external_id": "a/b"}, 400, "invalid_external_id", "external_id"),
            ({"external_id": " padded"}, 400, "invalid_external_id", "external_id"),
            ({"external_id": "tab\there"}, 400, "invalid_external_id", "external_id"),
            ({"external_id": "nul\x00"}, 400, "invalid_external_id", "external_id"),
            (
                {"external_id": "x" * (limits.customer_external_id_length_max + 1)},
                422,
                "validation_error",
                "external_id",
            ),
            ({"external_id": "u", "name": "   "}, 400, "invalid_name", "name"),
            ({"external_id": "u", "name": 7}, 422, "validation_error", "name"),
            ({"external_id": "u", "email": "not-an-email"}, 400, "invalid_email", "email"),
            ({"external_id": "u", "email": "a b@example.com"}, 400, "invalid_email", "email"),
            ({"external_id": "u", "email": "a@localhost"}, 400, "invalid_email", "email"),
            ({"external_id": "u", "metadata": {"k": 1}}, 422, "validation_error", "metadata.k"),
            ({"external_id": "u", "metadata": ["k"]}, 422, "validation_error", "metadata"),
            (
                {"external_id": "u", "metadata": {"k" * 41: "v"}},
                400,
                "invalid_metadata",
                "metadata." + "k" * 41,
            ),
            ({"external_id": "u", "metadata": {"": "v"}}, 400, "invalid_metadata", "metadata."),
            (
                {"external_id": "u", "metadata": {"k": "v" * 501}},
                400,
                "invalid_metadata",
                "metadata.k",
            ),
            (
                {"external_id": "u", "metadata": {f"k{i}": "v" for i in range(51)}},
                400,
                "invalid_metadata",
                "metadata",
            ),
            ({"external_id": "u", "balance": "5"}, 422, "validation_error", "balance"),
        ],
    )
    async def test_bad_input_writes_nothing(
        self,
        client: httpx.AsyncClient,
        ctx: AppContext,
        payload: dict[str, Any],
        status: int,
        code: str,
        field: str,
    ) -> None:
        response = await client.post("/v1/customers", json=payload)
        assert_problem(response, status, code, field=field)
        assert await count_rows(ctx, "customers") == 0

    async def test_bad_input_is_checked_even_when_the_customer_exists(
        self, client: httpx.AsyncClient
    ) -> None:
        await create(client, external_id="user_42")
        response = await client.post(
            "/v1/customers", json={"external_id": "user_42", "email": "nope"}
        )
        assert_problem(response, 400, "invalid_email", field="email")


class TestGetCustomer:
    @pytest.mark.parametrize(
        "external_id", ["user_42", "ada@example.com", "org:7|team:3", "Zoë #1 ?x=y&z", "ext:nested"]
    )
    async def test_by_id_and_by_external_id(
        self, client: httpx.AsyncClient, external_id: str
    ) -> None:
        made = await create(client, external_id=external_id)
        by_id = await client.get(f"/v1/customers/{made['id']}")
        assert by_id.status_code == 200, by_id.text
        assert by_id.json() == made
        by_ext = await client.get("/v1/customers/" + quote(f"ext:{external_id}", safe=""))
        assert by_ext.status_code == 200, by_ext.text
        assert by_ext.json() == made

    @pytest.mark.parametrize(
        "ref",
        ["cus_00000000000000000000000000", "ext:nobody", "ext:", "nobody", "user_42", "cus_"],
    )
    async def test_unknown_is_404(self, client: httpx.AsyncClient, ref: str) -> None:
        await create(client, external_id="user_42")
        response = await client.get("/v1/customers/" + quote(ref, safe=""))
        assert_problem(response, 404, "customer_not_found", field="id")


class TestListCustomers:
    async def test_newest_first_in_pages(self, client: httpx.AsyncClient) -> None:
        made = [await create(client, external_id=f"user_{i}") for i in range(5)]
        first = (await client.get("/v1/customers", params={"limit": 3})).json()
        assert [c["id"] for c in first["data"]] == [c["id"] for c in made[::-1][:3]]
        assert first["has_more"]
        rest = (
            await client.get(
                "/v1/customers", params={"limit": 3, "starting_after": first["data"][-1]["id"]}
            )
        ).json()
        assert [c["id"] for c in rest["data"]] == [c["id"] for c in made[::-1][3:]]
        assert not rest["has_more"]

    async def test_bad_limit(self, client: httpx.AsyncClient) -> None:
        response = await client.get("/v1/customers", params={"limit": 0})
        assert_problem(response, 422, "validation_error", field="limit")


class TestResolveCustomer:
    async def test_python_api(
        self, client: httpx.AsyncClient, ctx: AppContext, tenant: Tenant, other_tenant: Tenant
    ) -> None:
        made = await create(client, external_id="user_42")
        async with ctx.sessions() as session:
            by_id = await resolve_customer(session, tenant.organization_id, made["id"])
            by_ext = await resolve_customer(session, tenant.organization_id, "ext:user_42")
            assert isinstance(by_id, Customer)
            assert by_id.id == by_ext.id == made["id"]
            for organization_id, ref in [
                (other_tenant.organization_id, made["id"]),
                (other_tenant.organization_id, "ext:user_42"),
                (tenant.organization_id, "user_42"),
            ]:
                with pytest.raises(NotFound) as raised:
                    await resolve_customer(
                        session, organization_id, ref, field="authorization.customer_id"
                    )
                assert raised.value.code == "customer_not_found"
                assert raised.value.field == "authorization.customer_id"


class TestTenantIsolation:
    async def test_another_organizations_customers_are_invisible(
        self, client: httpx.AsyncClient, intruder: httpx.AsyncClient, ctx: AppContext
    ) -> None:
        made = await create(client, external_id="user_42", name="Ada")
        missing = await intruder.get("/v1/customers/cus_00000000000000000000000000")
        for ref in (made["id"], "ext:user_42"):
            foreign = await intruder.get("/v1/customers/" + quote(ref, safe=""))
            assert_problem(foreign, 404, "customer_not_found", field="id")
            assert without_request_id(foreign.json()) == without_request_id(missing.json())
        assert (await intruder.get("/v1/customers")).json() == {"data": [], "has_more": False}

        # The same external id is free in the other organization: a new customer.
        theirs = await create(intruder, external_id="user_42", name="Someone else")
        assert theirs["id"] != made["id"]
        assert (await client.get(f"/v1/customers/{made['id']}")).json()["name"] == "Ada"
        assert await count_rows(ctx, "customers") == 2
