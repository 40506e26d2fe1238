"""Hourly usage rollups: what makes a usage query over a million events fast.

For each meter that counts, sums, or takes a min or max, `usage_rollups`
holds per (customer, UTC hour, group values) the number of matching events
and the sum, min and max of their numbers. What a batch of
events adds is written in the transaction that accepts them (late events
land in their own past hour the same way), so the rollups are never behind
the events. On PostgreSQL it is appended to `usage_rollup_deltas` rather
than added to the rows: concurrent ingests of the same customer and hour
would otherwise wait for each other's row locks until they commit. Usage
queries read both tables in one statement; the worker moves the deltas into
the rollups (`compact`), each in exactly one of the two at any snapshot.

A usage query reads whole hours from the rollups and the partial hours at
either edge of its range from the events themselves, then combines the two:
counts and sums add, minima and maxima take the smaller and larger. Hours
are the finest granularity a query can ask for and every bucket boundary is
an hour boundary, so no rolled-up hour ever straddles two buckets.

unique_count and latest are not rolled up: an exact distinct count or
"newest value" cannot be combined from per-hour summaries without keeping
every value, so those meters keep scanning the events.

A meter created after events exist gets its rollups built from the stored
events in the transaction that creates it; see `RollupRepository.rebuild`
for how that stays exact against concurrent ingest.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, cast

import sqlalchemy as sa
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from billfold import limits
from billfold.metering import values
from billfold.metering.models import Event, Meter, UsageRollup
from billfold.metering.repository import (
    Rollup,
    RollupKey,
    RollupRepository,
    TooManyRows,
    UsageCell,
    UsageQuery,
    UsageRepository,
    compact_rollup_deltas,
)

ROLLED_UP = frozenset({"count", "sum", "min", "max"})


@dataclass(frozen=True, slots=True)
class _Reader:
    """A meter's paths, parsed once per batch."""

    meter_id: str
    filters: tuple[tuple[tuple[str, ...], frozenset[str]], ...]
    field: tuple[str, ...] | None
    group_by: tuple[tuple[str, ...], ...]


def _reader(meter: Meter) -> _Reader:
    def path(dotted: str) -> tuple[str, ...]:
        segments = values.parse_path(dotted)
        assert segments is not None, dotted
        return segments

    return _Reader(
        meter_id=meter.id,
        filters=tuple((path(key), frozenset(allowed)) for key, allowed in meter.filters.items()),
        field=None if meter.field is None else path(meter.field),
        group_by=tuple(path(key) for key in meter.group_by),
    )


def group_values(texts: Sequence[str | None]) -> str:
    """The `group_values` key of a row: `canonical_json(texts)`, spelled
    out because ingest computes it for every event and meter."""
    if not texts:
        return "[]"
    quote = values.quote_json
    return "[" + ",".join("null" if text is None else quote(text) for text in texts) + "]"


def hour_of(instant: datetime) -> datetime:
    return instant.astimezone(UTC).replace(minute=0, second=0, microsecond=0)


def rollups_of(
    meters: Iterable[Meter], events: Iterable[tuple[str, str, datetime, dict[str, Any]]]
) -> dict[RollupKey, Rollup]:
    """The rollup rows `events` (customer id, type, timestamp, data) add to
    the rolled-up meters among `meters`, keyed by (meter, customer, hour,
    group values)."""
    readers: dict[str, list[_Reader]] = {}
    for meter in meters:
        if meter.aggregation in ROLLED_UP:
            readers.setdefault(meter.event_type, []).append(_reader(meter))
    out: dict[RollupKey, Rollup] = {}
    if not readers:
        return out
    for customer_id, event_type, timestamp, data in events:
        for reader in readers.get(event_type, ()):
            if not all(
                values.text_of(values.value_at(data, path)) in allowed
                for path, allowed in reader.filters
            ):
                continue
            group = group_values(
                [values.text_of(values.value_at(data, path)) for path in reader.group_by]
            )
            key = (reader.meter_id, customer_id, hour_of(timestamp), group)
            rollup = out.get(key)
            if rollup is None:
                rollup = out[key] = Rollup()
            number = (
                None
                if reader.field is None
                else values.numeric_value(values.value_at(data, reader.field))
            )
            rollup.add_event(number)
    return out


async def write(
    session: AsyncSession,
    organization_id: str,
    meters: Sequence[Meter],
    events: Sequence[tuple[str, str, datetime, dict[str, Any]]],
) -> None:
    """Add accepted events (customer id, type, timestamp, data) to the
    rollups of their meters; `meters` are those read before the insert."""
    if not events:
        return
    repository = RollupRepository(session, organization_id)
    current = await repository.meters_after_insert(meters, {event[1] for event in events})
    if current:
        await repository.add_ingested(rollups_of(current, events))


async def compact(sessions: async_sessionmaker[AsyncSession]) -> int:
    """Move a batch of rollup deltas into the rollups, in a transaction of
    its own; how many moved (a full batch: call again)."""
    async with sessions() as session:
        moved = await compact_rollup_deltas(session, limits.rollup_deltas_per_compaction_max)
        await session.commit()
    return moved


async def build(session: AsyncSession, meter: Meter) -> None:
    """Build a new meter's rollups from the events stored before it."""
    if meter.aggregation in ROLLED_UP:
        await RollupRepository(session, meter.organization_id).rebuild(meter, rollups_of)


# --- reading -----------------------------------------------------------------


def _floor(instant: datetime, granularity: str | None) -> datetime | None:
    if granularity is None:
        return None
    instant = hour_of(instant)
    if granularity == "hour":
        return instant
    instant = instant.replace(hour=0)
    return instant if granularity == "day" else instant.replace(day=1)


def _ceil_hour(instant: datetime) -> datetime | None:
    floor = hour_of(instant)
    if floor == instant:
        return floor
    try:
        return floor + timedelta(hours=1)
    except OverflowError:
        return None


async def aggregate(session: AsyncSession, meter: Meter, query: UsageQuery) -> list[UsageCell]:
    """`UsageRepository.aggregate` of a rolled-up meter, from the rollups for
    whole hours and from the events for the partial hours at the edges.

    Raises TooManyRows past `limits.usage_rows_max` cells.
    """
    assert meter.aggregation in ROLLED_UP, meter.aggregation
    assert meter.aggregation == query.aggregation
    raw = UsageRepository(session, meter.organization_id)
    first, last = _ceil_hour(query.start), hour_of(query.end)
    if first is None or not first < last:
        return await raw.aggregate(query)
    positions = [meter.group_by.index(".".join(path)) for path in query.group_by]
    parts: list[list[UsageCell]] = [
        await RollupRepository(session, meter.organization_id).aggregate(
            meter,
            customer_id=query.customer_id,
            start=first,
            end=last,
            granularity=query.granularity,
            positions=positions,
        )
    ]
    if query.start < first:
        parts.append(await raw.aggregate(dataclasses.replace(query, end=first)))
    if last < query.end:
        parts.append(await raw.aggregate(dataclasses.replace(query, start=last)))
    merged: dict[tuple[datetime | None, tuple[str | None, ...]], Decimal | None] = {}
    for cells in parts:
        for cell in cells:
            key = (
                None if cell.bucket is None else _floor(cell.bucket, query.granularity),
                cell.group,
            )
            if key not in merged:
                if len(merged) >= limits.usage_rows_max:
                    raise TooManyRows
                merged[key] = cell.value
            else:
                merged[key] = _combine(query.aggregation, merged[key], cell.value)
    return [UsageCell(bucket, group, value) for (bucket, group), value in merged.items()]


def _combine(aggregation: str, a: Decimal | None, b: Decimal | None) -> Decimal | None:
    if a is None or b is None:
        return a if b is None else b
    if aggregation in ("count", "sum"):
        return values.EXACT.add(a, b)
    return min(a, b) if aggregation == "min" else max(a, b)


# --- the migration -----------------------------------------------------------


def rebuild_all_sync(connection: Connection) -> None:
    """Rollups of every rolled-up meter from its events, for the migration
    that creates the table (synchronous, in Python, on either backend)."""
    meters = connection.execute(
        sa.select(Meter.__table__).where(Meter.__table__.c.aggregation.in_(sorted(ROLLED_UP)))
    ).all()
    events = Event.__table__
    rollups = cast(sa.Table, UsageRollup.__table__)
    postgresql = connection.dialect.name == "postgresql"
    for row in meters:
        meter = Meter(**row._asdict())
        filters = meter.filters if isinstance(meter.filters, dict) else json.loads(meter.filters)
        group_by = (
            meter.group_by if isinstance(meter.group_by, list) else json.loads(meter.group_by)
        )
        meter.filters, meter.group_by = filters, group_by
        data_text = sa.cast(events.c.data, sa.Text())
        found = connection.execute(
            sa.select(events.c.customer_id, events.c.type, events.c.timestamp, data_text).where(
                events.c.organization_id == meter.organization_id,
                events.c.type == meter.event_type,
            )
        )
        computed = rollups_of(
            [meter],
            (
                (customer_id, event_type, _aware(timestamp), values.loads(text))
                for customer_id, event_type, timestamp, text in found
            ),
        )
        rows = [
            {
                "organization_id": meter.organization_id,
                "meter_id": meter_id,
                "customer_id": customer_id,
                "hour": hour,
                "group_values": group,
                **rollup.columns(postgresql),
            }
            for (meter_id, customer_id, hour, group), rollup in computed.items()
        ]
        for start in range(0, len(rows), 1000):
            connection.execute(rollups.insert(), rows[start : start + 1000])


def _aware(instant: datetime) -> datetime:
    return instant if instant.tzinfo is not None else instant.replace(tzinfo=UTC)
