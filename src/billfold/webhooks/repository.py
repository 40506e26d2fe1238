from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from billfold.webhooks.models import WebhookAttempt, WebhookDelivery, WebhookEndpoint, WebhookEvent


class WebhookRepository:
    """Queries scoped to one organization."""

    def __init__(self, session: AsyncSession, organization_id: str) -> None:
        self.session = session
        self.organization_id = organization_id

    async def add(self, *rows: WebhookEndpoint | WebhookEvent | WebhookDelivery) -> None:
        for row in rows:
            assert row.organization_id == self.organization_id
        # With no relationship() between these tables the unit of work does not
        # order INSERTs by foreign key, so parents are flushed before children.
        for kind in (WebhookEndpoint, WebhookEvent, WebhookDelivery):
            batch = [row for row in rows if isinstance(row, kind)]
            if batch:
                self.session.add_all(batch)
                await self.session.flush()

    async def get_endpoint(self, endpoint_id: str) -> WebhookEndpoint | None:
        return await self.session.scalar(
            sa.select(WebhookEndpoint).where(
                WebhookEndpoint.organization_id == self.organization_id,
                WebhookEndpoint.id == endpoint_id,
                WebhookEndpoint.deleted_at.is_(None),
            )
        )

    async def count_endpoints(self) -> int:
        count = await self.session.scalar(
            sa.select(sa.func.count()).where(
                WebhookEndpoint.organization_id == self.organization_id,
                WebhookEndpoint.deleted_at.is_(None),
            )
        )
        return int(count or 0)

    async def list_endpoints(self, limit: int, starting_after: str | None) -> list[WebhookEndpoint]:
        query = sa.select(WebhookEndpoint).where(
            WebhookEndpoint.organization_id == self.organization_id,
            WebhookEndpoint.deleted_at.is_(None),
        )
        if starting_after is not None:
            query = query.where(WebhookEndpoint.id < starting_after)
        return list(
            await self.session.scalars(query.order_by(WebhookEndpoint.id.desc()).limit(limit))
        )

    async def enabled_endpoints(self) -> Sequence[WebhookEndpoint]:
        return list(
            await self.session.scalars(
                sa.select(WebhookEndpoint).where(
                    WebhookEndpoint.organization_id == self.organization_id,
                    WebhookEndpoint.status == "enabled",
                    WebhookEndpoint.deleted_at.is_(None),
                )
            )
        )

    async def get_delivery(self, delivery_id: str) -> WebhookDelivery | None:
        return await self.session.scalar(
            sa.select(WebhookDelivery).where(
                WebhookDelivery.organization_id == self.organization_id,
                WebhookDelivery.id == delivery_id,
            )
        )

    async def list_deliveries(
        self, endpoint_id: str, limit: int, starting_after: str | None, status: str | None
    ) -> list[tuple[WebhookDelivery, WebhookEvent]]:
        query = (
            sa.select(WebhookDelivery, WebhookEvent)
            .join(WebhookEvent, WebhookEvent.id == WebhookDelivery.event_id)
            .where(
                WebhookDelivery.organization_id == self.organization_id,
                WebhookDelivery.endpoint_id == endpoint_id,
            )
        )
        if status is not None:
            query = query.where(WebhookDelivery.status == status)
        if starting_after is not None:
            query = query.where(WebhookDelivery.id < starting_after)
        rows = await self.session.execute(query.order_by(WebhookDelivery.id.desc()).limit(limit))
        return [(delivery, event) for delivery, event in rows]

    async def attempts_of(self, delivery_ids: Sequence[str]) -> list[WebhookAttempt]:
        if not delivery_ids:
            return []
        return list(
            await self.session.scalars(
                sa.select(WebhookAttempt)
                .where(
                    WebhookAttempt.organization_id == self.organization_id,
                    WebhookAttempt.delivery_id.in_(delivery_ids),
                )
                .order_by(WebhookAttempt.delivery_id, WebhookAttempt.attempt_number)
            )
        )

    async def cancel_pending(self, endpoint_id: str) -> None:
        await self.session.execute(
            sa.update(WebhookDelivery)
            .where(
                WebhookDelivery.organization_id == self.organization_id,
                WebhookDelivery.endpoint_id == endpoint_id,
                WebhookDelivery.status == "pending",
            )
            .values(status="canceled", next_attempt_at=None, locked_until=None)
        )


class DeliveryQueueRepository:
    """The worker's view across organizations: due deliveries and their outcomes."""

    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def claim_due(
        self, now: datetime, lease_until: datetime, limit: int
    ) -> list[tuple[WebhookDelivery, WebhookEvent, WebhookEndpoint]]:
        due = (
            sa.select(WebhookDelivery.id)
            .where(
                WebhookDelivery.status == "pending",
                WebhookDelivery.next_attempt_at <= now,
                sa.or_(WebhookDelivery.locked_until.is_(None), WebhookDelivery.locked_until < now),
            )
            .order_by(WebhookDelivery.next_attempt_at)
            .limit(limit)
        )
        if self.session.get_bind().dialect.name == "postgresql":
            # Several workers may poll at once; each takes rows the others have not locked.
            due = due.with_for_update(skip_locked=True)
        ids = list(await self.session.scalars(due))
        if not ids:
            return []
        await self.session.execute(
            sa.update(WebhookDelivery)
            .where(WebhookDelivery.id.in_(ids))
            .values(locked_until=lease_until)
        )
        rows = await self.session.execute(
            sa.select(WebhookDelivery, WebhookEvent, WebhookEndpoint)
            .join(WebhookEvent, WebhookEvent.id == WebhookDelivery.event_id)
            .join(WebhookEndpoint, WebhookEndpoint.id == WebhookDelivery.endpoint_id)
            .where(WebhookDelivery.id.in_(ids))
            .execution_options(populate_existing=True)
        )
        return [(d, e, ep) for d, e, ep in rows]

    async def lock_for_outcome(
        self, delivery_id: str
    ) -> tuple[WebhookDelivery, WebhookEndpoint] | None:
        query = (
            sa.select(WebhookDelivery, WebhookEndpoint)
            .join(WebhookEndpoint, WebhookEndpoint.id == WebhookDelivery.endpoint_id)
            .where(WebhookDelivery.id == delivery_id)
            .execution_options(populate_existing=True)
        )
        if self.session.get_bind().dialect.name == "postgresql":
            query = query.with_for_update()
        row = (await self.session.execute(query)).first()
        return None if row is None else (row[0], row[1])

    async def add_attempt(self, attempt: WebhookAttempt) -> None:
        self.session.add(attempt)
        await self.session.flush()
