from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from billfold.db.base import Base


class GatewayKey(Base):
    """A key an end customer's code sends to the gateway; it bills that customer.
    Only its SHA-256 is stored, like an API key; the key is shown once."""

    __tablename__ = "gateway_keys"
    __table_args__ = (
        sa.Index(
            "ix_gateway_keys_organization_id_customer_id", "organization_id", "customer_id", "id"
        ),
    )

    id: Mapped[str] = mapped_column(sa.String(40), primary_key=True)
    organization_id: Mapped[str] = mapped_column(sa.String(40), sa.ForeignKey("organizations.id"))
    customer_id: Mapped[str] = mapped_column(sa.String(40), sa.ForeignKey("customers.id"))
    name: Mapped[str] = mapped_column(sa.String(200))
    key_hash: Mapped[str] = mapped_column(sa.String(64), unique=True)
    key_prefix: Mapped[str] = mapped_column(sa.String(16))
    created_at: Mapped[datetime]
    revoked_at: Mapped[datetime | None]


class GatewaySettlement(Base):
    """A call's usage event, written once the gateway has answered and waiting
    to be ingested (rated, charged, its hold settled) with others in one
    transaction. A gateway that dies before ingesting leaves the row; the
    next one to run ingests it, so no answered call goes unbilled."""

    __tablename__ = "gateway_settlements"

    id: Mapped[int] = mapped_column(
        sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True, autoincrement=True
    )
    organization_id: Mapped[str] = mapped_column(sa.String(40), sa.ForeignKey("organizations.id"))
    #: The usage event as `POST /v1/events` takes it, in JSON.
    event: Mapped[str] = mapped_column(sa.Text)
    created_at: Mapped[datetime]
