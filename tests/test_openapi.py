"""The OpenAPI document at `/openapi.json` loads and declares, for every `/v1`
operation, the problem responses it can give, with the `Problem` schema."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

PROBLEM_REF = "#/components/schemas/Problem"
METHODS = ("get", "post", "put", "patch", "delete")


@pytest.fixture
async def spec(anonymous: httpx.AsyncClient) -> dict[str, Any]:
    response = await anonymous.get("/openapi.json")
    assert response.status_code == 200
    document: dict[str, Any] = response.json()
    return document


def _operations(spec: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (method.upper(), path, operation)
        for path, item in spec["paths"].items()
        if path.startswith("/v1/")
        for method, operation in item.items()
        if method in METHODS
    ]


def _declares_problem(operation: dict[str, Any], status: int) -> bool:
    response = operation["responses"].get(str(status))
    if response is None:
        return False
    schema = response.get("content", {}).get("application/problem+json", {}).get("schema", {})
    return bool(schema.get("$ref") == PROBLEM_REF)


class TestDocument:
    async def test_loads_with_the_v1_api(self, spec: dict[str, Any]) -> None:
        assert spec["openapi"].startswith("3.")
        assert spec["info"]["title"] == "Billfold"
        paths = set(spec["paths"])
        assert {"/v1/api-keys", "/v1/webhook-endpoints", "/healthz", "/readyz"} <= paths

    async def test_problem_schema(self, spec: dict[str, Any]) -> None:
        problem = spec["components"]["schemas"]["Problem"]
        assert {"type", "title", "status", "detail", "code"} <= set(problem["required"])
        assert {"field", "errors", "request_id"} <= set(problem["properties"])


class TestErrorResponsesDeclared:
    async def test_every_v1_operation_declares_401_422_500(self, spec: dict[str, Any]) -> None:
        operations = _operations(spec)
        assert len(operations) >= 10
        missing = [
            f"{method} {path} {status}"
            for method, path, operation in operations
            for status in (400, 401, 422, 500)
            if not _declares_problem(operation, status)
        ]
        assert missing == []

    async def test_operations_with_an_id_declare_404(self, spec: dict[str, Any]) -> None:
        missing = [
            f"{method} {path}"
            for method, path, operation in _operations(spec)
            if "{" in path and not _declares_problem(operation, 404)
        ]
        assert missing == []

    async def test_body_operations_declare_413_and_415(self, spec: dict[str, Any]) -> None:
        missing = [
            f"{method} {path} {status}"
            for method, path, operation in _operations(spec)
            if method in ("POST", "PATCH", "PUT")
            for status in (413, 415)
            if not _declares_problem(operation, status)
        ]
        assert missing == []

    async def test_every_post_declares_the_idempotency_409(self, spec: dict[str, Any]) -> None:
        # Any POST may carry an Idempotency-Key, so any POST may answer 409.
        missing = [
            f"{method} {path}"
            for method, path, operation in _operations(spec)
            if method == "POST" and not _declares_problem(operation, 409)
        ]
        assert missing == []

    async def test_readyz_declares_503(self, spec: dict[str, Any]) -> None:
        assert _declares_problem(spec["paths"]["/readyz"]["get"], 503)
