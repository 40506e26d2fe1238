"""Usage rollups: answers read from hourly rollups equal the raw scan.

Goal: for count, sum, min and max meters, a usage query answered from
`usage_rollups` (whole hours) plus the events at the edges gives exactly what
scanning every event gives, on SQLite and PostgreSQL, including for events
that arrive late (into hours already rolled up) and for meters created after
their events. Method: a Hypothesis property over random events, meters with
filters and groups, and random ranges, granularities and groupings, each
answer compared with `UsageRepository.aggregate` (the raw scan) on the same
query; then targeted cases for late events and new meters.
"""

from __future__ import annotations

import asyncio
import itertools
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy.dialects import postgresql

from billfold import limits
from billfold.api.app import create_app
from billfold.api.context import AppContext
from billfold.clock import FrozenClock
from billfold.config import Settings
from billfold.db.migrate import upgrade
from billfold.metering import rollups, service, values
from billfold.metering.models import Event, Meter, UsageRollup, UsageRollupDelta
from billfold.metering.repository import (
    MeterRepository,
    UsageCell,
    UsageQuery,
    UsageRepository,
    compact_rollup_deltas,
)
from billfold.organizations import service as organizations
from billfold.organizations.service import Principal
from tests.conftest import Tenant
from tests.metering_support import create_customer, create_meter, iso, usage
from tests.support import empty_database

NOW = datetime(2030, 3, 2, 10, 30, tzinfo=UTC)
# Events fall in the three days before NOW, which cross a month boundary.
_BASE = NOW - timedelta(days=3)
_MINUTES = 3 * 24 * 60

METERS: list[dict[str, Any]] = [
    {"code": "n", "event_type": "t", "aggregation": "count", "group_by": ["model"]},
    {
        "code": "n_eu",
        "event_type": "t",
        "aggregation": "count",
        "filters": {"region": ["eu"]},
    },
    {
        "code": "s",
        "event_type": "t",
        "aggregation": "sum",
        "field": "v",
        "group_by": ["model", "region"],
    },
    {"code": "lo", "event_type": "t", "aggregation": "min", "field": "v", "group_by": ["model"]},
    {
        "code": "hi",
        "event_type": "t",
        "aggregation": "max",
        "field": "v",
        "filters": {"region": ["us"]},
    },
]


async def ingest(http: httpx.AsyncClient, *events: dict[str, Any]) -> list[dict[str, Any]]:
    """POST the events with their numbers exact (Decimal as JSON numbers)."""
    response = await http.post(
        "/v1/events",
        content=values.canonical_json({"events": list(events)}),
        headers={"content-type": "application/json"},
    )
    assert response.status_code == 200, response.text
    results: list[dict[str, Any]] = response.json()["results"]
    return results


@pytest.fixture
def clock() -> FrozenClock:
    return FrozenClock(NOW)


async def raw_and_rolled(
    ctx: AppContext,
    organization_id: str,
    code: str,
    *,
    customer_id: str | None,
    start: datetime,
    end: datetime,
    granularity: str | None,
    group_by: list[str],
) -> tuple[dict[Any, Decimal | None], dict[Any, Decimal | None]]:
    """The same query answered by the raw scan and through the rollups."""
    async with ctx.sessions() as session:
        meter = await MeterRepository(session, organization_id).get_by_code(code)
        assert meter is not None

        def path(key: str) -> tuple[str, ...]:
            segments = values.parse_path(key)
            assert segments is not None
            return segments

        query = UsageQuery(
            event_type=meter.event_type,
            aggregation=meter.aggregation,
            field=None if meter.field is None else path(meter.field),
            filters={path(key): allowed for key, allowed in meter.filters.items()},
            customer_id=customer_id,
            start=start,
            end=end,
            granularity=granularity,
            group_by=tuple(path(key) for key in group_by),
            ranges=tuple(service.buckets(start, end, granularity)),
        )
        raw = await UsageRepository(session, organization_id).aggregate(query)
        rolled = await rollups.aggregate(session, meter, query)

    def keyed(cells: list[UsageCell]) -> dict[Any, Decimal | None]:
        out: dict[Any, Decimal | None] = {}
        for cell in cells:
            bucket = None if cell.bucket is None else rollups._floor(cell.bucket, granularity)
            assert (bucket, cell.group) not in out, "one cell per bucket and group"
            out[bucket, cell.group] = cell.value
        return out

    return keyed(raw), keyed(rolled)


async def compact_all(ctx: AppContext) -> None:
    """Move every rollup delta into the rollups, as the worker does."""
    while await rollups.compact(ctx.sessions):
        pass


async def deltas(ctx: AppContext) -> int:
    async with ctx.sessions() as session:
        count = await session.scalar(sa.select(sa.func.count()).select_from(UsageRollupDelta))
        return int(count or 0)


async def rollup_rows(ctx: AppContext) -> int:
    """The rollup rows, once every delta is moved in."""
    await compact_all(ctx)
    async with ctx.sessions() as session:
        return int(await session.scalar(sa.select(sa.func.count()).select_from(UsageRollup)) or 0)


# --- the property -------------------------------------------------------------

_customers = itertools.count()

_values = st.one_of(
    st.none(),  # no value at all
    st.integers(-1000, 10**12),
    st.decimals(
        min_value=Decimal("-1000"),
        max_value=Decimal("1000000"),
        places=4,
        allow_nan=False,
        allow_infinity=False,
    ),
    # A number sent as a string counts as that number.
    st.decimals(min_value=Decimal(0), max_value=Decimal(100), places=2).map(str),
)

_events = st.lists(
    st.tuples(
        st.integers(0, 1),  # which of the example's two customers
        # Minutes on the grid, often exactly on an hour.
        st.one_of(
            st.integers(0, _MINUTES - 1),
            st.integers(0, _MINUTES // 60 - 1).map(lambda hour: hour * 60),
        ),
        _values,
        st.sampled_from(["a", "b", None]),
        st.sampled_from(["eu", "us", None]),
    ),
    max_size=40,
)

_queries = st.tuples(
    st.sampled_from([meter["code"] for meter in METERS]),
    st.one_of(st.integers(0, _MINUTES), st.integers(0, _MINUTES // 60).map(lambda hour: hour * 60)),
    st.integers(1, _MINUTES),
    st.sampled_from([None, "hour", "day", "month"]),
    st.sampled_from([None, 0, 1]),  # one of the example's customers, or all
    st.booleans(),  # group by all the meter's keys, or none
)


def test_rollup_answers_equal_the_raw_scan(database_url: str) -> None:
    """Hypothesis: random events (some without a value, some values as
    strings, filters and groups that match or not), ingested in two batches,
    the second partly into hours the first already rolled up; then random
    queries: every cell equals the raw scan's."""
    clock = FrozenClock(NOW)
    with asyncio.Runner() as runner:
        ctx = AppContext.create(
            Settings(database_url=database_url, log_level="WARNING", run_worker_in_server=False),
            clock=clock,
        )
        http = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=create_app(ctx, run_worker=False)),
            base_url="http://rollups.test",
        )
        organization: list[str] = []
        try:

            async def setup() -> None:
                async with ctx.sessions() as session:
                    created, issued = await organizations.create_organization(
                        session, clock, "Rollups"
                    )
                    await session.commit()
                organization.append(created.id)
                http.headers["Authorization"] = f"Bearer {issued.secret}"
                for meter in METERS:
                    await create_meter(http, **meter)

            runner.run(setup())

            @settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
            @given(events=_events, queries=st.lists(_queries, min_size=1, max_size=6))
            def check(events: list[tuple[Any, ...]], queries: list[tuple[Any, ...]]) -> None:
                runner.run(_check(ctx, http, organization[0], events, queries))

            check()
        finally:
            runner.run(http.aclose())
            runner.run(ctx.engine.dispose())


async def _check(
    ctx: AppContext,
    http: httpx.AsyncClient,
    organization_id: str,
    events: list[tuple[Any, ...]],
    queries: list[tuple[Any, ...]],
) -> None:
    example = next(_customers)
    names = [f"c{example}-0", f"c{example}-1"]
    ids = [await create_customer(http, name) for name in names]
    sent = []
    for i, (who, minute, value, model, region) in enumerate(events):
        data: dict[str, Any] = {}
        if value is not None:
            data["v"] = value
        if model is not None:
            data["model"] = model
        if region is not None:
            data["region"] = region
        at = _BASE + timedelta(minutes=minute, seconds=i % 7)
        sent.append(
            {
                "id": f"{example}-{i}",
                "customer_id": ids[who],
                "type": "t",
                "timestamp": iso(at),
                "data": data,
            }
        )
    # Two batches, so the second adds to rows the first created. The first's
    # deltas are moved into the rollups, the second's not (PostgreSQL): the
    # answers add the two tables.
    half = len(sent) // 2
    for first, batch in ((True, sent[:half]), (False, sent[half:])):
        if batch:
            results = await ingest(http, *batch)
            assert {result["status"] for result in results} == {"accepted"}, results
        if first:
            await compact_all(ctx)
    for code, offset, length, granularity, who, grouped in queries:
        start = _BASE + timedelta(minutes=offset)
        end = min(start + timedelta(minutes=length), NOW)
        if not start < end:
            continue
        meter = next(meter for meter in METERS if meter["code"] == code)
        raw, rolled = await raw_and_rolled(
            ctx,
            organization_id,
            code,
            customer_id=None if who is None else ids[who],
            start=start,
            end=end,
            granularity=granularity,
            group_by=meter.get("group_by", []) if grouped else [],
        )
        assert rolled == raw, (code, start, end, granularity, who, grouped)


# --- late events and new meters -----------------------------------------------


async def test_late_events_land_in_their_past_hour(
    client: httpx.AsyncClient, ctx: AppContext, tenant: Tenant
) -> None:
    await create_meter(client, code="s", event_type="t", aggregation="sum", field="v")
    customer_id = await create_customer(client, "late")

    def sent(event_id: str, at: datetime, v: str) -> dict[str, Any]:
        data = {"v": values.loads(v)}
        return {"id": event_id, "customer_id": customer_id, "type": "t", "timestamp": iso(at),
                "data": data}  # fmt: skip

    month_ago = NOW - timedelta(days=34, hours=5, minutes=10)
    await ingest(client, sent("now", NOW - timedelta(minutes=1), "1.5"))
    before = await usage(
        client, "s", customer_id=customer_id, from_=iso(NOW - timedelta(days=35)), to=iso(NOW)
    )
    assert [row["value"] for row in before["data"]] == ["1.5"]
    # Backfilled into an hour long past, then again into the same hour.
    await ingest(client, sent("late-1", month_ago, "0.1"))
    await ingest(client, sent("late-2", month_ago + timedelta(minutes=20), "0.2"))
    after = await usage(
        client,
        "s",
        customer_id=customer_id,
        from_=iso(NOW - timedelta(days=35)),
        to=iso(NOW),
        granularity="day",
    )
    values_by_day = {
        row["start"][:10]: row["value"] for row in after["data"] if row["value"] != "0"
    }
    assert values_by_day == {iso(month_ago)[:10]: "0.3", iso(NOW)[:10]: "1.5"}
    for granularity in (None, "hour", "day", "month"):
        raw, rolled = await raw_and_rolled(
            ctx,
            tenant.organization_id,
            "s",
            customer_id=customer_id,
            start=NOW - timedelta(days=35),
            end=NOW,
            granularity=granularity,
            group_by=[],
        )
        assert rolled == raw
    assert await rollup_rows(ctx) == 2


async def test_a_meter_created_after_its_events_counts_them(
    client: httpx.AsyncClient, ctx: AppContext, tenant: Tenant
) -> None:
    customer_id = await create_customer(client, "early")
    models = ["a", "b", "a", None, "b", "a"]
    early = [
        {
            "id": f"early-{i}",
            "customer_id": customer_id,
            "type": "t",
            "timestamp": iso(NOW - timedelta(hours=3 * i, minutes=7)),
            "data": {"v": values.loads(f"{i}.25")} | ({} if model is None else {"model": model}),
        }
        for i, model in enumerate(models)
    ]
    await ingest(client, *early)
    assert await rollup_rows(ctx) == 0
    for meter in METERS:
        await create_meter(client, **meter)
    assert await rollup_rows(ctx) > 0
    later = [
        {
            "id": "later",
            "customer_id": customer_id,
            "type": "t",
            "timestamp": iso(NOW - timedelta(minutes=5)),
            "data": {"v": 100, "model": "a"},
        }
    ]
    await ingest(client, *later)
    start = NOW - timedelta(days=2, minutes=13)
    for meter in METERS:
        for granularity in (None, "hour", "day"):
            raw, rolled = await raw_and_rolled(
                ctx,
                tenant.organization_id,
                meter["code"],
                customer_id=customer_id,
                start=start,
                end=NOW,
                granularity=granularity,
                group_by=meter.get("group_by", []),
            )
            assert rolled == raw, (meter["code"], granularity)
    total = await usage(client, "s", customer_id=customer_id, from_=iso(start), to=iso(NOW))
    assert [row["value"] for row in total["data"]] == [
        values.decimal_text(sum((Decimal(f"{i}.25") for i in range(len(models))), Decimal(100)))
    ]


async def test_the_migration_builds_rollups_for_existing_meters(
    backend: str, tmp_path: Path
) -> None:
    """A database with meters and events from before rollups existed gets
    them built by the migration that creates the table."""
    with empty_database(backend, tmp_path) as url:
        upgrade(url, "0009")
        clock = FrozenClock(NOW)
        ctx = AppContext.create(
            Settings(database_url=url, log_level="WARNING", run_worker_in_server=False),
            clock=clock,
        )
        try:
            async with ctx.sessions() as session:
                organization, _ = await organizations.create_organization(session, clock, "Old")
                for i, meter in enumerate(METERS):
                    await session.execute(
                        sa.insert(Meter).values(
                            id=f"mtr_{i}",
                            organization_id=organization.id,
                            code=meter["code"],
                            name=None,
                            event_type=meter["event_type"],
                            aggregation=meter["aggregation"],
                            field=meter.get("field"),
                            filters=meter.get("filters", {}),
                            group_by=meter.get("group_by", []),
                            created_at=NOW - timedelta(days=40),
                        )
                    )
                await session.execute(
                    sa.insert(Event).values(
                        # The canonical text as ingest stores it, not the JSON
                        # type's serialization (which cannot write a Decimal).
                        data=sa.cast(sa.bindparam("p_data", type_=sa.Text()), postgresql.JSONB())
                        if backend == "postgresql"
                        else sa.bindparam("p_data", type_=sa.Text()),
                        costs=None,
                    ),
                    [
                        {
                            "organization_id": organization.id,
                            "id": f"old-{i}",
                            "customer_id": f"cus_{i % 3}",
                            "type": "t",
                            "timestamp": NOW - timedelta(hours=5 * i, minutes=i),
                            "p_data": values.canonical_json(
                                {"v": values.loads(f"{i}.5"), "model": "ab"[i % 2]}
                                | ({"region": "eu"} if i % 3 else {"region": "us"})
                            ),
                            "fingerprint": "0" * 64,
                            "received_at": NOW,
                            "authorization_id": None,
                        }
                        for i in range(20)
                    ],
                )
                await session.commit()
        finally:
            await ctx.engine.dispose()
        upgrade(url)
        ctx = AppContext.create(
            Settings(database_url=url, log_level="WARNING", run_worker_in_server=False),
            clock=clock,
        )
        try:
            assert await rollup_rows(ctx) > 0
            for meter in METERS:
                for customer_id in (None, "cus_1"):
                    raw, rolled = await raw_and_rolled(
                        ctx,
                        organization.id,
                        meter["code"],
                        customer_id=customer_id,
                        start=NOW - timedelta(days=5, minutes=30),
                        end=NOW,
                        granularity="day",
                        group_by=meter.get("group_by", []),
                    )
                    assert rolled == raw, meter["code"]
                    assert raw or customer_id is not None, "the range holds events"
        finally:
            await ctx.engine.dispose()


# --- concurrency (PostgreSQL; SQLite runs one writer at a time) -----------------


def _batch(prefix: str, customers: list[str], count: int) -> list[dict[str, Any]]:
    return [
        {
            "id": f"{prefix}-{i}",
            "customer_id": customers[i % len(customers)],
            "type": "t",
            "timestamp": iso(NOW - timedelta(minutes=7 * (i % 20))),
            "data": {"v": i, "model": "ab"[i % 2], "region": "eu" if i % 3 else "us"},
        }
        for i in range(count)
    ]


async def _assert_exact(ctx: AppContext, organization_id: str, codes: list[str]) -> None:
    for code in codes:
        meter = next(meter for meter in METERS if meter["code"] == code)
        raw, rolled = await raw_and_rolled(
            ctx,
            organization_id,
            code,
            customer_id=None,
            start=NOW - timedelta(days=1, minutes=1),
            end=NOW,
            granularity="hour",
            group_by=meter.get("group_by", []),
        )
        assert rolled == raw, code
        assert raw


async def test_concurrent_batches_of_the_same_rows_never_wait_for_each_other(
    backend: str, client: httpx.AsyncClient, ctx: AppContext, tenant: Tenant, clock: FrozenClock
) -> None:
    """PostgreSQL: each batch appends its deltas, so the second finishes while
    the first, on the same customers and hours, is still open."""
    if backend != "postgresql":
        pytest.skip("SQLite has one writer: its transactions never overlap")
    for meter in METERS:
        await create_meter(client, **meter)
    customers = [await create_customer(client, f"k{i}") for i in range(5)]
    principal = Principal(tenant.organization_id, "test")
    window = limits.event_backfill_window_default_s
    await compact_all(ctx)  # the rows exist: the batches add to them
    # The same customers and hours, listed in opposite orders.
    first_raw = _batch("x", customers, 100)
    second_raw = _batch("y", list(reversed(customers)), 100)
    async with ctx.sessions() as first, ctx.sessions() as second:
        await service.ingest(first, clock, principal, first_raw, backfill_window_s=window)
        async with asyncio.timeout(10):
            await service.ingest(second, clock, principal, second_raw, backfill_window_s=window)
        await second.commit()
        await first.commit()
    await _assert_exact(ctx, tenant.organization_id, [meter["code"] for meter in METERS])
    assert await deltas(ctx) > 0
    await compact_all(ctx)
    assert await deltas(ctx) == 0
    await _assert_exact(ctx, tenant.organization_id, [meter["code"] for meter in METERS])


async def test_compaction_moves_only_committed_deltas_each_exactly_once(
    backend: str, client: httpx.AsyncClient, ctx: AppContext, tenant: Tenant, clock: FrozenClock
) -> None:
    """PostgreSQL: a compaction neither waits for nor takes an open batch's
    deltas, and while it is open readers still see what it is moving."""
    if backend != "postgresql":
        pytest.skip("SQLite adds to the rollups directly: there is nothing to compact")
    codes = [meter["code"] for meter in METERS]
    for meter in METERS:
        await create_meter(client, **meter)
    customers = [await create_customer(client, f"k{i}") for i in range(4)]
    principal = Principal(tenant.organization_id, "test")
    window = limits.event_backfill_window_default_s
    await ingest(client, *_batch("a", customers, 80))
    committed = await deltas(ctx)
    assert committed > 0
    async with ctx.sessions() as batch:
        await service.ingest(
            batch, clock, principal, _batch("b", customers, 80), backfill_window_s=window
        )
        async with ctx.sessions() as compacting, asyncio.timeout(10):
            moved = await compact_rollup_deltas(compacting, 10_000)
            assert moved == committed, "the open batch's deltas are not visible to it"
            # Not yet committed: readers see the deltas where they were.
            await _assert_exact(ctx, tenant.organization_id, codes)
            await compacting.commit()
        await _assert_exact(ctx, tenant.organization_id, codes)
        await batch.commit()
    await _assert_exact(ctx, tenant.organization_id, codes)
    assert await deltas(ctx) > 0, "the batch's deltas, after the compaction"
    await compact_all(ctx)
    assert await deltas(ctx) == 0
    await _assert_exact(ctx, tenant.organization_id, codes)


async def test_a_meter_created_while_a_batch_is_open_counts_it_once(
    backend: str, client: httpx.AsyncClient, ctx: AppContext, tenant: Tenant, clock: FrozenClock
) -> None:
    """Either order: the meter waits for a batch that has inserted, and a
    batch that inserts after the meter is created finds it."""
    if backend != "postgresql":
        pytest.skip("SQLite has one writer: its transactions never overlap")
    customers = [await create_customer(client, f"k{i}") for i in range(3)]
    principal = Principal(tenant.organization_id, "test")
    window = limits.event_backfill_window_default_s
    # The batch first: the meter's build waits for it to commit.
    async with ctx.sessions() as batch, ctx.sessions() as creating:
        await service.ingest(
            batch, clock, principal, _batch("a", customers, 60), backfill_window_s=window
        )
        racing = asyncio.create_task(_create(creating, clock, principal, METERS[2]))
        await asyncio.sleep(0.3)
        assert not racing.done(), "the meter's build waits for the open batch"
        await batch.commit()
        await racing
        await creating.commit()
    await _assert_exact(ctx, tenant.organization_id, ["s"])
    # The meter first: the batch's insert waits, then it finds the meter.
    async with ctx.sessions() as creating, ctx.sessions() as batch:
        await _create(creating, clock, principal, METERS[0])
        racing_ingest = asyncio.create_task(
            service.ingest(
                batch, clock, principal, _batch("b", customers, 60), backfill_window_s=window
            )
        )
        await asyncio.sleep(0.3)
        assert not racing_ingest.done(), "the batch waits for the meter's build"
        await creating.commit()
        await racing_ingest
        await batch.commit()
    await _assert_exact(ctx, tenant.organization_id, ["s", "n"])


async def _create(
    session: Any, clock: FrozenClock, principal: Principal, meter: dict[str, Any]
) -> None:
    await service.create_meter(
        session,
        clock,
        principal,
        code=meter["code"],
        name=None,
        event_type=meter["event_type"],
        aggregation=meter["aggregation"],
        field=meter.get("field"),
        filters=meter.get("filters"),
        group_by=meter.get("group_by"),
    )
