"""A wallet loaded under its lock: grants in consumption order, holds and
their settlement, grant expiry. Pure: the service loads and writes it.

Consumption order (debits, holds and expiry alike): priority (lower first),
then soonest expiry (none last), then promotional before bundled before paid,
then effective time, creation time, id. The main balance comes after every
grant and may go down to minus the wallet's credit limit.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from billfold.ids import new_id
from billfold.ledger.book import AccountState, Book, Entry, Leg, require
from billfold.ledger.repository import system_account_id

PURPOSE_RANK = {"promotional": 0, "bundled": 1, "paid": 2}
_FAR_FUTURE = datetime.max.replace(tzinfo=UTC)


@dataclass(slots=True)
class GrantState:
    id: str
    account: AccountState
    purpose: str
    priority: int
    effective_at: datetime
    expires_at: datetime | None
    created_at: datetime
    status: str

    def usable(self, now: datetime) -> bool:
        return self.status == "active" and self.effective_at <= now and not self.lapsed(now)

    def lapsed(self, now: datetime) -> bool:
        return self.status == "expired" or (self.expires_at is not None and self.expires_at <= now)

    def order_key(self) -> tuple[int, bool, datetime, int, datetime, datetime, str]:
        return (
            self.priority,
            self.expires_at is None,
            self.expires_at or _FAR_FUTURE,
            PURPOSE_RANK[self.purpose],
            self.effective_at,
            self.created_at,
            self.id,
        )


@dataclass(frozen=True, slots=True)
class Split:
    account_id: str
    grant_id: str  # "" for the main balance
    amount_minor: int


@dataclass(frozen=True, slots=True)
class Charge:
    entry: Entry
    #: What the wallet's balances covered, and what became debt.
    covered_minor: int
    shortfall_minor: int


@dataclass(frozen=True, slots=True)
class Settlement:
    captured_minor: int
    released_minor: int
    #: Of the released amount, what went to breakage because its grant had expired.
    broken_minor: int
    #: The entry that settled it; None for a hold of nothing.
    entry_id: str | None


class WalletState:
    def __init__(
        self,
        *,
        organization_id: str,
        customer_id: str,
        asset_code: str,
        main: AccountState,
        grants: list[GrantState],
    ) -> None:
        self.organization_id = organization_id
        self.customer_id = customer_id
        self.asset_code = asset_code
        self.main = main
        self.grants = {grant.id: grant for grant in grants}
        self.book = Book([main, *(grant.account for grant in grants)])
        self.expired_grant_ids: list[str] = []
        #: The receivable usage ran up beyond the floor; None until the first shortfall.
        self.debt: AccountState | None = None

    def attach_debt(self, account: AccountState) -> None:
        require(self.debt is None, "a wallet has one debt account")
        self.debt = account
        self.book.add_account(account)

    def system(self, role: str) -> str:
        return system_account_id(self.organization_id, self.asset_code, role)

    # Reading

    def ordered_grants(self) -> list[GrantState]:
        return sorted(self.grants.values(), key=GrantState.order_key)

    def available_minor(self, now: datetime) -> int:
        total = self.main.available_minor
        for grant in self.grants.values():
            if grant.usable(now):
                total += grant.account.available_minor
        return total

    def held_minor(self) -> int:
        return self.main.debits_pending_minor + sum(
            g.account.debits_pending_minor for g in self.grants.values()
        )

    def posted_minor(self) -> int:
        return self.main.posted_minor + sum(g.account.posted_minor for g in self.grants.values())

    def debt_minor(self) -> int:
        """What usage took beyond the wallet's funds and limit, still unpaid."""
        return 0 if self.debt is None else -self.debt.posted_minor

    # Writing

    def _entry(
        self, kind: str, now: datetime, legs: list[Leg], reference_id: str | None, **details: object
    ) -> Entry:
        entry = Entry(
            id=new_id("je"),
            organization_id=self.organization_id,
            kind=kind,
            created_at=now,
            legs=legs,
            reference_id=reference_id,
            customer_id=self.customer_id,
            details=dict(details),
        )
        self.book.record(entry)
        return entry

    def plan(self, amount_minor: int, now: datetime) -> list[Split] | None:
        """Take `amount_minor` from the sources in consumption order, or None if short."""
        splits, shortfall = self._take(amount_minor, now)
        return splits if shortfall == 0 else None

    def _take(self, amount_minor: int, now: datetime) -> tuple[list[Split], int]:
        """As much of `amount_minor` as the sources hold, in consumption order,
        and what is left over."""
        require(amount_minor > 0, "a debit is positive")
        splits: list[Split] = []
        remaining = amount_minor
        for grant in self.ordered_grants():
            if remaining == 0:
                break
            if not grant.usable(now):
                continue
            take = min(remaining, grant.account.available_minor)
            if take > 0:
                splits.append(Split(grant.account.id, grant.id, take))
                remaining -= take
        if remaining > 0:
            take = min(remaining, self.main.available_minor)
            if take > 0:
                splits.append(Split(self.main.id, "", take))
                remaining -= take
        return splits, remaining

    def charge(
        self,
        reference_id: str | None,
        amount_minor: int,
        now: datetime,
        kind: str,
        **details: object,
    ) -> Charge:
        """Debit usage that already happened: from the sources in consumption
        order, and what they cannot cover from the debt account. Never refuses;
        the caller attaches the debt account first when a shortfall is possible."""
        splits, shortfall = self._take(amount_minor, now)
        legs = [
            Leg(s.account_id, self.asset_code, "posted", debit_minor=s.amount_minor) for s in splits
        ]
        if shortfall > 0:
            require(self.debt is not None, "a shortfall needs the wallet's debt account")
            assert self.debt is not None
            legs.append(Leg(self.debt.id, self.asset_code, "posted", debit_minor=shortfall))
        legs.append(
            Leg(self.system("revenue"), self.asset_code, "posted", credit_minor=amount_minor)
        )
        entry = self._entry(kind, now, legs, reference_id, **details)
        return Charge(entry, amount_minor - shortfall, shortfall)

    def repay_debt(
        self, source: AccountState, arrived_minor: int, now: datetime, reference_id: str
    ) -> int:
        """Pay the wallet's debt first from the `arrived_minor` that just came
        into `source` (never from its credit line); returns what was repaid."""
        if self.debt is None:
            return 0
        amount = min(self.debt_minor(), arrived_minor, source.available_minor)
        if amount <= 0:
            return 0
        self._entry(
            "debt_repayment",
            now,
            [
                Leg(source.id, self.asset_code, "posted", debit_minor=amount),
                Leg(self.debt.id, self.asset_code, "posted", credit_minor=amount),
            ],
            reference_id,
        )
        return amount

    def hold(self, authorization_id: str, amount_minor: int, now: datetime) -> list[Split] | None:
        if amount_minor == 0:
            # An estimate that rates to nothing (free units) still gets a hold
            # to settle against; it holds nothing and writes no entry.
            return []
        splits = self.plan(amount_minor, now)
        if splits is None:
            return None
        legs = [
            Leg(s.account_id, self.asset_code, "pending", debit_minor=s.amount_minor)
            for s in splits
        ]
        legs.append(
            Leg(self.system("holds"), self.asset_code, "pending", credit_minor=amount_minor)
        )
        self._entry("hold", now, legs, authorization_id)
        return splits

    def settle(
        self,
        authorization_id: str,
        splits: list[Split],
        capture_minor: int,
        kind: str,
        now: datetime,
    ) -> Settlement:
        """Resolve a hold: capture `capture_minor` from its splits in order, release the rest.

        Released amounts return to the grants they came from, except a grant
        that has lapsed since, whose share goes to breakage.
        """
        held = sum(s.amount_minor for s in splits)
        require(0 <= capture_minor <= held, "a capture never exceeds its hold")
        if held == 0:
            return Settlement(0, 0, 0, None)
        legs = [
            Leg(s.account_id, self.asset_code, "release", debit_minor=s.amount_minor)
            for s in splits
        ]
        legs.append(Leg(self.system("holds"), self.asset_code, "release", credit_minor=held))
        to_capture = capture_minor
        broken = 0
        for split in splits:
            take = min(to_capture, split.amount_minor)
            to_capture -= take
            if take > 0:
                legs.append(Leg(split.account_id, self.asset_code, "posted", debit_minor=take))
            rest = split.amount_minor - take
            grant = self.grants.get(split.grant_id) if split.grant_id else None
            if rest > 0 and grant is not None and grant.lapsed(now):
                legs.append(Leg(split.account_id, self.asset_code, "posted", debit_minor=rest))
                broken += rest
        if capture_minor > 0:
            legs.append(
                Leg(self.system("revenue"), self.asset_code, "posted", credit_minor=capture_minor)
            )
        if broken > 0:
            legs.append(
                Leg(self.system("breakage"), self.asset_code, "posted", credit_minor=broken)
            )
        entry = self._entry(kind, now, legs, authorization_id)
        return Settlement(capture_minor, held - capture_minor, broken, entry.id)

    def expire_grants(self, now: datetime) -> None:
        """Move each lapsed grant's unheld remainder to breakage; held parts
        follow when their holds resolve."""
        for grant in self.ordered_grants():
            if grant.status != "active" or grant.expires_at is None or grant.expires_at > now:
                continue
            remainder = grant.account.available_minor
            if remainder > 0:
                self._entry(
                    "grant_expiry",
                    now,
                    [
                        Leg(grant.account.id, self.asset_code, "posted", debit_minor=remainder),
                        Leg(
                            self.system("breakage"),
                            self.asset_code,
                            "posted",
                            credit_minor=remainder,
                        ),
                    ],
                    grant.id,
                )
            grant.status = "expired"
            self.expired_grant_ids.append(grant.id)

    def fund_grant(
        self,
        grant: GrantState,
        amount_minor: int,
        now: datetime,
        *,
        paid: tuple[str, int] | None = None,
        **details: object,
    ) -> Entry:
        """Credit a new grant. Paid in another asset (`paid` = (asset, minor)),
        the payment and the grant meet in the conversion accounts, one pair per
        asset, and the rate is recorded in the entry's details."""
        self.grants[grant.id] = grant
        self.book.add_account(grant.account)
        legs = [Leg(grant.account.id, self.asset_code, "posted", credit_minor=amount_minor)]
        if paid is None:
            legs.append(
                Leg(self.system("funding"), self.asset_code, "posted", debit_minor=amount_minor)
            )
        else:
            paid_asset, paid_minor = paid
            legs += [
                Leg(self.system("conversion"), self.asset_code, "posted", debit_minor=amount_minor),
                Leg(
                    system_account_id(self.organization_id, paid_asset, "funding"),
                    paid_asset,
                    "posted",
                    debit_minor=paid_minor,
                ),
                Leg(
                    system_account_id(self.organization_id, paid_asset, "conversion"),
                    paid_asset,
                    "posted",
                    credit_minor=paid_minor,
                ),
            ]
        return self._entry("grant", now, legs, grant.id, **details)

    def adjust(
        self, adjustment_id: str, amount_minor: int, now: datetime, reason: str
    ) -> Entry | None:
        """Signed change of the main balance; None when a debit would pass the floor."""
        require(amount_minor != 0, "an adjustment moves something")
        if amount_minor < 0 and self.main.available_minor < -amount_minor:
            return None
        main_leg = (
            Leg(self.main.id, self.asset_code, "posted", credit_minor=amount_minor)
            if amount_minor > 0
            else Leg(self.main.id, self.asset_code, "posted", debit_minor=-amount_minor)
        )
        other_leg = (
            Leg(self.system("adjustments"), self.asset_code, "posted", debit_minor=amount_minor)
            if amount_minor > 0
            else Leg(
                self.system("adjustments"), self.asset_code, "posted", credit_minor=-amount_minor
            )
        )
        return self._entry("adjustment", now, [other_leg, main_leg], adjustment_id, reason=reason)

    def next_expiry(self, hold_expiries: list[datetime]) -> datetime | None:
        candidates = [
            g.expires_at for g in self.grants.values() if g.status == "active" and g.expires_at
        ]
        candidates.extend(hold_expiries)
        return min(candidates) if candidates else None
