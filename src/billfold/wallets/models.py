from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from billfold.db.base import Base


class Wallet(Base):
    """A customer's balance in one asset: a main account plus grants.

    The row is also the wallet's lock: every change to the wallet's accounts
    locks it first, so a batch of holds locks one row once.
    """

    __tablename__ = "wallets"

    organization_id: Mapped[str] = mapped_column(
        sa.String(40), sa.ForeignKey("organizations.id"), primary_key=True
    )
    customer_id: Mapped[str] = mapped_column(sa.String(40), primary_key=True)
    asset_code: Mapped[str] = mapped_column(sa.String(20), primary_key=True)
    main_account_id: Mapped[str] = mapped_column(sa.String(40), sa.ForeignKey("ledger_accounts.id"))
    credit_limit_minor: Mapped[int] = mapped_column(sa.BigInteger)
    #: What usage took beyond the floor: a receivable the next paid top-up
    #: repays first. Opened on the first shortfall.
    debt_account_id: Mapped[str | None] = mapped_column(
        sa.String(40), sa.ForeignKey("ledger_accounts.id")
    )
    low_balance_threshold_minor: Mapped[int | None] = mapped_column(sa.BigInteger)
    #: ok | low — so `wallet.balance_low` fires once per crossing, not per debit.
    low_balance_state: Mapped[str] = mapped_column(sa.String(8))
    #: No hold or grant of this wallet expires before this instant; the hot
    #: path skips the expiry sweep until then.
    sweep_due_at: Mapped[datetime | None] = mapped_column(index=True)
    created_at: Mapped[datetime]


class Grant(Base):
    """A funded sub-balance of a wallet, consumed in one deterministic order."""

    __tablename__ = "grants"
    __table_args__ = (
        sa.Index("ix_grants_wallet", "organization_id", "customer_id", "asset_code", "status"),
    )

    id: Mapped[str] = mapped_column(sa.String(40), primary_key=True)
    organization_id: Mapped[str] = mapped_column(sa.String(40), sa.ForeignKey("organizations.id"))
    customer_id: Mapped[str] = mapped_column(sa.String(40))
    asset_code: Mapped[str] = mapped_column(sa.String(20))
    account_id: Mapped[str] = mapped_column(sa.String(40), sa.ForeignKey("ledger_accounts.id"))
    #: paid | promotional | bundled
    purpose: Mapped[str] = mapped_column(sa.String(16))
    #: Lower is consumed first.
    priority: Mapped[int]
    amount_minor: Mapped[int] = mapped_column(sa.BigInteger)
    effective_at: Mapped[datetime]
    expires_at: Mapped[datetime | None]
    #: active | expired
    status: Mapped[str] = mapped_column(sa.String(10))
    expired_at: Mapped[datetime | None]
    #: Funding details: what was paid, in which asset, at which rate.
    details: Mapped[dict[str, Any]] = mapped_column(sa.JSON)
    created_at: Mapped[datetime]


class Adjustment(Base):
    """A signed manual movement of a wallet's main balance, with its reason."""

    __tablename__ = "adjustments"

    id: Mapped[str] = mapped_column(sa.String(40), primary_key=True)
    organization_id: Mapped[str] = mapped_column(sa.String(40), sa.ForeignKey("organizations.id"))
    customer_id: Mapped[str] = mapped_column(sa.String(40), index=True)
    asset_code: Mapped[str] = mapped_column(sa.String(20))
    amount_minor: Mapped[int] = mapped_column(sa.BigInteger)
    reason: Mapped[str] = mapped_column(sa.String(20))
    description: Mapped[str | None] = mapped_column(sa.String(500))
    entry_id: Mapped[str] = mapped_column(sa.String(40), sa.ForeignKey("journal_entries.id"))
    created_at: Mapped[datetime]
