"""Amounts and rates as exact numbers: parsing, formatting and conversion.

Money crosses the API as decimal strings in major units (`"12.50"`) and lives
everywhere else as an `int` of the asset's minor units (`amount_minor`). The
two meet only here. Nothing in this module touches a float, and conversion is
done on integers (a rate's exact numerator and denominator), so no Decimal
context precision can round anything behind our back.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import Decimal

from billfold import limits
from billfold.errors import InvalidRequest

# ASCII digits only (`\d` would take "٣"), no exponent, no "+", no leading zeros.
_AMOUNT_RE = re.compile(r"(-)?(0|[1-9][0-9]*)(?:\.([0-9]+))?")
_RATE_RE = re.compile(r"(0|[1-9][0-9]*)(?:\.([0-9]+))?")


@dataclass(frozen=True, slots=True)
class AssetInfo:
    """What every amount needs to know about its asset.

    `scale` is the number of decimal places stored: an amount is an integer of
    10**-scale units. `display_exponent` is the ISO 4217 minor-unit exponent
    of a fiat currency (USD 2, JPY 0), kept for invoice rounding; None for
    custom assets.
    """

    code: str
    name: str
    scale: int
    kind: str
    symbol: str | None
    display_exponent: int | None


def _invalid_amount(detail: str, field: str) -> InvalidRequest:
    return InvalidRequest(detail, code="invalid_amount", field=field)


def parse_amount(
    asset: AssetInfo,
    value: str,
    *,
    field: str = "amount",
    allow_negative: bool = False,
    allow_zero: bool = False,
) -> int:
    """A decimal string in major units as an integer of `asset`'s minor units.

    Refuses anything but a plain decimal string (JSON numbers, exponents,
    NaN, infinity, a leading "+" or zeros, spaces), more decimals than the
    asset's scale (never rounds), and magnitudes above `amount_minor_max`.
    """
    if not isinstance(value, str):
        raise _invalid_amount(
            f'Send {field} as a decimal string such as "12.50", not a JSON number.', field
        )
    if len(value) > limits.amount_string_length_max:
        raise _invalid_amount(f"{field} is too long to be an amount.", field)
    match = _AMOUNT_RE.fullmatch(value)
    if match is None:
        raise _invalid_amount(
            f'{field} must be a plain decimal string such as "12.50" (no exponent, no spaces).',
            field,
        )
    negative, whole, decimals = match[1] is not None, match[2], match[3] or ""
    if len(decimals) > asset.scale:
        raise _invalid_amount(
            f"{field} has {len(decimals)} decimals; {asset.code} takes at most {asset.scale}.",
            field,
        )
    if negative and not allow_negative:
        raise _invalid_amount(f"{field} must not be negative.", field)
    unit: int = 10**asset.scale
    magnitude = int(whole) * unit + int(decimals.ljust(asset.scale, "0") or "0")
    if magnitude == 0 and not allow_zero:
        raise _invalid_amount(f"{field} must be greater than zero.", field)
    if magnitude > limits.amount_minor_max:
        raise _invalid_amount(f"{field} is larger than Billfold allows for {asset.code}.", field)
    return -magnitude if negative else magnitude


def format_amount(asset: AssetInfo, amount_minor: int) -> str:
    """The exact decimal string of an amount in major units.

    Trailing zeros are trimmed, but a fiat currency keeps at least its ISO
    decimals: USD 12.5 is "12.50", USD 0.000001 is "0.000001", JPY 1000 is
    "1000". Custom assets show the plain number: "12.5", "12".
    """
    assert isinstance(amount_minor, int), amount_minor
    assert not isinstance(amount_minor, bool), amount_minor
    sign = "-" if amount_minor < 0 else ""
    unit: int = 10**asset.scale
    whole, remainder = divmod(abs(amount_minor), unit)
    decimals = str(remainder).rjust(asset.scale, "0").rstrip("0") if asset.scale else ""
    keep = (asset.display_exponent or 0) if asset.kind == "fiat" else 0
    decimals = decimals.ljust(min(keep, asset.scale), "0")
    return f"{sign}{whole}.{decimals}" if decimals else f"{sign}{whole}"


def parse_rate(value: str, *, field: str = "rate") -> Decimal:
    """A positive exchange rate from a decimal string, exact.

    At most `rate_decimals_max` decimals and `rate_significant_digits_max`
    significant digits; no exponent, sign, NaN or infinity.
    """
    if not isinstance(value, str):
        raise InvalidRequest(
            f'Send {field} as a decimal string such as "1.08", not a JSON number.',
            code="invalid_rate",
            field=field,
        )
    match = _RATE_RE.fullmatch(value) if len(value) <= limits.rate_string_length_max else None
    if match is None:
        raise InvalidRequest(
            f'{field} must be a plain positive decimal string such as "1.08".',
            code="invalid_rate",
            field=field,
        )
    whole, decimals = match[1], match[2] or ""
    significant = (whole + decimals).lstrip("0")
    if len(decimals) > limits.rate_decimals_max or (
        len(significant) > limits.rate_significant_digits_max
    ):
        raise InvalidRequest(
            f"{field} may have at most {limits.rate_decimals_max} decimals and "
            f"{limits.rate_significant_digits_max} significant digits.",
            code="invalid_rate",
            field=field,
        )
    if not significant:
        raise InvalidRequest(
            f"{field} must be greater than zero.", code="invalid_rate", field=field
        )
    return Decimal(value)


def rate_string(rate: Decimal) -> str:
    """The canonical text of a rate: plain digits, no exponent, no trailing zeros."""
    assert rate.is_finite(), rate
    assert rate > 0, rate
    text = format(rate, "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return text


def convert_base_to_asset(rate: Decimal, base: AssetInfo, base_minor: int, asset: AssetInfo) -> int:
    """How many minor units of `asset` `base_minor` of `base` buys at `rate`.

    `rate` is the price of one unit of `asset` in units of `base`. The result
    is rounded toward zero, so a buyer never gets more than was paid for.
    Computed on integers from the rate's exact fraction: no precision is lost.
    """
    assert rate.is_finite(), rate
    assert rate > 0, rate
    numerator, denominator = rate.as_integer_ratio()
    # asset_minor = base_minor / 10**base.scale / rate * 10**asset.scale
    asset_unit: int = 10**asset.scale
    base_unit: int = 10**base.scale
    quantity = abs(base_minor) * denominator * asset_unit // (numerator * base_unit)
    return -quantity if base_minor < 0 else quantity
