from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from billfold.assets.models import Asset, ExchangeRate


def _insert(dialect: str, model: type[Asset | ExchangeRate]) -> Any:
    return (postgresql.insert if dialect == "postgresql" else sqlite.insert)(model)


class AssetRepository:
    """Custom assets and exchange rates of one organization."""

    def __init__(self, session: AsyncSession, organization_id: str) -> None:
        self.session = session
        self.organization_id = organization_id

    async def _insert_if_absent(self, row: Asset | ExchangeRate, values: dict[str, Any]) -> bool:
        """Insert unless a row with the same key exists; say whether it was inserted.

        `ON CONFLICT DO NOTHING` rather than catch-and-retry, so two requests
        racing to create the same thing give one row and one clean answer.
        """
        assert row.organization_id == self.organization_id
        dialect = self.session.get_bind().dialect.name
        statement = (
            _insert(dialect, type(row))
            .values(values)
            .on_conflict_do_nothing()
            # RETURNING, not rowcount: psycopg reports -1 for this INSERT.
            .returning(sa.literal_column("1"))
        )
        return (await self.session.execute(statement)).first() is not None

    async def add_asset(self, asset: Asset) -> bool:
        return await self._insert_if_absent(
            asset,
            {
                "organization_id": asset.organization_id,
                "code": asset.code,
                "name": asset.name,
                "scale": asset.scale,
                "kind": asset.kind,
                "symbol": asset.symbol,
                "created_at": asset.created_at,
            },
        )

    async def get_asset(self, code: str) -> Asset | None:
        return await self.session.scalar(
            sa.select(Asset).where(
                Asset.organization_id == self.organization_id, Asset.code == code
            )
        )

    async def count_assets(self) -> int:
        count = await self.session.scalar(
            sa.select(sa.func.count())
            .select_from(Asset)
            .where(Asset.organization_id == self.organization_id)
        )
        return int(count or 0)

    async def list_assets(self, limit: int, starting_after: str | None) -> list[Asset]:
        """In code order, the only order that mixes well with the built-in currencies."""
        query = sa.select(Asset).where(Asset.organization_id == self.organization_id)
        if starting_after is not None:
            query = query.where(Asset.code > starting_after)
        return list(await self.session.scalars(query.order_by(Asset.code).limit(limit)))

    async def add_rate(self, rate: ExchangeRate) -> bool:
        return await self._insert_if_absent(
            rate,
            {
                "id": rate.id,
                "organization_id": rate.organization_id,
                "asset_code": rate.asset_code,
                "base_code": rate.base_code,
                "rate": rate.rate,
                "valid_from": rate.valid_from,
                "created_at": rate.created_at,
            },
        )

    async def count_rates(self, asset_code: str, base_code: str) -> int:
        count = await self.session.scalar(
            sa.select(sa.func.count())
            .select_from(ExchangeRate)
            .where(
                ExchangeRate.organization_id == self.organization_id,
                ExchangeRate.asset_code == asset_code,
                ExchangeRate.base_code == base_code,
            )
        )
        return int(count or 0)

    async def rate_at(self, asset_code: str, base_code: str, at: datetime) -> ExchangeRate | None:
        """The version in force at `at`: the latest `valid_from` at or before it."""
        return await self.session.scalar(
            sa.select(ExchangeRate)
            .where(
                ExchangeRate.organization_id == self.organization_id,
                ExchangeRate.asset_code == asset_code,
                ExchangeRate.base_code == base_code,
                ExchangeRate.valid_from <= at,
            )
            .order_by(ExchangeRate.valid_from.desc())
            .limit(1)
        )

    async def list_rates(
        self, asset_code: str, base_code: str | None, limit: int, starting_after: str | None
    ) -> list[ExchangeRate]:
        """Latest `valid_from` first; the cursor is the id of the last rate seen."""
        query = sa.select(ExchangeRate).where(
            ExchangeRate.organization_id == self.organization_id,
            ExchangeRate.asset_code == asset_code,
        )
        if base_code is not None:
            query = query.where(ExchangeRate.base_code == base_code)
        if starting_after is not None:
            cursor = await self.session.scalar(
                sa.select(ExchangeRate).where(
                    ExchangeRate.organization_id == self.organization_id,
                    ExchangeRate.id == starting_after,
                )
            )
            if cursor is None:
                return []
            query = query.where(
                sa.or_(
                    ExchangeRate.valid_from < cursor.valid_from,
                    sa.and_(
                        ExchangeRate.valid_from == cursor.valid_from,
                        ExchangeRate.id < cursor.id,
                    ),
                )
            )
        query = query.order_by(ExchangeRate.valid_from.desc(), ExchangeRate.id.desc())
        return list(await self.session.scalars(query.limit(limit)))
