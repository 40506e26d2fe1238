"""Products, immutable versions and minimal subscriptions.

Goal: a version, once created, reads back the same forever, whatever comes
after it; every bad price or feature is refused with a stable code naming the
field at fault and leaves no row; another organization's product or
subscription answers exactly the 404 a missing one does. Method: HTTP round
trips on both backends, a table of invalid definitions, row counts.
"""

from __future__ import annotations

import copy
from typing import Any

import httpx
import pytest

from billfold.api.context import AppContext
from tests.catalog_support import GRADUATED, output_tokens_meter, product, subscribe, version
from tests.support import assert_problem, count_rows


@pytest.fixture
async def meter(client: httpx.AsyncClient) -> None:
    await output_tokens_meter(client)


FEATURES: list[dict[str, Any]] = [
    {"code": "sso", "type": "boolean"},
    {"code": "seats", "type": "numeric", "limit": 5},
    {"code": "tokens", "type": "metered", "meter": "output_tokens", "limit": "1000000"},
]


def _pro(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "code": "pro",
        "name": "Pro",
        "prices": [
            copy.deepcopy(GRADUATED),
            {"code": "base", "type": "fixed", "asset": "USD", "amount": "20"},
            {
                "code": "monthly_credits",
                "type": "credits",
                "asset": "USD",
                "amount": "5",
                "refresh": "rollover",
                "rollover_cap": "10",
            },
        ],
        "features": copy.deepcopy(FEATURES),
    }
    return body | overrides


@pytest.mark.usefixtures("meter")
class TestProducts:
    async def test_create_stores_the_canonical_definition_as_version_1(
        self, client: httpx.AsyncClient
    ) -> None:
        body = await product(client, **_pro())
        assert body["id"].startswith("prod_")
        assert (body["code"], body["name"], body["latest_version"]) == ("pro", "Pro", 1)
        v1 = body["version"]
        assert (v1["product"], v1["number"]) == ("pro", 1)
        usage, fixed, credits = v1["prices"]
        # Every default written out, amounts as the asset writes them.
        assert usage == {
            "code": "tokens_out",
            "type": "usage",
            "meter": "output_tokens",
            "asset": "USD",
            "billing": "real_time",
            "model": "graduated",
            "tiers": [
                {"up_to": "1000", "unit_amount": "0.01", "flat_amount": "1.00"},
                {"up_to": None, "unit_amount": "0.008", "flat_amount": "0.00"},
            ],
        }
        assert fixed == {
            "code": "base",
            "type": "fixed",
            "asset": "USD",
            "billing": "in_advance",
            "amount": "20.00",
            "interval": "month",
        }
        assert credits == {
            "code": "monthly_credits",
            "type": "credits",
            "asset": "USD",
            "amount": "5.00",
            "refresh": "rollover",
            "rollover_cap": "10.00",
        }
        assert v1["features"] == [
            {"code": "sso", "type": "boolean"},
            {"code": "seats", "type": "numeric", "limit": "5", "enforcement": "hard"},
            {
                "code": "tokens",
                "type": "metered",
                "meter": "output_tokens",
                "period": "month",
                "limit": "1000000",
                "enforcement": "hard",
            },
        ]

    async def test_versions_are_immutable(self, client: httpx.AsyncClient) -> None:
        v1 = (await product(client, **_pro()))["version"]
        cheaper = copy.deepcopy(GRADUATED)
        cheaper["tiers"][1]["unit_amount"] = "0.005"
        v2 = await version(client, "pro", prices=[cheaper])
        assert v2["number"] == 2
        assert v2["features"] == []
        v3 = await version(client, "pro", prices=[], features=[{"code": "sso", "type": "boolean"}])
        assert v3["number"] == 3

        again = await client.get("/v1/products/pro/versions/1")
        assert again.status_code == 200
        assert again.json() == v1
        assert (await client.get("/v1/products/pro/versions/2")).json() == v2
        latest = (await client.get("/v1/products/pro")).json()
        assert latest["latest_version"] == 3
        assert latest["version"] == v3
        for missing in ("0", "4", "999999"):
            assert_problem(
                await client.get(f"/v1/products/pro/versions/{missing}"),
                404,
                "product_version_not_found",
            )

    async def test_a_code_is_taken_once(self, client: httpx.AsyncClient, ctx: AppContext) -> None:
        await product(client, **_pro())
        response = await client.post("/v1/products", json=_pro(name="Another"))
        assert_problem(response, 409, "product_code_taken", "code")
        assert await count_rows(ctx, "product_versions") == 1

    async def test_list_newest_first_with_latest_version(self, client: httpx.AsyncClient) -> None:
        await product(client, code="a", name="A", prices=[])
        await product(client, code="b", name="B", prices=[])
        await version(client, "a", prices=[], features=[{"code": "x", "type": "boolean"}])
        page = (await client.get("/v1/products", params={"limit": 1})).json()
        assert page["has_more"] is True
        assert [p["code"] for p in page["data"]] == ["b"]
        rest = (
            await client.get("/v1/products", params={"starting_after": page["data"][0]["id"]})
        ).json()
        assert [(p["code"], p["version"]["number"]) for p in rest["data"]] == [("a", 2)]
        assert rest["has_more"] is False

    async def test_unknown_product(self, client: httpx.AsyncClient) -> None:
        assert_problem(await client.get("/v1/products/nope"), 404, "product_not_found")
        response = await client.post("/v1/products/nope/versions", json={"prices": []})
        assert_problem(response, 404, "product_not_found")


def _price(**changes: Any) -> dict[str, Any]:
    price = copy.deepcopy(GRADUATED)
    for key, value in changes.items():
        if value is None:
            price.pop(key, None)
        else:
            price[key] = value
    return price


INVALID: list[tuple[str, dict[str, Any], int, str, str]] = [
    (
        "tier bound not rising",
        {
            "prices": [
                _price(
                    tiers=[
                        {"up_to": "0", "unit_amount": "1"},
                        {"up_to": None, "unit_amount": "1"},
                    ]
                )
            ]
        },
        400,
        "invalid_tiers",
        "prices.0.tiers.0.up_to",
    ),
    (
        "second price's tier",
        {
            "prices": [
                _price(code="a"),
                _price(code="b", tiers=[{"up_to": "10", "unit_amount": "1"}]),
            ]
        },
        400,
        "invalid_tiers",
        "prices.1.tiers.0.up_to",
    ),
    (
        "float unit price",
        {"prices": [_price(model="per_unit", tiers=None, unit_amount=0.5)]},
        400,
        "invalid_price",
        "prices.0.unit_amount",
    ),
    (
        "duplicate price code",
        {"prices": [_price(), _price()]},
        400,
        "duplicate_price_code",
        "prices.1.code",
    ),
    (
        "volume in real time",
        {"prices": [_price(model="volume")]},
        400,
        "real_time_volume_unsupported",
        "prices.0.billing",
    ),
    (
        "usage in advance",
        {"prices": [_price(billing="in_advance")]},
        400,
        "invalid_billing",
        "prices.0.billing",
    ),
    ("no billing", {"prices": [_price(billing=None)]}, 400, "invalid_billing", "prices.0.billing"),
    ("no meter", {"prices": [_price(meter=None)]}, 400, "invalid_price", "prices.0.meter"),
    ("unknown meter", {"prices": [_price(meter="nope")]}, 404, "meter_not_found", "prices.0.meter"),
    (
        "bad meter code",
        {"prices": [_price(meter="a b")]},
        400,
        "invalid_meter_code",
        "prices.0.meter",
    ),
    ("unknown asset", {"prices": [_price(asset="ZZZ")]}, 404, "asset_not_found", "prices.0.asset"),
    ("unknown type", {"prices": [_price(type="bundle")]}, 400, "invalid_price", "prices.0.type"),
    ("bad code", {"prices": [_price(code="a/b")]}, 400, "invalid_price", "prices.0.code"),
    ("stray key", {"prices": [_price(colour="red")]}, 400, "invalid_price", "prices.0.colour"),
    (
        "fixed amount finer than the asset",
        {"prices": [{"code": "f", "type": "fixed", "asset": "USD", "amount": "1.0000000001"}]},
        400,
        "invalid_amount",
        "prices.0.amount",
    ),
    (
        "fixed in real time",
        {
            "prices": [
                {
                    "code": "f",
                    "type": "fixed",
                    "asset": "USD",
                    "amount": "1",
                    "billing": "real_time",
                }
            ]
        },
        400,
        "invalid_billing",
        "prices.0.billing",
    ),
    (
        "fixed interval",
        {
            "prices": [
                {"code": "f", "type": "fixed", "asset": "USD", "amount": "1", "interval": "hour"}
            ]
        },
        400,
        "invalid_price",
        "prices.0.interval",
    ),
    (
        "credits without refresh",
        {"prices": [{"code": "c", "type": "credits", "asset": "USD", "amount": "1"}]},
        400,
        "invalid_price",
        "prices.0.refresh",
    ),
    (
        "rollover cap without rollover",
        {
            "prices": [
                {
                    "code": "c",
                    "type": "credits",
                    "asset": "USD",
                    "amount": "1",
                    "refresh": "expire_and_replace",
                    "rollover_cap": "2",
                }
            ]
        },
        400,
        "invalid_price",
        "prices.0.rollover_cap",
    ),
    (
        "zero credits",
        {
            "prices": [
                {
                    "code": "c",
                    "type": "credits",
                    "asset": "USD",
                    "amount": "0",
                    "refresh": "rollover",
                }
            ]
        },
        400,
        "invalid_amount",
        "prices.0.amount",
    ),
    (
        "metered feature without meter",
        {"prices": [], "features": [{"code": "t", "type": "metered", "limit": 1}]},
        400,
        "invalid_feature",
        "features.0.meter",
    ),
    (
        "boolean feature with a limit",
        {"prices": [], "features": [{"code": "t", "type": "boolean", "limit": 1}]},
        400,
        "invalid_feature",
        "features.0.limit",
    ),
    (
        "negative limit",
        {"prices": [], "features": [{"code": "t", "type": "numeric", "limit": -1}]},
        400,
        "invalid_feature",
        "features.0.limit",
    ),
    (
        "bad enforcement",
        {
            "prices": [],
            "features": [{"code": "t", "type": "numeric", "limit": 1, "enforcement": "strict"}],
        },
        400,
        "invalid_feature",
        "features.0.enforcement",
    ),
    (
        "bad period",
        {
            "prices": [],
            "features": [
                {"code": "t", "type": "metered", "meter": "output_tokens", "period": "week"}
            ],
        },
        400,
        "invalid_feature",
        "features.0.period",
    ),
    (
        "metered feature on an unknown meter",
        {"prices": [], "features": [{"code": "t", "type": "metered", "meter": "nope"}]},
        404,
        "meter_not_found",
        "features.0.meter",
    ),
    (
        "duplicate feature code",
        {"prices": [], "features": [{"code": "t", "type": "boolean"}] * 2},
        400,
        "duplicate_feature_code",
        "features.1.code",
    ),
]


@pytest.mark.usefixtures("meter")
class TestValidation:
    @pytest.mark.parametrize(
        ("definition", "status", "code", "field"),
        [case[1:] for case in INVALID],
        ids=[case[0] for case in INVALID],
    )
    async def test_refused_naming_the_field_and_nothing_stored(
        self,
        client: httpx.AsyncClient,
        ctx: AppContext,
        definition: dict[str, Any],
        status: int,
        code: str,
        field: str,
    ) -> None:
        response = await client.post("/v1/products", json={"code": "p", "name": "P", **definition})
        assert_problem(response, status, code, field)
        assert await count_rows(ctx, "products") == 0
        # The same definition as a new version: same answer, no new version.
        await product(client, code="q", name="Q", prices=[])
        response = await client.post("/v1/products/q/versions", json=definition)
        assert_problem(response, status, code, field)
        assert await count_rows(ctx, "product_versions") == 1
        assert (await client.get("/v1/products/q")).json()["latest_version"] == 1

    async def test_product_code_and_name(self, client: httpx.AsyncClient) -> None:
        bad_code = await client.post(
            "/v1/products", json={"code": "a b", "name": "A", "prices": []}
        )
        assert_problem(bad_code, 400, "invalid_product_code", "code")
        bad_name = await client.post("/v1/products", json={"code": "a", "name": " ", "prices": []})
        assert_problem(bad_name, 400, "invalid_name", "name")


@pytest.mark.usefixtures("meter")
class TestSubscriptions:
    async def test_lifecycle(self, client: httpx.AsyncClient, clock: Any) -> None:
        customer = (await client.post("/v1/customers", json={"external_id": "u1"})).json()["id"]
        await product(client, **_pro())
        await version(client, "pro", prices=[])
        latest = await subscribe(client, customer_id=customer, product="pro")
        assert latest["id"].startswith("sub_")
        assert (latest["product"], latest["version"], latest["status"]) == ("pro", 2, "active")
        assert latest["canceled_at"] is None
        pinned = await subscribe(
            client, customer_id="ext:u1", product="pro", version=1, start_at="2020-01-01T00:00:00Z"
        )
        assert (pinned["version"], pinned["start_at"]) == (1, "2020-01-01T00:00:00Z")
        assert pinned["customer_id"] == customer

        assert (await client.get(f"/v1/subscriptions/{pinned['id']}")).json() == pinned
        listed = (await client.get("/v1/subscriptions", params={"customer_id": customer})).json()
        assert [s["id"] for s in listed["data"]] == [pinned["id"], latest["id"]]

        canceled = await client.post(f"/v1/subscriptions/{pinned['id']}/cancel")
        assert canceled.status_code == 200, canceled.text
        assert canceled.json()["status"] == "canceled"
        assert canceled.json()["canceled_at"] is not None
        again = await client.post(f"/v1/subscriptions/{pinned['id']}/cancel")
        assert_problem(again, 409, "subscription_not_active", "id")
        assert (await client.get(f"/v1/subscriptions/{pinned['id']}")).json()["status"] == (
            "canceled"
        )

    async def test_references(self, client: httpx.AsyncClient, ctx: AppContext) -> None:
        await client.post("/v1/customers", json={"external_id": "u1"})
        await product(client, **_pro())
        cases = [
            ({"customer_id": "ext:nobody", "product": "pro"}, 404, "customer_not_found", None),
            ({"customer_id": "ext:u1", "product": "nope"}, 404, "product_not_found", "product"),
            (
                {"customer_id": "ext:u1", "product": "pro", "version": 2},
                404,
                "product_version_not_found",
                "version",
            ),
            (
                {"customer_id": "ext:u1", "product": "pro", "start_at": "yesterday"},
                400,
                "invalid_timestamp",
                "start_at",
            ),
        ]
        for body, status, code, field in cases:
            response = await client.post("/v1/subscriptions", json=body)
            problem = assert_problem(response, status, code)
            if field is not None:
                assert problem["field"] == field
        assert await count_rows(ctx, "subscriptions") == 0
        listed = await client.get("/v1/subscriptions", params={"customer_id": "ext:nobody"})
        assert_problem(listed, 404, "customer_not_found")
        assert_problem(
            await client.get("/v1/subscriptions/sub_nope"), 404, "subscription_not_found"
        )


@pytest.mark.usefixtures("meter")
class TestIsolation:
    async def test_another_organizations_product_and_subscription_are_not_found(
        self,
        client: httpx.AsyncClient,
        intruder: httpx.AsyncClient,
        ctx: AppContext,
    ) -> None:
        customer = (await client.post("/v1/customers", json={"external_id": "u1"})).json()["id"]
        await product(client, **_pro())
        sub = await subscribe(client, customer_id=customer, product="pro")
        await intruder.post(
            "/v1/meters",
            json={"code": "output_tokens", "event_type": "x", "aggregation": "count"},
        )
        not_found: list[tuple[str, str, dict[str, Any] | None, str]] = [
            ("GET", "/v1/products/pro", None, "product_not_found"),
            ("GET", "/v1/products/pro/versions/1", None, "product_not_found"),
            ("POST", "/v1/products/pro/versions", {"prices": []}, "product_not_found"),
            ("POST", "/v1/products/pro/versions/1/simulate", {"events": []}, "product_not_found"),
            ("GET", f"/v1/subscriptions/{sub['id']}", None, "subscription_not_found"),
            ("POST", f"/v1/subscriptions/{sub['id']}/cancel", None, "subscription_not_found"),
            ("GET", f"/v1/customers/{customer}/entitlements/sso", None, "customer_not_found"),
            (
                "POST",
                "/v1/subscriptions",
                {"customer_id": customer, "product": "pro"},
                "customer_not_found",
            ),
        ]
        for method, path, body, code in not_found:
            response = await intruder.request(method, path, json=body)
            assert_problem(response, 404, code)
        assert (await intruder.get("/v1/products")).json() == {"data": [], "has_more": False}
        assert (await intruder.get("/v1/subscriptions")).json() == {"data": [], "has_more": False}
        # The intruder may use the same code for its own product; nothing is shared.
        own = await product(intruder, code="pro", name="Theirs", prices=[])
        assert own["version"]["number"] == 1
        assert (await client.get("/v1/products/pro")).json()["name"] == "Pro"
        assert await count_rows(ctx, "subscriptions") == 1
        assert (await client.get(f"/v1/subscriptions/{sub['id']}")).json()["status"] == "active"
