"""What a customer's active subscriptions entitle it to, one feature at a time.

The subscriptions that count are the customer's `active` ones whose
`start_at` has passed. Each names a product version; the versions that
define the feature code answer together:

- The feature's `type` is that of the newest subscription's definition;
  definitions of another type under the same code are ignored (a code is
  meant to mean one thing across an organization's products).
- `boolean`: access if any subscription grants it (OR).
- `numeric` and `metered`: the largest `limit` wins, and no limit
  (unlimited) beats every number; that definition's `enforcement` (and, for
  metered, `meter` and `period`) apply. Limits are not added up: two plans
  of 1,000 calls each give 1,000, not 2,000 (Stigg and Lago add-ons
  differ; summing belongs with add-ons, a later issue).
- `numeric`: `has_access` unless the limit is 0; the count to compare with
  the limit (seats, projects) is the caller's, so `used` is null.
- `metered`: `used` is the meter's usage for the customer over the current
  UTC calendar period (`day`, `month` or `year`) on the server clock, not a
  period anchored on the subscription's start (those come with invoicing);
  `remaining` is `max(0, limit - used)`. `hard` enforcement: no access once
  `used >= limit`; `soft`: access stays, the numbers tell.

No subscription defining the feature: `has_access` false, `type` null. Nothing
is written.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from billfold import limits
from billfold.catalog.repository import ProductRepository
from billfold.clock import Clock
from billfold.customers import resolve_customer
from billfold.metering import service as metering
from billfold.organizations.service import Principal
from billfold.rating import decimal_text
from billfold.subscriptions.repository import SubscriptionRepository


@dataclass(frozen=True, slots=True)
class Entitlement:
    feature: str
    customer_id: str
    type: str | None
    has_access: bool
    limit: str | None = None
    used: str | None = None
    remaining: str | None = None
    enforcement: str | None = None
    meter: str | None = None
    period: str | None = None
    period_start: datetime | None = None
    period_end: datetime | None = None
    granted_by: tuple[str, ...] = ()


def calendar_period(now: datetime, period: str) -> tuple[datetime, datetime]:
    """The UTC calendar day, month or year that holds `now`: [start, end)."""
    day = now.replace(hour=0, minute=0, second=0, microsecond=0)
    if period == "day":
        return day, day + timedelta(days=1)
    if period == "year":
        start = day.replace(month=1, day=1)
        return start, start.replace(year=start.year + 1)
    start = day.replace(day=1)
    if start.month == 12:
        return start, start.replace(year=start.year + 1, month=1)
    return start, start.replace(month=start.month + 1)


def _limit_key(feature: dict[str, Any]) -> tuple[int, Decimal]:
    limit = feature.get("limit")
    return (1, Decimal(0)) if limit is None else (0, Decimal(limit))


async def entitlement(
    session: AsyncSession,
    clock: Clock,
    principal: Principal,
    customer_ref: str,
    feature_code: str,
) -> Entitlement:
    organization_id = principal.organization_id
    customer = await resolve_customer(session, organization_id, customer_ref, field="id")
    now = clock.now()
    subscriptions = await SubscriptionRepository(session, organization_id).active_for_customer(
        customer.id, now
    )
    versions = {
        (v.product_id, v.number): v
        for v in await ProductRepository(session, organization_id).get_versions(
            [(s.product_id, s.version) for s in subscriptions]
        )
    }
    grants: list[tuple[str, dict[str, Any]]] = []
    for subscription in subscriptions:  # newest first
        version = versions[(subscription.product_id, subscription.version)]
        for feature in version.features:
            if feature["code"] == feature_code:
                grants.append((subscription.id, feature))
    if not grants:
        return Entitlement(feature_code, customer.id, None, has_access=False)
    kind = grants[0][1]["type"]
    grants = [(sub_id, feature) for sub_id, feature in grants if feature["type"] == kind]
    granted_by = tuple(sub_id for sub_id, _ in grants)
    if kind == "boolean":
        return Entitlement(feature_code, customer.id, kind, True, granted_by=granted_by)
    chosen = max((feature for _, feature in grants), key=_limit_key)
    limit: str | None = chosen["limit"]
    enforcement: str = chosen["enforcement"]
    if kind == "numeric":
        return Entitlement(
            feature_code,
            customer.id,
            kind,
            has_access=limit is None or Decimal(limit) > 0,
            limit=limit,
            enforcement=enforcement,
            granted_by=granted_by,
        )
    start, end = calendar_period(now, chosen["period"])
    usage = await metering.usage(
        session,
        clock,
        principal,
        chosen["meter"],
        customer_ref=customer.id,
        start_text=start.isoformat(),
        end_text=end.isoformat(),
        granularity=None,
        group_by=[],
        backfill_window_s=limits.event_backfill_window_default_s,
    )
    # One bucket, no groups: one row; max, min and latest read null with no events.
    value = usage.rows[0].value if usage.rows else None
    used = Decimal(value) if value is not None else Decimal(0)
    remaining = None if limit is None else max(Decimal(0), Decimal(limit) - used)
    has_access = limit is None or enforcement == "soft" or used < Decimal(limit)
    return Entitlement(
        feature_code,
        customer.id,
        kind,
        has_access=has_access,
        limit=limit,
        used=decimal_text(used),
        remaining=None if remaining is None else decimal_text(remaining),
        enforcement=enforcement,
        meter=chosen["meter"],
        period=chosen["period"],
        period_start=start,
        period_end=end,
        granted_by=granted_by,
    )
