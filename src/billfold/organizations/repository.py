from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from billfold.organizations.models import ApiKey, Organization


class OrganizationRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def add(self, organization: Organization) -> None:
        self.session.add(organization)
        await self.session.flush()

    async def get(self, organization_id: str) -> Organization | None:
        return await self.session.get(Organization, organization_id)


class ApiKeyRepository:
    def __init__(self, session: AsyncSession, organization_id: str) -> None:
        self.session = session
        self.organization_id = organization_id

    async def add(self, api_key: ApiKey) -> None:
        assert api_key.organization_id == self.organization_id
        self.session.add(api_key)
        await self.session.flush()

    async def get(self, api_key_id: str) -> ApiKey | None:
        return await self.session.scalar(
            sa.select(ApiKey).where(
                ApiKey.organization_id == self.organization_id, ApiKey.id == api_key_id
            )
        )

    async def count_active(self) -> int:
        count = await self.session.scalar(
            sa.select(sa.func.count()).where(
                ApiKey.organization_id == self.organization_id, ApiKey.revoked_at.is_(None)
            )
        )
        return int(count or 0)

    async def list_page(self, limit: int, starting_after: str | None) -> list[ApiKey]:
        query = sa.select(ApiKey).where(ApiKey.organization_id == self.organization_id)
        if starting_after is not None:
            query = query.where(ApiKey.id < starting_after)
        rows = await self.session.scalars(query.order_by(ApiKey.id.desc()).limit(limit))
        return list(rows)

    async def revoke(self, api_key: ApiKey, at: datetime) -> None:
        api_key.revoked_at = at
        await self.session.flush()


async def find_active_key_by_hash(session: AsyncSession, key_hash: str) -> ApiKey | None:
    """The one query that runs before the organization is known."""
    return await session.scalar(
        sa.select(ApiKey).where(ApiKey.key_hash == key_hash, ApiKey.revoked_at.is_(None))
    )
