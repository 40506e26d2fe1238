"""Webhook endpoints and the outbox.

`emit` is how every domain reports a change: it writes the event and one
delivery per subscribed endpoint in the caller's transaction, so an event
exists exactly when its change does. The worker in `delivery.py` sends them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import timedelta
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy.ext.asyncio import AsyncSession

from billfold import limits
from billfold.clock import Clock
from billfold.errors import InvalidRequest, LimitExceeded, NotFound
from billfold.ids import new_id
from billfold.organizations.service import Principal
from billfold.webhooks import topics
from billfold.webhooks.models import WebhookAttempt, WebhookDelivery, WebhookEndpoint, WebhookEvent
from billfold.webhooks.repository import WebhookRepository
from billfold.webhooks.signing import new_secret


@dataclass(frozen=True, slots=True)
class DeliveryView:
    delivery: WebhookDelivery
    event: WebhookEvent
    attempts: list[WebhookAttempt]


def _validate_url(url: str) -> str:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InvalidRequest(
            "A webhook URL is an absolute http(s) URL.", code="invalid_url", field="url"
        )
    return url


def _validate_topics(requested: list[str]) -> list[str]:
    if not requested:
        raise InvalidRequest(
            'Subscribe to at least one topic, or to ["*"] for all.',
            code="invalid_topics",
            field="topics",
        )
    for index, topic in enumerate(requested):
        if not topics.is_valid_subscription(topic):
            raise InvalidRequest(
                f"Unknown webhook topic {topic!r}.", code="unknown_topic", field=f"topics.{index}"
            )
    return sorted(set(requested))


async def create_endpoint(
    session: AsyncSession,
    clock: Clock,
    principal: Principal,
    *,
    url: str,
    subscribed: list[str],
    description: str | None,
) -> WebhookEndpoint:
    repository = WebhookRepository(session, principal.organization_id)
    if await repository.count_endpoints() >= limits.webhook_endpoints_per_organization_max:
        raise LimitExceeded(
            "An organization may have at most "
            f"{limits.webhook_endpoints_per_organization_max} endpoints.",
            code="webhook_endpoint_limit_reached",
        )
    endpoint = WebhookEndpoint(
        id=new_id("we"),
        organization_id=principal.organization_id,
        url=_validate_url(url),
        topics=_validate_topics(subscribed),
        description=description,
        secret=new_secret(limits.webhook_secret_bytes),
        previous_secret=None,
        previous_secret_expires_at=None,
        status="enabled",
        disabled_reason=None,
        failing_since=None,
        created_at=clock.now(),
        deleted_at=None,
    )
    await repository.add(endpoint)
    return endpoint


async def get_endpoint(
    session: AsyncSession, principal: Principal, endpoint_id: str
) -> WebhookEndpoint:
    endpoint = await WebhookRepository(session, principal.organization_id).get_endpoint(endpoint_id)
    if endpoint is None:
        raise NotFound.of("webhook_endpoint", field="id")
    return endpoint


async def list_endpoints(
    session: AsyncSession, principal: Principal, limit: int, starting_after: str | None
) -> list[WebhookEndpoint]:
    return await WebhookRepository(session, principal.organization_id).list_endpoints(
        limit, starting_after
    )


async def update_endpoint(
    session: AsyncSession,
    principal: Principal,
    endpoint_id: str,
    *,
    url: str | None,
    subscribed: list[str] | None,
    description: str | None,
    enabled: bool | None,
) -> WebhookEndpoint:
    endpoint = await get_endpoint(session, principal, endpoint_id)
    if url is not None:
        endpoint.url = _validate_url(url)
    if subscribed is not None:
        endpoint.topics = _validate_topics(subscribed)
    if description is not None:
        endpoint.description = description
    if enabled is True and endpoint.status != "enabled":
        endpoint.status = "enabled"
        endpoint.disabled_reason = None
        endpoint.failing_since = None
    elif enabled is False and endpoint.status != "disabled":
        await disable(session, endpoint, "disabled by the API")
    await session.flush()
    return endpoint


async def delete_endpoint(
    session: AsyncSession, clock: Clock, principal: Principal, endpoint_id: str
) -> WebhookEndpoint:
    endpoint = await get_endpoint(session, principal, endpoint_id)
    endpoint.deleted_at = clock.now()
    await disable(session, endpoint, "deleted")
    return endpoint


async def rotate_secret(
    session: AsyncSession, clock: Clock, principal: Principal, endpoint_id: str
) -> WebhookEndpoint:
    """A new secret signs from now on; the old one also signs for a grace period
    so receivers can switch without dropping a message."""
    endpoint = await get_endpoint(session, principal, endpoint_id)
    endpoint.previous_secret = endpoint.secret
    endpoint.previous_secret_expires_at = clock.now() + timedelta(
        seconds=limits.webhook_secret_rotation_grace_s
    )
    endpoint.secret = new_secret(limits.webhook_secret_bytes)
    await session.flush()
    return endpoint


async def disable(session: AsyncSession, endpoint: WebhookEndpoint, reason: str) -> None:
    endpoint.status = "disabled"
    endpoint.disabled_reason = reason
    await WebhookRepository(session, endpoint.organization_id).cancel_pending(endpoint.id)
    await session.flush()


def _event(clock: Clock, organization_id: str, topic: str, data: dict[str, Any]) -> WebhookEvent:
    event_id = new_id("msg")
    created_at = clock.now()
    envelope = {
        "id": event_id,
        "type": topic,
        "timestamp": created_at.isoformat().replace("+00:00", "Z"),
        "organization_id": organization_id,
        "data": data,
    }
    assert len(json.dumps(envelope)) < 64 * 1024, "webhook payloads stay small"
    return WebhookEvent(
        id=event_id,
        organization_id=organization_id,
        type=topic,
        payload=envelope,
        created_at=created_at,
    )


def _delivery(event: WebhookEvent, endpoint: WebhookEndpoint) -> WebhookDelivery:
    return WebhookDelivery(
        id=new_id("whd"),
        organization_id=event.organization_id,
        event_id=event.id,
        endpoint_id=endpoint.id,
        status="pending",
        attempt_count=0,
        next_attempt_at=event.created_at,
        locked_until=None,
        last_status_code=None,
        created_at=event.created_at,
        delivered_at=None,
    )


async def emit(
    session: AsyncSession, clock: Clock, organization_id: str, topic: str, data: dict[str, Any]
) -> WebhookEvent:
    """Record `topic` in the outbox, owed to every endpoint subscribed to it."""
    assert topic in topics.KNOWN, f"register {topic} in webhooks/topics.py"
    repository = WebhookRepository(session, organization_id)
    event = _event(clock, organization_id, topic, data)
    subscribers = [
        ep for ep in await repository.enabled_endpoints() if topics.matches(ep.topics, topic)
    ]
    await repository.add(event, *[_delivery(event, endpoint) for endpoint in subscribers])
    return event


async def emit_many(
    session: AsyncSession,
    clock: Clock,
    organization_id: str,
    items: list[tuple[str, dict[str, Any]]],
) -> None:
    """`emit` for many (topic, data) in order, reading the endpoints once
    (the billing run records a group's events in one go)."""
    if not items:
        return
    repository = WebhookRepository(session, organization_id)
    endpoints = await repository.enabled_endpoints()
    rows: list[WebhookEvent | WebhookDelivery] = []
    for topic, data in items:
        assert topic in topics.KNOWN, f"register {topic} in webhooks/topics.py"
        event = _event(clock, organization_id, topic, data)
        rows.append(event)
        rows += [_delivery(event, ep) for ep in endpoints if topics.matches(ep.topics, topic)]
    await repository.add(*rows)


async def send_test(
    session: AsyncSession, clock: Clock, principal: Principal, endpoint_id: str
) -> DeliveryView:
    """A `webhook.test` event for this endpoint alone, whatever it subscribes to."""
    endpoint = await get_endpoint(session, principal, endpoint_id)
    if endpoint.status != "enabled":
        raise InvalidRequest(
            "This endpoint is disabled; enable it before sending a test.",
            code="webhook_endpoint_disabled",
            field="id",
        )
    event = _event(
        clock,
        principal.organization_id,
        topics.WEBHOOK_TEST,
        {"endpoint_id": endpoint.id, "message": "This is a test event from Billfold."},
    )
    delivery = _delivery(event, endpoint)
    await WebhookRepository(session, principal.organization_id).add(event, delivery)
    return DeliveryView(delivery=delivery, event=event, attempts=[])


async def list_deliveries(
    session: AsyncSession,
    principal: Principal,
    endpoint_id: str,
    *,
    limit: int,
    starting_after: str | None,
    status: str | None,
) -> list[DeliveryView]:
    await get_endpoint(session, principal, endpoint_id)
    repository = WebhookRepository(session, principal.organization_id)
    rows = await repository.list_deliveries(endpoint_id, limit, starting_after, status)
    attempts = await repository.attempts_of([delivery.id for delivery, _ in rows])
    by_delivery: dict[str, list[WebhookAttempt]] = {}
    for attempt in attempts:
        by_delivery.setdefault(attempt.delivery_id, []).append(attempt)
    return [DeliveryView(d, e, by_delivery.get(d.id, [])) for d, e in rows]


async def retry_delivery(
    session: AsyncSession, clock: Clock, principal: Principal, delivery_id: str
) -> WebhookDelivery:
    """Send a failed or pending delivery again now (a manual replay)."""
    repository = WebhookRepository(session, principal.organization_id)
    delivery = await repository.get_delivery(delivery_id)
    if delivery is None:
        raise NotFound.of("webhook_delivery", field="id")
    endpoint = await repository.get_endpoint(delivery.endpoint_id)
    if endpoint is None or endpoint.status != "enabled":
        raise InvalidRequest(
            "The endpoint of this delivery is disabled or deleted.",
            code="webhook_endpoint_disabled",
            field="id",
        )
    delivery.status = "pending"
    delivery.next_attempt_at = clock.now()
    delivery.locked_until = None
    await session.flush()
    return delivery
