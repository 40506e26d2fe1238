"""Event ingest (`POST /v1/events`).

Goal: every event of a batch is answered on its own — `accepted` once,
`duplicate` forever after with the same payload, `rejected` with a stable code
and field otherwise — and one bad event never sinks the batch. Dedup is
decided by the primary key, so concurrent identical batches store each event
exactly once. Method: HTTP tests on SQLite and PostgreSQL with a FrozenClock,
concurrent requests over the ASGI app, two raw sessions racing on PostgreSQL,
statement counting, and the real-time seam observed through a stand-in.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from fastapi import FastAPI

from billfold import limits
from billfold.api.app import create_app
from billfold.api.context import AppContext
from billfold.clock import Clock, FrozenClock
from billfold.config import Settings
from billfold.metering import service
from billfold.metering.realtime import AcceptedEvent
from billfold.organizations.service import Principal
from tests.conftest import Tenant, make_tenant
from tests.metering_support import create_customer, create_meter, event, ingest, iso
from tests.support import assert_problem, count_rows

DAY = timedelta(days=1)


@pytest.fixture
async def customer_id(client: httpx.AsyncClient) -> str:
    return await create_customer(client, "u1")


async def stored_events(ctx: AppContext, organization_id: str) -> dict[str, dict[str, Any]]:
    """Every stored event of the organization, by id, with `data` as raw text."""
    async with ctx.engine.connect() as connection:
        rows = await connection.execute(
            sa.text(
                "SELECT id, customer_id, type, fingerprint, authorization_id, "
                "CAST(data AS TEXT) AS data_text FROM events WHERE organization_id = :o"
            ),
            {"o": organization_id},
        )
        return {row.id: dict(row._mapping) for row in rows}


async def _row(ctx: AppContext, organization_id: str, event_id: str) -> dict[str, Any]:
    async with ctx.engine.connect() as connection:
        result = await connection.execute(
            sa.text("SELECT * FROM events WHERE organization_id = :o AND id = :i"),
            {"o": organization_id, "i": event_id},
        )
        return dict(result.mappings().one())


class TestAccepted:
    async def test_a_batch_is_stored_and_answered_in_order(
        self,
        client: httpx.AsyncClient,
        ctx: AppContext,
        clock: FrozenClock,
        tenant: Tenant,
        customer_id: str,
    ) -> None:
        now = clock.now()
        response = await client.post(
            "/v1/events",
            json={
                "events": [
                    event("e1", now, tokens=5, model="gpt-4o"),
                    event("e2", now - DAY, customer=customer_id, tokens=7),
                    event("e3", now, customer="ext:u1"),
                ]
            },
        )
        assert response.status_code == 200, response.text
        assert response.headers["content-type"] == "application/json"
        assert response.json() == {
            "results": [
                {"id": "e1", "status": "accepted", "fees": []},
                {"id": "e2", "status": "accepted", "fees": []},
                {"id": "e3", "status": "accepted", "fees": []},
            ],
            "summary": {"accepted": 3, "duplicate": 0, "rejected": 0},
        }
        row = await _row(ctx, tenant.organization_id, "e2")
        assert row["customer_id"] == customer_id
        assert row["type"] == "llm.completion"
        assert len(row["fingerprint"]) == 64
        assert row["authorization_id"] is None
        assert row["costs"] is None
        stored = await stored_events(ctx, tenant.organization_id)
        assert set(stored) == {"e1", "e2", "e3"}
        assert {event["customer_id"] for event in stored.values()} == {customer_id}

    async def test_numbers_are_stored_exactly_and_canonically(
        self, client: httpx.AsyncClient, ctx: AppContext, clock: FrozenClock, tenant: Tenant
    ) -> None:
        await create_customer(client, "u1")
        body = (
            '{"events": [{"id": "n1", "customer_external_id": "u1", "type": "t", '
            f'"timestamp": "{iso(clock.now())}", "data": {{"b": 0.10, "a": 1e3, '
            '"big": 123456789012345678901234567890.123456789, "neg": -0.0, "i": 7}}]}'
        )
        response = await client.post(
            "/v1/events", content=body, headers={"content-type": "application/json"}
        )
        assert response.json()["results"] == [{"id": "n1", "status": "accepted", "fees": []}]
        text = (await stored_events(ctx, tenant.organization_id))["n1"]["data_text"]
        data = json.loads(text, parse_float=Decimal)
        assert data == {
            "a": 1000,
            "b": Decimal("0.1"),
            "big": Decimal("123456789012345678901234567890.123456789"),
            "neg": 0,
            "i": 7,
        }
        assert "123456789012345678901234567890.123456789" in text

    async def test_costs_and_authorization_id_are_kept_for_later(
        self, client: httpx.AsyncClient, ctx: AppContext, clock: FrozenClock, tenant: Tenant
    ) -> None:
        customer = await create_customer(client, "u1")
        grant = await client.post(
            f"/v1/customers/{customer}/grants",
            json={"asset": "USD", "amount": "1.00", "purpose": "paid"},
        )
        assert grant.status_code == 201, grant.text
        hold = await client.post(
            "/v1/authorizations", json={"customer_id": customer, "asset": "USD", "amount": "0.50"}
        )
        hold_id = hold.json()["id"]
        payload = event("c1", clock.now()) | {
            "costs": [{"vendor": "openai", "amount": "0.0021", "asset": "USD"}],
            "authorization_id": hold_id,
        }
        assert (await ingest(client, payload))[0]["status"] == "accepted"
        row = await _row(ctx, tenant.organization_id, "c1")
        assert row["authorization_id"] == hold_id
        costs = row["costs"] if isinstance(row["costs"], list) else json.loads(row["costs"])
        assert costs == [{"amount": "0.0021", "asset": "USD", "vendor": "openai"}]

    async def test_an_empty_batch_is_fine(self, client: httpx.AsyncClient) -> None:
        response = await client.post("/v1/events", json={"events": []})
        assert response.json() == {
            "results": [],
            "summary": {"accepted": 0, "duplicate": 0, "rejected": 0},
        }

    async def test_the_same_id_in_two_organizations_is_two_events(
        self,
        client: httpx.AsyncClient,
        intruder: httpx.AsyncClient,
        ctx: AppContext,
        clock: FrozenClock,
    ) -> None:
        await create_customer(client, "u1")
        await create_customer(intruder, "u1")
        payload = event("shared-id", clock.now(), tokens=1)
        assert (await ingest(client, payload))[0]["status"] == "accepted"
        assert (await ingest(intruder, payload))[0]["status"] == "accepted"
        assert await count_rows(ctx, "events") == 2


class TestDuplicates:
    async def test_resending_a_batch_changes_nothing(
        self,
        client: httpx.AsyncClient,
        ctx: AppContext,
        clock: FrozenClock,
        tenant: Tenant,
        customer_id: str,
    ) -> None:
        batch = [event(f"e{i}", clock.now(), tokens=i) for i in range(5)]
        assert {r["status"] for r in await ingest(client, *batch)} == {"accepted"}
        before = await _row(ctx, tenant.organization_id, "e3")
        clock.advance(timedelta(hours=1))
        response = await client.post("/v1/events", json={"events": batch})
        assert response.json() == {
            "results": [{"id": f"e{i}", "status": "duplicate"} for i in range(5)],
            "summary": {"accepted": 0, "duplicate": 5, "rejected": 0},
        }
        assert await _row(ctx, tenant.organization_id, "e3") == before
        assert await count_rows(ctx, "events") == 5

    async def test_the_same_payload_spelt_differently_is_a_duplicate(
        self, client: httpx.AsyncClient, clock: FrozenClock, customer_id: str
    ) -> None:
        at = clock.now() - timedelta(hours=2)
        body = (
            '{"events": [{"id": "e1", "customer_external_id": "u1", "type": "t", '
            f'"timestamp": "{iso(at)}", "data": {{"x": 1.50, "m": {{"a": 1, "b": 2}}}}}}]}}'
        )
        respelt = (
            '{"events": [{"data": {"m": {"b": 2.0, "a": 1}, "x": 1.5}, "type": "t", '
            f'"timestamp": "{(at + timedelta(hours=2)).strftime("%Y-%m-%dT%H:%M:%S")}+02:00", '
            '"customer_external_id": "u1", "id": "e1"}]}'
        )
        headers = {"content-type": "application/json"}
        first = await client.post("/v1/events", content=body, headers=headers)
        again = await client.post("/v1/events", content=respelt, headers=headers)
        assert first.json()["results"] == [{"id": "e1", "status": "accepted", "fees": []}]
        assert again.json()["results"] == [{"id": "e1", "status": "duplicate"}]

    async def test_a_duplicate_is_recognised_after_its_window_closed(
        self, client: httpx.AsyncClient, clock: FrozenClock, customer_id: str
    ) -> None:
        payload = event("old", clock.now() - timedelta(days=30), tokens=1)
        assert (await ingest(client, payload))[0]["status"] == "accepted"
        clock.advance(timedelta(days=10))  # now 40 days after its timestamp
        assert (await ingest(client, payload))[0] == {"id": "old", "status": "duplicate"}
        changed = payload | {"data": {"tokens": 2}}
        result = (await ingest(client, changed))[0]
        assert (result["code"], result["field"]) == ("event_id_conflict", "id")

    async def test_idempotency_key_replays_the_first_answer(
        self, client: httpx.AsyncClient, clock: FrozenClock, ctx: AppContext, customer_id: str
    ) -> None:
        headers = {"Idempotency-Key": "batch-1"}
        body = {"events": [event("e1", clock.now())]}
        first = await client.post("/v1/events", json=body, headers=headers)
        replay = await client.post("/v1/events", json=body, headers=headers)
        assert replay.headers.get("idempotent-replayed") == "true"
        assert replay.json() == first.json()
        assert first.json()["results"][0]["status"] == "accepted"
        assert await count_rows(ctx, "events") == 1


class TestConflicts:
    async def test_same_id_other_payload_is_rejected_and_the_first_stays(
        self,
        client: httpx.AsyncClient,
        ctx: AppContext,
        clock: FrozenClock,
        tenant: Tenant,
        customer_id: str,
    ) -> None:
        original = event("e1", clock.now(), tokens=5)
        await ingest(client, original)
        before = await _row(ctx, tenant.organization_id, "e1")
        variants = [
            original | {"data": {"tokens": 6}},
            original | {"type": "other"},
            original | {"timestamp": iso(clock.now() - timedelta(seconds=1))},
            original | {"authorization_id": "auth_1"},
            original | {"costs": []},
            # Another spelling of the same customer is another payload (documented).
            {k: v for k, v in original.items() if k != "customer_external_id"}
            | {"customer_id": customer_id},
        ]
        results = await ingest(client, *variants)
        for result in results:
            assert result["status"] == "rejected", result
            assert (result["code"], result["field"]) == ("event_id_conflict", "id")
            assert result["detail"]
        assert await _row(ctx, tenant.organization_id, "e1") == before


class TestWithinOneBatch:
    async def test_an_identical_copy_is_a_duplicate_a_different_one_a_conflict(
        self, client: httpx.AsyncClient, ctx: AppContext, clock: FrozenClock, customer_id: str
    ) -> None:
        first = event("e1", clock.now(), tokens=1)
        results = await ingest(
            client, first, first, first | {"data": {"tokens": 2}}, event("e2", clock.now()), first
        )
        assert [(r["id"], r["status"], r.get("code")) for r in results] == [
            ("e1", "accepted", None),
            ("e1", "duplicate", None),
            ("e1", "rejected", "event_id_conflict"),
            ("e2", "accepted", None),
            ("e1", "duplicate", None),
        ]
        assert await count_rows(ctx, "events") == 2

    async def test_copies_of_a_rejected_event_are_rejected_alike(
        self, client: httpx.AsyncClient, ctx: AppContext, clock: FrozenClock, customer_id: str
    ) -> None:
        stranger = event("s1", clock.now(), customer="nobody")
        late = event("l1", clock.now() - timedelta(days=40))
        results = await ingest(client, stranger, late, stranger, late)
        assert [(r["id"], r["code"]) for r in results] == [
            ("s1", "customer_not_found"),
            ("l1", "timestamp_out_of_range"),
            ("s1", "customer_not_found"),
            ("l1", "timestamp_out_of_range"),
        ]
        assert await count_rows(ctx, "events") == 0

    async def test_copies_of_a_stored_event_are_all_duplicates(
        self, client: httpx.AsyncClient, clock: FrozenClock, customer_id: str
    ) -> None:
        payload = event("e1", clock.now())
        await ingest(client, payload)
        results = await ingest(client, payload, payload)
        assert [r["status"] for r in results] == ["duplicate", "duplicate"]

    async def test_a_malformed_first_copy_does_not_shadow_a_good_one(
        self, client: httpx.AsyncClient, clock: FrozenClock, customer_id: str
    ) -> None:
        good = event("e1", clock.now())
        results = await ingest(client, good | {"type": 7}, good)
        assert [r["status"] for r in results] == ["rejected", "accepted"]


class TestMixedBatches:
    async def test_one_bad_event_never_sinks_the_batch(
        self,
        client: httpx.AsyncClient,
        ctx: AppContext,
        clock: FrozenClock,
        tenant: Tenant,
        customer_id: str,
    ) -> None:
        now = clock.now()
        await ingest(client, event("taken", now, tokens=1))
        results = await ingest(
            client,
            event("ok-1", now, tokens=1),
            event("bad-shape", now) | {"timestamp": "yesterday"},
            event("stranger", now, customer="nobody"),
            event("too-old", now - timedelta(days=36)),
            event("too-new", now + timedelta(minutes=6)),
            event("taken", now, tokens=2),
            event("taken", now, tokens=1) | {"data": {"tokens": 1}},
            "not an event",
            event("ok-2", now, tokens=2),
        )
        assert [(r["id"], r["status"], r.get("code"), r.get("field")) for r in results] == [
            ("ok-1", "accepted", None, None),
            ("bad-shape", "rejected", "invalid_data", "timestamp"),
            ("stranger", "rejected", "customer_not_found", "customer_external_id"),
            ("too-old", "rejected", "timestamp_out_of_range", "timestamp"),
            ("too-new", "rejected", "timestamp_out_of_range", "timestamp"),
            ("taken", "rejected", "event_id_conflict", "id"),
            ("taken", "rejected", "event_id_conflict", "id"),
            (None, "rejected", "invalid_data", None),
            ("ok-2", "accepted", None, None),
        ]
        assert set(await stored_events(ctx, tenant.organization_id)) == {"taken", "ok-1", "ok-2"}


class TestTimestamps:
    @pytest.mark.parametrize(
        ("offset", "status"),
        [
            (-timedelta(days=35), "accepted"),
            (-timedelta(days=35, microseconds=1), "rejected"),
            (-timedelta(days=36), "rejected"),
            (timedelta(0), "accepted"),
            (timedelta(minutes=5), "accepted"),
            (timedelta(minutes=5, microseconds=1), "rejected"),
            (timedelta(days=1), "rejected"),
        ],
    )
    async def test_window_edges(
        self,
        client: httpx.AsyncClient,
        clock: FrozenClock,
        customer_id: str,
        offset: timedelta,
        status: str,
    ) -> None:
        result = (await ingest(client, event("e1", clock.now() + offset)))[0]
        assert result["status"] == status, result
        if status == "rejected":
            assert (result["code"], result["field"]) == ("timestamp_out_of_range", "timestamp")

    async def test_the_window_follows_the_server_clock(
        self, client: httpx.AsyncClient, clock: FrozenClock, customer_id: str
    ) -> None:
        ahead = clock.now() + timedelta(minutes=10)
        assert (await ingest(client, event("e1", ahead)))[0]["status"] == "rejected"
        clock.advance(timedelta(minutes=6))
        assert (await ingest(client, event("e1", ahead)))[0]["status"] == "accepted"

    async def test_the_backfill_window_is_a_deployment_setting(
        self, database_url: str, clock: FrozenClock
    ) -> None:
        settings = Settings(
            database_url=database_url,
            log_level="WARNING",
            run_worker_in_server=False,
            event_backfill_window_s=2 * 24 * 3600,
        )
        ctx = AppContext.create(settings, clock=clock)
        try:
            tenant = await make_tenant(ctx)
            transport = httpx.ASGITransport(app=create_app(ctx, run_worker=False))
            async with httpx.AsyncClient(
                transport=transport, base_url="http://billfold.test", headers=tenant.headers
            ) as http:
                await create_customer(http, "u1")
                now = clock.now()
                results = await ingest(
                    http,
                    event("in", now - timedelta(days=2)),
                    event("out", now - timedelta(days=2, seconds=1)),
                )
            assert [r["status"] for r in results] == ["accepted", "rejected"]
            assert "2 days" in results[1]["detail"]
        finally:
            await ctx.engine.dispose()

    def test_the_setting_is_read_and_checked_from_the_environment(
        self, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
    ) -> None:
        monkeypatch.setenv("BILLFOLD_DATABASE_URL", f"sqlite:///{tmp_path / 'x.db'}")
        monkeypatch.delenv("BILLFOLD_EVENT_BACKFILL_WINDOW_S", raising=False)
        assert Settings.from_env().event_backfill_window_s == 35 * 24 * 3600
        monkeypatch.setenv("BILLFOLD_EVENT_BACKFILL_WINDOW_S", "86400")
        assert Settings.from_env().event_backfill_window_s == 86400
        for bad in ("0", "-5", "soon", str(limits.event_backfill_window_max_s + 1)):
            monkeypatch.setenv("BILLFOLD_EVENT_BACKFILL_WINDOW_S", bad)
            with pytest.raises(ValueError, match="BILLFOLD_EVENT_BACKFILL_WINDOW_S"):
                Settings.from_env()


class TestCustomers:
    async def test_unknown_customers_by_each_reference(
        self, client: httpx.AsyncClient, ctx: AppContext, clock: FrozenClock, customer_id: str
    ) -> None:
        now = clock.now()
        results = await ingest(
            client,
            event("a", now, customer="nobody"),
            event("b", now, customer="ext:nobody"),
            event("c", now, customer="cus_01h000000000000000000000000"),
            event("d", now) | {"customer_external_id": "U1"},
        )
        assert [(r["code"], r["field"]) for r in results] == [
            ("customer_not_found", "customer_external_id"),
            ("customer_not_found", "customer_id"),
            ("customer_not_found", "customer_id"),
            ("customer_not_found", "customer_external_id"),
        ]
        assert await count_rows(ctx, "events") == 0

    async def test_another_organizations_customer_is_not_found(
        self,
        client: httpx.AsyncClient,
        intruder: httpx.AsyncClient,
        ctx: AppContext,
        clock: FrozenClock,
    ) -> None:
        theirs = await create_customer(intruder, "their-user")
        now = clock.now()
        results = await ingest(
            client,
            event("a", now, customer=theirs),
            event("b", now, customer="their-user"),
            event("c", now, customer="ext:their-user"),
        )
        assert {(r["status"], r["code"]) for r in results} == {("rejected", "customer_not_found")}
        assert await count_rows(ctx, "events") == 0


def _bad_events(at: str) -> list[tuple[Any, str | None]]:
    base: dict[str, Any] = {
        "id": "e1",
        "customer_external_id": "u1",
        "type": "t",
        "timestamp": at,
        "data": {},
    }

    def without(key: str) -> dict[str, Any]:
        return {k: v for k, v in base.items() if k != key}

    return [
        ("just a string", None),
        (42, None),
        (None, None),
        ([base], None),
        (without("id"), "id"),
        (base | {"id": 17}, "id"),
        (base | {"id": ""}, "id"),
        (base | {"id": "x" * (limits.event_id_length_max + 1)}, "id"),
        (base | {"id": "tab\there"}, "id"),
        (base | {"id": " padded"}, "id"),
        (without("type"), "type"),
        (base | {"type": ["t"]}, "type"),
        (base | {"type": ""}, "type"),
        (base | {"type": "x" * (limits.event_type_length_max + 1)}, "type"),
        (base | {"type": "new\nline"}, "type"),
        (without("timestamp"), "timestamp"),
        (base | {"timestamp": 1735689600}, "timestamp"),
        (base | {"timestamp": "2025-01-01T00:00:00"}, "timestamp"),
        (base | {"timestamp": "2025-02-30T00:00:00Z"}, "timestamp"),
        (base | {"timestamp": "now"}, "timestamp"),
        (base | {"data": [1, 2]}, "data"),
        (base | {"data": "tokens=5"}, "data"),
        (base | {"data": {"s": "nul\x00"}}, "data.s"),
        (base | {"data": {"deep": _nested(limits.event_data_depth_max + 1)}}, None),
        (base | {"data": {"blob": "x" * limits.event_data_bytes_max}}, "data"),
        (base | {"data": {"n": int("9" * (limits.event_number_length_max + 1))}}, "data.n"),
        (base | {"data": {"list": [1, {"k": "\x00"}]}}, "data.list.1.k"),
        (without("customer_external_id"), "customer_id"),
        (base | {"customer_id": "cus_x"}, "customer_id"),
        (base | {"customer_external_id": "a/b"}, "customer_external_id"),
        (base | {"customer_external_id": 5}, "customer_external_id"),
        (base | {"colour": "red"}, "colour"),
        (base | {"costs": {"vendor": "x"}}, "costs"),
        (base | {"costs": ["x"]}, "costs.0"),
        (base | {"costs": [{"n": "\x00"}]}, "costs.0.n"),
        (base | {"authorization_id": 5}, "authorization_id"),
        (base | {"authorization_id": "auth_\x00"}, "authorization_id"),
        (base | {"id": "nul\x00"}, "id"),
        (without("customer_external_id") | {"customer_id": "cus_\x00"}, "customer_id"),
        (without("customer_external_id") | {"customer_id": "ext:u1 "}, "customer_id"),
    ]


def _nested(depth: int) -> Any:
    node: Any = 1
    for _ in range(depth):
        node = {"a": node}
    return node


class TestMalformedEvents:
    async def test_each_is_invalid_data_with_its_field_and_the_rest_go_through(
        self, client: httpx.AsyncClient, ctx: AppContext, clock: FrozenClock, customer_id: str
    ) -> None:
        cases = _bad_events(iso(clock.now()))
        good = event("good", clock.now())
        results = await ingest(client, *[payload for payload, _ in cases], good)
        for (payload, field), result in zip(cases, results, strict=False):
            assert result["status"] == "rejected", (payload, result)
            assert result["code"] == "invalid_data", (payload, result)
            if field is not None or not isinstance(payload, dict):
                assert result["field"] == field, (payload, result)
            else:
                assert str(result["field"]).startswith("data."), result
            assert result["detail"], result
        assert results[-1] == {"id": "good", "status": "accepted", "fees": []}
        assert await count_rows(ctx, "events") == 1

    @pytest.mark.parametrize("constant", ["NaN", "Infinity", "-Infinity"])
    async def test_non_finite_numbers_reject_only_their_event(
        self, client: httpx.AsyncClient, clock: FrozenClock, customer_id: str, constant: str
    ) -> None:
        at = iso(clock.now())
        body = (
            '{"events": ['
            f'{{"id": "bad", "customer_external_id": "u1", "type": "t", "timestamp": "{at}", '
            f'"data": {{"tokens": {constant}}}}}, '
            f'{{"id": "ok", "customer_external_id": "u1", "type": "t", "timestamp": "{at}"}}]}}'
        )
        response = await client.post(
            "/v1/events", content=body, headers={"content-type": "application/json"}
        )
        results = response.json()["results"]
        assert results[0]["code"] == "invalid_data"
        assert results[0]["field"] == "data.tokens"
        assert results[1] == {"id": "ok", "status": "accepted", "fees": []}

    async def test_a_lone_surrogate_is_invalid_data(
        self, client: httpx.AsyncClient, clock: FrozenClock, customer_id: str
    ) -> None:
        at = iso(clock.now())
        body = (
            '{"events": [{"id": "e1", "customer_external_id": "u1", "type": "t", '
            f'"timestamp": "{at}", "data": {{"s": "\\ud800"}}}}]}}'
        )
        response = await client.post(
            "/v1/events", content=body, headers={"content-type": "application/json"}
        )
        assert response.json()["results"][0]["field"] == "data.s"

    @pytest.mark.parametrize("field", ["id", "type", "customer_external_id", "authorization_id"])
    async def test_a_lone_surrogate_in_a_string_field_is_invalid_data(
        self, client: httpx.AsyncClient, ctx: AppContext, clock: FrozenClock, field: str
    ) -> None:
        fields = {
            "id": '"e1"',
            "customer_external_id": '"u1"',
            "type": '"t"',
            "timestamp": f'"{iso(clock.now())}"',
        }
        fields[field] = '"x\\ud800"'
        body = '{"events": [{' + ", ".join(f'"{k}": {v}' for k, v in fields.items()) + "}]}"
        response = await client.post(
            "/v1/events", content=body, headers={"content-type": "application/json"}
        )
        result = response.json()["results"][0]
        assert (result["code"], result["field"]) == ("invalid_data", field)
        assert await count_rows(ctx, "events") == 0


class TestTheBatchAsAWhole:
    async def test_more_than_the_limit_is_refused_whole(
        self, client: httpx.AsyncClient, ctx: AppContext, clock: FrozenClock, customer_id: str
    ) -> None:
        batch = [event(f"e{i}", clock.now()) for i in range(limits.events_per_batch_max + 1)]
        response = await client.post("/v1/events", json={"events": batch})
        assert_problem(response, 422, "batch_too_large", field="events")
        assert await count_rows(ctx, "events") == 0

    @pytest.mark.parametrize(
        ("content", "status", "code", "field"),
        [
            (b"{not json", 400, "malformed_json", None),
            (b'{"events": [' * 5000, 400, "malformed_json", None),
            (b"[1, 2]", 422, "validation_error", "events"),
            (b"{}", 422, "validation_error", "events"),
            (b"", 422, "validation_error", "events"),
            (b'{"events": null}', 422, "validation_error", "events"),
            (b'{"events": {"id": "e1"}}', 422, "validation_error", "events"),
            (b'{"events": [], "dry_run": true}', 422, "validation_error", "dry_run"),
        ],
    )
    async def test_a_malformed_envelope_is_refused_whole(
        self,
        client: httpx.AsyncClient,
        ctx: AppContext,
        content: bytes,
        status: int,
        code: str,
        field: str | None,
    ) -> None:
        response = await client.post(
            "/v1/events", content=content, headers={"content-type": "application/json"}
        )
        assert_problem(response, status, code, field=field)
        assert await count_rows(ctx, "events") == 0

    async def test_needs_an_api_key(self, anonymous: httpx.AsyncClient) -> None:
        response = await anonymous.post("/v1/events", json={"events": []})
        assert_problem(response, 401, "missing_api_key")

    async def test_a_full_batch_takes_a_handful_of_statements(
        self, client: httpx.AsyncClient, ctx: AppContext, clock: FrozenClock, customer_id: str
    ) -> None:
        await create_customer(client, "u2")
        statements: list[str] = []

        def record(*args: Any) -> None:
            statements.append(str(args[2]))

        sa.event.listen(ctx.engine.sync_engine, "before_cursor_execute", record)
        try:
            batch = [
                event(f"e{i}", clock.now(), customer=f"u{1 + i % 2}", tokens=i)
                for i in range(limits.events_per_batch_max)
            ]
            results = await ingest(client, *batch)
            fresh = len(statements)
            again = await ingest(client, *batch)
        finally:
            sa.event.remove(ctx.engine.sync_engine, "before_cursor_execute", record)
        assert {r["status"] for r in results} == {"accepted"}
        assert {r["status"] for r in again} == {"duplicate"}
        # Authentication, customers, meters, one INSERT; and for the resend a
        # lookup of the stored fingerprints on top.
        assert fresh <= 6, statements
        assert len(statements) - fresh <= 7, statements[fresh:]
        assert await count_rows(ctx, "events") == limits.events_per_batch_max


class TestConcurrency:
    async def test_identical_batches_from_two_clients_store_each_event_once(
        self, app: FastAPI, tenant: Tenant, ctx: AppContext, clock: FrozenClock, customer_id: str
    ) -> None:
        batch = [event(f"e{i:03d}", clock.now(), tokens=i) for i in range(200)]
        # A third batch shares half its ids, in the opposite order.
        overlapping = [event(f"e{i:03d}", clock.now(), tokens=i) for i in range(299, 99, -1)]
        clients = [
            httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app),
                base_url="http://billfold.test",
                headers=tenant.headers,
            )
            for _ in range(3)
        ]
        try:
            responses = await asyncio.gather(
                clients[0].post("/v1/events", json={"events": batch}),
                clients[1].post("/v1/events", json={"events": batch}),
                clients[2].post("/v1/events", json={"events": overlapping}),
            )
        finally:
            for http in clients:
                await http.aclose()
        accepted: dict[str, int] = {}
        for response in responses:
            assert response.status_code == 200, response.text
            for result in response.json()["results"]:
                assert result["status"] in ("accepted", "duplicate"), result
                accepted[result["id"]] = accepted.get(result["id"], 0) + (
                    result["status"] == "accepted"
                )
        assert len(accepted) == 300
        assert set(accepted.values()) == {1}, "each event accepted exactly once"
        assert await count_rows(ctx, "events") == 300

    async def test_two_sessions_on_postgresql_the_key_decides(
        self, backend: str, ctx: AppContext, clock: FrozenClock, tenant: Tenant, customer_id: str
    ) -> None:
        if backend != "postgresql":
            pytest.skip("SQLite has one writer: its transactions never overlap")
        principal = Principal(tenant.organization_id, "test")
        raw = [event(f"e{i}", clock.now(), tokens=i) for i in range(50)]
        window = limits.event_backfill_window_default_s
        async with ctx.sessions() as first, ctx.sessions() as second:
            one = await service.ingest(first, clock, principal, raw, backfill_window_s=window)
            racing = asyncio.create_task(
                service.ingest(second, clock, principal, raw, backfill_window_s=window)
            )
            await asyncio.sleep(0.3)
            assert not racing.done(), "the second waits on the first's uncommitted keys"
            await first.commit()
            two = await racing
            await second.commit()
        assert {r.status for r in one.results} == {"accepted"}
        assert {r.status for r in two.results} == {"duplicate"}
        assert two.accepted == []
        assert await count_rows(ctx, "events") == 50

    async def test_two_sessions_on_postgresql_a_rolled_back_first_leaves_them_free(
        self, backend: str, ctx: AppContext, clock: FrozenClock, tenant: Tenant, customer_id: str
    ) -> None:
        if backend != "postgresql":
            pytest.skip("SQLite has one writer: its transactions never overlap")
        principal = Principal(tenant.organization_id, "test")
        raw = [event(f"e{i}", clock.now(), tokens=i) for i in range(50)]
        window = limits.event_backfill_window_default_s
        async with ctx.sessions() as first, ctx.sessions() as second:
            await service.ingest(first, clock, principal, raw, backfill_window_s=window)
            racing = asyncio.create_task(
                service.ingest(second, clock, principal, raw, backfill_window_s=window)
            )
            await asyncio.sleep(0.3)
            assert not racing.done()
            await first.rollback()
            two = await racing
            await second.commit()
        assert {r.status for r in two.results} == {"accepted"}
        assert await count_rows(ctx, "events") == 50


class TestRealTimeSeam:
    @pytest.fixture
    def calls(self, monkeypatch: pytest.MonkeyPatch) -> list[list[AcceptedEvent]]:
        recorded: list[list[AcceptedEvent]] = []

        async def record(
            session: Any, clock: Clock, organization_id: str, events: Sequence[AcceptedEvent]
        ) -> dict[str, dict[str, Any]]:
            assert session.in_transaction()
            recorded.append(list(events))
            return {}

        monkeypatch.setattr(service, "on_events_accepted", record)
        return recorded

    async def test_called_once_per_batch_with_only_the_new_events(
        self,
        client: httpx.AsyncClient,
        clock: FrozenClock,
        customer_id: str,
        calls: list[list[AcceptedEvent]],
    ) -> None:
        now = clock.now()
        await ingest(client, event("e1", now, tokens=1))
        body = (
            '{"events": ['
            f'{{"id": "e2", "customer_external_id": "u1", "type": "t", "timestamp": "{iso(now)}",'
            ' "data": {"cost": 0.1}}, '
            f'{{"id": "e1", "customer_external_id": "u1", "type": "llm.completion", '
            f'"timestamp": "{iso(now)}", "data": {{"tokens": 1}}}}, '
            f'{{"id": "e3", "customer_id": "{customer_id}", "type": "t", '
            f'"timestamp": "{iso(now)}", "data": {{"unknown": true}}}}, '
            f'{{"id": "e4", "customer_external_id": "nobody", "type": "t", '
            f'"timestamp": "{iso(now)}"}}]}}'
        )
        await client.post("/v1/events", content=body, headers={"content-type": "application/json"})
        await ingest(client, event("e1", now, tokens=1))
        assert [[e.id for e in batch] for batch in calls] == [["e1"], ["e2", "e3"], []]
        e2, e3 = calls[1]
        assert e2.data == {"cost": Decimal("0.1")}
        assert isinstance(e2.data["cost"], Decimal)
        assert e2.customer_id == customer_id
        assert e2.received_at == now
        assert e3.data == {"unknown": True}

    async def test_a_failing_seam_leaves_no_event_behind(
        self,
        app: FastAPI,
        tenant: Tenant,
        ctx: AppContext,
        clock: FrozenClock,
        customer_id: str,
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        async def explode(*args: Any) -> None:
            raise RuntimeError("rating bug")

        monkeypatch.setattr(service, "on_events_accepted", explode)
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://billfold.test", headers=tenant.headers
        ) as http:
            response = await http.post("/v1/events", json={"events": [event("e1", clock.now())]})
        assert_problem(response, 500, "internal_error")
        assert await count_rows(ctx, "events") == 0


class TestMetersGuardTheirNumbers:
    async def test_a_non_number_where_a_meter_needs_one_is_invalid_data(
        self, client: httpx.AsyncClient, ctx: AppContext, clock: FrozenClock, customer_id: str
    ) -> None:
        await create_meter(
            client,
            code="tokens",
            event_type="llm.completion",
            aggregation="sum",
            field="usage.tokens",
            filters={"model": ["gpt-4o"]},
        )
        await create_meter(client, code="calls", event_type="llm.completion", aggregation="count")
        now = clock.now()
        results = await ingest(
            client,
            event("word", now, model="gpt-4o", usage={"tokens": "many"}),
            event("bool", now, model="gpt-4o", usage={"tokens": True}),
            event("object", now, model="gpt-4o", usage={"tokens": {"n": 1}}),
            event("number", now, model="gpt-4o", usage={"tokens": 12}),
            event("string-number", now, model="gpt-4o", usage={"tokens": "12.5"}),
            event("absent", now, model="gpt-4o"),
            event("null", now, model="gpt-4o", usage={"tokens": None}),
            event("filtered-out", now, model="other", usage={"tokens": "many"}),
            event("other-type", now, type="search", model="gpt-4o", usage={"tokens": "many"}),
        )
        assert [(r["id"], r.get("code"), r.get("field")) for r in results] == [
            ("word", "invalid_data", "data.usage.tokens"),
            ("bool", "invalid_data", "data.usage.tokens"),
            ("object", "invalid_data", "data.usage.tokens"),
            ("number", None, None),
            ("string-number", None, None),
            ("absent", None, None),
            ("null", None, None),
            ("filtered-out", None, None),
            ("other-type", None, None),
        ]
        assert "tokens" in results[0]["detail"]
        assert await count_rows(ctx, "events") == 6


class TestFingerprint:
    def test_is_the_sha256_of_the_normalised_event(self) -> None:
        raw = event("e1", datetime(2030, 1, 1, tzinfo=UTC), tokens=Decimal("1.50"))
        candidate = service._validate_event(0, raw)
        assert isinstance(candidate, service._Candidate)
        assert candidate.data_json == '{"tokens":1.5}'
        assert len(candidate.fingerprint) == 64
        assert candidate.fingerprint != hashlib.sha256(b"").hexdigest()
        same = service._validate_event(
            0, event("e1", datetime(2030, 1, 1, tzinfo=UTC), tokens=Decimal("1.5"))
        )
        assert isinstance(same, service._Candidate)
        assert same.fingerprint == candidate.fingerprint
