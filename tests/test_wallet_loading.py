"""Opening wallets: the lock and the read of their accounts and grants
(`WalletRepository.lock_and_load_reading`), which PostgreSQL runs as two
statements sent together, as rows rather than ORM objects, with the
caller's own reads after them."""

from __future__ import annotations

from datetime import UTC, timedelta

import pytest
import sqlalchemy as sa

from billfold.api.context import AppContext
from billfold.clock import FrozenClock
from billfold.db.pipeline import Statement
from billfold.wallets.models import Wallet
from billfold.wallets.repository import WalletRepository
from tests.conftest import Tenant
from tests.wallet_support import WalletDriver


async def test_states_and_wallet_objects_are_as_the_database_holds_them(
    client, ctx: AppContext, tenant: Tenant, clock: FrozenClock
) -> None:
    wallet = await WalletDriver.create(client)
    await wallet.grant("5.00", priority=1, expires_at=(clock.now() + timedelta(days=3)).isoformat())
    await wallet.grant("2.50")
    hold = await wallet.authorize("1.25")
    assert hold["status"] == "authorized"
    other = await WalletDriver.create(client, "other")
    await other.grant("1.00")
    await other.grant("1.00", asset="EUR")
    key = (wallet.customer_id, "USD")
    async with ctx.sessions() as session:
        repository = WalletRepository(session, tenant.organization_id)
        # Asked: acme's USD and EUR (which has no wallet) and other's USD.
        # The customers and assets asked also make (other, EUR), a wallet
        # nobody asked for: it is left out, as is the missing one.
        count = Statement(
            sa.text("SELECT count(*) FROM grants WHERE organization_id = :o"),
            {"o": tenant.organization_id},
        )
        wallets, accounts, grants, read = await repository.lock_and_load_reading(
            [key, (other.customer_id, "USD"), (wallet.customer_id, "EUR")], [count]
        )
        assert read == [[(4,)]]  # the caller's read, after the lock
        # In lock order: (customer, asset), as every path takes them.
        assert [(w.customer_id, w.asset_code) for w in wallets] == sorted(
            [key, (other.customer_id, "USD")]
        )
        assert set(grants) == {key, (other.customer_id, "USD")}
        mine = next(w for w in wallets if w.customer_id == wallet.customer_id)
        assert mine in session  # tracked: a change to it is written at flush
        assert mine.created_at.tzinfo == UTC
        main = accounts[mine.main_account_id]
        assert (main.debits_pending_minor, main.credits_posted_minor) == (0, 0)
        # Priority 0 is consumed first: the hold sits on the 2.50 grant.
        first, second = sorted(grants[key], key=lambda g: g.priority)
        assert (first.priority, first.expires_at) == (0, None)
        assert first.account.debits_pending_minor == 1_250_000_000
        assert first.account.available_minor == 1_250_000_000
        assert (second.priority, second.expires_at) == (1, clock.now() + timedelta(days=3))
        assert second.account.available_minor == 5_000_000_000
        assert second.account.debits_pending_minor == 0
        for grant in (first, second):
            assert grant.status == "active"
            assert grant.created_at.tzinfo == UTC
            assert grant.effective_at.tzinfo == UTC
        mine.low_balance_state = "low"
        # No wallet to lock: the reads run all the same.
        assert (await repository.lock_and_load_reading([], [count]))[3] == [[(4,)]]
        await session.commit()
    async with ctx.sessions() as session:
        stored = await session.get(Wallet, (tenant.organization_id, wallet.customer_id, "USD"))
        assert stored is not None
        assert stored.low_balance_state == "low"


async def test_a_wallet_the_session_already_holds_is_refreshed_not_duplicated(
    client, ctx: AppContext, tenant: Tenant, backend: str
) -> None:
    if backend != "postgresql":
        pytest.skip("SQLite has one connection, and reads wallets through the ORM")
    wallet = await WalletDriver.create(client)
    await wallet.grant("1.00")
    identity = (tenant.organization_id, wallet.customer_id, "USD")
    async with ctx.sessions() as session:
        loaded = await session.get(Wallet, identity)
        assert loaded is not None
        # Changed by another transaction after this session read it.
        async with ctx.sessions() as elsewhere:
            await elsewhere.execute(
                sa.update(Wallet)
                .where(Wallet.customer_id == wallet.customer_id)
                .values(credit_limit_minor=7)
            )
            await elsewhere.commit()
        assert loaded.credit_limit_minor == 0
        wallets, _, _, _ = await WalletRepository(
            session, tenant.organization_id
        ).lock_and_load_reading([(wallet.customer_id, "USD")], ())
        assert wallets == [loaded]
        assert loaded.credit_limit_minor == 7  # as locked, not as first read
        await session.commit()
