from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from billfold import limits
from billfold.api.boundary import BoundaryRoute
from billfold.api.deps import CurrentClock, CurrentPrincipal, Pagination, Session
from billfold.api.problems import error_responses
from billfold.api.schemas import Page, page_of
from billfold.assets import service
from billfold.assets.amounts import AssetInfo
from billfold.assets.models import Asset, ExchangeRate
from billfold.assets.schemas import AssetCreate, AssetOut, QuoteOut, RateCreate, RateOut

router = APIRouter(prefix="/v1/assets", tags=["assets"], route_class=BoundaryRoute)

AssetCode = Annotated[str, Query(max_length=limits.asset_code_length_max)]


def _asset_out(asset: AssetInfo | Asset) -> AssetOut:
    if isinstance(asset, AssetInfo):
        return AssetOut(
            code=asset.code,
            name=asset.name,
            scale=asset.scale,
            kind=asset.kind,
            symbol=asset.symbol,
            display_exponent=asset.display_exponent,
            created_at=None,
        )
    return AssetOut(
        code=asset.code,
        name=asset.name,
        scale=asset.scale,
        kind=asset.kind,
        symbol=asset.symbol,
        display_exponent=None,
        created_at=asset.created_at,
    )


def _rate_out(rate: ExchangeRate) -> RateOut:
    return RateOut(
        id=rate.id,
        asset=rate.asset_code,
        base=rate.base_code,
        rate=rate.rate,
        valid_from=rate.valid_from,
        created_at=rate.created_at,
    )


@router.post("", status_code=201, responses=error_responses(409))
async def create_asset(
    body: AssetCreate, session: Session, principal: CurrentPrincipal, clock: CurrentClock
) -> AssetOut:
    """Create a custom asset (`TOKENS`, `GPU_HOURS`, `CREDITS`) with its own scale.

    ISO currencies are built in. A code already used, by a built-in currency or
    by this organization, is `asset_code_taken`.
    """
    asset = await service.create_asset(
        session,
        clock,
        principal,
        code=body.code,
        name=body.name,
        scale=body.scale,
        kind=body.kind,
        symbol=body.symbol,
    )
    return _asset_out(asset)


@router.get("", responses=error_responses())
async def list_assets(
    session: Session, principal: CurrentPrincipal, page: Pagination
) -> Page[AssetOut]:
    """Built-in currencies and this organization's assets, in code order; the cursor is a code."""
    rows = await service.list_assets(session, principal, page.limit + 1, page.starting_after)
    return page_of([_asset_out(row) for row in rows], page.limit)


@router.get("/{code}", responses=error_responses(404))
async def get_asset(code: str, session: Session, principal: CurrentPrincipal) -> AssetOut:
    return _asset_out(await service.describe_asset(session, principal, code))


@router.post("/{code}/rates", status_code=201, responses=error_responses(404, 409))
async def create_rate(
    code: str,
    body: RateCreate,
    session: Session,
    principal: CurrentPrincipal,
    clock: CurrentClock,
) -> RateOut:
    """From `valid_from` (default now) on, 1 unit of `code` costs `rate` units of `base`.

    Rates are versions and are never edited; publish a new one to change a
    price. They are directional: a rate of TOKENS in USD does not price USD
    in TOKENS.
    """
    rate = await service.create_rate(
        session,
        clock,
        principal,
        code,
        base_code=body.base,
        rate=body.rate,
        valid_from=body.valid_from,
    )
    return _rate_out(rate)


@router.get("/{code}/rates", responses=error_responses(404))
async def list_rates(
    code: str,
    session: Session,
    principal: CurrentPrincipal,
    page: Pagination,
    base: AssetCode | None = None,
) -> Page[RateOut]:
    """The rate versions of `code`, latest `valid_from` first, optionally in one base."""
    rows = await service.list_rates(
        session,
        principal,
        code,
        base_code=base,
        limit=page.limit + 1,
        starting_after=page.starting_after,
    )
    return page_of([_rate_out(row) for row in rows], page.limit)


@router.get("/{code}/quote", responses=error_responses(404))
async def quote(
    code: str,
    *,
    session: Session,
    principal: CurrentPrincipal,
    clock: CurrentClock,
    base: AssetCode,
    amount: Annotated[
        str,
        Query(
            max_length=limits.amount_string_length_max,
            description="The amount of `base` to spend, a decimal string in major units.",
        ),
    ],
    at: Annotated[
        str | None,
        Query(
            max_length=limits.timestamp_string_length_max,
            description="RFC 3339 instant to quote at; default now.",
        ),
    ] = None,
) -> QuoteOut:
    """How much of `code` `amount` of `base` buys at `at`, rounded down to `code`'s scale."""
    result = await service.quote(
        session, clock, principal, code, base_code=base, amount=amount, at=at
    )
    amount_text, quantity_text, rate_text = service.quote_text(result)
    return QuoteOut(
        asset=result.asset.code,
        base=result.base.code,
        amount=amount_text,
        quantity=quantity_text,
        rate=rate_text,
        rate_id=result.rate.rate_id,
        valid_from=result.rate.valid_from,
        at=result.at,
    )
