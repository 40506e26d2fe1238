"""Rating: every pricing model, dimensions, per-event clamps, real-time marginal
fees and the parsing of price JSON.

Goal: rating is exact (Decimal in, integer minor units out, one half-up
rounding), follows API.md and Lago's documented rules, and a period's real-time
fees always sum to the price of its total. Method: tables of worked cases
(Lago's spec cases with adjacent tiers, tier boundaries, zero, fractional and
huge quantities), Hypothesis properties against an independent oracle written
with `fractions.Fraction`, and refusal tables for the parser. Pure: no
database, no app, so these run once rather than once per backend.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterator, Sequence
from decimal import ROUND_FLOOR, Decimal, Inexact, Rounded, localcontext
from fractions import Fraction
from typing import Any, ClassVar

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from billfold import limits
from billfold.assets.amounts import AssetInfo
from billfold.assets.builtin import BUILTIN_ASSETS
from billfold.errors import InvalidRequest, LimitExceeded
from billfold.rating import (
    RATING_FIELDS,
    Dimension,
    Flat,
    Graduated,
    GraduatedPercentage,
    Model,
    Package,
    Percentage,
    PercentageTier,
    PerUnit,
    Price,
    Rating,
    RatingViolation,
    Tier,
    Volume,
    decimal_text,
    dump_price,
    match_dimension,
    parse_price,
    rate,
    rate_marginal,
)

USD = BUILTIN_ASSETS["USD"]  # scale 9
TOKENS = AssetInfo("TOKENS", "Tokens", 0, "custom", None, None)
CREDITS2 = AssetInfo("CREDITS", "Credits", 2, "custom", "cr", None)
MICRO18 = AssetInfo("MICRO", "Micro", 18, "custom", None, None)
ASSETS = [USD, TOKENS, CREDITS2, MICRO18]

D = Decimal


def price(asset: AssetInfo = USD, /, **data: Any) -> Price:
    return parse_price(data, asset=asset, field="prices.0")


def usd(text: str) -> int:
    """USD major-unit text as minor units (scale 9)."""
    return int(D(text).scaleb(9))


def exact_numbers(value: object, path: str = "rating") -> Iterator[tuple[str, object]]:
    """Every scalar inside a rating, with its path."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        for f in dataclasses.fields(value):
            yield from exact_numbers(getattr(value, f.name), f"{path}.{f.name}")
    elif isinstance(value, tuple | list):
        for index, item in enumerate(value):
            yield from exact_numbers(item, f"{path}.{index}")
    else:
        yield path, value


def assert_exact(rating: Rating) -> None:
    """No float anywhere; amounts are ints or Decimals; the lines add up."""
    for path, value in exact_numbers(rating):
        assert not isinstance(value, float), path
        assert value is None or isinstance(value, int | Decimal | str), (path, value)
        if path.endswith("amount_minor"):
            assert type(value) is int, path
        if isinstance(value, Decimal):
            assert value.is_finite(), path
    assert type(rating.amount_minor) is int
    assert sum(line.amount_minor for line in rating.lines) == rating.amount_minor
    # Summed as Fractions: the global context (28 digits) would round.
    assert sum(Fraction(line.amount) for line in rating.lines) == Fraction(rating.amount)


# --- an independent oracle, in Fractions -------------------------------------------


def half_up(value: Fraction) -> int:
    magnitude = math.floor(abs(value) + Fraction(1, 2))
    return -magnitude if value < 0 else magnitude


def to_minor(value: Fraction, asset: AssetInfo) -> int:
    return half_up(value * 10**asset.scale)


def bounds(tiers: Sequence[Tier | PercentageTier]) -> list[tuple[Fraction, Fraction | None]]:
    lower = Fraction(0)
    out: list[tuple[Fraction, Fraction | None]] = []
    for tier in tiers:
        upper = None if tier.up_to is None else Fraction(tier.up_to)
        out.append((lower, upper))
        if upper is not None:
            lower = upper
    return out


def oracle(model: Model, q: Fraction) -> Fraction:
    """The price of a period whose total is q, written from the rules, not the code."""
    match model:
        case PerUnit():
            return q * Fraction(model.unit_amount)
        case Graduated() | GraduatedPercentage():
            total = Fraction(0)
            graduated: Sequence[Tier | PercentageTier] = model.tiers
            for (lower, upper), tier in zip(bounds(graduated), graduated, strict=True):
                unit = (
                    Fraction(tier.unit_amount)
                    if isinstance(tier, Tier)
                    else Fraction(tier.rate_percent) / 100
                )
                top = q if upper is None else min(q, upper)
                total += max(Fraction(0), top - lower) * unit
                if lower == 0 or q > lower:
                    total += Fraction(tier.flat_amount)
            return total
        case Volume():
            held = [
                tier
                for (lower, upper), tier in zip(bounds(model.tiers), model.tiers, strict=True)
                if (lower == 0 or q > lower) and (upper is None or q <= upper)
            ]
            assert len(held) == 1
            return q * Fraction(held[0].unit_amount) + Fraction(held[0].flat_amount)
        case Package():
            paid = max(Fraction(0), q - Fraction(model.free_units))
            return math.ceil(paid / Fraction(model.package_size)) * Fraction(model.package_amount)
        case Percentage():
            paid = max(Fraction(0), q - Fraction(model.free_units))
            return paid * Fraction(model.rate_percent) / 100
        case Flat():
            return Fraction(model.amount)
    raise AssertionError(model)


# --- strategies --------------------------------------------------------------------


def decimals_of(max_int: int, max_places: int, *, min_int: int = 0) -> st.SearchStrategy[Decimal]:
    return st.builds(
        lambda n, places: D(n).scaleb(-places),
        st.integers(min_int, max_int),
        st.integers(0, max_places),
    )


quantities = st.one_of(
    st.integers(0, 50).map(D),
    decimals_of(10**6, limits.rating_quantity_decimals_max),
)
unit_amounts = st.one_of(
    st.sampled_from([D(0), D("0.01"), D("0.008"), D("2"), D("0.000000015")]),
    decimals_of(10**6, limits.price_unit_amount_decimals_max),
)


def money(asset: AssetInfo) -> st.SearchStrategy[Decimal]:
    """Amounts the asset can hold: at most its scale in decimals, at most
    amount_minor_max minor units."""
    largest = D(limits.amount_minor_max).scaleb(-asset.scale)
    return decimals_of(10**6, asset.scale).map(lambda amount: min(amount, largest))


@st.composite
def tier_bounds(draw: st.DrawFn) -> list[Decimal | None]:
    raw = draw(
        st.lists(
            st.one_of(st.integers(1, 100).map(D), decimals_of(10**6, 9, min_int=1)),
            max_size=4,
            unique=True,
        )
    )
    return [*sorted(set(raw)), None]


@st.composite
def models(
    draw: st.DrawFn, asset: AssetInfo, *, fixed_fees: bool = False, kind: str | None = None
) -> Model:
    kind = kind or draw(st.sampled_from(sorted(RATING_MODELS)))
    if kind == "per_unit":
        return PerUnit(draw(unit_amounts))
    if kind in ("graduated", "volume"):
        tiers = tuple(
            Tier(up, draw(unit_amounts), draw(st.one_of(st.just(D(0)), money(asset))))
            for up in draw(tier_bounds())
        )
        return Graduated(tiers) if kind == "graduated" else Volume(tiers)
    if kind == "graduated_percentage":
        return GraduatedPercentage(
            tuple(
                PercentageTier(up, draw(decimals_of(300, 6)), draw(money(asset)))
                for up in draw(tier_bounds())
            )
        )
    if kind == "package":
        return Package(
            package_size=draw(
                st.one_of(st.integers(1, 1000).map(D), decimals_of(10**6, 9, min_int=1))
            ),
            package_amount=draw(money(asset)),
            free_units=draw(st.one_of(st.just(D(0)), quantities)),
        )
    if kind == "percentage":
        return Percentage(
            rate_percent=draw(decimals_of(300, 6)),
            fixed_amount=draw(money(asset)) if fixed_fees else D(0),
            free_units=draw(st.one_of(st.just(D(0)), quantities)),
        )
    return Flat(draw(money(asset)))


RATING_MODELS = {
    "per_unit",
    "graduated",
    "volume",
    "package",
    "percentage",
    "graduated_percentage",
    "flat",
}

# Event increments: each event adds this much to its period's total.
increments = st.lists(
    st.one_of(st.just(D(0)), st.integers(0, 30).map(D), decimals_of(10**4, 9)),
    min_size=1,
    max_size=12,
)


def running_totals(steps: list[Decimal]) -> list[Decimal]:
    totals: list[Decimal] = []
    total = D(0)
    for step in steps:
        total += step
        totals.append(total)
    return totals


def sum_of_events(
    price_: Price, steps: list[Decimal], asset: AssetInfo, **kwargs: Any
) -> tuple[int, list[Rating]]:
    ratings: list[Rating] = []
    before: Decimal | None = None
    for after in running_totals(steps):
        ratings.append(rate_marginal(price_, before, after, asset=asset, **kwargs))
        before = after
    return sum(r.amount_minor for r in ratings), ratings


# --- per_unit ------------------------------------------------------------------------


class TestPerUnit:
    @pytest.mark.parametrize(
        ("unit_amount", "quantity", "exact", "minor"),
        [
            ("0.01", "0", "0", 0),
            ("0.01", "1", "0.01", 10**7),
            ("5.12345", "10", "51.2345", 51_234_500_000),  # Lago standard_service_spec
            ("0.000000015", "1000000", "0.015", 15_000_000),  # $0.015 per million tokens
            ("0.01", "0.5", "0.005", 5_000_000),  # fractional units
            ("0.000000001", "0.4", "0.0000000004", 0),  # 0.4 minor units round down
            ("0.000000001", "0.5", "0.0000000005", 1),  # half a minor unit rounds up
            ("0.000000000000000001", "1000000000", "0.000000001", 1),  # finer than the scale
            # The largest quantity; the amount rounds up to exactly amount_minor_max.
            ("0.000001", "999999999999999.999999999", "999999999.999999999999999", 10**18),
        ],
    )
    def test_amounts(self, unit_amount: str, quantity: str, exact: str, minor: int) -> None:
        rating = rate(price(model="per_unit", unit_amount=unit_amount), D(quantity), asset=USD)
        assert_exact(rating)
        assert rating.amount == D(exact)
        assert rating.amount_minor == minor

    @pytest.mark.parametrize(
        ("unit_amount", "quantity", "minor"),
        [("0.5", 1, 1), ("0.5", 3, 2), ("0.4", 1, 0), ("0.49", 1, 0), ("1.5", 1, 2)],
    )
    def test_half_up_at_scale_0(self, unit_amount: str, quantity: int, minor: int) -> None:
        p = price(TOKENS, model="per_unit", unit_amount=unit_amount)
        assert rate(p, quantity, asset=TOKENS).amount_minor == minor

    def test_line(self) -> None:
        rating = rate(price(model="per_unit", unit_amount="0.01"), D("12.5"), asset=USD)
        (line,) = rating.lines
        assert (line.kind, line.tier, line.units, line.unit_amount) == (
            "units",
            None,
            D("12.5"),
            D("0.01"),
        )
        assert (line.amount, line.amount_minor) == (D("0.125"), usd("0.125"))


# --- graduated -----------------------------------------------------------------------

# Lago graduated_service_spec: [0-10 @10 + 2], [11-20 @5 + 3], [21- @5 + 3],
# written with Billfold's adjacent bounds (10, 20, null).
LAGO_GRADUATED = {
    "model": "graduated",
    "tiers": [
        {"up_to": "10", "unit_amount": "10", "flat_amount": "2"},
        {"up_to": "20", "unit_amount": "5", "flat_amount": "3"},
        {"up_to": None, "unit_amount": "5", "flat_amount": "3"},
    ],
}


class TestGraduated:
    @pytest.mark.parametrize(
        ("quantity", "expected", "tiers"),
        [
            ("0", "2", [(0, "0", "2")]),  # the first tier's flat fee even at zero usage
            ("1", "12", [(0, "1", "12")]),
            ("10", "102", [(0, "10", "102")]),  # exactly at up_to: tier 2 not reached
            (
                "10.000000001",
                "105.000000005",
                [(0, "10", "102"), (1, "0.000000001", "3.000000005")],
            ),
            ("10.5", "107.5", [(0, "10", "102"), (1, "0.5", "5.5")]),
            ("11", "110", [(0, "10", "102"), (1, "1", "8")]),  # one unit past
            ("20", "155", [(0, "10", "102"), (1, "10", "53")]),
            ("21", "163", [(0, "10", "102"), (1, "10", "53"), (2, "1", "8")]),
        ],
    )
    def test_lago_tiers(
        self, quantity: str, expected: str, tiers: list[tuple[int, str, str]]
    ) -> None:
        rating = rate(price(**LAGO_GRADUATED), D(quantity), asset=USD)
        assert_exact(rating)
        assert rating.amount == D(expected)
        assert rating.amount_minor == usd(expected)
        assert [(line.tier, line.units, line.amount) for line in rating.lines] == [
            (tier, D(units), D(amount)) for tier, units, amount in tiers
        ]
        assert all(line.kind == "tier" for line in rating.lines)

    def test_lago_decimal_adjacent_ranges(self) -> None:
        # graduated_service_spec "decimal adjacent ranges" and range_graduated_service_spec:
        # [0-0.1 @10], [0.1-1 @5], [1- @2]; 1.5 units -> 0.9 units and 4.5 in the second tier.
        p = price(
            model="graduated",
            tiers=[
                {"up_to": "0.1", "unit_amount": "10"},
                {"up_to": "1", "unit_amount": "5"},
                {"up_to": None, "unit_amount": "2"},
            ],
        )
        rating = rate(p, D("1.5"), asset=USD)
        assert [(line.units, line.amount) for line in rating.lines] == [
            (D("0.1"), D("1.0")),
            (D("0.9"), D("4.5")),
            (D("0.5"), D("1.0")),
        ]
        assert rating.amount_minor == usd("6.5")

    def test_real_time_first_event_pays_the_first_flat_fee(self) -> None:
        p = price(**LAGO_GRADUATED)
        first = rate_marginal(p, None, D(1), asset=USD)
        assert first.amount_minor == usd("12")
        assert first.lines[0].flat_amount == D(2)
        # A later event at the same total pays nothing; `before=0` is not "no events yet".
        assert rate_marginal(p, D(0), D(0), asset=USD).amount_minor == 0
        assert rate_marginal(p, D(0), D(1), asset=USD).amount_minor == usd("10")
        # Crossing into tier 2 pays its flat fee once.
        crossing = rate_marginal(p, D(9), D(12), asset=USD)
        assert crossing.amount_minor == usd("10") + usd("3") + usd("10")
        assert [(line.tier, line.units, line.flat_amount) for line in crossing.lines] == [
            (0, D(1), D(0)),
            (1, D(2), D(3)),
        ]

    def test_huge_quantity(self) -> None:
        p = price(
            model="graduated",
            tiers=[
                {"up_to": "1000000", "unit_amount": "0.000002", "flat_amount": "5"},
                {"up_to": None, "unit_amount": "0.0000000015"},
            ],
        )
        q = D("999999999999999.999999999")
        rating = rate(p, q, asset=USD)
        assert_exact(rating)
        expected = Fraction(2) + 5 + (Fraction(q) - 10**6) * Fraction(D("0.0000000015"))
        assert Fraction(rating.amount) == expected
        assert rating.amount_minor == to_minor(expected, USD)
        assert [line.units for line in rating.lines] == [D(10**6), q - 10**6]


# --- volume --------------------------------------------------------------------------

# Lago volume_service_spec: [0-100 @2 + 10], [101-200 @1], [201- @0.5 + 50].
LAGO_VOLUME = {
    "model": "volume",
    "tiers": [
        {"up_to": "100", "unit_amount": "2", "flat_amount": "10"},
        {"up_to": "200", "unit_amount": "1", "flat_amount": "0"},
        {"up_to": None, "unit_amount": "0.5", "flat_amount": "50"},
    ],
}


class TestVolume:
    @pytest.mark.parametrize(
        ("quantity", "expected", "tier"),
        [
            ("0", "10", 0),  # zero usage: the first tier's flat fee
            ("1", "12", 0),
            ("100", "210", 0),  # exactly at up_to
            ("100.5", "100.5", 1),  # between Lago's integer ranges: the higher tier, as Lago
            ("101", "101", 1),  # one unit past
            ("200", "200", 1),
            ("201", "150.5", 2),
        ],
    )
    def test_lago_tiers(self, quantity: str, expected: str, tier: int) -> None:
        rating = rate(price(**LAGO_VOLUME), D(quantity), asset=USD)
        assert_exact(rating)
        assert rating.amount_minor == usd(expected)
        (line,) = rating.lines
        assert (line.kind, line.tier, line.units) == ("tier", tier, D(quantity))

    def test_a_cheaper_tier_makes_a_negative_marginal_fee(self) -> None:
        fee = rate_marginal(price(**LAGO_VOLUME), D(100), D(101), asset=USD)
        assert fee.amount_minor == usd("101") - usd("210")
        assert [(line.tier, line.units, line.amount_minor) for line in fee.lines] == [
            (0, D(-100), -usd("210")),
            (1, D(101), usd("101")),
        ]


# --- package -------------------------------------------------------------------------


class TestPackage:
    @pytest.mark.parametrize(
        ("size", "free", "quantity", "packages"),
        [
            ("100", "0", "0", 0),
            ("100", "0", "1", 1),  # a package counts from its first unit
            ("100", "0", "0.5", 1),
            ("100", "0", "100", 1),
            ("100", "0", "100.000000001", 2),
            ("100", "0", "101", 2),
            ("100", "50", "50", 0),  # all free
            ("100", "50", "51", 1),
            ("100", "50", "150", 1),
            ("100", "50", "151", 2),
            ("0.5", "0.25", "1.25", 2),  # fractional sizes and free units
            # The largest quantity: 10**8 packages of $10 is exactly amount_minor_max.
            ("10000000", "0", "999999999999999.999999999", 10**8),
        ],
    )
    def test_packages(self, size: str, free: str, quantity: str, packages: int) -> None:
        p = price(model="package", package_size=size, package_amount="10", free_units=free)
        rating = rate(p, D(quantity), asset=USD)
        assert_exact(rating)
        assert rating.amount_minor == packages * usd("10")
        if packages:
            (line,) = rating.lines
            assert (line.kind, line.units, line.unit_amount) == ("packages", D(packages), D(10))

    def test_real_time_pays_each_package_once(self) -> None:
        p = price(model="package", package_size="100", package_amount="10")
        fees = [
            rate_marginal(p, before, after, asset=USD).amount_minor
            for before, after in [(None, D(1)), (D(1), D(100)), (D(100), D(101)), (D(101), D(250))]
        ]
        assert fees == [usd("10"), 0, usd("10"), usd("10")]


# --- percentage ----------------------------------------------------------------------


class TestPercentage:
    # Lago percentage_service_spec defaults: rate 1.3, fixed 2, free amount 250;
    # events of 50, 100, 250 and 400 (running totals 50, 150, 400, 800).
    LAGO: ClassVar[dict[str, Any]] = {
        "model": "percentage",
        "rate_percent": "1.3",
        "fixed_amount": "2",
        "free_units": "250",
    }

    def test_lago_sequence(self) -> None:
        total, ratings = sum_of_events(price(**self.LAGO), [D(50), D(100), D(250), D(400)], USD)
        assert [r.amount for r in ratings] == [D(0), D(0), D("3.95"), D("7.2")]
        # Lago: (800 - 250) * 1.3% + 2 paid events * 2 = 7.15 + 4.
        assert total == usd("11.15")
        assert [line.kind for line in ratings[2].lines] == ["percentage", "fixed_fee"]

    def test_single_event(self) -> None:
        rating = rate(price(**self.LAGO), D(800), asset=USD)
        assert rating.amount_minor == usd("9.15")  # 7.15 + one fixed fee

    @pytest.mark.parametrize(
        ("before", "after", "expected"),
        [
            (None, "0", "0"),  # no usage, no fixed fee (Lago: 0 when units are zero)
            (None, "250", "0"),  # lands exactly on the free amount: free (Lago: fixed fee)
            ("250", "250", "0"),  # a zero-value event pays nothing (Lago: fixed fee)
            ("250", "250.01", "2.00013"),
            ("300", "300", "0"),
            ("300", "400", "3.3"),
        ],
    )
    def test_fixed_fee_only_on_paid_units(
        self, before: str | None, after: str, expected: str
    ) -> None:
        p = price(**self.LAGO)
        fee = rate_marginal(p, None if before is None else D(before), D(after), asset=USD)
        assert fee.amount == D(expected)

    def test_rate_above_100_percent(self) -> None:
        p = price(model="percentage", rate_percent="120")
        assert rate(p, D("10"), asset=USD).amount_minor == usd("12")


# --- graduated percentage and flat ---------------------------------------------------


class TestGraduatedPercentage:
    # Lago graduated_percentage_service_spec: [0-10 1% + 200], [11-20 2% + 300], [21- 3% + 400].
    LAGO: ClassVar[dict[str, Any]] = {
        "model": "graduated_percentage",
        "tiers": [
            {"up_to": "10", "rate_percent": "1", "flat_amount": "200"},
            {"up_to": "20", "rate_percent": "2", "flat_amount": "300"},
            {"up_to": None, "rate_percent": "3", "flat_amount": "400"},
        ],
    }

    @pytest.mark.parametrize(
        ("quantity", "expected"),
        [
            ("0", "200"),
            ("10", "200.1"),
            ("11", "500.12"),
            ("20", "500.3"),
            ("21", "900.33"),
        ],
    )
    def test_lago_tiers(self, quantity: str, expected: str) -> None:
        rating = rate(price(**self.LAGO), D(quantity), asset=USD)
        assert_exact(rating)
        assert rating.amount_minor == usd(expected)
        assert rating.lines[0].unit_amount == D("0.01")


class TestFlat:
    def test_whatever_the_usage(self) -> None:
        p = price(model="flat", amount="49.99")
        for q in [D(0), D("0.5"), D(10**15)]:
            assert rate(p, q, asset=USD).amount_minor == usd("49.99")
        assert rate_marginal(p, None, D(0), asset=USD).amount_minor == usd("49.99")
        assert rate_marginal(p, D(0), D(100), asset=USD).amount_minor == 0
        (line,) = rate(p, D(3), asset=USD).lines
        assert (line.kind, line.flat_amount) == ("flat", D("49.99"))


# --- zero usage across models --------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ({"model": "per_unit", "unit_amount": "1"}, "0"),
        (LAGO_GRADUATED, "2"),
        (LAGO_VOLUME, "10"),
        ({"model": "package", "package_size": "10", "package_amount": "1"}, "0"),
        ({"model": "percentage", "rate_percent": "2", "fixed_amount": "0.3"}, "0"),
        (TestGraduatedPercentage.LAGO, "200"),
        ({"model": "flat", "amount": "5"}, "5"),
    ],
)
def test_zero_usage(data: dict[str, Any], expected: str) -> None:
    rating = rate(price(**data), D(0), asset=USD)
    assert_exact(rating)
    assert rating.amount_minor == usd(expected)


# --- quantities and bounds -----------------------------------------------------------


class TestQuantities:
    P = Price(PerUnit(D("0.01")))

    @pytest.mark.parametrize(
        "quantity",
        [
            D(-1),
            D("-0.000000001"),
            D("NaN"),
            D("Infinity"),
            D(10**15) + D("0.000000001"),
            D("0.0000000001"),  # 10 decimals
            D("1." + "0" * 200 + "1"),
            D("1E-999999"),
            D("1E+16"),
        ],
    )
    def test_refused(self, quantity: Decimal) -> None:
        with pytest.raises(InvalidRequest) as error:
            rate(self.P, quantity, asset=USD)
        assert (error.value.code, error.value.field) == ("invalid_quantity", "after")
        with pytest.raises(InvalidRequest) as error:
            rate_marginal(self.P, quantity, D(1), asset=USD)
        assert (error.value.code, error.value.field) == ("invalid_quantity", "before")

    @pytest.mark.parametrize("quantity", [1.5, True, "1", None])
    def test_floats_and_strings_are_bugs(self, quantity: Any) -> None:
        with pytest.raises(TypeError):
            rate(self.P, quantity, asset=USD)

    def test_accepted(self) -> None:
        per_token = Price(PerUnit(D("0.000000001")))
        accepted: list[Decimal | int] = [
            0,
            10**15,
            D("1.000000000000"),  # more places than allowed, but all zeros
            D("1." + "0" * 200),  # longer than the context's precision
            D("1E+3"),
            D("999999999999999.999999999"),
        ]
        for q in accepted:
            assert_exact(rate(per_token, q, asset=USD))

    def test_amount_above_the_maximum(self) -> None:
        p = Price(PerUnit(D(10**12)))
        with pytest.raises(LimitExceeded) as error:
            rate(p, D(10**15), asset=USD)
        assert error.value.code == "amount_too_large"
        # At scale 18 one whole unit is already 10**18 minor units.
        assert rate(Price(PerUnit(D(1))), 1, asset=MICRO18).amount_minor == 10**18
        with pytest.raises(LimitExceeded):
            rate(Price(PerUnit(D(1))), D("1.000000001"), asset=MICRO18)

    def test_the_global_context_does_not_matter(self) -> None:
        p = price(**LAGO_GRADUATED, min_amount_per_event="0.5")
        expected = rate_marginal(p, D("3.333333333"), D("17.777777777"), asset=USD)
        with localcontext() as ctx:
            ctx.prec = 3
            ctx.rounding = ROUND_FLOOR
            ctx.traps[Inexact] = True
            ctx.traps[Rounded] = True
            assert rate_marginal(p, D("3.333333333"), D("17.777777777"), asset=USD) == expected


# --- dimensions ----------------------------------------------------------------------

DIMENSIONAL = {
    "model": "per_unit",
    "unit_amount": "1",
    "dimensions": [
        {"match": {"model": "gpt-4o"}, "unit_amount": "2"},
        {"match": {"model": "gpt-4o", "region": "eu"}, "unit_amount": "3"},
        {"match": {"region": "eu"}, "unit_amount": "4"},
        {"match": {"tier": ["gold", "platinum"]}, "unit_amount": "5"},
        {"match": {"usage.kind": "cached"}, "unit_amount": "6"},
        {"match": {"flag": True, "n": 7}, "unit_amount": "7"},
    ],
}


class TestDimensions:
    @pytest.mark.parametrize(
        ("data", "dimension", "amount"),
        [
            (None, None, "1"),
            ({}, None, "1"),
            ({"model": "gpt-3.5"}, None, "1"),  # no match: the base price
            ({"model": "gpt-4o"}, 0, "2"),
            ({"model": "gpt-4o", "region": "eu"}, 1, "3"),  # the most specific wins
            ({"model": "gpt-4o", "region": "us"}, 0, "2"),
            ({"region": "eu"}, 2, "4"),
            ({"model": "gpt-4o", "tier": "gold"}, 0, "2"),  # a tie: the first listed wins
            ({"tier": "platinum"}, 3, "5"),  # one of several values
            ({"tier": ["gold"]}, None, "1"),  # a list in data matches nothing
            ({"usage": {"kind": "cached"}}, 4, "6"),  # a dotted path
            ({"usage.kind": "cached"}, None, "1"),
            ({"flag": True, "n": 7}, 5, "7"),  # booleans and integers match as text
            ({"flag": "true", "n": "7"}, 5, "7"),
            ({"flag": True, "n": 7.0}, None, "1"),  # a float never matches
            ({"flag": True, "n": D(7)}, 5, "7"),
            ({"model": None}, None, "1"),
        ],
    )
    def test_matching(
        self, data: dict[str, Any] | None, dimension: int | None, amount: str
    ) -> None:
        p = price(**DIMENSIONAL)
        assert match_dimension(p, data) == dimension
        rating = rate(p, D(1), asset=USD, event_data=data)
        assert rating.dimension == dimension
        assert rating.amount_minor == usd(amount)

    def test_ties_go_to_the_first_listed(self) -> None:
        a = {"match": {"model": "x"}, "unit_amount": "2"}
        b = {"match": {"region": "eu"}, "unit_amount": "3"}
        data = {"model": "x", "region": "eu"}
        assert (
            match_dimension(price(model="per_unit", unit_amount="1", dimensions=[a, b]), data) == 0
        )
        assert (
            match_dimension(price(model="per_unit", unit_amount="1", dimensions=[b, a]), data) == 0
        )

    def test_api_example_overrides_unit_amount_on_a_graduated_price(self) -> None:
        p = price(
            code="tokens_out",
            type="usage",
            meter="output_tokens",
            asset="USD",
            billing="real_time",
            model="graduated",
            tiers=[
                {"up_to": "1000", "unit_amount": "0.01", "flat_amount": "0"},
                {"up_to": None, "unit_amount": "0.008"},
            ],
            dimensions=[{"match": {"model": "gpt-4o"}, "unit_amount": "0.00001"}],
        )
        assert rate(p, D(1500), asset=USD).amount_minor == usd("14")
        gpt = rate(p, D(1500), asset=USD, event_data={"model": "gpt-4o"})
        assert gpt.amount_minor == usd("0.015")
        assert [line.unit_amount for line in gpt.lines] == [D("0.00001"), D("0.00001")]

    def test_override_tiers_and_clamps(self) -> None:
        p = price(
            **LAGO_GRADUATED,
            max_amount_per_event="50",
            dimensions=[
                {"match": {"plan": "pro"}, "tiers": [{"up_to": None, "unit_amount": "1"}]},
                {"match": {"plan": "free"}, "max_amount_per_event": None},
                {"match": {"plan": "capped"}, "max_amount_per_event": "5"},
            ],
        )
        assert rate(p, D(100), asset=USD).amount_minor == usd("50")
        assert rate(p, D(100), asset=USD, event_data={"plan": "pro"}).amount_minor == usd("50")
        assert rate(p, D(30), asset=USD, event_data={"plan": "pro"}).amount_minor == usd("30")
        assert rate(p, D(100), asset=USD, event_data={"plan": "free"}).amount_minor == usd("558")
        assert rate(p, D(100), asset=USD, event_data={"plan": "capped"}).amount_minor == usd("5")

    def test_a_dimension_index_instead_of_data(self) -> None:
        p = price(**DIMENSIONAL)
        assert rate(p, D(2), asset=USD, dimension=1).amount_minor == usd("6")
        with pytest.raises(RatingViolation):
            rate(p, D(2), asset=USD, dimension=1, event_data={"model": "x"})
        with pytest.raises(RatingViolation):
            rate(p, D(2), asset=USD, dimension=99)


# --- per-event minimum and maximum ---------------------------------------------------


class TestClamps:
    P: ClassVar[dict[str, Any]] = {
        "model": "per_unit",
        "unit_amount": "0.01",
        "min_amount_per_event": "0.5",
        "max_amount_per_event": "5",
    }

    @pytest.mark.parametrize(
        ("quantity", "expected", "kinds"),
        [
            ("0", "0", []),  # a free event stays free
            ("1", "0.5", ["units", "minimum"]),
            ("50", "0.5", ["units"]),
            ("100", "1", ["units"]),
            ("500", "5", ["units"]),
            ("1000", "5", ["units", "maximum"]),
        ],
    )
    def test_per_event(self, quantity: str, expected: str, kinds: list[str]) -> None:
        rating = rate(price(**self.P), D(quantity), asset=USD)
        assert_exact(rating)
        assert rating.amount_minor == usd(expected)
        assert rating.amount == D(expected)
        assert [line.kind for line in rating.lines] == kinds

    def test_marginal_events_are_clamped_one_by_one(self) -> None:
        total, ratings = sum_of_events(price(**self.P), [D(1), D(0), D(1000), D(100)], USD)
        assert [r.amount_minor for r in ratings] == [usd("0.5"), 0, usd("5"), usd("1")]
        assert total == usd("6.5")

    def test_percentage_free_events_skip_the_minimum(self) -> None:
        p = price(
            model="percentage",
            rate_percent="2.9",
            fixed_amount="0.30",
            free_units="100",
            min_amount_per_event="0.50",
        )
        assert rate_marginal(p, None, D(40), asset=USD).amount_minor == 0
        assert rate_marginal(p, D(40), D(101), asset=USD).amount_minor == usd("0.50")
        assert rate_marginal(p, D(101), D(201), asset=USD).amount_minor == usd("3.20")

    def test_negative_volume_fees_are_not_clamped(self) -> None:
        p = price(**LAGO_VOLUME, min_amount_per_event="1", max_amount_per_event="20")
        assert rate_marginal(p, D(100), D(101), asset=USD).amount_minor == usd("-109")

    def test_has_per_event_parts(self) -> None:
        assert not price(**LAGO_GRADUATED).has_per_event_parts
        assert not price(**LAGO_GRADUATED, min_amount_per_event="0").has_per_event_parts
        assert price(**LAGO_GRADUATED, max_amount_per_event="9").has_per_event_parts
        assert price(model="percentage", rate_percent="1", fixed_amount="1").has_per_event_parts
        assert not price(model="percentage", rate_percent="1").has_per_event_parts
        assert price(
            model="per_unit",
            unit_amount="1",
            dimensions=[{"match": {"a": "b"}, "min_amount_per_event": "1"}],
        ).has_per_event_parts


# --- properties ----------------------------------------------------------------------


class TestProperties:
    @given(st.data())
    def test_every_model_matches_the_oracle(self, data: st.DataObject) -> None:
        asset = data.draw(st.sampled_from(ASSETS))
        model = data.draw(models(asset))
        q = data.draw(quantities)
        expected = to_minor(oracle(model, Fraction(q)), asset)
        try:
            rating = rate(Price(model), q, asset=asset)
        except LimitExceeded:
            assert expected > limits.amount_minor_max
            return
        assert_exact(rating)
        assert rating.amount_minor == expected
        assert Fraction(rating.amount) == oracle(model, Fraction(q))

    @given(st.data())
    def test_marginal_fees_sum_to_the_price_of_the_total(self, data: st.DataObject) -> None:
        asset = data.draw(st.sampled_from(ASSETS))
        model = data.draw(models(asset))
        steps = data.draw(increments)
        p = Price(model)
        try:
            total, ratings = sum_of_events(p, steps, asset)
            whole = rate(p, sum(steps, D(0)), asset=asset)
        except LimitExceeded:
            assume(False)
            return
        assert total == whole.amount_minor
        for rating in ratings:
            assert_exact(rating)

    @given(
        st.lists(
            st.tuples(
                st.one_of(st.integers(1, 3000).map(D), decimals_of(10**7, 9, min_int=1)),
                st.one_of(st.integers(0, 100).map(D), decimals_of(10**4, 9)),
                st.one_of(st.just(D(0)), st.integers(0, 50).map(D)),
            ),
            min_size=1,
            max_size=4,
            unique_by=lambda t: t[0],
        ),
        increments,
    )
    def test_graduated_total_is_the_sum_of_marginal_fees(
        self, tiers: list[tuple[Decimal, Decimal, Decimal]], steps: list[Decimal]
    ) -> None:
        ordered = sorted(tiers)
        p = Price(
            Graduated(
                tuple(
                    Tier(None if i == len(ordered) - 1 else up, unit, flat)
                    for i, (up, unit, flat) in enumerate(ordered)
                )
            )
        )
        total, _ = sum_of_events(p, steps, USD)
        whole = rate(p, sum(steps, D(0)), asset=USD)
        assert (
            total
            == whole.amount_minor
            == to_minor(oracle(p.model, Fraction(sum(steps, D(0)))), USD)
        )
        assert sum(line.units for line in whole.lines) == sum(steps, D(0))

    @given(
        size=st.one_of(st.integers(1, 1000).map(D), decimals_of(10**6, 9, min_int=1)),
        amount=decimals_of(10**4, 2),
        free=st.one_of(st.just(D(0)), quantities),
        q=quantities,
    )
    def test_package_uses_ceil(
        self, size: Decimal, amount: Decimal, free: Decimal, q: Decimal
    ) -> None:
        paid = max(Fraction(0), Fraction(q) - Fraction(free))
        packages = math.ceil(paid / Fraction(size))
        # A total past the amount limit is refused (`amount_too_large`), tested on its own.
        assume(packages * Fraction(amount) * 10**CREDITS2.scale <= limits.amount_minor_max)
        rating = rate(Price(Package(size, amount, free)), q, asset=CREDITS2)
        # The fewest whole packages that hold every paid unit.
        assert packages * Fraction(size) >= paid
        assert packages == 0 or (packages - 1) * Fraction(size) < paid
        assert Fraction(rating.amount) == packages * Fraction(amount)
        assert rating.amount_minor == packages * int(amount.scaleb(2))

    @given(st.data())
    def test_volume_picks_exactly_one_tier(self, data: st.DataObject) -> None:
        ups = data.draw(tier_bounds())
        tiers = tuple(Tier(up, data.draw(unit_amounts), data.draw(money(USD))) for up in ups)
        q = data.draw(quantities)
        try:
            rating = rate(Price(Volume(tiers)), q, asset=USD)
        except LimitExceeded:
            assert to_minor(oracle(Volume(tiers), Fraction(q)), USD) > limits.amount_minor_max
            return
        holding = [
            i
            for i, (lower, upper) in enumerate(bounds(tiers))
            if (i == 0 or Fraction(q) > lower) and (upper is None or Fraction(q) <= upper)
        ]
        assert len(holding) == 1
        (index,) = holding
        tier = tiers[index]
        expected = Fraction(q) * Fraction(tier.unit_amount) + Fraction(tier.flat_amount)
        assert Fraction(rating.amount) == expected
        if rating.lines:
            (line,) = rating.lines
            assert (line.tier, line.units) == (index, q)
        else:
            assert expected == 0

    @given(st.data())
    def test_per_event_parts_add_up_event_by_event(self, data: st.DataObject) -> None:
        asset = data.draw(st.sampled_from([USD, CREDITS2]))
        model = data.draw(models(asset, fixed_fees=True))
        minimum = data.draw(st.one_of(st.none(), money(asset)))
        maximum = data.draw(st.one_of(st.none(), money(asset)))
        if minimum is not None and maximum is not None and minimum > maximum:
            minimum, maximum = maximum, minimum
        p = Price(model, (), minimum, maximum)
        steps = data.draw(increments)
        try:
            _, ratings = sum_of_events(p, steps, asset)
        except LimitExceeded:
            assume(False)
            return
        before: Decimal | None = None
        for rating, after in zip(ratings, running_totals(steps), strict=True):
            assert_exact(rating)
            core = to_minor(oracle(model, Fraction(after)), asset) - (
                0 if before is None else to_minor(oracle(model, Fraction(before)), asset)
            )
            fee = core
            if isinstance(model, Percentage) and model.fixed_amount > 0:
                paid_before = (
                    Fraction(0)
                    if before is None
                    else max(Fraction(0), Fraction(before) - Fraction(model.free_units))
                )
                if max(Fraction(0), Fraction(after) - Fraction(model.free_units)) > paid_before:
                    fee += to_minor(Fraction(model.fixed_amount), asset)
            if fee > 0 and minimum is not None:
                fee = max(fee, to_minor(Fraction(minimum), asset))
            if fee > 0 and maximum is not None:
                fee = min(fee, to_minor(Fraction(maximum), asset))
            assert rating.amount_minor == fee
            before = after

    @given(st.data())
    def test_dimensions_accumulate_separately(self, data: st.DataObject) -> None:
        base = data.draw(models(USD))
        variants = [data.draw(models(USD, kind=base.name)) for _ in range(2)]
        p = Price(
            base,
            (
                Dimension((("model", frozenset({"a"})),), variants[0]),
                Dimension(
                    (("model", frozenset({"a"})), ("region", frozenset({"eu"}))), variants[1]
                ),
            ),
        )
        events = data.draw(
            st.lists(
                st.tuples(
                    st.sampled_from(
                        [None, {"model": "a"}, {"model": "a", "region": "eu"}, {"region": "eu"}]
                    ),
                    st.integers(0, 20).map(D),
                ),
                min_size=1,
                max_size=12,
            )
        )
        totals: dict[int | None, Decimal] = {}
        charged: dict[int | None, int] = {}
        for event_data, quantity in events:
            index = match_dimension(p, event_data)
            before = totals.get(index)
            after = (before or D(0)) + quantity
            try:
                fee = rate_marginal(p, before, after, asset=USD, event_data=event_data)
            except LimitExceeded:
                assume(False)
                return
            assert fee.dimension == index
            totals[index] = after
            charged[index] = charged.get(index, 0) + fee.amount_minor
        for index, total in totals.items():
            if index is None:
                assert charged[index] == rate(p, total, asset=USD).amount_minor
            else:
                assert charged[index] == rate(p, total, asset=USD, dimension=index).amount_minor

    @given(st.data())
    def test_dump_then_parse_is_the_same_price(self, data: st.DataObject) -> None:
        asset = data.draw(st.sampled_from(ASSETS))
        p = Price(
            data.draw(models(asset, fixed_fees=True)),
            (),
            data.draw(st.one_of(st.none(), st.just(D(0)))),
            data.draw(st.one_of(st.none(), st.just(D(1)))),
        )
        assert parse_price(dump_price(p, asset=asset), asset=asset) == p

    @given(st.data())
    def test_parse_errors_name_the_field(self, data: st.DataObject) -> None:
        asset = data.draw(st.sampled_from([USD, CREDITS2]))
        model = data.draw(models(asset, fixed_fees=True))
        body = dump_price(Price(model), asset=asset)
        body["dimensions"] = [
            {"match": {"model": "a", "region": ["eu", "us"]}, **_overrides(model, asset)}
        ]
        parse_price(body, asset=asset, field="prices.3")  # valid as built
        leaves = list(_leaves(body))
        path, replace = data.draw(st.sampled_from(leaves))
        bad = data.draw(st.sampled_from([1.5, [], {}, "abc", "-1", "1e3", " 1"]))
        if ".match." in f".{path}." and isinstance(bad, str):
            bad = 1.5  # any string is a valid match value
        replace(bad)
        with pytest.raises(InvalidRequest) as error:
            parse_price(body, asset=asset, field="prices.3")
        assert error.value.field == f"prices.3.{path}"
        assert error.value.code in {
            "invalid_price",
            "invalid_tiers",
            "invalid_dimensions",
            "invalid_amount",
        }


def _overrides(model: Model, asset: AssetInfo) -> dict[str, Any]:
    """Every field of the model, written again, as a dimension's overrides."""
    return {
        key: value for key, value in dump_price(Price(model), asset=asset).items() if key != "model"
    }


def _leaves(node: Any, path: str = "") -> Iterator[tuple[str, Callable[[object], None]]]:
    """Every scalar of a JSON body but `model`, with a setter."""
    items = node.items() if isinstance(node, dict) else enumerate(node)
    for key, value in list(items):
        here = f"{path}.{key}" if path else str(key)
        if isinstance(value, dict | list) and value and key != "region":
            yield from _leaves(value, here)
        elif here != "model":

            def setter(new: object, node: Any = node, key: Any = key) -> None:
                node[key] = new

            yield here, setter


# --- parse refusals ------------------------------------------------------------------


def tiers(*ups: object) -> list[dict[str, Any]]:
    return [{"up_to": up, "unit_amount": "1"} for up in ups]


PARSE_ERRORS: list[tuple[Any, str, str]] = [
    ("not an object", "invalid_price", "prices.0"),
    ({}, "invalid_price", "prices.0.model"),
    ({"model": "standard"}, "invalid_price", "prices.0.model"),
    ({"model": "per_unit"}, "invalid_price", "prices.0.unit_amount"),
    ({"model": "per_unit", "unit_amount": 0.01}, "invalid_price", "prices.0.unit_amount"),
    ({"model": "per_unit", "unit_amount": "-1"}, "invalid_price", "prices.0.unit_amount"),
    ({"model": "per_unit", "unit_amount": "1e-3"}, "invalid_price", "prices.0.unit_amount"),
    (
        {"model": "per_unit", "unit_amount": "0." + "0" * 18 + "1"},
        "invalid_price",
        "prices.0.unit_amount",
    ),
    ({"model": "per_unit", "unit_amount": "1", "tiers": []}, "invalid_tiers", "prices.0.tiers"),
    ({"model": "per_unit", "unit_amount": "1", "amount": "1"}, "invalid_price", "prices.0.amount"),
    ({"model": "graduated"}, "invalid_tiers", "prices.0.tiers"),
    ({"model": "graduated", "tiers": []}, "invalid_tiers", "prices.0.tiers"),
    ({"model": "graduated", "tiers": {}}, "invalid_tiers", "prices.0.tiers"),
    ({"model": "graduated", "tiers": tiers(None) * 101}, "invalid_tiers", "prices.0.tiers"),
    ({"model": "graduated", "tiers": ["x"]}, "invalid_tiers", "prices.0.tiers.0"),
    ({"model": "graduated", "tiers": tiers("10", "20")}, "invalid_tiers", "prices.0.tiers.1.up_to"),
    ({"model": "graduated", "tiers": tiers(None, None)}, "invalid_tiers", "prices.0.tiers.0.up_to"),
    (
        {"model": "volume", "tiers": tiers("10", "10", None)},
        "invalid_tiers",
        "prices.0.tiers.1.up_to",
    ),
    (
        {"model": "volume", "tiers": tiers("10", "5", None)},
        "invalid_tiers",
        "prices.0.tiers.1.up_to",
    ),
    ({"model": "volume", "tiers": tiers("0", None)}, "invalid_tiers", "prices.0.tiers.0.up_to"),
    ({"model": "volume", "tiers": tiers("-1", None)}, "invalid_tiers", "prices.0.tiers.0.up_to"),
    ({"model": "volume", "tiers": tiers(1.5, None)}, "invalid_tiers", "prices.0.tiers.0.up_to"),
    (
        {"model": "volume", "tiers": tiers("0.0000000001", None)},
        "invalid_tiers",
        "prices.0.tiers.0.up_to",
    ),
    (
        {"model": "volume", "tiers": tiers(str(10**15 + 1), None)},
        "invalid_tiers",
        "prices.0.tiers.0.up_to",
    ),
    (
        {"model": "graduated", "tiers": [{"up_to": None, "unit_price": "1"}]},
        "invalid_tiers",
        "prices.0.tiers.0.unit_price",
    ),
    (
        {"model": "graduated", "tiers": [{"up_to": None, "rate_percent": "1"}]},
        "invalid_tiers",
        "prices.0.tiers.0.rate_percent",
    ),
    (
        {"model": "graduated_percentage", "tiers": [{"up_to": None, "unit_amount": "1"}]},
        "invalid_tiers",
        "prices.0.tiers.0.unit_amount",
    ),
    (
        {"model": "graduated", "tiers": [{"up_to": None, "unit_amount": "x"}]},
        "invalid_tiers",
        "prices.0.tiers.0.unit_amount",
    ),
    (
        {"model": "graduated", "tiers": [{"up_to": None, "flat_amount": "0.001"}]},
        "invalid_amount",
        "prices.0.tiers.0.flat_amount",
    ),
    (
        {"model": "graduated", "tiers": [{"up_to": None, "flat_amount": 2}]},
        "invalid_amount",
        "prices.0.tiers.0.flat_amount",
    ),
    (
        {"model": "graduated", "tiers": tiers(None), "unit_amount": "1"},
        "invalid_price",
        "prices.0.unit_amount",
    ),
    ({"model": "package", "package_amount": "1"}, "invalid_price", "prices.0.package_size"),
    (
        {"model": "package", "package_size": "0", "package_amount": "1"},
        "invalid_price",
        "prices.0.package_size",
    ),
    ({"model": "package", "package_size": "10"}, "invalid_price", "prices.0.package_amount"),
    (
        {"model": "package", "package_size": "10", "package_amount": "1", "free_units": "-1"},
        "invalid_price",
        "prices.0.free_units",
    ),
    ({"model": "percentage"}, "invalid_price", "prices.0.rate_percent"),
    (
        {"model": "percentage", "rate_percent": "1", "fixed_amount": "-0.3"},
        "invalid_amount",
        "prices.0.fixed_amount",
    ),
    ({"model": "flat"}, "invalid_price", "prices.0.amount"),
    ({"model": "flat", "amount": "1.001"}, "invalid_amount", "prices.0.amount"),
    (
        {"model": "flat", "amount": "1", "min_amount_per_event": "2", "max_amount_per_event": "1"},
        "invalid_price",
        "prices.0.max_amount_per_event",
    ),
    (
        {"model": "flat", "amount": "1", "dimensions": {}},
        "invalid_dimensions",
        "prices.0.dimensions",
    ),
    (
        {"model": "flat", "amount": "1", "dimensions": []},
        "invalid_dimensions",
        "prices.0.dimensions",
    ),
    (
        {"model": "flat", "amount": "1", "dimensions": [{"amount": "2"}]},
        "invalid_dimensions",
        "prices.0.dimensions.0.match",
    ),
    (
        {"model": "flat", "amount": "1", "dimensions": [{"match": {}}]},
        "invalid_dimensions",
        "prices.0.dimensions.0.match",
    ),
    (
        {"model": "flat", "amount": "1", "dimensions": [{"match": {"m": 1.5}}]},
        "invalid_dimensions",
        "prices.0.dimensions.0.match.m",
    ),
    (
        {"model": "flat", "amount": "1", "dimensions": [{"match": {"m": []}}]},
        "invalid_dimensions",
        "prices.0.dimensions.0.match.m",
    ),
    (
        {"model": "flat", "amount": "1", "dimensions": [{"match": {"a..b": "x"}}]},
        "invalid_dimensions",
        "prices.0.dimensions.0.match.a..b",
    ),
    (
        {"model": "flat", "amount": "1", "dimensions": [{"match": {"m": "x" * 201}}]},
        "invalid_dimensions",
        "prices.0.dimensions.0.match.m",
    ),
    (
        {
            "model": "flat",
            "amount": "1",
            "dimensions": [{"match": {"m": ["a", "b"]}}, {"match": {"m": ["b", "a", "a"]}}],
        },
        "invalid_dimensions",
        "prices.0.dimensions.1.match",
    ),
    (
        {
            "model": "flat",
            "amount": "1",
            "dimensions": [{"match": {"m": "a"}, "model": "per_unit"}],
        },
        "invalid_dimensions",
        "prices.0.dimensions.0.model",
    ),
    (
        {"model": "flat", "amount": "1", "dimensions": [{"match": {"m": "a"}, "unit_amount": "1"}]},
        "invalid_dimensions",
        "prices.0.dimensions.0.unit_amount",
    ),
    (
        {
            "model": "per_unit",
            "unit_amount": "1",
            "dimensions": [{"match": {"m": "a"}, "tiers": []}],
        },
        "invalid_dimensions",
        "prices.0.dimensions.0.tiers",
    ),
    (
        {
            "model": "per_unit",
            "unit_amount": "1",
            "dimensions": [{"match": {"m": "a"}, "unit_amount": None}],
        },
        "invalid_price",
        "prices.0.dimensions.0.unit_amount",
    ),
    (
        {
            "model": "per_unit",
            "unit_amount": "1",
            "dimensions": [{"match": {"m": "a"}, "unit_amount": "x"}],
        },
        "invalid_price",
        "prices.0.dimensions.0.unit_amount",
    ),
    (
        {
            "model": "graduated",
            "tiers": tiers(None),
            "dimensions": [{"match": {"m": "a"}, "tiers": tiers("5", "3", None)}],
        },
        "invalid_tiers",
        "prices.0.dimensions.0.tiers.1.up_to",
    ),
    (
        {
            "model": "graduated",
            "tiers": tiers(None),
            "dimensions": [{"match": {"m": "a"}, "tiers": tiers(None), "unit_amount": "2"}],
        },
        "invalid_dimensions",
        "prices.0.dimensions.0.unit_amount",
    ),
    (
        {
            "model": "flat",
            "amount": "1",
            "max_amount_per_event": "5",
            "dimensions": [{"match": {"m": "a"}, "min_amount_per_event": "6"}],
        },
        "invalid_price",
        "prices.0.dimensions.0.min_amount_per_event",
    ),
]


@pytest.mark.parametrize(("data", "code", "field"), PARSE_ERRORS)
def test_parse_refusals(data: Any, code: str, field: str) -> None:
    with pytest.raises(InvalidRequest) as error:
        parse_price(data, asset=CREDITS2, field="prices.0")
    assert (error.value.code, error.value.field) == (code, field), error.value.detail


def test_parse_defaults_and_envelope() -> None:
    p = parse_price(
        {
            "code": "c",
            "type": "usage",
            "meter": "m",
            "asset": "USD",
            "billing": "in_arrears",
            "model": "graduated",
            "tiers": [
                {"up_to": 1000},
                {"up_to": None, "unit_amount": "0.5", "flat_amount": None},
            ],
        },
        asset=USD,
    )
    assert p == Price(Graduated((Tier(D(1000)), Tier(None, D("0.5")))))
    assert "tiers" in RATING_FIELDS
    assert "billing" not in RATING_FIELDS


def test_dump_is_plain_text() -> None:
    p = price(model="per_unit", unit_amount="0.000000015", min_amount_per_event="0.5")
    assert dump_price(p, asset=USD) == {
        "model": "per_unit",
        "unit_amount": "0.000000015",
        "min_amount_per_event": "0.50",
    }
    assert decimal_text(D("1.5E-8")) == "0.000000015"
    assert decimal_text(D("1E+3")) == "1000"
    assert decimal_text(D("0E-9")) == "0"


def test_hand_built_prices_are_checked() -> None:
    with pytest.raises(RatingViolation):
        Graduated((Tier(D(10)), Tier(D(5)), Tier(None)))
    with pytest.raises(RatingViolation):
        Volume((Tier(D(10)),))
    with pytest.raises(RatingViolation):
        Package(D(0), D(1))
    with pytest.raises(RatingViolation):
        PerUnit(D(-1))
    with pytest.raises(RatingViolation):
        Price(PerUnit(D(1)), (Dimension((("a", frozenset({"b"})),), Flat(D(1))),))
    with pytest.raises(RatingViolation):
        Price(PerUnit(D(1)), (), D(2), D(1))
