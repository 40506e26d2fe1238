from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from billfold.db.base import Base


class Organization(Base):
    """A tenant. Every other row in every table belongs to exactly one."""

    __tablename__ = "organizations"

    id: Mapped[str] = mapped_column(sa.String(40), primary_key=True)
    name: Mapped[str] = mapped_column(sa.String(200))
    created_at: Mapped[datetime]


class ApiKey(Base):
    """A secret key; only its SHA-256 is stored, the key itself is shown once."""

    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(sa.String(40), primary_key=True)
    organization_id: Mapped[str] = mapped_column(
        sa.String(40), sa.ForeignKey("organizations.id"), index=True
    )
    name: Mapped[str] = mapped_column(sa.String(200))
    key_hash: Mapped[str] = mapped_column(sa.String(64), unique=True)
    # The first characters of the key, so an operator can tell keys apart.
    key_prefix: Mapped[str] = mapped_column(sa.String(16))
    created_at: Mapped[datetime]
    revoked_at: Mapped[datetime | None]
