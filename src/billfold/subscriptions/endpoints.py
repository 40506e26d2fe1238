from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from billfold.api.boundary import BoundaryRoute
from billfold.api.deps import CurrentClock, CurrentPrincipal, Pagination, Session
from billfold.api.problems import error_responses
from billfold.api.schemas import Page, page_of
from billfold.subscriptions import entitlements, service
from billfold.subscriptions.repository import Row
from billfold.subscriptions.schemas import EntitlementOut, SubscriptionCreate, SubscriptionOut

router = APIRouter(prefix="/v1/subscriptions", tags=["subscriptions"], route_class=BoundaryRoute)
entitlements_router = APIRouter(
    prefix="/v1/customers", tags=["entitlements"], route_class=BoundaryRoute
)


def subscription_out(row: Row) -> SubscriptionOut:
    subscription, product_code = row
    return SubscriptionOut(
        id=subscription.id,
        customer_id=subscription.customer_id,
        product=product_code,
        version=subscription.version,
        status=subscription.status,
        start_at=subscription.start_at,
        created_at=subscription.created_at,
        canceled_at=subscription.canceled_at,
    )


@router.post("", status_code=201, responses=error_responses(404))
async def create_subscription(
    body: SubscriptionCreate, session: Session, principal: CurrentPrincipal, clock: CurrentClock
) -> SubscriptionOut:
    """Put a customer on a product version (its latest by default) from `start_at`
    (default now). Minimal for now: billing intervals, periods, invoices and
    proration come with invoicing."""
    row = await service.create_subscription(
        session,
        clock,
        principal,
        customer_ref=body.customer_id,
        product_code=body.product,
        version=body.version,
        start_at=body.start_at,
    )
    return subscription_out(row)


@router.get("", responses=error_responses(404))
async def list_subscriptions(
    session: Session,
    principal: CurrentPrincipal,
    page: Pagination,
    customer_id: Annotated[
        str | None, Query(max_length=300, description="`cus_…` or `ext:<external_id>`")
    ] = None,
) -> Page[SubscriptionOut]:
    """Subscriptions, newest first; one customer's with `customer_id`."""
    rows = await service.list_subscriptions(
        session, principal, page.limit + 1, page.starting_after, customer_id
    )
    return page_of([subscription_out(row) for row in rows], page.limit)


@router.get("/{subscription_id}", responses=error_responses(404))
async def get_subscription(
    subscription_id: str, session: Session, principal: CurrentPrincipal
) -> SubscriptionOut:
    return subscription_out(await service.get_subscription(session, principal, subscription_id))


@router.post("/{subscription_id}/cancel", responses=error_responses(404))
async def cancel_subscription(
    subscription_id: str, session: Session, principal: CurrentPrincipal, clock: CurrentClock
) -> SubscriptionOut:
    """Cancel now; final. Already canceled: 409 `subscription_not_active`."""
    return subscription_out(
        await service.cancel_subscription(session, clock, principal, subscription_id)
    )


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
