from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from billfold import limits
from billfold.db.base import Base, JSONType


class EventFee(Base):
    """What one event cost under one real-time price, and the entry that took it.

    One row per (event, price) with a non-zero fee or a hold settled. Invoices
    summarise these ("already debited"), and margins read them as revenue.
    """

    __tablename__ = "event_fees"
    __table_args__ = (
        sa.Index("ix_event_fees_customer", "organization_id", "customer_id", "event_timestamp"),
        sa.Index(
            "ix_event_fees_subscription", "organization_id", "subscription_id", "period_start"
        ),
        sa.Index("ix_event_fees_event", "organization_id", "event_id"),
    )

    id: Mapped[str] = mapped_column(sa.String(40), primary_key=True)
    organization_id: Mapped[str] = mapped_column(sa.String(40), sa.ForeignKey("organizations.id"))
    #: The client's id of the event.
    event_id: Mapped[str] = mapped_column(sa.String(limits.event_id_length_max))
    event_type: Mapped[str] = mapped_column(sa.String(limits.event_type_length_max))
    customer_id: Mapped[str] = mapped_column(sa.String(40))
    #: Null for the organization's default LLM price (vendor cost × markup),
    #: which applies when no subscribed price counts the event.
    subscription_id: Mapped[str | None] = mapped_column(sa.String(40))
    price_code: Mapped[str] = mapped_column(sa.String(limits.price_code_length_max))
    asset_code: Mapped[str] = mapped_column(sa.String(20))
    amount_minor: Mapped[int] = mapped_column(sa.BigInteger)
    #: The event's metered quantity, exact decimal text.
    quantity: Mapped[str] = mapped_column(sa.String(80))
    #: Index of the price dimension that applied; null for the base price.
    dimension: Mapped[int | None]
    #: The rating's lines (per tier), as `rating.Line` JSON.
    lines: Mapped[list[Any]] = mapped_column(JSONType)
    period_start: Mapped[datetime]
    period_end: Mapped[datetime]
    event_timestamp: Mapped[datetime]
    #: The journal entry that debited the wallet (or settled the hold).
    entry_id: Mapped[str | None] = mapped_column(sa.String(40))
    authorization_id: Mapped[str | None] = mapped_column(sa.String(40))
    created_at: Mapped[datetime]


class PeriodTotal(Base):
    """A real-time price's running usage in one period, per dimension.

    The row is locked while an event is rated, so an event's marginal fee is
    price(after) − price(before) against a total no other event can move.
    """

    __tablename__ = "realtime_period_totals"
    __table_args__ = (
        sa.PrimaryKeyConstraint(
            "organization_id", "subscription_id", "price_code", "dimension", "period_start"
        ),
    )

    organization_id: Mapped[str] = mapped_column(sa.String(40), sa.ForeignKey("organizations.id"))
    subscription_id: Mapped[str] = mapped_column(sa.String(40))
    price_code: Mapped[str] = mapped_column(sa.String(limits.price_code_length_max))
    #: The dimension's index, −1 for the base price (a key column cannot be null).
    dimension: Mapped[int]
    period_start: Mapped[datetime]
    #: Exact decimal text of the period's total so far.
    quantity: Mapped[str] = mapped_column(sa.String(80))
    event_count: Mapped[int] = mapped_column(sa.BigInteger)
    updated_at: Mapped[datetime]
