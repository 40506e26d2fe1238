"""Meters and usage (`/v1/meters`, `/v1/meters/{code}/usage`).

Goal: a meter counts, sums, maxes, mins, unique-counts or takes the latest of
one event type's data, filtered and grouped, per UTC hour, day or month, with
exact decimals (0.1 + 0.2 is "0.3"), `from` inclusive and `to` exclusive, the
same answer on SQLite and PostgreSQL, and never a number from another
organization. Method: a fixed set of events on a fixed clock checked against
hand-computed values, table-driven validation, and a Hypothesis property:
the usage of any split of a range adds up to the usage of the whole range.
"""

from __future__ import annotations

import asyncio
import itertools
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from billfold import limits
from billfold.api.app import create_app
from billfold.api.context import AppContext
from billfold.clock import FrozenClock
from billfold.config import Settings
from billfold.errors import LimitExceeded
from billfold.metering import service, values
from billfold.organizations import service as organizations
from tests.metering_support import create_customer, create_meter, event, ingest, iso, usage
from tests.support import assert_problem, count_rows, without_request_id

NOW = datetime(2030, 3, 2, 10, 30, tzinfo=UTC)


def at(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


@pytest.fixture
def clock() -> FrozenClock:
    """A fixed instant, so that buckets fall on known calendar days (a month
    boundary, Feb 28 → Mar 1, lies inside the backfill window)."""
    return FrozenClock(NOW)


# Ingested before any meter exists, so the non-numbers stay in the data.
EVENTS: list[tuple[str, str, dict[str, Any]]] = [
    ("a", "2030-02-27T23:59:59.999999Z", {"tokens": 0.1, "model": "gpt-4o", "region": "eu"}),
    ("b", "2030-02-28T00:00:00Z", {"tokens": 0.2, "model": "gpt-4o", "region": "us"}),
    ("c", "2030-03-01T00:00:00Z", {"tokens": 5, "model": "mini", "region": "eu"}),
    ("d", "2030-03-01T09:15:00Z", {"tokens": "2.5", "model": "mini"}),
    ("e", "2030-03-02T10:00:00Z", {"tokens": "lots", "model": "gpt-4o", "region": "eu"}),
    ("f", "2030-03-02T10:29:59Z", {"model": "gpt-4o", "region": "eu"}),
]
RANGE = {"from_": "2030-02-27T00:00:00Z", "to": "2030-03-03T00:00:00Z"}
METERS: list[dict[str, Any]] = [
    {"code": "calls", "event_type": "llm", "aggregation": "count"},
    {
        "code": "tokens",
        "event_type": "llm",
        "aggregation": "sum",
        "field": "tokens",
        "group_by": ["model", "region"],
    },
    {"code": "peak", "event_type": "llm", "aggregation": "max", "field": "tokens"},
    {"code": "low", "event_type": "llm", "aggregation": "min", "field": "tokens"},
    {"code": "models", "event_type": "llm", "aggregation": "unique_count", "field": "model"},
    {
        "code": "regions",
        "event_type": "llm",
        "aggregation": "unique_count",
        "field": "region",
        "group_by": ["model"],
    },
    {
        "code": "last",
        "event_type": "llm",
        "aggregation": "latest",
        "field": "tokens",
        "group_by": ["model"],
    },
    {
        "code": "gpt_tokens",
        "event_type": "llm",
        "aggregation": "sum",
        "field": "tokens",
        "filters": {"model": ["gpt-4o"]},
    },
]


@pytest.fixture
async def world(
    client: httpx.AsyncClient, intruder: httpx.AsyncClient, clock: FrozenClock
) -> dict[str, str]:
    """The events above for customer u1; noise around them; every meter."""
    u1 = await create_customer(client, "u1")
    u2 = await create_customer(client, "u2")
    await create_customer(intruder, "u1")
    results = await ingest(
        client,
        *[
            event(ident, at(when), customer="u1", type="llm", **data)
            for ident, when, data in EVENTS
        ],
        event("u2-g", at("2030-03-01T12:00:00Z"), customer="u2", type="llm", tokens=100),
        event("search", at("2030-03-01T12:00:00Z"), customer="u1", type="search", tokens=1000),
    )
    assert {r["status"] for r in results} == {"accepted"}, results
    theirs = await ingest(
        intruder,
        event("x", at("2030-03-01T12:00:00Z"), customer="u1", type="llm", tokens=7777, model="m"),
    )
    assert theirs[0]["status"] == "accepted"
    for meter in METERS:
        await create_meter(client, **meter)
    await create_meter(intruder, **METERS[1])
    return {"u1": u1, "u2": u2}


def values_of(body: dict[str, Any]) -> list[str | None]:
    return [row["value"] for row in body["data"]]


class TestAggregations:
    @pytest.mark.parametrize(
        ("code", "expected"),
        [
            ("calls", "6"),
            ("tokens", "7.8"),
            ("peak", "5"),
            ("low", "0.1"),
            ("models", "2"),
            ("last", "2.5"),
            ("gpt_tokens", "0.3"),
        ],
    )
    async def test_over_the_whole_range(
        self, client: httpx.AsyncClient, world: dict[str, str], code: str, expected: str
    ) -> None:
        body = await usage(client, code, customer_id=world["u1"], **RANGE)
        assert body["data"] == [
            {
                "start": "2030-02-27T00:00:00Z",
                "end": "2030-03-03T00:00:00Z",
                "group": {},
                "value": expected,
            }
        ]
        assert body["meter"] == code
        assert body["customer_id"] == world["u1"]
        assert (body["from"], body["to"]) == (RANGE["from_"], RANGE["to"])
        assert body["granularity"] is None
        assert body["group_by"] == []

    @pytest.mark.parametrize(
        ("code", "expected"),
        [
            ("calls", ["1", "1", "2", "2"]),
            ("tokens", ["0.1", "0.2", "7.5", "0"]),
            ("peak", ["0.1", "0.2", "5", None]),
            ("low", ["0.1", "0.2", "2.5", None]),
            ("models", ["1", "1", "1", "1"]),
            ("last", ["0.1", "0.2", "2.5", None]),
            ("gpt_tokens", ["0.1", "0.2", "0", "0"]),
        ],
    )
    async def test_per_day(
        self,
        client: httpx.AsyncClient,
        world: dict[str, str],
        code: str,
        expected: list[str | None],
    ) -> None:
        body = await usage(client, code, customer_id="ext:u1", granularity="day", **RANGE)
        assert [row["start"] for row in body["data"]] == [
            "2030-02-27T00:00:00Z",
            "2030-02-28T00:00:00Z",
            "2030-03-01T00:00:00Z",
            "2030-03-02T00:00:00Z",
        ]
        assert [row["end"] for row in body["data"]][-1] == "2030-03-03T00:00:00Z"
        assert values_of(body) == expected
        assert body["granularity"] == "day"

    async def test_per_hour_lists_every_hour(
        self, client: httpx.AsyncClient, world: dict[str, str]
    ) -> None:
        body = await usage(
            client,
            "calls",
            customer_id=world["u1"],
            granularity="hour",
            from_="2030-03-01T00:00:00Z",
            to="2030-03-01T10:00:00Z",
        )
        assert len(body["data"]) == 10
        assert body["data"][9] == {
            "start": "2030-03-01T09:00:00Z",
            "end": "2030-03-01T10:00:00Z",
            "group": {},
            "value": "1",
        }
        assert values_of(body) == ["1"] + ["0"] * 8 + ["1"]

    async def test_per_month_clips_the_first_and_last_bucket(
        self, client: httpx.AsyncClient, world: dict[str, str]
    ) -> None:
        body = await usage(
            client,
            "tokens",
            customer_id=world["u1"],
            granularity="month",
            from_="2030-02-15T06:00:00Z",
            to=iso(NOW),
        )
        assert body["data"] == [
            {
                "start": "2030-02-15T06:00:00Z",
                "end": "2030-03-01T00:00:00Z",
                "group": {},
                "value": "0.3",
            },
            {
                "start": "2030-03-01T00:00:00Z",
                "end": "2030-03-02T10:30:00Z",
                "group": {},
                "value": "7.5",
            },
        ]

    async def test_group_by_one_and_two_keys(
        self, client: httpx.AsyncClient, world: dict[str, str]
    ) -> None:
        one = await usage(client, "tokens", customer_id=world["u1"], group_by="model", **RANGE)
        assert [(row["group"], row["value"]) for row in one["data"]] == [
            ({"model": "gpt-4o"}, "0.3"),
            ({"model": "mini"}, "7.5"),
        ]
        assert one["group_by"] == ["model"]
        two = await usage(
            client, "tokens", customer_id=world["u1"], group_by=["model", "region"], **RANGE
        )
        assert [(row["group"], row["value"]) for row in two["data"]] == [
            ({"model": "gpt-4o", "region": "eu"}, "0.1"),
            ({"model": "gpt-4o", "region": "us"}, "0.2"),
            ({"model": "mini", "region": None}, "2.5"),
            ({"model": "mini", "region": "eu"}, "5"),
        ]
        comma = await usage(
            client, "tokens", customer_id=world["u1"], group_by="model,region", **RANGE
        )
        assert comma["data"] == two["data"]

    async def test_group_by_with_granularity_lists_only_groups_with_events(
        self, client: httpx.AsyncClient, world: dict[str, str]
    ) -> None:
        body = await usage(
            client,
            "tokens",
            customer_id=world["u1"],
            group_by="model",
            granularity="day",
            **RANGE,
        )
        assert [
            (row["start"][:10], row["group"]["model"], row["value"]) for row in body["data"]
        ] == [
            ("2030-02-27", "gpt-4o", "0.1"),
            ("2030-02-28", "gpt-4o", "0.2"),
            ("2030-03-01", "mini", "7.5"),
            ("2030-03-02", "gpt-4o", "0"),
        ]

    @pytest.mark.parametrize(
        ("code", "expected"),
        [
            ("last", [("gpt-4o", "0.2"), ("mini", "2.5")]),
            ("tokens", [("gpt-4o", "0.3"), ("mini", "7.5")]),
            ("regions", [("gpt-4o", "2"), ("mini", "1")]),
        ],
    )
    async def test_each_aggregation_grouped(
        self,
        client: httpx.AsyncClient,
        world: dict[str, str],
        code: str,
        expected: list[tuple[str, str]],
    ) -> None:
        body = await usage(client, code, customer_id=world["u1"], group_by="model", **RANGE)
        assert [(row["group"]["model"], row["value"]) for row in body["data"]] == expected

    async def test_all_customers_when_none_is_named(
        self, client: httpx.AsyncClient, world: dict[str, str]
    ) -> None:
        body = await usage(client, "tokens", **RANGE)
        assert values_of(body) == ["107.8"]
        assert body["customer_id"] is None

    async def test_defaults_cover_every_event_accepted_so_far(
        self, client: httpx.AsyncClient, world: dict[str, str]
    ) -> None:
        body = await usage(client, "tokens", customer_id=world["u1"])
        assert values_of(body) == ["7.8"]
        assert body["to"] == iso(NOW + timedelta(minutes=5))
        assert body["from"] == iso(NOW + timedelta(minutes=5) - timedelta(days=35))


class TestRangeBoundaries:
    @pytest.mark.parametrize(
        ("start", "end", "expected"),
        [
            ("2030-02-28T00:00:00Z", "2030-03-01T00:00:00Z", "1"),  # b only: c is at `to`
            ("2030-02-27T23:59:59.999999Z", "2030-02-28T00:00:00Z", "1"),  # a only
            ("2030-02-27T23:59:59.999999Z", "2030-02-28T00:00:00.000001Z", "2"),
            ("2030-02-28T00:00:00.000001Z", "2030-03-01T00:00:00Z", "0"),
            ("2030-03-01T00:00:00Z", "2030-03-01T00:00:00.000001Z", "1"),  # c only
            ("2030-03-01T02:00:00+02:00", "2030-03-01T01:00:00Z", "1"),  # offsets count
        ],
    )
    async def test_from_is_inclusive_to_exclusive(
        self,
        client: httpx.AsyncClient,
        world: dict[str, str],
        start: str,
        end: str,
        expected: str,
    ) -> None:
        body = await usage(client, "calls", customer_id=world["u1"], from_=start, to=end)
        assert values_of(body) == [expected]


class TestExactness:
    async def test_decimals_add_exactly(
        self, client: httpx.AsyncClient, clock: FrozenClock
    ) -> None:
        customer = await create_customer(client, "u1")
        await create_meter(client, code="v", event_type="t", aggregation="sum", field="v")
        await create_meter(client, code="hi", event_type="t", aggregation="max", field="v")
        await create_meter(client, code="lo", event_type="t", aggregation="min", field="v")
        now = clock.now()
        body = (
            '{"events": ['
            + ",".join(
                f'{{"id": "e{i}", "customer_id": "{customer}", "type": "t", '
                f'"timestamp": "{iso(now)}", "data": {{"v": {v}}}}}'
                for i, v in enumerate(
                    [
                        "0.1",
                        "0.2",
                        "12345678901234567890.123456789",
                        "0.000000001",
                        "-3",
                        "1e-9",
                        '"0.000000000000000000000000000001"',
                    ]
                )
            )
            + "]}"
        )
        response = await client.post(
            "/v1/events", content=body, headers={"content-type": "application/json"}
        )
        assert response.json()["summary"]["accepted"] == 7
        total = await usage(client, "v", customer_id=customer)
        assert values_of(total) == ["12345678901234567887.423456791000000000000000000001"]
        assert values_of(await usage(client, "hi", customer_id=customer)) == [
            "12345678901234567890.123456789"
        ]
        assert values_of(await usage(client, "lo", customer_id=customer)) == ["-3"]

    async def test_one_tenth_ten_times_is_one(
        self, client: httpx.AsyncClient, clock: FrozenClock
    ) -> None:
        await create_customer(client, "u1")
        await create_meter(client, code="v", event_type="t", aggregation="sum", field="v")
        await ingest(client, *[event(f"e{i}", clock.now(), type="t", v=0.1) for i in range(10)])
        assert values_of(await usage(client, "v", customer_id="ext:u1")) == ["1"]

    async def test_latest_breaks_ties_by_arrival_then_id(
        self, client: httpx.AsyncClient, clock: FrozenClock
    ) -> None:
        await create_customer(client, "u1")
        await create_meter(client, code="gauge", event_type="t", aggregation="latest", field="g")
        when = clock.now() - timedelta(hours=1)
        await ingest(client, event("m", when, type="t", g=1), event("z", when, type="t", g=2))
        assert values_of(await usage(client, "gauge", customer_id="ext:u1")) == ["2"]
        clock.advance(timedelta(seconds=1))
        await ingest(client, event("a", when, type="t", g=3))
        assert values_of(await usage(client, "gauge", customer_id="ext:u1")) == ["3"]
        await ingest(client, event("b", when + timedelta(microseconds=1), type="t", g=-4))
        assert values_of(await usage(client, "gauge", customer_id="ext:u1")) == ["-4"]

    async def test_unique_count_compares_values_as_text(
        self, client: httpx.AsyncClient, clock: FrozenClock
    ) -> None:
        await create_customer(client, "u1")
        await create_meter(client, code="u", event_type="t", aggregation="unique_count", field="k")
        now = clock.now()
        await ingest(
            client,
            *[
                event(f"e{i}", now, type="t", k=k)
                for i, k in enumerate([1, "1", 1.0, "a", "a", True, "true", None, "b"])
            ],
            event("absent", now, type="t"),
        )
        # 1 / "1" / 1.0, "a", true / "true", "b"; null and absent count for nothing.
        assert values_of(await usage(client, "u", customer_id="ext:u1")) == ["4"]

    async def test_filters_on_nested_keys_and_numbers(
        self, client: httpx.AsyncClient, clock: FrozenClock
    ) -> None:
        await create_customer(client, "u1")
        await create_meter(
            client,
            code="n",
            event_type="t",
            aggregation="count",
            filters={"meta.tier": ["1", "gold"], "meta.flag": ["true"]},
        )
        now = clock.now()
        await ingest(
            client,
            event("a", now, type="t", meta={"tier": 1, "flag": True}),
            event("b", now, type="t", meta={"tier": "gold", "flag": "true"}),
            event("c", now, type="t", meta={"tier": "silver", "flag": True}),
            event("d", now, type="t", meta={"tier": 1}),
            event("e", now, type="t", meta={"tier": 1.5, "flag": True}),
        )
        assert values_of(await usage(client, "n", customer_id="ext:u1")) == ["2"]


class TestIsolation:
    async def test_another_organizations_events_never_count(
        self, client: httpx.AsyncClient, intruder: httpx.AsyncClient, world: dict[str, str]
    ) -> None:
        mine = await usage(client, "tokens", **RANGE)
        theirs = await usage(intruder, "tokens", **RANGE)
        assert values_of(mine) == ["107.8"]
        assert values_of(theirs) == ["7777"]

    async def test_another_organizations_meter_is_a_missing_meter(
        self, client: httpx.AsyncClient, intruder: httpx.AsyncClient, world: dict[str, str]
    ) -> None:
        for path in ("/v1/meters/peak", "/v1/meters/peak/usage"):
            foreign = await intruder.get(path)
            missing = await intruder.get(path.replace("peak", "nope"))
            body = assert_problem(foreign, 404, "meter_not_found", field="code")
            assert without_request_id(body) == without_request_id(
                assert_problem(missing, 404, "meter_not_found", field="code")
            )
        for strange in ("a%00b", "x" * 65, "%F0%9F%98%80"):
            assert_problem(await intruder.get(f"/v1/meters/{strange}"), 404, "meter_not_found")
        listed = (await intruder.get("/v1/meters")).json()
        assert [m["code"] for m in listed["data"]] == ["tokens"]

    async def test_another_organizations_customer_is_not_found(
        self, client: httpx.AsyncClient, intruder: httpx.AsyncClient, world: dict[str, str]
    ) -> None:
        response = await intruder.get(
            "/v1/meters/tokens/usage", params={"customer_id": world["u1"]}
        )
        assert_problem(response, 404, "customer_not_found", field="customer_id")


class TestMeterDefinitions:
    async def test_created_read_and_listed(
        self, client: httpx.AsyncClient, ctx: AppContext
    ) -> None:
        made = await create_meter(
            client,
            code="output_tokens",
            name="Output tokens",
            event_type="llm.completion",
            aggregation="sum",
            field="usage.output",
            filters={"model": ["gpt-4o", "gpt-4o"]},
            group_by=["model"],
        )
        assert made["id"].startswith("mtr_")
        assert made | {"id": None} == {
            "id": None,
            "code": "output_tokens",
            "name": "Output tokens",
            "event_type": "llm.completion",
            "aggregation": "sum",
            "field": "usage.output",
            "filters": {"model": ["gpt-4o"]},
            "group_by": ["model"],
            "created_at": iso(NOW),
        }
        assert (await client.get("/v1/meters/output_tokens")).json() == made
        count = await create_meter(client, code="calls", event_type="e", aggregation="count")
        assert (count["field"], count["filters"], count["group_by"]) == (None, {}, [])
        listed = (await client.get("/v1/meters")).json()
        assert [m["code"] for m in listed["data"]] == ["calls", "output_tokens"]
        assert listed["has_more"] is False
        assert await count_rows(ctx, "meters") == 2

    async def test_list_pages_newest_first(self, client: httpx.AsyncClient) -> None:
        for i in range(5):
            await create_meter(client, code=f"m{i}", event_type="e", aggregation="count")
        seen: list[str] = []
        cursor = None
        while True:
            params: dict[str, Any] = {"limit": 2}
            if cursor:
                params["starting_after"] = cursor
            page = (await client.get("/v1/meters", params=params)).json()
            seen += [m["code"] for m in page["data"]]
            if not page["has_more"]:
                break
            cursor = page["data"][-1]["id"]
        assert seen == ["m4", "m3", "m2", "m1", "m0"]

    async def test_a_code_is_taken_once(self, client: httpx.AsyncClient, ctx: AppContext) -> None:
        await create_meter(client, code="calls", event_type="e", aggregation="count")
        again = await client.post(
            "/v1/meters", json={"code": "calls", "event_type": "f", "aggregation": "count"}
        )
        assert_problem(again, 409, "meter_code_taken", field="code")
        assert await count_rows(ctx, "meters") == 1

    async def test_the_same_code_in_two_organizations(
        self, client: httpx.AsyncClient, intruder: httpx.AsyncClient
    ) -> None:
        await create_meter(client, code="calls", event_type="e", aggregation="count")
        await create_meter(intruder, code="calls", event_type="e", aggregation="count")

    @pytest.mark.parametrize(
        ("changes", "status", "code", "field"),
        [
            ({"code": ""}, 400, "invalid_meter_code", "code"),
            ({"code": "has space"}, 400, "invalid_meter_code", "code"),
            ({"code": "_x"}, 400, "invalid_meter_code", "code"),
            ({"code": "a/b"}, 400, "invalid_meter_code", "code"),
            ({"code": "x" * 65}, 422, "validation_error", "code"),
            ({"name": "  "}, 400, "invalid_name", "name"),
            ({"event_type": ""}, 400, "invalid_event_type", "event_type"),
            ({"event_type": " padded"}, 400, "invalid_event_type", "event_type"),
            ({"aggregation": "avg"}, 400, "invalid_aggregation", "aggregation"),
            ({"field": None}, 400, "invalid_field", "field"),
            ({"field": ""}, 400, "invalid_field", "field"),
            ({"field": "a..b"}, 400, "invalid_field", "field"),
            ({"field": "$.a"}, 400, "invalid_field", "field"),
            ({"field": "a b"}, 400, "invalid_field", "field"),
            ({"field": ".".join("a" * 9)}, 400, "invalid_field", "field"),
            ({"aggregation": "count"}, 400, "invalid_field", "field"),
            ({"filters": {"model": []}}, 400, "invalid_filters", "filters.model"),
            ({"filters": {"bad key": ["x"]}}, 400, "invalid_filters", "filters.bad key"),
            ({"filters": {"m": ["x" * 201]}}, 400, "invalid_filters", "filters.m"),
            ({"filters": {"m": [1]}}, 422, "validation_error", "filters.m.0"),
            (
                {"filters": {f"k{i}": ["x"] for i in range(limits.meter_filter_keys_max + 1)}},
                400,
                "invalid_filters",
                "filters",
            ),
            ({"group_by": ["model", "model"]}, 400, "invalid_group_by", "group_by"),
            ({"group_by": ["a.", "b"]}, 400, "invalid_group_by", "group_by"),
            ({"group_by": list("abcdef")}, 400, "invalid_group_by", "group_by"),
            ({"colour": "red"}, 422, "validation_error", "colour"),
            ({"name": "nul\x00"}, 400, "invalid_name", "name"),
            ({"filters": {"m": ["nul\x00"]}}, 400, "invalid_filters", "filters.m"),
            ({"event_type": "nul\x00"}, 400, "invalid_event_type", "event_type"),
        ],
    )
    async def test_bad_definitions_write_nothing(
        self,
        client: httpx.AsyncClient,
        ctx: AppContext,
        changes: dict[str, Any],
        status: int,
        code: str,
        field: str,
    ) -> None:
        payload = {"code": "m", "event_type": "e", "aggregation": "sum", "field": "v"} | changes
        response = await client.post("/v1/meters", json=payload)
        assert_problem(response, status, code, field=field)
        assert await count_rows(ctx, "meters") == 0

    async def test_the_number_of_meters_is_bounded(
        self, client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setattr(limits, "meters_per_organization_max", 2)
        for code in ("a", "b"):
            await create_meter(client, code=code, event_type="e", aggregation="count")
        response = await client.post(
            "/v1/meters", json={"code": "c", "event_type": "e", "aggregation": "count"}
        )
        assert_problem(response, 422, "meter_limit_reached")


class TestUsageParameters:
    @pytest.mark.parametrize(
        ("params", "status", "code", "field"),
        [
            ({"from": "yesterday"}, 400, "invalid_timestamp", "from"),
            ({"to": "2030-01-01"}, 400, "invalid_timestamp", "to"),
            (
                {"from": "2030-03-01T00:00:00Z", "to": "2030-03-01T00:00:00Z"},
                400,
                "invalid_range",
                "to",
            ),
            (
                {"from": "2030-03-02T00:00:00Z", "to": "2030-03-01T00:00:00Z"},
                400,
                "invalid_range",
                "to",
            ),
            ({"granularity": "week"}, 400, "invalid_granularity", "granularity"),
            ({"group_by": "colour"}, 400, "invalid_group_by", "group_by"),
            ({"customer_id": "ext:nobody"}, 404, "customer_not_found", "customer_id"),
            ({"customer_id": "nobody"}, 404, "customer_not_found", "customer_id"),
            ({"customer_id": "ext:nul\x00"}, 404, "customer_not_found", "customer_id"),
            (
                {
                    "granularity": "hour",
                    "from": "2029-01-01T00:00:00Z",
                    "to": "2030-01-01T00:00:00Z",
                },
                422,
                "too_many_buckets",
                "granularity",
            ),
        ],
    )
    async def test_bad_parameters(
        self,
        client: httpx.AsyncClient,
        params: dict[str, str],
        status: int,
        code: str,
        field: str,
    ) -> None:
        await create_meter(
            client, code="m", event_type="e", aggregation="sum", field="v", group_by=["model"]
        )
        response = await client.get("/v1/meters/m/usage", params=params)
        assert_problem(response, status, code, field=field)

    async def test_too_many_rows_is_refused(
        self, client: httpx.AsyncClient, clock: FrozenClock, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        await create_customer(client, "u1")
        for aggregation in ("count", "sum"):
            await create_meter(
                client,
                code=aggregation,
                event_type="t",
                aggregation=aggregation,
                **({} if aggregation == "count" else {"field": "v"}),
                group_by=["user"],
            )
        await ingest(
            client, *[event(f"e{i}", clock.now(), type="t", v=1, user=f"u{i}") for i in range(5)]
        )
        monkeypatch.setattr(limits, "usage_rows_max", 4)
        for code in ("count", "sum"):
            response = await client.get(f"/v1/meters/{code}/usage", params={"group_by": "user"})
            assert_problem(response, 422, "usage_too_large")
            ok = await client.get(f"/v1/meters/{code}/usage")
            assert ok.status_code == 200


class TestBuckets:
    def test_calendar_buckets_clipped_to_the_range(self) -> None:
        start, end = at("2030-12-31T22:30:00Z"), at("2031-01-01T01:15:00Z")
        assert service.buckets(start, end, "hour") == [
            (start, at("2030-12-31T23:00:00Z")),
            (at("2030-12-31T23:00:00Z"), at("2031-01-01T00:00:00Z")),
            (at("2031-01-01T00:00:00Z"), at("2031-01-01T01:00:00Z")),
            (at("2031-01-01T01:00:00Z"), end),
        ]
        assert service.buckets(start, end, "month") == [
            (start, at("2031-01-01T00:00:00Z")),
            (at("2031-01-01T00:00:00Z"), end),
        ]
        assert service.buckets(start, end, None) == [(start, end)]
        leap = service.buckets(at("2032-02-28T00:00:00Z"), at("2032-03-01T00:00:00Z"), "day")
        assert len(leap) == 2

    def test_the_last_month_of_the_calendar(self) -> None:
        start, end = at("9999-11-15T00:00:00Z"), at("9999-12-31T23:59:59Z")
        assert service.buckets(start, end, "month") == [
            (start, at("9999-12-01T00:00:00Z")),
            (at("9999-12-01T00:00:00Z"), end),
        ]

    def test_bounded(self) -> None:
        start = at("2030-01-01T00:00:00Z")
        end = start + timedelta(hours=limits.usage_buckets_max)
        assert len(service.buckets(start, end, "hour")) == limits.usage_buckets_max
        with pytest.raises(LimitExceeded):
            service.buckets(start, end + timedelta(minutes=1), "hour")


class TestValues:
    @pytest.mark.parametrize(
        ("number", "text"),
        [
            (Decimal("0.10"), "0.1"),
            (Decimal("1E+3"), "1000"),
            (Decimal("-0.0"), "0"),
            (Decimal("0E-10"), "0"),
            (Decimal("1.5E-7"), "0.00000015"),
            (Decimal("-12.3400"), "-12.34"),
            (
                Decimal("12345678901234567890123456789.123456789"),
                "12345678901234567890123456789.123456789",
            ),
            (7, "7"),
        ],
    )
    def test_decimal_text(self, number: Decimal | int, text: str) -> None:
        assert values.decimal_text(number) == text

    def test_canonical_json_sorts_keys_and_spells_numbers_one_way(self) -> None:
        one = values.loads('{"b": [1.0, 2.50, "x"], "a": {"z": null, "y": true}}')
        two = values.loads('{"a": {"y": true, "z": null}, "b": [1, 2.5, "x"]}')
        assert values.canonical_json(values.sanitize(one, "d")) == values.canonical_json(
            values.sanitize(two, "d")
        )
        assert values.canonical_json(values.sanitize(one, "d")) == (
            '{"a":{"y":true,"z":null},"b":[1,2.5,"x"]}'
        )

    @pytest.mark.parametrize(
        ("value", "number"),
        [
            (3, Decimal(3)),
            (Decimal("0.5"), Decimal("0.5")),
            ("12.5", Decimal("12.5")),
            ("-3", Decimal(-3)),
            ("1e3", None),
            ("", None),
            (" 1", None),
            (True, None),
            (None, None),
            ({"n": 1}, None),
        ],
    )
    def test_numeric_value(self, value: Any, number: Decimal | None) -> None:
        assert values.numeric_value(value) == number


# --- the split property --------------------------------------------------------

_customers = itertools.count()
_BASE = datetime(2030, 2, 20, tzinfo=UTC)
_QUARTER_US = 15 * 60 * 10**6
_QUARTERS = 5 * 24 * 4  # five days


def test_usage_of_any_split_adds_up_to_the_whole(database_url: str) -> None:
    """Hypothesis: for random events and random cut points, the sum (and the
    count) over the pieces of a range, and over its hour and day buckets,
    equals the sum over the whole range."""
    clock = FrozenClock(NOW)
    with asyncio.Runner() as runner:
        ctx = AppContext.create(
            Settings(database_url=database_url, log_level="WARNING", run_worker_in_server=False),
            clock=clock,
        )
        http = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=create_app(ctx, run_worker=False)),
            base_url="http://split.test",
        )
        try:

            async def setup() -> None:
                async with ctx.sessions() as session:
                    _, issued = await organizations.create_organization(session, clock, "Split")
                    await session.commit()
                http.headers["Authorization"] = f"Bearer {issued.secret}"
                await create_meter(http, code="s", event_type="t", aggregation="sum", field="v")
                await create_meter(http, code="n", event_type="t", aggregation="count")

            runner.run(setup())

            @settings(
                max_examples=25,
                deadline=None,
                suppress_health_check=[HealthCheck.too_slow],
            )
            @given(
                events=st.lists(
                    st.tuples(
                        # On a quarter-hour grid, give or take a microsecond, so
                        # events fall on cut points and bucket edges often.
                        st.builds(
                            lambda quarter, jitter: quarter * _QUARTER_US + jitter,
                            st.integers(0, _QUARTERS - 1),
                            st.sampled_from([0, 0, 1, _QUARTER_US - 1]),
                        ),
                        st.decimals(
                            min_value=Decimal("-1000"),
                            max_value=Decimal("1000000"),
                            places=6,
                            allow_nan=False,
                            allow_infinity=False,
                        ),
                    ),
                    max_size=40,
                ),
                data=st.data(),
            )
            def check(events: list[tuple[int, Decimal]], data: st.DataObject) -> None:
                grid = st.integers(1, _QUARTERS - 1).map(lambda quarter: quarter * _QUARTER_US)
                # Cut points on the grid, and often exactly at an event.
                at_events = [offset for offset, _ in events if offset > 0]
                where = st.one_of(grid, st.sampled_from(at_events)) if at_events else grid
                cuts = data.draw(st.lists(where, max_size=6, unique=True), label="cuts")
                runner.run(_check_split(http, events, sorted(cuts)))

            check()
        finally:
            runner.run(http.aclose())
            runner.run(ctx.engine.dispose())


async def _check_split(
    http: httpx.AsyncClient, events: list[tuple[int, Decimal]], cuts: list[int]
) -> None:
    customer = f"c{next(_customers)}"
    await create_customer(http, customer)
    body = (
        '{"events": ['
        + ",".join(
            f'{{"id": "{customer}-{i}", "customer_external_id": "{customer}", "type": "t", '
            f'"timestamp": "{iso(_BASE + timedelta(microseconds=offset))}", '
            f'"data": {{"v": {values.decimal_text(value)}}}}}'
            for i, (offset, value) in enumerate(events)
        )
        + "]}"
    )
    response = await http.post(
        "/v1/events", content=body, headers={"content-type": "application/json"}
    )
    assert response.json()["summary"]["accepted"] == len(events), response.text
    expected = sum((value for _, value in events), Decimal(0))
    points = [_BASE + timedelta(microseconds=cut) for cut in [0, *cuts, _QUARTERS * _QUARTER_US]]

    async def total(code: str, start: datetime, end: datetime, granularity: str | None) -> Decimal:
        params = {"customer_id": f"ext:{customer}", "from_": iso(start), "to": iso(end)}
        if granularity:
            params["granularity"] = granularity
        body = await usage(http, code, **params)
        return sum((Decimal(row["value"]) for row in body["data"]), Decimal(0))

    whole = await total("s", points[0], points[-1], None)
    assert whole == expected
    pieces = [await total("s", lo, hi, None) for lo, hi in itertools.pairwise(points)]
    assert sum(pieces, Decimal(0)) == whole
    for granularity in ("hour", "day"):
        assert await total("s", points[0], points[-1], granularity) == whole
    counts = [await total("n", lo, hi, None) for lo, hi in itertools.pairwise(points)]
    assert sum(counts, Decimal(0)) == len(events)
