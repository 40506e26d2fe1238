"""Rating: a price and a quantity in, integer minor units and lines out."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal, localcontext
from typing import Literal

from billfold import limits
from billfold.assets.amounts import AssetInfo
from billfold.errors import InvalidRequest, LimitExceeded
from billfold.rating._dimensions import match_dimension
from billfold.rating._exact import EXACT, ONE, ZERO, require, to_minor
from billfold.rating._prices import (
    Flat,
    Graduated,
    GraduatedPercentage,
    Model,
    Package,
    Percentage,
    PercentageTier,
    PerUnit,
    Price,
    Tier,
    Volume,
)

LineKind = Literal[
    "units", "tier", "packages", "percentage", "flat", "fixed_fee", "minimum", "maximum"
]


@dataclass(frozen=True, slots=True)
class Line:
    """One line of a rating's breakdown.

    `kind` says what `units` count: `units` (per_unit), `tier` (the units in
    tier `tier`, 0-based, of a graduated, volume or graduated_percentage
    price), `packages` (whole packages billed), `percentage` (units above the
    free units), `flat` (none), `fixed_fee` (1, the event), `minimum` and
    `maximum` (none: the adjustment a per-event clamp made). `unit_amount` is
    the price of one of them (`rate_percent / 100` for percentages) and
    `flat_amount` the flat fee charged on this line.

    `amount` is exact; `amount_minor` is its share of the rating's rounded
    amount: the lines' `amount_minor` always sum to the rating's.
    """

    kind: LineKind
    tier: int | None
    units: Decimal
    unit_amount: Decimal
    flat_amount: Decimal
    amount: Decimal
    amount_minor: int


@dataclass(frozen=True, slots=True)
class Rating:
    """What a quantity (or an event moving a period's total) costs.

    `amount_minor` is the fee in the asset's minor units; `amount` is the same
    fee exact, before its one rounding (`precise_amount` in Lago's terms).
    `units` is `after - before` (`after` for `rate`). `dimension` is the index
    of the dimension that priced it, None for the base price.
    """

    amount_minor: int
    amount: Decimal
    units: Decimal
    before: Decimal | None
    after: Decimal
    dimension: int | None
    lines: tuple[Line, ...]


@dataclass(frozen=True, slots=True)
class _Part:
    kind: LineKind
    tier: int | None
    units: Decimal
    unit_amount: Decimal
    flat_amount: Decimal
    amount: Decimal


# --- quantities ----------------------------------------------------------------


def _quantity(value: object, field: str) -> Decimal:
    if isinstance(value, bool) or not isinstance(value, Decimal | int):
        # A float (or anything else) here is a program's bug, not input.
        raise TypeError(f"{field} must be a Decimal or an int, not {type(value).__name__}")
    quantity = Decimal(value)
    if not quantity.is_finite() or quantity < 0:
        raise InvalidRequest(
            f"{field} must be a finite quantity >= 0.", code="invalid_quantity", field=field
        )
    if quantity > limits.rating_quantity_max:
        raise InvalidRequest(
            f"{field} is above the largest quantity Billfold rates ({limits.rating_quantity_max}).",
            code="invalid_quantity",
            field=field,
        )
    # On the digits themselves, so no context is involved: places beyond the
    # limit must all be zeros, and are dropped, so that a quantity written
    # with a long tail of zeros computes like its short form.
    _, digits, exponent = quantity.as_tuple()
    assert isinstance(exponent, int)  # finite, checked above
    excess = -exponent - limits.rating_quantity_decimals_max
    if excess > 0:
        if any(digits[-excess:]):
            raise InvalidRequest(
                f"{field} has more than {limits.rating_quantity_decimals_max} decimals.",
                code="invalid_quantity",
                field=field,
            )
        kept = digits[:-excess] or (0,)
        quantity = Decimal((0, kept, -limits.rating_quantity_decimals_max))
    return quantity


# --- the period's price as a function of its total ------------------------------


def _percent(rate_percent: Decimal) -> Decimal:
    return rate_percent.scaleb(-2, context=EXACT)


def _graduated(quantity: Decimal, tiers: Sequence[Tier | PercentageTier]) -> list[_Part]:
    parts: list[_Part] = []
    lower = ZERO
    for index, tier in enumerate(tiers):
        # The first tier is always reached (its flat fee is due at zero);
        # another only once usage is above its lower bound.
        if index > 0 and quantity <= lower:
            break
        unit_amount = tier.unit_amount if isinstance(tier, Tier) else _percent(tier.rate_percent)
        top = quantity if tier.up_to is None or quantity < tier.up_to else tier.up_to
        units = top - lower
        parts.append(
            _Part(
                "tier",
                index,
                units,
                unit_amount,
                tier.flat_amount,
                units * unit_amount + tier.flat_amount,
            )
        )
        if tier.up_to is None or quantity <= tier.up_to:
            break
        lower = tier.up_to
    return parts


def _volume(quantity: Decimal, tiers: tuple[Tier, ...]) -> list[_Part]:
    chosen = [i for i, t in enumerate(tiers) if t.up_to is None or quantity <= t.up_to]
    index = chosen[0]
    tier = tiers[index]
    amount = quantity * tier.unit_amount + tier.flat_amount
    return [_Part("tier", index, quantity, tier.unit_amount, tier.flat_amount, amount)]


def _paid_units(model: Package | Percentage, quantity: Decimal) -> Decimal:
    return max(ZERO, quantity - model.free_units)


def _parts(model: Model, quantity: Decimal) -> list[_Part]:
    """The exact lines of the price of a period whose total is `quantity`."""
    match model:
        case PerUnit(unit_amount=unit_amount):
            return [_Part("units", None, quantity, unit_amount, ZERO, quantity * unit_amount)]
        case Graduated(tiers=tiers) | GraduatedPercentage(tiers=tiers):
            return _graduated(quantity, tiers)
        case Volume(tiers=tiers):
            return _volume(quantity, tiers)
        case Package():
            whole, remainder = divmod(_paid_units(model, quantity), model.package_size)
            packages = whole + (ONE if remainder else ZERO)
            return [
                _Part(
                    "packages",
                    None,
                    packages,
                    model.package_amount,
                    ZERO,
                    packages * model.package_amount,
                )
            ]
        case Percentage():
            paid = _paid_units(model, quantity)
            unit_amount = _percent(model.rate_percent)
            return [_Part("percentage", None, paid, unit_amount, ZERO, paid * unit_amount)]
        case Flat(amount=amount):
            return [_Part("flat", None, ZERO, ZERO, amount, amount)]
    raise AssertionError(f"unknown model {model!r}")  # pragma: no cover


def _allocate(parts: list[_Part], scale: int) -> tuple[list[int], int]:
    """Each part's minor units, as differences of the rounded running total,
    so that they sum to the rounded total: the one rounding of the amount."""
    shares: list[int] = []
    running = ZERO
    rounded = 0
    for part in parts:
        running += part.amount
        now = to_minor(running, scale)
        shares.append(now - rounded)
        rounded = now
    if rounded > limits.amount_minor_max:
        raise LimitExceeded(
            "The rated amount is larger than Billfold allows.", code="amount_too_large"
        )
    return shares, rounded


# --- public ------------------------------------------------------------------------


def _resolve(
    price: Price, event_data: Mapping[str, object] | None, dimension: int | None
) -> tuple[int | None, Model, Decimal | None, Decimal | None]:
    if dimension is None:
        dimension = match_dimension(price, event_data)
    else:
        require(event_data is None, "pass event_data or dimension, not both")
        require(
            not isinstance(dimension, bool) and 0 <= dimension < len(price.dimensions),
            f"no dimension {dimension!r}",
        )
    if dimension is None:
        return None, price.model, price.min_amount_per_event, price.max_amount_per_event
    chosen = price.dimensions[dimension]
    return dimension, chosen.model, chosen.min_amount_per_event, chosen.max_amount_per_event


def rate_marginal(
    price: Price,
    before: Decimal | int | None,
    after: Decimal | int,
    *,
    asset: AssetInfo,
    event_data: Mapping[str, object] | None = None,
    dimension: int | None = None,
) -> Rating:
    """The fee of one event that moves its period's total from `before` to
    `after`: price(after) - price(before), each rounded to minor units first,
    so the fees of a period's events always sum to the price of its total.

    `before` is None for the period's first event: a period with no event yet
    costs nothing, so the first event also pays what the price charges at
    zero usage (the first tier's flat fee, a flat price). Totals are per
    price and per dimension: the caller keeps one running total for each
    dimension an event resolves to (`Rating.dimension`).

    The dimension comes from matching `event_data` (see `match_dimension`),
    or is given as `dimension` (an index) instead. Per-event parts come last:
    a percentage price's `fixed_amount` when the event has paid units, then
    the price's per-event minimum and maximum on a positive fee.
    """
    after_q = _quantity(after, "after")
    before_q = None if before is None else _quantity(before, "before")
    index, model, minimum, maximum = _resolve(price, event_data, dimension)
    scale = asset.scale
    with localcontext(EXACT):
        after_parts = _parts(model, after_q)
        before_parts = [] if before_q is None else _parts(model, before_q)
        olds = _keyed(before_parts, scale)
        news = _keyed(after_parts, scale)
        keys = sorted(olds.keys() | news.keys(), key=lambda key: -1 if key[1] is None else key[1])
        lines = [_delta_line(olds.get(key), news.get(key)) for key in keys]
        lines = [line for line in lines if not _is_empty(line)]

        if isinstance(model, Percentage) and model.fixed_amount > 0:
            paid_before = ZERO if before_q is None else _paid_units(model, before_q)
            if _paid_units(model, after_q) > paid_before:
                fee = model.fixed_amount
                lines.append(Line("fixed_fee", None, ONE, fee, ZERO, fee, to_minor(fee, scale)))

        amount = sum((line.amount for line in lines), ZERO)
        amount_minor = sum(line.amount_minor for line in lines)
        if amount_minor > 0:
            if minimum is not None and amount_minor < to_minor(minimum, scale):
                floor = to_minor(minimum, scale)
                lines.append(
                    Line("minimum", None, ZERO, ZERO, ZERO, minimum - amount, floor - amount_minor)
                )
                amount, amount_minor = minimum, floor
            elif maximum is not None and amount_minor > to_minor(maximum, scale):
                ceiling = to_minor(maximum, scale)
                adjustment = ceiling - amount_minor
                lines.append(Line("maximum", None, ZERO, ZERO, ZERO, maximum - amount, adjustment))
                amount, amount_minor = maximum, ceiling
        if abs(amount_minor) > limits.amount_minor_max:
            raise LimitExceeded(
                "The rated amount is larger than Billfold allows.", code="amount_too_large"
            )
        units = after_q if before_q is None else after_q - before_q
        return Rating(
            amount_minor=amount_minor,
            amount=amount,
            units=units,
            before=before_q,
            after=after_q,
            dimension=index,
            lines=tuple(lines),
        )


_Key = tuple[LineKind, int | None]


def _keyed(parts: list[_Part], scale: int) -> dict[_Key, tuple[_Part, int]]:
    shares, _ = _allocate(parts, scale)
    return {(p.kind, p.tier): (p, share) for p, share in zip(parts, shares, strict=True)}


def _delta_line(old: tuple[_Part, int] | None, new: tuple[_Part, int] | None) -> Line:
    """The line of what changed on one key between the two totals."""
    template = new[0] if new is not None else old[0] if old is not None else None
    require(template is not None, "a line comes from one of the two totals")
    assert template is not None  # for the type checker
    empty = (ZERO, ZERO, ZERO, 0)
    o_units, o_flat, o_amount, o_minor = (
        (old[0].units, old[0].flat_amount, old[0].amount, old[1]) if old is not None else empty
    )
    n_units, n_flat, n_amount, n_minor = (
        (new[0].units, new[0].flat_amount, new[0].amount, new[1]) if new is not None else empty
    )
    return Line(
        kind=template.kind,
        tier=template.tier,
        units=n_units - o_units,
        unit_amount=template.unit_amount,
        flat_amount=n_flat - o_flat,
        amount=n_amount - o_amount,
        amount_minor=n_minor - o_minor,
    )


def _is_empty(line: Line) -> bool:
    return not (line.units or line.flat_amount or line.amount or line.amount_minor)


def rate(
    price: Price,
    quantity: Decimal | int,
    *,
    asset: AssetInfo,
    event_data: Mapping[str, object] | None = None,
    dimension: int | None = None,
) -> Rating:
    """The price of a period whose usage is `quantity`, as one event.

    Exactly `rate_marginal(price, None, quantity, …)`. For a price without
    per-event parts (`Price.has_per_event_parts` false) this is the price of
    any period with that total, however many events made it; with them, a
    period of several events costs the sum of its events' `rate_marginal`.
    """
    return rate_marginal(
        price, None, quantity, asset=asset, event_data=event_data, dimension=dimension
    )
