"""All metering SQL. SQLite and PostgreSQL differ here and nowhere else.

Events are written set-based: `INSERT … ON CONFLICT DO NOTHING RETURNING id`
over the whole batch, ids in ascending order, so two batches that share ids
lock them in the same order and cannot deadlock. The primary key decides
which of two concurrent writers of an id wins; the loser's row is simply not
returned.

Events go in as one statement per batch: on PostgreSQL an `INSERT … SELECT
FROM unnest(arrays)` (ten array parameters, whatever the batch size), on
SQLite a multi-row VALUES. `data` travels as canonical JSON text, never
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
"""

from __future__ import annotations

import itertools
from collections.abc import Collection, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import InstrumentedAttribute

from billfold import limits
from billfold.db.engine import dialect_of, upsert_insert
from billfold.metering import values
from billfold.metering.models import Event, Meter

# PostgreSQL's reading of `values.numeric_value` for a string.
_PG_DECIMAL_STRING_RE = r"^-?[0-9]{1,40}(\.[0-9]{1,40})?$"
# SQLite keeps datetimes as "YYYY-MM-DD HH:MM:SS.ffffff"; a bucket is a prefix.
_SQLITE_BUCKET_PREFIX = {"hour": 13, "day": 10, "month": 7}
_SQLITE_BUCKET_FORMAT = {"hour": "%Y-%m-%d %H", "day": "%Y-%m-%d", "month": "%Y-%m"}


@dataclass(frozen=True, slots=True)
class EventRow:
    """An event ready to insert, its JSON already canonical text."""

    id: str
    customer_id: str
    type: str
    timestamp: datetime
    data_json: str
    fingerprint: str
    received_at: datetime
    authorization_id: str | None
    costs_json: str | None


def _chunks(items: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


# PostgreSQL: the whole batch as ten arrays, unnested in the order given. One
# short statement whatever the batch size: no 10,000-parameter text for the
# driver to parse, and a plan PostgreSQL can cache.
_PG_INSERT_EVENTS = sa.text(
    """
    INSERT INTO events (organization_id, id, customer_id, type, timestamp, data,
                        fingerprint, received_at, authorization_id, costs)
    SELECT :organization_id, u.id, u.customer_id, u.type, u.timestamp, CAST(u.data AS jsonb),
           u.fingerprint, :received_at, u.authorization_id, CAST(u.costs AS jsonb)
    FROM unnest(
        CAST(:ids AS text[]), CAST(:customer_ids AS text[]), CAST(:types AS text[]),
        CAST(:timestamps AS timestamptz[]), CAST(:data AS text[]),
        CAST(:fingerprints AS text[]), CAST(:authorization_ids AS text[]),
        CAST(:costs AS text[])
    ) WITH ORDINALITY
      AS u(id, customer_id, type, timestamp, data, fingerprint, authorization_id, costs, n)
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
            return await self._insert_unnest(ordered)
        inserted: set[str] = set()
        for chunk in _chunks(ordered, limits.events_insert_rows_per_statement_max):
            inserted.update(await self._insert_values(chunk))
        return inserted

    async def _insert_unnest(self, rows: Sequence[EventRow]) -> set[str]:
        result = await self.session.execute(
            _PG_INSERT_EVENTS,
            {
                "organization_id": self.organization_id,
                "received_at": rows[0].received_at,
                "ids": [row.id for row in rows],
                "customer_ids": [row.customer_id for row in rows],
                "types": [row.type for row in rows],
                "timestamps": [row.timestamp for row in rows],
                "data": [row.data_json for row in rows],
                "fingerprints": [row.fingerprint for row in rows],
                "authorization_ids": [row.authorization_id for row in rows],
                "costs": [row.costs_json for row in rows],
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
