from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Query
from sqlalchemy.ext.asyncio import AsyncSession

from billfold.api.boundary import BoundaryRoute
from billfold.api.deps import CurrentClock, CurrentPrincipal, Pagination, Session
from billfold.api.problems import error_responses
from billfold.api.schemas import Page, page_of
from billfold.assets import format_amount, get_asset
from billfold.subscriptions import entitlements, service
from billfold.subscriptions.periods import subscription_period
from billfold.subscriptions.repository import Row
from billfold.subscriptions.schemas import (
    EntitlementOut,
    MoneyOut,
    SubscriptionCancel,
    SubscriptionChange,
    SubscriptionCreate,
    SubscriptionOut,
)

router = APIRouter(prefix="/v1/subscriptions", tags=["subscriptions"], route_class=BoundaryRoute)
entitlements_router = APIRouter(
    prefix="/v1/customers", tags=["entitlements"], route_class=BoundaryRoute
)


async def _money(
    session: AsyncSession, organization_id: str, asset_code: str | None, amount_minor: int | None
) -> MoneyOut | None:
    if asset_code is None or amount_minor is None:
        return None
    asset = await get_asset(session, organization_id, asset_code)
    return MoneyOut(asset=asset_code, amount=format_amount(asset, amount_minor))


async def subscription_out(
    session: AsyncSession, row: Row, now: datetime | None = None
) -> SubscriptionOut:
    subscription, product_code = row
    organization_id = subscription.organization_id
    period_start, period_end = subscription_period(
        subscription, now or max(subscription.start_at, subscription.created_at)
    )
    return SubscriptionOut(
        id=subscription.id,
        customer_id=subscription.customer_id,
        product=product_code,
        version=subscription.version,
        status=subscription.status,
        start_at=subscription.start_at,
        created_at=subscription.created_at,
        canceled_at=subscription.canceled_at,
        interval=subscription.interval,
        interval_count=subscription.interval_count,
        anchor=subscription.anchor,
        trial_end_at=subscription.trial_end_at,
        ends_at=subscription.ends_at,
        current_period_start=period_start,
        current_period_end=period_end,
        previous_subscription_id=subscription.previous_subscription_id,
        minimum_commitment=await _money(
            session,
            organization_id,
            subscription.minimum_commitment_asset,
            subscription.minimum_commitment_minor,
        ),
        usage_threshold=await _money(
            session,
            organization_id,
            subscription.usage_threshold_asset,
            subscription.usage_threshold_minor,
        ),
    )


@router.post("", status_code=201, responses=error_responses(404))
async def create_subscription(
    body: SubscriptionCreate, session: Session, principal: CurrentPrincipal, clock: CurrentClock
) -> SubscriptionOut:
    """Put a customer on a product version (its latest by default) from `start_at`
    (default now), billed every `interval` × `interval_count`. The opening
    invoice (in-advance fees) is made at once when the start has come."""
    row = await service.create_subscription(
        session,
        clock,
        principal,
        customer_ref=body.customer_id,
        product_code=body.product,
        version=body.version,
        start_at=body.start_at,
        interval=body.interval,
        interval_count=body.interval_count,
        anchor=body.anchor,
        trial_days=body.trial_days,
        minimum_commitment=None
        if body.minimum_commitment is None
        else (body.minimum_commitment.asset, body.minimum_commitment.amount),
        usage_threshold=None
        if body.usage_threshold is None
        else (body.usage_threshold.asset, body.usage_threshold.amount),
    )
    return await subscription_out(session, row, clock.now())


@router.get("", responses=error_responses(404))
async def list_subscriptions(
    session: Session,
    principal: CurrentPrincipal,
    page: Pagination,
    clock: CurrentClock,
    customer_id: Annotated[
        str | None, Query(max_length=300, description="`cus_…` or `ext:<external_id>`")
    ] = None,
) -> Page[SubscriptionOut]:
    """Subscriptions, newest first; one customer's with `customer_id`."""
    rows = await service.list_subscriptions(
        session, principal, page.limit + 1, page.starting_after, customer_id
    )
    return page_of([await subscription_out(session, row, clock.now()) for row in rows], page.limit)


@router.get("/{subscription_id}", responses=error_responses(404))
async def get_subscription(
    subscription_id: str, session: Session, principal: CurrentPrincipal, clock: CurrentClock
) -> SubscriptionOut:
    row = await service.get_subscription(session, principal, subscription_id)
    return await subscription_out(session, row, clock.now())


@router.post("/{subscription_id}/cancel", responses=error_responses(404))
async def cancel_subscription(
    subscription_id: str,
    session: Session,
    principal: CurrentPrincipal,
    clock: CurrentClock,
    body: SubscriptionCancel | None = None,
) -> SubscriptionOut:
    """Cancel now (the final invoice is made at once, crediting the unused part
    of in-advance fees), or with `at_period_end` when the current period ends.
    Already canceled: 409 `subscription_not_active`."""
    row = await service.cancel_subscription(
        session,
        clock,
        principal,
        subscription_id,
        at_period_end=body is not None and body.at_period_end,
    )
    return await subscription_out(session, row, clock.now())


@router.post("/{subscription_id}/change", status_code=201, responses=error_responses(404))
async def change_subscription(
    subscription_id: str,
    body: SubscriptionChange,
    session: Session,
    principal: CurrentPrincipal,
    clock: CurrentClock,
) -> SubscriptionOut:
    """Upgrade or downgrade now to another product or version: this subscription
    ends (its unused in-advance fee is credited) and the new one, returned,
    continues on the same periods (its fees prorated)."""
    row = await service.change_subscription(
        session,
        clock,
        principal,
        subscription_id,
        product_code=body.product,
        version=body.version,
    )
    return await subscription_out(session, row, clock.now())


@entitlements_router.get(
    "/{customer_id}/entitlements/{feature_code}", responses=error_responses(404)
)
async def get_entitlement(
    customer_id: str,
    feature_code: str,
    session: Session,
    principal: CurrentPrincipal,
    clock: CurrentClock,
) -> EntitlementOut:
    """Whether the customer's active subscriptions grant this feature, and how much
    is left. Several subscriptions: booleans OR, the largest limit wins (no limit
    beats all). Metered: `used` over the current UTC calendar period."""
    result = await entitlements.entitlement(session, clock, principal, customer_id, feature_code)
    return EntitlementOut(
        feature=result.feature,
        customer_id=result.customer_id,
        type=result.type,
        has_access=result.has_access,
        limit=result.limit,
        used=result.used,
        remaining=result.remaining,
        enforcement=result.enforcement,
        meter=result.meter,
        period=result.period,
        period_start=result.period_start,
        period_end=result.period_end,
        granted_by=list(result.granted_by),
    )
