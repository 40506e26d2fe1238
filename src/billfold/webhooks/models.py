from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from billfold.db.base import Base


class WebhookEndpoint(Base):
    __tablename__ = "webhook_endpoints"

    id: Mapped[str] = mapped_column(sa.String(40), primary_key=True)
    organization_id: Mapped[str] = mapped_column(
        sa.String(40), sa.ForeignKey("organizations.id"), index=True
    )
    url: Mapped[str] = mapped_column(sa.String(2048))
    topics: Mapped[list[str]] = mapped_column(sa.JSON)
    description: Mapped[str | None] = mapped_column(sa.String(500))
    # The signing secret must be readable to sign; it is never returned after creation.
    secret: Mapped[str] = mapped_column(sa.String(100))
    # After a rotation the old secret still signs until `previous_secret_expires_at`.
    previous_secret: Mapped[str | None] = mapped_column(sa.String(100))
    previous_secret_expires_at: Mapped[datetime | None]
    status: Mapped[str] = mapped_column(sa.String(16))  # enabled | disabled
    disabled_reason: Mapped[str | None] = mapped_column(sa.String(200))
    # Start of the current run of failures; cleared by any success.
    failing_since: Mapped[datetime | None]
    created_at: Mapped[datetime]
    deleted_at: Mapped[datetime | None]


class WebhookEvent(Base):
    """The outbox: written in the same transaction as the change it reports."""

    __tablename__ = "webhook_events"

    id: Mapped[str] = mapped_column(sa.String(40), primary_key=True)
    organization_id: Mapped[str] = mapped_column(
        sa.String(40), sa.ForeignKey("organizations.id"), index=True
    )
    type: Mapped[str] = mapped_column(sa.String(100))
    payload: Mapped[dict[str, Any]]
    created_at: Mapped[datetime]


class WebhookDelivery(Base):
    """One event owed to one endpoint, until delivered or given up."""

    __tablename__ = "webhook_deliveries"
    __table_args__ = (sa.Index("ix_webhook_deliveries_due", "status", "next_attempt_at"),)

    id: Mapped[str] = mapped_column(sa.String(40), primary_key=True)
    organization_id: Mapped[str] = mapped_column(
        sa.String(40), sa.ForeignKey("organizations.id"), index=True
    )
    event_id: Mapped[str] = mapped_column(sa.String(40), sa.ForeignKey("webhook_events.id"))
    endpoint_id: Mapped[str] = mapped_column(
        sa.String(40), sa.ForeignKey("webhook_endpoints.id"), index=True
    )
    status: Mapped[str] = mapped_column(sa.String(16))  # pending | delivered | failed | canceled
    attempt_count: Mapped[int]
    next_attempt_at: Mapped[datetime | None]
    # A worker that claimed the delivery owns it until then; a dead worker's
    # claim simply runs out.
    locked_until: Mapped[datetime | None]
    last_status_code: Mapped[int | None]
    created_at: Mapped[datetime]
    delivered_at: Mapped[datetime | None]


class WebhookAttempt(Base):
    """The delivery log: every POST made, with what came back."""

    __tablename__ = "webhook_attempts"

    id: Mapped[str] = mapped_column(sa.String(40), primary_key=True)
    organization_id: Mapped[str] = mapped_column(
        sa.String(40), sa.ForeignKey("organizations.id"), index=True
    )
    delivery_id: Mapped[str] = mapped_column(
        sa.String(40), sa.ForeignKey("webhook_deliveries.id"), index=True
    )
    attempt_number: Mapped[int]
    attempted_at: Mapped[datetime]
    status_code: Mapped[int | None]
    response_body: Mapped[str | None] = mapped_column(sa.Text)
    error: Mapped[str | None] = mapped_column(sa.String(500))
    duration_ms: Mapped[int]
