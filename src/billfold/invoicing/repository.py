"""All invoicing SQL: invoices and lines, numbering, taxes, coupons, credit notes."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from decimal import Decimal
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import class_mapper

from billfold import limits
from billfold.db.engine import dialect_of, upsert_insert
from billfold.invoicing.models import (
    Coupon,
    CouponRedemption,
    CreditNote,
    Invoice,
    InvoiceLine,
    InvoiceSequence,
    InvoiceSettings,
    TaxRate,
)
from billfold.metering.models import Event
from billfold.metering.repository import TooManyRows, UsageCell, UsageQuery, UsageRepository
from billfold.realtime.models import EventFee
from billfold.subscriptions.models import Subscription


@dataclass(frozen=True, slots=True)
class RealtimeTotal:
    price_code: str
    asset_code: str
    events: int
    quantity: Decimal
    amount_minor: int


class InvoicingRepository:
    """Invoicing rows of one organization."""

    def __init__(self, session: AsyncSession, organization_id: str) -> None:
        self.session = session
        self.organization_id = organization_id
        self.postgresql = dialect_of(session) == "postgresql"

    # --- settings and numbering ---------------------------------------------

    async def settings(self) -> InvoiceSettings | None:
        return await self.session.get(InvoiceSettings, self.organization_id)

    async def add(self, *rows: object) -> None:
        self.session.add_all(rows)
        await self.session.flush()

    async def next_number(self, year: int, count: int = 1) -> int:
        """The next invoice number of `year` (the last of the next `count`).
        The UPDATE keeps the counter row locked until this transaction ends:
        concurrent finalizations queue, and a rollback gives the numbers back."""
        where = (
            InvoiceSequence.organization_id == self.organization_id,
            InvoiceSequence.year == year,
        )
        for _ in range(2):
            number = await self.session.scalar(
                sa.update(InvoiceSequence)
                .where(*where)
                .values(last_number=InvoiceSequence.last_number + count)
                .returning(InvoiceSequence.last_number)
                .execution_options(synchronize_session=False)
            )
            if number is not None:
                return int(number)
            await self.session.execute(
                upsert_insert(self.session, InvoiceSequence)
                .values(organization_id=self.organization_id, year=year, last_number=0)
                .on_conflict_do_nothing()
            )
        raise AssertionError("the sequence row exists after its insert")

    async def insert_many(
        self, model: type[Invoice] | type[InvoiceLine], rows: Sequence[Any]
    ) -> None:
        """INSERT objects built in Python in one statement per table, without
        the unit of work's per-object bookkeeping: they are not tracked by the
        session afterwards, so nothing may change them after this."""
        if not rows:
            return
        keys = [attribute.key for attribute in class_mapper(model).column_attrs]
        await self.session.execute(
            sa.insert(model), [{key: getattr(row, key) for key in keys} for row in rows]
        )

    # --- invoices -----------------------------------------------------------

    async def invoice_exists(self, subscription_id: str, kind: str, period_start: datetime) -> bool:
        found = await self.session.scalar(
            sa.select(Invoice.id)
            .where(
                Invoice.organization_id == self.organization_id,
                Invoice.subscription_id == subscription_id,
                Invoice.kind == kind,
                Invoice.period_start == period_start,
            )
            .limit(1)
        )
        return found is not None

    async def get(self, invoice_id: str, *, lock: bool = False) -> Invoice | None:
        query = (
            sa.select(Invoice)
            .where(Invoice.organization_id == self.organization_id, Invoice.id == invoice_id)
            .execution_options(populate_existing=True)
        )
        if lock and self.postgresql:
            query = query.with_for_update()
        return await self.session.scalar(query)

    async def lines(self, invoice_id: str) -> list[InvoiceLine]:
        return list(
            await self.session.scalars(
                sa.select(InvoiceLine)
                .where(
                    InvoiceLine.organization_id == self.organization_id,
                    InvoiceLine.invoice_id == invoice_id,
                )
                .order_by(InvoiceLine.position)
            )
        )

    async def delete_lines(self, invoice_id: str) -> None:
        await self.session.execute(
            sa.delete(InvoiceLine).where(
                InvoiceLine.organization_id == self.organization_id,
                InvoiceLine.invoice_id == invoice_id,
            )
        )

    async def list_page(
        self, limit: int, starting_after: str | None, customer_id: str | None
    ) -> list[Invoice]:
        query = sa.select(Invoice).where(Invoice.organization_id == self.organization_id)
        if customer_id is not None:
            query = query.where(Invoice.customer_id == customer_id)
        if starting_after is not None:
            query = query.where(Invoice.id < starting_after)
        return list(await self.session.scalars(query.order_by(Invoice.id.desc()).limit(limit)))

    async def billed_usage_minor(
        self, subscription_id: str, price_code: str, period_start: datetime
    ) -> int:
        """What invoices that count (not void) charged so far for a price's usage
        in the period starting at `period_start`."""
        total = await self.session.scalar(
            sa.select(sa.func.coalesce(sa.func.sum(InvoiceLine.amount_minor), 0))
            .join(Invoice, Invoice.id == InvoiceLine.invoice_id)
            .where(
                InvoiceLine.organization_id == self.organization_id,
                Invoice.organization_id == self.organization_id,
                Invoice.subscription_id == subscription_id,
                Invoice.status != "void",
                # Progressive invoices are deducted again by the period's own.
                Invoice.kind != "progressive",
                InvoiceLine.kind.in_(("usage", "late_usage")),
                InvoiceLine.price_code == price_code,
                InvoiceLine.period_start == period_start,
            )
        )
        return int(total or 0)

    async def progressive_billed(
        self, subscription_id: str, period_start: datetime, before: datetime
    ) -> dict[str, int]:
        """Per asset, what progressive invoices that count (not void) charged
        for the period starting at `period_start`, those ending by `before`."""
        rows = await self.session.execute(
            sa.select(Invoice.asset_code, sa.func.sum(Invoice.subtotal_minor))
            .where(
                Invoice.organization_id == self.organization_id,
                Invoice.subscription_id == subscription_id,
                Invoice.kind == "progressive",
                Invoice.status != "void",
                Invoice.period_start >= period_start,
                Invoice.period_end <= before,
            )
            .group_by(Invoice.asset_code)
        )
        return {row[0]: int(row[1] or 0) for row in rows}

    async def progressive_billed_many(
        self, subscription_ids: Sequence[str], since: datetime, before: datetime
    ) -> dict[tuple[str, str, datetime], int]:
        """Per (subscription, asset, period start), what progressive invoices
        that count charged from `since` to `before`."""
        rows = await self.session.execute(
            sa.select(
                Invoice.subscription_id,
                Invoice.asset_code,
                Invoice.period_start,
                sa.func.sum(Invoice.subtotal_minor),
            )
            .where(
                Invoice.organization_id == self.organization_id,
                Invoice.subscription_id.in_(list(subscription_ids)),
                Invoice.kind == "progressive",
                Invoice.status != "void",
                Invoice.period_start >= since,
                Invoice.period_end <= before,
            )
            .group_by(Invoice.subscription_id, Invoice.asset_code, Invoice.period_start)
        )
        return {(row[0], row[1], row[2]): int(row[3] or 0) for row in rows}

    async def progressive_cutoff(self, subscription_id: str, period_start: datetime) -> datetime:
        """Where the next progressive invoice of the period starts: the end of
        the last one (void ones too, their start is taken), else the period's start."""
        last = await self.session.scalar(
            sa.select(sa.func.max(Invoice.period_end)).where(
                Invoice.organization_id == self.organization_id,
                Invoice.subscription_id == subscription_id,
                Invoice.kind == "progressive",
                Invoice.period_start >= period_start,
            )
        )
        return period_start if last is None else max(period_start, last)

    async def period_finalized(self, subscription_id: str, period_start: datetime) -> bool:
        """Whether the period's closing invoice left draft (late events then
        go to the next invoice rather than into it)."""
        found = await self.session.scalar(
            sa.select(Invoice.id)
            .where(
                Invoice.organization_id == self.organization_id,
                Invoice.subscription_id == subscription_id,
                Invoice.kind == "period",
                Invoice.period_start == period_start,
                Invoice.status.in_(("finalized", "paid", "uncollectible")),
            )
            .limit(1)
        )
        return found is not None

    async def realtime_totals(
        self, subscription_id: str, start: datetime, end: datetime
    ) -> list[RealtimeTotal]:
        """Real-time fees already debited for events in `[start, end)`, per price."""
        rows = await self.session.execute(
            sa.select(
                EventFee.price_code,
                EventFee.asset_code,
                sa.func.count(),
                sa.func.sum(EventFee.amount_minor),
            )
            .where(
                EventFee.organization_id == self.organization_id,
                EventFee.subscription_id == subscription_id,
                EventFee.event_timestamp >= start,
                EventFee.event_timestamp < end,
            )
            .group_by(EventFee.price_code, EventFee.asset_code)
            .order_by(EventFee.price_code, EventFee.asset_code)
        )
        totals = {(row[0], row[1]): (int(row[2]), int(row[3] or 0)) for row in rows}
        if not totals:
            return []
        # Quantities are exact decimal text; summed here, not as SQL floats.
        quantities: dict[tuple[str, str], Decimal] = {}
        stream = await self.session.stream(
            sa.select(EventFee.price_code, EventFee.asset_code, EventFee.quantity).where(
                EventFee.organization_id == self.organization_id,
                EventFee.subscription_id == subscription_id,
                EventFee.event_timestamp >= start,
                EventFee.event_timestamp < end,
            )
        )
        async for price_code, asset_code, quantity in stream:
            key = (price_code, asset_code)
            quantities[key] = quantities.get(key, Decimal(0)) + Decimal(quantity)
        return [
            RealtimeTotal(key[0], key[1], count, quantities.get(key, Decimal(0)), amount)
            for key, (count, amount) in totals.items()
        ]

    # --- a group of subscriptions at once (the billing run) -------------------

    async def invoice_keys(
        self, subscription_ids: Sequence[str], since: datetime
    ) -> dict[str, list[tuple[str, datetime, str]]]:
        """Per subscription, (kind, period_start, status) of its invoices from `since` on."""
        out: dict[str, list[tuple[str, datetime, str]]] = {sid: [] for sid in subscription_ids}
        rows = await self.session.execute(
            sa.select(
                Invoice.subscription_id, Invoice.kind, Invoice.period_start, Invoice.status
            ).where(
                Invoice.organization_id == self.organization_id,
                Invoice.subscription_id.in_(list(subscription_ids)),
                Invoice.period_start >= since,
            )
        )
        for subscription_id, kind, period_start, status in rows:
            out[subscription_id].append((kind, period_start, status))
        return out

    async def billed_usage_many(
        self, subscription_ids: Sequence[str], since: datetime
    ) -> dict[tuple[str, str, datetime], int]:
        """`billed_usage_minor` per (subscription, price code, period start) from `since` on."""
        rows = await self.session.execute(
            sa.select(
                Invoice.subscription_id,
                InvoiceLine.price_code,
                InvoiceLine.period_start,
                sa.func.sum(InvoiceLine.amount_minor),
            )
            .join(Invoice, Invoice.id == InvoiceLine.invoice_id)
            .where(
                InvoiceLine.organization_id == self.organization_id,
                Invoice.organization_id == self.organization_id,
                Invoice.subscription_id.in_(list(subscription_ids)),
                Invoice.status != "void",
                Invoice.kind != "progressive",
                InvoiceLine.kind.in_(("usage", "late_usage")),
                InvoiceLine.period_start >= since,
            )
            .group_by(Invoice.subscription_id, InvoiceLine.price_code, InvoiceLine.period_start)
        )
        # Usage lines always name their price.
        return {(row[0], str(row[1]), row[2]): int(row[3] or 0) for row in rows}

    async def realtime_totals_many(
        self, subscription_ids: Sequence[str], start: datetime, end: datetime
    ) -> dict[str, list[RealtimeTotal]]:
        """`realtime_totals` of many subscriptions over the same `[start, end)`."""
        where = (
            EventFee.organization_id == self.organization_id,
            EventFee.subscription_id.in_(list(subscription_ids)),
            EventFee.event_timestamp >= start,
            EventFee.event_timestamp < end,
        )
        rows = await self.session.execute(
            sa.select(
                EventFee.subscription_id,
                EventFee.price_code,
                EventFee.asset_code,
                sa.func.count(),
                sa.func.sum(EventFee.amount_minor),
            )
            .where(*where)
            .group_by(EventFee.subscription_id, EventFee.price_code, EventFee.asset_code)
            .order_by(EventFee.subscription_id, EventFee.price_code, EventFee.asset_code)
        )
        # Filtered on subscription ids: none is null here.
        totals = {(str(row[0]), row[1], row[2]): (int(row[3]), int(row[4] or 0)) for row in rows}
        out: dict[str, list[RealtimeTotal]] = {sid: [] for sid in subscription_ids}
        if not totals:
            return out
        quantities: dict[tuple[str, str, str], Decimal] = {}
        stream = await self.session.stream(
            sa.select(
                EventFee.subscription_id,
                EventFee.price_code,
                EventFee.asset_code,
                EventFee.quantity,
            ).where(*where)
        )
        async for subscription_id, price_code, asset_code, quantity in stream:
            key = (str(subscription_id), price_code, asset_code)
            quantities[key] = quantities.get(key, Decimal(0)) + Decimal(quantity)
        for key, (count, amount) in totals.items():
            out[key[0]].append(
                RealtimeTotal(key[1], key[2], count, quantities.get(key, Decimal(0)), amount)
            )
        return out

    async def tax_rates_many(self, customer_ids: Sequence[str]) -> dict[str, list[TaxRate]]:
        """`tax_rates_for` of many customers."""
        rows = list(
            await self.session.scalars(
                sa.select(TaxRate)
                .where(
                    TaxRate.organization_id == self.organization_id,
                    sa.or_(
                        TaxRate.customer_id.in_(list(customer_ids)), TaxRate.customer_id.is_(None)
                    ),
                )
                .order_by(TaxRate.id)
            )
        )
        default = [rate for rate in rows if rate.customer_id is None]
        out: dict[str, list[TaxRate]] = {}
        for customer_id in customer_ids:
            own = [rate for rate in rows if rate.customer_id == customer_id]
            out[customer_id] = own or default
        return out

    async def active_redemptions_many(
        self, customer_ids: Sequence[str]
    ) -> dict[str, list[tuple[CouponRedemption, Coupon]]]:
        """`active_redemptions` of many customers, locked."""
        query = (
            sa.select(CouponRedemption, Coupon)
            .join(Coupon, Coupon.id == CouponRedemption.coupon_id)
            .where(
                CouponRedemption.organization_id == self.organization_id,
                CouponRedemption.customer_id.in_(list(customer_ids)),
                CouponRedemption.status == "active",
            )
            .order_by(CouponRedemption.id)
            .execution_options(populate_existing=True)
        )
        if self.postgresql:
            query = query.with_for_update(of=CouponRedemption)
        out: dict[str, list[tuple[CouponRedemption, Coupon]]] = {c: [] for c in customer_ids}
        for redemption, coupon in await self.session.execute(query):
            out[redemption.customer_id].append((redemption, coupon))
        return out

    @staticmethod
    async def due_drafts(session: AsyncSession, at: datetime, limit: int) -> list[tuple[str, str]]:
        """(organization, invoice) of drafts whose grace period has passed, across organizations."""
        rows = await session.execute(
            sa.select(Invoice.organization_id, Invoice.id)
            .where(Invoice.status == "draft", Invoice.finalize_at <= at)
            .order_by(Invoice.finalize_at, Invoice.id)
            .limit(limit)
        )
        return [(row[0], row[1]) for row in rows]

    # --- taxes --------------------------------------------------------------

    async def tax_rates_for(self, customer_id: str) -> list[TaxRate]:
        """The customer's own rates, or the organization's defaults if it has none."""
        rows = list(
            await self.session.scalars(
                sa.select(TaxRate)
                .where(
                    TaxRate.organization_id == self.organization_id,
                    sa.or_(TaxRate.customer_id == customer_id, TaxRate.customer_id.is_(None)),
                )
                .order_by(TaxRate.id)
            )
        )
        own = [rate for rate in rows if rate.customer_id == customer_id]
        return own or [rate for rate in rows if rate.customer_id is None]

    async def tax_rate_by_code(self, code: str) -> TaxRate | None:
        return await self.session.scalar(
            sa.select(TaxRate).where(
                TaxRate.organization_id == self.organization_id, TaxRate.code == code
            )
        )

    async def count(self, model: type[TaxRate] | type[Coupon]) -> int:
        return int(
            await self.session.scalar(
                sa.select(sa.func.count()).where(model.organization_id == self.organization_id)
            )
            or 0
        )

    async def list_tax_rates(self, limit: int, starting_after: str | None) -> list[TaxRate]:
        query = sa.select(TaxRate).where(TaxRate.organization_id == self.organization_id)
        if starting_after is not None:
            query = query.where(TaxRate.id < starting_after)
        return list(await self.session.scalars(query.order_by(TaxRate.id.desc()).limit(limit)))

    # --- coupons ------------------------------------------------------------

    async def coupon_by_code(self, code: str) -> Coupon | None:
        return await self.session.scalar(
            sa.select(Coupon).where(
                Coupon.organization_id == self.organization_id, Coupon.code == code
            )
        )

    async def active_redemptions(
        self, customer_id: str, *, lock: bool = False
    ) -> list[tuple[CouponRedemption, Coupon]]:
        query = (
            sa.select(CouponRedemption, Coupon)
            .join(Coupon, Coupon.id == CouponRedemption.coupon_id)
            .where(
                CouponRedemption.organization_id == self.organization_id,
                CouponRedemption.customer_id == customer_id,
                CouponRedemption.status == "active",
            )
            .order_by(CouponRedemption.id)
            .execution_options(populate_existing=True)
        )
        if lock and self.postgresql:
            query = query.with_for_update(of=CouponRedemption)
        return [(row[0], row[1]) for row in await self.session.execute(query)]

    async def redemptions_by_id(self, ids: Sequence[str]) -> list[CouponRedemption]:
        if not ids:
            return []
        query = sa.select(CouponRedemption).where(
            CouponRedemption.organization_id == self.organization_id,
            CouponRedemption.id.in_(list(ids)),
        )
        if self.postgresql:
            query = query.with_for_update()
        return list(await self.session.scalars(query.order_by(CouponRedemption.id)))

    # --- credit notes -------------------------------------------------------

    async def credit_notes_of(self, invoice_id: str) -> list[CreditNote]:
        return list(
            await self.session.scalars(
                sa.select(CreditNote)
                .where(
                    CreditNote.organization_id == self.organization_id,
                    CreditNote.invoice_id == invoice_id,
                )
                .order_by(CreditNote.id)
            )
        )

    async def get_credit_note(self, credit_note_id: str) -> CreditNote | None:
        return await self.session.scalar(
            sa.select(CreditNote).where(
                CreditNote.organization_id == self.organization_id,
                CreditNote.id == credit_note_id,
            )
        )


async def due_subscriptions(
    session: AsyncSession, at: datetime, limit: int
) -> list[tuple[str, str]]:
    """(organization, subscription) of subscriptions with a boundary due by `at`."""
    rows = await session.execute(
        sa.select(Subscription.organization_id, Subscription.id)
        .where(Subscription.next_billing_at <= at)
        .order_by(Subscription.next_billing_at, Subscription.id)
        .limit(limit)
    )
    return [(row[0], row[1]) for row in rows]


async def threshold_subscriptions(
    session: AsyncSession, at: datetime, after_id: str, limit: int
) -> list[tuple[str, str]]:
    """(organization, subscription) of active subscriptions with a usage
    threshold whose current period is open at `at`, by id after `after_id`."""
    rows = await session.execute(
        sa.select(Subscription.organization_id, Subscription.id)
        .where(
            Subscription.usage_threshold_minor.is_not(None),
            Subscription.status == "active",
            Subscription.next_billing_at > at,
            Subscription.billed_through.is_not(None),
            Subscription.id > after_id,
        )
        .order_by(Subscription.id)
        .limit(limit)
    )
    return [(row[0], row[1]) for row in rows]


async def load_subscriptions(
    session: AsyncSession, organization_id: str, subscription_ids: Sequence[str]
) -> list[Subscription]:
    return list(
        await session.scalars(
            sa.select(Subscription)
            .where(
                Subscription.organization_id == organization_id,
                Subscription.id.in_(list(subscription_ids)),
            )
            .order_by(Subscription.id)
        )
    )


async def lock_subscriptions(
    session: AsyncSession, organization_id: str, subscription_ids: Sequence[str]
) -> list[Subscription]:
    """Lock a group of subscriptions, in id order (so two runs cannot deadlock)."""
    query = (
        sa.select(Subscription)
        .where(
            Subscription.organization_id == organization_id,
            Subscription.id.in_(list(subscription_ids)),
        )
        .order_by(Subscription.id)
        .execution_options(populate_existing=True)
    )
    if dialect_of(session) == "postgresql":
        query = query.with_for_update()
    return list(await session.scalars(query))


class GroupUsageRepository(UsageRepository):
    """Usage aggregates of many customers in one query: the same query as
    `aggregate`, grouped by customer first."""

    async def aggregate_customers(
        self, query: UsageQuery, customer_ids: Sequence[str]
    ) -> dict[str, list[UsageCell]]:
        ids = list(dict.fromkeys(customer_ids))
        if not self.postgresql or query.aggregation == "latest" or query.granularity:
            # SQLite folds numbers in Python and `latest` orders events: one
            # customer at a time, as `aggregate` does.
            return {c: await self.aggregate(replace(query, customer_id=c)) for c in ids}
        query = replace(query, customer_id=None)
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
        aggregate: sa.ColumnElement[Any]
        if query.aggregation == "count":
            aggregate = sa.func.count()
        elif query.aggregation == "unique_count":
            aggregate = sa.func.count(sa.distinct(value))
        else:
            aggregate = getattr(sa.func, query.aggregation)(value)
        # One index range per customer (organization, customer, type, time),
        # as `aggregate` reads it: a LATERAL over the list of customers keeps
        # that plan whatever the planner's statistics say, where a plain
        # `customer_id IN (...)` may be planned as a scan of every customer's
        # events.
        customers = (
            sa.func.unnest(sa.bindparam("customers", ids, type_=postgresql.ARRAY(sa.Text())))
            .table_valued("id")
            .render_derived(name="customers")
        )
        per_customer = (
            self._matching(query, *groups, aggregate.label("value"))
            .where(Event.customer_id == customers.c.id)
            .group_by(*groups)
            # No row for a customer without events, as `aggregate` gives none.
            .having(sa.func.count() > 0)
            .lateral("per_customer")
        )
        keys = [customers.c.id, *(per_customer.c[f"g{i}"] for i in range(len(groups)))]
        outer = (
            sa.select(*keys, per_customer.c.value)
            .select_from(customers)
            .join(per_customer, sa.true())
            .order_by(*keys)
        )
        out: dict[str, list[UsageCell]] = {c: [] for c in ids}
        for row in await self.session.execute(outer):
            raw = row[-1]
            number = None if raw is None else Decimal(raw)
            if number is None and query.aggregation == "sum":
                number = Decimal(0)
            cells = out[row[0]]
            cells.append(UsageCell(bucket=None, group=tuple(row[1:-1]), value=number))
            if len(cells) > limits.usage_rows_max:
                raise TooManyRows
        return out


async def lock_subscription(
    session: AsyncSession, organization_id: str, subscription_id: str
) -> Subscription | None:
    query = (
        sa.select(Subscription)
        .where(Subscription.organization_id == organization_id, Subscription.id == subscription_id)
        .execution_options(populate_existing=True)
    )
    if dialect_of(session) == "postgresql":
        query = query.with_for_update()
    return await session.scalar(query)
