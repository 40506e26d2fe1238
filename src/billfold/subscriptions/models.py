from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from billfold.db.base import Base


class Subscription(Base):
    """A customer on one version of a product.

    Minimal on purpose: billing intervals, periods, invoices and plan changes
    with proration come with invoicing. Status is `active` or `canceled`.
    """

    __tablename__ = "subscriptions"
    __table_args__ = (
        # Lists are newest first within one organization.
        sa.Index("ix_subscriptions_organization_id_id", "organization_id", "id"),
        # Entitlements read one customer's active subscriptions.
        sa.Index("ix_subscriptions_customer", "organization_id", "customer_id", "status"),
    )

    id: Mapped[str] = mapped_column(sa.String(40), primary_key=True)
    organization_id: Mapped[str] = mapped_column(sa.String(40), sa.ForeignKey("organizations.id"))
    customer_id: Mapped[str] = mapped_column(sa.String(40), sa.ForeignKey("customers.id"))
    product_id: Mapped[str] = mapped_column(sa.String(40), sa.ForeignKey("products.id"))
    version: Mapped[int]
    status: Mapped[str] = mapped_column(sa.String(16))
    start_at: Mapped[datetime]
    created_at: Mapped[datetime]
    canceled_at: Mapped[datetime | None]
