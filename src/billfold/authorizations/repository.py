from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any, cast

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm.attributes import set_committed_value

from billfold.authorizations.models import Authorization, AuthorizationSplit
from billfold.db.bulk import insert_rows, pg_insert
from billfold.db.engine import dialect_of
from billfold.db.pipeline import Statement, run_together
from billfold.ledger.book import require
from billfold.wallets.state import Split

# PostgreSQL: many holds resolved by one UPDATE, each as [id, status,
# captured, released, resolved at] in one JSON array (the text never changes, so it is
# prepared once), each still guarded: only a hold that is open moves.
_PG_RESOLVE_MANY = sa.text(
    """
    UPDATE authorizations AS a
    SET status = r.row->>1,
        captured_minor = CAST(r.row->>2 AS BIGINT),
        released_minor = CAST(r.row->>3 AS BIGINT),
        resolved_at = CAST(r.row->>4 AS TIMESTAMP WITH TIME ZONE)
    FROM jsonb_array_elements(CAST(:rows AS jsonb)) AS r(row)
    WHERE a.organization_id = :organization_id
      AND a.id = r.row->>0
      AND a.status = 'authorized'
    RETURNING a.id
    """
)


class AuthorizationRepository:
    def __init__(self, session: AsyncSession, organization_id: str) -> None:
        self.session = session
        self.organization_id = organization_id
        self._staged: list[tuple[Authorization, datetime]] = []

    async def get(self, authorization_id: str) -> Authorization | None:
        return await self.session.scalar(
            sa.select(Authorization)
            .where(
                Authorization.organization_id == self.organization_id,
                Authorization.id == authorization_id,
            )
            .execution_options(populate_existing=True)
        )

    async def get_many(self, ids: Sequence[str]) -> dict[str, Authorization]:
        if not ids:
            return {}
        rows = await self.session.scalars(
            sa.select(Authorization)
            .where(Authorization.organization_id == self.organization_id, Authorization.id.in_(ids))
            .execution_options(populate_existing=True)
        )
        return {row.id: row for row in rows}

    async def splits_of(self, ids: Sequence[str]) -> dict[str, list[Split]]:
        result: dict[str, list[Split]] = {i: [] for i in ids}
        if not ids:
            return result
        rows = await self.session.scalars(
            sa.select(AuthorizationSplit)
            .where(
                AuthorizationSplit.organization_id == self.organization_id,
                AuthorizationSplit.authorization_id.in_(ids),
            )
            .order_by(AuthorizationSplit.authorization_id, AuthorizationSplit.seq)
        )
        for row in rows:
            result[row.authorization_id].append(
                Split(row.account_id, row.grant_id, row.amount_minor)
            )
        return result

    async def due(self, customer_id: str, asset_code: str, now: datetime) -> list[Authorization]:
        """Open holds past their expiry, oldest expiry first."""
        return list(
            await self.session.scalars(
                sa.select(Authorization)
                .where(
                    Authorization.organization_id == self.organization_id,
                    Authorization.customer_id == customer_id,
                    Authorization.asset_code == asset_code,
                    Authorization.status == "authorized",
                    Authorization.expires_at <= now,
                )
                .order_by(Authorization.expires_at, Authorization.created_at, Authorization.id)
                .execution_options(populate_existing=True)
            )
        )

    async def next_open_expiry(self, customer_id: str, asset_code: str) -> datetime | None:
        # min() keeps the column's type, so the value comes back UTC-aware.
        value: datetime | None = await self.session.scalar(
            sa.select(sa.func.min(Authorization.expires_at)).where(
                Authorization.organization_id == self.organization_id,
                Authorization.customer_id == customer_id,
                Authorization.asset_code == asset_code,
                Authorization.status == "authorized",
            )
        )
        return value

    async def insert(self, rows: list[dict[str, Any]], splits: list[dict[str, Any]]) -> None:
        if dialect_of(self.session) != "postgresql":
            await insert_rows(self.session, cast(sa.Table, Authorization.__table__), rows)
            await insert_rows(self.session, cast(sa.Table, AuthorizationSplit.__table__), splits)
            return
        # One round trip for both (see billfold.db.pipeline).
        await run_together(self.session, self.pg_inserts(rows, splits))

    def pg_inserts(
        self, rows: list[dict[str, Any]], splits: list[dict[str, Any]]
    ) -> list[Statement]:
        """PostgreSQL: `insert` as statements, for a caller to send with others."""
        return [
            pg_insert(table, values)
            for table, values in (
                (cast(sa.Table, Authorization.__table__), rows),
                (cast(sa.Table, AuthorizationSplit.__table__), splits),
            )
            if values
        ]

    def stage_resolve(
        self,
        authorization: Authorization,
        status: str,
        captured_minor: int,
        released_minor: int,
        now: datetime,
    ) -> None:
        """`resolve`, written by the next `write_staged` with the others
        staged meanwhile; the object shows its new state at once."""
        require(
            authorization.status == "authorized", f"authorization {authorization.id} resolved twice"
        )
        # As values the database holds, not as changes: the ORM must not
        # write them itself at some flush before `write_staged` (whose guard
        # would then find the hold resolved), nor again after it.
        for name, value in (
            ("status", status),
            ("captured_minor", captured_minor),
            ("released_minor", released_minor),
            ("resolved_at", now),
        ):
            set_committed_value(authorization, name, value)
        self._staged.append((authorization, now))

    async def write_staged(self) -> None:
        """Write the staged resolutions: one statement on PostgreSQL."""
        staged, self._staged = self._staged, []
        if not staged:
            return
        if dialect_of(self.session) != "postgresql":
            for authorization, now in staged:
                await self._write_resolution(authorization, now)
            return
        ids = [authorization.id for authorization, _ in staged]
        require(len(set(ids)) == len(ids), "a hold resolves once")
        rows = json.dumps(
            [
                [a.id, a.status, a.captured_minor, a.released_minor, now.isoformat()]
                for a, now in staged
            ]
        )
        moved = set(
            await self.session.scalars(
                _PG_RESOLVE_MANY, {"organization_id": self.organization_id, "rows": rows}
            )
        )
        missed = [i for i in ids if i not in moved]
        require(not missed, f"authorization {missed[:1]} resolved twice")

    async def _write_resolution(self, authorization: Authorization, now: datetime) -> None:
        result = await self.session.execute(
            sa.update(Authorization)
            .where(
                Authorization.organization_id == self.organization_id,
                Authorization.id == authorization.id,
                Authorization.status == "authorized",
            )
            .values(
                status=authorization.status,
                captured_minor=authorization.captured_minor,
                released_minor=authorization.released_minor,
                resolved_at=now,
            )
        )
        require(
            getattr(result, "rowcount", 1) == 1, f"authorization {authorization.id} resolved twice"
        )

    async def resolve(
        self,
        authorization: Authorization,
        status: str,
        captured_minor: int,
        released_minor: int,
        now: datetime,
    ) -> None:
        """Move an open hold to its end state (a hold resolves once: the row
        must still be open), now, with whatever else was staged."""
        self.stage_resolve(authorization, status, captured_minor, released_minor, now)
        await self.write_staged()
