"""Webhook delivery end to end: the outbox is sent by `WebhookSender` to a
real local HTTP receiver, every request is checked by the independent
`standardwebhooks` verifier, failures are retried on the backoff schedule
under the same `webhook-id`, and the delivery log shows every attempt.
Also: 410 and three failing days disable an endpoint, secret rotation, topic
routing, and nothing lost to a crash between commit and delivery."""

from __future__ import annotations

import itertools
import random
from collections.abc import AsyncIterator, Iterator
from datetime import datetime, timedelta
from typing import Any

import httpx
import pytest
from standardwebhooks.webhooks import WebhookVerificationError

from billfold import limits
from billfold.api.context import AppContext
from billfold.clock import FrozenClock
from billfold.config import Settings
from billfold.organizations.service import Principal
from billfold.webhooks import service as webhooks
from billfold.webhooks import topics
from billfold.webhooks.delivery import WebhookSender, retry_delay_s
from billfold.webhooks.repository import DeliveryQueueRepository
from tests.conftest import Tenant
from tests.support import Receiver, count_rows, fetch_row, run_receiver, verify_at

TOPICS = frozenset({"invoice.created", "invoice.paid", "wallet.low"})


@pytest.fixture(autouse=True)
def more_topics(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(topics, "KNOWN", topics.KNOWN | TOPICS)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with run_receiver() as running:
        yield running


@pytest.fixture
async def sender(ctx: AppContext) -> AsyncIterator[WebhookSender]:
    running = WebhookSender(ctx.sessions, ctx.clock)
    yield running
    await running.aclose()


class _Extreme(random.Random):
    """Jitter always at one end of its range."""

    def __init__(self, high: bool) -> None:
        super().__init__(0)
        self.high = high

    def uniform(self, a: float, b: float) -> float:
        return b if self.high else a


async def _endpoint(
    client: httpx.AsyncClient, url: str, subscribed: list[str] | None = None
) -> dict[str, Any]:
    response = await client.post(
        "/v1/webhook-endpoints", json={"url": url, "topics": subscribed or ["*"]}
    )
    assert response.status_code == 201, response.text
    endpoint: dict[str, Any] = response.json()
    return endpoint


async def _send_test(client: httpx.AsyncClient, endpoint_id: str) -> dict[str, Any]:
    response = await client.post(f"/v1/webhook-endpoints/{endpoint_id}/test")
    assert response.status_code == 202, response.text
    delivery: dict[str, Any] = response.json()
    return delivery


async def _log(client: httpx.AsyncClient, endpoint_id: str) -> list[dict[str, Any]]:
    response = await client.get(f"/v1/webhook-endpoints/{endpoint_id}/deliveries?limit=100")
    assert response.status_code == 200, response.text
    rows: list[dict[str, Any]] = response.json()["data"]
    return rows


async def _delivery(
    client: httpx.AsyncClient, endpoint_id: str, delivery_id: str
) -> dict[str, Any]:
    (found,) = [d for d in await _log(client, endpoint_id) if d["id"] == delivery_id]
    return found


def _at(value: str) -> datetime:
    return datetime.fromisoformat(value)


async def _emit(ctx: AppContext, organization_id: str, *names: str) -> list[str]:
    async with ctx.sessions() as session:
        events = [
            await webhooks.emit(session, ctx.clock, organization_id, name, {"topic": name})
            for name in names
        ]
        await session.commit()
    return [event.id for event in events]


class TestRetriesUntilDelivered:
    async def test_fails_twice_then_delivered_all_signed_same_id(
        self,
        client: httpx.AsyncClient,
        ctx: AppContext,
        clock: FrozenClock,
        receiver: Receiver,
        sender: WebhookSender,
    ) -> None:
        receiver.fail_next(500, 500)
        endpoint = await _endpoint(client, receiver.url)
        queued = await _send_test(client, endpoint["id"])
        assert queued["status"] == "pending"
        assert queued["event_type"] == "webhook.test"

        sent_at: list[datetime] = []
        for attempt in (1, 2, 3):
            assert await sender.run_once() == 1
            sent_at.append(clock.now())
            received = receiver.received[-1]
            # Verified as the receiver would, at the moment it got the request.
            assert verify_at(endpoint["secret"], received, clock.now()) == queued["payload"]
            assert received.timestamp_s == int(clock.now().timestamp())
            state = await _delivery(client, endpoint["id"], queued["id"])
            assert state["attempt_count"] == attempt
            if attempt < 3:
                assert state["status"] == "pending"
                assert state["last_status_code"] == 500
                due = _at(state["next_attempt_at"])
                assert due > clock.now()
                # Not due yet: the worker leaves it alone.
                clock.set(due - timedelta(seconds=1))
                assert await sender.run_once() == 0
                clock.set(due)

        assert len(receiver.received) == 3
        assert {r.webhook_id for r in receiver.received} == {queued["event_id"]}
        assert len({r.body for r in receiver.received}) == 1, "the same bytes every time"
        assert all(r.headers["content-type"] == "application/json" for r in receiver.received)

        # The backoff follows the schedule, lengthened by at most the jitter.
        gaps = [later - earlier for earlier, later in itertools.pairwise(sent_at)]
        for gap, base_s in zip(gaps, limits.webhook_retry_delays_s, strict=False):
            longest_s = base_s * (1 + limits.webhook_retry_jitter_ratio)
            assert base_s - 0.001 <= gap.total_seconds() <= longest_s + 0.001

        final = await _delivery(client, endpoint["id"], queued["id"])
        assert final["status"] == "delivered"
        assert final["next_attempt_at"] is None
        assert _at(final["delivered_at"]) == clock.now()
        assert [a["attempt_number"] for a in final["attempts"]] == [1, 2, 3]
        assert [a["status_code"] for a in final["attempts"]] == [500, 500, 200]
        assert [_at(a["attempted_at"]) for a in final["attempts"]] == sent_at
        assert all(a["error"] is None for a in final["attempts"])
        assert '"status":500' in final["attempts"][0]["response_body"].replace(" ", "")

        # Delivered means done: no further sends, whatever the time.
        clock.advance(timedelta(days=4))
        assert await sender.run_once() == 0
        assert len(receiver.received) == 3

    async def test_verification_is_not_vacuous(
        self,
        client: httpx.AsyncClient,
        clock: FrozenClock,
        receiver: Receiver,
        sender: WebhookSender,
    ) -> None:
        endpoint = await _endpoint(client, receiver.url)
        await _send_test(client, endpoint["id"])
        await sender.run_once()
        (received,) = receiver.received
        other_secret = (await _endpoint(client, receiver.url))["secret"]
        with pytest.raises(WebhookVerificationError):
            verify_at(other_secret, received, clock.now())
        tampered = type(received)(received.path, received.headers, received.body + b" ")
        with pytest.raises(WebhookVerificationError):
            verify_at(endpoint["secret"], tampered, clock.now())
        with pytest.raises(WebhookVerificationError):
            verify_at(endpoint["secret"], received, clock.now() + timedelta(minutes=6))

    async def test_unreachable_receiver_is_logged_as_an_error(
        self, client: httpx.AsyncClient, receiver: Receiver, sender: WebhookSender
    ) -> None:
        # Port 9 (discard) has no listener here: the connection is refused.
        endpoint = await _endpoint(client, "http://127.0.0.1:9/hooks")
        queued = await _send_test(client, endpoint["id"])
        assert await sender.run_once() == 1
        state = await _delivery(client, endpoint["id"], queued["id"])
        assert state["status"] == "pending"
        (attempt,) = state["attempts"]
        assert attempt["status_code"] is None
        assert attempt["error"]

    async def test_manual_retry_sends_again_now(
        self,
        client: httpx.AsyncClient,
        clock: FrozenClock,
        receiver: Receiver,
        sender: WebhookSender,
    ) -> None:
        receiver.fail_next(500)
        endpoint = await _endpoint(client, receiver.url)
        queued = await _send_test(client, endpoint["id"])
        await sender.run_once()
        retried = await client.post(f"/v1/webhook-deliveries/{queued['id']}/retry")
        assert retried.status_code == 200, retried.text
        assert retried.json() == {"id": queued["id"], "status": "pending"}
        assert await sender.run_once() == 1
        state = await _delivery(client, endpoint["id"], queued["id"])
        assert state["status"] == "delivered"
        assert [a["status_code"] for a in state["attempts"]] == [500, 200]
        assert verify_at(endpoint["secret"], receiver.received[-1], clock.now())


class TestDisabling:
    async def test_410_disables_endpoint_and_cancels_what_is_pending(
        self,
        client: httpx.AsyncClient,
        clock: FrozenClock,
        receiver: Receiver,
        sender: WebhookSender,
    ) -> None:
        receiver.fail_next(500, 410)
        endpoint = await _endpoint(client, receiver.url)
        waiting = await _send_test(client, endpoint["id"])
        assert await sender.run_once() == 1  # 500: waits for its retry
        gone = await _send_test(client, endpoint["id"])
        assert await sender.run_once() == 1  # only the new one is due: 410

        state = (await client.get(f"/v1/webhook-endpoints/{endpoint['id']}")).json()
        assert state["status"] == "disabled"
        assert "410" in state["disabled_reason"]
        assert (await _delivery(client, endpoint["id"], gone["id"]))["status"] == "failed"
        assert (await _delivery(client, endpoint["id"], waiting["id"]))["status"] == "canceled"

        clock.advance(timedelta(days=1))
        assert await sender.run_once() == 0
        assert len(receiver.received) == 2

    async def test_reenabled_endpoint_can_have_a_failed_delivery_retried(
        self,
        client: httpx.AsyncClient,
        clock: FrozenClock,
        receiver: Receiver,
        sender: WebhookSender,
    ) -> None:
        receiver.fail_next(410)
        endpoint = await _endpoint(client, receiver.url)
        queued = await _send_test(client, endpoint["id"])
        await sender.run_once()
        retry = f"/v1/webhook-deliveries/{queued['id']}/retry"
        refused = await client.post(retry)
        assert refused.status_code == 400
        assert refused.json()["code"] == "webhook_endpoint_disabled"
        await client.patch(f"/v1/webhook-endpoints/{endpoint['id']}", json={"status": "enabled"})
        assert (await client.post(retry)).status_code == 200
        assert await sender.run_once() == 1
        assert (await _delivery(client, endpoint["id"], queued["id"]))["status"] == "delivered"

    @pytest.mark.parametrize("high", [False, True], ids=["least-jitter", "most-jitter"])
    async def test_three_days_of_failure_disable_the_endpoint(
        self,
        client: httpx.AsyncClient,
        ctx: AppContext,
        clock: FrozenClock,
        receiver: Receiver,
        high: bool,
    ) -> None:
        receiver.fail_next(*[503] * 50)
        endpoint = await _endpoint(client, receiver.url)
        queued = await _send_test(client, endpoint["id"])
        sender = WebhookSender(ctx.sessions, ctx.clock, rng=_Extreme(high))
        started = clock.now()
        try:
            for _ in range(len(limits.webhook_retry_delays_s) + 1):
                assert await sender.run_once() == 1
                state = (await client.get(f"/v1/webhook-endpoints/{endpoint['id']}")).json()
                failing_for = clock.now() - started
                if state["status"] == "disabled":
                    break
                # Still enabled means not yet failing for three days.
                assert failing_for < timedelta(seconds=limits.webhook_failing_disable_after_s)
                due = (await _delivery(client, endpoint["id"], queued["id"]))["next_attempt_at"]
                assert due is not None, "retries ran out before the endpoint was disabled"
                clock.set(_at(due))
        finally:
            await sender.aclose()

        assert state["status"] == "disabled"
        assert state["disabled_reason"]
        assert failing_for >= timedelta(seconds=limits.webhook_failing_disable_after_s)
        # "About three days": not much more than the schedule's length either.
        assert failing_for <= timedelta(seconds=sum(limits.webhook_retry_delays_s) * 1.2)
        final = await _delivery(client, endpoint["id"], queued["id"])
        assert final["status"] == "failed"
        assert len(final["attempts"]) == len(receiver.received)
        assert {r.webhook_id for r in receiver.received} == {queued["event_id"]}

    def test_schedule_outlasts_the_disable_threshold_whatever_the_jitter(self) -> None:
        for high in (False, True):
            rng = _Extreme(high)
            total_s = 0.0
            attempt = 1
            while (delay := retry_delay_s(attempt, rng)) is not None:
                assert delay > 0
                total_s += delay
                attempt += 1
            assert total_s >= limits.webhook_failing_disable_after_s

    async def test_a_success_resets_the_failing_clock(
        self,
        client: httpx.AsyncClient,
        ctx: AppContext,
        clock: FrozenClock,
        receiver: Receiver,
        sender: WebhookSender,
    ) -> None:
        receiver.fail_next(500)
        endpoint = await _endpoint(client, receiver.url)
        await _send_test(client, endpoint["id"])
        await sender.run_once()
        assert (await fetch_row(ctx, "webhook_endpoints", endpoint["id"]))["failing_since"]
        clock.advance(timedelta(hours=1))
        await sender.run_once()
        assert (await fetch_row(ctx, "webhook_endpoints", endpoint["id"]))["failing_since"] is None


class TestSecretRotation:
    async def test_old_secret_verifies_for_24_hours_only(
        self,
        client: httpx.AsyncClient,
        clock: FrozenClock,
        receiver: Receiver,
        sender: WebhookSender,
    ) -> None:
        endpoint = await _endpoint(client, receiver.url)
        old_secret = endpoint["secret"]
        rotated = await client.post(f"/v1/webhook-endpoints/{endpoint['id']}/rotate-secret")
        new_secret = rotated.json()["secret"]

        grace = timedelta(seconds=limits.webhook_secret_rotation_grace_s)
        for offset in (timedelta(0), grace - timedelta(seconds=1)):
            clock.advance(offset)
            await _send_test(client, endpoint["id"])
            assert await sender.run_once() == 1
            received = receiver.received[-1]
            assert len(received.headers["webhook-signature"].split(" ")) == 2
            assert verify_at(old_secret, received, clock.now())
            assert verify_at(new_secret, received, clock.now())

        clock.advance(timedelta(seconds=1))
        await _send_test(client, endpoint["id"])
        assert await sender.run_once() == 1
        received = receiver.received[-1]
        assert len(received.headers["webhook-signature"].split(" ")) == 1
        assert verify_at(new_secret, received, clock.now())
        with pytest.raises(WebhookVerificationError):
            verify_at(old_secret, received, clock.now())

    async def test_retry_after_rotation_is_signed_with_the_new_secret(
        self,
        client: httpx.AsyncClient,
        clock: FrozenClock,
        receiver: Receiver,
        sender: WebhookSender,
    ) -> None:
        receiver.fail_next(500)
        endpoint = await _endpoint(client, receiver.url)
        await _send_test(client, endpoint["id"])
        await sender.run_once()
        rotated = await client.post(f"/v1/webhook-endpoints/{endpoint['id']}/rotate-secret")
        clock.advance(timedelta(seconds=limits.webhook_secret_rotation_grace_s + 1))
        assert await sender.run_once() == 1
        first, second = receiver.received
        assert first.webhook_id == second.webhook_id
        assert verify_at(rotated.json()["secret"], second, clock.now())
        with pytest.raises(WebhookVerificationError):
            verify_at(endpoint["secret"], second, clock.now())


class TestTopicRouting:
    async def test_exact_family_and_star_subscriptions(
        self,
        client: httpx.AsyncClient,
        ctx: AppContext,
        clock: FrozenClock,
        tenant: Tenant,
        other_tenant: Tenant,
        receiver: Receiver,
        sender: WebhookSender,
    ) -> None:
        subscriptions = {
            "all": ["*"],
            "invoices": ["invoice.*"],
            "paid": ["invoice.paid"],
            "wallet": ["wallet.low"],
            "paid-or-wallet": ["invoice.paid", "wallet.*"],
        }
        endpoints = {
            name: await _endpoint(client, f"{receiver.url}/{name}", subscribed)
            for name, subscribed in subscriptions.items()
        }
        # Another organization's catch-all endpoint must hear none of it.
        async with ctx.sessions() as session:
            await webhooks.create_endpoint(
                session,
                ctx.clock,
                Principal(other_tenant.organization_id, "key_test"),
                url=f"{receiver.url}/other-org",
                subscribed=["*"],
                description=None,
            )
            await session.commit()

        await _emit(ctx, tenant.organization_id, "invoice.created", "invoice.paid", "wallet.low")
        expected = {
            "all": {"invoice.created", "invoice.paid", "wallet.low"},
            "invoices": {"invoice.created", "invoice.paid"},
            "paid": {"invoice.paid"},
            "wallet": {"wallet.low"},
            "paid-or-wallet": {"invoice.paid", "wallet.low"},
        }
        for name, endpoint in endpoints.items():
            owed = {d["event_type"] for d in await _log(client, endpoint["id"])}
            assert owed == expected[name], name

        total = sum(len(types) for types in expected.values())
        assert await sender.run_once() == total
        by_path: dict[str, set[str]] = {}
        for received in receiver.received:
            name = received.path.rsplit("/", 1)[-1]
            payload = verify_at(endpoints[name]["secret"], received, clock.now())
            by_path.setdefault(name, set()).add(payload["type"])
        assert by_path == expected

    async def test_disabled_endpoint_is_owed_nothing_new(
        self, client: httpx.AsyncClient, ctx: AppContext, tenant: Tenant, receiver: Receiver
    ) -> None:
        endpoint = await _endpoint(client, receiver.url)
        await client.patch(f"/v1/webhook-endpoints/{endpoint['id']}", json={"status": "disabled"})
        await _emit(ctx, tenant.organization_id, "invoice.paid")
        assert await _log(client, endpoint["id"]) == []


class TestNothingLost:
    async def test_event_committed_with_no_worker_is_sent_by_a_later_one(
        self,
        client: httpx.AsyncClient,
        ctx: AppContext,
        database_url: str,
        clock: FrozenClock,
        tenant: Tenant,
        receiver: Receiver,
    ) -> None:
        endpoint = await _endpoint(client, receiver.url)
        (event_id,) = await _emit(ctx, tenant.organization_id, "invoice.paid")
        await ctx.engine.dispose()  # the process that committed is gone

        clock.advance(timedelta(minutes=10))
        later = AppContext.create(
            Settings(database_url=database_url, log_level="WARNING", run_worker_in_server=False),
            clock=clock,
        )
        sender = WebhookSender(later.sessions, later.clock)
        try:
            assert await sender.run_once() == 1
        finally:
            await sender.aclose()
            await later.engine.dispose()
        (received,) = receiver.received
        assert received.webhook_id == event_id
        assert verify_at(endpoint["secret"], received, clock.now())["type"] == "invoice.paid"

    async def test_event_of_a_rolled_back_change_is_never_sent(
        self,
        client: httpx.AsyncClient,
        ctx: AppContext,
        tenant: Tenant,
        receiver: Receiver,
        sender: WebhookSender,
    ) -> None:
        await _endpoint(client, receiver.url)
        async with ctx.sessions() as session:
            await webhooks.emit(session, ctx.clock, tenant.organization_id, "invoice.paid", {})
            await session.rollback()
        assert await count_rows(ctx, "webhook_events") == 0
        assert await sender.run_once() == 0
        assert receiver.received == []

    async def test_delivery_held_by_a_dead_worker_is_sent_after_its_lease(
        self,
        client: httpx.AsyncClient,
        ctx: AppContext,
        clock: FrozenClock,
        tenant: Tenant,
        receiver: Receiver,
        sender: WebhookSender,
    ) -> None:
        endpoint = await _endpoint(client, receiver.url)
        (event_id,) = await _emit(ctx, tenant.organization_id, "wallet.low")
        lease = timedelta(seconds=limits.webhook_delivery_lease_s)
        # A worker claims the delivery, then dies before sending anything.
        async with ctx.sessions() as session:
            claimed = await DeliveryQueueRepository(session).claim_due(
                clock.now(), clock.now() + lease, limits.webhook_deliveries_per_poll_max
            )
            await session.commit()
        assert len(claimed) == 1

        assert await sender.run_once() == 0
        clock.advance(lease)
        assert await sender.run_once() == 0, "the lease still holds until it has run out"
        clock.advance(timedelta(seconds=1))
        assert await sender.run_once() == 1
        (received,) = receiver.received
        assert received.webhook_id == event_id
        assert verify_at(endpoint["secret"], received, clock.now())
        (state,) = await _log(client, endpoint["id"])
        assert state["status"] == "delivered"
        assert state["attempt_count"] == 1

    async def test_deleted_endpoint_gets_nothing(
        self,
        client: httpx.AsyncClient,
        ctx: AppContext,
        clock: FrozenClock,
        tenant: Tenant,
        receiver: Receiver,
        sender: WebhookSender,
    ) -> None:
        endpoint = await _endpoint(client, receiver.url)
        await _emit(ctx, tenant.organization_id, "invoice.paid")
        await _send_test(client, endpoint["id"])
        assert (await client.delete(f"/v1/webhook-endpoints/{endpoint['id']}")).status_code == 200
        await _emit(ctx, tenant.organization_id, "invoice.created")

        clock.advance(timedelta(hours=1))
        assert await sender.run_once() == 0
        assert receiver.received == []
        assert await count_rows(ctx, "webhook_deliveries", endpoint_id=endpoint["id"]) == 2
        assert await count_rows(ctx, "webhook_deliveries", status="canceled") == 2
