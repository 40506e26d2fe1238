from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from billfold import limits
from billfold.db.base import Base


class Asset(Base):
    """A custom asset of one organization (`TOKENS`, `GPU_HOURS`, `CREDITS`).

    ISO currencies are built in (`assets/builtin.py`) and have no row. A custom
    asset never changes once created: amounts already stored depend on its scale.
    """

    __tablename__ = "assets"
    __table_args__ = (
        sa.CheckConstraint(f"scale >= 0 AND scale <= {limits.asset_scale_max}", name="scale_range"),
    )

    organization_id: Mapped[str] = mapped_column(
        sa.String(40), sa.ForeignKey("organizations.id"), primary_key=True
    )
    code: Mapped[str] = mapped_column(sa.String(20), primary_key=True)
    name: Mapped[str] = mapped_column(sa.String(100))
    #: Decimal places stored: an amount is an integer of 10**-scale units.
    scale: Mapped[int] = mapped_column(sa.SmallInteger)
    kind: Mapped[str] = mapped_column(sa.String(16))  # custom
    symbol: Mapped[str | None] = mapped_column(sa.String(8))
    created_at: Mapped[datetime]


class ExchangeRate(Base):
    """One unit of `asset_code` costs `rate` units of `base_code` from `valid_from` on.

    Rates are versions, never edited: the one in force at an instant is the
    latest `valid_from` at or before it. Rates are directional; a rate for
    A in B says nothing about B in A.
    """

    __tablename__ = "exchange_rates"
    __table_args__ = (
        # Also the index `rate_at` reads: the latest version at or before an instant.
        sa.UniqueConstraint(
            "organization_id",
            "asset_code",
            "base_code",
            "valid_from",
            # The conventional name would pass PostgreSQL's 63-character limit.
            name="uq_exchange_rates_version",
        ),
    )

    id: Mapped[str] = mapped_column(sa.String(40), primary_key=True)
    organization_id: Mapped[str] = mapped_column(sa.String(40), sa.ForeignKey("organizations.id"))
    asset_code: Mapped[str] = mapped_column(sa.String(20))
    base_code: Mapped[str] = mapped_column(sa.String(20))
    #: A canonical decimal string, read with `Decimal`: exact on every backend.
    rate: Mapped[str] = mapped_column(sa.String(40))
    valid_from: Mapped[datetime]
    created_at: Mapped[datetime]
