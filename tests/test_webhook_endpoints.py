"""Webhook endpoints over the API: create (secret shown once, in the
`whsec_<base64>` form), read, update, delete, rotate, and the topic rules —
exact names, `prefix.*` families and `*`, anything else `unknown_topic`."""

from __future__ import annotations

import base64

import httpx
import pytest

from billfold import limits
from billfold.api.context import AppContext
from billfold.webhooks import topics
from tests.support import assert_problem, count_rows, fetch_row

URL = "https://hooks.example.com/billfold"


@pytest.fixture(autouse=True)
def more_topics(monkeypatch: pytest.MonkeyPatch) -> None:
    """Topics beyond `webhook.test`, whatever other domains register later."""
    monkeypatch.setattr(
        topics, "KNOWN", topics.KNOWN | {"invoice.created", "invoice.paid", "wallet.low"}
    )


async def _create(client: httpx.AsyncClient, **body: object) -> httpx.Response:
    return await client.post("/v1/webhook-endpoints", json={"url": URL, **body})


class TestCreate:
    async def test_secret_is_standard_webhooks_form_and_shown_once(
        self, client: httpx.AsyncClient
    ) -> None:
        created = await _create(client, description="billing")
        assert created.status_code == 201, created.text
        endpoint = created.json()
        secret = endpoint["secret"]
        assert secret.startswith("whsec_")
        assert len(base64.b64decode(secret.removeprefix("whsec_"), validate=True)) == (
            limits.webhook_secret_bytes
        )
        assert endpoint["id"].startswith("we_")
        assert endpoint["topics"] == ["*"]
        assert endpoint["status"] == "enabled"
        fetched = await client.get(f"/v1/webhook-endpoints/{endpoint['id']}")
        listed = await client.get("/v1/webhook-endpoints")
        for later in (fetched, listed):
            assert later.status_code == 200
            assert secret not in later.text
            assert "secret" not in later.text

    async def test_each_endpoint_has_its_own_secret(self, client: httpx.AsyncClient) -> None:
        first = (await _create(client)).json()["secret"]
        second = (await _create(client)).json()["secret"]
        assert first != second

    @pytest.mark.parametrize("url", ["ftp://example.com/x", "example.com/hooks", "https://", ""])
    async def test_bad_url_is_refused(
        self, client: httpx.AsyncClient, ctx: AppContext, url: str
    ) -> None:
        assert_problem(await _create(client, url=url), 400, "invalid_url", field="url")
        assert await count_rows(ctx, "webhook_endpoints") == 0

    async def test_endpoint_limit(self, client: httpx.AsyncClient) -> None:
        for _ in range(limits.webhook_endpoints_per_organization_max):
            assert (await _create(client)).status_code == 201
        response = await _create(client)
        assert response.status_code in (400, 409, 422)
        assert response.json()["code"] == "webhook_endpoint_limit_reached"


class TestTopics:
    @pytest.mark.parametrize(
        "subscribed",
        [["*"], ["invoice.paid"], ["invoice.*"], ["invoice.paid", "wallet.low"], ["webhook.*"]],
    )
    async def test_known_topics_families_and_star_are_accepted(
        self, client: httpx.AsyncClient, subscribed: list[str]
    ) -> None:
        created = await _create(client, topics=subscribed)
        assert created.status_code == 201, created.text
        assert created.json()["topics"] == sorted(subscribed)

    @pytest.mark.parametrize(
        ("subscribed", "field"),
        [
            (["invoice.refunded"], "topics.0"),
            (["nosuch.*"], "topics.0"),
            (["*", "Invoice.Paid"], "topics.1"),
            (["invoice*"], "topics.0"),
            (["invoice.**"], "topics.0"),
            ([""], "topics.0"),
        ],
    )
    async def test_unknown_topic_is_refused_naming_it(
        self, client: httpx.AsyncClient, ctx: AppContext, subscribed: list[str], field: str
    ) -> None:
        response = await _create(client, topics=subscribed)
        assert response.status_code in (400, 422)
        assert_problem(response, response.status_code, "unknown_topic", field=field)
        assert await count_rows(ctx, "webhook_endpoints") == 0

    async def test_no_topic_at_all_is_refused(self, client: httpx.AsyncClient) -> None:
        response = await _create(client, topics=[])
        assert response.status_code in (400, 422)
        assert response.json()["field"] == "topics"

    async def test_duplicates_are_folded(self, client: httpx.AsyncClient) -> None:
        created = await _create(client, topics=["wallet.low", "wallet.low"])
        assert created.json()["topics"] == ["wallet.low"]


class TestUpdate:
    async def test_patch_changes_only_what_is_given(self, client: httpx.AsyncClient) -> None:
        endpoint = (await _create(client, topics=["invoice.*"], description="d")).json()
        path = f"/v1/webhook-endpoints/{endpoint['id']}"
        patched = await client.patch(path, json={"url": "https://new.example/h"})
        assert patched.status_code == 200, patched.text
        body = patched.json()
        assert body["url"] == "https://new.example/h"
        assert body["topics"] == ["invoice.*"]
        assert body["description"] == "d"
        assert (await client.get(path)).json() == body

    async def test_patch_with_unknown_topic_changes_nothing(
        self, client: httpx.AsyncClient
    ) -> None:
        endpoint = (await _create(client, topics=["wallet.low"])).json()
        path = f"/v1/webhook-endpoints/{endpoint['id']}"
        response = await client.patch(
            path, json={"url": "https://changed.example", "topics": ["bogus"]}
        )
        assert_problem(response, response.status_code, "unknown_topic", field="topics.0")
        after = (await client.get(path)).json()
        assert after["topics"] == ["wallet.low"]
        assert after["url"] == URL

    async def test_disable_and_enable(self, client: httpx.AsyncClient) -> None:
        endpoint = (await _create(client)).json()
        path = f"/v1/webhook-endpoints/{endpoint['id']}"
        disabled = (await client.patch(path, json={"status": "disabled"})).json()
        assert disabled["status"] == "disabled"
        assert disabled["disabled_reason"]
        refused = await client.post(f"{path}/test")
        assert_problem(refused, 400, "webhook_endpoint_disabled")
        enabled = (await client.patch(path, json={"status": "enabled"})).json()
        assert enabled["status"] == "enabled"
        assert enabled["disabled_reason"] is None
        assert (await client.post(f"{path}/test")).status_code == 202

    async def test_bad_status_is_422(self, client: httpx.AsyncClient) -> None:
        endpoint = (await _create(client)).json()
        response = await client.patch(
            f"/v1/webhook-endpoints/{endpoint['id']}", json={"status": "paused"}
        )
        assert_problem(response, 422, "validation_error", field="status")


class TestDelete:
    async def test_deleted_endpoint_is_gone(
        self, client: httpx.AsyncClient, ctx: AppContext
    ) -> None:
        endpoint = (await _create(client)).json()
        path = f"/v1/webhook-endpoints/{endpoint['id']}"
        await client.post(f"{path}/test")
        deleted = await client.delete(path)
        assert deleted.status_code == 200
        for response in (
            await client.get(path),
            await client.patch(path, json={"description": "x"}),
            await client.delete(path),
            await client.post(f"{path}/test"),
            await client.post(f"{path}/rotate-secret"),
            await client.get(f"{path}/deliveries"),
        ):
            assert_problem(response, 404, "webhook_endpoint_not_found", field="id")
        assert await count_rows(ctx, "webhook_deliveries", status="pending") == 0
        assert await count_rows(ctx, "webhook_deliveries", status="canceled") == 1

    async def test_deleted_endpoints_do_not_count_against_the_limit(
        self, client: httpx.AsyncClient
    ) -> None:
        for _ in range(limits.webhook_endpoints_per_organization_max):
            endpoint = (await _create(client)).json()
        await client.delete(f"/v1/webhook-endpoints/{endpoint['id']}")
        assert (await _create(client)).status_code == 201


class TestRotate:
    async def test_rotation_returns_a_new_secret_once(
        self, client: httpx.AsyncClient, ctx: AppContext
    ) -> None:
        endpoint = (await _create(client)).json()
        rotated = await client.post(f"/v1/webhook-endpoints/{endpoint['id']}/rotate-secret")
        assert rotated.status_code == 200, rotated.text
        new_secret = rotated.json()["secret"]
        assert new_secret.startswith("whsec_")
        assert new_secret != endpoint["secret"]
        row = await fetch_row(ctx, "webhook_endpoints", endpoint["id"])
        assert row["secret"] == new_secret
        assert row["previous_secret"] == endpoint["secret"]
        later = await client.get(f"/v1/webhook-endpoints/{endpoint['id']}")
        assert new_secret not in later.text
