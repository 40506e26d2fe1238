"""All real-time billing SQL: what a customer is subscribed to, running
period totals (locked while rated), and the fee rows."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any, cast

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from billfold.catalog.models import ProductVersion
from billfold.db.engine import dialect_of, upsert_insert
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


class RealtimeRepository:
    def __init__(self, session: AsyncSession, organization_id: str) -> None:
        self.session = session
        self.organization_id = organization_id

    async def subscriptions(
        self, customer_ids: Collection[str], earliest: datetime, latest: datetime
    ) -> list[Subscription]:
        """Subscriptions of these customers that may cover an instant in
        [earliest, latest]: started by `latest`, not canceled before `earliest`."""
        if not customer_ids:
            return []
        return list(
            await self.session.scalars(
                sa.select(Subscription)
                .where(
                    Subscription.organization_id == self.organization_id,
                    Subscription.customer_id.in_(sorted(customer_ids)),
                    Subscription.start_at <= latest,
                    sa.or_(Subscription.canceled_at.is_(None), Subscription.canceled_at > earliest),
                )
                .order_by(Subscription.id)
            )
        )

    async def versions(self, keys: Collection[tuple[str, int]]) -> dict[tuple[str, int], list[Any]]:
        """The prices of these (product id, version number) pairs."""
        if not keys:
            return {}
        rows = await self.session.execute(
            sa.select(
                ProductVersion.product_id, ProductVersion.number, ProductVersion.prices
            ).where(
                ProductVersion.organization_id == self.organization_id,
                ProductVersion.product_id.in_(sorted({product for product, _ in keys})),
            )
        )
        wanted = set(keys)
        return {(p, n): prices for p, n, prices in rows if (p, n) in wanted}

    async def meters(self, codes: Collection[str]) -> dict[str, Meter]:
        if not codes:
            return {}
        rows = await self.session.scalars(
            sa.select(Meter).where(
                Meter.organization_id == self.organization_id, Meter.code.in_(sorted(codes))
            )
        )
        return {meter.code: meter for meter in rows}

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

    async def lock_totals(self, keys: Collection[TotalKey], now: datetime) -> dict[TotalKey, Total]:
        """Create the missing totals at zero and lock them all, in key order.

        Callers hold the wallet lock of the price's asset first, so two
        requests never wait on each other's totals in opposite orders.
        """
        ordered = sorted(keys)
        if not ordered:
            return {}
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
        found: dict[TotalKey, Total] = {}
        # A bounded OR list per statement keeps the statement cache useful.
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
            if lock and dialect_of(self.session) == "postgresql":
                query = query.with_for_update()
            for sub, code, dimension, start_at, quantity, count in await self.session.execute(
                query
            ):
                found[TotalKey(sub, code, dimension, start_at)] = Total(Decimal(quantity), count)
        return found

    async def save_totals(self, totals: dict[TotalKey, Total], now: datetime) -> None:
        ordered = sorted(totals.items())
        if not ordered:
            return
        if dialect_of(self.session) != "postgresql":
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
        table = cast(sa.Table, PeriodTotal.__table__)
        moved = sa.values(
            sa.column("subscription_id", sa.String),
            sa.column("price_code", sa.String),
            sa.column("dimension", sa.Integer),
            sa.column("period_start", sa.DateTime(timezone=True)),
            sa.column("quantity", sa.String),
            sa.column("event_count", sa.BigInteger),
            name="moved",
        ).data(
            [
                (
                    key.subscription_id,
                    key.price_code,
                    key.dimension,
                    key.period_start,
                    format(total.quantity, "f"),
                    total.event_count,
                )
                for key, total in ordered
            ]
        )
        await self.session.execute(
            sa.update(table)
            .where(
                table.c.organization_id == self.organization_id,
                table.c.subscription_id == moved.c.subscription_id,
                table.c.price_code == moved.c.price_code,
                table.c.dimension == moved.c.dimension,
                table.c.period_start == moved.c.period_start,
            )
            .values(quantity=moved.c.quantity, event_count=moved.c.event_count, updated_at=now)
        )

    async def insert_fees(self, rows: list[dict[str, Any]]) -> None:
        if rows:
            # Core, not the ORM's bulk insert: nothing here needs identity.
            await self.session.execute(sa.insert(cast(sa.Table, EventFee.__table__)), rows)
