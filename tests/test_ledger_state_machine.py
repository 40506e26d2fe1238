"""Property test: the wallet and its holds against an in-memory model.

A Hypothesis rule-based state machine funds grants, adjusts the main
balance, authorizes, captures, releases, replays, changes the credit limit,
sends usage events billed in real time (some settling a hold, some running
the wallet into debt) and moves the clock, over HTTP, on SQLite and on
PostgreSQL. The model is an
independent restatement of the rules (consumption order, lazy expiry, grant
lapse, breakage). After every step the wallet must match the model and
`ledger.verify` must find every invariant intact: entries balanced per
asset, counters equal to the journal's fold, nothing below its floor, each
hold resolved at most once.
"""

from __future__ import annotations

import asyncio
import itertools
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from billfold.api.app import create_app
from billfold.api.context import AppContext
from billfold.clock import FrozenClock
from billfold.config import Settings
from billfold.ledger.verify import verify
from billfold.organizations import service as organizations

CENT = 10**7  # USD is stored at scale 9
PURPOSE_RANK = {"promotional": 0, "bundled": 1, "paid": 2}
FAR = datetime.max.replace(tzinfo=UTC)


def usd(minor: int) -> str:
    sign = "-" if minor < 0 else ""
    cents = abs(minor) // CENT
    return f"{sign}{cents // 100}.{cents % 100:02d}"


def minor_of(text: str) -> int:
    return int(Decimal(text) * 10**9)


@dataclass
class MGrant:
    id: str
    purpose: str
    priority: int
    effective_at: datetime
    expires_at: datetime | None
    created_at: datetime
    remaining: int
    held: int = 0
    lapsed: bool = False

    def key(self) -> tuple[Any, ...]:
        return (
            self.priority,
            self.expires_at is None,
            self.expires_at or FAR,
            PURPOSE_RANK[self.purpose],
            self.effective_at,
            self.created_at,
            self.id,
        )


@dataclass
class MHold:
    id: str
    amount: int
    expires_at: datetime
    status: str
    splits: list[tuple[str, int]] = field(default_factory=list)  # (grant id or "main", amount)


@dataclass
class Model:
    now: datetime
    main_posted: int = 0
    main_held: int = 0
    credit_limit: int = 0
    #: Usage past every source and the credit limit, unpaid.
    debt: int = 0
    grants: dict[str, MGrant] = field(default_factory=dict)
    holds: dict[str, MHold] = field(default_factory=dict)

    def lapsed(self, grant: MGrant) -> bool:
        return grant.lapsed or (grant.expires_at is not None and grant.expires_at <= self.now)

    def settle(self, hold: MHold, capture: int, status: str) -> None:
        left = capture
        for source, amount in hold.splits:
            take = min(left, amount)
            left -= take
            if source == "main":
                self.main_held -= amount
                self.main_posted -= take
                continue
            grant = self.grants[source]
            grant.held -= amount
            grant.remaining -= take
            if self.lapsed(grant):
                grant.remaining -= amount - take  # to breakage
        hold.status = status

    def expire(self) -> None:
        due = sorted(
            (
                h
                for h in self.holds.values()
                if h.status == "authorized" and h.expires_at <= self.now
            ),
            key=lambda h: (h.expires_at, h.id),
        )
        for hold in due:
            self.settle(hold, 0, "expired")
        for grant in self.grants.values():
            if not grant.lapsed and grant.expires_at is not None and grant.expires_at <= self.now:
                grant.remaining = grant.held  # the unheld rest goes to breakage
                grant.lapsed = True

    def usable(self) -> list[MGrant]:
        return sorted(
            (g for g in self.grants.values() if not self.lapsed(g) and g.effective_at <= self.now),
            key=MGrant.key,
        )

    def main_available(self) -> int:
        return self.main_posted - self.main_held + self.credit_limit

    def available(self) -> int:
        return self.main_available() + sum(g.remaining - g.held for g in self.usable())

    def charge(self, amount: int) -> None:
        """Usage: from the grants in order, then the main balance down to its
        limit; the rest is debt. Never refused."""
        left = amount
        for grant in self.usable():
            take = min(left, grant.remaining - grant.held)
            grant.remaining -= take
            left -= take
        take = min(left, max(0, self.main_available()))
        self.main_posted -= take
        self.debt += left - take

    def authorize(self, hold_id: str, amount: int, expires_at: datetime) -> str:
        if amount > self.available():
            self.holds[hold_id] = MHold(hold_id, amount, expires_at, "declined")
            return "declined"
        hold = MHold(hold_id, amount, expires_at, "authorized")
        left = amount
        for grant in self.usable():
            take = min(left, grant.remaining - grant.held)
            if take > 0:
                grant.held += take
                hold.splits.append((grant.id, take))
                left -= take
        if left > 0:
            self.main_held += left
            hold.splits.append(("main", left))
        self.holds[hold_id] = hold
        return "authorized"


RESOLVED = {
    "captured": "already_captured",
    "released": "already_released",
    "expired": "expired",
    "declined": "authorization_declined",
}


class WalletMachine(RuleBasedStateMachine):
    runner: asyncio.Runner
    ctx: AppContext
    clock: FrozenClock
    http: httpx.AsyncClient
    _tenants = itertools.count()

    def __init__(self) -> None:
        super().__init__()
        self.keys = itertools.count()
        self.model = Model(now=self.clock.now())
        self.organization_id, api_key = self.run(self._tenant())
        self.headers = {"Authorization": f"Bearer {api_key}"}
        customer = self.call("POST", "/v1/customers", {"external_id": "machine"})
        self.customer_id = customer.json()["id"]
        self.last_authorize: tuple[dict[str, Any], str, bytes] | None = None
        self.events = itertools.count()
        # One real-time price: a cent per unit of `data.n`.
        meter = {"code": "units", "event_type": "use", "aggregation": "sum", "field": "n"}
        assert self.call("POST", "/v1/meters", meter).status_code == 201
        price = {
            "code": "units",
            "type": "usage",
            "meter": "units",
            "asset": "USD",
            "billing": "real_time",
            "model": "per_unit",
            "unit_amount": "0.01",
        }
        product = {"code": "metered", "name": "Metered", "prices": [price]}
        assert self.call("POST", "/v1/products", product).status_code == 201
        start = (self.model.now - timedelta(days=1)).isoformat()
        subscription = {"customer_id": self.customer_id, "product": "metered", "start_at": start}
        assert self.call("POST", "/v1/subscriptions", subscription).status_code == 201

    async def _tenant(self) -> tuple[str, str]:
        async with self.ctx.sessions() as session:
            organization, issued = await organizations.create_organization(
                session, self.clock, f"machine-{next(self._tenants)}"
            )
            await session.commit()
        return organization.id, issued.secret

    def run(self, coroutine: Any) -> Any:
        return self.runner.run(coroutine)

    def call(
        self, method: str, path: str, body: dict[str, Any] | None = None, key: str | None = None
    ) -> httpx.Response:
        headers = dict(self.headers)
        if method == "POST":
            headers["Idempotency-Key"] = key or f"machine-{next(self.keys)}"
        return self.run(self.http.request(method, path, json=body, headers=headers))

    # Rules

    @rule(
        cents=st.integers(1, 5000),
        purpose=st.sampled_from(["paid", "promotional", "bundled"]),
        priority=st.integers(0, 2),
        expires_in_s=st.none() | st.integers(1, 3600),
    )
    def grant(self, cents: int, purpose: str, priority: int, expires_in_s: int | None) -> None:
        self.model.expire()
        body: dict[str, Any] = {
            "asset": "USD",
            "amount": usd(cents * CENT),
            "purpose": purpose,
            "priority": priority,
        }
        expires_at = (
            None if expires_in_s is None else self.model.now + timedelta(seconds=expires_in_s)
        )
        if expires_at is not None:
            body["expires_at"] = expires_at.isoformat()
        response = self.call("POST", f"/v1/customers/{self.customer_id}/grants", body)
        assert response.status_code == 201, response.text
        grant = response.json()
        self.model.grants[grant["id"]] = MGrant(
            id=grant["id"],
            purpose=purpose,
            priority=priority,
            effective_at=self.model.now,
            expires_at=expires_at,
            created_at=self.model.now,
            remaining=cents * CENT,
        )
        if purpose == "paid":
            repaid = min(self.model.debt, cents * CENT)
            self.model.debt -= repaid
            self.model.grants[grant["id"]].remaining -= repaid

    @rule(cents=st.integers(-3000, 5000).filter(bool))
    def adjust(self, cents: int) -> None:
        self.model.expire()
        amount = cents * CENT
        response = self.call(
            "POST",
            f"/v1/customers/{self.customer_id}/adjustments",
            {"asset": "USD", "amount": usd(amount), "reason": "correction"},
        )
        if amount < 0 and self.model.main_available() < -amount:
            assert response.status_code == 422, response.text
            assert response.json()["code"] == "insufficient_funds"
            return
        assert response.status_code == 201, response.text
        self.model.main_posted += amount
        if amount > 0:
            repaid = min(self.model.debt, amount)
            self.model.debt -= repaid
            self.model.main_posted -= repaid

    @rule(cents=st.integers(1, 4000), settle=st.none() | st.integers(0, 10**6))
    def usage(self, cents: int, settle: int | None) -> None:
        """An event billed in real time, naming one of the holds or none."""
        self.model.expire()
        event: dict[str, Any] = {
            "id": f"use-{next(self.events)}",
            "customer_id": self.customer_id,
            "type": "use",
            "timestamp": self.model.now.isoformat(),
            "data": {"n": cents},
        }
        hold = None if settle is None or not self.model.holds else self._pick(settle)
        if hold is not None:
            event["authorization_id"] = hold.id
        response = self.call("POST", "/v1/events", {"events": [event]})
        assert response.status_code == 200, response.text
        (result,) = response.json()["results"]
        assert result["status"] == "accepted", result
        assert [fee["amount"] for fee in result["fees"]] == [usd(cents * CENT)]
        fee = cents * CENT
        if hold is not None and hold.status == "authorized":
            captured = min(fee, hold.amount)
            self.model.settle(hold, captured, "captured")
            fee -= captured
        if fee:
            self.model.charge(fee)

    @rule(cents=st.integers(0, 2000))
    def set_credit_limit(self, cents: int) -> None:
        self.model.expire()
        limit = cents * CENT
        response = self.call(
            "PATCH",
            f"/v1/customers/{self.customer_id}/wallet/balances/USD",
            {"credit_limit": usd(limit)},
        )
        if self.model.main_posted - self.model.main_held < -limit:
            assert response.status_code == 400, response.text
            assert response.json()["code"] == "credit_limit_below_usage"
            return
        assert response.status_code == 200, response.text
        self.model.credit_limit = limit

    @rule(cents=st.integers(1, 3000), ttl_s=st.integers(1, 600))
    def authorize(self, cents: int, ttl_s: int) -> None:
        self.model.expire()
        body = {
            "customer_id": self.customer_id,
            "asset": "USD",
            "amount": usd(cents * CENT),
            "ttl_s": ttl_s,
        }
        key = f"machine-auth-{next(self.keys)}"
        response = self.call("POST", "/v1/authorizations", body, key=key)
        assert response.status_code == 200, response.text
        answer = response.json()
        expected = self.model.authorize(
            answer["id"], cents * CENT, self.model.now + timedelta(seconds=ttl_s)
        )
        assert answer["status"] == expected, (answer, self.model)
        if expected == "declined":
            assert answer["decline_code"] == "insufficient_funds"
        self.last_authorize = (body, key, response.content)

    @precondition(lambda self: self.last_authorize is not None)
    @rule()
    def replay_authorize(self) -> None:
        assert self.last_authorize is not None
        body, key, content = self.last_authorize
        response = self.call("POST", "/v1/authorizations", body, key=key)
        assert response.content == content
        assert response.headers["idempotent-replayed"] == "true"

    def _pick(self, index: int) -> MHold:
        holds = sorted(self.model.holds.values(), key=lambda h: h.id)
        return holds[index % len(holds)]

    @precondition(lambda self: bool(self.model.holds))
    @rule(index=st.integers(0, 10**6), cents=st.none() | st.integers(0, 3100))
    def capture(self, index: int, cents: int | None) -> None:
        self.model.expire()
        hold = self._pick(index)
        body = {} if cents is None else {"amount": usd(cents * CENT)}
        response = self.call("POST", f"/v1/authorizations/{hold.id}/capture", body)
        self._check_resolution(hold, response, None if cents is None else cents * CENT, "captured")

    @precondition(lambda self: bool(self.model.holds))
    @rule(index=st.integers(0, 10**6))
    def release(self, index: int) -> None:
        self.model.expire()
        hold = self._pick(index)
        response = self.call("POST", f"/v1/authorizations/{hold.id}/release")
        self._check_resolution(hold, response, 0, "released")

    def _check_resolution(
        self, hold: MHold, response: httpx.Response, amount: int | None, status: str
    ) -> None:
        if hold.status != "authorized":
            assert response.status_code == 409, response.text
            assert response.json()["code"] == RESOLVED[hold.status]
            return
        if amount is not None and amount > hold.amount:
            assert response.status_code == 422, response.text
            assert response.json()["code"] == "exceeds_authorized_amount"
            return
        assert response.status_code == 200, response.text
        captured = hold.amount if amount is None else amount
        self.model.settle(hold, captured, status)
        assert response.json()["status"] == status
        assert minor_of(response.json()["captured_amount"]) == captured

    @rule(seconds=st.sampled_from([0, 1, 5, 30, 120, 600, 3600]))
    def advance(self, seconds: int) -> None:
        self.clock.advance(timedelta(seconds=seconds))
        self.model.now = self.clock.now()

    # After every step

    @invariant()
    def wallet_matches_model(self) -> None:
        self.model.expire()
        response = self.call("GET", f"/v1/customers/{self.customer_id}/wallet")
        assert response.status_code == 200, response.text
        balances = {b["asset"]: b for b in response.json()["balances"]}
        if "USD" not in balances:
            assert not self.model.grants
            assert self.model.main_posted == 0
            return
        usd_balance = balances["USD"]
        model = self.model
        posted = model.main_posted + sum(g.remaining for g in model.grants.values())
        held = model.main_held + sum(g.held for g in model.grants.values())
        assert minor_of(usd_balance["posted"]) == posted
        assert minor_of(usd_balance["held"]) == held
        assert minor_of(usd_balance["available"]) == model.available()
        assert minor_of(usd_balance["debt"]) == model.debt
        assert model.available() >= 0, "no balance below its limit, ever"
        live = {g["id"]: g for g in usd_balance["grants"]}
        for grant in model.grants.values():
            if grant.lapsed and grant.held == 0:
                assert grant.id not in live
                continue
            assert minor_of(live[grant.id]["remaining"]) == grant.remaining, grant
            assert minor_of(live[grant.id]["held"]) == grant.held, grant

    @invariant()
    def journal_verifies(self) -> None:
        async def check() -> str | None:
            async with self.ctx.sessions() as session:
                return (await verify(session, self.organization_id)).violation

        assert self.run(check()) is None


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"], indirect=False)
def test_wallet_state_machine(database_url: str) -> None:
    clock = FrozenClock(datetime.now(UTC).replace(microsecond=0))
    with asyncio.Runner() as runner:
        ctx = AppContext.create(
            Settings(database_url=database_url, log_level="WARNING", run_worker_in_server=False),
            clock=clock,
        )
        app = create_app(ctx, run_worker=False)
        http = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://machine.test"
        )
        WalletMachine.runner, WalletMachine.ctx, WalletMachine.clock, WalletMachine.http = (
            runner,
            ctx,
            clock,
            http,
        )
        try:
            WalletMachine.TestCase.settings = settings(
                max_examples=25,
                stateful_step_count=30,
                deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
            )
            WalletMachine.TestCase().runTest()
        finally:
            runner.run(http.aclose())
            runner.run(ctx.engine.dispose())
