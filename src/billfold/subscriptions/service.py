"""Subscriptions, minimal: a customer on one version of a product.

This is the record entitlements (and, later, real-time billing) read: who is
on which product version since when, and whether it is still active. Billing
intervals, periods, invoices, plan changes and proration come with invoicing;
until then `interval` and `interval_count` (API.md) are not accepted.

A subscription starts at `start_at` (default now; it may be in the past or
the future) and counts for entitlements from then on while `active`.
Canceling is immediate and final (409 `subscription_not_active` after).
"""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from billfold import limits
from billfold.assets.service import parse_instant
from billfold.catalog import service as catalog
from billfold.clock import Clock
from billfold.customers import resolve_customer
from billfold.errors import Conflict, LimitExceeded, NotFound
from billfold.ids import new_id
from billfold.organizations.service import Principal
from billfold.subscriptions.models import Subscription
from billfold.subscriptions.repository import Row, SubscriptionRepository

ID_PREFIX = "sub_"


async def create_subscription(
    session: AsyncSession,
    clock: Clock,
    principal: Principal,
    *,
    customer_ref: str,
    product_code: str,
    version: int | None,
    start_at: str | None,
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
    )
    await repository.insert(subscription)
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


async def cancel_subscription(
    session: AsyncSession, clock: Clock, principal: Principal, subscription_id: str
) -> Row:
    subscription, product_code = await get_subscription(session, principal, subscription_id)
    repository = SubscriptionRepository(session, principal.organization_id)
    if not await repository.cancel(subscription, clock.now()):
        raise Conflict(
            "This subscription is already canceled.", code="subscription_not_active", field="id"
        )
    return subscription, product_code
