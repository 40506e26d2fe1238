"""All SQL that writes money. Nothing else inserts entries or moves counters."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any, cast

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from billfold.authorizations.models import Authorization, AuthorizationSplit
from billfold.db.bulk import insert_rows, pg_insert
from billfold.db.engine import dialect_of, upsert_insert
from billfold.db.pipeline import Statement, run_together
from billfold.ledger.book import AccountState, Entry, LedgerViolation
from billfold.ledger.models import JournalEntry, LedgerAccount, Posting

SYSTEM_ROLES = frozenset({"funding", "revenue", "breakage", "holds", "adjustments", "conversion"})


def system_account_id(organization_id: str, asset_code: str, role: str) -> str:
    """Deterministic, so the hot path never has to look one up."""
    digest = hashlib.sha256(f"{organization_id}|{asset_code}|{role}".encode()).hexdigest()[:28]
    return f"acs_{digest}"


def state_of(account: LedgerAccount) -> AccountState:
    counters = (
        account.debits_posted_minor,
        account.credits_posted_minor,
        account.debits_pending_minor,
        account.credits_pending_minor,
    )
    return AccountState(
        id=account.id,
        asset_code=account.asset_code,
        floor_minor=account.floor_minor,
        debits_posted_minor=counters[0],
        credits_posted_minor=counters[1],
        debits_pending_minor=counters[2],
        credits_pending_minor=counters[3],
        loaded=counters,
    )


# PostgreSQL: a batch's counter moves as one JSON array of [account id,
# debits posted, credits posted, debits pending, credits pending] deltas. The
# statement's text is the same for any number of accounts, so it is compiled
# and prepared once, where a VALUES list of literals was compiled per batch.
# Unpacked as jsonb, parsed once (a `json` value is parsed again by every `->>`).
_PG_APPLY_DELTAS = sa.text(
    """
    UPDATE ledger_accounts AS a
    SET debits_posted_minor = a.debits_posted_minor + d.d_dp,
        credits_posted_minor = a.credits_posted_minor + d.d_cp,
        debits_pending_minor = a.debits_pending_minor + d.d_dpe,
        credits_pending_minor = a.credits_pending_minor + d.d_cpe
    FROM (
        SELECT r.row->>0 AS id, CAST(r.row->>1 AS bigint) AS d_dp,
               CAST(r.row->>2 AS bigint) AS d_cp, CAST(r.row->>3 AS bigint) AS d_dpe,
               CAST(r.row->>4 AS bigint) AS d_cpe
        FROM jsonb_array_elements(CAST(:deltas AS jsonb)) AS r(row)
    ) AS d
    WHERE a.id = d.id
      AND a.organization_id = :organization_id
      AND (d.d_cp - d.d_dp - d.d_dpe >= 0
           OR (a.credits_posted_minor + d.d_cp) - (a.debits_posted_minor + d.d_dp)
              - (a.debits_pending_minor + d.d_dpe) >= a.floor_minor)
    RETURNING a.id
    """
).columns(id=sa.String())


class LedgerRepository:
    def __init__(self, session: AsyncSession, organization_id: str) -> None:
        self.session = session
        self.organization_id = organization_id

    async def ensure_system_accounts(self, asset_code: str, now: datetime) -> None:
        """Create the organization's system accounts for an asset, once.

        Called when a wallet in that asset is created, so the hot path can
        name them by their deterministic ids without looking them up.
        """
        await self.session.execute(
            upsert_insert(self.session, LedgerAccount)
            .values(
                [
                    {
                        "id": system_account_id(self.organization_id, asset_code, role),
                        "organization_id": self.organization_id,
                        "owner_id": self.organization_id,
                        "asset_code": asset_code,
                        "role": role,
                        "grant_id": "",
                        "tracked": False,
                        "floor_minor": 0,
                        "debits_posted_minor": 0,
                        "credits_posted_minor": 0,
                        "debits_pending_minor": 0,
                        "credits_pending_minor": 0,
                        "created_at": now,
                    }
                    for role in sorted(SYSTEM_ROLES)
                ]
            )
            .on_conflict_do_nothing(index_elements=["id"])
        )

    async def add_tracked_account(
        self,
        *,
        account_id: str,
        owner_id: str,
        asset_code: str,
        role: str,
        grant_id: str,
        floor_minor: int,
        now: datetime,
    ) -> AccountState:
        account = LedgerAccount(
            id=account_id,
            organization_id=self.organization_id,
            owner_id=owner_id,
            asset_code=asset_code,
            role=role,
            grant_id=grant_id,
            tracked=True,
            floor_minor=floor_minor,
            debits_posted_minor=0,
            credits_posted_minor=0,
            debits_pending_minor=0,
            credits_pending_minor=0,
            created_at=now,
        )
        self.session.add(account)
        await self.session.flush()
        return state_of(account)

    async def tracked_accounts(self, account_ids: Sequence[str]) -> list[AccountState]:
        rows = await self.session.scalars(
            sa.select(LedgerAccount)
            .where(
                LedgerAccount.organization_id == self.organization_id,
                LedgerAccount.id.in_(account_ids),
            )
            .execution_options(populate_existing=True)
        )
        return [state_of(row) for row in rows]

    async def set_floor(self, account_id: str, floor_minor: int) -> None:
        await self.session.execute(
            sa.update(LedgerAccount)
            .where(
                LedgerAccount.organization_id == self.organization_id,
                LedgerAccount.id == account_id,
            )
            .values(floor_minor=floor_minor)
        )

    async def write(
        self,
        entries: Sequence[Entry],
        changed: Sequence[AccountState],
        then: Sequence[Statement] = (),
    ) -> None:
        """Insert the entries, then their postings, in the order given
        (postings take their serial ids in that order), and move the counters,
        guarded in the database too. On PostgreSQL all of it in one round trip:
        every counter move of the batch in one UPDATE … FROM, with the same
        floor guard as `_apply_delta` on each row that lowers its account;
        and the caller's own statements `then` (PostgreSQL's only), after."""
        if not entries:
            if then:
                await run_together(self.session, then)
            return
        entry_rows, posting_rows = _entry_rows(entries), _posting_rows(entries)
        if dialect_of(self.session) != "postgresql":
            assert not then, "`then` holds PostgreSQL statements"
            await insert_rows(self.session, cast(sa.Table, JournalEntry.__table__), entry_rows)
            await insert_rows(self.session, cast(sa.Table, Posting.__table__), posting_rows)
            for account in changed:
                await self._apply_delta(account)
            return
        statements = [
            pg_insert(cast(sa.Table, JournalEntry.__table__), entry_rows),
            pg_insert(cast(sa.Table, Posting.__table__), posting_rows),
        ]
        if changed:
            deltas = json.dumps([[account.id, *account.delta()] for account in changed])
            statements.append(
                Statement(
                    _PG_APPLY_DELTAS, {"organization_id": self.organization_id, "deltas": deltas}
                )
            )
        answers = await run_together(self.session, [*statements, *then])
        if changed:
            self._check_moved(changed, {row[0] for row in answers[len(statements) - 1]})

    def _check_moved(self, changed: Sequence[AccountState], moved: set[str]) -> None:
        for account in changed:
            if account.id not in moved:
                raise LedgerViolation(
                    f"account {account.id} would fall below its floor; batch refused"
                )
            account.loaded = account.counters()

    async def _apply_delta(self, account: AccountState) -> None:
        d_dp, d_cp, d_dpe, d_cpe = account.delta()
        table = LedgerAccount
        lowered = (d_cp - d_dp - d_dpe) < 0
        statement = (
            sa.update(table)
            .where(table.id == account.id, table.organization_id == self.organization_id)
            .values(
                debits_posted_minor=table.debits_posted_minor + d_dp,
                credits_posted_minor=table.credits_posted_minor + d_cp,
                debits_pending_minor=table.debits_pending_minor + d_dpe,
                credits_pending_minor=table.credits_pending_minor + d_cpe,
            )
        )
        if lowered:
            # The last guard, whatever the application believed: the database
            # refuses to take an account below its floor.
            statement = statement.where(
                (table.credits_posted_minor + d_cp)
                - (table.debits_posted_minor + d_dp)
                - (table.debits_pending_minor + d_dpe)
                >= table.floor_minor
            )
        result = await self.session.execute(statement)
        if getattr(result, "rowcount", 1) != 1:
            raise LedgerViolation(f"account {account.id} would fall below its floor; batch refused")
        account.loaded = account.counters()


class AuditRepository:
    """Read-only queries that re-fold the journal, for `billfold ledger verify`."""

    def __init__(self, session: AsyncSession, organization_id: str | None = None) -> None:
        self.session = session
        self.organization_id = organization_id

    def _scoped(self, column: Any) -> Any:
        return sa.true() if self.organization_id is None else column == self.organization_id

    async def unbalanced_entry(self) -> tuple[str, str, str, int] | None:
        net = sa.func.sum(Posting.debit_minor) - sa.func.sum(Posting.credit_minor)
        row = (
            await self.session.execute(
                sa.select(Posting.entry_id, Posting.asset_code, Posting.phase, net)
                .where(self._scoped(Posting.organization_id))
                .group_by(Posting.entry_id, Posting.asset_code, Posting.phase)
                .having(net != 0)
                .order_by(Posting.entry_id)
                .limit(1)
            )
        ).first()
        return None if row is None else (row[0], row[1], row[2], int(row[3]))

    async def count_entries(self) -> int:
        count = await self.session.scalar(
            sa.select(sa.func.count())
            .select_from(JournalEntry)
            .where(self._scoped(JournalEntry.organization_id))
        )
        return int(count or 0)

    async def entry_without_postings(self) -> str | None:
        return await self.session.scalar(
            sa.select(JournalEntry.id)
            .where(
                self._scoped(JournalEntry.organization_id),
                ~sa.exists().where(Posting.entry_id == JournalEntry.id),
            )
            .order_by(JournalEntry.id)
            .limit(1)
        )

    async def folds(self) -> dict[str, tuple[int, int, int, int]]:
        """Per account: debits and credits posted, net pending debits and credits."""

        def total(phase: str, column: Any, sign: int = 1) -> Any:
            return sa.func.coalesce(
                sa.func.sum(sa.case((Posting.phase == phase, column * sign), else_=0)), 0
            )

        rows = await self.session.execute(
            sa.select(
                Posting.account_id,
                total("posted", Posting.debit_minor),
                total("posted", Posting.credit_minor),
                total("pending", Posting.debit_minor) + total("release", Posting.debit_minor, -1),
                total("pending", Posting.credit_minor) + total("release", Posting.credit_minor, -1),
            )
            .where(self._scoped(Posting.organization_id))
            .group_by(Posting.account_id)
        )
        return {row[0]: (int(row[1]), int(row[2]), int(row[3]), int(row[4])) for row in rows}

    async def accounts(self) -> list[LedgerAccount]:
        return list(
            await self.session.scalars(
                sa.select(LedgerAccount)
                .where(self._scoped(LedgerAccount.organization_id))
                .order_by(LedgerAccount.id)
            )
        )

    async def hold_rows(self) -> list[tuple[str, str, int, int, int, int]]:
        """(id, status, amount, captured, released, split total) of every authorization."""
        split_total = (
            sa.select(sa.func.coalesce(sa.func.sum(AuthorizationSplit.amount_minor), 0))
            .where(AuthorizationSplit.authorization_id == Authorization.id)
            .scalar_subquery()
        )
        rows = await self.session.execute(
            sa.select(
                Authorization.id,
                Authorization.status,
                Authorization.amount_minor,
                Authorization.captured_minor,
                Authorization.released_minor,
                split_total,
            )
            .where(self._scoped(Authorization.organization_id))
            .order_by(Authorization.id)
        )
        return [(r[0], r[1], int(r[2]), int(r[3]), int(r[4]), int(r[5])) for r in rows]

    async def open_split_totals(self) -> dict[str, int]:
        """Per account, what open holds still take from it."""
        rows = await self.session.execute(
            sa.select(AuthorizationSplit.account_id, sa.func.sum(AuthorizationSplit.amount_minor))
            .join(Authorization, Authorization.id == AuthorizationSplit.authorization_id)
            .where(
                self._scoped(Authorization.organization_id), Authorization.status == "authorized"
            )
            .group_by(AuthorizationSplit.account_id)
        )
        return {row[0]: int(row[1]) for row in rows}

    async def entry_kinds_by_reference(self, kinds: Sequence[str]) -> dict[str, list[str]]:
        rows = await self.session.execute(
            sa.select(JournalEntry.reference_id, JournalEntry.kind)
            .where(self._scoped(JournalEntry.organization_id), JournalEntry.kind.in_(kinds))
            .order_by(JournalEntry.reference_id, JournalEntry.created_at, JournalEntry.id)
        )
        result: dict[str, list[str]] = {}
        for reference_id, kind in rows:
            if reference_id is not None:
                result.setdefault(reference_id, []).append(kind)
        return result


def _entry_rows(entries: Sequence[Entry]) -> list[dict[str, Any]]:
    return [
        {
            "id": e.id,
            "organization_id": e.organization_id,
            "kind": e.kind,
            "reference_id": e.reference_id,
            "customer_id": e.customer_id,
            "details": e.details,
            "created_at": e.created_at,
        }
        for e in entries
    ]


def _posting_rows(entries: Sequence[Entry]) -> list[dict[str, Any]]:
    return [
        {
            "organization_id": e.organization_id,
            "entry_id": e.id,
            "account_id": leg.account_id,
            "asset_code": leg.asset_code,
            "phase": leg.phase,
            "debit_minor": leg.debit_minor,
            "credit_minor": leg.credit_minor,
        }
        for e in entries
        for leg in e.legs
    ]
