from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from billfold.db.base import Base


class Customer(Base):
    """Someone an organization bills, known to it by its own `external_id`."""

    __tablename__ = "customers"
    __table_args__ = (
        # The real guard of "one customer per external id", and the lookup for `ext:` refs.
        sa.UniqueConstraint("organization_id", "external_id"),
        # Lists are newest first within one organization.
        sa.Index("ix_customers_organization_id_id", "organization_id", "id"),
    )

    id: Mapped[str] = mapped_column(sa.String(40), primary_key=True)
    organization_id: Mapped[str] = mapped_column(sa.String(40), sa.ForeignKey("organizations.id"))
    external_id: Mapped[str] = mapped_column(sa.String(255))
    name: Mapped[str | None] = mapped_column(sa.String(200))
    email: Mapped[str | None] = mapped_column(sa.String(254))
    # `metadata` is taken by SQLAlchemy's declarative base; the column keeps the name.
    metadata_: Mapped[dict[str, Any]] = mapped_column("metadata")
    created_at: Mapped[datetime]
