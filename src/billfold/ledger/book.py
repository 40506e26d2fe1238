"""The in-memory side of the ledger: entries checked and applied to account
counters before a single write. Pure: no I/O, integers only.

Invariants asserted here (and again by `billfold ledger verify` against the
database): every entry sums to zero per asset within each phase; no pending
counter goes negative; no tracked account ends an entry that lowered it below
its floor.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

PHASES = ("posted", "pending", "release")


class LedgerViolation(AssertionError):
    """An invariant broke: a bug, never a caller's mistake. Never caught."""


def require(condition: bool, message: str) -> None:
    # Survives `python -O`, unlike `assert`.
    if not condition:
        raise LedgerViolation(message)


@dataclass(slots=True)
class Leg:
    account_id: str
    asset_code: str
    phase: str
    debit_minor: int = 0
    credit_minor: int = 0


@dataclass(slots=True)
class Entry:
    id: str
    organization_id: str
    kind: str
    created_at: datetime
    legs: list[Leg]
    reference_id: str | None = None
    customer_id: str | None = None
    details: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class AccountState:
    """A tracked account's counters as loaded, and as changed since."""

    id: str
    asset_code: str
    floor_minor: int
    debits_posted_minor: int = 0
    credits_posted_minor: int = 0
    debits_pending_minor: int = 0
    credits_pending_minor: int = 0
    loaded: tuple[int, int, int, int] = (0, 0, 0, 0)

    @property
    def posted_minor(self) -> int:
        return self.credits_posted_minor - self.debits_posted_minor

    @property
    def available_minor(self) -> int:
        """What may still be debited before the floor: posted less held."""
        return self.posted_minor - self.debits_pending_minor - self.floor_minor

    def counters(self) -> tuple[int, int, int, int]:
        return (
            self.debits_posted_minor,
            self.credits_posted_minor,
            self.debits_pending_minor,
            self.credits_pending_minor,
        )

    def delta(self) -> tuple[int, int, int, int]:
        now = self.counters()
        return (
            now[0] - self.loaded[0],
            now[1] - self.loaded[1],
            now[2] - self.loaded[2],
            now[3] - self.loaded[3],
        )


def check_balanced(entry: Entry) -> None:
    require(bool(entry.legs), f"entry {entry.id} has no legs")
    sums: dict[tuple[str, str], int] = defaultdict(int)
    for leg in entry.legs:
        require(leg.phase in PHASES, f"entry {entry.id}: unknown phase {leg.phase}")
        require(leg.debit_minor >= 0 and leg.credit_minor >= 0, f"entry {entry.id}: negative leg")
        require(
            (leg.debit_minor == 0) != (leg.credit_minor == 0),
            f"entry {entry.id}: a leg is a debit or a credit of a non-zero amount",
        )
        sums[(leg.asset_code, leg.phase)] += leg.debit_minor - leg.credit_minor
    for (asset, phase), total in sums.items():
        require(total == 0, f"entry {entry.id}: {asset} {phase} legs sum to {total}, not 0")


class Book:
    """Tracked accounts of one wallet, plus the entries recorded against them."""

    def __init__(self, accounts: list[AccountState]) -> None:
        self.accounts = {account.id: account for account in accounts}
        self.entries: list[Entry] = []

    def add_account(self, account: AccountState) -> None:
        require(account.id not in self.accounts, f"account {account.id} added twice")
        self.accounts[account.id] = account

    def record(self, entry: Entry) -> None:
        check_balanced(entry)
        lowered: set[str] = set()
        for leg in entry.legs:
            account = self.accounts.get(leg.account_id)
            if account is None:
                continue  # an untracked system account: its balance is the journal's fold
            require(account.asset_code == leg.asset_code, f"entry {entry.id}: asset mismatch")
            before = account.available_minor
            if leg.phase == "posted":
                account.debits_posted_minor += leg.debit_minor
                account.credits_posted_minor += leg.credit_minor
            elif leg.phase == "pending":
                account.debits_pending_minor += leg.debit_minor
                account.credits_pending_minor += leg.credit_minor
            else:
                account.debits_pending_minor -= leg.debit_minor
                account.credits_pending_minor -= leg.credit_minor
            require(
                account.debits_pending_minor >= 0 and account.credits_pending_minor >= 0,
                f"entry {entry.id}: pending counter of {account.id} below zero",
            )
            if account.available_minor < before:
                lowered.add(account.id)
        for account_id in lowered:
            account = self.accounts[account_id]
            require(
                account.available_minor >= 0,
                f"entry {entry.id}: account {account_id} below its floor "
                f"({account.available_minor} past {account.floor_minor})",
            )
        self.entries.append(entry)

    def changed(self) -> list[AccountState]:
        return [a for a in self.accounts.values() if a.delta() != (0, 0, 0, 0)]
