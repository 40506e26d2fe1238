"""Exact Decimal arithmetic for rating, and its one rounding.

Rating computes in `EXACT`, a context of its own (never the thread's global
one) whose precision holds the largest intermediate the limits allow and which
traps every signal of lost digits: an inexact sum or product raises instead of
rounding quietly, so the only rounding in rating is `to_minor`'s, half-up,
where an exact amount becomes the asset's integer minor units.
"""

from __future__ import annotations

from decimal import (
    ROUND_HALF_UP,
    Clamped,
    Context,
    Decimal,
    DivisionByZero,
    FloatOperation,
    Inexact,
    InvalidOperation,
    Overflow,
    Rounded,
    Subnormal,
    Underflow,
)

from billfold import limits

EXACT = Context(
    prec=limits.rating_decimal_precision,
    rounding=ROUND_HALF_UP,
    Emin=-999_999,
    Emax=999_999,
    capitals=1,
    clamp=0,
    flags=[],
    traps=[
        Clamped,
        DivisionByZero,
        FloatOperation,
        Inexact,
        InvalidOperation,
        Overflow,
        Rounded,
        Subnormal,
        Underflow,
    ],
)

ZERO = Decimal(0)
ONE = Decimal(1)
HUNDRED = Decimal(100)


class RatingViolation(AssertionError):
    """An invariant of rating broke: a bug, never a caller's mistake."""


def require(condition: bool, message: str) -> None:
    # Survives `python -O`, unlike `assert`.
    if not condition:
        raise RatingViolation(message)


def to_minor(amount: Decimal, scale: int) -> int:
    """An exact amount in major units as an int of minor units at `scale`.

    The one rounding in rating: half-up (ties away from zero), to the asset's
    stored scale. Scaling by a power of ten is exact; `to_integral_value`
    rounds with the mode given here, whatever any context says.
    """
    require(isinstance(amount, Decimal) and amount.is_finite(), f"not a finite Decimal: {amount!r}")
    scaled = amount.scaleb(scale, context=EXACT)
    return int(scaled.to_integral_value(rounding=ROUND_HALF_UP, context=EXACT))


def text(value: Decimal) -> str:
    """Plain decimal text: no exponent, no trailing zeros after the point."""
    require(value.is_finite(), f"not finite: {value!r}")
    plain = format(value, "f")
    if "." in plain:
        plain = plain.rstrip("0").rstrip(".")
    return "0" if plain in ("-0", "") else plain
