from __future__ import annotations

from fastapi import APIRouter

from billfold.api.boundary import BoundaryRoute
from billfold.api.deps import CurrentClock, CurrentPrincipal, Session
from billfold.api.problems import error_responses
from billfold.assets.amounts import AssetInfo, format_amount
from billfold.assets.service import get_asset
from billfold.ledger.book import AccountState
from billfold.wallets import service
from billfold.wallets.models import Grant
from billfold.wallets.schemas import (
    AdjustmentCreate,
    AdjustmentOut,
    BalanceOut,
    BalanceSettings,
    GrantCreate,
    GrantOut,
    WalletOut,
)

router = APIRouter(
    prefix="/v1/customers/{customer_id}", tags=["wallets"], route_class=BoundaryRoute
)


def _grant_out(grant: Grant, account: AccountState, asset: AssetInfo) -> GrantOut:
    lapsed = grant.status != "active"
    return GrantOut(
        id=grant.id,
        customer_id=grant.customer_id,
        asset=grant.asset_code,
        purpose=grant.purpose,
        priority=grant.priority,
        amount=format_amount(asset, grant.amount_minor),
        remaining=format_amount(asset, account.posted_minor),
        held=format_amount(asset, account.debits_pending_minor),
        available=format_amount(asset, 0 if lapsed else account.available_minor),
        effective_at=grant.effective_at,
        expires_at=grant.expires_at,
        status=grant.status,
        funding=grant.details,
        created_at=grant.created_at,
    )


def _balance_out(view: service.BalanceView) -> BalanceOut:
    asset, wallet = view.asset, view.wallet
    threshold = wallet.low_balance_threshold_minor
    return BalanceOut(
        asset=asset.code,
        available=format_amount(asset, view.available_minor),
        held=format_amount(asset, view.held_minor),
        posted=format_amount(asset, view.posted_minor),
        credit_limit=format_amount(asset, wallet.credit_limit_minor),
        debt=format_amount(asset, view.debt_minor),
        low_balance_threshold=None if threshold is None else format_amount(asset, threshold),
        grants=[_grant_out(grant, account, asset) for grant, account in view.grants],
    )


@router.get("/wallet", responses=error_responses(404))
async def get_wallet(
    customer_id: str, session: Session, principal: CurrentPrincipal, clock: CurrentClock
) -> WalletOut:
    """Every balance of the customer: available, held, posted, and each grant."""
    resolved, views = await service.wallet_view(session, clock, principal, customer_id)
    return WalletOut(customer_id=resolved, balances=[_balance_out(v) for v in views])


@router.patch("/wallet/balances/{asset}", responses=error_responses(404))
async def configure_balance(
    customer_id: str,
    asset: str,
    body: BalanceSettings,
    session: Session,
    principal: CurrentPrincipal,
    clock: CurrentClock,
) -> BalanceOut:
    """Set the credit limit (how far the main balance may go below zero) and the
    low-balance threshold that triggers `wallet.balance_low`."""
    view = await service.configure_balance(
        session,
        clock,
        principal,
        customer_id,
        asset,
        credit_limit=body.credit_limit,
        low_balance_threshold=body.low_balance_threshold or None,
        clear_threshold=body.low_balance_threshold == "",
    )
    return _balance_out(view)


@router.post("/grants", status_code=201, responses=error_responses(404))
async def create_grant(
    customer_id: str,
    body: GrantCreate,
    session: Session,
    principal: CurrentPrincipal,
    clock: CurrentClock,
) -> GrantOut:
    """Fund a sub-balance: paid, promotional or bundled, with priority and expiry."""
    grant, account = await service.create_grant(
        session,
        clock,
        principal,
        customer_id,
        asset_code=body.asset,
        amount=body.amount,
        paid_asset_code=body.paid.asset if body.paid else None,
        paid_amount=body.paid.amount if body.paid else None,
        purpose=body.purpose,
        priority=body.priority,
        effective_at=body.effective_at,
        expires_at=body.expires_at,
    )
    asset_info = await get_asset(session, principal.organization_id, grant.asset_code)
    return _grant_out(grant, account, asset_info)


@router.post("/adjustments", status_code=201, responses=error_responses(404))
async def create_adjustment(
    customer_id: str,
    body: AdjustmentCreate,
    session: Session,
    principal: CurrentPrincipal,
    clock: CurrentClock,
) -> AdjustmentOut:
    """A signed manual change of the main balance, with its reason."""
    adjustment = await service.adjust(
        session,
        clock,
        principal,
        customer_id,
        asset_code=body.asset,
        amount=body.amount,
        reason=body.reason,
        description=body.description,
    )
    asset_info = await get_asset(session, principal.organization_id, adjustment.asset_code)
    return AdjustmentOut(
        id=adjustment.id,
        customer_id=adjustment.customer_id,
        asset=adjustment.asset_code,
        amount=format_amount(asset_info, adjustment.amount_minor),
        reason=adjustment.reason,
        description=adjustment.description,
        created_at=adjustment.created_at,
    )
