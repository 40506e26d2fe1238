from __future__ import annotations

import hashlib
from collections.abc import Sequence
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql import Select

from billfold.db.arrays import text_array
from billfold.db.engine import dialect_of, upsert_insert
from billfold.ledger.models import LedgerAccount
from billfold.wallets.models import Adjustment, Grant, Wallet


def main_account_id(organization_id: str, customer_id: str, asset_code: str) -> str:
    digest = hashlib.sha256(f"{organization_id}|{customer_id}|{asset_code}".encode()).hexdigest()[
        :28
    ]
    return f"acw_{digest}"


def _is_live(account: type[LedgerAccount] = LedgerAccount) -> sa.ColumnElement[bool]:
    """A grant that can still be drawn on, or still backs a hold (`account`: its account)."""
    return sa.or_(Grant.status == "active", account.debits_pending_minor > 0)


def _live_grants() -> Select[Grant, LedgerAccount]:
    """Grants that can still be drawn on, or still back a hold, with their accounts."""
    return (
        sa.select(Grant, LedgerAccount)
        .join(LedgerAccount, LedgerAccount.id == Grant.account_id)
        .where(_is_live())
    )


# PostgreSQL: the many-wallet reads, built once (see `text_array`) and run
# with the organization and the distinct customers, assets or ids.
def _pg_lock_wallets() -> Select[Wallet]:
    customers, assets = text_array("customers"), text_array("assets")
    return (
        sa.select(Wallet)
        .join(customers, customers.c.value == Wallet.customer_id)
        .join(assets, assets.c.value == Wallet.asset_code)
        .where(Wallet.organization_id == sa.bindparam("organization_id"))
        .order_by(Wallet.customer_id, Wallet.asset_code)
        .execution_options(populate_existing=True)
        .with_for_update(of=Wallet)
    )


def _pg_wallet_contents() -> Select[str, str, LedgerAccount, LedgerAccount, Grant, LedgerAccount]:
    """Of wallets already locked: each one's main and debt accounts and its
    live grants with theirs, one row per live grant (one with no grant when
    it has none)."""
    customers, assets = text_array("customers"), text_array("assets")
    main = sa.orm.aliased(LedgerAccount, name="main_account")
    debt = sa.orm.aliased(LedgerAccount, name="debt_account")
    held = sa.orm.aliased(LedgerAccount, name="grant_account")
    return (
        sa.select(Wallet.customer_id, Wallet.asset_code, main, debt, Grant, held)
        .join(customers, customers.c.value == Wallet.customer_id)
        .join(assets, assets.c.value == Wallet.asset_code)
        .join(main, main.id == Wallet.main_account_id)
        .outerjoin(debt, debt.id == Wallet.debt_account_id)
        .outerjoin(
            sa.join(Grant, held, held.id == Grant.account_id),
            sa.and_(
                Grant.organization_id == Wallet.organization_id,
                Grant.customer_id == Wallet.customer_id,
                Grant.asset_code == Wallet.asset_code,
                _is_live(held),
            ),
        )
        .where(Wallet.organization_id == sa.bindparam("organization_id"))
        .execution_options(populate_existing=True)
    )


_PG_LOCK_WALLETS = _pg_lock_wallets()
_PG_WALLET_CONTENTS = _pg_wallet_contents()


class WalletRepository:
    def __init__(self, session: AsyncSession, organization_id: str) -> None:
        self.session = session
        self.organization_id = organization_id

    def _postgresql(self) -> bool:
        return dialect_of(self.session) == "postgresql"

    async def lock(self, customer_id: str, asset_code: str) -> Wallet | None:
        """The wallet row, locked for this transaction (SQLite's `BEGIN IMMEDIATE`
        already holds the database's one write lock)."""
        query = (
            sa.select(Wallet)
            .where(
                Wallet.organization_id == self.organization_id,
                Wallet.customer_id == customer_id,
                Wallet.asset_code == asset_code,
            )
            .execution_options(populate_existing=True)
        )
        if dialect_of(self.session) == "postgresql":
            query = query.with_for_update()
        return await self.session.scalar(query)

    async def lock_many(self, keys: Sequence[tuple[str, str]]) -> list[Wallet]:
        """Several wallets (customer, asset) locked with one statement, in
        (customer, asset) order: every path that locks more than one wallet
        takes them in this order, so no two transactions wait in a cycle."""
        if not keys:
            return []
        wanted = set(keys)
        customers = sorted({customer for customer, _ in keys})
        assets = sorted({asset for _, asset in keys})
        if self._postgresql():
            found = await self.session.scalars(
                _PG_LOCK_WALLETS,
                {"organization_id": self.organization_id, "customers": customers, "assets": assets},
            )
        else:
            found = await self.session.scalars(
                sa.select(Wallet)
                .where(
                    Wallet.organization_id == self.organization_id,
                    Wallet.customer_id.in_(customers),
                    Wallet.asset_code.in_(assets),
                )
                .order_by(Wallet.customer_id, Wallet.asset_code)
                .execution_options(populate_existing=True)
            )
        # The customer and asset lists may name a few pairs nobody asked for;
        # they are locked too (harmless, same order) and dropped here.
        return [w for w in found if (w.customer_id, w.asset_code) in wanted]

    async def lock_and_load_many(
        self, keys: Sequence[tuple[str, str]]
    ) -> tuple[
        list[Wallet],
        dict[str, LedgerAccount],
        dict[tuple[str, str], list[tuple[Grant, LedgerAccount]]],
    ]:
        """`lock_many`, then their main and debt accounts and their live
        grants (see `live_grants`): on PostgreSQL the last two with one statement.
        Not the lock with them: a statement that waited for a row lock reads
        the locked rows as they are now, but what it joins to them as they
        were when it began, before the transaction it waited for committed."""
        wallets = await self.lock_many(keys)
        if not self._postgresql() or not wallets:
            accounts = await self._accounts(
                [w.main_account_id for w in wallets]
                + [w.debt_account_id for w in wallets if w.debt_account_id is not None]
            )
            grants = await self._live_grants_many([(w.customer_id, w.asset_code) for w in wallets])
            return wallets, accounts, grants
        rows = await self.session.execute(
            _PG_WALLET_CONTENTS,
            {
                "organization_id": self.organization_id,
                "customers": sorted({w.customer_id for w in wallets}),
                "assets": sorted({w.asset_code for w in wallets}),
            },
        )
        found_accounts: dict[str, LedgerAccount] = {}
        found_grants: dict[tuple[str, str], list[tuple[Grant, LedgerAccount]]] = {
            (w.customer_id, w.asset_code): [] for w in wallets
        }
        for customer_id, asset_code, main, debt, grant, held in rows:
            of_wallet = found_grants.get((customer_id, asset_code))
            if of_wallet is None:
                continue  # a pair nobody asked for (see `lock_many`)
            found_accounts[main.id] = main
            if debt is not None:
                found_accounts[debt.id] = debt
            if grant is not None:
                of_wallet.append((grant, held))
        return wallets, found_accounts, found_grants

    async def _accounts(self, account_ids: Sequence[str]) -> dict[str, LedgerAccount]:
        if not account_ids:
            return {}
        rows = await self.session.scalars(
            sa.select(LedgerAccount)
            .where(
                LedgerAccount.organization_id == self.organization_id,
                LedgerAccount.id.in_(sorted(set(account_ids))),
            )
            .execution_options(populate_existing=True)
        )
        return {row.id: row for row in rows}

    async def _live_grants_many(
        self, keys: Sequence[tuple[str, str]]
    ) -> dict[tuple[str, str], list[tuple[Grant, LedgerAccount]]]:
        """`live_grants` of several wallets in one query."""
        found: dict[tuple[str, str], list[tuple[Grant, LedgerAccount]]] = {k: [] for k in keys}
        if not keys:
            return found
        rows = await self.session.execute(
            _live_grants()
            .where(
                Grant.organization_id == self.organization_id,
                Grant.customer_id.in_(sorted({customer for customer, _ in keys})),
                Grant.asset_code.in_(sorted({asset for _, asset in keys})),
            )
            .execution_options(populate_existing=True)
        )
        for grant, account in rows:
            key = (grant.customer_id, grant.asset_code)
            if key in found:
                found[key].append((grant, account))
        return found

    async def insert_if_absent(self, customer_id: str, asset_code: str, now: datetime) -> None:
        account_id = main_account_id(self.organization_id, customer_id, asset_code)
        await self.session.execute(
            upsert_insert(self.session, LedgerAccount)
            .values(
                id=account_id,
                organization_id=self.organization_id,
                owner_id=customer_id,
                asset_code=asset_code,
                role="main",
                grant_id="",
                tracked=True,
                floor_minor=0,
                debits_posted_minor=0,
                credits_posted_minor=0,
                debits_pending_minor=0,
                credits_pending_minor=0,
                created_at=now,
            )
            .on_conflict_do_nothing(index_elements=["id"])
        )
        await self.session.execute(
            upsert_insert(self.session, Wallet)
            .values(
                organization_id=self.organization_id,
                customer_id=customer_id,
                asset_code=asset_code,
                main_account_id=account_id,
                credit_limit_minor=0,
                low_balance_threshold_minor=None,
                low_balance_state="ok",
                sweep_due_at=None,
                created_at=now,
            )
            .on_conflict_do_nothing(index_elements=["organization_id", "customer_id", "asset_code"])
        )

    async def live_grants(
        self, customer_id: str, asset_code: str
    ) -> list[tuple[Grant, LedgerAccount]]:
        """Grants that can still move: active ones, and lapsed ones with money still held."""
        rows = await self.session.execute(
            _live_grants()
            .where(
                Grant.organization_id == self.organization_id,
                Grant.customer_id == customer_id,
                Grant.asset_code == asset_code,
            )
            .execution_options(populate_existing=True)
        )
        return [(grant, account) for grant, account in rows]

    async def main_account(self, account_id: str) -> LedgerAccount:
        account = await self.session.scalar(
            sa.select(LedgerAccount)
            .where(
                LedgerAccount.organization_id == self.organization_id,
                LedgerAccount.id == account_id,
            )
            .execution_options(populate_existing=True)
        )
        assert account is not None, "every wallet has a main account"
        return account

    async def wallets_of(self, customer_id: str) -> list[Wallet]:
        return list(
            await self.session.scalars(
                sa.select(Wallet)
                .where(
                    Wallet.organization_id == self.organization_id,
                    Wallet.customer_id == customer_id,
                )
                .order_by(Wallet.asset_code)
            )
        )

    async def add(self, *rows: Grant | Adjustment) -> None:
        self.session.add_all(rows)
        await self.session.flush()

    async def set_grant_status(self, grant_ids: list[str], status: str, now: datetime) -> None:
        if grant_ids:
            await self.session.execute(
                sa.update(Grant)
                .where(Grant.organization_id == self.organization_id, Grant.id.in_(grant_ids))
                .values(status=status, expired_at=now)
            )

    @staticmethod
    async def due(session: AsyncSession, now: datetime, limit: int) -> list[tuple[str, str, str]]:
        """Wallets with a hold or grant to expire, across organizations (for the sweeper)."""
        rows = await session.execute(
            sa.select(Wallet.organization_id, Wallet.customer_id, Wallet.asset_code)
            .where(Wallet.sweep_due_at <= now)
            .order_by(Wallet.sweep_due_at)
            .limit(limit)
        )
        return [(o, c, a) for o, c, a in rows]
