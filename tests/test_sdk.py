"""The Python SDK: public surface, retries, idempotency keys, errors, and the
real API through it (in process over the injectable transport, and over HTTP)."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import httpx
import pytest
from fastapi import FastAPI

import billfold
import billfold.llm
import billfold.sdk
from billfold import AsyncBillfold, Billfold
from billfold.sdk import _retries
from billfold.sdk._call import path
from tests.conftest import Tenant
from tests.llm_support import billfold_server


def test_public_surface_is_one_guarded_all() -> None:
    assert billfold.__all__ == [
        "APIConnectionError",
        "APIStatusError",
        "APITimeoutError",
        "AsyncBillfold",
        "Billfold",
        "BillfoldError",
        "__version__",
    ]
    assert billfold.llm.__all__ == [
        "OUTPUT_TOKENS_DEFAULT",
        "OUTPUT_TOKENS_MAX",
        "AuthorizationDeclined",
        "Estimate",
        "NotBilled",
        "wrap",
    ]
    for module in (billfold, billfold.sdk, billfold.llm):
        for name in module.__all__:
            assert getattr(module, name) is not None, (module.__name__, name)
    public = {name for name in dir(billfold.sdk) if not name.startswith("_")}
    assert public - set(billfold.sdk.__all__) <= {"annotations"}


def test_importing_billfold_loads_no_server_stack() -> None:
    code = (
        "import sys, billfold; from billfold import Billfold, AsyncBillfold; "
        "print(sorted({m.split('.')[0] for m in sys.modules}))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    loaded = set(json.loads(done.stdout.replace("'", '"')))
    assert "httpx" in loaded
    assert not loaded & {"fastapi", "starlette", "sqlalchemy", "alembic", "pydantic", "typer"}


def test_the_sdk_covers_every_api_endpoint(app: FastAPI) -> None:
    served = {
        (method.upper(), route_path)
        for route_path, operations in app.openapi()["paths"].items()
        for method in operations
    }
    assert served - billfold.sdk.ROUTES == set()
    assert billfold.sdk.ROUTES - served == set()


def test_paths_quote_ids_but_keep_ext_refs() -> None:
    assert (
        path("/v1/customers/{id}/wallet", "ext:acme 1/2") == "/v1/customers/ext:acme%201%2F2/wallet"
    )
    with pytest.raises(ValueError, match="takes 1 values"):
        path("/v1/customers/{id}", "a", "b")


def test_retry_after_is_honoured_in_seconds_and_as_a_date() -> None:
    request = httpx.Request("GET", "http://x")
    assert (
        _retries.wait_s(0, httpx.Response(503, headers={"retry-after": "2"}, request=request))
        == 2.0
    )
    later = format_datetime(datetime.now(UTC) + timedelta(seconds=20), usegmt=True)
    waited = _retries.wait_s(
        0, httpx.Response(429, headers={"retry-after": later}, request=request)
    )
    assert 15 < waited <= 20
    # A huge Retry-After is capped; without one, jittered backoff within its bounds.
    huge = httpx.Response(503, headers={"retry-after": "100000"}, request=request)
    assert _retries.wait_s(0, huge) == _retries.RETRY_WAIT_MAX_S
    for attempt in range(6):
        ceiling = min(_retries.BACKOFF_BASE_S * 2**attempt, _retries.BACKOFF_MAX_S)
        assert ceiling / 2 <= _retries.wait_s(attempt, None) <= ceiling


def _problem(
    status: int, code: str, request_id: str, retry_after: str | None = None
) -> httpx.Response:
    headers = {"x-request-id": request_id, "content-type": "application/problem+json"}
    if retry_after is not None:
        headers["retry-after"] = retry_after
    body = {
        "type": f"https://billfold.dev/problems/{code}",
        "title": "t",
        "status": status,
        "detail": f"detail of {code}",
        "code": code,
    }
    return httpx.Response(status, headers=headers, json=body)


def test_a_post_keeps_its_idempotency_key_across_retries() -> None:
    seen: list[httpx.Request] = []
    answers = [
        _problem(503, "unavailable", "req_1", retry_after="0"),
        _problem(409, "idempotency_key_in_use", "req_2", retry_after="0"),
        httpx.Response(200, json={"id": "auth_1", "status": "authorized"}),
    ]

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return answers[len(seen) - 1]

    with Billfold("bf_sk_x", base_url="http://b", transport=httpx.MockTransport(handler)) as client:
        answer = client.authorizations.create(customer_id="ext:a", asset="USD", amount="1")
        assert answer["id"] == "auth_1"
        keys = {request.headers["idempotency-key"] for request in seen}
        assert len(seen) == 3
        assert len(keys) == 1
        # A new call is a new key; a GET carries none.
        seen.clear()
        answers[:] = [httpx.Response(200, json={})] * 2
        client.authorizations.create(customer_id="ext:a", asset="USD", amount="1")
        client.authorizations.get("auth_1")
        assert seen[0].headers["idempotency-key"] not in keys
        assert "idempotency-key" not in seen[1].headers
        assert seen[1].headers["authorization"] == "Bearer bf_sk_x"


def test_retries_are_bounded_and_errors_carry_code_status_request_id() -> None:
    calls = 0

    def handler(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        return _problem(503, "unavailable", f"req_{calls}", retry_after="0")

    client = Billfold(
        "bf_sk_x", base_url="http://b", max_retries=2, transport=httpx.MockTransport(handler)
    )
    with pytest.raises(billfold.sdk.InternalServerError) as raised:
        client.customers.get("ext:a")
    assert calls == 3
    assert (raised.value.code, raised.value.status, raised.value.request_id) == (
        "unavailable",
        503,
        "req_3",
    )
    assert raised.value.detail == "detail of unavailable"


def test_caller_mistakes_are_not_retried() -> None:
    calls = 0

    def handler(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        return _problem(422, "invalid_amount", "req_9")

    client = Billfold("bf_sk_x", base_url="http://b", transport=httpx.MockTransport(handler))
    with pytest.raises(billfold.sdk.BadRequestError) as raised:
        client.authorizations.create(customer_id="ext:a", asset="USD", amount="x")
    assert calls == 1
    assert raised.value.code == "invalid_amount"
    assert raised.value.status == 422


async def test_connection_failures_are_retried_then_raised() -> None:
    calls = 0

    def handler(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        raise httpx.ConnectError("refused", request=request)

    client = AsyncBillfold(
        "bf_sk_x", base_url="http://b", max_retries=1, transport=httpx.MockTransport(handler)
    )
    with pytest.raises(billfold.sdk.APIConnectionError) as raised:
        await client.customers.list()
    assert calls == 2
    assert raised.value.code == "connection_error"
    assert raised.value.status is None
    await client.aclose()


def test_timeouts_are_on_by_default_and_a_key_is_required(monkeypatch: pytest.MonkeyPatch) -> None:
    client = Billfold("bf_sk_x")
    assert client._http.timeout == billfold.sdk.DEFAULT_TIMEOUT
    assert client._http.timeout.read is not None
    monkeypatch.delenv("BILLFOLD_API_KEY", raising=False)
    with pytest.raises(ValueError, match="BILLFOLD_API_KEY"):
        Billfold()


@pytest.fixture
async def sdk(app: FastAPI, tenant: Tenant) -> AsyncIterator[AsyncBillfold]:
    client = AsyncBillfold(
        tenant.api_key, base_url="http://billfold.test", transport=httpx.ASGITransport(app=app)
    )
    yield client
    await client.aclose()


async def test_async_client_drives_the_real_api(sdk: AsyncBillfold) -> None:
    customer = await sdk.customers.create(external_id="acme", name="Acme")
    await sdk.customers.create_grant("ext:acme", asset="USD", amount="10.00", purpose="paid")
    held = await sdk.authorizations.create(
        customer_id="ext:acme", asset="USD", amount="4.00", idempotency_key="k-1"
    )
    assert held["status"] == "authorized"
    # The same key replays the same hold rather than taking a second one.
    again = await sdk.authorizations.create(
        customer_id="ext:acme", asset="USD", amount="4.00", idempotency_key="k-1"
    )
    assert again["id"] == held["id"]
    declined = await sdk.authorizations.create(customer_id="ext:acme", asset="USD", amount="7.00")
    assert (declined["status"], declined["decline_code"]) == ("declined", "insufficient_funds")
    captured = await sdk.authorizations.capture(held["id"], amount="1.50")
    assert captured["status"] == "captured"
    wallet = await sdk.customers.wallet(customer["id"])
    assert wallet["balances"][0]["available"] == "8.50"
    with pytest.raises(billfold.sdk.ConflictError) as raised:
        await sdk.authorizations.release(held["id"])
    assert raised.value.code == "already_captured"
    assert raised.value.request_id
    assert raised.value.request_id.startswith("req_")
    with pytest.raises(billfold.sdk.NotFoundError) as missing:
        await sdk.customers.get("ext:nobody")
    assert missing.value.status == 404
    assert missing.value.code == "customer_not_found"
    page = await sdk.customers.list(limit=1)
    assert [row["id"] for row in page["data"]] == [customer["id"]]


async def test_gateway_keys_are_shown_once_hashed_listed_and_revoked(
    sdk: AsyncBillfold, app: FastAPI, other_tenant: Tenant
) -> None:
    await sdk.customers.create(external_id="acme")
    issued = await sdk.customers.gateway_keys.create("ext:acme", name="prod")
    assert issued["key"].startswith("bf_gk_")
    assert issued["key_prefix"] == issued["key"][:10]
    listed = await sdk.customers.gateway_keys.list("ext:acme")
    assert [row["id"] for row in listed["data"]] == [issued["id"]]
    assert "key" not in listed["data"][0]
    # Another organization sees nothing of it.
    other = AsyncBillfold(
        other_tenant.api_key, base_url="http://t", transport=httpx.ASGITransport(app=app)
    )
    await other.customers.create(external_id="acme")
    with pytest.raises(billfold.sdk.NotFoundError):
        await other.customers.gateway_keys.revoke("ext:acme", issued["id"])
    await other.aclose()
    revoked = await sdk.customers.gateway_keys.revoke("ext:acme", issued["id"])
    assert revoked["revoked_at"] is not None
    with pytest.raises(billfold.sdk.NotFoundError) as again:
        await sdk.customers.gateway_keys.revoke("ext:acme", issued["id"])
    assert again.value.code == "gateway_key_not_found"
    with pytest.raises(billfold.sdk.NotFoundError):
        await sdk.customers.gateway_keys.create("ext:nobody")


def test_sync_client_over_http(database_url: str) -> None:
    with (
        billfold_server(database_url) as server,
        Billfold(server.api_key, base_url=server.base_url) as client,
    ):
        assert client.health.live() == {"status": "ok"}
        client.customers.create(external_id="acme")
        client.customers.create_grant("ext:acme", asset="USD", amount="2", purpose="paid")
        held = client.authorizations.create(customer_id="ext:acme", asset="USD", amount="2")
        assert client.authorizations.release(held["id"])["status"] == "released"
        with (
            Billfold("bf_sk_wrong", base_url=server.base_url) as wrong,
            pytest.raises(billfold.sdk.AuthenticationError),
        ):
            wrong.customers.list()
