"""Cursor pagination (`limit`, `starting_after`, `has_more`) walks every row
exactly once, newest first, on each list; a bad `limit` or cursor is a 422."""

from __future__ import annotations

import httpx
import pytest

from billfold import limits
from tests.support import assert_problem

LISTS = ["/v1/api-keys", "/v1/webhook-endpoints"]


async def _create(client: httpx.AsyncClient, path: str, n: int) -> list[str]:
    ids = []
    for i in range(n):
        body = {"name": f"k{i}"} if path == "/v1/api-keys" else {"url": f"https://e{i}.example"}
        response = await client.post(path, json=body)
        assert response.status_code == 201, response.text
        ids.append(response.json()["id"])
    return ids


async def _walk(client: httpx.AsyncClient, path: str, limit: int) -> list[list[str]]:
    pages: list[list[str]] = []
    cursor: str | None = None
    while True:
        params: dict[str, str | int] = {"limit": limit}
        if cursor is not None:
            params["starting_after"] = cursor
        response = await client.get(path, params=params)
        assert response.status_code == 200, response.text
        page = response.json()
        assert set(page) == {"data", "has_more"}
        ids = [row["id"] for row in page["data"]]
        assert len(ids) <= limit
        pages.append(ids)
        if not page["has_more"]:
            return pages
        assert len(ids) == limit, "a page with more after it is full"
        cursor = ids[-1]
        assert len(pages) < 50, "pagination does not end"


class TestWalkingPages:
    @pytest.mark.parametrize("path", LISTS)
    @pytest.mark.parametrize("limit", [1, 2, 3, 7])
    async def test_every_row_once_in_order(
        self, client: httpx.AsyncClient, path: str, limit: int
    ) -> None:
        created = await _create(client, path, 6)
        pages = await _walk(client, path, limit)
        seen = [ident for page in pages for ident in page]
        assert len(seen) == len(set(seen)), "no row on two pages"
        assert set(created) <= set(seen)
        expected_total = len(created) + (1 if path == "/v1/api-keys" else 0)  # the default key
        assert len(seen) == expected_total
        assert seen == sorted(seen, reverse=True), "newest (largest id) first"

    @pytest.mark.parametrize("path", LISTS)
    async def test_exactly_full_last_page_says_no_more(
        self, client: httpx.AsyncClient, path: str
    ) -> None:
        await _create(client, path, 3 if path == "/v1/api-keys" else 4)
        first = (await client.get(path, params={"limit": 4})).json()
        assert len(first["data"]) == 4
        assert first["has_more"] is False

    async def test_default_limit(self, client: httpx.AsyncClient) -> None:
        await _create(client, "/v1/api-keys", limits.page_size_default)
        page = (await client.get("/v1/api-keys")).json()
        assert len(page["data"]) == limits.page_size_default
        assert page["has_more"] is True

    @pytest.mark.parametrize("path", LISTS)
    async def test_cursor_past_the_end_is_an_empty_page(
        self, client: httpx.AsyncClient, path: str
    ) -> None:
        oldest = (await _create(client, path, 2))[0]
        if path == "/v1/api-keys":
            oldest = (await _walk(client, path, 100))[0][-1]
        page = (await client.get(path, params={"starting_after": oldest})).json()
        assert page == {"data": [], "has_more": False}

    async def test_revoked_keys_still_listed_with_revoked_at(
        self, client: httpx.AsyncClient
    ) -> None:
        (key_id,) = await _create(client, "/v1/api-keys", 1)
        await client.delete(f"/v1/api-keys/{key_id}")
        rows = {r["id"]: r for r in (await client.get("/v1/api-keys")).json()["data"]}
        assert rows[key_id]["revoked_at"] is not None

    async def test_deleted_endpoints_are_not_listed(self, client: httpx.AsyncClient) -> None:
        kept, deleted = await _create(client, "/v1/webhook-endpoints", 2)
        assert (await client.delete(f"/v1/webhook-endpoints/{deleted}")).status_code == 200
        page = (await client.get("/v1/webhook-endpoints")).json()
        assert [e["id"] for e in page["data"]] == [kept]


class TestBadParameters:
    @pytest.mark.parametrize("path", [*LISTS, "/v1/webhook-endpoints/we_x/deliveries"])
    @pytest.mark.parametrize("limit", ["0", "-1", str(limits.page_size_max + 1), "ten", "1.5"])
    async def test_bad_limit_is_422(self, client: httpx.AsyncClient, path: str, limit: str) -> None:
        response = await client.get(path, params={"limit": limit})
        assert_problem(response, 422, "validation_error", field="limit")

    @pytest.mark.parametrize("path", LISTS)
    async def test_largest_limit_is_allowed(self, client: httpx.AsyncClient, path: str) -> None:
        response = await client.get(path, params={"limit": limits.page_size_max})
        assert response.status_code == 200

    @pytest.mark.parametrize("path", LISTS)
    async def test_overlong_cursor_is_422(self, client: httpx.AsyncClient, path: str) -> None:
        response = await client.get(path, params={"starting_after": "x" * 65})
        assert_problem(response, 422, "validation_error", field="starting_after")
