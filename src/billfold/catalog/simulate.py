"""What events would cost under one product version's usage prices, writing nothing.

The events are one billing period. Each usage price takes the events its
meter counts (the meter's `event_type` and `filters`), in order of
`timestamp` (absent: the server clock), ties in request order, and keeps the
meter's aggregate per customer (`customer_id` as sent, a label: it is not
looked up, and events without one are one anonymous customer) and per
matched dimension. Each event is charged `rate_marginal(before, after)` of
that aggregate, as real-time billing charges it, so a price's events sum to
the price of the period's aggregate, which is what an invoice charges in
arrears: one computation answers both. Quantities come from the meter:
`count` counts events; `sum`, `max`, `min` and `latest` read the number at
its `field`; `unique_count` counts distinct values there.

Only usage prices are simulated: fixed and credits prices do not depend on
events. Nothing is read but the product, its meters and assets, and nothing
is written.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from billfold import limits
from billfold.assets import AssetInfo, get_asset
from billfold.assets.service import parse_instant
from billfold.catalog import service
from billfold.catalog.definitions import usage_price
from billfold.clock import Clock
from billfold.errors import InvalidRequest, LimitExceeded
from billfold.metering import values
from billfold.metering.models import Meter
from billfold.metering.repository import MeterRepository
from billfold.organizations.service import Principal
from billfold.rating import Line, Price, Rating, match_dimension, rate_marginal

_NUMERIC = frozenset({"sum", "max", "min", "latest"})


@dataclass(frozen=True, slots=True)
class SimEvent:
    index: int
    type: str
    timestamp: datetime
    data: dict[str, Any]
    customer: str | None


@dataclass(slots=True)
class LineTotal:
    dimension: int | None
    kind: str
    tier: int | None
    units: Decimal
    unit_amount: Decimal
    flat_amount: Decimal
    amount_minor: int


@dataclass(slots=True)
class PriceResult:
    code: str
    meter: str
    asset: AssetInfo
    billing: str
    model: str
    events: int = 0
    quantity: Decimal = Decimal(0)
    amount_minor: int = 0
    lines: dict[tuple[int | None, str, int | None], LineTotal] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class EventFee:
    price: str
    asset: AssetInfo
    quantity: Decimal
    amount_minor: int


@dataclass(frozen=True, slots=True)
class Simulation:
    product: str
    version: int
    prices: list[PriceResult]
    events: list[list[EventFee]]
    totals: dict[str, tuple[AssetInfo, int]]


def _invalid(detail: str, field: str) -> InvalidRequest:
    return InvalidRequest(detail, code="invalid_event", field=field)


def parse_events(raw_events: object, clock: Clock) -> list[SimEvent]:
    """The events of a simulate request, exact, in request order."""
    if not isinstance(raw_events, list):
        raise _invalid("events is a list of events.", "events")
    if len(raw_events) > limits.simulate_events_max:
        raise LimitExceeded(
            f"A simulation rates at most {limits.simulate_events_max} events.",
            code="too_many_events",
            field="events",
        )
    now = clock.now()
    events: list[SimEvent] = []
    for index, raw in enumerate(raw_events):
        at = f"events.{index}"
        if not isinstance(raw, dict):
            raise _invalid(f"{at} is an object.", at)
        for key in raw:
            if key not in ("type", "timestamp", "data", "customer_id", "id"):
                raise _invalid(
                    f"An event takes type, timestamp, data, customer_id and id; not {key}.",
                    f"{at}.{key}",
                )
        kind = raw.get("type")
        if not isinstance(kind, str) or not 0 < len(kind) <= limits.event_type_length_max:
            raise _invalid(
                f"{at}.type is the event type, 1 to {limits.event_type_length_max} characters.",
                f"{at}.type",
            )
        stamp = raw.get("timestamp")
        if stamp is not None and not isinstance(stamp, str):
            raise _invalid(f"{at}.timestamp is an RFC 3339 timestamp.", f"{at}.timestamp")
        timestamp = now if stamp is None else parse_instant(stamp, field=f"{at}.timestamp")
        customer = raw.get("customer_id")
        if customer is not None and (not isinstance(customer, str) or len(customer) > 300):
            raise _invalid(f"{at}.customer_id is a customer reference.", f"{at}.customer_id")
        data = raw.get("data", {})
        if not isinstance(data, dict):
            raise _invalid(f"{at}.data is an object.", f"{at}.data")
        try:
            data = values.sanitize(data, f"{at}.data")
        except values.DataError as exc:
            raise _invalid(f"{exc.path} {exc.message}.", exc.path) from None
        events.append(SimEvent(index, kind, timestamp, data, customer))
    return events


def _path(dotted: str) -> tuple[str, ...]:
    segments = values.parse_path(dotted)
    assert segments is not None, dotted
    return segments


def _counts(meter: Meter, event: SimEvent) -> bool:
    return event.type == meter.event_type and all(
        values.text_of(values.value_at(event.data, _path(key))) in allowed
        for key, allowed in meter.filters.items()
    )


class _Aggregate:
    """A meter's running aggregate for one customer and dimension."""

    def __init__(self, aggregation: str) -> None:
        self.aggregation = aggregation
        self.value: Decimal | None = None
        self.seen: set[str] = set()

    def add(self, meter: Meter, event: SimEvent) -> Decimal:
        """The aggregate after `event`."""
        if self.aggregation == "count":
            self.value = (self.value or Decimal(0)) + 1
            return self.value
        assert meter.field is not None
        raw = values.value_at(event.data, _path(meter.field))
        at = f"events.{event.index}.data.{meter.field}"
        if self.aggregation == "unique_count":
            text = values.text_of(raw)
            if text is not None:
                self.seen.add(text)
            return Decimal(len(self.seen))
        number = None if raw is None else values.numeric_value(raw)
        if raw is not None and number is None:
            raise _invalid(f"{at} is not a number, and meter {meter.code} needs one.", at)
        if number is not None and number < 0:
            raise _invalid(f"{at} is negative; a simulated quantity is >= 0.", at)
        if number is not None:
            previous = self.value
            if self.aggregation == "sum":
                self.value = values.EXACT.add(previous or Decimal(0), number)
            elif self.aggregation == "max":
                self.value = number if previous is None else max(previous, number)
            elif self.aggregation == "min":
                self.value = number if previous is None else min(previous, number)
            else:  # latest
                self.value = number
        return self.value if self.value is not None else Decimal(0)


def _add_lines(result: PriceResult, rating: Rating) -> None:
    for line in rating.lines:
        _add_line(result, rating.dimension, line)


def _add_line(result: PriceResult, dimension: int | None, line: Line) -> None:
    key = (dimension, line.kind, line.tier)
    total = result.lines.get(key)
    if total is None:
        result.lines[key] = LineTotal(
            dimension,
            line.kind,
            line.tier,
            line.units,
            line.unit_amount,
            line.flat_amount,
            line.amount_minor,
        )
        return
    total.units += line.units
    total.flat_amount += line.flat_amount
    total.amount_minor += line.amount_minor


def _rate(
    price: Price,
    before: Decimal | None,
    after: Decimal,
    asset: AssetInfo,
    data: Mapping[str, Any],
    at: str,
) -> Rating:
    try:
        return rate_marginal(price, before, after, asset=asset, event_data=data)
    except InvalidRequest as exc:
        if exc.code != "invalid_quantity":
            raise
        raise InvalidRequest(exc.detail, code="invalid_quantity", field=at) from None


async def simulate(
    session: AsyncSession,
    clock: Clock,
    principal: Principal,
    code: str,
    number: int,
    raw_events: Sequence[Any],
) -> Simulation:
    events = parse_events(raw_events, clock)
    view = await service.get_version(session, principal, code, number)
    organization_id = principal.organization_id
    meter_repository = MeterRepository(session, organization_id)
    meters: dict[str, Meter] = {}
    assets: dict[str, AssetInfo] = {}
    ordered = sorted(events, key=lambda event: (event.timestamp, event.index))
    fees: list[list[EventFee]] = [[] for _ in events]
    results: list[PriceResult] = []
    totals: dict[str, tuple[AssetInfo, int]] = {}
    for stored in view.version.prices:
        if stored["type"] != "usage":
            continue
        if stored["asset"] not in assets:
            assets[stored["asset"]] = await get_asset(session, organization_id, stored["asset"])
        asset = assets[stored["asset"]]
        if stored["meter"] not in meters:
            found = await meter_repository.get_by_code(stored["meter"])
            # Meters are never deleted, and a version names only existing ones.
            assert found is not None, stored["meter"]
            meters[stored["meter"]] = found
        meter = meters[stored["meter"]]
        price = usage_price(stored, asset)
        result = PriceResult(stored["code"], meter.code, asset, stored["billing"], stored["model"])
        running: dict[tuple[str | None, int | None], tuple[_Aggregate, Decimal | None]] = {}
        for event in ordered:
            if not _counts(meter, event):
                continue
            key = (event.customer, match_dimension(price, event.data))
            aggregate, before = running.get(key) or (_Aggregate(meter.aggregation), None)
            after = aggregate.add(meter, event)
            at = f"events.{event.index}" + ("" if meter.field is None else f".data.{meter.field}")
            rating = _rate(price, before, after, asset, event.data, at)
            running[key] = (aggregate, after)
            result.events += 1
            result.quantity += rating.units
            result.amount_minor += rating.amount_minor
            _add_lines(result, rating)
            fees[event.index].append(
                EventFee(result.code, asset, rating.units, rating.amount_minor)
            )
        result.lines = {
            key: line
            for key, line in sorted(
                result.lines.items(),
                key=lambda item: (
                    -1 if item[0][0] is None else item[0][0],
                    -1 if item[0][2] is None else item[0][2],
                    item[0][1],
                ),
            )
            if line.units or line.flat_amount or line.amount_minor
        }
        results.append(result)
        _, sofar = totals.get(asset.code, (asset, 0))
        totals[asset.code] = (asset, sofar + result.amount_minor)
    return Simulation(view.product.code, view.version.number, results, fees, totals)
