from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response

from billfold.api.boundary import BoundaryRoute
from billfold.api.deps import CurrentClock, CurrentPrincipal, Pagination, Session
from billfold.api.problems import error_responses
from billfold.api.schemas import Page, page_of
from billfold.assets.service import get_asset
from billfold.costs import service
from billfold.costs.models import LlmPriceOverride, Vendor
from billfold.costs.schemas import (
    CostSettingsIn,
    CostSettingsOut,
    LlmCostIn,
    PriceOverrideIn,
    PriceOverrideOut,
    VendorCreate,
    VendorOut,
)
from billfold.errors import InvalidRequest
from billfold.llmcost import decimal_text
from billfold.metering import values

router = APIRouter(tags=["costs"], route_class=BoundaryRoute)


def vendor_out(vendor: Vendor) -> VendorOut:
    return VendorOut(id=vendor.id, code=vendor.code, name=vendor.name, created_at=vendor.created_at)


def override_out(row: LlmPriceOverride) -> PriceOverrideOut:
    return PriceOverrideOut(
        id=row.id,
        provider=row.provider,
        model=row.model,
        rates=values.loads(row.rates),
        multiplier=row.multiplier,
        effective_from=row.effective_from,
        created_at=row.created_at,
    )


def settings_out(policy: service.CostPolicy) -> CostSettingsOut:
    return CostSettingsOut(
        unknown_model_policy=policy.unknown_model_policy,
        markup_percent=decimal_text(policy.markup_percent),
        reporting_asset=policy.reporting_asset,
        margin_low_percent=(
            None if policy.margin_low_percent is None else decimal_text(policy.margin_low_percent)
        ),
        alert_window_days=policy.alert_window_days,
    )


@router.post("/v1/vendors", status_code=201, responses=error_responses())
async def create_vendor(
    body: VendorCreate,
    response: Response,
    session: Session,
    principal: CurrentPrincipal,
    clock: CurrentClock,
) -> VendorOut:
    """Create a vendor (201), or return the one with this code (200)."""
    vendor, created = await service.create_vendor(
        session, clock, principal, code=body.code, name=body.name
    )
    if not created:
        response.status_code = 200
    return vendor_out(vendor)


@router.get("/v1/vendors", responses=error_responses())
async def list_vendors(
    session: Session, principal: CurrentPrincipal, page: Pagination
) -> Page[VendorOut]:
    """Vendors, newest first (events' costs create the ones they name)."""
    rows = await service.list_vendors(session, principal, page.limit + 1, page.starting_after)
    return page_of([vendor_out(row) for row in rows], page.limit)


@router.get("/v1/vendors/{vendor_id}", responses=error_responses(404))
async def get_vendor(vendor_id: str, session: Session, principal: CurrentPrincipal) -> VendorOut:
    return vendor_out(await service.get_vendor(session, principal, vendor_id))


async def _exact_body(request: Request) -> Any:
    # Read the body with exact numbers so a usage count is never a float.
    try:
        return values.loads(await request.body())
    except (ValueError, RecursionError):
        raise InvalidRequest("The request body is not valid JSON.", code="malformed_json") from None


@router.post("/v1/llm/cost", responses=error_responses(422))
async def llm_cost(
    body: LlmCostIn,
    request: Request,
    session: Session,
    principal: CurrentPrincipal,
    clock: CurrentClock,
) -> dict[str, Any]:
    """The vendor cost of one model call at your prices now: total, per-bucket
    breakdown and the price table version. An unknown model is 422 `unknown_model`."""
    del body  # validated for the schema; priced from the exact body
    raw = await _exact_body(request)
    priced = await service.llm_cost(session, clock, principal, raw)
    asset = await get_asset(session, principal.organization_id, priced.currency)
    return service.priced_json(priced, asset)


@router.get("/v1/llm/settings", responses=error_responses())
async def get_settings(session: Session, principal: CurrentPrincipal) -> CostSettingsOut:
    return settings_out(await service.cost_policy(session, principal.organization_id))


@router.post("/v1/llm/settings", responses=error_responses())
async def update_settings(
    body: CostSettingsIn, session: Session, principal: CurrentPrincipal, clock: CurrentClock
) -> CostSettingsOut:
    """Unknown-model policy, markup, reporting asset and margin alert settings;
    fields left out keep their value."""
    changes = body.model_dump(exclude_unset=True)
    return settings_out(await service.update_settings(session, clock, principal, changes=changes))


@router.post("/v1/llm/price-overrides", status_code=201, responses=error_responses())
async def create_override(
    body: PriceOverrideIn, session: Session, principal: CurrentPrincipal, clock: CurrentClock
) -> PriceOverrideOut:
    """A negotiated price for a model (or all of a provider's models), from `effective_from`."""
    row = await service.create_override(
        session,
        clock,
        principal,
        provider=body.provider,
        model=body.model,
        rates=body.rates,
        multiplier=body.multiplier,
        effective_from=body.effective_from,
    )
    return override_out(row)


@router.get("/v1/llm/price-overrides", responses=error_responses())
async def list_overrides(
    session: Session, principal: CurrentPrincipal, page: Pagination
) -> Page[PriceOverrideOut]:
    rows = await service.list_overrides(session, principal, page.limit + 1, page.starting_after)
    return page_of([override_out(row) for row in rows], page.limit)


@router.get("/v1/events/{event_id}/costs", responses=error_responses(404))
async def event_costs(
    event_id: str, session: Session, principal: CurrentPrincipal
) -> dict[str, Any]:
    return {"data": await service.costs_of_event(session, principal, event_id)}


@router.get("/v1/customers/{customer_id}/profitability", responses=error_responses(404))
async def customer_profitability(
    customer_id: str,
    session: Session,
    principal: CurrentPrincipal,
    start: Annotated[str, Query(alias="from")],
    end: Annotated[str, Query(alias="to")],
) -> dict[str, Any]:
    """Revenue (real-time fees and captured holds), cost, net and margin % in [from, to)."""
    return await service.customer_profitability(session, principal, customer_id, start, end)


@router.get("/v1/analytics/profitability", responses=error_responses())
async def analytics_profitability(
    session: Session,
    principal: CurrentPrincipal,
    start: Annotated[str, Query(alias="from")],
    end: Annotated[str, Query(alias="to")],
    group_by: str = "customer",
    granularity: str = "day",
) -> dict[str, Any]:
    """Per group (customer, vendor, model, feature or a data key) and time bucket,
    most costly group first."""
    return await service.analytics_profitability(
        session, principal, group_by=group_by, start=start, end=end, granularity=granularity
    )
