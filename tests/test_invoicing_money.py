"""Invoice arithmetic, property-tested.

Goal: proration never loses or gains a minor unit over a split period, and an
invoice's total is always its charged lines less discounts plus exclusive
taxes, rounded half-up to the currency's exponent with the difference shown.
"""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from hypothesis import given
from hypothesis import strategies as st

from billfold.invoicing import money

PERIOD = (datetime(2030, 1, 1, tzinfo=UTC), datetime(2030, 2, 1, tzinfo=UTC))
SECONDS = int((PERIOD[1] - PERIOD[0]).total_seconds())


@given(
    amount=st.integers(min_value=0, max_value=10**15),
    cuts=st.lists(st.integers(min_value=1, max_value=SECONDS - 1), max_size=6, unique=True),
)
def test_proration_of_a_split_period_sums_to_the_whole(amount: int, cuts: list[int]) -> None:
    points = [PERIOD[0], *(PERIOD[0] + timedelta(seconds=c) for c in sorted(cuts)), PERIOD[1]]
    parts = [money.prorate(amount, PERIOD, (a, b)) for a, b in itertools.pairwise(points)]
    assert sum(parts) == amount
    assert all(part >= 0 for part in parts)


def test_half_a_month_is_half_the_fee() -> None:
    feb = (datetime(2030, 2, 1, tzinfo=UTC), datetime(2030, 3, 1, tzinfo=UTC))
    mid = datetime(2030, 2, 15, tzinfo=UTC)
    assert money.prorate(30_000_000_000, feb, (mid, feb[1])) == 15_000_000_000
    # Ties round half-up: 1 minor unit over two halves gives 1 then 0.
    assert money.prorate(1, feb, (feb[0], mid)) == 1
    assert money.prorate(1, feb, (mid, feb[1])) == 0


taxes = st.lists(
    st.builds(
        money.TaxSpec,
        code=st.just("t"),
        name=st.just("T"),
        rate_percent=st.decimals(min_value=0, max_value=30, places=3),
        inclusive=st.booleans(),
    ),
    max_size=3,
)


@given(
    lines=st.lists(st.integers(min_value=-(10**12), max_value=10**13), max_size=8),
    discount=st.integers(min_value=0, max_value=10**13),
    applied=taxes,
)
def test_total_is_lines_less_discount_plus_exclusive_tax(
    lines: list[int], discount: int, applied: list[money.TaxSpec]
) -> None:
    totals = money.totals(lines, discount, applied, scale=9, exponent=2)
    subtotal = sum(lines)
    assert totals.subtotal_minor == subtotal
    assert 0 <= totals.discount_minor <= max(0, subtotal)
    added = sum(t.amount_minor for t in totals.taxes if not t.inclusive)
    assert totals.total_minor == subtotal - totals.discount_minor + added
    assert totals.total_rounded_minor == totals.total_minor + totals.rounding_minor
    assert totals.total_rounded_minor % 10**7 == 0
    assert abs(totals.rounding_minor) <= 5 * 10**6


def test_rounding_is_half_up_to_the_iso_exponent() -> None:
    assert money.round_to_exponent(1_005_000_000, 9, 2) == 1_010_000_000
    assert money.round_to_exponent(1_004_999_999, 9, 2) == 1_000_000_000
    assert money.round_to_exponent(-1_005_000_000, 9, 2) == -1_010_000_000
    assert money.round_to_exponent(123, 9, None) == 123
    inclusive = money.taxes_on(120, [money.TaxSpec("v", "V", Decimal(20), inclusive=True)])
    assert inclusive[0].amount_minor == 20
