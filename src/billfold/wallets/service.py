"""Wallets: open one under its lock, change it, close it.

`open_wallet` locks the wallet row, loads its accounts and grants, and
first settles whatever has expired (holds, then grants) — so expiry is
enforced lazily on every read and write as well as by the sweeper.
`close_wallet` writes the entries, moves the counters, and emits the
low-balance webhooks. Services call both within one transaction; the
boundary commits.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from billfold import limits
from billfold.assets.amounts import AssetInfo, convert_base_to_asset, format_amount, parse_amount
from billfold.assets.service import get_asset, rate_at
from billfold.authorizations.models import Authorization
from billfold.authorizations.repository import AuthorizationRepository
from billfold.clock import Clock
from billfold.customers.service import resolve_customer
from billfold.db.pipeline import Statement, run_together
from billfold.errors import InvalidRequest
from billfold.ids import new_id
from billfold.ledger.book import AccountState
from billfold.ledger.repository import LedgerRepository, state_of
from billfold.organizations.service import Principal
from billfold.wallets.models import Adjustment, Grant, Wallet
from billfold.wallets.repository import WalletRepository
from billfold.wallets.state import Charge, GrantState, WalletState
from billfold.webhooks import service as webhooks
from billfold.webhooks import topics


@dataclass(slots=True)
class OpenWallet:
    wallet: Wallet
    state: WalletState
    now: datetime
    #: Expiries this transaction added (new holds and grants).
    new_expiries: list[datetime] = field(default_factory=list)
    expired_holds: list[Authorization] = field(default_factory=list)
    #: Debt this transaction's usage added (for `wallet.overdrawn`).
    shortfall_minor: int = 0


def _state_of(
    wallet: Wallet, accounts: dict[str, AccountState], grants: list[GrantState]
) -> WalletState:
    state = WalletState(
        organization_id=wallet.organization_id,
        customer_id=wallet.customer_id,
        asset_code=wallet.asset_code,
        main=accounts[wallet.main_account_id],
        grants=grants,
    )
    if wallet.debt_account_id is not None:
        state.attach_debt(accounts[wallet.debt_account_id])
    return state


async def open_wallets(
    session: AsyncSession,
    now: datetime,
    organization_id: str,
    keys: Sequence[tuple[str, str]],
) -> dict[tuple[str, str], OpenWallet]:
    """Lock and load the existing wallets among `keys` (customer, asset) with
    a fixed number of queries, whatever their number; then settle what has
    expired in each. Missing wallets are absent from the answer."""
    opened, _ = await open_wallets_reading(session, now, organization_id, keys, ())
    return opened


async def open_wallets_reading(
    session: AsyncSession,
    now: datetime,
    organization_id: str,
    keys: Sequence[tuple[str, str]],
    reads: Sequence[Statement],
) -> tuple[dict[tuple[str, str], OpenWallet], list[list[tuple[Any, ...]]]]:
    """`open_wallets`, and the rows of `reads`, statements run once the
    wallets are locked, in the same round trip on PostgreSQL."""
    repository = WalletRepository(session, organization_id)
    wallets, accounts, grants, read = await repository.lock_and_load_reading(keys, reads)
    if not wallets:
        return {}, read
    keyed = [(w.customer_id, w.asset_code) for w in wallets]
    opened: dict[tuple[str, str], OpenWallet] = {}
    for wallet, key in zip(wallets, keyed, strict=True):
        one = OpenWallet(wallet=wallet, state=_state_of(wallet, accounts, grants[key]), now=now)
        if wallet.sweep_due_at is not None and wallet.sweep_due_at <= now:
            await _sweep(session, one)
        opened[key] = one
    return opened, read


async def open_wallet(
    session: AsyncSession,
    now: datetime,
    organization_id: str,
    customer_id: str,
    asset_code: str,
    *,
    create: bool,
) -> OpenWallet | None:
    key = (customer_id, asset_code)
    opened = await open_wallets(session, now, organization_id, [key])
    if key not in opened and create:
        await LedgerRepository(session, organization_id).ensure_system_accounts(asset_code, now)
        await WalletRepository(session, organization_id).insert_if_absent(
            customer_id, asset_code, now
        )
        opened = await open_wallets(session, now, organization_id, [key])
        assert key in opened
    return opened.get(key)


async def _sweep(session: AsyncSession, opened: OpenWallet) -> None:
    """Expire due holds (oldest first), then lapsed grants."""
    wallet, state, now = opened.wallet, opened.state, opened.now
    holds = AuthorizationRepository(session, wallet.organization_id)
    due = await holds.due(wallet.customer_id, wallet.asset_code, now)
    splits = await holds.splits_of([a.id for a in due])
    for authorization in due:
        settlement = state.settle(authorization.id, splits[authorization.id], 0, "hold_expiry", now)
        await holds.resolve(authorization, "expired", 0, settlement.released_minor, now)
        opened.expired_holds.append(authorization)
    state.expire_grants(now)
    await WalletRepository(session, wallet.organization_id).set_grant_status(
        state.expired_grant_ids, "expired", now
    )
    state.expired_grant_ids.clear()
    wallet.sweep_due_at = state.next_expiry(
        [e for e in [await holds.next_open_expiry(wallet.customer_id, wallet.asset_code)] if e]
    )


async def close_wallet(session: AsyncSession, clock: Clock, opened: OpenWallet) -> None:
    await close_wallets(session, clock, [opened])


async def close_wallets(
    session: AsyncSession,
    clock: Clock,
    opened_wallets: Sequence[OpenWallet],
    then: Sequence[Statement] = (),
) -> None:
    """Write every open wallet's entries and counter moves in one set of
    statements, then their expiry marks and webhooks. `then`: PostgreSQL
    statements of the caller's to run right after the ledger's, in the same
    round trip."""
    if not opened_wallets:
        if then:
            await run_together(session, then)
        return
    organization_id = opened_wallets[0].wallet.organization_id
    assert all(o.wallet.organization_id == organization_id for o in opened_wallets)
    await LedgerRepository(session, organization_id).write(
        [entry for o in opened_wallets for entry in o.state.book.entries],
        [account for o in opened_wallets for account in o.state.book.changed()],
        then,
    )
    for opened in opened_wallets:
        wallet, state = opened.wallet, opened.state
        state.book.entries.clear()
        if opened.new_expiries:
            earliest = min(opened.new_expiries)
            if wallet.sweep_due_at is None or earliest < wallet.sweep_due_at:
                wallet.sweep_due_at = earliest
            opened.new_expiries.clear()
        await _check_low_balance(session, clock, opened)
        if opened.shortfall_minor > 0:
            asset = await get_asset(session, wallet.organization_id, wallet.asset_code)
            await webhooks.emit(
                session,
                clock,
                wallet.organization_id,
                topics.WALLET_OVERDRAWN,
                {
                    "customer_id": wallet.customer_id,
                    "asset": wallet.asset_code,
                    "shortfall": format_amount(asset, opened.shortfall_minor),
                    "debt": format_amount(asset, state.debt_minor()),
                },
            )
            opened.shortfall_minor = 0
    await session.flush()


async def charge_usage(
    session: AsyncSession,
    opened: OpenWallet,
    reference_id: str | None,
    amount_minor: int,
    kind: str,
    **details: object,
) -> Charge:
    """Debit usage that already happened. What the balances cannot cover
    becomes debt on the wallet's debt account, opened on first need."""
    state = opened.state
    if state.debt is None and state.available_minor(opened.now) < amount_minor:
        account = await LedgerRepository(session, state.organization_id).add_tracked_account(
            account_id=new_id("acd"),
            owner_id=state.customer_id,
            asset_code=state.asset_code,
            role="debt",
            grant_id="",
            floor_minor=-limits.wallet_debt_minor_max,
            now=opened.now,
        )
        state.attach_debt(account)
        opened.wallet.debt_account_id = account.id
    charge = state.charge(reference_id, amount_minor, opened.now, kind, **details)
    opened.shortfall_minor += charge.shortfall_minor
    return charge


async def _check_low_balance(session: AsyncSession, clock: Clock, opened: OpenWallet) -> None:
    wallet, state = opened.wallet, opened.state
    threshold = wallet.low_balance_threshold_minor
    if threshold is None:
        return
    available = state.available_minor(opened.now)
    crossed = (wallet.low_balance_state == "ok" and available < threshold) or (
        wallet.low_balance_state == "low" and available >= threshold
    )
    if not crossed:
        return
    wallet.low_balance_state = "low" if available < threshold else "ok"
    asset = await get_asset(session, wallet.organization_id, wallet.asset_code)
    await webhooks.emit(
        session,
        clock,
        wallet.organization_id,
        topics.WALLET_BALANCE_LOW
        if wallet.low_balance_state == "low"
        else topics.WALLET_BALANCE_RECOVERED,
        {
            "customer_id": wallet.customer_id,
            "asset": wallet.asset_code,
            "available": format_amount(asset, available),
            "threshold": format_amount(asset, threshold),
        },
    )


# Operations behind the wallet endpoints. Each opens the wallet under its lock
# and closes it in the caller's transaction; the boundary commits.


@dataclass(frozen=True, slots=True)
class BalanceView:
    wallet: Wallet
    asset: AssetInfo
    available_minor: int
    held_minor: int
    posted_minor: int
    debt_minor: int
    grants: list[tuple[Grant, AccountState]]


async def create_grant(
    session: AsyncSession,
    clock: Clock,
    principal: Principal,
    customer_ref: str,
    *,
    asset_code: str,
    amount: str | None,
    paid_asset_code: str | None,
    paid_amount: str | None,
    purpose: str,
    priority: int,
    effective_at: datetime | None,
    expires_at: datetime | None,
) -> tuple[Grant, AccountState]:
    organization_id = principal.organization_id
    now = clock.now()
    customer = await resolve_customer(session, organization_id, customer_ref, field="customer_id")
    asset = await get_asset(session, organization_id, asset_code, field="asset")
    effective = effective_at or now
    if expires_at is not None and expires_at <= max(effective, now):
        raise InvalidRequest(
            "expires_at must be after effective_at and in the future.",
            code="invalid_expires_at",
            field="expires_at",
        )
    details: dict[str, object] = {"purpose": purpose}
    paid: tuple[str, int] | None = None
    if paid_asset_code is not None or paid_amount is not None:
        if amount is not None or paid_asset_code is None or paid_amount is None:
            raise InvalidRequest(
                "Give either `amount`, or `paid` with its asset and amount, not both.",
                code="invalid_grant_funding",
                field="paid",
            )
        paid_asset = await get_asset(session, organization_id, paid_asset_code, field="paid.asset")
        paid_minor = parse_amount(paid_asset, paid_amount, field="paid.amount")
        if paid_asset.code == asset.code:
            amount_minor = paid_minor
        else:
            rate = await rate_at(session, organization_id, asset.code, paid_asset.code, now)
            amount_minor = convert_base_to_asset(rate.rate, paid_asset, paid_minor, asset)
            paid = (paid_asset.code, paid_minor)
            details |= {
                "paid_asset": paid_asset.code,
                "paid_minor": paid_minor,
                "rate": str(rate.rate),
                "rate_id": rate.rate_id,
            }
            await LedgerRepository(session, organization_id).ensure_system_accounts(
                paid_asset.code, now
            )
        if amount_minor <= 0:
            raise InvalidRequest(
                "That payment buys nothing at the current rate.",
                code="invalid_amount",
                field="paid.amount",
            )
    elif amount is None:
        raise InvalidRequest("Give the grant's `amount`.", code="invalid_amount", field="amount")
    else:
        amount_minor = parse_amount(asset, amount, field="amount")
    return await issue_grant(
        session,
        clock,
        organization_id,
        customer.id,
        asset.code,
        amount_minor,
        purpose=purpose,
        priority=priority,
        effective_at=effective,
        expires_at=expires_at,
        paid=paid,
        details=details,
    )


async def issue_grant(
    session: AsyncSession,
    clock: Clock,
    organization_id: str,
    customer_id: str,
    asset_code: str,
    amount_minor: int,
    *,
    purpose: str,
    priority: int,
    effective_at: datetime,
    expires_at: datetime | None,
    paid: tuple[str, int] | None = None,
    details: dict[str, object] | None = None,
) -> tuple[Grant, AccountState]:
    """Fund a grant for a customer known by id, input already validated (the
    endpoint above, and the periodic credits of subscriptions)."""
    now = clock.now()
    details = details or {"purpose": purpose}
    opened = await open_wallet(session, now, organization_id, customer_id, asset_code, create=True)
    assert opened is not None
    grant_id = new_id("grt")
    account = await LedgerRepository(session, organization_id).add_tracked_account(
        account_id=new_id("acg"),
        owner_id=customer_id,
        asset_code=asset_code,
        role="grant",
        grant_id=grant_id,
        floor_minor=0,
        now=now,
    )
    grant = Grant(
        id=grant_id,
        organization_id=organization_id,
        customer_id=customer_id,
        asset_code=asset_code,
        account_id=account.id,
        purpose=purpose,
        priority=priority,
        amount_minor=amount_minor,
        effective_at=effective_at,
        expires_at=expires_at,
        status="active",
        expired_at=None,
        details=details,
        created_at=now,
    )
    await WalletRepository(session, organization_id).add(grant)
    opened.state.fund_grant(
        GrantState(
            id=grant.id,
            account=account,
            purpose=purpose,
            priority=priority,
            effective_at=effective_at,
            expires_at=expires_at,
            created_at=now,
            status="active",
        ),
        amount_minor,
        now,
        paid=paid,
        **details,
    )
    if purpose == "paid":
        opened.state.repay_debt(account, amount_minor, now, grant_id)
    if expires_at is not None:
        opened.new_expiries.append(expires_at)
    await close_wallet(session, clock, opened)
    return grant, account


async def adjust(
    session: AsyncSession,
    clock: Clock,
    principal: Principal,
    customer_ref: str,
    *,
    asset_code: str,
    amount: str,
    reason: str,
    description: str | None,
) -> Adjustment:
    organization_id = principal.organization_id
    customer = await resolve_customer(session, organization_id, customer_ref, field="customer_id")
    asset = await get_asset(session, organization_id, asset_code, field="asset")
    amount_minor = parse_amount(asset, amount, field="amount", allow_negative=True)
    return await adjust_customer(
        session,
        clock,
        organization_id,
        customer.id,
        asset.code,
        amount_minor,
        reason=reason,
        description=description,
    )


async def adjust_customer(
    session: AsyncSession,
    clock: Clock,
    organization_id: str,
    customer_id: str,
    asset_code: str,
    amount_minor: int,
    *,
    reason: str,
    description: str | None,
) -> Adjustment:
    """A signed change of a customer's main balance, by ids (the endpoint
    above, and refunds of credit notes)."""
    now = clock.now()
    opened = await open_wallet(
        session, now, organization_id, customer_id, asset_code, create=amount_minor > 0
    )
    adjustment_id = new_id("adj")
    entry = (
        None if opened is None else opened.state.adjust(adjustment_id, amount_minor, now, reason)
    )
    if opened is None or entry is None:
        raise InvalidRequest(
            "The main balance cannot cover this debit within its credit limit.",
            code="insufficient_funds",
            field="amount",
            status=422,
        )
    if amount_minor > 0:
        opened.state.repay_debt(opened.state.main, amount_minor, now, adjustment_id)
    await close_wallet(session, clock, opened)
    adjustment = Adjustment(
        id=adjustment_id,
        organization_id=organization_id,
        customer_id=customer_id,
        asset_code=asset_code,
        amount_minor=amount_minor,
        reason=reason,
        description=description,
        entry_id=entry.id,
        created_at=now,
    )
    await WalletRepository(session, organization_id).add(adjustment)
    return adjustment


async def configure_balance(
    session: AsyncSession,
    clock: Clock,
    principal: Principal,
    customer_ref: str,
    asset_code: str,
    *,
    credit_limit: str | None,
    low_balance_threshold: str | None,
    clear_threshold: bool,
) -> BalanceView:
    organization_id = principal.organization_id
    now = clock.now()
    customer = await resolve_customer(session, organization_id, customer_ref, field="customer_id")
    asset = await get_asset(session, organization_id, asset_code, field="asset")
    opened = await open_wallet(session, now, organization_id, customer.id, asset.code, create=True)
    assert opened is not None
    if credit_limit is not None:
        limit_minor = parse_amount(asset, credit_limit, field="credit_limit", allow_zero=True)
        main = opened.state.main
        if main.posted_minor - main.debits_pending_minor < -limit_minor:
            raise InvalidRequest(
                "The main balance already uses more credit than that limit.",
                code="credit_limit_below_usage",
                field="credit_limit",
            )
        main.floor_minor = -limit_minor
        opened.wallet.credit_limit_minor = limit_minor
        await LedgerRepository(session, organization_id).set_floor(main.id, -limit_minor)
    if clear_threshold:
        opened.wallet.low_balance_threshold_minor = None
        opened.wallet.low_balance_state = "ok"
    elif low_balance_threshold is not None:
        opened.wallet.low_balance_threshold_minor = parse_amount(
            asset, low_balance_threshold, field="low_balance_threshold", allow_zero=True
        )
    await close_wallet(session, clock, opened)
    return await _view(session, opened, asset)


async def _view(session: AsyncSession, opened: OpenWallet, asset: AssetInfo) -> BalanceView:
    wallet, state = opened.wallet, opened.state
    # Live grants only: active ones and lapsed ones still holding money. The
    # in-memory accounts are the ones this transaction may just have moved.
    rows = await WalletRepository(session, wallet.organization_id).live_grants(
        wallet.customer_id, wallet.asset_code
    )
    live = {grant_id: g.account for grant_id, g in state.grants.items()}
    grants = [(grant, live.get(grant.id) or state_of(account)) for grant, account in rows]
    grants.sort(key=lambda pair: (pair[0].created_at, pair[0].id))
    return BalanceView(
        wallet=wallet,
        asset=asset,
        available_minor=state.available_minor(opened.now),
        held_minor=state.held_minor(),
        posted_minor=state.posted_minor(),
        debt_minor=state.debt_minor(),
        grants=grants,
    )


async def wallet_view(
    session: AsyncSession, clock: Clock, principal: Principal, customer_ref: str
) -> tuple[str, list[BalanceView]]:
    """Every balance of the customer, after applying any due expiry."""
    organization_id = principal.organization_id
    now = clock.now()
    customer = await resolve_customer(session, organization_id, customer_ref, field="customer_id")
    views = []
    for wallet in await WalletRepository(session, organization_id).wallets_of(customer.id):
        opened = await open_wallet(
            session, now, organization_id, customer.id, wallet.asset_code, create=False
        )
        assert opened is not None
        await close_wallet(session, clock, opened)
        asset = await get_asset(session, organization_id, wallet.asset_code)
        views.append(await _view(session, opened, asset))
    return customer.id, views


async def sweep_due_wallets(sessions: async_sessionmaker[AsyncSession], clock: Clock) -> int:
    """Expire due holds and grants of every wallet that has some; one transaction each."""
    async with sessions() as session:
        due = await WalletRepository.due(session, clock.now(), limits.wallet_sweep_batch_max)
    for organization_id, customer_id, asset_code in due:
        async with sessions() as session:
            opened = await open_wallet(
                session, clock.now(), organization_id, customer_id, asset_code, create=False
            )
            if opened is not None:
                await close_wallet(session, clock, opened)
            await session.commit()
    return len(due)
