"""Subscriptions: a customer on one version of a product, billed per period.

A subscription starts at `start_at` (default now; it may be in the past or
the future) and counts for entitlements from then on while `active`. Its
periods are `interval` (`day`, `week`, `month`, `year`) × `interval_count`,
by default its product's first recurring fixed price's interval (a
month otherwise), anchored on its start (`anniversary`) or on calendar
boundaries (`calendar`, the first period cut short). `trial_days` makes the
fixed fees free until the trial ends (usage is charged).

Canceling is now (the final invoice closes the cut period and credits the
unused part of an in-advance fee) or at the period's end (it stays active
until then); either is final (409 `subscription_not_active` after). A change
of product or version ends the subscription now and starts a new one on the
same periods, so fixed fees are prorated on both sides of the change.
Subscribing, canceling and changing bill at once whatever is due, so the
opening and final invoices exist when the request returns.

Commercial terms are per subscription (a customer's deal, not the product
version's), and a change of plan keeps them:

- `minimum_commitment` `{asset, amount}`: the least a period's fees come to
  in that asset (in-advance and in-arrears fixed fees, in-arrears usage and
  the real-time fees debited for the period); the period's invoice adds a
  `commitment` line for the shortfall, prorated over a cut period.
- `usage_threshold` `{asset, amount}`: progressive billing; when the current
  period's in-arrears usage not yet invoiced reaches it, the billing run
  makes a `progressive` invoice, and the period's invoice deducts what those
  charged (an `already_billed` line).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from billfold import limits
from billfold.assets import get_asset, parse_amount
from billfold.assets.service import parse_instant
from billfold.catalog import service as catalog
from billfold.clock import Clock
from billfold.customers import resolve_customer
from billfold.errors import Conflict, InvalidRequest, LimitExceeded, NotFound
from billfold.ids import new_id
from billfold.invoicing import service as invoicing
from billfold.invoicing.lines import Catalog, default_interval, fixed_per_period
from billfold.invoicing.repository import lock_subscription
from billfold.organizations.service import Principal
from billfold.subscriptions.models import Subscription
from billfold.subscriptions.periods import ANCHORS, INTERVALS, subscription_period
from billfold.subscriptions.repository import Row, SubscriptionRepository
from billfold.webhooks import topics

ID_PREFIX = "sub_"


def _check_intervals(prices: list[dict[str, Any]], interval: str, interval_count: int) -> None:
    for price in prices:
        if price["type"] != "fixed" or price["interval"] == "one_time":
            continue
        if fixed_per_period(0, price["interval"], interval, interval_count) is None:
            raise InvalidRequest(
                f"Price {price['code']} is per {price['interval']}, which does not convert to "
                f"a period of {interval_count} {interval}(s); choose an interval that it "
                "converts to.",
                code="interval_mismatch",
                field="interval",
            )


async def _money(
    session: AsyncSession, organization_id: str, value: tuple[str, str] | None, field: str
) -> tuple[str, int] | None:
    """An `{asset, amount}` term as (asset code, positive minor units)."""
    if value is None:
        return None
    asset = await get_asset(session, organization_id, value[0], field=f"{field}.asset")
    return asset.code, parse_amount(asset, value[1], field=f"{field}.amount")


async def _bill_now(session: AsyncSession, clock: Clock, subscription: Subscription) -> None:
    await invoicing.bill_subscription(
        session, clock, Catalog(session, subscription.organization_id), subscription, clock.now()
    )


async def create_subscription(
    session: AsyncSession,
    clock: Clock,
    principal: Principal,
    *,
    customer_ref: str,
    product_code: str,
    version: int | None,
    start_at: str | None,
    interval: str | None = None,
    interval_count: int | None = None,
    anchor: str = "anniversary",
    trial_days: int | None = None,
    minimum_commitment: tuple[str, str] | None = None,
    usage_threshold: tuple[str, str] | None = None,
) -> Row:
    organization_id = principal.organization_id
    customer = await resolve_customer(session, organization_id, customer_ref)
    try:
        view = await catalog.get_version(session, principal, product_code, version)
    except NotFound as exc:
        exc.field = "product" if exc.code == "product_not_found" else "version"
        raise
    now = clock.now()
    start = now if start_at is None else parse_instant(start_at, field="start_at")
    if interval is not None and interval not in INTERVALS:
        raise InvalidRequest(
            f"interval is one of {', '.join(INTERVALS)}.", code="invalid_interval", field="interval"
        )
    if anchor not in ANCHORS:
        raise InvalidRequest(
            f"anchor is one of {', '.join(ANCHORS)}.", code="invalid_anchor", field="anchor"
        )
    default, default_count = default_interval(list(view.version.prices))
    chosen = interval or default
    count = interval_count or (default_count if interval is None else 1)
    _check_intervals(list(view.version.prices), chosen, count)
    commitment = await _money(session, organization_id, minimum_commitment, "minimum_commitment")
    threshold = await _money(session, organization_id, usage_threshold, "usage_threshold")
    repository = SubscriptionRepository(session, organization_id)
    if await repository.count_active(customer.id) >= limits.subscriptions_per_customer_active_max:
        raise LimitExceeded(
            f"A customer may have at most {limits.subscriptions_per_customer_active_max} "
            "active subscriptions.",
            code="subscription_limit_reached",
        )
    subscription = Subscription(
        id=new_id("sub"),
        organization_id=organization_id,
        customer_id=customer.id,
        product_id=view.product.id,
        version=view.version.number,
        status="active",
        start_at=start,
        created_at=now,
        canceled_at=None,
        interval=chosen,
        interval_count=count,
        anchor=anchor,
        anchor_at=None,
        trial_end_at=None if not trial_days else start + timedelta(days=trial_days),
        ends_at=None,
        billed_through=None,
        next_billing_at=start,
        previous_subscription_id=None,
        minimum_commitment_asset=None if commitment is None else commitment[0],
        minimum_commitment_minor=None if commitment is None else commitment[1],
        usage_threshold_asset=None if threshold is None else threshold[0],
        usage_threshold_minor=None if threshold is None else threshold[1],
    )
    await repository.insert(subscription)
    await invoicing.emit_subscription(session, clock, subscription, topics.SUBSCRIPTION_CREATED)
    await _bill_now(session, clock, subscription)
    return subscription, view.product.code


async def get_subscription(
    session: AsyncSession, principal: Principal, subscription_id: str
) -> Row:
    """Another organization's subscription is not found, exactly like a missing one."""
    row = None
    if subscription_id.startswith(ID_PREFIX) and len(subscription_id) <= 40:
        row = await SubscriptionRepository(session, principal.organization_id).get(subscription_id)
    if row is None:
        raise NotFound.of("subscription", field="id")
    return row


async def list_subscriptions(
    session: AsyncSession,
    principal: Principal,
    limit: int,
    starting_after: str | None,
    customer_ref: str | None,
) -> list[Row]:
    customer_id = None
    if customer_ref is not None:
        customer = await resolve_customer(session, principal.organization_id, customer_ref)
        customer_id = customer.id
    return await SubscriptionRepository(session, principal.organization_id).list_page(
        limit, starting_after, customer_id
    )


async def _locked(
    session: AsyncSession, principal: Principal, subscription_id: str
) -> tuple[Subscription, str]:
    _, product_code = await get_subscription(session, principal, subscription_id)
    subscription = await lock_subscription(session, principal.organization_id, subscription_id)
    assert subscription is not None
    if subscription.status != "active" or subscription.ends_at is not None:
        raise Conflict(
            "This subscription is already canceled.", code="subscription_not_active", field="id"
        )
    return subscription, product_code


def _end_now(subscription: Subscription, now: datetime) -> None:
    end = max(now, subscription.start_at)
    subscription.status = "canceled"
    subscription.canceled_at = now
    subscription.ends_at = end
    if subscription.billed_through is None and subscription.start_at >= end:
        # Never started: nothing to bill.
        subscription.next_billing_at = None
    else:
        subscription.next_billing_at = min(subscription.next_billing_at or end, end)


async def cancel_subscription(
    session: AsyncSession,
    clock: Clock,
    principal: Principal,
    subscription_id: str,
    *,
    at_period_end: bool = False,
) -> Row:
    subscription, product_code = await _locked(session, principal, subscription_id)
    now = clock.now()
    if at_period_end:
        subscription.ends_at = subscription_period(subscription, now)[1]
        await session.flush()
        await invoicing.emit_subscription(session, clock, subscription, topics.SUBSCRIPTION_UPDATED)
        return subscription, product_code
    _end_now(subscription, now)
    await session.flush()
    await invoicing.emit_subscription(session, clock, subscription, topics.SUBSCRIPTION_CANCELED)
    await _bill_now(session, clock, subscription)
    return subscription, product_code


async def change_subscription(
    session: AsyncSession,
    clock: Clock,
    principal: Principal,
    subscription_id: str,
    *,
    product_code: str,
    version: int | None,
) -> Row:
    """Move to another product or version now: the old subscription ends
    (its final invoice credits the unused in-advance fee) and a new one starts
    on the same periods (its opening invoice charges the rest of the period)."""
    old, _ = await _locked(session, principal, subscription_id)
    try:
        view = await catalog.get_version(session, principal, product_code, version)
    except NotFound as exc:
        exc.field = "product" if exc.code == "product_not_found" else "version"
        raise
    if view.product.id == old.product_id and view.version.number == old.version:
        raise InvalidRequest(
            "The subscription is already on that version.",
            code="subscription_unchanged",
            field="version",
        )
    _check_intervals(list(view.version.prices), old.interval, old.interval_count)
    now = clock.now()
    if old.start_at > now:
        raise Conflict(
            "This subscription has not started; cancel it and subscribe anew.",
            code="subscription_not_started",
            field="id",
        )
    _end_now(old, now)
    new = Subscription(
        id=new_id("sub"),
        organization_id=old.organization_id,
        customer_id=old.customer_id,
        product_id=view.product.id,
        version=view.version.number,
        status="active",
        start_at=now,
        created_at=now,
        canceled_at=None,
        interval=old.interval,
        interval_count=old.interval_count,
        anchor=old.anchor,
        anchor_at=old.anchor_at or old.start_at,
        trial_end_at=old.trial_end_at if old.trial_end_at and old.trial_end_at > now else None,
        ends_at=None,
        billed_through=None,
        next_billing_at=now,
        previous_subscription_id=old.id,
        # Commercial terms belong to the customer's deal, not to the version.
        minimum_commitment_asset=old.minimum_commitment_asset,
        minimum_commitment_minor=old.minimum_commitment_minor,
        usage_threshold_asset=old.usage_threshold_asset,
        usage_threshold_minor=old.usage_threshold_minor,
    )
    await SubscriptionRepository(session, old.organization_id).insert(new)
    await invoicing.emit_subscription(session, clock, old, topics.SUBSCRIPTION_CANCELED)
    await invoicing.emit_subscription(session, clock, new, topics.SUBSCRIPTION_CREATED)
    await _bill_now(session, clock, old)
    await _bill_now(session, clock, new)
    return new, view.product.code
