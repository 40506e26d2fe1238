from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.exceptions import RequestValidationError

from billfold.api.boundary import BoundaryRoute
from billfold.api.deps import CurrentClock, CurrentPrincipal, Pagination, Session
from billfold.api.problems import error_responses
from billfold.api.schemas import Page, page_of
from billfold.assets import format_amount
from billfold.catalog import service, simulate
from billfold.catalog.schemas import (
    EventFeeOut,
    EventFeesOut,
    LineOut,
    PriceFeeOut,
    ProductCreate,
    ProductOut,
    SimulateIn,
    SimulationOut,
    TotalOut,
    VersionDefinition,
    VersionOut,
)
from billfold.errors import InvalidRequest
from billfold.metering import values
from billfold.rating import decimal_text

router = APIRouter(prefix="/v1/products", tags=["products"], route_class=BoundaryRoute)


def version_out(view: service.ProductView) -> VersionOut:
    return VersionOut(
        product=view.product.code,
        number=view.version.number,
        prices=view.version.prices,
        features=view.version.features,
        created_at=view.version.created_at,
    )


def product_out(view: service.ProductView) -> ProductOut:
    return ProductOut(
        id=view.product.id,
        code=view.product.code,
        name=view.product.name,
        latest_version=view.product.latest_version,
        created_at=view.product.created_at,
        version=version_out(view),
    )


@router.post("", status_code=201, responses=error_responses(404))
async def create_product(
    body: ProductCreate, session: Session, principal: CurrentPrincipal, clock: CurrentClock
) -> ProductOut:
    """Create a product and its version 1. A code is taken once: 409 `product_code_taken`.

    Each price is validated as API.md says, errors naming the field
    (`prices.1.tiers.0.up_to`); a usage price names an existing meter and an
    asset (404 `meter_not_found` / `asset_not_found` naming the field).
    """
    view = await service.create_product(
        session,
        clock,
        principal,
        code=body.code,
        name=body.name,
        prices=body.prices,
        features=body.features,
    )
    return product_out(view)


@router.get("", responses=error_responses())
async def list_products(
    session: Session, principal: CurrentPrincipal, page: Pagination
) -> Page[ProductOut]:
    """Products, newest first, each with its latest version."""
    views = await service.list_products(session, principal, page.limit + 1, page.starting_after)
    return page_of([product_out(view) for view in views], page.limit)


@router.get("/{code}", responses=error_responses(404))
async def get_product(code: str, session: Session, principal: CurrentPrincipal) -> ProductOut:
    """The product with its latest version."""
    return product_out(await service.get_version(session, principal, code))


@router.post("/{code}/versions", status_code=201, responses=error_responses(404))
async def create_version(
    code: str,
    body: VersionDefinition,
    session: Session,
    principal: CurrentPrincipal,
    clock: CurrentClock,
) -> VersionOut:
    """The product's next version, a whole new definition. Earlier versions never
    change; subscriptions stay on theirs until moved."""
    view = await service.create_version(
        session, clock, principal, code, prices=body.prices, features=body.features
    )
    return version_out(view)


@router.get("/{code}/versions/{number}", responses=error_responses(404))
async def get_version(
    code: str, number: int, session: Session, principal: CurrentPrincipal
) -> VersionOut:
    return version_out(await service.get_version(session, principal, code, number))


def _events_of(body: bytes) -> list[Any]:
    """The raw events of `{"events": [...]}`, numbers exact."""
    try:
        document = values.loads(body) if body.strip() else {}
    except (ValueError, RecursionError):
        raise InvalidRequest("The request body is not valid JSON.", code="malformed_json") from None
    if not isinstance(document, dict):
        raise RequestValidationError(
            [{"loc": ("body",), "msg": 'The body is {"events": [...]}.', "type": "model_type"}]
        )
    for key in document:
        if key != "events":
            raise RequestValidationError(
                [
                    {
                        "loc": ("body", key),
                        "msg": "Extra inputs are not permitted",
                        "type": "extra_forbidden",
                    }
                ]
            )
    events = document.get("events")
    if not isinstance(events, list):
        raise RequestValidationError(
            [
                {
                    "loc": ("body", "events"),
                    "msg": "Input should be a valid list",
                    "type": "list_type",
                }
            ]
        )
    return events


@router.post(
    "/{code}/versions/{number}/simulate",
    response_model=SimulationOut,
    responses=error_responses(404),
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": SimulateIn.model_json_schema()}},
        }
    },
)
async def simulate_version(
    code: str,
    number: int,
    request: Request,
    session: Session,
    principal: CurrentPrincipal,
    clock: CurrentClock,
) -> SimulationOut:
    """The fees these events would cost under this version's usage prices, as one
    billing period, with a per-tier breakdown per price, the fee of each event
    (what real-time billing would debit) and totals per asset. Writes nothing.
    At most 1,000 events (422 `too_many_events`)."""
    result = await simulate.simulate(
        session, clock, principal, code, number, _events_of(await request.body())
    )
    return SimulationOut(
        product=result.product,
        version=result.version,
        prices=[
            PriceFeeOut(
                price=price.code,
                meter=price.meter,
                asset=price.asset.code,
                billing=price.billing,
                model=price.model,
                events=price.events,
                quantity=decimal_text(price.quantity),
                amount=format_amount(price.asset, price.amount_minor),
                lines=[
                    LineOut(
                        dimension=line.dimension,
                        kind=line.kind,
                        tier=line.tier,
                        units=decimal_text(line.units),
                        unit_amount=decimal_text(line.unit_amount),
                        flat_amount=decimal_text(line.flat_amount),
                        amount=format_amount(price.asset, line.amount_minor),
                    )
                    for line in price.lines.values()
                ],
            )
            for price in result.prices
        ],
        events=[
            EventFeesOut(
                index=index,
                fees=[
                    EventFeeOut(
                        price=fee.price,
                        asset=fee.asset.code,
                        quantity=decimal_text(fee.quantity),
                        amount=format_amount(fee.asset, fee.amount_minor),
                    )
                    for fee in fees
                ],
            )
            for index, fees in enumerate(result.events)
        ],
        totals=[
            TotalOut(asset=code, amount=format_amount(asset, amount_minor))
            for code, (asset, amount_minor) in sorted(result.totals.items())
        ],
    )
