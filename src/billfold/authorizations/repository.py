from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, cast

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from billfold.authorizations.models import Authorization, AuthorizationSplit
from billfold.db.bulk import insert_rows
from billfold.ledger.book import require
from billfold.wallets.state import Split


class AuthorizationRepository:
    def __init__(self, session: AsyncSession, organization_id: str) -> None:
        self.session = session
        self.organization_id = organization_id

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
        await insert_rows(self.session, cast(sa.Table, Authorization.__table__), rows)
        await insert_rows(self.session, cast(sa.Table, AuthorizationSplit.__table__), splits)

    async def resolve(
        self,
        authorization: Authorization,
        status: str,
        captured_minor: int,
        released_minor: int,
        now: datetime,
    ) -> None:
        result = await self.session.execute(
            sa.update(Authorization)
            .where(
                Authorization.organization_id == self.organization_id,
                Authorization.id == authorization.id,
                # A hold resolves once: the row must still be open.
                Authorization.status == "authorized",
            )
            .values(
                status=status,
                captured_minor=captured_minor,
                released_minor=released_minor,
                resolved_at=now,
            )
        )
        require(
            getattr(result, "rowcount", 1) == 1, f"authorization {authorization.id} resolved twice"
        )
        authorization.status = status
        authorization.captured_minor = captured_minor
        authorization.released_minor = released_minor
        authorization.resolved_at = now
