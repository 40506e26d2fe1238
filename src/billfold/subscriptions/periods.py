"""Billing periods: pure date arithmetic, no I/O.

A subscription's periods follow its interval (`day`, `week`, `month`, `year`
× `interval_count`) from an anchor:

- `anniversary`: periods start at `start_at` and every interval after it. A
  month-based period keeps the start's day of month, clamped to short months
  (a Jan 31 start gives Feb 28 or 29, then Mar 31), so periods never drift.
- `calendar`: periods are aligned to calendar boundaries (midnight UTC, Monday,
  the 1st, January 1st); the first period runs from `start_at` to the first
  boundary, so it is usually short.

Periods are half-open: `start <= t < end`.
"""

from __future__ import annotations

import calendar
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from billfold.subscriptions.models import Subscription

INTERVALS = ("day", "week", "month", "year")
ANCHORS = ("anniversary", "calendar")


def _months(interval: str, count: int) -> int:
    return count * (12 if interval == "year" else 1)


def add_months(start: datetime, months: int, day: int | None = None) -> datetime:
    """`start` moved by `months`, on `day` (default its own), clamped to the month's end."""
    index = start.year * 12 + (start.month - 1) + months
    year, month = divmod(index, 12)
    last = calendar.monthrange(year, month + 1)[1]
    return start.replace(year=year, month=month + 1, day=min(day or start.day, last))


def _step(start: datetime, interval: str, count: int, k: int, day: int) -> datetime:
    """The k-th boundary after `start` (k may be 0)."""
    if interval == "day":
        return start + timedelta(days=count * k)
    if interval == "week":
        return start + timedelta(weeks=count * k)
    return add_months(start, _months(interval, count) * k, day)


def _calendar_origin(instant: datetime, interval: str) -> datetime:
    """The calendar boundary at or before `instant` for this interval's unit."""
    midnight = instant.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    if interval == "day":
        return midnight
    if interval == "week":
        return midnight - timedelta(days=midnight.weekday())
    if interval == "month":
        return midnight.replace(day=1)
    return midnight.replace(month=1, day=1)


def period_containing(
    start_at: datetime,
    at: datetime,
    *,
    interval: str = "month",
    interval_count: int = 1,
    anchor: str = "anniversary",
) -> tuple[datetime, datetime]:
    """The period `[start, end)` that holds `at`; `at` before `start_at` gives the first."""
    if interval not in INTERVALS or anchor not in ANCHORS or interval_count < 1:
        raise ValueError(f"bad interval {interval!r} × {interval_count} ({anchor})")
    at = max(at, start_at)
    if anchor == "calendar":
        origin = _calendar_origin(start_at, interval)
        if origin == start_at:
            return period_containing(start_at, at, interval=interval, interval_count=interval_count)
        first_end = _step(origin, interval, interval_count, 1, 1)
        if at < first_end:
            return start_at, first_end
        start, end = period_containing(
            first_end, at, interval=interval, interval_count=interval_count
        )
        return start, end
    day = start_at.day
    # Estimate k from the elapsed time, then correct by stepping: exact for
    # every interval, and O(1) steps whatever the subscription's age.
    if interval in ("day", "week"):
        span = timedelta(days=interval_count * (7 if interval == "week" else 1))
        k = (at - start_at) // span
    else:
        months = _months(interval, interval_count)
        elapsed = (at.year - start_at.year) * 12 + (at.month - start_at.month)
        k = max(0, elapsed // months)
    while k > 0 and _step(start_at, interval, interval_count, k, day) > at:
        k -= 1
    while _step(start_at, interval, interval_count, k + 1, day) <= at:
        k += 1
    return (
        _step(start_at, interval, interval_count, k, day),
        _step(start_at, interval, interval_count, k + 1, day),
    )


def nominal_period(
    anchor_at: datetime, at: datetime, *, interval: str, interval_count: int, anchor: str
) -> tuple[datetime, datetime]:
    """The whole period holding `at`, before any clipping to a subscription's
    start: what a prorated fixed fee is a share of. Calendar periods count
    from the calendar boundary at or before `anchor_at`."""
    origin = _calendar_origin(anchor_at, interval) if anchor == "calendar" else anchor_at
    return period_containing(
        origin, max(at, origin), interval=interval, interval_count=interval_count
    )


def subscription_nominal_period(
    subscription: Subscription, at: datetime
) -> tuple[datetime, datetime]:
    return nominal_period(
        subscription.anchor_at or subscription.start_at,
        at,
        interval=subscription.interval,
        interval_count=subscription.interval_count,
        anchor=subscription.anchor,
    )


def subscription_period(subscription: Subscription, at: datetime) -> tuple[datetime, datetime]:
    """The subscription's billing period that holds `at` (real-time tiers reset with it):
    its nominal period clipped to the subscription's start and end."""
    start, end = subscription_nominal_period(subscription, max(at, subscription.start_at))
    start = max(start, subscription.start_at)
    if subscription.ends_at is not None and start < subscription.ends_at < end:
        end = subscription.ends_at
    return start, end
