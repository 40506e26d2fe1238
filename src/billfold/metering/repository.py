"""All metering SQL. SQLite and PostgreSQL differ here and nowhere else.

Events are written set-based: `INSERT … ON CONFLICT DO NOTHING RETURNING id`
over the whole batch, ids in ascending order, so two batches that share ids
lock them in the same order and cannot deadlock. The primary key decides
which of two concurrent writers of an id wins; the loser's row is simply not
returned.

Events go in as one statement per batch: on PostgreSQL an `INSERT … SELECT
FROM jsonb_array_elements(rows)` (one JSON parameter, whatever the batch
size), on SQLite a multi-row VALUES. `data` travels as canonical JSON text, never
through floats.

Usage is aggregated in SQL: PostgreSQL reads `data` with jsonb functions and
sums `numeric`, exactly; `latest` without groups walks the usage index
newest-first per bucket and stops at the first number. SQLite has no exact
decimal type (`json_extract` answers floats), so for sum, max, min and latest
it filters, buckets and groups in SQL and hands each matching value's JSON
text to Python, which aggregates with `Decimal`; count and unique_count stay
in SQL on both. Buckets are UTC calendar hours, days and months
(`date_trunc(…, 'UTC')` on PostgreSQL, a prefix of the stored ISO text on
SQLite).

Rollups (`usage_rollups`, see `billfold.metering.rollups`) are added to in
one statement per batch on PostgreSQL (`INSERT … ON CONFLICT DO UPDATE`,
`numeric` arithmetic, rows in key order); SQLite reads the rows, adds in
Python with `Decimal` and writes them back, which its single writer allows.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, cast

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import InstrumentedAttribute

from billfold import limits
from billfold.db.engine import dialect_of, upsert_insert
from billfold.metering import values
from billfold.metering.models import Event, Meter, UsageRollup, UsageRollupDelta

# PostgreSQL's reading of `values.numeric_value` for a string.
_PG_DECIMAL_STRING_RE = r"^-?[0-9]{1,40}(\.[0-9]{1,40})?$"
# SQLite keeps datetimes as "YYYY-MM-DD HH:MM:SS.ffffff"; a bucket is a prefix.
_SQLITE_BUCKET_PREFIX = {"hour": 13, "day": 10, "month": 7}
_SQLITE_BUCKET_FORMAT = {"hour": "%Y-%m-%d %H", "day": "%Y-%m-%d", "month": "%Y-%m"}


@dataclass(slots=True)
class EventRow:
    """An event ready to insert, its JSON already canonical text."""

    id: str
    customer_id: str
    type: str
    timestamp: datetime
    #: `timestamp.isoformat()`, already spelled for the fingerprint.
    timestamp_text: str
    data_json: str
    fingerprint: str
    received_at: datetime
    authorization_id: str | None
    costs_json: str | None


def _chunks(items: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


# PostgreSQL: the whole batch as one JSON array of rows, expanded in the order
# given. One short statement with three parameters whatever the batch size:
# PostgreSQL parses the JSON in C, where the driver would otherwise quote
# every element of ten text arrays in Python, and `data` and `costs` are
# spliced into it as the canonical text they already are. Unpacked as jsonb,
# which is parsed once: on a `json` value every `->>` parses the row's text
# again from its start (three times the server's CPU for wide rows).
_PG_INSERT_EVENTS = sa.text(
    """
    INSERT INTO events (organization_id, id, customer_id, type, timestamp, data,
                        fingerprint, received_at, authorization_id, costs)
    SELECT :organization_id, u.row->>0, u.row->>1, u.row->>2, CAST(u.row->>3 AS timestamptz),
           CAST(u.row->4 AS jsonb), u.row->>5, :received_at, u.row->>6,
           NULLIF(CAST(u.row->7 AS jsonb), 'null')
    FROM jsonb_array_elements(CAST(:rows AS jsonb)) WITH ORDINALITY AS u(row, n)
    ORDER BY u.n
    ON CONFLICT DO NOTHING
    RETURNING id
    """
).columns(id=sa.String())


class EventRepository:
    """Events of one organization."""

    def __init__(self, session: AsyncSession, organization_id: str) -> None:
        self.session = session
        self.organization_id = organization_id
        self.postgresql = dialect_of(session) == "postgresql"

    async def insert_new(self, rows: Sequence[EventRow]) -> set[str]:
        """Insert the rows whose id is not taken; return the ids inserted.

        An id another transaction is inserting makes this wait for it: if it
        commits, the row is not ours (not returned); if it rolls back, it is.
        Rows go in ascending id order, so two batches sharing ids lock them in
        the same order and cannot deadlock.
        """
        assert len({row.id for row in rows}) == len(rows), "one row per id"
        assert len({row.received_at for row in rows}) <= 1, "one batch, one arrival"
        if not rows:
            return set()
        ordered = sorted(rows, key=lambda row: row.id)
        if self.postgresql:
            return await self._insert_json(ordered)
        inserted: set[str] = set()
        for chunk in _chunks(ordered, limits.events_insert_rows_per_statement_max):
            inserted.update(await self._insert_values(chunk))
        return inserted

    async def _insert_json(self, rows: Sequence[EventRow]) -> set[str]:
        quote = values.quote_json
        text = ",".join(
            f"[{quote(row.id)},{quote(row.customer_id)},{quote(row.type)},"
            f'"{row.timestamp_text}",{row.data_json},"{row.fingerprint}",'
            f"{'null' if row.authorization_id is None else quote(row.authorization_id)},"
            f"{row.costs_json or 'null'}]"
            for row in rows
        )
        result = await self.session.execute(
            _PG_INSERT_EVENTS,
            {
                "organization_id": self.organization_id,
                "received_at": rows[0].received_at,
                "rows": f"[{text}]",
            },
        )
        return set(result.scalars())

    async def _insert_values(self, rows: Sequence[EventRow]) -> set[str]:
        """SQLite: an executemany that SQLAlchemy sends as one multi-row
        INSERT ("insertmanyvalues"). JSON goes in as the canonical text, bound
        as text rather than through the column's JSON type (which would
        serialize it again, and could not write a Decimal)."""
        table = Event.__table__
        statement = (
            upsert_insert(self.session, table)
            .values(
                data=sa.bindparam("p_data", type_=sa.Text()),
                costs=sa.bindparam("p_costs", type_=sa.Text()),
            )
            .on_conflict_do_nothing()
            .returning(table.c.id)
        )
        result = await self.session.execute(
            statement,
            [
                {
                    "organization_id": self.organization_id,
                    "id": row.id,
                    "customer_id": row.customer_id,
                    "type": row.type,
                    "timestamp": row.timestamp,
                    "p_data": row.data_json,
                    "fingerprint": row.fingerprint,
                    "received_at": row.received_at,
                    "authorization_id": row.authorization_id,
                    "p_costs": row.costs_json,
                }
                for row in rows
            ],
        )
        return set(result.scalars())

    async def fingerprints(self, ids: Collection[str]) -> dict[str, str]:
        """The stored fingerprint of each of these ids that exists."""
        if not ids:
            return {}
        if self.postgresql:
            # One array parameter rather than one parameter per id.
            any_id = sa.any_(sa.bindparam("ids", sorted(ids), type_=postgresql.ARRAY(sa.Text())))
            rows = await self.session.execute(
                sa.select(Event.id, Event.fingerprint).where(
                    Event.organization_id == self.organization_id, Event.id == any_id
                )
            )
            return {event_id: fingerprint for event_id, fingerprint in rows}
        found: dict[str, str] = {}
        for chunk in _chunks(sorted(ids), limits.events_lookup_ids_per_query_max):
            rows = await self.session.execute(
                sa.select(Event.id, Event.fingerprint).where(
                    Event.organization_id == self.organization_id, Event.id.in_(chunk)
                )
            )
            found.update({event_id: fingerprint for event_id, fingerprint in rows})
        return found


class MeterRepository:
    """Meters of one organization."""

    def __init__(self, session: AsyncSession, organization_id: str) -> None:
        self.session = session
        self.organization_id = organization_id

    async def insert_if_absent(self, meter: Meter) -> bool:
        """Insert unless the code is taken; say whether it was inserted."""
        assert meter.organization_id == self.organization_id
        statement = (
            upsert_insert(self.session, Meter)
            .values(
                id=meter.id,
                organization_id=meter.organization_id,
                code=meter.code,
                name=meter.name,
                event_type=meter.event_type,
                aggregation=meter.aggregation,
                field=meter.field,
                filters=meter.filters,
                group_by=meter.group_by,
                created_at=meter.created_at,
            )
            .on_conflict_do_nothing()
            # RETURNING, not rowcount: psycopg reports -1 for this INSERT.
            .returning(Meter.id)
        )
        return (await self.session.execute(statement)).first() is not None

    async def count(self) -> int:
        count = await self.session.scalar(
            sa.select(sa.func.count()).where(Meter.organization_id == self.organization_id)
        )
        return int(count or 0)

    async def get_by_code(self, code: str) -> Meter | None:
        return await self.session.scalar(
            sa.select(Meter).where(
                Meter.organization_id == self.organization_id, Meter.code == code
            )
        )

    async def list_page(self, limit: int, starting_after: str | None) -> list[Meter]:
        query = sa.select(Meter).where(Meter.organization_id == self.organization_id)
        if starting_after is not None:
            query = query.where(Meter.id < starting_after)
        return list(await self.session.scalars(query.order_by(Meter.id.desc()).limit(limit)))

    async def for_event_types(self, event_types: Collection[str]) -> list[Meter]:
        if not event_types:
            return []
        return list(
            await self.session.scalars(
                sa.select(Meter).where(
                    Meter.organization_id == self.organization_id,
                    Meter.event_type.in_(sorted(event_types)),
                )
            )
        )


@dataclass(frozen=True, slots=True)
class UsageQuery:
    event_type: str
    aggregation: str
    field: tuple[str, ...] | None
    filters: dict[tuple[str, ...], list[str]]
    customer_id: str | None
    start: datetime
    end: datetime
    granularity: str | None
    group_by: tuple[tuple[str, ...], ...]
    # The buckets [start, end) is cut into, in order (one without granularity).
    ranges: tuple[tuple[datetime, datetime], ...]


@dataclass(frozen=True, slots=True)
class UsageCell:
    """One (bucket, group) aggregate. `bucket` is an instant in the bucket
    (its calendar start or its clipped start), or None without granularity."""

    bucket: datetime | None
    group: tuple[str | None, ...]
    value: Decimal | None


class TooManyRows(Exception):
    """The query would answer more than `limits.usage_rows_max` cells."""


class UsageRepository:
    """Aggregates over one organization's events."""

    def __init__(self, session: AsyncSession, organization_id: str) -> None:
        self.session = session
        self.organization_id = organization_id
        self.postgresql = dialect_of(session) == "postgresql"

    # --- reading `data` -----------------------------------------------------

    def _sqlite_path(self, path: tuple[str, ...]) -> sa.BindParameter[str]:
        # Segments are [A-Za-z0-9_-]+ (values.parse_path), safe to quote.
        return sa.literal("$" + "".join(f'."{segment}"' for segment in path), sa.Text())

    def _text_at(self, path: tuple[str, ...]) -> sa.ColumnElement[str | None]:
        """`values.text_of` of the value at `path`, in SQL."""
        if self.postgresql:
            return sa.func.jsonb_extract_path_text(Event.data, *path, type_=sa.Text())
        json_path = self._sqlite_path(path)
        return sa.case(
            (
                sa.func.json_type(Event.data, json_path) == "text",
                sa.func.json_extract(Event.data, json_path),
            ),
            (sa.func.json_type(Event.data, json_path) == "null", sa.null()),
            else_=Event.data.op("->", return_type=sa.Text())(json_path),
        )

    def _pg_number_at(self, path: tuple[str, ...]) -> sa.ColumnElement[Decimal | None]:
        """`values.numeric_value` of the value at `path`, in PostgreSQL."""
        kind = sa.func.jsonb_typeof(sa.func.jsonb_extract_path(Event.data, *path))
        text = sa.func.jsonb_extract_path_text(Event.data, *path, type_=sa.Text())
        as_number = sa.cast(text, sa.Numeric())
        return sa.case(
            (kind == "number", as_number),
            (sa.and_(kind == "string", text.regexp_match(_PG_DECIMAL_STRING_RE)), as_number),
            else_=sa.null(),
        )

    def _bucket(self, granularity: str | None) -> sa.ColumnElement[Any]:
        if granularity is None:
            return sa.literal(0, sa.Integer())
        if self.postgresql:
            return sa.func.date_trunc(
                granularity, Event.timestamp, "UTC", type_=sa.DateTime(timezone=True)
            )
        return sa.func.substr(
            Event.timestamp, 1, _SQLITE_BUCKET_PREFIX[granularity], type_=sa.Text()
        )

    def _bucket_start(self, key: Any, granularity: str | None) -> datetime | None:
        if granularity is None:
            return None
        if isinstance(key, datetime):
            return key.astimezone(UTC)
        assert isinstance(key, str), key
        return datetime.strptime(key, _SQLITE_BUCKET_FORMAT[granularity]).replace(tzinfo=UTC)

    # --- the query ----------------------------------------------------------

    def _conditions(self, query: UsageQuery) -> list[sa.ColumnElement[bool]]:
        """Every condition but the time range."""
        conditions = [
            Event.organization_id == self.organization_id,
            Event.type == query.event_type,
        ]
        if query.customer_id is not None:
            conditions.append(Event.customer_id == query.customer_id)
        for path, allowed in query.filters.items():
            conditions.append(self._text_at(path).in_(allowed))
        return conditions

    def _matching(
        self, query: UsageQuery, *columns: sa.ColumnElement[Any] | InstrumentedAttribute[Any]
    ) -> sa.Select[Any]:
        return sa.select(*columns).where(
            *self._conditions(query),
            Event.timestamp >= query.start,
            Event.timestamp < query.end,
        )

    async def aggregate(self, query: UsageQuery) -> list[UsageCell]:
        """One cell per (bucket, group) that has matching events.

        Raises TooManyRows past `limits.usage_rows_max` cells.
        """
        numeric = query.aggregation in ("sum", "max", "min", "latest")
        if numeric and not self.postgresql:
            return await self._aggregate_in_python(query)
        if query.aggregation == "latest" and not query.group_by:
            return await self._pg_latest_per_bucket(query)
        bucket = self._bucket(query.granularity).label("bucket")
        groups = [self._text_at(path).label(f"g{i}") for i, path in enumerate(query.group_by)]
        value: sa.ColumnElement[Any]
        if query.aggregation == "count":
            value = sa.literal(1, sa.Integer())
        elif query.aggregation == "unique_count":
            assert query.field is not None
            value = self._text_at(query.field)
        else:
            assert query.field is not None
            value = self._pg_number_at(query.field)
        inner = self._matching(
            query, bucket, *groups, value.label("v"), Event.timestamp, Event.received_at, Event.id
        ).subquery("matching")
        keys = [inner.c.bucket, *(inner.c[f"g{i}"] for i in range(len(groups)))]
        outer = (
            sa.select(*keys, self._aggregate(query.aggregation, inner).label("value"))
            .group_by(*keys)
            .order_by(*keys)
            .limit(limits.usage_rows_max + 1)
        )
        rows = (await self.session.execute(outer)).all()
        if len(rows) > limits.usage_rows_max:
            raise TooManyRows
        cells = []
        for row in rows:
            raw = row[-1]
            number = None if raw is None else Decimal(raw)
            if number is None and query.aggregation == "sum":
                number = Decimal(0)
            cells.append(
                UsageCell(
                    bucket=self._bucket_start(row[0], query.granularity),
                    group=tuple(row[1:-1]),
                    value=number,
                )
            )
        return cells

    async def _pg_latest_per_bucket(self, query: UsageQuery) -> list[UsageCell]:
        """latest without groups: per bucket, the newest numeric event, read
        newest-first along the usage index and stopped at the first one,
        instead of sorting every event of the range."""
        assert self.postgresql
        assert query.field is not None
        instants = postgresql.ARRAY(sa.DateTime(timezone=True))
        buckets = (
            sa.func.unnest(
                sa.bindparam("starts", [lo for lo, _ in query.ranges], type_=instants),
                sa.bindparam("ends", [hi for _, hi in query.ranges], type_=instants),
            )
            .table_valued("lo", "hi", with_ordinality="n")
            .render_derived(name="buckets")
        )
        number = self._pg_number_at(query.field)
        newest = (
            sa.select(number.label("value"))
            .where(
                *self._conditions(query),
                Event.timestamp >= buckets.c.lo,
                Event.timestamp < buckets.c.hi,
                number.is_not(None),
            )
            .order_by(
                Event.timestamp.desc(), Event.received_at.desc(), Event.id.collate("C").desc()
            )
            .limit(1)
            .lateral("newest")
        )
        rows = await self.session.execute(
            sa.select(buckets.c.n, newest.c.value).select_from(buckets).join(newest, sa.true())
        )
        cells = []
        for n, value in rows:
            lo = query.ranges[int(n) - 1][0]
            cells.append(
                UsageCell(
                    bucket=None if query.granularity is None else lo,
                    group=(),
                    value=Decimal(value),
                )
            )
        return cells

    def _aggregate(self, aggregation: str, inner: sa.Subquery) -> sa.ColumnElement[Any]:
        v = inner.c.v
        if aggregation == "count":
            return sa.func.count()
        if aggregation == "unique_count":
            return sa.func.count(sa.distinct(v))
        if aggregation == "sum":
            return sa.func.sum(v)
        if aggregation == "max":
            return sa.func.max(v)
        if aggregation == "min":
            return sa.func.min(v)
        assert aggregation == "latest", aggregation
        assert self.postgresql
        # Values first (NULLs, the non-numbers, last), then newest first; the
        # first element is the latest numeric value, or NULL if there is none.
        ordered = sa.func.array_agg(
            postgresql.aggregate_order_by(
                v,
                v.is_(None),
                inner.c.timestamp.desc(),
                inner.c.received_at.desc(),
                inner.c.id.collate("C").desc(),
            ),
            type_=postgresql.ARRAY(sa.Numeric()),
        )
        return ordered[1]

    async def _aggregate_in_python(self, query: UsageQuery) -> list[UsageCell]:
        assert query.field is not None
        json_path = self._sqlite_path(query.field)
        bucket = self._bucket(query.granularity).label("bucket")
        groups = [self._text_at(path).label(f"g{i}") for i, path in enumerate(query.group_by)]
        select = self._matching(
            query,
            bucket,
            *groups,
            sa.func.json_type(Event.data, json_path).label("kind"),
            self._text_at(query.field).label("text"),
            Event.timestamp,
            Event.received_at,
            Event.id,
        )
        cells: dict[tuple[Any, ...], Decimal | None] = {}
        latest_at: dict[tuple[Any, ...], tuple[datetime, datetime, str]] = {}
        result = await self.session.stream(select)
        async for partition in result.partitions(5000):
            for row in partition:
                key = tuple(row[: 1 + len(groups)])
                kind, text, timestamp, received_at, event_id = row[1 + len(groups) :]
                number = _sqlite_number(kind, text)
                if key not in cells:
                    if len(cells) >= limits.usage_rows_max:
                        await result.close()
                        raise TooManyRows
                    cells[key] = Decimal(0) if query.aggregation == "sum" else None
                if number is None:
                    continue
                current = cells[key]
                if query.aggregation == "sum":
                    assert current is not None
                    cells[key] = values.EXACT.add(current, number)
                elif query.aggregation == "max":
                    cells[key] = number if current is None else max(current, number)
                elif query.aggregation == "min":
                    cells[key] = number if current is None else min(current, number)
                else:
                    at = (timestamp, received_at, event_id)
                    if key not in latest_at or at > latest_at[key]:
                        latest_at[key] = at
                        cells[key] = number
        return [
            UsageCell(
                bucket=self._bucket_start(key[0], query.granularity),
                group=tuple(key[1:]),
                value=value,
            )
            for key, value in sorted(cells.items(), key=lambda item: _sort_key(item[0]))
        ]


def _sqlite_number(kind: str | None, text: str | None) -> Decimal | None:
    if text is None:
        return None
    if kind in ("integer", "real"):
        return Decimal(text)
    if kind == "text":
        return values.numeric_value(text)
    return None


def _sort_key(key: tuple[Any, ...]) -> tuple[Any, ...]:
    # None (a missing group value) sorts first, as NULLS FIRST would.
    return tuple(itertools.chain.from_iterable((item is not None, item or "") for item in key))


# --- rollups -------------------------------------------------------------------

#: (meter id, customer id, UTC hour, group values as a JSON array of texts)
RollupKey = tuple[str, str, datetime, str]


@dataclass(slots=True)
class Rollup:
    """One rollup row's figures, or what a batch adds to one."""

    event_count: int = 0
    value_sum: Decimal = Decimal(0)
    value_min: Decimal | None = None
    value_max: Decimal | None = None

    def add_event(self, number: Decimal | None) -> None:
        self.event_count += 1
        if number is not None:
            self.value_sum = values.EXACT.add(self.value_sum, number)
            self.value_min = number if self.value_min is None else min(self.value_min, number)
            self.value_max = number if self.value_max is None else max(self.value_max, number)

    def merge(self, other: Rollup) -> None:
        self.event_count += other.event_count
        self.value_sum = values.EXACT.add(self.value_sum, other.value_sum)
        for number in (other.value_min, other.value_max):
            if number is not None:
                self.value_min = number if self.value_min is None else min(self.value_min, number)
                self.value_max = number if self.value_max is None else max(self.value_max, number)

    def columns(self, postgresql: bool) -> dict[str, Any]:
        """The row's value columns as the backend stores them."""

        def stored(number: Decimal | None) -> Decimal | str | None:
            if number is None or postgresql:
                return number
            return values.decimal_text(number)

        return {
            "event_count": self.event_count,
            "value_sum": stored(self.value_sum),
            "value_min": stored(self.value_min),
            "value_max": stored(self.value_max),
        }

    @classmethod
    def of_row(cls, count: int, total: Any, low: Any, high: Any) -> Rollup:
        def number(value: Any) -> Decimal | None:
            return None if value is None else Decimal(value)

        return cls(int(count), Decimal(total), number(low), number(high))


# PostgreSQL: a batch's rollups as one JSON array of rows, added to what is
# there in one statement, rows in key order so that two batches touching the
# same rows lock them in the same order. Numbers travel as JSON strings.
_PG_ADD_ROLLUPS = sa.text(
    """
    INSERT INTO usage_rollups AS r (organization_id, meter_id, customer_id, hour, group_values,
                                    event_count, value_sum, value_min, value_max)
    SELECT :organization_id, u.row->>0, u.row->>1, CAST(u.row->>2 AS timestamptz), u.row->>3,
           CAST(u.row->>4 AS bigint), CAST(u.row->>5 AS numeric), CAST(u.row->>6 AS numeric),
           CAST(u.row->>7 AS numeric)
    FROM jsonb_array_elements(CAST(:rows AS jsonb)) WITH ORDINALITY AS u(row, n)
    ORDER BY u.n
    ON CONFLICT (organization_id, meter_id, customer_id, hour, group_values) DO UPDATE SET
        event_count = r.event_count + excluded.event_count,
        value_sum = r.value_sum + excluded.value_sum,
        value_min = LEAST(r.value_min, excluded.value_min),
        value_max = GREATEST(r.value_max, excluded.value_max)
    """
)


# PostgreSQL: what a batch adds, appended as rows of their own (see
# `UsageRollupDelta`): no row of another transaction is locked or waited for.
_PG_ADD_ROLLUP_DELTAS = sa.text(
    """
    INSERT INTO usage_rollup_deltas (organization_id, meter_id, customer_id, hour, group_values,
                                     event_count, value_sum, value_min, value_max)
    SELECT :organization_id, u.row->>0, u.row->>1, CAST(u.row->>2 AS timestamptz), u.row->>3,
           CAST(u.row->>4 AS bigint), CAST(u.row->>5 AS numeric), CAST(u.row->>6 AS numeric),
           CAST(u.row->>7 AS numeric)
    FROM jsonb_array_elements(CAST(:rows AS jsonb)) AS u(row)
    """
)

# PostgreSQL: the oldest committed deltas (up to :limit) added to the rollups
# and deleted, in one statement, so that a reader sees each delta in exactly
# one of the two tables. SKIP LOCKED: concurrent compactions take disjoint
# rows. The sums go in key order, as `_PG_ADD_ROLLUPS` adds, so two
# transactions adding to the same rows lock them in the same order.
_PG_COMPACT_ROLLUP_DELTAS = sa.text(
    """
    WITH moved AS (
        DELETE FROM usage_rollup_deltas
        WHERE id IN (
            SELECT id FROM usage_rollup_deltas ORDER BY id LIMIT :limit FOR UPDATE SKIP LOCKED
        )
        RETURNING organization_id, meter_id, customer_id, hour, group_values,
                  event_count, value_sum, value_min, value_max
    ), added AS (
        INSERT INTO usage_rollups AS r (organization_id, meter_id, customer_id, hour,
                                        group_values, event_count, value_sum, value_min,
                                        value_max)
        SELECT organization_id, meter_id, customer_id, hour, group_values, sum(event_count),
               sum(value_sum), min(value_min), max(value_max)
        FROM moved
        GROUP BY organization_id, meter_id, customer_id, hour, group_values
        ORDER BY organization_id, meter_id, customer_id, hour, group_values
        ON CONFLICT (organization_id, meter_id, customer_id, hour, group_values) DO UPDATE SET
            event_count = r.event_count + excluded.event_count,
            value_sum = r.value_sum + excluded.value_sum,
            value_min = LEAST(r.value_min, excluded.value_min),
            value_max = GREATEST(r.value_max, excluded.value_max)
    )
    SELECT count(*) FROM moved
    """
)


async def compact_rollup_deltas(session: AsyncSession, limit: int) -> int:
    """Move up to `limit` of the oldest rollup deltas, of every organization,
    into the rollups; how many moved. Nothing to do on SQLite."""
    if dialect_of(session) != "postgresql":
        return 0
    moved = await session.scalar(_PG_COMPACT_ROLLUP_DELTAS, {"limit": limit})
    return int(moved or 0)


def _pg_rollup_rows(rollups: dict[RollupKey, Rollup]) -> str:
    """Rollups as the JSON array of rows the PostgreSQL statements read, in
    key order; numbers as JSON strings (exact)."""
    return json.dumps(
        [
            [
                meter_id,
                customer_id,
                hour.isoformat(),
                group,
                rollup.event_count,
                values.decimal_text(rollup.value_sum),
                None if rollup.value_min is None else values.decimal_text(rollup.value_min),
                None if rollup.value_max is None else values.decimal_text(rollup.value_max),
            ]
            for (meter_id, customer_id, hour, group), rollup in sorted(
                rollups.items(), key=lambda item: item[0]
            )
        ]
    )


class RollupRepository:
    """Usage rollups of one organization."""

    def __init__(self, session: AsyncSession, organization_id: str) -> None:
        self.session = session
        self.organization_id = organization_id
        self.postgresql = dialect_of(session) == "postgresql"

    async def meters_after_insert(
        self, loaded: Sequence[Meter], event_types: Collection[str]
    ) -> list[Meter]:
        """The meters of these event types, as seen after the events were
        inserted (`loaded` is what the batch read before).

        PostgreSQL reads them again: a meter committed between that read and
        the insert built its rollups without this batch's events (see
        `rebuild`), so the batch must add them itself. SQLite runs the whole
        batch as one writer (BEGIN IMMEDIATE); nothing can commit in between.
        """
        if not self.postgresql:
            return [meter for meter in loaded if meter.event_type in event_types]
        return list(
            await self.session.scalars(
                sa.select(Meter).where(
                    Meter.organization_id == self.organization_id,
                    Meter.event_type.in_(sorted(event_types)),
                )
            )
        )

    async def add(self, rollups: dict[RollupKey, Rollup]) -> None:
        """Add these figures to the stored rows, creating the missing ones."""
        if not rollups:
            return
        if self.postgresql:
            await self.session.execute(
                _PG_ADD_ROLLUPS,
                {"organization_id": self.organization_id, "rows": _pg_rollup_rows(rollups)},
            )
            return
        # SQLite has no exact decimal to add in SQL; it also runs one writer
        # at a time (BEGIN IMMEDIATE), so read, add in Python, write back.
        ordered = sorted(rollups.items(), key=lambda item: item[0])
        for chunk in _chunks(ordered, limits.events_lookup_ids_per_query_max // 4):
            await self._sqlite_add(dict(chunk))

    async def add_ingested(self, rollups: dict[RollupKey, Rollup]) -> None:
        """Add what an ingest transaction's events contribute: on PostgreSQL
        as deltas (see `UsageRollupDelta`), on SQLite straight to the rows."""
        if not rollups:
            return
        if not self.postgresql:
            await self.add(rollups)
            return
        await self.session.execute(
            _PG_ADD_ROLLUP_DELTAS,
            {"organization_id": self.organization_id, "rows": _pg_rollup_rows(rollups)},
        )

    async def _sqlite_add(self, rollups: dict[RollupKey, Rollup]) -> None:
        table = UsageRollup.__table__
        keys = list(rollups)
        stored = await self.session.execute(
            sa.select(
                table.c.meter_id,
                table.c.customer_id,
                table.c.hour,
                table.c.group_values,
                table.c.event_count,
                table.c.value_sum,
                table.c.value_min,
                table.c.value_max,
            ).where(
                table.c.organization_id == self.organization_id,
                sa.tuple_(
                    table.c.meter_id, table.c.customer_id, table.c.hour, table.c.group_values
                ).in_(keys),
            )
        )
        merged = {
            key: Rollup(rollup.event_count, rollup.value_sum, rollup.value_min, rollup.value_max)
            for key, rollup in rollups.items()
        }
        for meter_id, customer_id, hour, group, *figures in stored:
            merged[(meter_id, customer_id, hour, group)].merge(Rollup.of_row(*figures))
        statement = upsert_insert(self.session, table)
        statement = statement.on_conflict_do_update(
            index_elements=[
                table.c.organization_id,
                table.c.meter_id,
                table.c.customer_id,
                table.c.hour,
                table.c.group_values,
            ],
            set_={
                name: statement.excluded[name]
                for name in ("event_count", "value_sum", "value_min", "value_max")
            },
        )
        await self.session.execute(
            statement,
            [
                {
                    "organization_id": self.organization_id,
                    "meter_id": meter_id,
                    "customer_id": customer_id,
                    "hour": hour,
                    "group_values": group,
                    **rollup.columns(False),
                }
                for (meter_id, customer_id, hour, group), rollup in merged.items()
            ],
        )

    async def rebuild(
        self,
        meter: Meter,
        rollups_of: Callable[
            [Iterable[Meter], Iterable[tuple[str, str, datetime, dict[str, Any]]]],
            dict[RollupKey, Rollup],
        ],
    ) -> None:
        """Write a new meter's rollups from the events stored so far.

        PostgreSQL: the events table is locked in SHARE mode first, which
        waits for every ingest transaction that has inserted events to end
        and holds new inserts back until this one commits. The aggregate
        then reads every committed event; an ingest blocked by the lock reads
        the meters after its insert, so it finds this meter and adds its own
        events. SQLite writes one transaction at a time, so it needs neither.
        """
        assert meter.organization_id == self.organization_id
        if not self.postgresql:
            found = await self.session.stream(
                sa.select(
                    Event.customer_id,
                    Event.type,
                    Event.timestamp,
                    # The stored text, not the JSON type's floats.
                    sa.type_coerce(Event.data, sa.Text()),
                ).where(
                    Event.organization_id == self.organization_id,
                    Event.type == meter.event_type,
                )
            )
            rows: list[tuple[str, str, datetime, dict[str, Any]]] = []
            async for partition in found.partitions(5000):
                rows.extend(
                    (customer_id, event_type, timestamp, values.loads(text))
                    for customer_id, event_type, timestamp, text in partition
                )
            await self.add(rollups_of([meter], rows))
            return
        await self.session.execute(sa.text("LOCK TABLE events IN SHARE MODE"))
        usage = UsageRepository(self.session, self.organization_id)
        groups = [
            usage._text_at(_path_of(key)).label(f"g{i}") for i, key in enumerate(meter.group_by)
        ]
        number = (
            sa.cast(sa.null(), sa.Numeric())
            if meter.field is None
            else usage._pg_number_at(_path_of(meter.field))
        )
        hour = sa.func.date_trunc(
            "hour", Event.timestamp, "UTC", type_=sa.DateTime(timezone=True)
        ).label("hour")
        conditions = [
            Event.organization_id == self.organization_id,
            Event.type == meter.event_type,
            *(usage._text_at(_path_of(key)).in_(allowed) for key, allowed in meter.filters.items()),
        ]
        keys = [Event.customer_id, hour, *groups]
        built: dict[RollupKey, Rollup] = {}
        width = len(groups)
        grouped = await self.session.stream(
            sa.select(
                *keys,
                sa.func.count(),
                sa.func.coalesce(sa.func.sum(number), 0),
                sa.func.min(number),
                sa.func.max(number),
            )
            .where(*conditions)
            .group_by(*keys)
        )
        async for chunk in grouped.partitions(5000):
            for row in chunk:
                customer_id, at = str(row[0]), row[1]
                assert isinstance(at, datetime)
                group = values.canonical_json(list(row[2 : 2 + width]))
                key = (meter.id, customer_id, at.astimezone(UTC), group)
                count, total, low, high = row[2 + width :]
                assert isinstance(count, int)
                rollup = Rollup.of_row(count, total, low, high)
                if key in built:
                    built[key].merge(rollup)
                else:
                    built[key] = rollup
                if len(built) >= 10_000:
                    await self.add(built)
                    built = {}
        await self.add(built)

    async def aggregate(
        self,
        meter: Meter,
        *,
        customer_id: str | None,
        start: datetime,
        end: datetime,
        granularity: str | None,
        positions: Sequence[int],
    ) -> list[UsageCell]:
        """One cell per (bucket, group) of the rolled-up hours in [start, end),
        grouped by the meter's group_by keys at `positions`."""
        table = cast(sa.Table, UsageRollup.__table__)

        def within(rows: sa.Table) -> list[sa.ColumnElement[bool]]:
            conditions = [
                rows.c.organization_id == self.organization_id,
                rows.c.meter_id == meter.id,
                rows.c.hour >= start,
                rows.c.hour < end,
            ]
            if customer_id is not None:
                conditions.append(rows.c.customer_id == customer_id)
            return conditions

        aggregation = meter.aggregation
        if self.postgresql:
            # The rollups and the deltas not yet moved into them, in one
            # statement: one snapshot, so each delta counts exactly once.
            columns = ("hour", "group_values", "event_count", "value_sum", "value_min", "value_max")
            deltas = cast(sa.Table, UsageRollupDelta.__table__)
            rolled = sa.union_all(
                *(
                    sa.select(*(rows.c[name] for name in columns)).where(*within(rows))
                    for rows in (table, deltas)
                )
            ).subquery("rolled_up")
            bucket: sa.ColumnElement[Any] = (
                sa.literal(0, sa.Integer())
                if granularity is None
                else sa.func.date_trunc(
                    granularity, rolled.c.hour, "UTC", type_=sa.DateTime(timezone=True)
                )
            )
            groups = [
                sa.cast(rolled.c.group_values, postgresql.JSONB())
                .op("->>", return_type=sa.Text())(sa.literal(position, sa.Integer()))
                .label(f"g{i}")
                for i, position in enumerate(positions)
            ]
            value = {
                "count": sa.func.sum(rolled.c.event_count),
                "sum": sa.func.sum(rolled.c.value_sum),
                "min": sa.func.min(rolled.c.value_min),
                "max": sa.func.max(rolled.c.value_max),
            }[aggregation]
            keys = [bucket.label("bucket"), *groups]
            rows = (
                await self.session.execute(
                    sa.select(*keys, value)
                    .group_by(*(key for key in keys))
                    .limit(limits.usage_rows_max + 1)
                )
            ).all()
            if len(rows) > limits.usage_rows_max:
                raise TooManyRows
            return [
                UsageCell(
                    bucket=None if granularity is None else row[0].astimezone(UTC),
                    group=tuple(row[1:-1]),
                    value=None if row[-1] is None else Decimal(row[-1]),
                )
                for row in rows
            ]
        # SQLite: the rolled-up rows are few (hours x groups); add them up in
        # Python, where the decimals are exact.
        cells: dict[tuple[Any, ...], Rollup] = {}
        result = await self.session.stream(
            sa.select(
                table.c.hour,
                table.c.group_values,
                table.c.event_count,
                table.c.value_sum,
                table.c.value_min,
                table.c.value_max,
            ).where(*within(table))
        )
        async for partition in result.partitions(5000):
            for hour, group_values, *figures in partition:
                group = json.loads(group_values)
                key = (
                    _bucket_floor(hour, granularity),
                    tuple(group[position] for position in positions),
                )
                if key not in cells:
                    if len(cells) >= limits.usage_rows_max:
                        await result.close()
                        raise TooManyRows
                    cells[key] = Rollup()
                cells[key].merge(Rollup.of_row(*figures))
        out = []
        for (bucket_start, group), rollup in cells.items():
            number: Decimal | None
            if aggregation == "count":
                number = Decimal(rollup.event_count)
            elif aggregation == "sum":
                number = rollup.value_sum
            else:
                number = rollup.value_min if aggregation == "min" else rollup.value_max
            out.append(UsageCell(bucket=bucket_start, group=group, value=number))
        return out


def _path_of(dotted: str) -> tuple[str, ...]:
    segments = values.parse_path(dotted)
    assert segments is not None, dotted
    return segments


def _bucket_floor(instant: datetime, granularity: str | None) -> datetime | None:
    if granularity is None:
        return None
    instant = instant.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
    if granularity == "hour":
        return instant
    instant = instant.replace(hour=0)
    return instant if granularity == "day" else instant.replace(day=1)
