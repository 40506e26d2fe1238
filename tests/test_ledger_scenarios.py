"""The ledger's golden scenarios, table-driven where they vary only in numbers.

Adapted from shared/research/ledger-anchors.md §6 (TigerBeetle, Formance and
Blnk behaviours, S1-S20, D1-D3) and run over HTTP on SQLite and PostgreSQL.
After each scenario the whole journal is re-folded by `ledger.verify`.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa

from billfold.api.context import AppContext
from billfold.clock import FrozenClock
from billfold.ids import new_id
from billfold.ledger.book import AccountState, Entry, LedgerViolation, Leg
from billfold.ledger.repository import LedgerRepository, system_account_id
from billfold.ledger.verify import verify
from tests.support import assert_problem
from tests.wallet_support import WalletDriver, new_key


@pytest.fixture
async def wallet(client, ctx: AppContext) -> AsyncIterator[WalletDriver]:
    driver = await WalletDriver.create(client)
    yield driver
    async with ctx.sessions() as session:
        report = await verify(session)
    assert report.ok, report.violation


class TestCaptureAndRelease:
    @pytest.mark.parametrize(
        ("held", "captured", "posted_after", "released"),
        [
            ("100.00", "60.00", "40.00", "40.00"),  # S1: partial capture releases the rest
            ("100.00", "100.00", "0.00", "0.00"),
            ("100.00", "0.00", "100.00", "100.00"),  # capturing nothing releases all
        ],
    )
    async def test_partial_capture_releases_the_remainder(
        self, wallet, held, captured, posted_after, released
    ):
        await wallet.grant("100.00")
        hold = await wallet.authorize(held)
        assert hold["status"] == "authorized"
        response = await wallet.capture(hold["id"], captured)
        assert response.status_code == 200, response.text
        body = response.json()
        assert (body["status"], body["captured_amount"], body["released_amount"]) == (
            "captured",
            captured,
            released,
        )
        balance = await wallet.balance()
        assert (balance["posted"], balance["held"], balance["available"]) == (
            posted_after,
            "0.00",
            posted_after,
        )

    async def test_release_restores_everything(self, wallet):  # S2
        await wallet.grant("100.00")
        hold = await wallet.authorize("12.34")
        assert (await wallet.balance())["available"] == "87.66"
        response = await wallet.release(hold["id"])
        assert response.json()["status"] == "released"
        assert response.json()["released_amount"] == "12.34"
        balance = await wallet.balance()
        assert (balance["posted"], balance["held"], balance["available"]) == (
            "100.00",
            "0.00",
            "100.00",
        )

    async def test_capture_above_the_hold_is_refused_and_capture_all_takes_the_hold(
        self, wallet
    ):  # S3
        await wallet.grant("10.00")
        hold = await wallet.authorize("7.00")
        assert_problem(
            await wallet.capture(hold["id"], "8.00"), 422, "exceeds_authorized_amount", "amount"
        )
        assert (await wallet.balance())["held"] == "7.00"
        response = await wallet.capture(hold["id"])
        assert response.json()["captured_amount"] == "7.00"

    @pytest.mark.parametrize(
        ("first", "second", "code"),
        [
            ("capture", "capture", "already_captured"),
            ("capture", "release", "already_captured"),
            ("release", "capture", "already_released"),
            ("release", "release", "already_released"),
        ],
    )
    async def test_a_hold_resolves_once(self, wallet, first, second, code):  # S5
        await wallet.grant("5.00")
        hold = await wallet.authorize("1.00")
        act = {"capture": wallet.capture, "release": wallet.release}
        assert (await act[first](hold["id"])).status_code == 200
        assert_problem(await act[second](hold["id"]), 409, code, "id")

    async def test_concurrent_double_resolution_has_one_winner(self, wallet):  # S18
        await wallet.grant("50.00")
        holds = [await wallet.authorize("1.00") for _ in range(5)]
        for hold in holds:
            results = await asyncio.gather(
                wallet.capture(hold["id"], "0.50"),
                wallet.release(hold["id"]),
                wallet.capture(hold["id"]),
            )
            assert sorted(r.status_code for r in results) == [200, 409, 409]
        balance = await wallet.balance()
        assert balance["held"] == "0.00"

    async def test_declined_holds_cannot_be_resolved(self, wallet):
        await wallet.grant("1.00")
        declined = await wallet.authorize("2.00")
        assert (declined["status"], declined["decline_code"]) == ("declined", "insufficient_funds")
        assert_problem(await wallet.capture(declined["id"]), 409, "authorization_declined", "id")


class TestExpiry:
    async def test_holds_expire_in_order_and_block_late_capture(
        self, wallet, clock: FrozenClock
    ):  # S6
        await wallet.grant("100.00")
        forever = await wallet.authorize("10.00", ttl_s=3600)
        short = [
            await wallet.authorize(a, ttl_s=t)
            for a, t in (("11.00", 1), ("12.00", 2), ("13.00", 3))
        ]
        assert (await wallet.balance())["held"] == "46.00"
        for expected in ("35.00", "23.00", "10.00"):
            clock.advance(timedelta(seconds=1))
            assert (await wallet.balance())["held"] == expected
        for hold in short:
            assert_problem(await wallet.capture(hold["id"]), 409, "expired", "id")
            fetched = await wallet.http.get(f"/v1/authorizations/{hold['id']}")
            assert fetched.json()["status"] == "expired"
        assert (await wallet.capture(forever["id"])).json()["captured_amount"] == "10.00"
        balance = await wallet.balance()
        assert (balance["posted"], balance["held"]) == ("90.00", "0.00")

    async def test_reading_an_expired_hold_expires_it(self, wallet, clock: FrozenClock):
        await wallet.grant("1.00")
        hold = await wallet.authorize("1.00", ttl_s=5)
        clock.advance(timedelta(seconds=5))
        response = await wallet.http.get(f"/v1/authorizations/{hold['id']}")
        assert response.json()["status"] == "expired"
        assert response.json()["released_amount"] == "1.00"

    async def test_expiring_holds_work_as_a_rate_limit(self, wallet, clock: FrozenClock):  # S20
        await wallet.grant("10.00")
        for _ in range(10):
            assert (await wallet.authorize("1.00", ttl_s=60))["status"] == "authorized"
        assert (await wallet.authorize("1.00", ttl_s=60))["status"] == "declined"
        clock.advance(timedelta(seconds=60))
        assert (await wallet.authorize("1.00", ttl_s=60))["status"] == "authorized"

    async def test_lapsed_grant_remainder_goes_to_breakage(self, wallet, clock: FrozenClock):
        expires = (clock.now() + timedelta(hours=1)).isoformat()
        grant = await wallet.grant("30.00", purpose="promotional", expires_at=expires)
        await wallet.grant("5.00")
        hold = await wallet.authorize("10.00", ttl_s=7200)  # from the promotional grant first
        assert (await wallet.grant_view(grant["id"]))["held"] == "10.00"
        clock.advance(timedelta(hours=1))
        balance = await wallet.balance()
        # 20 unheld went to breakage; the 10 held stay held until the hold resolves.
        assert (balance["posted"], balance["held"], balance["available"]) == (
            "15.00",
            "10.00",
            "5.00",
        )
        assert (await wallet.capture(hold["id"], "4.00")).status_code == 200
        balance = await wallet.balance()
        # The uncaptured 6 of a lapsed grant go to breakage, not back to the wallet.
        assert (balance["posted"], balance["held"], balance["available"]) == (
            "5.00",
            "0.00",
            "5.00",
        )
        assert all(g["id"] != grant["id"] for g in balance["grants"])

    async def test_grant_lapsing_during_a_hold(self, wallet, clock: FrozenClock):  # D3
        expires = (clock.now() + timedelta(minutes=5)).isoformat()
        grant = await wallet.grant("50.00", purpose="promotional", expires_at=expires)
        assert (await wallet.adjust("50.00")).status_code == 201
        hold = await wallet.authorize("80.00", ttl_s=3600)
        assert (await wallet.grant_view(grant["id"]))["held"] == "50.00"
        clock.advance(timedelta(minutes=10))
        response = await wallet.capture(hold["id"], "60.00")
        assert response.json()["released_amount"] == "20.00"
        balance = await wallet.balance()
        # 50 from the grant and 10 from main were consumed; main's other 20 came back.
        assert (balance["posted"], balance["available"]) == ("40.00", "40.00")


class TestConsumptionOrder:
    async def test_waterfall_across_grants(self, wallet):  # S11
        grants = [
            await wallet.grant(a, priority=p) for a, p in (("40.00", 0), ("40.00", 1), ("21.00", 2))
        ]
        hold = await wallet.authorize("100.00")
        assert hold["status"] == "authorized"
        assert [(await wallet.grant_view(g["id"]))["held"] for g in grants] == [
            "40.00",
            "40.00",
            "20.00",
        ]
        await wallet.capture(hold["id"])
        live = {g["id"]: g["remaining"] for g in (await wallet.balance())["grants"]}
        assert live == {grants[0]["id"]: "0.00", grants[1]["id"]: "0.00", grants[2]["id"]: "1.00"}

    async def test_waterfall_short_by_one_moves_nothing(self, wallet):  # S11 negative
        for amount, priority in (("40.00", 0), ("40.00", 1), ("19.00", 2)):
            await wallet.grant(amount, priority=priority)
        assert (await wallet.authorize("100.00"))["decline_code"] == "insufficient_funds"
        balance = await wallet.balance()
        assert (balance["held"], balance["available"]) == ("0.00", "99.00")

    @pytest.mark.parametrize(
        ("grants", "first"),
        [
            # (label, priority, expires_in_h, purpose); the label of the grant consumed first.
            ([("a", 1, None, "paid"), ("b", 0, None, "paid")], "b"),
            ([("a", 0, None, "paid"), ("b", 0, 5, "paid")], "b"),
            ([("a", 0, 9, "paid"), ("b", 0, 5, "paid")], "b"),
            ([("a", 0, None, "paid"), ("b", 0, None, "promotional")], "b"),
            ([("a", 0, None, "paid"), ("b", 0, None, "bundled")], "b"),
            ([("a", 0, None, "bundled"), ("b", 0, None, "promotional")], "b"),
            ([("a", 0, 5, "paid"), ("b", 0, None, "promotional")], "a"),
            ([("a", 0, None, "paid"), ("b", 0, None, "paid")], "a"),  # then creation order
        ],
    )
    async def test_order(self, wallet, clock: FrozenClock, grants, first):
        ids = {}
        for label, priority, expires_in_h, purpose in grants:
            fields = {"priority": priority, "purpose": purpose}
            if expires_in_h is not None:
                fields["expires_at"] = (clock.now() + timedelta(hours=expires_in_h)).isoformat()
            ids[label] = (await wallet.grant("10.00", **fields))["id"]
            clock.advance(timedelta(seconds=1))
        await wallet.authorize("1.00")
        held = {label: (await wallet.grant_view(gid))["held"] for label, gid in ids.items()}
        assert held[first] == "1.00"
        assert all(v == "0.00" for label, v in held.items() if label != first)

    async def test_future_grants_are_not_spendable_yet(self, wallet, clock: FrozenClock):
        start = (clock.now() + timedelta(days=1)).isoformat()
        await wallet.grant("10.00", effective_at=start)
        assert (await wallet.authorize("1.00"))["status"] == "declined"
        clock.advance(timedelta(days=1))
        assert (await wallet.authorize("1.00"))["status"] == "authorized"


class TestLimitsAndAdjustments:
    async def test_pessimistic_reservation(self, wallet):  # S10
        await wallet.grant("100.00")
        assert (
            await wallet.adjust("-70.00", "correction")
        ).status_code == 422  # grants are not main
        assert (await wallet.adjust("100.00")).status_code == 201
        assert (await wallet.adjust("-170.00", "correction")).status_code == 422
        assert (await wallet.adjust("-70.00", "correction")).status_code == 201
        assert (await wallet.authorize("131.00"))["status"] == "declined"
        assert (await wallet.authorize("130.00"))["status"] == "authorized"

    @pytest.mark.parametrize(
        ("balance", "outcome"), [("89.00", "declined"), ("90.00", "authorized")]
    )
    async def test_credit_limit_edge(self, wallet, balance, outcome):  # S13
        response = await wallet.http.patch(
            f"/v1/customers/{wallet.customer_id}/wallet/balances/USD",
            json={"credit_limit": "10.00"},
        )
        assert response.status_code == 200, response.text
        await wallet.adjust(balance)
        hold = await wallet.authorize("100.00")
        assert hold["status"] == outcome
        if outcome == "authorized":
            await wallet.capture(hold["id"])
            assert (await wallet.balance())["posted"] == "-10.00"
            shrink = await wallet.http.patch(
                f"/v1/customers/{wallet.customer_id}/wallet/balances/USD",
                json={"credit_limit": "5.00"},
            )
            assert_problem(
                shrink, 422 if shrink.status_code == 422 else 400, "credit_limit_below_usage"
            )

    async def test_adjustment_debit_beyond_balance_changes_nothing(self, wallet):
        await wallet.adjust("5.00")
        assert_problem(
            await wallet.adjust("-5.01", "correction"), 422, "insufficient_funds", "amount"
        )
        assert (await wallet.balance())["posted"] == "5.00"


class TestFundingAndAnswers:
    async def test_paid_grant_in_another_asset_records_its_rate(self, wallet, client):
        assert (
            await client.post("/v1/assets", json={"code": "TOKENS", "name": "Tokens", "scale": 0})
        ).status_code == 201
        rate = await client.post(
            "/v1/assets/TOKENS/rates", json={"base": "USD", "rate": "0.000002"}
        )
        assert rate.status_code == 201, rate.text
        response = await client.post(
            f"/v1/customers/{wallet.customer_id}/grants",
            json={
                "asset": "TOKENS",
                "paid": {"asset": "USD", "amount": "10.00"},
                "purpose": "paid",
            },
        )
        assert response.status_code == 201, response.text
        grant = response.json()
        assert grant["amount"] == "5000000"
        assert grant["funding"]["rate"] == "0.000002"
        assert grant["funding"]["paid_asset"] == "USD"
        assert (await wallet.authorize("4000000", asset="TOKENS"))["status"] == "authorized"

    async def test_a_decline_is_sticky_for_its_key(self, wallet):
        key = new_key()
        assert (await wallet.authorize("5.00", key=key))["status"] == "declined"
        await wallet.grant("10.00")
        again = await wallet.authorize("5.00", key=key)
        assert again["status"] == "declined"
        assert (await wallet.authorize("5.00"))["status"] == "authorized"

    async def test_replay_is_identical_and_adds_nothing(self, wallet, ctx: AppContext):
        await wallet.grant("10.00")
        key = new_key()
        body = {"customer_id": wallet.customer_id, "asset": "USD", "amount": "1.00"}
        first = await wallet.http.post(
            "/v1/authorizations", json=body, headers={"Idempotency-Key": key}
        )
        rows = await _count(ctx, "journal_entries")
        second = await wallet.http.post(
            "/v1/authorizations", json=body, headers={"Idempotency-Key": key}
        )
        assert second.content == first.content
        assert second.headers["idempotent-replayed"] == "true"
        assert await _count(ctx, "journal_entries") == rows
        changed = await wallet.http.post(
            "/v1/authorizations", json=body | {"amount": "2.00"}, headers={"Idempotency-Key": key}
        )
        assert_problem(changed, 409, "idempotency_key_reused")

    @pytest.mark.parametrize(
        ("body", "code"),
        [
            ({"customer_id": "ext:nobody", "asset": "USD", "amount": "1.00"}, "customer_not_found"),
            ({"asset": "NOPE", "amount": "1.00"}, "asset_not_found"),
        ],
    )
    async def test_declines_without_a_wallet(self, wallet, body, code):
        body = {"customer_id": wallet.customer_id} | body
        key = new_key()
        first = await wallet.http.post(
            "/v1/authorizations", json=body, headers={"Idempotency-Key": key}
        )
        assert first.status_code == 200
        assert (first.json()["status"], first.json()["decline_code"]) == ("declined", code)
        again = await wallet.http.post(
            "/v1/authorizations", json=body, headers={"Idempotency-Key": key}
        )
        assert again.content == first.content

    @pytest.mark.parametrize(
        ("body", "status", "code", "field"),
        [
            ({"amount": "1.0000000001"}, 400, "invalid_amount", "amount"),  # USD keeps 9 decimals
            ({"amount": "-1.00"}, 400, "invalid_amount", "amount"),
            ({"amount": "0"}, 400, "invalid_amount", "amount"),
            ({"amount": "1e3"}, 400, "invalid_amount", "amount"),
            ({"amount": "9" * 30}, 400, "invalid_amount", "amount"),
            ({"amount": 1}, 422, "validation_error", "amount"),
            ({"ttl_s": 0}, 422, "validation_error", "ttl_s"),
            ({"ttl_s": 10**9}, 422, "validation_error", "ttl_s"),
            ({"surprise": True}, 422, "validation_error", "surprise"),
        ],
    )
    async def test_bad_input_changes_nothing(
        self, wallet, ctx: AppContext, body, status, code, field
    ):
        await wallet.grant("10.00")
        entries = await _count(ctx, "journal_entries")
        request = {"customer_id": wallet.customer_id, "asset": "USD", "amount": "1.00"} | body
        response = await wallet.http.post("/v1/authorizations", json=request)
        assert_problem(response, status, code, field)
        assert await _count(ctx, "journal_entries") == entries


class TestIsolationAndIntegrity:
    async def test_other_organizations_see_nothing(self, wallet, app, other_tenant):
        import httpx

        await wallet.grant("10.00")
        hold = await wallet.authorize("1.00")
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://t", headers=other_tenant.headers
        ) as other:
            cid, aid = wallet.customer_id, hold["id"]
            for response in (
                await other.get(f"/v1/customers/{cid}/wallet"),
                await other.post(
                    f"/v1/customers/{cid}/grants",
                    json={"asset": "USD", "amount": "1", "purpose": "paid"},
                ),
                await other.post(
                    f"/v1/customers/{cid}/adjustments",
                    json={"asset": "USD", "amount": "1", "reason": "gift"},
                ),
                await other.get(f"/v1/authorizations/{aid}"),
                await other.post(f"/v1/authorizations/{aid}/capture", json={}),
                await other.post(f"/v1/authorizations/{aid}/release"),
            ):
                assert response.status_code == 404, response.text
            declined = await other.post(
                "/v1/authorizations", json={"customer_id": cid, "asset": "USD", "amount": "1"}
            )
            assert declined.json()["decline_code"] == "customer_not_found"
        assert (await wallet.balance())["held"] == "1.00"

    async def test_the_journal_is_append_only(self, wallet, ctx: AppContext):
        await wallet.grant("1.00")
        for statement in (
            "UPDATE postings SET debit_minor = debit_minor + 1",
            "DELETE FROM journal_entries",
        ):
            async with ctx.sessions() as session:
                with pytest.raises(sa.exc.DBAPIError, match="append-only"):
                    await session.execute(sa.text(statement))

    async def test_verify_names_a_tampered_balance(self, wallet, ctx: AppContext):
        await wallet.grant("1.00")
        async with ctx.sessions() as session:
            await session.execute(
                sa.text(
                    "UPDATE ledger_accounts SET credits_posted_minor = credits_posted_minor + 1 "
                    "WHERE tracked"
                )
            )
            report = await verify(session)
            await session.rollback()
        assert report.violation is not None
        assert "differ from the journal's fold" in report.violation


class TestTheLedgersOwnWrite:
    """`LedgerRepository.write` sends the entries, their postings and the
    counter moves together (one round trip on PostgreSQL); what it refuses
    leaves none of them."""

    async def _grant_account(self, wallet: WalletDriver, ctx: AppContext) -> tuple[str, str, int]:
        """A grant of 10.00: its organization, account and funds in minor units."""
        await wallet.grant("10.00")
        async with ctx.sessions() as session:
            row = (
                await session.execute(
                    sa.text(
                        "SELECT g.organization_id, g.account_id, a.credits_posted_minor "
                        "FROM grants g JOIN ledger_accounts a ON a.id = g.account_id "
                        "WHERE g.customer_id = :c"
                    ),
                    {"c": wallet.customer_id},
                )
            ).one()
        return row[0], row[1], row[2]

    def _spend(self, organization_id: str, account_id: str, amount_minor: int) -> Entry:
        return Entry(
            id=new_id("je"),
            organization_id=organization_id,
            kind="adjustment",
            created_at=datetime.now(UTC),
            legs=[
                Leg(account_id, "USD", "posted", debit_minor=amount_minor),
                Leg(
                    system_account_id(organization_id, "USD", "adjustments"),
                    "USD",
                    "posted",
                    credit_minor=amount_minor,
                ),
            ],
        )

    async def _journal(self, ctx: AppContext) -> tuple[int, int]:
        async with ctx.sessions() as session:
            row = (
                await session.execute(
                    sa.text(
                        "SELECT (SELECT count(*) FROM journal_entries), "
                        "(SELECT count(*) FROM postings)"
                    )
                )
            ).one()
        return row[0], row[1]

    async def test_a_move_below_the_floor_is_refused_whole(self, wallet, ctx: AppContext):
        organization_id, account_id, funds_minor = await self._grant_account(wallet, ctx)
        before = await self._journal(ctx)
        # The application spends one minor unit more than the account holds
        # (as a stale read would): the database's guard refuses the move.
        believed = AccountState(account_id, "USD", 0, debits_posted_minor=funds_minor + 1)
        async with ctx.sessions() as session:
            with pytest.raises(LedgerViolation, match="below its floor"):
                await LedgerRepository(session, organization_id).write(
                    [self._spend(organization_id, account_id, funds_minor + 1)], [believed]
                )
            await session.rollback()
        assert await self._journal(ctx) == before
        assert (await wallet.balance())["available"] == "10.00"

    async def test_a_failed_insert_is_raised_as_sqlalchemy_raises_it(self, wallet, ctx: AppContext):
        organization_id, account_id, funds_minor = await self._grant_account(wallet, ctx)
        tenth = funds_minor // 10
        entry = self._spend(organization_id, account_id, tenth)
        async with ctx.sessions() as session:
            await LedgerRepository(session, organization_id).write(
                [entry], [AccountState(account_id, "USD", 0, debits_posted_minor=tenth)]
            )
            await session.commit()
        before = await self._journal(ctx)
        # The same entry again: its id is taken.
        async with ctx.sessions() as session:
            with pytest.raises(sa.exc.IntegrityError):
                await LedgerRepository(session, organization_id).write(
                    [entry], [AccountState(account_id, "USD", 0, debits_posted_minor=tenth)]
                )
            await session.rollback()
        assert await self._journal(ctx) == before
        assert (await wallet.balance())["available"] == "9.00"


class TestLowBalanceWebhooks:
    async def test_low_and_recovered_fire_once_per_crossing(self, wallet, client, ctx: AppContext):
        endpoint = await client.post(
            "/v1/webhook-endpoints", json={"url": "http://127.0.0.1:9/hook", "topics": ["wallet.*"]}
        )
        assert endpoint.status_code == 201, endpoint.text
        await wallet.grant("10.00")
        configured = await client.patch(
            f"/v1/customers/{wallet.customer_id}/wallet/balances/USD",
            json={"low_balance_threshold": "5.00"},
        )
        assert configured.json()["low_balance_threshold"] == "5.00"
        holds = [await wallet.authorize("3.00") for _ in range(3)]  # 10 -> 7 -> 4 -> 1
        for hold in holds:
            await wallet.release(hold["id"])  # back to 10
        deliveries = await client.get(f"/v1/webhook-endpoints/{endpoint.json()['id']}/deliveries")
        types = sorted(d["event_type"] for d in deliveries.json()["data"])
        assert types == ["wallet.balance_low", "wallet.balance_recovered"]
        low = next(d for d in deliveries.json()["data"] if d["event_type"] == "wallet.balance_low")
        assert low["payload"]["data"]["available"] == "4.00"


async def _count(ctx: AppContext, table: str) -> int:
    async with ctx.sessions() as session:
        return int(await session.scalar(sa.text(f"SELECT count(*) FROM {table}")) or 0)
