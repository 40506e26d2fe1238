"""Entitlements (`GET /v1/customers/{id}/entitlements/{feature}`).

Goal: the answer follows the customer's active, started subscriptions only;
booleans OR, the largest limit wins (no limit beats all); a metered feature's
`used` is the meter's usage over the current UTC calendar period and nothing
before it; hard enforcement closes access at the limit, soft does not.
Method: a fixed clock two days into a month, events on both sides of the
month boundary, answers compared with hand-computed values on both backends.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from billfold.clock import FrozenClock
from billfold.subscriptions.entitlements import calendar_period
from tests.catalog_support import output_tokens_meter, product, subscribe
from tests.metering_support import event, ingest
from tests.support import assert_problem

NOW = datetime(2030, 3, 2, 10, 30, tzinfo=UTC)


@pytest.fixture
def clock() -> FrozenClock:
    return FrozenClock(NOW)


async def _entitlement(client: httpx.AsyncClient, customer: str, feature: str) -> dict[str, Any]:
    response = await client.get(f"/v1/customers/{customer}/entitlements/{feature}")
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


@pytest.fixture
async def setup(client: httpx.AsyncClient) -> None:
    await output_tokens_meter(client)
    for external_id in ("u1", "u2"):
        await client.post("/v1/customers", json={"external_id": external_id})
    await product(
        client,
        code="pro",
        name="Pro",
        prices=[],
        features=[
            {"code": "sso", "type": "boolean"},
            {"code": "seats", "type": "numeric", "limit": 5},
            {"code": "tokens", "type": "metered", "meter": "output_tokens", "limit": 1000},
        ],
    )
    await product(
        client,
        code="team",
        name="Team",
        prices=[],
        features=[
            {"code": "seats", "type": "numeric", "limit": "10", "enforcement": "soft"},
            {
                "code": "tokens",
                "type": "metered",
                "meter": "output_tokens",
                "limit": 400,
                "enforcement": "soft",
            },
            {"code": "daily", "type": "metered", "meter": "output_tokens", "period": "day"},
        ],
    )
    await product(
        client,
        code="unlimited",
        name="Unlimited",
        prices=[],
        features=[{"code": "seats", "type": "numeric"}],
    )
    await ingest(
        client,
        # The previous month: never counted in March.
        event(
            "e0", datetime(2030, 2, 28, 23, 59, 59, tzinfo=UTC), customer="u1", output_tokens=5000
        ),
        event("e1", datetime(2030, 3, 1, 0, 0, tzinfo=UTC), customer="u1", output_tokens=300),
        event("e2", datetime(2030, 3, 2, 9, 0, tzinfo=UTC), customer="u1", output_tokens=450),
        # Another customer's usage never counts for u1.
        event("e3", datetime(2030, 3, 2, 9, 0, tzinfo=UTC), customer="u2", output_tokens=7),
    )


@pytest.mark.usefixtures("setup")
class TestEntitlements:
    async def test_no_subscription_no_access(self, client: httpx.AsyncClient) -> None:
        body = await _entitlement(client, "ext:u1", "sso")
        assert body["has_access"] is False
        assert body["type"] is None
        assert body["granted_by"] == []

    async def test_each_feature_type(self, client: httpx.AsyncClient) -> None:
        sub = await subscribe(client, customer_id="ext:u1", product="pro")
        sso = await _entitlement(client, "ext:u1", "sso")
        assert (sso["type"], sso["has_access"], sso["granted_by"]) == ("boolean", True, [sub["id"]])
        seats = await _entitlement(client, "ext:u1", "seats")
        assert (seats["type"], seats["has_access"], seats["limit"]) == ("numeric", True, "5")
        assert seats["used"] is None
        assert seats["enforcement"] == "hard"
        tokens = await _entitlement(client, "ext:u1", "tokens")
        assert tokens["type"] == "metered"
        assert (tokens["limit"], tokens["used"], tokens["remaining"]) == ("1000", "750", "250")
        assert tokens["has_access"] is True
        assert (tokens["period_start"], tokens["period_end"]) == (
            "2030-03-01T00:00:00Z",
            "2030-04-01T00:00:00Z",
        )
        assert (await _entitlement(client, "ext:u1", "nope"))["has_access"] is False

    async def test_hard_limit_closes_access(self, client: httpx.AsyncClient) -> None:
        await subscribe(client, customer_id="ext:u1", product="pro")
        await ingest(
            client,
            event("e4", datetime(2030, 3, 2, 10, 0, tzinfo=UTC), customer="u1", output_tokens=250),
        )
        tokens = await _entitlement(client, "ext:u1", "tokens")
        assert (tokens["used"], tokens["remaining"], tokens["has_access"]) == ("1000", "0", False)

    async def test_soft_limit_keeps_access(self, client: httpx.AsyncClient) -> None:
        await subscribe(client, customer_id="ext:u1", product="team")
        tokens = await _entitlement(client, "ext:u1", "tokens")
        assert (tokens["limit"], tokens["used"], tokens["remaining"]) == ("400", "750", "0")
        assert (tokens["enforcement"], tokens["has_access"]) == ("soft", True)
        daily = await _entitlement(client, "ext:u1", "daily")
        # Today only (March 2nd), unlimited.
        assert (daily["used"], daily["limit"], daily["remaining"]) == ("450", None, None)
        assert daily["has_access"] is True
        assert daily["period_start"] == "2030-03-02T00:00:00Z"

    async def test_several_subscriptions_largest_limit_wins(
        self, client: httpx.AsyncClient
    ) -> None:
        pro = await subscribe(client, customer_id="ext:u1", product="pro")
        team = await subscribe(client, customer_id="ext:u1", product="team")
        seats = await _entitlement(client, "ext:u1", "seats")
        assert (seats["limit"], seats["enforcement"]) == ("10", "soft")
        assert seats["granted_by"] == [team["id"], pro["id"]]
        tokens = await _entitlement(client, "ext:u1", "tokens")
        # 1000 (pro, hard) beats 400 (team, soft): that definition's enforcement applies.
        assert (tokens["limit"], tokens["enforcement"], tokens["remaining"]) == (
            "1000",
            "hard",
            "250",
        )
        await subscribe(client, customer_id="ext:u1", product="unlimited")
        seats = await _entitlement(client, "ext:u1", "seats")
        assert (seats["limit"], seats["has_access"]) == (None, True)

    async def test_only_active_started_subscriptions_count(self, client: httpx.AsyncClient) -> None:
        await subscribe(
            client, customer_id="ext:u1", product="pro", start_at="2030-03-03T00:00:00Z"
        )
        assert (await _entitlement(client, "ext:u1", "sso"))["has_access"] is False
        sub = await subscribe(client, customer_id="ext:u2", product="pro")
        assert (await _entitlement(client, "ext:u2", "sso"))["has_access"] is True
        tokens = await _entitlement(client, "ext:u2", "tokens")
        assert tokens["used"] == "7"
        await client.post(f"/v1/subscriptions/{sub['id']}/cancel")
        assert (await _entitlement(client, "ext:u2", "sso"))["has_access"] is False

    async def test_a_version_keeps_its_features(self, client: httpx.AsyncClient) -> None:
        await subscribe(client, customer_id="ext:u1", product="pro")
        response = await client.post("/v1/products/pro/versions", json={"prices": []})
        assert response.status_code == 201
        # The subscription stays on version 1, which still grants sso.
        assert (await _entitlement(client, "ext:u1", "sso"))["has_access"] is True
        await subscribe(client, customer_id="ext:u2", product="pro")
        assert (await _entitlement(client, "ext:u2", "sso"))["has_access"] is False

    async def test_unknown_customer(self, client: httpx.AsyncClient) -> None:
        response = await client.get("/v1/customers/ext:nobody/entitlements/sso")
        assert_problem(response, 404, "customer_not_found", "id")


def test_calendar_periods() -> None:
    at = datetime(2030, 12, 31, 23, 59, tzinfo=UTC)
    assert calendar_period(at, "day") == (
        datetime(2030, 12, 31, tzinfo=UTC),
        datetime(2031, 1, 1, tzinfo=UTC),
    )
    assert calendar_period(at, "month") == (
        datetime(2030, 12, 1, tzinfo=UTC),
        datetime(2031, 1, 1, tzinfo=UTC),
    )
    assert calendar_period(at, "year") == (
        datetime(2030, 1, 1, tzinfo=UTC),
        datetime(2031, 1, 1, tzinfo=UTC),
    )
