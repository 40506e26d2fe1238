"""Real-time billing: each accepted event is rated under the customer's
`billing: real_time` prices and debited from the wallet in the transaction
that accepts it.

Per ingest request, with a fixed number of statements whatever its size:

1. Lock every wallet the request's fees or named holds touch, with one
   statement, in (customer, asset) order: the order the authorization writer
   locks in too, so no two transactions wait on each other in a cycle.
   Everything below happens under those locks, so two requests for one
   customer serialize here.
2. Lock the running total of each (subscription, price, dimension, period) the
   events move, and rate each event as the marginal amount
   price(total after) − price(total before), so a period's events always sum
   to the price of its total.
3. Debit: an event naming an open hold settles it (capture the fee up to the
   hold, release the rest; a fee above the hold takes the excess from the
   wallet). The other events' fees are debited with one journal entry per
   wallet and request: the consumption order makes that the same split as one
   entry per event. What the balances cannot cover becomes debt
   (`wallet.overdrawn`): usage already happened, so it is never refused.
4. One fee row per (event, price) with a non-zero fee or a settled hold.

A rating that cannot be done (a total past the rating limits) charges nothing
for that price and says so on the event's answer (`status: "unrated"`);
everything else about the event stands.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from billfold.assets.amounts import AssetInfo, format_amount
from billfold.assets.service import get_asset
from billfold.authorizations.models import Authorization
from billfold.authorizations.repository import AuthorizationRepository
from billfold.catalog.definitions import usage_price
from billfold.clock import Clock
from billfold.costs.service import (
    CostPolicy,
    PriceBook,
    Unpriced,
    cost_policy,
    marked_up_minor,
    vendor_cost_of,
)
from billfold.errors import BillfoldError
from billfold.frozen import FrozenCache
from billfold.ids import new_id
from billfold.ledger.repository import LedgerRepository
from billfold.metering import values
from billfold.metering.realtime import AcceptedEvent
from billfold.rating import Price, Rating, decimal_text, match_dimension, rate_marginal
from billfold.realtime.repository import MeterRule, RealtimeRepository, Total, TotalKey
from billfold.subscriptions.models import Subscription
from billfold.subscriptions.periods import subscription_period
from billfold.wallets.repository import WalletRepository
from billfold.wallets.service import OpenWallet, charge_usage, close_wallets, open_wallets

#: Meter aggregations a running total can follow event by event.
REALTIME_AGGREGATIONS = frozenset({"count", "sum", "max"})


@dataclass(frozen=True, slots=True)
class RealtimePrice:
    subscription: Subscription
    code: str
    price: Price
    meter: MeterRule
    asset: AssetInfo


@dataclass(slots=True)
class Fee:
    """One event's fee under one real-time price."""

    target: RealtimePrice
    key: TotalKey
    period_end: datetime
    quantity: Decimal
    rating: Rating | None = None
    #: Why it could not be rated (a stable error code), when it could not.
    unrated: str | None = None


def _path(dotted: str) -> tuple[str, ...]:
    segments = values.parse_path(dotted)
    assert segments is not None, dotted
    return segments


def counts(meter: MeterRule, event_type: str, data: Mapping[str, Any]) -> bool:
    return meter.event_type == event_type and all(
        values.text_of(values.value_at(data, _path(key))) in allowed
        for key, allowed in meter.filters.items()
    )


def event_quantity(meter: MeterRule, data: Mapping[str, Any]) -> Decimal | None:
    """What one event adds to the meter, or None when it adds nothing it can
    bill (no value, or a negative one: a real-time total only grows)."""
    if meter.aggregation == "count":
        return Decimal(1)
    assert meter.field is not None
    number = values.numeric_value(values.value_at(data, _path(meter.field)))
    if number is None or number < 0:
        return None
    return Decimal(number)


def advance(meter: MeterRule, total: Total, quantity: Decimal) -> Decimal:
    if meter.aggregation == "max":
        return quantity if total.event_count == 0 else max(total.quantity, quantity)
    return values.EXACT.add(total.quantity, quantity)


#: Parsed usage prices, by (organization, product id, version, price code).
_PRICES: FrozenCache[tuple[str, str, int, str], Price] = FrozenCache()


class Catalog:
    """The real-time prices of a request's customers, loaded once per request."""

    def __init__(self, session: AsyncSession, organization_id: str) -> None:
        self.session = session
        self.organization_id = organization_id
        self.repository = RealtimeRepository(session, organization_id)
        self.by_customer: dict[str, list[RealtimePrice]] = defaultdict(list)

    async def load(self, customer_ids: set[str], earliest: datetime, latest: datetime) -> None:
        subscriptions = await self.repository.subscriptions(customer_ids, earliest, latest)
        versions = await self.repository.versions(
            {(s.product_id, s.version) for s in subscriptions}
        )
        wanted: list[tuple[Subscription, dict[str, Any]]] = [
            (subscription, stored)
            for subscription in subscriptions
            for stored in versions.get((subscription.product_id, subscription.version), [])
            if stored.get("type") == "usage" and stored.get("billing") == "real_time"
        ]
        meters = await self.repository.meters({stored["meter"] for _, stored in wanted})
        assets: dict[str, AssetInfo] = {}
        for subscription, stored in wanted:
            meter = meters[stored["meter"]]
            if meter.aggregation not in REALTIME_AGGREGATIONS:
                # The catalog refuses these; a version stored before it did bills nothing.
                continue
            code = stored["asset"]
            if code not in assets:
                assets[code] = await get_asset(self.session, self.organization_id, code)
            # Parsed once per process, not once per subscriber and request:
            # a version's prices never change.
            key = (
                self.organization_id,
                subscription.product_id,
                subscription.version,
                stored["code"],
            )
            price = _PRICES.get(key)
            if price is None:
                price = usage_price(stored, assets[code])
                _PRICES.put(key, price)
            self.by_customer[subscription.customer_id].append(
                RealtimePrice(
                    subscription=subscription,
                    code=stored["code"],
                    price=price,
                    meter=meter,
                    asset=assets[code],
                )
            )

    def prices_for(
        self, customer_id: str, event_type: str, data: Mapping[str, Any], at: datetime
    ) -> list[RealtimePrice]:
        return _counting(self.by_customer.get(customer_id, []), event_type, data, at)


def _counting(
    prices: Sequence[RealtimePrice], event_type: str, data: Mapping[str, Any], at: datetime
) -> list[RealtimePrice]:
    """The prices that bill this event."""
    return [
        target
        for target in prices
        if _covers(target.subscription, at) and counts(target.meter, event_type, data)
    ]


def _covers(subscription: Subscription, at: datetime) -> bool:
    return subscription.start_at <= at and (
        subscription.canceled_at is None or at < subscription.canceled_at
    )


def plan_fees(
    targets: Sequence[RealtimePrice],
    data: Mapping[str, Any],
    at: datetime,
    periods: dict[str, tuple[datetime, datetime]] | None = None,
) -> list[Fee]:
    """The fees an event will owe, before the totals are known.

    `periods` keeps each subscription's last period across the events of a
    request: periods are half-open and tile time, so an instant inside one
    is in no other, and the calendar arithmetic runs once per subscription
    and period rather than once per event.
    """
    fees = []
    for target in targets:
        quantity = event_quantity(target.meter, data)
        if quantity is None:
            continue
        subscription_id = target.subscription.id
        period = None if periods is None else periods.get(subscription_id)
        if period is None or not period[0] <= at < period[1]:
            period = subscription_period(target.subscription, at)
            if periods is not None:
                periods[subscription_id] = period
        start, end = period
        dimension = match_dimension(target.price, data)
        key = TotalKey(subscription_id, target.code, -1 if dimension is None else dimension, start)
        fees.append(Fee(target, key, end, quantity))
    return fees


def rate_fee(fee: Fee, total: Total, data: Mapping[str, Any]) -> None:
    """Rate `fee` against its running total and move the total."""
    target = fee.target
    after = advance(target.meter, total, fee.quantity)
    before = None if total.event_count == 0 else total.quantity
    try:
        fee.rating = rate_marginal(target.price, before, after, asset=target.asset, event_data=data)
    except BillfoldError as error:
        fee.unrated = error.code
        return
    total.quantity = after
    total.event_count += 1


# --- ingest ----------------------------------------------------------------------


#: The price code of the organization's default LLM price on fees and answers.
DEFAULT_LLM_PRICE = "llm_default"


@dataclass(frozen=True, slots=True)
class DefaultFee:
    """Vendor cost × the organization's markup: the price of an event carrying
    `data.llm` that no subscribed real-time price counts."""

    asset: AssetInfo
    amount_minor: int


async def default_llm_fee(
    session: AsyncSession,
    organization_id: str,
    llm: dict[str, Any],
    at: datetime,
    policy: CostPolicy | None = None,
    book: PriceBook | None = None,
) -> DefaultFee | Unpriced:
    """Read `policy` and the prices (unless `book` covers `at`) when not given."""
    policy = policy or await cost_policy(session, organization_id)
    cost = await vendor_cost_of(session, organization_id, llm, at, policy, book)
    if isinstance(cost, Unpriced):
        return cost
    asset = await get_asset(session, organization_id, cost.asset)
    return DefaultFee(asset, marked_up_minor(cost.amount_minor, policy.markup_percent))


@dataclass(slots=True)
class _Billed:
    event: AcceptedEvent
    fees: list[Fee]
    default: DefaultFee | None = None
    #: The settled hold, when the event named an open one.
    authorization: Authorization | None = None
    entry_ids: dict[str, str] = field(default_factory=dict)


async def bill_events(
    session: AsyncSession,
    clock: Clock,
    organization_id: str,
    events: Sequence[AcceptedEvent],
) -> dict[str, list[dict[str, Any]]]:
    """Rate and debit the accepted events; their fees, by event id, for the
    answer (an event that owes nothing and settles no hold is left out)."""
    if not events:
        return {}
    now = clock.now()
    catalog = Catalog(session, organization_id)
    await catalog.load(
        {event.customer_id for event in events},
        min(event.timestamp for event in events),
        max(event.timestamp for event in events),
    )
    holds = AuthorizationRepository(session, organization_id)
    named = await holds.get_many(sorted({e.authorization_id for e in events if e.authorization_id}))
    by_customer: dict[str, list[_Billed]] = defaultdict(list)
    periods: dict[str, tuple[datetime, datetime]] = {}
    # Read once for the request's default-priced calls, not three rows each.
    llm_prices: tuple[CostPolicy, PriceBook] | None = None
    for event in events:
        targets = catalog.prices_for(event.customer_id, event.type, event.data, event.timestamp)
        fees = plan_fees(targets, event.data, event.timestamp, periods) if targets else []
        item = _Billed(event, fees)
        llm = event.data.get("llm")
        if not targets and isinstance(llm, dict):
            if llm_prices is None:
                llm_prices = (
                    await cost_policy(session, organization_id),
                    await PriceBook.load(
                        session, organization_id, max(e.timestamp for e in events)
                    ),
                )
            default = await default_llm_fee(
                session, organization_id, llm, event.timestamp, *llm_prices
            )
            # Unpriced (an unknown model): the cost is flagged by the costs
            # module; the event is never billed as if it were free of cost.
            item.default = default if isinstance(default, DefaultFee) else None
        if not item.fees and item.default is None and event.authorization_id is None:
            # Nothing to charge and no hold to settle: no wallet, no fee row,
            # and its answer is the `fees: []` every unanswered event gets.
            continue
        by_customer[event.customer_id].append(item)
    repository = RealtimeRepository(session, organization_id)
    billed = [item for customer_id in sorted(by_customer) for item in by_customer[customer_id]]
    wallets = await _open_wallets(session, now, organization_id, billed, named)
    if wallets:
        await _bill(session, clock, now, repository, holds, named, billed, wallets)
    fee_rows: list[dict[str, Any]] = []
    answers: dict[str, list[dict[str, Any]]] = {}
    for item in billed:
        answers[item.event.id] = [_fee_answer(fee) for fee in item.fees]
        if item.default is not None:
            answers[item.event.id].append(_default_answer(item.default))
        fee_rows.extend(_fee_rows(organization_id, now, item))
    await repository.insert_fees(fee_rows)
    return answers


WalletKey = tuple[str, str]  # customer, asset


async def _open_wallets(
    session: AsyncSession,
    now: datetime,
    organization_id: str,
    billed: list[_Billed],
    named: dict[str, Authorization],
) -> dict[WalletKey, OpenWallet]:
    """Lock every wallet the request's fees and named holds touch, all at once
    in (customer, asset) order, creating the missing ones."""
    keys: set[WalletKey] = set()
    for item in billed:
        customer_id = item.event.customer_id
        keys.update((customer_id, fee.target.asset.code) for fee in item.fees)
        if item.default is not None:
            keys.add((customer_id, item.default.asset.code))
        hold = named.get(item.event.authorization_id or "")
        if hold is not None and hold.customer_id == customer_id:
            keys.add((customer_id, hold.asset_code))
    if not keys:
        return {}
    ordered = sorted(keys)
    wallets = await open_wallets(session, now, organization_id, ordered)
    missing = [key for key in ordered if key not in wallets]
    if missing:
        # A customer's first usage in an asset: its wallet opens here. The new
        # rows are locked by their insert until this transaction commits.
        ledger = LedgerRepository(session, organization_id)
        wallet_rows = WalletRepository(session, organization_id)
        for asset_code in sorted({asset for _, asset in missing}):
            await ledger.ensure_system_accounts(asset_code, now)
        for customer_id, asset_code in missing:
            await wallet_rows.insert_if_absent(customer_id, asset_code, now)
        wallets |= await open_wallets(session, now, organization_id, missing)
    assert set(wallets) == keys
    return wallets


async def _bill(
    session: AsyncSession,
    clock: Clock,
    now: datetime,
    repository: RealtimeRepository,
    holds: AuthorizationRepository,
    named: dict[str, Authorization],
    billed: list[_Billed],
    wallets: dict[WalletKey, OpenWallet],
) -> None:
    hold_ids = sorted(
        {
            hold.id
            for item in billed
            if (hold := named.get(item.event.authorization_id or "")) is not None
            and hold.customer_id == item.event.customer_id
        }
    )
    # Read again under the wallet locks: a hold's status may have moved since
    # the unlocked read that found its asset (the objects refresh in place).
    await holds.get_many(hold_ids)
    splits = await holds.splits_of(hold_ids)

    totals = await repository.lock_totals({fee.key for item in billed for fee in item.fees}, now)
    for item in billed:
        for fee in item.fees:
            rate_fee(fee, totals[fee.key], item.event.data)
    await repository.save_totals(totals, now)

    plain: dict[WalletKey, list[_Billed]] = defaultdict(list)
    plain_minor: dict[WalletKey, int] = defaultdict(int)
    for item in billed:
        customer_id = item.event.customer_id
        owed: dict[str, int] = defaultdict(int)
        for fee in item.fees:
            if fee.rating is not None:
                owed[fee.target.asset.code] += fee.rating.amount_minor
        if item.default is not None:
            owed[item.default.asset.code] += item.default.amount_minor
        hold = named.get(item.event.authorization_id or "")
        if hold is not None and hold.customer_id == customer_id:
            opened = wallets[(customer_id, hold.asset_code)]
            if hold.status == "authorized" and hold.expires_at <= now:
                settlement = opened.state.settle(hold.id, splits[hold.id], 0, "hold_expiry", now)
                holds.stage_resolve(hold, "expired", 0, settlement.released_minor, now)
            if hold.status == "authorized":
                fee_minor = max(0, owed.pop(hold.asset_code, 0))
                capture = min(fee_minor, hold.amount_minor)
                settlement = opened.state.settle(hold.id, splits[hold.id], capture, "capture", now)
                holds.stage_resolve(hold, "captured", capture, settlement.released_minor, now)
                item.authorization = hold
                if settlement.entry_id is not None:
                    item.entry_ids[hold.asset_code] = settlement.entry_id
                if fee_minor > capture:
                    charge = await charge_usage(
                        session, opened, hold.id, fee_minor - capture, "usage", event=item.event.id
                    )
                    item.entry_ids.setdefault(hold.asset_code, charge.entry.id)
        for code, amount in owed.items():
            if amount > 0:
                plain[(customer_id, code)].append(item)
                plain_minor[(customer_id, code)] += amount
    await holds.write_staged()  # every hold this batch settled, in one statement
    for key, amount in plain_minor.items():
        charge = await charge_usage(
            session, wallets[key], None, amount, "usage", events=len(plain[key])
        )
        for item in plain[key]:
            item.entry_ids.setdefault(key[1], charge.entry.id)
    await close_wallets(session, clock, [wallets[key] for key in sorted(wallets)])


def _fee_answer(fee: Fee) -> dict[str, Any]:
    target = fee.target
    out: dict[str, Any] = {
        "price": target.code,
        "subscription_id": target.subscription.id,
        "asset": target.asset.code,
    }
    if fee.rating is None:
        out |= {"status": "unrated", "code": fee.unrated, "amount": format_amount(target.asset, 0)}
    else:
        out |= {
            "quantity": decimal_text(fee.rating.units),
            "amount": format_amount(target.asset, fee.rating.amount_minor),
        }
    return out


def _default_answer(default: DefaultFee) -> dict[str, Any]:
    return {
        "price": DEFAULT_LLM_PRICE,
        "subscription_id": None,
        "asset": default.asset.code,
        "quantity": "1",
        "amount": format_amount(default.asset, default.amount_minor),
    }


def _fee_rows(organization_id: str, now: datetime, item: _Billed) -> list[dict[str, Any]]:
    """One row per price that charged the event, or whose asset's hold it settled."""
    event, hold = item.event, item.authorization

    def row(asset_code: str, amount_minor: int, **fields: Any) -> dict[str, Any] | None:
        settles = hold is not None and hold.asset_code == asset_code
        if amount_minor == 0 and not settles:
            return None
        return {
            "id": new_id("fee"),
            "organization_id": organization_id,
            "event_id": event.id,
            "event_type": event.type,
            "customer_id": event.customer_id,
            "asset_code": asset_code,
            "amount_minor": amount_minor,
            "event_timestamp": event.timestamp,
            "entry_id": item.entry_ids.get(asset_code),
            "authorization_id": hold.id if settles and hold is not None else None,
            "created_at": now,
            **fields,
        }

    rows: list[dict[str, Any] | None] = []
    if item.default is not None:
        rows.append(
            row(
                item.default.asset.code,
                item.default.amount_minor,
                subscription_id=None,
                price_code=DEFAULT_LLM_PRICE,
                quantity="1",
                dimension=None,
                lines=[],
                period_start=event.timestamp,
                period_end=event.timestamp,
            )
        )
    for fee in item.fees:
        if fee.rating is None:
            continue
        rows.append(
            row(
                fee.target.asset.code,
                fee.rating.amount_minor,
                subscription_id=fee.target.subscription.id,
                price_code=fee.target.code,
                quantity=decimal_text(fee.rating.units),
                dimension=fee.rating.dimension,
                lines=[_line_json(line) for line in fee.rating.lines],
                period_start=fee.key.period_start,
                period_end=fee.period_end,
            )
        )
    return [r for r in rows if r is not None]


def _line_json(line: Any) -> dict[str, Any]:
    return {
        "kind": line.kind,
        "tier": line.tier,
        "units": decimal_text(line.units),
        "unit_amount": decimal_text(line.unit_amount),
        "flat_amount": decimal_text(line.flat_amount),
        "amount": decimal_text(line.amount),
        "amount_minor": line.amount_minor,
    }


# --- estimates ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Estimate:
    """What an event like this would cost now, per asset, in minor units."""

    fees: dict[str, tuple[AssetInfo, int]]
    #: Whether any price (a real-time one, or the default LLM price) counts such an event.
    priced: bool
    #: The event's `data.llm` has no vendor cost (an unknown model, bad usage).
    unpriced: Unpriced | None = None


@dataclass(frozen=True, slots=True)
class Pricing:
    """What estimating a customer's events reads besides the running totals,
    as read once for every instant up to `through`: the customer's real-time
    prices, the LLM price book and the cost policy. The gateway keeps one per
    customer for a second (`limits.gateway_lookup_ttl_s`) instead of reading
    them for every call."""

    prices: tuple[RealtimePrice, ...]
    book: PriceBook
    policy: CostPolicy
    through: datetime

    def covers(self, at: datetime) -> bool:
        return at <= self.through

    @classmethod
    async def load(
        cls,
        session: AsyncSession,
        organization_id: str,
        customer_id: str,
        at: datetime,
        through: datetime,
    ) -> Pricing:
        catalog = Catalog(session, organization_id)
        await catalog.load({customer_id}, at, through)
        return cls(
            tuple(catalog.by_customer.get(customer_id, ())),
            await PriceBook.load(session, organization_id, through),
            await cost_policy(session, organization_id),
            through,
        )


@dataclass(slots=True)
class PlannedEstimate:
    """An estimate up to the running totals its fees are rated against:
    everything that does not depend on them is known. The wallet writer reads
    the totals with the wallet's lock (`AuthorizeRequest.estimate`), after
    the ingest that last moved them committed, in the same round trip."""

    data: Mapping[str, Any]
    fees: list[Fee]
    #: Per asset, what is owed whatever the totals: 0 for each priced asset,
    #: the default LLM fee.
    base: dict[str, tuple[AssetInfo, int]]
    #: Whether any price (a real-time one, or the default LLM price) counts such an event.
    priced: bool
    #: The event's `data.llm` has no vendor cost (an unknown model, bad usage).
    unpriced: Unpriced | None = None

    @property
    def total_keys(self) -> set[TotalKey]:
        return {fee.key for fee in self.fees}

    def finish(self, totals: Mapping[TotalKey, Total]) -> Estimate:
        """Rated against `totals` as they stand (not moved: an estimate holds
        money, it does not use anything). A fee rating cannot compute counts
        as nothing."""
        out = dict(self.base)
        for fee in self.fees:
            current = totals.get(fee.key, Total(Decimal(0), 0))
            rate_fee(fee, Total(current.quantity, current.event_count), self.data)
            if fee.rating is not None and fee.rating.amount_minor > 0:
                asset, sofar = out[fee.target.asset.code]
                out[fee.target.asset.code] = (asset, sofar + fee.rating.amount_minor)
        return Estimate(out, self.priced, self.unpriced)


async def plan_estimate(
    session: AsyncSession,
    organization_id: str,
    customer_id: str,
    event_type: str,
    data: Mapping[str, Any],
    at: datetime,
    pricing: Pricing | None = None,
) -> PlannedEstimate:
    """What a hypothetical event would cost if it arrived now, but for the
    running totals (`PlannedEstimate.finish` rates it against them). Reads
    the prices unless given `pricing` that covers `at`; with such `pricing`
    and built-in assets, it reads nothing."""
    if pricing is not None and not pricing.covers(at):
        pricing = None
    if pricing is None:
        catalog = Catalog(session, organization_id)
        await catalog.load({customer_id}, at, at)
        prices: Sequence[RealtimePrice] = catalog.by_customer.get(customer_id, [])
    else:
        prices = pricing.prices
    targets = _counting(prices, event_type, data, at)
    fees = plan_fees(targets, data, at)
    base: dict[str, tuple[AssetInfo, int]] = {}
    for target in targets:
        base.setdefault(target.asset.code, (target.asset, 0))
    llm = data.get("llm")
    if not isinstance(llm, dict):
        return PlannedEstimate(data, fees, base, bool(targets))
    policy, book = (None, None) if pricing is None else (pricing.policy, pricing.book)
    if targets:
        # Priced by the product; only an unknown model matters (never free).
        cost = await vendor_cost_of(session, organization_id, llm, at, policy, book)
        return PlannedEstimate(data, fees, base, True, cost if isinstance(cost, Unpriced) else None)
    default = await default_llm_fee(session, organization_id, llm, at, policy, book)
    if isinstance(default, Unpriced):
        if default.policy == "record":
            # Recorded, not blocked: the call goes ahead with nothing held.
            usd = await get_asset(session, organization_id, "USD")
            return PlannedEstimate(data, [], {usd.code: (usd, 0)}, True, default)
        return PlannedEstimate(data, [], base, False, default)
    base[default.asset.code] = (default.asset, default.amount_minor)
    return PlannedEstimate(data, [], base, True)
