from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from billfold.db.engine import dialect_of
from billfold.db.pipeline import Statement, run_together
from billfold.gateway.models import GatewayKey, GatewaySettlement


class GatewayKeyRepository:
    def __init__(self, session: AsyncSession, organization_id: str) -> None:
        self.session = session
        self.organization_id = organization_id

    async def add(self, key: GatewayKey) -> None:
        assert key.organization_id == self.organization_id
        self.session.add(key)
        await self.session.flush()

    async def get(self, customer_id: str, key_id: str) -> GatewayKey | None:
        return await self.session.scalar(
            sa.select(GatewayKey).where(
                GatewayKey.organization_id == self.organization_id,
                GatewayKey.customer_id == customer_id,
                GatewayKey.id == key_id,
            )
        )

    async def count_active(self, customer_id: str) -> int:
        count = await self.session.scalar(
            sa.select(sa.func.count()).where(
                GatewayKey.organization_id == self.organization_id,
                GatewayKey.customer_id == customer_id,
                GatewayKey.revoked_at.is_(None),
            )
        )
        return int(count or 0)

    async def list_page(
        self, customer_id: str, limit: int, starting_after: str | None
    ) -> list[GatewayKey]:
        query = sa.select(GatewayKey).where(
            GatewayKey.organization_id == self.organization_id,
            GatewayKey.customer_id == customer_id,
        )
        if starting_after is not None:
            query = query.where(GatewayKey.id < starting_after)
        rows = await self.session.scalars(query.order_by(GatewayKey.id.desc()).limit(limit))
        return list(rows)

    async def revoke(self, key: GatewayKey, at: datetime) -> None:
        key.revoked_at = at
        await self.session.flush()


async def find_active_by_hash(session: AsyncSession, key_hash: str) -> GatewayKey | None:
    """The gateway's one lookup before the organization is known."""
    return await session.scalar(_ACTIVE_BY_HASH, {"key_hash": key_hash})


# Built once: every gateway call runs it, and building costs more than running.
_ACTIVE_BY_HASH = sa.select(GatewayKey).where(
    GatewayKey.key_hash == sa.bindparam("key_hash"), GatewayKey.revoked_at.is_(None)
)


_PG_ADD = sa.text(
    "INSERT INTO gateway_settlements (organization_id, event, created_at) "
    "VALUES (:organization_id, :event, :created_at)"
)


class SettlementRepository:
    """The queue of answered calls' usage events (every organization's: the
    gateway drains them all)."""

    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def add(self, organization_id: str, event_json: str, now: datetime) -> None:
        row = {"organization_id": organization_id, "event": event_json, "created_at": now}
        if dialect_of(self.session) == "postgresql":
            # Once per answered call, on the event loop that serves the next
            # ones: straight to the driver (0.74 ms a call in process, against
            # 1.05 through SQLAlchemy).
            await run_together(self.session, [Statement(_PG_ADD, row)])
            return
        await self.session.execute(sa.insert(GatewaySettlement).values(**row))

    async def take(
        self, limit: int, *, queued_before: datetime | None = None
    ) -> list[GatewaySettlement]:
        """The oldest `limit` rows (of those queued before `queued_before`),
        locked; rows another process is taking are skipped (PostgreSQL;
        SQLite's one writer takes them one at a time)."""
        query = sa.select(GatewaySettlement).order_by(GatewaySettlement.id).limit(limit)
        if queued_before is not None:
            query = query.where(GatewaySettlement.created_at < queued_before)
        if dialect_of(self.session) == "postgresql":
            query = query.with_for_update(skip_locked=True)
        return list(await self.session.scalars(query))

    async def remove(self, ids: Sequence[int]) -> None:
        if ids:
            await self.session.execute(
                sa.delete(GatewaySettlement).where(GatewaySettlement.id.in_(ids))
            )
