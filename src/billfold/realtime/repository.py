"""All real-time billing SQL: what a customer is subscribed to, running
period totals (locked while rated), and the fee rows."""

from __future__ import annotations

import json
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, cast

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from billfold.catalog.models import ProductVersion
from billfold.db.arrays import text_array
from billfold.db.base import UTCDateTime
from billfold.db.bulk import insert_rows
from billfold.db.engine import dialect_of, upsert_insert
from billfold.db.pipeline import Statement, run_together
from billfold.frozen import FrozenCache
from billfold.metering.models import Meter
from billfold.realtime.models import EventFee, PeriodTotal
from billfold.subscriptions.models import Subscription


@dataclass(frozen=True, slots=True, order=True)
class TotalKey:
    subscription_id: str
    price_code: str
    #: −1 for the base price.
    dimension: int
    period_start: datetime


@dataclass(slots=True)
class Total:
    quantity: Decimal
    event_count: int


# PostgreSQL: the keys of a request's totals travel as one JSON array of
# [subscription id, price code, dimension, period start] rows, so each
# statement's text is the same whatever the number of keys: compiled and
# prepared once per process, where an OR list or a VALUES list of literals
# was compiled again for every request (~20 us per billed event). Unpacked as
# jsonb, parsed once (a `json` value is parsed again by every `->>`).
# Rows go in key order, as the multi-row VALUES it replaces inserted them.
_PG_INSERT_TOTALS = sa.text(
    """
    INSERT INTO realtime_period_totals (organization_id, subscription_id, price_code,
                                        dimension, period_start, quantity, event_count,
                                        updated_at)
    SELECT :organization_id, k.row->>0, k.row->>1, CAST(k.row->>2 AS integer),
           CAST(k.row->>3 AS timestamptz), '0', 0, :now
    FROM jsonb_array_elements(CAST(:keys AS jsonb)) WITH ORDINALITY AS k(row, n)
    ORDER BY k.n
    ON CONFLICT DO NOTHING
    """
)
_PG_SELECT_TOTALS = """
    SELECT t.subscription_id, t.price_code, t.dimension, t.period_start, t.quantity,
           t.event_count
    FROM realtime_period_totals AS t
    JOIN jsonb_array_elements(CAST(:keys AS jsonb)) AS k(row)
      ON t.subscription_id = k.row->>0 AND t.price_code = k.row->>1
     AND t.dimension = CAST(k.row->>2 AS integer)
     AND t.period_start = CAST(k.row->>3 AS timestamptz)
    WHERE t.organization_id = :organization_id
    ORDER BY t.subscription_id, t.price_code, t.dimension, t.period_start
"""
_PG_READ_TOTALS = sa.text(_PG_SELECT_TOTALS).columns(period_start=UTCDateTime())
# Locked in key order (the sort runs below the row locks).
_PG_LOCK_TOTALS = sa.text(_PG_SELECT_TOTALS + "FOR UPDATE OF t").columns(period_start=UTCDateTime())
# [subscription id, price code, dimension, period start, quantity, event count]
_PG_SAVE_TOTALS = sa.text(
    """
    UPDATE realtime_period_totals AS t
    SET quantity = m.row->>4, event_count = CAST(m.row->>5 AS bigint), updated_at = :now
    FROM jsonb_array_elements(CAST(:rows AS jsonb)) AS m(row)
    WHERE t.organization_id = :organization_id
      AND t.subscription_id = m.row->>0 AND t.price_code = m.row->>1
      AND t.dimension = CAST(m.row->>2 AS integer)
      AND t.period_start = CAST(m.row->>3 AS timestamptz)
    """
)


def _instant(value: datetime) -> str:
    # As the column type does: a naive datetime names no instant.
    if value.tzinfo is None:
        raise ValueError("naive datetime given to a UTCDateTime column")
    return value.isoformat()


def _key_row(key: TotalKey) -> list[Any]:
    return [key.subscription_id, key.price_code, key.dimension, _instant(key.period_start)]


@dataclass(frozen=True, slots=True)
class MeterRule:
    """What real-time rating needs of a meter: which events it counts, and how."""

    code: str
    event_type: str
    aggregation: str
    field: str | None
    filters: dict[str, Any]


def _subscriptions(postgresql: bool) -> sa.Select[Subscription]:
    """Built once: building a statement costs more than running this one."""
    query = sa.select(Subscription)
    if postgresql:
        wanted = text_array("customer_ids")
        query = query.join(wanted, wanted.c.value == Subscription.customer_id)
    else:
        query = query.where(
            Subscription.customer_id.in_(sa.bindparam("customer_ids", expanding=True))
        )
    return query.where(
        Subscription.organization_id == sa.bindparam("organization_id"),
        Subscription.start_at <= sa.bindparam("latest"),
        sa.or_(
            Subscription.canceled_at.is_(None),
            Subscription.canceled_at > sa.bindparam("earliest"),
        ),
    ).order_by(Subscription.id)


_PG_SUBSCRIPTIONS = _subscriptions(postgresql=True)
_SUBSCRIPTIONS = _subscriptions(postgresql=False)

#: Immutable rows, by (organization, product id, number) and (organization, code).
_VERSIONS: FrozenCache[tuple[str, str, int], Sequence[Any]] = FrozenCache()
_METERS: FrozenCache[tuple[str, str], MeterRule] = FrozenCache()


class RealtimeRepository:
    def __init__(self, session: AsyncSession, organization_id: str) -> None:
        self.session = session
        self.organization_id = organization_id
        self.postgresql = dialect_of(session) == "postgresql"

    async def subscriptions(
        self, customer_ids: Collection[str], earliest: datetime, latest: datetime
    ) -> list[Subscription]:
        """Subscriptions of these customers that may cover an instant in
        [earliest, latest]: started by `latest`, not canceled before `earliest`."""
        if not customer_ids:
            return []
        window = {
            "organization_id": self.organization_id,
            "customer_ids": sorted(set(customer_ids)),
            "earliest": earliest,
            "latest": latest,
        }
        query = _PG_SUBSCRIPTIONS if self.postgresql else _SUBSCRIPTIONS
        return list(await self.session.scalars(query, window))

    async def versions(
        self, keys: Collection[tuple[str, int]]
    ) -> dict[tuple[str, int], Sequence[Any]]:
        """The prices of these (product id, version number) pairs. A version
        never changes once written, so each is read once per process."""
        found: dict[tuple[str, int], Sequence[Any]] = {}
        missing: set[str] = set()
        for product_id, number in keys:
            cached = _VERSIONS.get((self.organization_id, product_id, number))
            if cached is None:
                missing.add(product_id)
            else:
                found[(product_id, number)] = cached
        if not missing:
            return found
        rows = await self.session.execute(
            sa.select(
                ProductVersion.product_id, ProductVersion.number, ProductVersion.prices
            ).where(
                ProductVersion.organization_id == self.organization_id,
                ProductVersion.product_id.in_(sorted(missing)),
            )
        )
        for product_id, number, prices in rows:
            frozen = tuple(prices)
            _VERSIONS.put((self.organization_id, product_id, number), frozen)
            if (product_id, number) in keys:
                found[(product_id, number)] = frozen
        return found

    async def meters(self, codes: Collection[str]) -> dict[str, MeterRule]:
        """These meters' definitions. A meter never changes once created, so
        each is read once per process."""
        found: dict[str, MeterRule] = {}
        missing: list[str] = []
        for code in sorted(codes):
            cached = _METERS.get((self.organization_id, code))
            if cached is None:
                missing.append(code)
            else:
                found[code] = cached
        if not missing:
            return found
        rows = await self.session.execute(
            sa.select(
                Meter.code, Meter.event_type, Meter.aggregation, Meter.field, Meter.filters
            ).where(Meter.organization_id == self.organization_id, Meter.code.in_(missing))
        )
        for code, event_type, aggregation, field, filters in rows:
            rule = MeterRule(code, event_type, aggregation, field, filters)
            _METERS.put((self.organization_id, code), rule)
            found[code] = rule
        return found

    def _where(self, keys: Sequence[TotalKey]) -> sa.ColumnElement[bool]:
        return sa.and_(
            PeriodTotal.organization_id == self.organization_id,
            sa.or_(
                *(
                    sa.and_(
                        PeriodTotal.subscription_id == key.subscription_id,
                        PeriodTotal.price_code == key.price_code,
                        PeriodTotal.dimension == key.dimension,
                        PeriodTotal.period_start == key.period_start,
                    )
                    for key in keys
                )
            ),
        )

    async def read_totals(self, keys: Collection[TotalKey]) -> dict[TotalKey, Total]:
        """Totals as they stand, unlocked (an estimate may read a moving total)."""
        return await self._select(sorted(keys), lock=False)

    def pg_read_totals(self, keys: Collection[TotalKey]) -> Statement | None:
        """`read_totals` as a statement to send with others (`run_together`),
        its rows for `totals_of`; None on SQLite or for no keys (then call
        `read_totals`)."""
        if not self.postgresql or not keys:
            return None
        return self._pg_select(sorted(keys), lock=False)

    def _pg_select(self, ordered: Sequence[TotalKey], *, lock: bool) -> Statement:
        return Statement(
            _PG_LOCK_TOTALS if lock else _PG_READ_TOTALS,
            {
                "organization_id": self.organization_id,
                "keys": json.dumps([_key_row(key) for key in ordered]),
            },
        )

    @staticmethod
    def totals_of(rows: Sequence[Sequence[Any]]) -> dict[TotalKey, Total]:
        """The totals in the rows of a `pg_read_totals` statement."""
        found: dict[TotalKey, Total] = {}
        for sub, code, dimension, start_at, quantity, count in rows:
            key = TotalKey(sub, code, dimension, start_at.astimezone(UTC))
            found[key] = Total(Decimal(quantity), count)
        return found

    async def lock_totals(self, keys: Collection[TotalKey], now: datetime) -> dict[TotalKey, Total]:
        """Create the missing totals at zero and lock them all, in key order.

        Callers hold the wallet lock of the price's asset first, so two
        requests never wait on each other's totals in opposite orders.
        """
        ordered = sorted(keys)
        if not ordered:
            return {}
        if self.postgresql:
            await self.session.execute(
                _PG_INSERT_TOTALS,
                {
                    "organization_id": self.organization_id,
                    "now": now,
                    "keys": json.dumps([_key_row(key) for key in ordered]),
                },
            )
            return await self._select(ordered, lock=True)
        await self.session.execute(
            upsert_insert(self.session, PeriodTotal)
            .values(
                [
                    {
                        "organization_id": self.organization_id,
                        "subscription_id": key.subscription_id,
                        "price_code": key.price_code,
                        "dimension": key.dimension,
                        "period_start": key.period_start,
                        "quantity": "0",
                        "event_count": 0,
                        "updated_at": now,
                    }
                    for key in ordered
                ]
            )
            .on_conflict_do_nothing()
        )
        return await self._select(ordered, lock=True)

    async def _select(self, ordered: Sequence[TotalKey], *, lock: bool) -> dict[TotalKey, Total]:
        if not ordered:
            return {}
        if self.postgresql:
            # Straight to the driver: SQLAlchemy's execution cost more than
            # the query.
            (rows,) = await run_together(self.session, [self._pg_select(ordered, lock=lock)])
            return self.totals_of(rows)
        found: dict[TotalKey, Total] = {}
        # SQLite: a bounded OR list per statement keeps the statement cache useful.
        for start in range(0, len(ordered), 100):
            chunk = ordered[start : start + 100]
            query = (
                sa.select(
                    PeriodTotal.subscription_id,
                    PeriodTotal.price_code,
                    PeriodTotal.dimension,
                    PeriodTotal.period_start,
                    PeriodTotal.quantity,
                    PeriodTotal.event_count,
                )
                .where(self._where(chunk))
                .order_by(
                    PeriodTotal.subscription_id,
                    PeriodTotal.price_code,
                    PeriodTotal.dimension,
                    PeriodTotal.period_start,
                )
            )
            for sub, code, dimension, start_at, quantity, count in await self.session.execute(
                query
            ):
                found[TotalKey(sub, code, dimension, start_at)] = Total(Decimal(quantity), count)
        return found

    async def save_totals(self, totals: dict[TotalKey, Total], now: datetime) -> None:
        ordered = sorted(totals.items())
        if not ordered:
            return
        if not self.postgresql:
            for key, total in ordered:
                await self.session.execute(
                    sa.update(PeriodTotal)
                    .where(self._where([key]))
                    .values(
                        quantity=format(total.quantity, "f"),
                        event_count=total.event_count,
                        updated_at=now,
                    )
                )
            return
        # One statement for every total the request moved.
        rows = [
            [*_key_row(key), format(total.quantity, "f"), total.event_count]
            for key, total in ordered
        ]
        await self.session.execute(
            _PG_SAVE_TOTALS,
            {"organization_id": self.organization_id, "now": now, "rows": json.dumps(rows)},
        )

    async def insert_fees(self, rows: list[dict[str, Any]]) -> None:
        if not rows:
            return
        # One statement whatever the count (often one row per event).
        await insert_rows(self.session, cast(sa.Table, EventFee.__table__), rows)
