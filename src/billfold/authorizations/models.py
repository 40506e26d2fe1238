from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from billfold.db.base import Base


class Authorization(Base):
    """A hold on a wallet: authorized, then captured, released or expired, once."""

    __tablename__ = "authorizations"
    __table_args__ = (
        sa.Index(
            "ix_authorizations_open",
            "organization_id",
            "customer_id",
            "asset_code",
            "status",
            "expires_at",
        ),
    )

    id: Mapped[str] = mapped_column(sa.String(40), primary_key=True)
    organization_id: Mapped[str] = mapped_column(sa.String(40), sa.ForeignKey("organizations.id"))
    customer_id: Mapped[str] = mapped_column(sa.String(40))
    asset_code: Mapped[str] = mapped_column(sa.String(20))
    amount_minor: Mapped[int] = mapped_column(sa.BigInteger)
    #: authorized | declined | captured | released | expired
    status: Mapped[str] = mapped_column(sa.String(12))
    decline_code: Mapped[str | None] = mapped_column(sa.String(40))
    captured_minor: Mapped[int] = mapped_column(sa.BigInteger)
    released_minor: Mapped[int] = mapped_column(sa.BigInteger)
    expires_at: Mapped[datetime]
    created_at: Mapped[datetime]
    resolved_at: Mapped[datetime | None]
    details: Mapped[dict[str, Any]] = mapped_column(sa.JSON)


class AuthorizationSplit(Base):
    """Where a hold's amount came from, so the unused part returns to the same grants."""

    __tablename__ = "authorization_splits"

    authorization_id: Mapped[str] = mapped_column(
        sa.String(40), sa.ForeignKey("authorizations.id"), primary_key=True
    )
    seq: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
    organization_id: Mapped[str] = mapped_column(sa.String(40), sa.ForeignKey("organizations.id"))
    account_id: Mapped[str] = mapped_column(sa.String(40), sa.ForeignKey("ledger_accounts.id"))
    #: "" when the split came from the main balance.
    grant_id: Mapped[str] = mapped_column(sa.String(40))
    amount_minor: Mapped[int] = mapped_column(sa.BigInteger)
