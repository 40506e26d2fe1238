"""Invoice arithmetic: proration, rounding, discounts and taxes. Pure, Decimal only.

Amounts are ints of the asset's minor units at its stored scale. Every
division rounds once, half-up (ties away from zero, as Lago's BigDecimal
does), at the place a fraction becomes minor units.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import ROUND_HALF_UP, Context, Decimal

# Enough digits for any amount the limits allow times any ratio of seconds.
_EXACT = Context(prec=60, rounding=ROUND_HALF_UP)


def round_half_up(value: Decimal) -> int:
    return int(value.quantize(Decimal(1), rounding=ROUND_HALF_UP, context=_EXACT))


def _cumulative(amount_minor: int, start: datetime, end: datetime, at: datetime) -> int:
    """The rounded share of `amount_minor` earned from `start` to `at`."""
    elapsed = Decimal((at - start).total_seconds())
    whole = Decimal((end - start).total_seconds())
    return round_half_up(_EXACT.divide(_EXACT.multiply(Decimal(amount_minor), elapsed), whole))


def prorate(
    amount_minor: int,
    period: tuple[datetime, datetime],
    covered: tuple[datetime, datetime],
) -> int:
    """The share of a whole period's `amount_minor` for `covered`, a part of `period`.

    Computed as the difference of the rounded running shares at the part's
    two ends, so the parts of any split of a period sum to exactly the whole
    amount: a period cut by an upgrade bills the old and new fees without a
    minor unit lost or gained.
    """
    start, end = period
    lo, hi = max(covered[0], start), min(covered[1], end)
    assert start < end, period
    if lo >= hi:
        return 0
    return _cumulative(amount_minor, start, end, hi) - _cumulative(amount_minor, start, end, lo)


def fraction_text(period: tuple[datetime, datetime], covered: tuple[datetime, datetime]) -> str:
    """The covered fraction of the period for display, 4 decimals."""
    whole = Decimal((period[1] - period[0]).total_seconds())
    part = Decimal((min(covered[1], period[1]) - max(covered[0], period[0])).total_seconds())
    value = _EXACT.divide(max(part, Decimal(0)), whole)
    return str(value.quantize(Decimal("0.0001"), rounding=ROUND_HALF_UP))


def round_to_exponent(amount_minor: int, scale: int, exponent: int | None) -> int:
    """`amount_minor` (at `scale`) rounded half-up to `exponent` decimals, still at `scale`."""
    if exponent is None or exponent >= scale:
        return amount_minor
    step = int(10 ** (scale - exponent))
    return round_half_up(_EXACT.divide(Decimal(amount_minor), Decimal(step))) * step


def percent_of(amount_minor: int, percent: Decimal) -> int:
    return round_half_up(_EXACT.divide(_EXACT.multiply(Decimal(amount_minor), percent), 100))


@dataclass(frozen=True, slots=True)
class TaxSpec:
    code: str
    name: str
    rate_percent: Decimal
    inclusive: bool


@dataclass(frozen=True, slots=True)
class AppliedTax:
    code: str
    name: str
    rate_percent: Decimal
    inclusive: bool
    taxable_minor: int
    amount_minor: int


@dataclass(frozen=True, slots=True)
class Totals:
    subtotal_minor: int
    discount_minor: int
    tax_minor: int
    total_minor: int
    rounding_minor: int
    total_rounded_minor: int
    taxes: tuple[AppliedTax, ...]


def taxes_on(amount_minor: int, taxes: Sequence[TaxSpec]) -> tuple[AppliedTax, ...]:
    """Each tax on `amount_minor` (the discounted subtotal).

    Exclusive taxes are added on top. Inclusive ones are already inside the
    amount: their share is `amount × r / (100 + Σ inclusive rates)`, shown
    but not added.
    """
    inclusive_percent = sum((t.rate_percent for t in taxes if t.inclusive), Decimal(0))
    out = []
    for tax in taxes:
        if tax.inclusive:
            share = _EXACT.divide(
                _EXACT.multiply(Decimal(amount_minor), tax.rate_percent),
                100 + inclusive_percent,
            )
            tax_minor = round_half_up(share)
        else:
            tax_minor = percent_of(amount_minor, tax.rate_percent)
        out.append(
            AppliedTax(tax.code, tax.name, tax.rate_percent, tax.inclusive, amount_minor, tax_minor)
        )
    return tuple(out)


def totals(
    charged_minor: Sequence[int],
    discount_minor: int,
    taxes: Sequence[TaxSpec],
    *,
    scale: int,
    exponent: int | None,
) -> Totals:
    """An invoice's totals: lines − discount (pre-tax, never below zero) +
    exclusive taxes, then rounded to the currency's exponent."""
    subtotal = sum(charged_minor)
    discount = max(0, min(discount_minor, subtotal))
    applied = taxes_on(subtotal - discount, taxes) if subtotal - discount > 0 else ()
    added = sum(t.amount_minor for t in applied if not t.inclusive)
    total = subtotal - discount + added
    rounded = round_to_exponent(total, scale, exponent)
    return Totals(
        subtotal_minor=subtotal,
        discount_minor=discount,
        tax_minor=sum(t.amount_minor for t in applied),
        total_minor=total,
        rounding_minor=rounded - total,
        total_rounded_minor=rounded,
        taxes=applied,
    )
