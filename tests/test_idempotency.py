"""The `Idempotency-Key` store has Stripe's semantics: a retry replays the
first answer, a different request under the same key is refused, a request
in flight blocks its twin, validation failures are not stored, keys live 24 h
and are then pruned, and a key whose holder died can be taken over."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from fastapi import APIRouter, FastAPI

from billfold import limits
from billfold.api.boundary import BoundaryRoute
from billfold.api.context import AppContext
from billfold.api.deps import CurrentClock, CurrentPrincipal, Session
from billfold.api.schemas import RequestSchema
from billfold.clock import FrozenClock
from billfold.idempotency import service as idempotency
from billfold.organizations import service as organizations
from billfold.worker import Worker
from tests.conftest import Tenant
from tests.support import assert_problem, count_rows

KEY = {"Idempotency-Key": "order-42"}
GATE_TIMEOUT_S = 5.0


class SlowBody(RequestSchema):
    name: str


@dataclass
class Gate:
    """Holds the test-only slow route inside its handler until released."""

    entered: asyncio.Event = field(default_factory=asyncio.Event)
    release: asyncio.Event = field(default_factory=asyncio.Event)
    calls: int = 0


@pytest.fixture
def gate(app: FastAPI) -> Gate:
    gate = Gate()
    router = APIRouter(route_class=BoundaryRoute)

    @router.post("/v1/_test/slow", status_code=201)
    async def slow(
        body: SlowBody, session: Session, principal: CurrentPrincipal, clock: CurrentClock
    ) -> dict[str, Any]:
        gate.calls += 1
        gate.entered.set()
        await gate.release.wait()
        # A real write, so a second run would show up as a second row.
        issued = await organizations.issue_key(session, clock, principal.organization_id, body.name)
        return {"id": issued.api_key.id, "name": body.name}

    app.include_router(router)
    return gate


class TestSequentialReplay:
    async def test_retry_replays_status_and_body_and_adds_nothing(
        self, client: httpx.AsyncClient, ctx: AppContext
    ) -> None:
        body = {"url": "https://example.com/replay", "topics": ["*"]}
        first = await client.post("/v1/webhook-endpoints", json=body, headers=KEY)
        assert first.status_code == 201
        assert "idempotent-replayed" not in first.headers
        rows = await count_rows(ctx, "webhook_endpoints")

        second = await client.post("/v1/webhook-endpoints", json=body, headers=KEY)
        assert second.status_code == 201
        assert second.headers["idempotent-replayed"] == "true"
        assert second.content == first.content
        assert second.headers["content-type"] == first.headers["content-type"]
        assert second.headers["x-request-id"] != first.headers["x-request-id"]
        assert await count_rows(ctx, "webhook_endpoints") == rows

    async def test_an_issued_api_key_is_replayed_without_its_secret(
        self, client: httpx.AsyncClient, ctx: AppContext
    ) -> None:
        first = await client.post("/v1/api-keys", json={"name": "ci"}, headers=KEY)
        assert first.status_code == 201
        secret = first.json()["key"]
        assert secret.startswith("bf_sk_")
        rows = await count_rows(ctx, "api_keys")

        second = await client.post("/v1/api-keys", json={"name": "ci"}, headers=KEY)
        assert second.status_code == 201
        assert second.headers["idempotent-replayed"] == "true"
        assert second.json() == first.json() | {"key": None}
        assert await count_rows(ctx, "api_keys") == rows
        async with ctx.sessions() as session:
            stored = await session.scalar(sa.text("SELECT response_body FROM idempotency_keys"))
        assert secret.encode() not in bytes(stored)

    async def test_json_formatting_and_key_order_do_not_matter(
        self, client: httpx.AsyncClient, ctx: AppContext
    ) -> None:
        body = {"url": "https://example.com/h", "topics": ["*"], "description": "d"}
        first = await client.post("/v1/webhook-endpoints", json=body, headers=KEY)
        reordered = json.dumps(dict(reversed(body.items())), indent=2).encode()
        second = await client.post(
            "/v1/webhook-endpoints",
            content=reordered,
            headers=KEY | {"content-type": "application/json"},
        )
        assert second.headers.get("idempotent-replayed") == "true"
        assert second.json() == first.json()
        assert await count_rows(ctx, "webhook_endpoints") == 1

    async def test_without_a_key_every_post_runs(
        self, client: httpx.AsyncClient, ctx: AppContext
    ) -> None:
        for _ in range(2):
            assert (await client.post("/v1/api-keys", json={"name": "x"})).status_code == 201
        assert await count_rows(ctx, "api_keys") == 3


class TestDifferentRequestSameKey:
    async def test_different_body_is_409_reused(
        self, client: httpx.AsyncClient, ctx: AppContext
    ) -> None:
        await client.post("/v1/api-keys", json={"name": "one"}, headers=KEY)
        response = await client.post("/v1/api-keys", json={"name": "two"}, headers=KEY)
        assert_problem(response, 409, "idempotency_key_reused", field="Idempotency-Key")
        assert await count_rows(ctx, "api_keys") == 2

    async def test_different_path_is_409_reused(self, client: httpx.AsyncClient) -> None:
        await client.post("/v1/api-keys", json={}, headers=KEY)
        response = await client.post(
            "/v1/webhook-endpoints", json={"url": "https://example.com"}, headers=KEY
        )
        assert_problem(response, 409, "idempotency_key_reused", field="Idempotency-Key")


class TestConcurrentRequests:
    async def test_twin_in_flight_gets_409_in_use_and_only_one_runs(
        self, gate: Gate, client: httpx.AsyncClient, ctx: AppContext
    ) -> None:
        keys_before = await count_rows(ctx, "api_keys")
        first = asyncio.create_task(client.post("/v1/_test/slow", json={"name": "a"}, headers=KEY))
        await asyncio.wait_for(gate.entered.wait(), GATE_TIMEOUT_S)

        twin = await client.post("/v1/_test/slow", json={"name": "a"}, headers=KEY)
        assert_problem(twin, 409, "idempotency_key_in_use", field="Idempotency-Key")
        assert twin.headers["retry-after"].isdigit()
        other = await client.post("/v1/_test/slow", json={"name": "b"}, headers=KEY)
        assert_problem(other, 409, "idempotency_key_reused", field="Idempotency-Key")

        gate.release.set()
        done = await asyncio.wait_for(first, GATE_TIMEOUT_S)
        assert done.status_code == 201, done.text
        assert gate.calls == 1

        after = await client.post("/v1/_test/slow", json={"name": "a"}, headers=KEY)
        assert after.headers["idempotent-replayed"] == "true"
        assert after.content == done.content
        assert gate.calls == 1
        assert await count_rows(ctx, "api_keys") == keys_before + 1

    async def test_different_keys_run_side_by_side(
        self, gate: Gate, client: httpx.AsyncClient
    ) -> None:
        first = asyncio.create_task(
            client.post("/v1/_test/slow", json={"name": "a"}, headers={"Idempotency-Key": "k1"})
        )
        await asyncio.wait_for(gate.entered.wait(), GATE_TIMEOUT_S)
        second = asyncio.create_task(
            client.post("/v1/_test/slow", json={"name": "a"}, headers={"Idempotency-Key": "k2"})
        )
        gate.release.set()
        responses = await asyncio.wait_for(asyncio.gather(first, second), GATE_TIMEOUT_S)
        assert [r.status_code for r in responses] == [201, 201]
        assert gate.calls == 2


class TestWhatIsStored:
    async def test_validation_failure_is_not_stored(
        self, client: httpx.AsyncClient, ctx: AppContext
    ) -> None:
        bad = await client.post("/v1/api-keys", json={"name": 5}, headers=KEY)
        assert_problem(bad, 422, "validation_error", field="name")
        assert await count_rows(ctx, "idempotency_keys") == 0
        fixed = await client.post("/v1/api-keys", json={"name": "five"}, headers=KEY)
        assert fixed.status_code == 201, fixed.text
        assert "idempotent-replayed" not in fixed.headers

    async def test_malformed_json_is_not_stored(
        self, client: httpx.AsyncClient, ctx: AppContext
    ) -> None:
        bad = await client.post(
            "/v1/api-keys",
            content=b'{"name": "x",',
            headers=KEY | {"content-type": "application/json"},
        )
        assert_problem(bad, 400, "malformed_json")
        fixed = await client.post("/v1/api-keys", json={"name": "x"}, headers=KEY)
        assert fixed.status_code == 201, fixed.text

    async def test_business_error_is_stored_and_replayed(
        self, client: httpx.AsyncClient, ctx: AppContext
    ) -> None:
        body = {"url": "ftp://example.com/hooks"}
        first = await client.post("/v1/webhook-endpoints", json=body, headers=KEY)
        assert_problem(first, 400, "invalid_url", field="url")
        again = await client.post("/v1/webhook-endpoints", json=body, headers=KEY)
        assert again.status_code == 400
        assert again.headers["idempotent-replayed"] == "true"
        assert again.content == first.content
        corrected = await client.post(
            "/v1/webhook-endpoints", json={"url": "https://example.com/hooks"}, headers=KEY
        )
        assert_problem(corrected, 409, "idempotency_key_reused")
        assert await count_rows(ctx, "webhook_endpoints") == 0

    async def test_not_found_is_stored_and_replayed(self, client: httpx.AsyncClient) -> None:
        first = await client.post("/v1/webhook-endpoints/we_missing/test", headers=KEY)
        assert_problem(first, 404, "webhook_endpoint_not_found")
        again = await client.post("/v1/webhook-endpoints/we_missing/test", headers=KEY)
        assert again.headers["idempotent-replayed"] == "true"
        assert again.content == first.content

    async def test_unauthenticated_request_stores_nothing(
        self, anonymous: httpx.AsyncClient, ctx: AppContext
    ) -> None:
        response = await anonymous.post("/v1/api-keys", json={}, headers=KEY)
        assert_problem(response, 401, "missing_api_key")
        assert await count_rows(ctx, "idempotency_keys") == 0


class TestRetention:
    async def test_kept_24_hours_then_pruned(
        self, client: httpx.AsyncClient, ctx: AppContext, clock: FrozenClock
    ) -> None:
        first = await client.post("/v1/api-keys", json={"name": "a"}, headers=KEY)
        assert first.status_code == 201
        retention = timedelta(seconds=limits.idempotency_key_retention_s)

        clock.advance(retention - timedelta(seconds=1))
        async with ctx.sessions() as session:
            assert await idempotency.prune(session, ctx.clock) == 0
            await session.commit()
        replay = await client.post("/v1/api-keys", json={"name": "a"}, headers=KEY)
        assert replay.headers["idempotent-replayed"] == "true"

        clock.advance(timedelta(seconds=2))
        async with ctx.sessions() as session:
            assert await idempotency.prune(session, ctx.clock) == 1
            await session.commit()
        assert await count_rows(ctx, "idempotency_keys") == 0
        fresh = await client.post("/v1/api-keys", json={"name": "b"}, headers=KEY)
        assert fresh.status_code == 201
        assert "idempotent-replayed" not in fresh.headers

    async def test_prune_keeps_other_keys(
        self, client: httpx.AsyncClient, ctx: AppContext, clock: FrozenClock
    ) -> None:
        await client.post("/v1/api-keys", json={}, headers={"Idempotency-Key": "old"})
        clock.advance(timedelta(hours=23))
        await client.post("/v1/api-keys", json={}, headers={"Idempotency-Key": "young"})
        clock.advance(timedelta(hours=2))
        async with ctx.sessions() as session:
            assert await idempotency.prune(session, ctx.clock) == 1
            await session.commit()
        young = await client.post("/v1/api-keys", json={}, headers={"Idempotency-Key": "young"})
        assert young.headers["idempotent-replayed"] == "true"

    async def test_worker_housekeeping_prunes(
        self, client: httpx.AsyncClient, ctx: AppContext, clock: FrozenClock
    ) -> None:
        await client.post("/v1/api-keys", json={}, headers=KEY)
        clock.advance(timedelta(seconds=limits.idempotency_key_retention_s + 1))
        worker = Worker(ctx)
        try:
            await worker.housekeeping()
        finally:
            await worker.sender.aclose()
        assert await count_rows(ctx, "idempotency_keys") == 0


class TestDeadHolder:
    async def test_expired_lease_is_taken_over(
        self, client: httpx.AsyncClient, ctx: AppContext, clock: FrozenClock, tenant: Tenant
    ) -> None:
        body = {"name": "after-crash"}
        # A process claimed the key for this very request, then died before
        # answering: the row stays in flight with a lease nobody will release.
        async with ctx.sessions() as session:
            claimed = await idempotency.claim(
                session,
                ctx.clock,
                tenant.organization_id,
                key=KEY["Idempotency-Key"],
                method="POST",
                path="/v1/api-keys",
                request_fingerprint=idempotency.fingerprint(
                    "POST", "/v1/api-keys", json.dumps(body).encode()
                ),
            )
            assert claimed is None
            await session.commit()

        blocked = await client.post("/v1/api-keys", json=body, headers=KEY)
        assert_problem(blocked, 409, "idempotency_key_in_use")

        clock.advance(timedelta(seconds=limits.idempotency_in_flight_lease_s - 1))
        still_blocked = await client.post("/v1/api-keys", json=body, headers=KEY)
        assert_problem(still_blocked, 409, "idempotency_key_in_use")

        clock.advance(timedelta(seconds=1))
        taken_over = await client.post("/v1/api-keys", json=body, headers=KEY)
        assert taken_over.status_code == 201, taken_over.text
        assert "idempotent-replayed" not in taken_over.headers
        replay = await client.post("/v1/api-keys", json=body, headers=KEY)
        assert replay.headers["idempotent-replayed"] == "true"
        assert replay.json() == taken_over.json() | {"key": None}

    async def test_a_different_request_cannot_take_over(
        self, client: httpx.AsyncClient, ctx: AppContext, clock: FrozenClock, tenant: Tenant
    ) -> None:
        async with ctx.sessions() as session:
            await idempotency.claim(
                session,
                ctx.clock,
                tenant.organization_id,
                key=KEY["Idempotency-Key"],
                method="POST",
                path="/v1/api-keys",
                request_fingerprint=idempotency.fingerprint("POST", "/v1/api-keys", b"{}"),
            )
            await session.commit()
        clock.advance(timedelta(seconds=limits.idempotency_in_flight_lease_s + 1))
        response = await client.post("/v1/api-keys", json={"name": "other"}, headers=KEY)
        assert_problem(response, 409, "idempotency_key_reused")
