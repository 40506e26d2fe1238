"""Assets, amounts, exchange rates and quotes.

Goal: money crosses the API as exact decimal strings and lives as integer minor
units; rates are exact, time-versioned and per organization; a quote never
gives more than was paid for. Method: property-based tests (Hypothesis) of the
pure amount functions, edge-case tables, and HTTP tests on SQLite and
PostgreSQL that check every rejection is a problem with a stable code and field
and writes nothing.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from fractions import Fraction
from typing import Any

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from billfold import limits
from billfold.api.context import AppContext
from billfold.assets import (
    AssetInfo,
    RateQuote,
    convert_base_to_asset,
    format_amount,
    get_asset,
    parse_amount,
    rate_at,
)
from billfold.assets.amounts import parse_rate, rate_string
from billfold.assets.builtin import BUILTIN_ASSETS
from billfold.assets.service import parse_instant
from billfold.clock import FrozenClock
from billfold.errors import InvalidRequest, NotFound
from tests.conftest import Tenant
from tests.support import assert_problem, count_rows, without_request_id

USD = BUILTIN_ASSETS["USD"]
JPY = BUILTIN_ASSETS["JPY"]
TOKENS = AssetInfo("TOKENS", "Tokens", 0, "custom", None, None)
CREDITS3 = AssetInfo("CREDITS", "Credits", 3, "custom", "cr", None)
MICRO18 = AssetInfo("MICRO", "Micro", 18, "custom", None, None)
KWD = BUILTIN_ASSETS["KWD"]
ASSETS = [USD, JPY, KWD, TOKENS, CREDITS3, MICRO18]


def rfc3339(when: datetime) -> str:
    return when.astimezone(UTC).isoformat().replace("+00:00", "Z")


def instant(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


# --- pure functions ------------------------------------------------------------


def _parse_or_error(asset: AssetInfo, text: str) -> int | InvalidRequest:
    try:
        return parse_amount(asset, text, allow_negative=True, allow_zero=True)
    except InvalidRequest as error:
        return error


class TestBuiltins:
    def test_iso_currencies_are_built_in_at_scale_9(self) -> None:
        for code in ("USD", "EUR", "GBP", "JPY", "CAD", "AUD", "CHF", "INR"):
            info = BUILTIN_ASSETS[code]
            assert info.scale == 9
            assert info.kind == "fiat"
        assert USD.display_exponent == 2
        assert JPY.display_exponent == 0
        assert KWD.display_exponent == 3


class TestParseAmount:
    @pytest.mark.parametrize(
        ("asset", "text", "minor"),
        [
            (USD, "12.50", 12_500_000_000),
            (USD, "12.5", 12_500_000_000),
            (USD, "0.000000001", 1),
            (USD, "1000000000", 10**18),
            (USD, "999999999.999999999", 10**18 - 1),
            (JPY, "1000", 1000 * 10**9),
            (TOKENS, "1000000000000000000", 10**18),
            (CREDITS3, "0.5", 500),
            (MICRO18, "1.000000000000000000", 10**18),
            (MICRO18, "0.000000000000000001", 1),
        ],
    )
    def test_exact_minor_units(self, asset: AssetInfo, text: str, minor: int) -> None:
        parsed = parse_amount(asset, text)
        assert parsed == minor
        assert type(parsed) is int

    @pytest.mark.parametrize(
        "value",
        [
            "",
            " 5",
            "5 ",
            "5\n",
            "+5",
            "5.",
            ".5",
            "05",
            "00.5",
            "1e3",
            "1E3",
            "1e-3",
            "NaN",
            "nan",
            "inf",
            "-inf",
            "Infinity",
            "1_000",
            "1,000",
            "12,50",
            "0x10",
            "١٢",  # Arabic-Indic digits: Decimal would take them
            "１２",  # full-width digits
            "--5",
            "5-",
            "1.2.3",
            "1" * 65,
        ],
    )
    def test_malformed_strings_are_invalid_amount(self, value: str) -> None:
        with pytest.raises(InvalidRequest) as raised:
            parse_amount(USD, value, field="grant.amount")
        assert raised.value.code == "invalid_amount"
        assert raised.value.field == "grant.amount"

    @pytest.mark.parametrize("value", [12.5, 12, Decimal("12.5"), True, None, b"12", ["1"]])
    def test_non_strings_are_refused(self, value: Any) -> None:
        with pytest.raises(InvalidRequest) as raised:
            parse_amount(USD, value)
        assert raised.value.code == "invalid_amount"
        assert raised.value.field == "amount"

    @pytest.mark.parametrize(
        ("asset", "text"),
        [
            (USD, "0.0000000001"),
            (USD, "1.0000000000"),  # never rounded, even when exact
            (TOKENS, "1.5"),
            (TOKENS, "1.0"),
            (CREDITS3, "0.0001"),
        ],
    )
    def test_more_decimals_than_scale_is_refused(self, asset: AssetInfo, text: str) -> None:
        with pytest.raises(InvalidRequest, match="decimals") as raised:
            parse_amount(asset, text)
        assert raised.value.code == "invalid_amount"

    @pytest.mark.parametrize(
        ("asset", "text"),
        [
            (USD, "1000000000.000000001"),
            (USD, "99999999999999999999"),
            (TOKENS, "1000000000000000001"),
            (MICRO18, "1.000000000000000001"),
        ],
    )
    def test_above_the_maximum_is_refused(self, asset: AssetInfo, text: str) -> None:
        with pytest.raises(InvalidRequest, match="larger") as raised:
            parse_amount(asset, text, allow_negative=True)
        assert raised.value.code == "invalid_amount"
        with pytest.raises(InvalidRequest):
            parse_amount(asset, "-" + text, allow_negative=True)

    def test_sign_and_zero_rules(self) -> None:
        for text in ("-1", "-0", "-0.01"):
            with pytest.raises(InvalidRequest, match="negative"):
                parse_amount(USD, text, allow_zero=True)
        for text in ("0", "0.0", "0.000000000"):
            with pytest.raises(InvalidRequest, match="greater than zero"):
                parse_amount(USD, text)
            assert parse_amount(USD, text, allow_zero=True) == 0
        assert parse_amount(USD, "-1.25", allow_negative=True) == -1_250_000_000
        assert parse_amount(USD, "-0", allow_negative=True, allow_zero=True) == 0
        with pytest.raises(InvalidRequest):
            parse_amount(USD, "-0", allow_negative=True)

    @given(st.text(max_size=40))
    def test_any_text_is_an_int_or_invalid_amount(self, text: str) -> None:
        outcome = _parse_or_error(USD, text)
        if isinstance(outcome, InvalidRequest):
            assert outcome.code == "invalid_amount"
            assert outcome.field == "amount"
        else:
            assert type(outcome) is int
            assert Fraction(Decimal(text)) * 10**USD.scale == outcome


class TestFormatAmount:
    @pytest.mark.parametrize(
        ("asset", "minor", "text"),
        [
            (USD, 12_500_000_000, "12.50"),
            (USD, 12_123_456_789, "12.123456789"),
            (USD, 0, "0.00"),
            (USD, 1, "0.000000001"),
            (USD, 10**18, "1000000000.00"),
            (USD, -12_500_000_000, "-12.50"),
            (USD, -1, "-0.000000001"),
            (JPY, 1000 * 10**9, "1000"),
            (JPY, 1_500_000_000, "1.5"),
            (KWD, 1_500_000_000, "1.500"),
            (TOKENS, 7, "7"),
            (TOKENS, 0, "0"),
            (CREDITS3, 12_500, "12.5"),
            (CREDITS3, 12_000, "12"),
            (CREDITS3, 1, "0.001"),
            (MICRO18, 1, "0.000000000000000001"),
        ],
    )
    def test_exact_text(self, asset: AssetInfo, minor: int, text: str) -> None:
        assert format_amount(asset, minor) == text

    @given(
        st.sampled_from(ASSETS),
        st.integers(min_value=-limits.amount_minor_max, max_value=limits.amount_minor_max),
    )
    def test_parse_of_format_is_identity(self, asset: AssetInfo, minor: int) -> None:
        text = format_amount(asset, minor)
        assert parse_amount(asset, text, allow_negative=True, allow_zero=True) == minor

    @given(st.data())
    def test_format_of_parse_is_the_same_number(self, data: st.DataObject) -> None:
        asset = data.draw(st.sampled_from(ASSETS))
        whole = data.draw(st.integers(min_value=0, max_value=10**18 // 10**asset.scale))
        decimals = data.draw(st.text(alphabet="0123456789", max_size=asset.scale))
        negative = data.draw(st.booleans())
        text = ("-" if negative else "") + str(whole) + ("." + decimals if decimals else "")
        minor = _parse_or_error(asset, text)
        if isinstance(minor, InvalidRequest):
            assert minor.code == "invalid_amount"
            assert abs(Fraction(Decimal(text))) * 10**asset.scale > limits.amount_minor_max
            return
        assert type(minor) is int
        formatted = format_amount(asset, minor)
        assert Decimal(formatted) == Decimal(text)
        assert parse_amount(asset, formatted, allow_negative=True, allow_zero=True) == minor
        if asset.kind == "fiat":
            assert asset.display_exponent is not None
            assert len(formatted.partition(".")[2]) >= asset.display_exponent


class TestRates:
    @pytest.mark.parametrize(
        ("text", "canonical"),
        [
            ("1.08", "1.08"),
            ("1.10", "1.1"),
            ("3", "3"),
            ("1000", "1000"),
            ("0.000002", "0.000002"),
            ("0.000000000000000001", "0.000000000000000001"),
            ("123456789012.345678901234567890", "123456789012.34567890123456789"),
        ],
    )
    def test_valid_rates_are_exact(self, text: str, canonical: str) -> None:
        rate = parse_rate(text)
        assert rate == Decimal(text)
        assert rate_string(rate) == canonical

    @pytest.mark.parametrize(
        "value",
        [
            "0",
            "0.0",
            "-1",
            "+1",
            "1e-3",
            "NaN",
            "inf",
            "",
            " 1",
            "01",
            "0.0000000000000000001",  # 19 decimals
            "1234567890123456789012345678901",  # 31 significant digits
            1.08,
            1,
            None,
        ],
    )
    def test_invalid_rates(self, value: Any) -> None:
        with pytest.raises(InvalidRequest) as raised:
            parse_rate(value)
        assert raised.value.code == "invalid_rate"
        assert raised.value.field == "rate"


class TestConvert:
    @pytest.mark.parametrize(
        ("rate", "base", "base_text", "asset", "expected"),
        [
            ("3", USD, "10", TOKENS, "3"),
            ("3", USD, "8.99", TOKENS, "2"),
            ("0.000002", USD, "1", TOKENS, "500000"),
            ("0.07", USD, "1", CREDITS3, "14.285"),
            ("0.0067", USD, "10", JPY, "1492.537313432"),
            ("1.08", USD, "100", BUILTIN_ASSETS["EUR"], "92.592592592"),
            ("150", JPY, "1", USD, "0.006666666"),
        ],
    )
    def test_rounds_down(
        self,
        rate: str,
        base: AssetInfo,
        base_text: str,
        asset: AssetInfo,
        expected: str,
    ) -> None:
        base_minor = parse_amount(base, base_text)
        quantity = convert_base_to_asset(Decimal(rate), base, base_minor, asset)
        assert format_amount(asset, quantity) == expected

    @given(
        st.sampled_from(ASSETS),
        st.sampled_from(ASSETS),
        st.integers(min_value=0, max_value=limits.amount_minor_max),
        st.decimals(
            min_value=Decimal("0.000000000000000001"),
            max_value=Decimal("1000000000000"),
            places=18,
            allow_nan=False,
            allow_infinity=False,
        ),
    )
    def test_never_more_than_paid_and_never_less_than_a_unit_short(
        self, base: AssetInfo, asset: AssetInfo, base_minor: int, rate: Decimal
    ) -> None:
        quantity = convert_base_to_asset(rate, base, base_minor, asset)
        assert type(quantity) is int
        paid = Fraction(base_minor, 10**base.scale)
        unit = Fraction(1, 10**asset.scale)
        price = Fraction(rate)
        assert quantity * unit * price <= paid
        assert (quantity + 1) * unit * price > paid


class TestParseInstant:
    @pytest.mark.parametrize(
        ("text", "expected"),
        [
            ("2025-01-31T12:00:00Z", datetime(2025, 1, 31, 12, tzinfo=UTC)),
            ("2025-01-31t12:00:00z", datetime(2025, 1, 31, 12, tzinfo=UTC)),
            ("2025-01-31 12:00:00+02:00", datetime(2025, 1, 31, 10, tzinfo=UTC)),
            ("2025-01-31T12:00:00.123456789Z", datetime(2025, 1, 31, 12, 0, 0, 123456, UTC)),
        ],
    )
    def test_valid(self, text: str, expected: datetime) -> None:
        parsed = parse_instant(text, field="at")
        assert parsed == expected
        assert parsed.tzinfo is UTC

    @pytest.mark.parametrize(
        "text",
        [
            "2025-01-31T12:00:00",
            "2025-01-31",
            "1738324800",
            "2025-13-01T00:00:00Z",
            "2025-01-31T24:00:00Z",
            "yesterday",
            "",
        ],
    )
    def test_invalid(self, text: str) -> None:
        with pytest.raises(InvalidRequest) as raised:
            parse_instant(text, field="valid_from")
        assert raised.value.code == "invalid_timestamp"
        assert raised.value.field == "valid_from"


# --- over HTTP -----------------------------------------------------------------


async def create_asset(client: httpx.AsyncClient, code: str, scale: int) -> dict[str, Any]:
    response = await client.post(
        "/v1/assets", json={"code": code, "name": code.title(), "scale": scale}
    )
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


async def create_rate(
    client: httpx.AsyncClient, code: str, base: str, rate: str, valid_from: datetime | None = None
) -> dict[str, Any]:
    payload = {"base": base, "rate": rate}
    if valid_from is not None:
        payload["valid_from"] = rfc3339(valid_from)
    response = await client.post(f"/v1/assets/{code}/rates", json=payload)
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


class TestListAssets:
    async def test_builtins_and_own_assets_in_code_order(self, client: httpx.AsyncClient) -> None:
        await create_asset(client, "TOKENS", 0)
        await create_asset(client, "AAA_CREDITS", 2)
        response = await client.get("/v1/assets", params={"limit": 100})
        assert response.status_code == 200, response.text
        data = response.json()["data"]
        codes = [asset["code"] for asset in data]
        assert codes == sorted(codes)
        assert {"USD", "EUR", "GBP", "JPY", "TOKENS", "AAA_CREDITS"} <= set(codes)
        usd = next(a for a in data if a["code"] == "USD")
        assert usd == {
            "code": "USD",
            "name": "US Dollar",
            "scale": 9,
            "kind": "fiat",
            "symbol": "$",
            "display_exponent": 2,
            "created_at": None,
        }

    async def test_pages_by_code(self, client: httpx.AsyncClient) -> None:
        await create_asset(client, "ZZ_LAST", 0)
        seen: list[str] = []
        cursor: str | None = None
        while True:
            params: dict[str, Any] = {"limit": 7}
            if cursor is not None:
                params["starting_after"] = cursor
            page = (await client.get("/v1/assets", params=params)).json()
            seen += [asset["code"] for asset in page["data"]]
            if not page["has_more"]:
                break
            cursor = seen[-1]
        assert seen == sorted(seen)
        assert len(seen) == len(set(seen)) == len(BUILTIN_ASSETS) + 1
        assert seen[-1] == "ZZ_LAST"


class TestCreateAsset:
    async def test_created(
        self, client: httpx.AsyncClient, ctx: AppContext, clock: FrozenClock
    ) -> None:
        response = await client.post(
            "/v1/assets",
            json={"code": "GPU_HOURS", "name": "GPU hours", "scale": 6, "symbol": "GPUh"},
        )
        assert response.status_code == 201, response.text
        body = response.json()
        assert body["code"] == "GPU_HOURS"
        assert body["scale"] == 6
        assert body["kind"] == "custom"
        assert body["symbol"] == "GPUh"
        assert body["display_exponent"] is None
        assert instant(body["created_at"]) == clock.now()
        fetched = await client.get("/v1/assets/GPU_HOURS")
        assert fetched.status_code == 200
        assert fetched.json() == body
        assert await count_rows(ctx, "assets") == 1

    async def test_kind_custom_is_accepted(self, client: httpx.AsyncClient) -> None:
        response = await client.post(
            "/v1/assets", json={"code": "CREDITS", "name": "Credits", "scale": 0, "kind": "custom"}
        )
        assert response.status_code == 201, response.text

    async def test_duplicate_code_is_409(self, client: httpx.AsyncClient, ctx: AppContext) -> None:
        await create_asset(client, "TOKENS", 0)
        again = await client.post("/v1/assets", json={"code": "TOKENS", "name": "T", "scale": 3})
        assert_problem(again, 409, "asset_code_taken", field="code")
        assert (await client.get("/v1/assets/TOKENS")).json()["scale"] == 0
        assert await count_rows(ctx, "assets") == 1

    @pytest.mark.parametrize("code", ["USD", "EUR", "JPY"])
    async def test_builtin_code_is_409(
        self, client: httpx.AsyncClient, ctx: AppContext, code: str
    ) -> None:
        response = await client.post("/v1/assets", json={"code": code, "name": "Mine", "scale": 2})
        assert_problem(response, 409, "asset_code_taken", field="code")
        assert await count_rows(ctx, "assets") == 0

    @pytest.mark.parametrize(
        ("payload", "status", "code", "field"),
        [
            ({"code": "tokens", "name": "T", "scale": 0}, 400, "invalid_asset_code", "code"),
            ({"code": "T", "name": "T", "scale": 0}, 400, "invalid_asset_code", "code"),
            ({"code": "1TOK", "name": "T", "scale": 0}, 400, "invalid_asset_code", "code"),
            ({"code": "TOK-EN", "name": "T", "scale": 0}, 400, "invalid_asset_code", "code"),
            ({"code": "A" * 21, "name": "T", "scale": 0}, 422, "validation_error", "code"),
            ({"code": "TOKENS", "name": "  ", "scale": 0}, 400, "invalid_name", "name"),
            ({"code": "TOKENS", "name": "T", "scale": -1}, 400, "invalid_scale", "scale"),
            ({"code": "TOKENS", "name": "T", "scale": 19}, 400, "invalid_scale", "scale"),
            ({"code": "TOKENS", "name": "T", "scale": 10**30}, 400, "invalid_scale", "scale"),
            ({"code": "TOKENS", "name": "T", "scale": "2"}, 422, "validation_error", "scale"),
            ({"code": "TOKENS", "name": "T", "scale": 2.0}, 422, "validation_error", "scale"),
            ({"code": "TOKENS", "name": "T", "scale": True}, 422, "validation_error", "scale"),
            (
                {"code": "TOKENS", "name": "T", "scale": 2, "kind": "fiat"},
                400,
                "invalid_kind",
                "kind",
            ),
            ({"code": "TOKENS", "name": "T"}, 422, "validation_error", "scale"),
            ({"code": 5, "name": "T", "scale": 2}, 422, "validation_error", "code"),
            ({"code": "TOKENS", "name": "T", "scale": 2, "x": 1}, 422, "validation_error", "x"),
        ],
    )
    async def test_bad_input_writes_nothing(
        self,
        client: httpx.AsyncClient,
        ctx: AppContext,
        payload: dict[str, Any],
        status: int,
        code: str,
        field: str,
    ) -> None:
        response = await client.post("/v1/assets", json=payload)
        assert_problem(response, status, code, field=field)
        assert await count_rows(ctx, "assets") == 0


class TestGetAsset:
    async def test_builtin(self, client: httpx.AsyncClient) -> None:
        response = await client.get("/v1/assets/JPY")
        assert response.status_code == 200
        assert response.json()["display_exponent"] == 0
        assert response.json()["scale"] == 9

    @pytest.mark.parametrize("code", ["NOPE", "usd", "x" * 300, "ext:TOKENS"])
    async def test_unknown_is_404(self, client: httpx.AsyncClient, code: str) -> None:
        assert_problem(await client.get(f"/v1/assets/{code}"), 404, "asset_not_found", "code")

    async def test_python_api(self, ctx: AppContext, tenant: Tenant) -> None:
        async with ctx.sessions() as session:
            assert await get_asset(session, tenant.organization_id, "USD") is USD
            with pytest.raises(NotFound) as raised:
                await get_asset(session, tenant.organization_id, "TOKENS", field="grant.asset")
        assert raised.value.code == "asset_not_found"
        assert raised.value.field == "grant.asset"


class TestRatesApi:
    async def test_create_defaults_to_now_and_is_canonical(
        self, client: httpx.AsyncClient, clock: FrozenClock
    ) -> None:
        await create_asset(client, "TOKENS", 0)
        body = await create_rate(client, "TOKENS", "USD", "0.0000020")
        assert body["id"].startswith("rate_")
        assert body["asset"] == "TOKENS"
        assert body["base"] == "USD"
        assert body["rate"] == "0.000002"
        assert instant(body["valid_from"]) == clock.now()
        assert instant(body["created_at"]) == clock.now()

    async def test_rates_for_builtin_pairs(self, client: httpx.AsyncClient) -> None:
        body = await create_rate(client, "EUR", "USD", "1.08")
        assert body["rate"] == "1.08"

    @pytest.mark.parametrize(
        ("payload", "status", "code", "field"),
        [
            ({"base": "USD", "rate": "0"}, 400, "invalid_rate", "rate"),
            ({"base": "USD", "rate": "-1"}, 400, "invalid_rate", "rate"),
            ({"base": "USD", "rate": "1e-3"}, 400, "invalid_rate", "rate"),
            ({"base": "USD", "rate": "NaN"}, 400, "invalid_rate", "rate"),
            ({"base": "USD", "rate": "0.0000000000000000001"}, 400, "invalid_rate", "rate"),
            ({"base": "USD", "rate": 0.01}, 422, "validation_error", "rate"),
            ({"base": "USD", "rate": 1}, 422, "validation_error", "rate"),
            ({"base": "USD"}, 422, "validation_error", "rate"),
            ({"base": "NOPE", "rate": "1"}, 404, "asset_not_found", "base"),
            ({"base": "TOKENS", "rate": "1"}, 400, "invalid_base", "base"),
            (
                {"base": "USD", "rate": "1", "valid_from": "2025-01-01T00:00:00"},
                400,
                "invalid_timestamp",
                "valid_from",
            ),
            (
                {"base": "USD", "rate": "1", "valid_from": 1735689600},
                422,
                "validation_error",
                "valid_from",
            ),
        ],
    )
    async def test_bad_input_writes_nothing(
        self,
        client: httpx.AsyncClient,
        ctx: AppContext,
        payload: dict[str, Any],
        status: int,
        code: str,
        field: str,
    ) -> None:
        await create_asset(client, "TOKENS", 0)
        response = await client.post("/v1/assets/TOKENS/rates", json=payload)
        assert_problem(response, status, code, field=field)
        assert await count_rows(ctx, "exchange_rates") == 0

    async def test_unknown_asset_is_404(self, client: httpx.AsyncClient, ctx: AppContext) -> None:
        response = await client.post("/v1/assets/NOPE/rates", json={"base": "USD", "rate": "1"})
        assert_problem(response, 404, "asset_not_found", field="code")
        assert await count_rows(ctx, "exchange_rates") == 0

    async def test_same_valid_from_twice_is_409(
        self, client: httpx.AsyncClient, ctx: AppContext, clock: FrozenClock
    ) -> None:
        await create_asset(client, "TOKENS", 0)
        await create_rate(client, "TOKENS", "USD", "1", clock.now())
        again = await client.post(
            "/v1/assets/TOKENS/rates",
            json={"base": "USD", "rate": "2", "valid_from": rfc3339(clock.now())},
        )
        assert_problem(again, 409, "rate_exists", field="valid_from")
        assert await count_rows(ctx, "exchange_rates") == 1

    async def test_list_latest_first_filtered_and_paged(
        self, client: httpx.AsyncClient, clock: FrozenClock
    ) -> None:
        await create_asset(client, "TOKENS", 0)
        now = clock.now()
        made = [
            await create_rate(client, "TOKENS", "USD", str(n), now + timedelta(hours=n))
            for n in (3, 1, 2)
        ]
        await create_rate(client, "TOKENS", "EUR", "9", now)
        listed = (await client.get("/v1/assets/TOKENS/rates", params={"base": "USD"})).json()
        assert [r["rate"] for r in listed["data"]] == ["3", "2", "1"]
        assert not listed["has_more"]
        everything = (await client.get("/v1/assets/TOKENS/rates")).json()["data"]
        assert [r["rate"] for r in everything] == ["3", "2", "1", "9"]
        first = (await client.get("/v1/assets/TOKENS/rates", params={"limit": 2})).json()
        assert [r["rate"] for r in first["data"]] == ["3", "2"]
        assert first["has_more"]
        rest = (
            await client.get(
                "/v1/assets/TOKENS/rates",
                params={"limit": 2, "starting_after": first["data"][-1]["id"]},
            )
        ).json()
        assert [r["rate"] for r in rest["data"]] == ["1", "9"]
        assert not rest["has_more"]
        assert {r["id"] for r in listed["data"]} == {r["id"] for r in made}


class TestQuote:
    async def test_quotes_follow_rate_versions(
        self, client: httpx.AsyncClient, clock: FrozenClock
    ) -> None:
        await create_asset(client, "TOKENS", 0)
        t0 = clock.now()
        t1 = t0 + timedelta(days=1)
        t2 = t0 + timedelta(days=2)
        v1 = await create_rate(client, "TOKENS", "USD", "0.01", t0)
        v2 = await create_rate(client, "TOKENS", "USD", "0.02", t1)
        v3 = await create_rate(client, "TOKENS", "USD", "0.005", t2)
        micro = timedelta(microseconds=1)
        expectations = [
            (t0, v1, "1000"),
            (t1 - micro, v1, "1000"),
            (t1, v2, "500"),
            (t1 + timedelta(hours=5), v2, "500"),
            (t2 - micro, v2, "500"),
            (t2, v3, "2000"),
            (t2 + timedelta(days=365), v3, "2000"),
        ]
        for at, version, quantity in expectations:
            response = await client.get(
                "/v1/assets/TOKENS/quote", params={"base": "USD", "amount": "10", "at": rfc3339(at)}
            )
            assert response.status_code == 200, response.text
            body = response.json()
            assert body["rate_id"] == version["id"], at
            assert body["quantity"] == quantity
            assert body["rate"] == version["rate"]
            assert body["asset"] == "TOKENS"
            assert body["base"] == "USD"
            assert body["amount"] == "10.00"
            assert instant(body["valid_from"]) == instant(version["valid_from"])
            assert instant(body["at"]) == at
        before = await client.get(
            "/v1/assets/TOKENS/quote",
            params={"base": "USD", "amount": "10", "at": rfc3339(t0 - micro)},
        )
        assert_problem(before, 404, "rate_not_found")

    async def test_now_is_the_default_and_future_rates_wait(
        self, client: httpx.AsyncClient, clock: FrozenClock
    ) -> None:
        await create_asset(client, "CREDITS", 2)
        now = clock.now()
        await create_rate(client, "CREDITS", "USD", "0.07", now)
        await create_rate(client, "CREDITS", "USD", "1", now + timedelta(hours=1))
        params = {"base": "USD", "amount": "1"}
        body = (await client.get("/v1/assets/CREDITS/quote", params=params)).json()
        assert body["quantity"] == "14.28"  # 14.2857… rounded down
        assert instant(body["at"]) == now
        clock.advance(timedelta(hours=1))
        body = (await client.get("/v1/assets/CREDITS/quote", params=params)).json()
        assert body["quantity"] == "1"
        assert instant(body["at"]) == clock.now()

    async def test_offset_timestamps_are_the_same_instant(
        self, client: httpx.AsyncClient, clock: FrozenClock
    ) -> None:
        await create_rate(client, "JPY", "USD", "0.0067", clock.now())
        at = (clock.now() + timedelta(hours=1)).astimezone(
            datetime.fromisoformat("2000-01-01T00:00:00+09:00").tzinfo
        )
        response = await client.get(
            "/v1/assets/JPY/quote", params={"base": "USD", "amount": "10", "at": at.isoformat()}
        )
        assert response.status_code == 200, response.text
        assert response.json()["quantity"] == "1492.537313432"
        assert instant(response.json()["at"]) == at

    async def test_rates_are_directional(
        self, client: httpx.AsyncClient, clock: FrozenClock
    ) -> None:
        await create_asset(client, "TOKENS", 0)
        await create_rate(client, "TOKENS", "USD", "0.01", clock.now())
        inverse = await client.get(
            "/v1/assets/USD/quote", params={"base": "TOKENS", "amount": "100"}
        )
        assert_problem(inverse, 404, "rate_not_found")

    @pytest.mark.parametrize(
        ("params", "status", "code", "field"),
        [
            ({"base": "USD", "amount": "10.0000000001"}, 400, "invalid_amount", "amount"),
            ({"base": "USD", "amount": "-5"}, 400, "invalid_amount", "amount"),
            ({"base": "USD", "amount": "0"}, 400, "invalid_amount", "amount"),
            ({"base": "USD", "amount": "1e2"}, 400, "invalid_amount", "amount"),
            ({"base": "USD", "amount": "ten"}, 400, "invalid_amount", "amount"),
            ({"base": "USD", "amount": "99999999999999999999"}, 400, "invalid_amount", "amount"),
            ({"base": "USD"}, 422, "validation_error", "amount"),
            ({"amount": "10"}, 422, "validation_error", "base"),
            ({"base": "NOPE", "amount": "10"}, 404, "asset_not_found", "base"),
            ({"base": "TOKENS", "amount": "10"}, 400, "invalid_base", "base"),
            ({"base": "USD", "amount": "10", "at": "tomorrow"}, 400, "invalid_timestamp", "at"),
            ({"base": "USD", "amount": "10", "at": "2025-01-01"}, 400, "invalid_timestamp", "at"),
        ],
    )
    async def test_bad_input(
        self,
        client: httpx.AsyncClient,
        clock: FrozenClock,
        params: dict[str, str],
        status: int,
        code: str,
        field: str,
    ) -> None:
        await create_asset(client, "TOKENS", 0)
        await create_rate(client, "TOKENS", "USD", "0.01", clock.now())
        response = await client.get("/v1/assets/TOKENS/quote", params=params)
        assert_problem(response, status, code, field=field)

    async def test_unknown_asset_is_404(self, client: httpx.AsyncClient) -> None:
        response = await client.get("/v1/assets/NOPE/quote", params={"base": "USD", "amount": "1"})
        assert_problem(response, 404, "asset_not_found", field="code")

    async def test_quantity_above_the_maximum_is_refused(
        self, client: httpx.AsyncClient, clock: FrozenClock
    ) -> None:
        await create_asset(client, "DUST", 18)
        await create_rate(client, "DUST", "USD", "0.000000000000000001", clock.now())
        response = await client.get(
            "/v1/assets/DUST/quote", params={"base": "USD", "amount": "1000"}
        )
        assert_problem(response, 400, "invalid_amount", field="amount")

    async def test_python_api(
        self, client: httpx.AsyncClient, ctx: AppContext, tenant: Tenant, clock: FrozenClock
    ) -> None:
        await create_asset(client, "TOKENS", 0)
        made = await create_rate(client, "TOKENS", "USD", "0.000002", clock.now())
        async with ctx.sessions() as session:
            quote = await rate_at(session, tenant.organization_id, "TOKENS", "USD", clock.now())
            tokens = await get_asset(session, tenant.organization_id, "TOKENS")
            with pytest.raises(NotFound) as raised:
                await rate_at(
                    session,
                    tenant.organization_id,
                    "TOKENS",
                    "USD",
                    clock.now() - timedelta(seconds=1),
                )
        assert quote == RateQuote(
            rate_id=made["id"],
            asset="TOKENS",
            base="USD",
            rate=Decimal("0.000002"),
            valid_from=clock.now(),
        )
        assert raised.value.code == "rate_not_found"
        assert tokens == TOKENS
        assert convert_base_to_asset(quote.rate, USD, parse_amount(USD, "0.01"), tokens) == 5000


class TestTenantIsolation:
    async def test_another_organizations_assets_and_rates_are_invisible(
        self,
        client: httpx.AsyncClient,
        intruder: httpx.AsyncClient,
        ctx: AppContext,
        clock: FrozenClock,
    ) -> None:
        await create_asset(client, "TOKENS", 0)
        await create_rate(client, "TOKENS", "USD", "0.01", clock.now())
        await create_rate(client, "EUR", "USD", "1.08", clock.now())

        foreign = await intruder.get("/v1/assets/TOKENS")
        missing = await intruder.get("/v1/assets/NOTHING")
        assert_problem(foreign, 404, "asset_not_found", field="code")
        assert without_request_id(foreign.json()) == without_request_id(missing.json())

        codes = [a["code"] for a in (await intruder.get("/v1/assets?limit=100")).json()["data"]]
        assert "TOKENS" not in codes
        for path in ("/v1/assets/TOKENS/rates", "/v1/assets/TOKENS/quote?base=USD&amount=1"):
            assert_problem(await intruder.get(path), 404, "asset_not_found", field="code")
        posted = await intruder.post("/v1/assets/TOKENS/rates", json={"base": "USD", "rate": "5"})
        assert_problem(posted, 404, "asset_not_found", field="code")
        # Rates of built-in pairs are per organization too.
        assert (await intruder.get("/v1/assets/EUR/rates")).json()["data"] == []
        assert_problem(
            await intruder.get("/v1/assets/EUR/quote", params={"base": "USD", "amount": "1"}),
            404,
            "rate_not_found",
        )

        # The same code is free for the other organization, with its own rates.
        await create_asset(intruder, "TOKENS", 3)
        assert_problem(
            await intruder.get("/v1/assets/TOKENS/quote", params={"base": "USD", "amount": "1"}),
            404,
            "rate_not_found",
        )
        assert (await client.get("/v1/assets/TOKENS")).json()["scale"] == 0
        assert await count_rows(ctx, "assets") == 2
        assert await count_rows(ctx, "exchange_rates") == 2
