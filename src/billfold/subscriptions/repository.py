"""All subscription SQL."""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm.attributes import set_committed_value

from billfold.catalog.models import Product
from billfold.subscriptions.models import Subscription

# A subscription with its product's code, which every answer shows.
Row = tuple[Subscription, str]


class SubscriptionRepository:
    """Subscriptions of one organization."""

    def __init__(self, session: AsyncSession, organization_id: str) -> None:
        self.session = session
        self.organization_id = organization_id

    def _select(self) -> sa.Select[Subscription, str]:
        return (
            sa.select(Subscription, Product.code)
            .join(Product, Product.id == Subscription.product_id)
            .where(Subscription.organization_id == self.organization_id)
        )

    async def insert(self, subscription: Subscription) -> None:
        assert subscription.organization_id == self.organization_id
        self.session.add(subscription)
        await self.session.flush()

    async def get(self, subscription_id: str) -> Row | None:
        row = (
            await self.session.execute(self._select().where(Subscription.id == subscription_id))
        ).first()
        return None if row is None else (row[0], row[1])

    async def count_active(self, customer_id: str) -> int:
        count = await self.session.scalar(
            sa.select(sa.func.count()).where(
                Subscription.organization_id == self.organization_id,
                Subscription.customer_id == customer_id,
                Subscription.status == "active",
            )
        )
        return int(count or 0)

    async def active_for_customer(self, customer_id: str, at: datetime) -> list[Subscription]:
        """The customer's active subscriptions that have started by `at`, newest first."""
        return list(
            await self.session.scalars(
                sa.select(Subscription)
                .where(
                    Subscription.organization_id == self.organization_id,
                    Subscription.customer_id == customer_id,
                    Subscription.status == "active",
                    Subscription.start_at <= at,
                )
                .order_by(Subscription.id.desc())
            )
        )

    async def list_page(
        self, limit: int, starting_after: str | None, customer_id: str | None
    ) -> list[Row]:
        query = self._select()
        if customer_id is not None:
            query = query.where(Subscription.customer_id == customer_id)
        if starting_after is not None:
            query = query.where(Subscription.id < starting_after)
        rows = await self.session.execute(query.order_by(Subscription.id.desc()).limit(limit))
        return [(row[0], row[1]) for row in rows]

    async def cancel(self, subscription: Subscription, at: datetime) -> bool:
        """Cancel it if it is still active; say whether this call did. A
        concurrent cancel waits for this one's row lock and then finds it done."""
        row = (
            await self.session.execute(
                sa.update(Subscription)
                .where(
                    Subscription.organization_id == self.organization_id,
                    Subscription.id == subscription.id,
                    Subscription.status == "active",
                )
                .values(status="canceled", canceled_at=at)
                .returning(Subscription.id)
                .execution_options(synchronize_session=False)
            )
        ).first()
        if row is None:
            return False
        # Keep the loaded object in step without marking it dirty.
        set_committed_value(subscription, "status", "canceled")
        set_committed_value(subscription, "canceled_at", at)
        return True
