"""Re-fold the journal and check every invariant; the first violation is named.

1. Every entry has postings, and they sum to zero per asset within each phase.
2. Every tracked account's counters equal the fold of its postings; untracked
   (system) accounts keep zero counters.
3. No pending counter is negative, no tracked account is below its floor.
4. Holds: an authorized hold's splits sum to its amount and are what its
   accounts have pending; a resolved hold split into captured + released;
   every hold has one hold entry and at most one resolution; declines and
   holds of nothing none.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncSession

from billfold.ledger.repository import AuditRepository

RESOLUTION_KINDS = ("capture", "release", "hold_expiry")


@dataclass(frozen=True, slots=True)
class Report:
    entries_checked: int
    accounts_checked: int
    holds_checked: int
    violation: str | None

    @property
    def ok(self) -> bool:
        return self.violation is None


async def verify(session: AsyncSession, organization_id: str | None = None) -> Report:
    audit = AuditRepository(session, organization_id)
    accounts = await audit.accounts()
    holds = await audit.hold_rows()

    def report(violation: str | None, entries: int = 0) -> Report:
        return Report(entries, len(accounts), len(holds), violation)

    unbalanced = await audit.unbalanced_entry()
    if unbalanced is not None:
        entry_id, asset, phase, net = unbalanced
        return report(f"entry {entry_id}: {asset} {phase} postings sum to {net}, not 0")
    empty = await audit.entry_without_postings()
    if empty is not None:
        return report(f"entry {empty} has no postings")

    folds = await audit.folds()
    open_splits = await audit.open_split_totals()
    for account in accounts:
        counters = (
            account.debits_posted_minor,
            account.credits_posted_minor,
            account.debits_pending_minor,
            account.credits_pending_minor,
        )
        if not account.tracked:
            if counters != (0, 0, 0, 0):
                return report(
                    f"system account {account.id} keeps counters {counters}; it should keep none"
                )
            continue
        folded = folds.get(account.id, (0, 0, 0, 0))
        if counters != folded:
            return report(
                f"account {account.id}: counters {counters} differ from the journal's fold {folded}"
            )
        if account.debits_pending_minor < 0 or account.credits_pending_minor < 0:
            return report(f"account {account.id}: a pending counter is negative")
        available = (
            account.credits_posted_minor
            - account.debits_posted_minor
            - account.debits_pending_minor
        )
        if available < account.floor_minor:
            return report(
                f"account {account.id}: balance {available} is below its floor "
                f"{account.floor_minor}"
            )
        if account.debits_pending_minor != open_splits.get(account.id, 0):
            return report(
                f"account {account.id}: pending debits {account.debits_pending_minor} differ from "
                f"its open holds {open_splits.get(account.id, 0)}"
            )

    kinds = await audit.entry_kinds_by_reference(("hold", *RESOLUTION_KINDS))
    for hold_id, status, amount, captured, released, split_total in holds:
        history = kinds.get(hold_id, [])
        if status == "declined":
            if history or split_total:
                return report(f"declined authorization {hold_id} moved money")
            continue
        if amount == 0:
            # A hold of nothing (an estimate that rated to zero) writes no entry.
            if history or split_total or captured or released:
                return report(f"authorization {hold_id} of nothing moved money")
            continue
        if history[:1] != ["hold"] or history.count("hold") != 1:
            return report(f"authorization {hold_id} lacks its one hold entry: {history}")
        if split_total != amount:
            return report(f"authorization {hold_id}: splits sum to {split_total}, not {amount}")
        resolutions = [k for k in history if k in RESOLUTION_KINDS]
        if status == "authorized":
            if resolutions:
                return report(f"open authorization {hold_id} already has {resolutions}")
            continue
        if len(resolutions) != 1:
            return report(f"authorization {hold_id} ({status}) resolved {len(resolutions)} times")
        if not (0 <= captured <= amount and captured + released == amount):
            return report(
                f"authorization {hold_id}: captured {captured} + released {released} "
                f"!= held {amount}"
            )
    return report(None, entries=await audit.count_entries())
