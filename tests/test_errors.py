"""Every way a request can be wrong gets an RFC 9457 problem with a stable
`code` (and the `field` at fault where there is one), changes nothing, and —
like every response — carries an X-Request-Id."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from fastapi import APIRouter, FastAPI

from billfold import limits
from billfold.api.boundary import BoundaryRoute
from billfold.api.context import AppContext
from tests.conftest import Tenant
from tests.support import assert_problem, count_rows

ONE_MIB = limits.request_body_bytes_max


async def _chunks(total_bytes: int, chunk_bytes: int = 64 * 1024) -> AsyncIterator[bytes]:
    """A body with no Content-Length: httpx sends it chunk by chunk."""
    sent = 0
    while sent < total_bytes:
        size = min(chunk_bytes, total_bytes - sent)
        sent += size
        yield b" " * size


class TestMalformedBodies:
    async def test_malformed_json_is_400(self, client: httpx.AsyncClient, ctx: AppContext) -> None:
        response = await client.post(
            "/v1/api-keys", content=b'{"name": ', headers={"content-type": "application/json"}
        )
        assert_problem(response, 400, "malformed_json", field=None)
        assert await count_rows(ctx, "api_keys") == 1

    @pytest.mark.parametrize(
        "content_type", ["application/x-www-form-urlencoded", "text/plain", None]
    )
    async def test_non_json_body_is_415(
        self, client: httpx.AsyncClient, ctx: AppContext, content_type: str | None
    ) -> None:
        headers = {"content-type": content_type} if content_type else {}
        request = client.build_request("POST", "/v1/api-keys", content=b"name=x", headers=headers)
        assert request.headers.get("content-type") == content_type
        response = await client.send(request)
        assert_problem(response, 415, "unsupported_media_type")
        assert await count_rows(ctx, "api_keys") == 1

    async def test_json_with_charset_and_vendor_suffix_are_json(
        self, client: httpx.AsyncClient
    ) -> None:
        for content_type in ("application/json; charset=utf-8", "application/merge-patch+json"):
            response = await client.post(
                "/v1/api-keys", content=b'{"name": "ci"}', headers={"content-type": content_type}
            )
            assert response.status_code == 201, (content_type, response.text)


class TestOversizedBodies:
    async def test_declared_length_over_limit_is_413(
        self, client: httpx.AsyncClient, ctx: AppContext
    ) -> None:
        body = b'{"name": "x"}' + b" " * ONE_MIB
        response = await client.post(
            "/v1/api-keys", content=body, headers={"content-type": "application/json"}
        )
        assert_problem(response, 413, "payload_too_large")
        assert await count_rows(ctx, "api_keys") == 1

    async def test_chunked_body_over_limit_is_413(
        self, client: httpx.AsyncClient, ctx: AppContext
    ) -> None:
        request = client.build_request(
            "POST",
            "/v1/api-keys",
            content=_chunks(ONE_MIB + 1),
            headers={"content-type": "application/json"},
        )
        assert "content-length" not in request.headers
        response = await client.send(request)
        assert_problem(response, 413, "payload_too_large")
        assert await count_rows(ctx, "api_keys") == 1

    async def test_body_of_exactly_the_limit_is_accepted(self, client: httpx.AsyncClient) -> None:
        # JSON allows trailing whitespace, so padding reaches the limit exactly.
        head = b'{"name": "padded"}'
        body = head + b" " * (ONE_MIB - len(head))
        assert len(body) == ONE_MIB
        response = await client.post(
            "/v1/api-keys", content=body, headers={"content-type": "application/json"}
        )
        assert response.status_code == 201, response.text


class TestRouting:
    async def test_unknown_route_is_404(self, client: httpx.AsyncClient) -> None:
        assert_problem(await client.get("/v1/no-such-thing"), 404, "route_not_found")

    async def test_unknown_route_without_key_is_still_404(
        self, anonymous: httpx.AsyncClient
    ) -> None:
        assert_problem(await anonymous.post("/v1/no-such-thing", json={}), 404, "route_not_found")

    async def test_wrong_method_is_405_with_allow(self, client: httpx.AsyncClient) -> None:
        response = await client.put("/v1/api-keys", json={"name": "x"})
        assert_problem(response, 405, "method_not_allowed")
        assert "POST" in response.headers["allow"]


class TestAuthentication:
    async def test_missing_key_is_401(self, anonymous: httpx.AsyncClient) -> None:
        assert_problem(await anonymous.get("/v1/api-keys"), 401, "missing_api_key")

    @pytest.mark.parametrize(
        "authorization",
        [
            "Bearer bf_sk_not-a-real-key",
            "Bearer sk_live_wrong_prefix",
            "Basic dXNlcjpwYXNz",
            "bf_sk_without_scheme",
        ],
    )
    async def test_invalid_key_is_401(
        self, anonymous: httpx.AsyncClient, authorization: str
    ) -> None:
        response = await anonymous.get("/v1/api-keys", headers={"authorization": authorization})
        assert_problem(response, 401, "invalid_api_key")

    async def test_revoked_key_is_401(
        self, client: httpx.AsyncClient, anonymous: httpx.AsyncClient
    ) -> None:
        created = await client.post("/v1/api-keys", json={"name": "short-lived"})
        assert created.status_code == 201, created.text
        key = created.json()
        headers = {"authorization": f"Bearer {key['key']}"}
        assert (await anonymous.get("/v1/api-keys", headers=headers)).status_code == 200
        revoked = await client.delete(f"/v1/api-keys/{key['id']}")
        assert revoked.status_code == 200, revoked.text
        assert revoked.json()["revoked_at"] is not None
        assert_problem(await anonymous.get("/v1/api-keys", headers=headers), 401, "invalid_api_key")

    async def test_a_key_can_revoke_itself(self, client: httpx.AsyncClient, tenant: Tenant) -> None:
        listed = (await client.get("/v1/api-keys")).json()["data"]
        (own,) = listed
        assert (await client.delete(f"/v1/api-keys/{own['id']}")).status_code == 200
        assert_problem(await client.get("/v1/api-keys"), 401, "invalid_api_key")

    async def test_revoking_twice_is_404(self, client: httpx.AsyncClient) -> None:
        key_id = (await client.post("/v1/api-keys", json={})).json()["id"]
        assert (await client.delete(f"/v1/api-keys/{key_id}")).status_code == 200
        assert_problem(await client.delete(f"/v1/api-keys/{key_id}"), 404, "api_key_not_found")

    async def test_the_secret_is_never_listed(self, client: httpx.AsyncClient) -> None:
        secret = (await client.post("/v1/api-keys", json={"name": "x"})).json()["key"]
        assert secret.startswith("bf_sk_")
        listing = await client.get("/v1/api-keys")
        assert secret not in listing.text
        assert all("key" not in row for row in listing.json()["data"])


class TestValidation:
    @pytest.mark.parametrize(
        ("path", "body", "field"),
        [
            ("/v1/api-keys", {"name": 5}, "name"),
            ("/v1/api-keys", {"name": ""}, "name"),
            ("/v1/webhook-endpoints", {"url": "https://example.com", "topics": "*"}, "topics"),
            ("/v1/webhook-endpoints", {"url": "https://example.com", "topics": [7]}, "topics.0"),
            ("/v1/webhook-endpoints", {"topics": ["*"]}, "url"),
        ],
    )
    async def test_wrong_field_type_is_422_naming_the_field(
        self, client: httpx.AsyncClient, ctx: AppContext, path: str, body: object, field: str
    ) -> None:
        problem = assert_problem(await client.post(path, json=body), 422, "validation_error")
        assert problem["field"] == field
        assert problem["errors"][0]["field"] == field
        assert await count_rows(ctx, "api_keys") == 1
        assert await count_rows(ctx, "webhook_endpoints") == 0

    async def test_body_that_is_not_an_object_is_422(self, client: httpx.AsyncClient) -> None:
        assert_problem(await client.post("/v1/api-keys", json=["name"]), 422, "validation_error")

    async def test_unknown_field_is_422(self, client: httpx.AsyncClient, ctx: AppContext) -> None:
        problem = assert_problem(
            await client.post("/v1/api-keys", json={"name": "x", "nmae": "typo"}),
            422,
            "validation_error",
            field="nmae",
        )
        assert problem["errors"] == [
            {"field": "nmae", "code": "extra_forbidden", "message": problem["errors"][0]["message"]}
        ]
        assert await count_rows(ctx, "api_keys") == 1

    async def test_unknown_field_on_patch_is_422(self, client: httpx.AsyncClient) -> None:
        created = await client.post("/v1/webhook-endpoints", json={"url": "https://example.com"})
        endpoint_id = created.json()["id"]
        response = await client.patch(
            f"/v1/webhook-endpoints/{endpoint_id}", json={"secret": "whsec_mine"}
        )
        assert_problem(response, 422, "validation_error", field="secret")

    async def test_bad_idempotency_key_is_400(self, client: httpx.AsyncClient) -> None:
        response = await client.post(
            "/v1/api-keys", json={}, headers={"Idempotency-Key": "x" * 256}
        )
        assert_problem(response, 400, "invalid_idempotency_key", field="Idempotency-Key")


@pytest.fixture
def crashing_app(app: FastAPI) -> FastAPI:
    """The app plus a route with a bug in it, to see what a 500 looks like."""
    router = APIRouter(route_class=BoundaryRoute)

    @router.post("/v1/_test/crash")
    async def crash() -> dict[str, str]:
        raise RuntimeError("a bug")

    app.include_router(router)
    return app


class TestInternalErrors:
    async def test_unexpected_error_is_500_problem_with_request_id(
        self, crashing_app: FastAPI, tenant: Tenant, ctx: AppContext
    ) -> None:
        # The server re-raises after answering so its own log sees the bug;
        # the client only gets the answer.
        transport = httpx.ASGITransport(app=crashing_app, raise_app_exceptions=False)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://billfold.test", headers=tenant.headers
        ) as http:
            response = await http.post(
                "/v1/_test/crash",
                json={},
                headers={"X-Request-Id": "trace-500", "Idempotency-Key": "crash-1"},
            )
        problem = assert_problem(response, 500, "internal_error")
        assert problem["request_id"] == "trace-500"
        assert "a bug" not in response.text
        # A 5xx releases its idempotency key so the client may simply retry.
        assert await count_rows(ctx, "idempotency_keys") == 0


class TestRequestId:
    async def test_generated_when_absent(self, client: httpx.AsyncClient) -> None:
        first = await client.get("/v1/api-keys")
        second = await client.get("/v1/api-keys")
        assert first.headers["x-request-id"]
        assert first.headers["x-request-id"] != second.headers["x-request-id"]

    @pytest.mark.parametrize("incoming", ["abc-123", "4bf92f35.00f067aa:0BA902B7_x", "a" * 128])
    async def test_sane_incoming_id_is_echoed(
        self, client: httpx.AsyncClient, incoming: str
    ) -> None:
        ok = await client.get("/v1/api-keys", headers={"X-Request-Id": incoming})
        assert ok.headers["x-request-id"] == incoming
        failed = await client.get("/v1/nowhere", headers={"X-Request-Id": incoming})
        assert assert_problem(failed, 404, "route_not_found")["request_id"] == incoming

    @pytest.mark.parametrize("incoming", ["has space", "a" * 129, "new\\nline", "<script>", ""])
    async def test_insane_incoming_id_is_replaced(
        self, client: httpx.AsyncClient, incoming: str
    ) -> None:
        response = await client.get("/v1/api-keys", headers={"X-Request-Id": incoming})
        assert response.headers["x-request-id"] not in ("", incoming)

    @pytest.mark.parametrize("path", ["/healthz", "/readyz", "/metrics", "/openapi.json"])
    async def test_present_on_unauthenticated_routes(
        self, anonymous: httpx.AsyncClient, path: str
    ) -> None:
        response = await anonymous.get(path)
        assert response.status_code == 200
        assert response.headers["x-request-id"]

    async def test_present_on_every_error(
        self, anonymous: httpx.AsyncClient, client: httpx.AsyncClient
    ) -> None:
        responses = [
            await anonymous.get("/v1/api-keys"),
            await client.get("/v1/api-keys?limit=0"),
            await client.post("/v1/api-keys", content=b"x", headers={"content-type": "text/x"}),
            await client.delete("/v1/api-keys/key_missing"),
        ]
        assert all(r.status_code >= 400 and r.headers["x-request-id"] for r in responses)
