from __future__ import annotations

import hashlib
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, cast

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session, make_transient_to_detached
from sqlalchemy.orm.attributes import set_committed_value
from sqlalchemy.sql import Select

from billfold.db.arrays import text_array
from billfold.db.engine import dialect_of, upsert_insert
from billfold.db.pipeline import Statement, run_together
from billfold.ledger.book import AccountState
from billfold.ledger.models import LedgerAccount
from billfold.ledger.repository import state_of
from billfold.wallets.models import Adjustment, Grant, Wallet
from billfold.wallets.state import GrantState


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
# with the organization and the distinct customers and assets, both in one
# round trip (`billfold.db.pipeline`): their rows, not ORM objects.
_WALLETS = cast(sa.Table, Wallet.__table__)
_ACCOUNTS = cast(sa.Table, LedgerAccount.__table__)
_GRANTS = cast(sa.Table, Grant.__table__)
#: What a wallet's state needs of an account, and of a grant.
_ACCOUNT_COLUMNS = (
    "id",
    "asset_code",
    "floor_minor",
    "debits_posted_minor",
    "credits_posted_minor",
    "debits_pending_minor",
    "credits_pending_minor",
)
_GRANT_COLUMNS = ("id", "purpose", "priority", "effective_at", "expires_at", "created_at", "status")


def _pg_lock_wallets() -> sa.Select[Any]:
    customers, assets = text_array("customers"), text_array("assets")
    return (
        sa.select(*_WALLETS.c)
        .join(customers, customers.c.value == _WALLETS.c.customer_id)
        .join(assets, assets.c.value == _WALLETS.c.asset_code)
        .where(_WALLETS.c.organization_id == sa.bindparam("organization_id"))
        .order_by(_WALLETS.c.customer_id, _WALLETS.c.asset_code)
        .with_for_update(of=_WALLETS)
    )


def _pg_wallet_contents() -> sa.Select[Any]:
    """Of wallets already locked: each one's main and debt accounts and its
    live grants with theirs, one row per live grant (one with no grant when
    it has none)."""
    customers, assets = text_array("customers"), text_array("assets")
    main = _ACCOUNTS.alias("main_account")
    debt = _ACCOUNTS.alias("debt_account")
    held = _ACCOUNTS.alias("grant_account")
    return (
        sa.select(
            _WALLETS.c.customer_id,
            _WALLETS.c.asset_code,
            *(main.c[name] for name in _ACCOUNT_COLUMNS),
            *(debt.c[name] for name in _ACCOUNT_COLUMNS),
            *(_GRANTS.c[name] for name in _GRANT_COLUMNS),
            *(held.c[name] for name in _ACCOUNT_COLUMNS),
        )
        .join(customers, customers.c.value == _WALLETS.c.customer_id)
        .join(assets, assets.c.value == _WALLETS.c.asset_code)
        .join(main, main.c.id == _WALLETS.c.main_account_id)
        .outerjoin(debt, debt.c.id == _WALLETS.c.debt_account_id)
        .outerjoin(
            sa.join(_GRANTS, held, held.c.id == _GRANTS.c.account_id),
            sa.and_(
                _GRANTS.c.organization_id == _WALLETS.c.organization_id,
                _GRANTS.c.customer_id == _WALLETS.c.customer_id,
                _GRANTS.c.asset_code == _WALLETS.c.asset_code,
                # As `_is_live`, with its constants in the text: the pipeline
                # binds only the parameters it is given.
                sa.or_(
                    _GRANTS.c.status == sa.literal_column("'active'"),
                    held.c.debits_pending_minor > sa.literal_column("0"),
                ),
            ),
        )
        .where(_WALLETS.c.organization_id == sa.bindparam("organization_id"))
    )


_PG_LOCK_WALLETS = _pg_lock_wallets()
_PG_WALLET_CONTENTS = _pg_wallet_contents()


def _utc(value: datetime | None) -> datetime | None:
    """As the `UTCDateTime` column type reads it (these rows skip the ORM)."""
    return None if value is None else value.astimezone(UTC)


def _account_of(row: Sequence[Any]) -> AccountState:
    counters = (row[3], row[4], row[5], row[6])
    return AccountState(
        id=row[0],
        asset_code=row[1],
        floor_minor=row[2],
        debits_posted_minor=counters[0],
        credits_posted_minor=counters[1],
        debits_pending_minor=counters[2],
        credits_pending_minor=counters[3],
        loaded=counters,
    )


def _grant_state(grant: Grant, account: LedgerAccount) -> GrantState:
    return GrantState(
        id=grant.id,
        account=state_of(account),
        purpose=grant.purpose,
        priority=grant.priority,
        effective_at=grant.effective_at,
        expires_at=grant.expires_at,
        created_at=grant.created_at,
        status=grant.status,
    )


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

    async def _sqlite_wallets(self, keys: Sequence[tuple[str, str]]) -> list[Wallet]:
        """SQLite's `lock_and_load_reading` wallets: its `BEGIN IMMEDIATE`
        already holds the database's one write lock."""
        wanted = set(keys)
        found = await self.session.scalars(
            sa.select(Wallet)
            .where(
                Wallet.organization_id == self.organization_id,
                Wallet.customer_id.in_(sorted({customer for customer, _ in keys})),
                Wallet.asset_code.in_(sorted({asset for _, asset in keys})),
            )
            .order_by(Wallet.customer_id, Wallet.asset_code)
            .execution_options(populate_existing=True)
        )
        return [w for w in found if (w.customer_id, w.asset_code) in wanted]

    async def lock_and_load_reading(
        self, keys: Sequence[tuple[str, str]], reads: Sequence[Statement]
    ) -> tuple[
        list[Wallet],
        dict[str, AccountState],
        dict[tuple[str, str], list[GrantState]],
        list[list[tuple[Any, ...]]],
    ]:
        """Several wallets (customer, asset) locked, in (customer, asset)
        order: every path that locks more than one wallet takes them in this
        order, so no two transactions wait in a cycle. With their main and
        debt accounts and their live grants (see `live_grants`), as states.

        On PostgreSQL the lock and the read are two statements sent together:
        not one statement, since one that waited for a row lock reads the
        locked rows as they are now but what it joins to them as they were
        when it began, before the transaction it waited for committed; the
        second begins once the first has its locks. `reads` (statements
        that return rows) go with them, after; their rows come last.
        """
        if not keys:
            return [], {}, {}, await run_together(self.session, reads) if reads else []
        if not self._postgresql():
            wallets = await self._sqlite_wallets(keys)
            accounts = await self._accounts(
                [w.main_account_id for w in wallets]
                + [w.debt_account_id for w in wallets if w.debt_account_id is not None]
            )
            grants = await self._live_grants_many([(w.customer_id, w.asset_code) for w in wallets])
            return (
                wallets,
                {account_id: state_of(account) for account_id, account in accounts.items()},
                {
                    key: [_grant_state(grant, account) for grant, account in pairs]
                    for key, pairs in grants.items()
                },
                await run_together(self.session, reads) if reads else [],
            )
        arrays = {
            "organization_id": self.organization_id,
            "customers": sorted({customer for customer, _ in keys}),
            "assets": sorted({asset for _, asset in keys}),
        }
        locked, contents, *read = await run_together(
            self.session,
            [Statement(_PG_LOCK_WALLETS, arrays), Statement(_PG_WALLET_CONTENTS, arrays), *reads],
        )
        wanted = set(keys)
        # The customer and asset lists may name a few pairs nobody asked for;
        # they are locked too (harmless, same order) and dropped here.
        wallets = [self._attached(row) for row in locked if (row[1], row[2]) in wanted]
        found_accounts: dict[str, AccountState] = {}
        found_grants: dict[tuple[str, str], list[GrantState]] = {
            (w.customer_id, w.asset_code): [] for w in wallets
        }
        width = len(_ACCOUNT_COLUMNS)
        grant_at, held_at = 2 + 2 * width, 2 + 2 * width + len(_GRANT_COLUMNS)
        for row in contents:
            of_wallet = found_grants.get((row[0], row[1]))
            if of_wallet is None:
                continue
            if row[2] not in found_accounts:  # once per wallet, not per grant
                found_accounts[row[2]] = _account_of(row[2 : 2 + width])
                if row[2 + width] is not None:
                    found_accounts[row[2 + width]] = _account_of(row[2 + width : grant_at])
            if row[grant_at] is not None:
                grant_id, purpose, priority, effective_at, expires_at, created_at, status = row[
                    grant_at:held_at
                ]
                of_wallet.append(
                    GrantState(
                        id=grant_id,
                        account=_account_of(row[held_at:]),
                        purpose=purpose,
                        priority=priority,
                        effective_at=effective_at.astimezone(UTC),
                        expires_at=_utc(expires_at),
                        created_at=created_at.astimezone(UTC),
                        status=status,
                    )
                )
        return wallets, found_accounts, found_grants, read

    def _attached(self, row: Sequence[Any]) -> Wallet:
        """The session's wallet object for a locked row, as the ORM would have
        loaded it (`populate_existing`), without reading the row again."""
        values = dict(zip(_WALLETS.c.keys(), row, strict=True))
        for name in ("sweep_due_at", "created_at"):
            values[name] = _utc(values[name])
        identity = Session.identity_key(
            Wallet, (values["organization_id"], values["customer_id"], values["asset_code"])
        )
        existing = self.session.sync_session.identity_map.get(identity)
        if existing is not None:
            for name, value in values.items():
                set_committed_value(existing, name, value)
            return cast(Wallet, existing)
        wallet = Wallet(**values)
        make_transient_to_detached(wallet)
        self.session.add(wallet)
        return wallet

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
