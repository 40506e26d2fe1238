"""What a subscription's invoice holds for a period: its lines, computed from
the subscription, its product version and the period's usage. Reads only.

An invoice is made at each of a subscription's billing boundaries:

- `opening`, at `start_at`: the in-advance fixed fees of the first period
  (and one-time fees).
- `period`, at each period's end: the closed period's in-arrears fixed fees,
  in-arrears usage per price and dimension with its tier breakdown, a summary
  of the real-time fees already debited from the wallet (informational,
  not charged), late usage of the period before if that one was already
  finalized, a credit for the unused part of an in-advance fee when the
  subscription ended inside its period, and the in-advance fees of the next
  period if the subscription goes on.

Fixed fees are prorated by time over the nominal period (a calendar first
period, a trial, an upgrade or a cancel cut it); `money.prorate` makes the
parts of a period sum to the whole fee. A fixed price's own `interval`
(month, quarter, year, week) converts to the subscription's: a $30/month
price on a quarterly subscription is $90 a quarter. Day and week intervals
do not convert to months; subscribing refuses such a mix.

Computing twice gives the same lines for the same data, so a draft can be
recomputed when it is finalized: events that arrived during the grace period
land on it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from billfold.assets import AssetInfo, format_amount, get_asset, parse_amount
from billfold.catalog.definitions import usage_price
from billfold.catalog.repository import ProductRepository
from billfold.invoicing import money
from billfold.invoicing.models import (
    Coupon,
    CouponRedemption,
    Invoice,
    InvoiceLine,
    InvoiceSettings,
    TaxRate,
)
from billfold.invoicing.repository import InvoicingRepository, RealtimeTotal
from billfold.metering import values
from billfold.metering.models import Meter
from billfold.metering.repository import MeterRepository, UsageCell, UsageQuery, UsageRepository
from billfold.rating import Price, decimal_text, match_dimension, rate
from billfold.subscriptions.models import Subscription
from billfold.subscriptions.periods import subscription_nominal_period, subscription_period

# A fixed price's interval as (unit, count): months or days.
_PRICE_UNITS = {"month": ("m", 1), "quarter": ("m", 3), "year": ("m", 12), "week": ("d", 7)}


def subscription_units(interval: str, interval_count: int) -> tuple[str, int]:
    if interval == "day":
        return "d", interval_count
    if interval == "week":
        return "d", 7 * interval_count
    if interval == "month":
        return "m", interval_count
    return "m", 12 * interval_count


def fixed_per_period(
    amount_minor: int, price_interval: str, interval: str, interval_count: int
) -> int | None:
    """A fixed price's amount per subscription period; None when the two
    intervals do not convert (months against days)."""
    unit, count = _PRICE_UNITS[price_interval]
    sub_unit, sub_count = subscription_units(interval, interval_count)
    if unit != sub_unit:
        return None
    return money.round_half_up(Decimal(amount_minor) * sub_count / count)


def default_interval(prices: list[dict[str, Any]]) -> tuple[str, int]:
    """A subscription's interval when none is asked for: its first recurring
    fixed price's (quarter is month × 3), else a month."""
    for price in prices:
        if price["type"] == "fixed" and price["interval"] != "one_time":
            interval: str = price["interval"]
            return ("month", 3) if interval == "quarter" else (interval, 1)
    return "month", 1


@dataclass(slots=True)
class LineDraft:
    asset_code: str
    kind: str
    price_code: str | None
    description: str
    quantity: str
    amount_minor: int
    charged: bool
    period_start: datetime
    period_end: datetime
    tiers: list[dict[str, Any]] = field(default_factory=list)


UsageKey = tuple[str, str, int, str, datetime, datetime]


@dataclass(slots=True)
class Ahead:
    """What the billing run read in one go for a group of subscriptions,
    under their row locks, so that each one's invoice does not query again.
    Anything not here is read the ordinary way.

    - `usage`: cells per (customer, product, version, price code, start, end);
    - `realtime`: real-time totals per (subscription, start, end);
    - `invoices`: per subscription, its invoices' (kind, period_start, status);
    - `billed_usage`: per (subscription, price code, period_start), what
      period invoices charged for that usage (for the subscriptions in
      `billed_for`);
    - `taxes`, `redemptions`: per customer (the redemptions locked).
    """

    usage: dict[UsageKey, list[UsageCell]] = field(default_factory=dict)
    realtime: dict[tuple[str, datetime, datetime], list[RealtimeTotal]] = field(
        default_factory=dict
    )
    invoices: dict[str, list[tuple[str, datetime, str]]] = field(default_factory=dict)
    billed_usage: dict[tuple[str, str, datetime], int] = field(default_factory=dict)
    billed_for: set[str] = field(default_factory=set)
    taxes: dict[str, list[TaxRate]] = field(default_factory=dict)
    redemptions: dict[str, list[tuple[CouponRedemption, Coupon]]] = field(default_factory=dict)
    settings: InvoiceSettings | None = None
    #: Written once at the group's end (`service._write_ahead`): new invoices
    #: and lines, the finalized invoices still to number (in finalization
    #: order), and webhook events as (topic, invoice, payload).
    new_invoices: list[Invoice] = field(default_factory=list)
    new_lines: list[InvoiceLine] = field(default_factory=list)
    to_number: list[Invoice] = field(default_factory=list)
    events: list[tuple[str, Invoice, dict[str, Any]]] = field(default_factory=list)

    def forget(self, subscription_id: str) -> None:
        """After a subscription's first boundary its invoices changed: read
        them the ordinary way from then on."""
        self.invoices.pop(subscription_id, None)
        self.billed_for.discard(subscription_id)

    def invoice_exists(self, subscription_id: str, kind: str, start: datetime) -> bool | None:
        found = self.invoices.get(subscription_id)
        if found is None:
            return None
        return any(k == kind and s == start for k, s, _ in found)

    def period_finalized(self, subscription_id: str, start: datetime) -> bool | None:
        found = self.invoices.get(subscription_id)
        if found is None:
            return None
        return any(
            k == "period" and s == start and status in ("finalized", "paid", "uncollectible")
            for k, s, status in found
        )


@dataclass(slots=True)
class Catalog:
    """What a billing run reads once per organization: versions, product
    codes, meters and assets, shared by all its subscriptions."""

    session: AsyncSession
    organization_id: str
    versions: dict[tuple[str, int], list[dict[str, Any]]] = field(default_factory=dict)
    product_codes: dict[str, str] = field(default_factory=dict)
    meters: dict[str, Meter] = field(default_factory=dict)
    assets: dict[str, AssetInfo] = field(default_factory=dict)
    prices: dict[tuple[str, int, str], Price] = field(default_factory=dict)
    #: Set by the billing run for the group of subscriptions it is billing.
    ahead: Ahead | None = None

    async def version_prices(self, subscription: Subscription) -> list[dict[str, Any]]:
        key = (subscription.product_id, subscription.version)
        if key not in self.versions:
            repository = ProductRepository(self.session, self.organization_id)
            found = await repository.get_version(*key)
            assert found is not None, key
            self.versions[key] = list(found.prices)
            product = await repository.get(subscription.product_id)
            assert product is not None
            self.product_codes[product.id] = product.code
        return self.versions[key]

    async def product_code(self, subscription: Subscription) -> str:
        await self.version_prices(subscription)
        return self.product_codes[subscription.product_id]

    async def asset(self, code: str) -> AssetInfo:
        if code not in self.assets:
            self.assets[code] = await get_asset(self.session, self.organization_id, code)
        return self.assets[code]

    async def meter(self, code: str) -> Meter:
        if code not in self.meters:
            found = await MeterRepository(self.session, self.organization_id).get_by_code(code)
            # Meters are never deleted, and a version names only existing ones.
            assert found is not None, code
            self.meters[code] = found
        return self.meters[code]

    async def usage_price(self, subscription: Subscription, stored: dict[str, Any]) -> Price:
        key = (subscription.product_id, subscription.version, stored["code"])
        if key not in self.prices:
            self.prices[key] = usage_price(stored, await self.asset(stored["asset"]))
        return self.prices[key]


def _path(dotted: str) -> tuple[str, ...]:
    segments = values.parse_path(dotted)
    assert segments is not None, dotted
    return segments


def _data_of(keys: list[str], group: tuple[str | None, ...]) -> dict[str, Any]:
    """An event `data` carrying just the grouped values, for dimension matching."""
    data: dict[str, Any] = {}
    for key, text in zip(keys, group, strict=True):
        if text is None:
            continue
        node = data
        *parents, leaf = _path(key)
        for segment in parents:
            node = node.setdefault(segment, {})
        node[leaf] = text
    return data


def usage_query(
    meter: Meter, price: Price, customer_id: str | None, start: datetime, end: datetime
) -> tuple[UsageQuery, list[str]]:
    """The aggregate query behind a price's usage over `[start, end)`, and the
    dimension keys its groups carry."""
    keys = sorted({key for dimension in price.dimensions for key, _ in dimension.match})
    aggregation = meter.aggregation
    group_paths = [_path(key) for key in keys]
    if keys and aggregation == "unique_count":
        # Distinct values per dimension: group by the value too, then count.
        assert meter.field is not None
        group_paths.append(_path(meter.field))
        aggregation = "count"
    if keys and aggregation == "latest":
        # "Latest" across groups needs event order the cells do not carry:
        # the whole period's latest value is rated at the base price.
        group_paths, keys = [], []
    query = UsageQuery(
        event_type=meter.event_type,
        aggregation=aggregation,
        field=None if meter.field is None or aggregation == "count" else _path(meter.field),
        filters={_path(key): list(allowed) for key, allowed in meter.filters.items()},
        customer_id=customer_id,
        start=start,
        end=end,
        granularity=None,
        group_by=tuple(group_paths),
        ranges=((start, end),),
    )
    return query, keys


def fold_usage(
    meter: Meter, price: Price, keys: list[str], cells: list[UsageCell]
) -> dict[int | None, Decimal]:
    """The aggregate per matched dimension, as simulate and real-time billing
    keep it. The base price (None) is always there, zero without events, so a
    flat or first-tier fee is charged."""
    out: dict[int | None, Decimal] = {None: Decimal(0)}
    touched: set[int | None] = set()
    distinct: dict[int | None, set[str | None]] = {}
    for cell in cells:
        group = cell.group[: len(keys)]
        dimension = match_dimension(price, _data_of(keys, group)) if keys else None
        if meter.aggregation == "unique_count" and keys:
            distinct.setdefault(dimension, set()).add(cell.group[-1])
            continue
        value = cell.value if cell.value is not None else Decimal(0)
        if dimension not in touched:
            touched.add(dimension)
            out[dimension] = value
        elif meter.aggregation in ("count", "sum"):
            out[dimension] = values.EXACT.add(out[dimension], value)
        elif meter.aggregation == "max":
            out[dimension] = max(out[dimension], value)
        elif meter.aggregation == "min":
            out[dimension] = min(out[dimension], value)
    for dimension, seen in distinct.items():
        out[dimension] = Decimal(len(seen - {None}))
    return out


async def usage_by_dimension(
    session: AsyncSession,
    organization_id: str,
    meter: Meter,
    price: Price,
    customer_id: str,
    start: datetime,
    end: datetime,
) -> dict[int | None, Decimal]:
    """The meter's aggregate over `[start, end)` per matched dimension."""
    query, keys = usage_query(meter, price, customer_id, start, end)
    cells = await UsageRepository(session, organization_id).aggregate(query)
    return fold_usage(meter, price, keys, cells)


def _tier_json(line: Any, dimension: int | None) -> dict[str, Any]:
    return {
        "dimension": dimension,
        "kind": str(line.kind),
        "tier": line.tier,
        "units": decimal_text(line.units),
        "unit_amount": decimal_text(line.unit_amount),
        "flat_amount": decimal_text(line.flat_amount),
        "amount_minor": line.amount_minor,
    }


class LineBuilder:
    """Computes the lines of one subscription's invoices."""

    def __init__(self, session: AsyncSession, catalog: Catalog, subscription: Subscription):
        self.session = session
        self.catalog = catalog
        self.subscription = subscription
        self.organization_id = subscription.organization_id

    def _covered(self, start: datetime, end: datetime) -> tuple[datetime, datetime]:
        trial_end = self.subscription.trial_end_at
        return (max(start, trial_end) if trial_end is not None else start), end

    async def _fixed(
        self,
        stored: Mapping[str, Any],
        period: tuple[datetime, datetime],
        covered: tuple[datetime, datetime],
        kind: str,
        sign: int,
    ) -> LineDraft | None:
        sub = self.subscription
        asset = await self.catalog.asset(stored["asset"])
        amount_minor = parse_amount(asset, stored["amount"], field="amount", allow_zero=True)
        if stored["interval"] == "one_time":
            per_period: int | None = amount_minor
        else:
            per_period = fixed_per_period(
                amount_minor, stored["interval"], sub.interval, sub.interval_count
            )
        if per_period is None:
            return None
        nominal = subscription_nominal_period(sub, period[0])
        if stored["interval"] == "one_time":
            share, quantity = per_period, "1"
        else:
            share = money.prorate(per_period, nominal, covered)
            quantity = money.fraction_text(nominal, covered)
        if share == 0 and kind == "proration":
            return None
        label = "unused time" if kind == "proration" else stored["billing"].replace("_", " ")
        return LineDraft(
            asset_code=asset.code,
            kind=kind,
            price_code=stored["code"],
            description=f"{stored['code']} ({label})",
            quantity=quantity,
            amount_minor=sign * share,
            charged=True,
            period_start=max(covered[0], nominal[0]) if share else covered[0],
            period_end=min(covered[1], nominal[1]),
        )

    async def advance_fees(self, start: datetime, *, opening: bool) -> list[LineDraft]:
        """In-advance fixed fees of the period starting at `start` (to its
        nominal end: a later cancel credits the unused part back)."""
        lines = []
        nominal = subscription_nominal_period(self.subscription, start)
        for stored in await self.catalog.version_prices(self.subscription):
            if stored["type"] != "fixed":
                continue
            if stored["interval"] == "one_time":
                if not opening:
                    continue
            elif stored["billing"] != "in_advance":
                continue
            line = await self._fixed(
                stored, (start, nominal[1]), self._covered(start, nominal[1]), "fixed", 1
            )
            if line is not None:
                lines.append(line)
        return lines

    async def arrears_fees(self, start: datetime, end: datetime) -> list[LineDraft]:
        lines = []
        for stored in await self.catalog.version_prices(self.subscription):
            if (
                stored["type"] == "fixed"
                and stored["interval"] != "one_time"
                and stored["billing"] == "in_arrears"
            ):
                line = await self._fixed(
                    stored, (start, end), self._covered(start, end), "fixed", 1
                )
                if line is not None:
                    lines.append(line)
        return lines

    async def unused_credit(self, start: datetime, end: datetime) -> list[LineDraft]:
        """The unused part of in-advance fees already charged for a period the
        subscription left early (at `end`)."""
        nominal = subscription_nominal_period(self.subscription, start)
        if end >= nominal[1]:
            return []
        lines = []
        for stored in await self.catalog.version_prices(self.subscription):
            if (
                stored["type"] == "fixed"
                and stored["interval"] != "one_time"
                and stored["billing"] == "in_advance"
            ):
                line = await self._fixed(
                    stored, (start, nominal[1]), self._covered(end, nominal[1]), "proration", -1
                )
                if line is not None:
                    lines.append(line)
        return lines

    async def _usage_lines(
        self, stored: dict[str, Any], start: datetime, end: datetime
    ) -> list[tuple[int | None, Decimal, int, list[dict[str, Any]]]]:
        sub = self.subscription
        asset = await self.catalog.asset(stored["asset"])
        price = await self.catalog.usage_price(sub, stored)
        meter = await self.catalog.meter(stored["meter"])
        ahead = self.catalog.ahead
        key = (sub.customer_id, sub.product_id, sub.version, stored["code"], start, end)
        if ahead is not None and key in ahead.usage:
            _, keys = usage_query(meter, price, sub.customer_id, start, end)
            quantities = fold_usage(meter, price, keys, ahead.usage[key])
        else:
            quantities = await usage_by_dimension(
                self.session, self.organization_id, meter, price, sub.customer_id, start, end
            )
        out = []
        for dimension in sorted(quantities, key=lambda d: -1 if d is None else d):
            rating = rate(price, quantities[dimension], asset=asset, dimension=dimension)
            tiers = [_tier_json(line, dimension) for line in rating.lines]
            out.append((dimension, quantities[dimension], rating.amount_minor, tiers))
        return out

    async def usage(self, start: datetime, end: datetime) -> list[LineDraft]:
        lines = []
        for stored in await self.catalog.version_prices(self.subscription):
            if stored["type"] != "usage" or stored["billing"] != "in_arrears":
                continue
            for dimension, quantity, amount_minor, tiers in await self._usage_lines(
                stored, start, end
            ):
                label = "" if dimension is None else f" [dimension {dimension}]"
                lines.append(
                    LineDraft(
                        asset_code=stored["asset"],
                        kind="usage",
                        price_code=stored["code"],
                        description=f"{stored['code']}{label} ({stored['meter']})",
                        quantity=decimal_text(quantity),
                        amount_minor=amount_minor,
                        charged=True,
                        period_start=start,
                        period_end=end,
                        tiers=tiers,
                    )
                )
        return lines

    async def late_usage(self, start: datetime, end: datetime) -> list[LineDraft]:
        """Usage that arrived for `[start, end)` after its invoice was
        finalized: the period re-rated, less what was charged for it."""
        repository = InvoicingRepository(self.session, self.organization_id)
        ahead = self.catalog.ahead
        finalized = None if ahead is None else ahead.period_finalized(self.subscription.id, start)
        if finalized is None:
            finalized = await repository.period_finalized(self.subscription.id, start)
        if not finalized:
            return []
        lines = []
        for stored in await self.catalog.version_prices(self.subscription):
            if stored["type"] != "usage" or stored["billing"] != "in_arrears":
                continue
            rated = sum(amount for _, _, amount, _ in await self._usage_lines(stored, start, end))
            if ahead is not None and self.subscription.id in ahead.billed_for:
                billed = ahead.billed_usage.get((self.subscription.id, stored["code"], start), 0)
            else:
                billed = await repository.billed_usage_minor(
                    self.subscription.id, stored["code"], start
                )
            if rated != billed:
                lines.append(
                    LineDraft(
                        asset_code=stored["asset"],
                        kind="late_usage",
                        price_code=stored["code"],
                        description=f"{stored['code']} (late usage)",
                        quantity="1",
                        amount_minor=rated - billed,
                        charged=True,
                        period_start=start,
                        period_end=end,
                    )
                )
        return lines

    async def realtime(self, start: datetime, end: datetime) -> list[LineDraft]:
        return [
            LineDraft(
                asset_code=total.asset_code,
                kind="realtime",
                price_code=total.price_code,
                description=f"{total.price_code} (real time, {total.events} events, "
                "already paid from wallet)",
                quantity=decimal_text(total.quantity),
                amount_minor=total.amount_minor,
                charged=False,
                period_start=start,
                period_end=end,
            )
            for total in await self._realtime_totals(start, end)
        ]

    async def _realtime_totals(self, start: datetime, end: datetime) -> list[RealtimeTotal]:
        ahead = self.catalog.ahead
        key = (self.subscription.id, start, end)
        if ahead is not None and key in ahead.realtime:
            return ahead.realtime[key]
        repository = InvoicingRepository(self.session, self.organization_id)
        return await repository.realtime_totals(self.subscription.id, start, end)

    async def progressive_credit(self, period_start: datetime, before: datetime) -> list[LineDraft]:
        """What progressive invoices already charged for the period starting at
        `period_start` (those that end by `before`), taken off again."""
        if self.subscription.usage_threshold_asset is None:
            # Only a subscription with a threshold has progressive invoices.
            return []
        repository = InvoicingRepository(self.session, self.organization_id)
        billed = await repository.progressive_billed(self.subscription.id, period_start, before)
        return [
            LineDraft(
                asset_code=asset_code,
                kind="already_billed",
                price_code=None,
                description="usage already invoiced this period (progressive billing)",
                quantity="1",
                amount_minor=-amount_minor,
                charged=True,
                period_start=period_start,
                period_end=before,
            )
            for asset_code, amount_minor in sorted(billed.items())
            if amount_minor != 0
        ]

    async def commitment(
        self, start: datetime, end: datetime, lines: list[LineDraft]
    ) -> list[LineDraft]:
        """The minimum commitment's true-up for the closed period `[start, end)`.

        The period's fees are its in-advance fixed fees (net of any unused
        part credited back), its in-arrears fixed fees, its in-arrears usage
        and the real-time fees already debited for it, in the commitment's
        asset. Late usage of an earlier period and the next period's fees do
        not count. The commitment is prorated like a fixed fee, so a cut
        period (calendar start, trial, upgrade, cancel) owes its share.
        """
        sub = self.subscription
        asset_code, minimum_minor = sub.minimum_commitment_asset, sub.minimum_commitment_minor
        if asset_code is None or minimum_minor is None:
            return []
        nominal = subscription_nominal_period(sub, start)
        trial_end = sub.trial_end_at
        covered = (min(max(start, trial_end), end) if trial_end else start, end)
        owed = money.prorate(minimum_minor, nominal, covered)
        fees = sum(
            line.amount_minor
            for line in lines
            if line.asset_code == asset_code
            and line.period_start >= start
            and line.period_end <= end
            and line.kind in ("fixed", "usage", "realtime")
        )
        for stored in await self.catalog.version_prices(sub):
            if (
                stored["type"] == "fixed"
                and stored["interval"] != "one_time"
                and stored["billing"] == "in_advance"
                and stored["asset"] == asset_code
            ):
                paid = await self._fixed(
                    stored, (start, nominal[1]), self._covered(start, end), "fixed", 1
                )
                fees += 0 if paid is None else paid.amount_minor
        if fees >= owed:
            return []
        asset = await self.catalog.asset(asset_code)
        return [
            LineDraft(
                asset_code=asset_code,
                kind="commitment",
                price_code=None,
                description=f"minimum commitment true-up ({money.fraction_text(nominal, covered)}"
                f" of {format_amount(asset, minimum_minor)} {asset_code})",
                quantity=money.fraction_text(nominal, covered),
                amount_minor=owed - fees,
                charged=True,
                period_start=start,
                period_end=end,
            )
        ]

    async def compute(self, kind: str, start: datetime, end: datetime) -> list[LineDraft]:
        """The lines of the `kind` invoice for `[start, end)`.

        A `progressive` invoice covers usage from its period's start to `end`
        (`start` is where the previous progressive invoice stopped), less
        what earlier progressive invoices of the period charged."""
        sub = self.subscription
        if kind == "opening":
            return await self.advance_fees(start, opening=True)
        if kind == "progressive":
            period_start = subscription_period(sub, start)[0]
            return await self.usage(period_start, end) + await self.progressive_credit(
                period_start, start
            )
        lines = await self.arrears_fees(start, end)
        lines += await self.usage(start, end)
        if start > sub.start_at:
            previous = subscription_period(sub, start - timedelta(microseconds=1))
            if previous[1] == start:
                lines += await self.late_usage(previous[0], start)
        lines += await self.realtime(start, end)
        lines += await self.commitment(start, end, lines)
        lines += await self.progressive_credit(start, end)
        if sub.ends_at is not None and sub.ends_at <= end:
            lines += await self.unused_credit(start, end)
        else:
            lines += await self.advance_fees(end, opening=False)
        return lines
