from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from billfold.db.base import Base


class Subscription(Base):
    """A customer on one version of a product.

    Periods follow `interval` × `interval_count` counted from `anchor_at`
    (null: `start_at`) with `anchor` `anniversary` or `calendar`
    (subscriptions/periods.py), clipped to `[start_at, ends_at)`. Status is
    `active` or `canceled`; a cancel at period end keeps it `active` with
    `ends_at` set until the billing run closes that period.

    The billing run's cursor: `billed_through` is the boundary up to which
    periods are closed (null: not even the opening invoice yet), and
    `next_billing_at` the next boundary an invoice is due at (null: done).
    """

    __tablename__ = "subscriptions"
    __table_args__ = (
        # Lists are newest first within one organization.
        sa.Index("ix_subscriptions_organization_id_id", "organization_id", "id"),
        # Entitlements read one customer's active subscriptions.
        sa.Index("ix_subscriptions_customer", "organization_id", "customer_id", "status"),
        # The billing run reads what is due, across organizations.
        sa.Index("ix_subscriptions_next_billing_at", "next_billing_at"),
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
    interval: Mapped[str] = mapped_column(sa.String(8), server_default="month")
    interval_count: Mapped[int] = mapped_column(server_default="1")
    anchor: Mapped[str] = mapped_column(sa.String(16), server_default="anniversary")
    #: Periods are counted from here; an upgrade keeps its predecessor's.
    anchor_at: Mapped[datetime | None]
    trial_end_at: Mapped[datetime | None]
    ends_at: Mapped[datetime | None]
    billed_through: Mapped[datetime | None]
    next_billing_at: Mapped[datetime | None]
    previous_subscription_id: Mapped[str | None] = mapped_column(sa.String(40))
    #: The least a period's fees come to in this asset: the period invoice
    #: adds a true-up line for the difference (prorated for a partial period).
    minimum_commitment_asset: Mapped[str | None] = mapped_column(sa.String(20))
    minimum_commitment_minor: Mapped[int | None] = mapped_column(sa.BigInteger)
    #: Progressive billing: once the period's in-arrears usage not yet
    #: invoiced reaches this amount, the billing run invoices it mid-period.
    usage_threshold_asset: Mapped[str | None] = mapped_column(sa.String(20))
    usage_threshold_minor: Mapped[int | None] = mapped_column(sa.BigInteger)
