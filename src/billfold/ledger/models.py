"""The journal and its accounts: the only tables that hold money.

Amounts are integers of the asset's minor units. Customer-owned accounts carry
TigerBeetle-style counters (posted and pending, debits and credits) that are a
cache of the journal; system accounts (revenue, funding, breakage, holds…) are
unconstrained and keep no counters, so no request ever waits on a hot system
row: their balances are folded from postings when read.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from billfold.db.base import Base


class LedgerAccount(Base):
    __tablename__ = "ledger_accounts"
    __table_args__ = (
        sa.UniqueConstraint(
            "organization_id",
            "owner_id",
            "asset_code",
            "role",
            "grant_id",
            name="uq_ledger_accounts_identity",
        ),
        sa.Index("ix_ledger_accounts_owner", "organization_id", "owner_id", "asset_code"),
    )

    id: Mapped[str] = mapped_column(sa.String(40), primary_key=True)
    organization_id: Mapped[str] = mapped_column(sa.String(40), sa.ForeignKey("organizations.id"))
    #: `cus_…` for a customer's wallet accounts, the organization id for system
    #: accounts.
    owner_id: Mapped[str] = mapped_column(sa.String(40))
    asset_code: Mapped[str] = mapped_column(sa.String(20))
    #: main | grant (customer, tracked); funding | revenue | breakage | holds |
    #: adjustments | conversion (system)
    role: Mapped[str] = mapped_column(sa.String(20))
    #: The grant this account funds; "" for every other account (so the unique
    #: key works on both backends).
    grant_id: Mapped[str] = mapped_column(sa.String(40), default="")
    #: Whether the counters below are maintained (customer accounts) or stay
    #: zero (system accounts).
    tracked: Mapped[bool]
    #: Lowest allowed `credits_posted - debits_posted - debits_pending`: 0 for grants, minus the
    #: credit limit for a main account.
    floor_minor: Mapped[int] = mapped_column(sa.BigInteger)
    debits_posted_minor: Mapped[int] = mapped_column(sa.BigInteger, default=0)
    credits_posted_minor: Mapped[int] = mapped_column(sa.BigInteger, default=0)
    debits_pending_minor: Mapped[int] = mapped_column(sa.BigInteger, default=0)
    credits_pending_minor: Mapped[int] = mapped_column(sa.BigInteger, default=0)
    created_at: Mapped[datetime]


class JournalEntry(Base):
    """One atomic movement: its postings sum to zero per asset within each phase."""

    __tablename__ = "journal_entries"
    __table_args__ = (sa.Index("ix_journal_entries_reference", "organization_id", "reference_id"),)

    id: Mapped[str] = mapped_column(sa.String(40), primary_key=True)
    organization_id: Mapped[str] = mapped_column(sa.String(40), sa.ForeignKey("organizations.id"))
    #: grant | adjustment | hold | capture | release | hold_expiry | grant_expiry | conversion
    kind: Mapped[str] = mapped_column(sa.String(20))
    #: What caused it: an authorization, grant or adjustment id.
    reference_id: Mapped[str | None] = mapped_column(sa.String(40))
    #: The customer whose wallet moved, if any.
    customer_id: Mapped[str | None] = mapped_column(sa.String(40))
    details: Mapped[dict[str, Any]] = mapped_column(sa.JSON)
    created_at: Mapped[datetime]


class Posting(Base):
    """One leg of an entry.

    `phase` says which counters it moves: `posted` adds to the posted counters,
    `pending` to the pending ones, and `release` takes back an earlier pending
    amount (capture, release and expiry of a hold).
    """

    __tablename__ = "postings"

    id: Mapped[int] = mapped_column(
        sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True, autoincrement=True
    )
    organization_id: Mapped[str] = mapped_column(sa.String(40), sa.ForeignKey("organizations.id"))
    entry_id: Mapped[str] = mapped_column(
        sa.String(40), sa.ForeignKey("journal_entries.id"), index=True
    )
    account_id: Mapped[str] = mapped_column(
        sa.String(40), sa.ForeignKey("ledger_accounts.id"), index=True
    )
    asset_code: Mapped[str] = mapped_column(sa.String(20))
    phase: Mapped[str] = mapped_column(sa.String(10))
    debit_minor: Mapped[int] = mapped_column(sa.BigInteger)
    credit_minor: Mapped[int] = mapped_column(sa.BigInteger)
