"""Sends the outbox: claim due deliveries, POST them signed, record the outcome.

At-least-once: a delivery is claimed with a lease, so a worker that dies
mid-send leaves it to be claimed again when the lease runs out. Receivers
dedupe on `webhook-id`, which stays the same across attempts.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import time
from dataclasses import dataclass
from datetime import datetime, timedelta

import httpx
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from billfold import __version__, limits
from billfold.clock import Clock
from billfold.ids import new_id
from billfold.observability import webhook_attempts_total
from billfold.webhooks import service
from billfold.webhooks.models import WebhookAttempt, WebhookDelivery, WebhookEndpoint, WebhookEvent
from billfold.webhooks.repository import DeliveryQueueRepository
from billfold.webhooks.signing import signature_header

logger = logging.getLogger("billfold.webhooks")


@dataclass(frozen=True, slots=True)
class AttemptResult:
    status_code: int | None
    response_body: str | None
    error: str | None
    duration_ms: int
    retry_after_s: int | None


def retry_delay_s(attempt_count: int, rng: random.Random) -> float | None:
    """Delay before the next attempt after `attempt_count` failures; None when out of retries.

    Jitter only lengthens a delay: shortened, the whole schedule could end
    before `webhook_failing_disable_after_s`, leaving a dead endpoint enabled.
    """
    if attempt_count > len(limits.webhook_retry_delays_s):
        return None
    base = limits.webhook_retry_delays_s[attempt_count - 1]
    jitter = limits.webhook_retry_jitter_ratio
    return base * rng.uniform(1, 1 + jitter)


def _retry_after_s(response: httpx.Response) -> int | None:
    value = response.headers.get("retry-after", "")
    return int(value) if value.isdigit() else None


class WebhookSender:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        clock: Clock,
        http: httpx.AsyncClient | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.sessions = sessions
        self.clock = clock
        self.http = http or httpx.AsyncClient(
            timeout=limits.webhook_timeout_s, follow_redirects=False
        )
        self.rng = rng or random.Random()  # noqa: S311 - retry jitter, not a secret
        self._slots = asyncio.Semaphore(limits.webhook_concurrent_deliveries_max)

    async def aclose(self) -> None:
        await self.http.aclose()

    async def run_once(self) -> int:
        """Send every delivery due now (up to one batch); returns how many were attempted."""
        now = self.clock.now()
        async with self.sessions() as session:
            claimed = await DeliveryQueueRepository(session).claim_due(
                now,
                now + timedelta(seconds=limits.webhook_delivery_lease_s),
                limits.webhook_deliveries_per_poll_max,
            )
            await session.commit()
        await asyncio.gather(*(self._deliver(d, e, ep) for d, e, ep in claimed))
        return len(claimed)

    async def _deliver(
        self, delivery: WebhookDelivery, event: WebhookEvent, endpoint: WebhookEndpoint
    ) -> None:
        async with self._slots:
            if endpoint.status != "enabled" or endpoint.deleted_at is not None:
                result = None
            else:
                result = await self._post(event, endpoint)
            await self._record(delivery.id, result)

    async def _post(self, event: WebhookEvent, endpoint: WebhookEndpoint) -> AttemptResult:
        now = self.clock.now()
        body = json.dumps(event.payload, separators=(",", ":")).encode()
        signing = [endpoint.secret]
        if (
            endpoint.previous_secret is not None
            and endpoint.previous_secret_expires_at is not None
            and endpoint.previous_secret_expires_at > now
        ):
            signing.append(endpoint.previous_secret)
        timestamp_s = int(now.timestamp())
        headers = {
            "content-type": "application/json",
            "user-agent": f"Billfold-Webhooks/{__version__}",
            "webhook-id": event.id,
            "webhook-timestamp": str(timestamp_s),
            "webhook-signature": signature_header(signing, event.id, timestamp_s, body),
        }
        started = time.perf_counter()
        try:
            response = await self.http.post(endpoint.url, content=body, headers=headers)
        except httpx.HTTPError as exc:
            return AttemptResult(
                status_code=None,
                response_body=None,
                error=f"{type(exc).__name__}: {exc}"[:500],
                duration_ms=int((time.perf_counter() - started) * 1000),
                retry_after_s=None,
            )
        return AttemptResult(
            status_code=response.status_code,
            response_body=response.text[: limits.webhook_response_body_stored_bytes_max],
            error=None,
            duration_ms=int((time.perf_counter() - started) * 1000),
            retry_after_s=_retry_after_s(response),
        )

    async def _record(self, delivery_id: str, result: AttemptResult | None) -> None:
        async with self.sessions() as session:
            locked = await DeliveryQueueRepository(session).lock_for_outcome(delivery_id)
            if locked is None or locked[0].status != "pending":
                await session.commit()
                return
            delivery, endpoint = locked
            now = self.clock.now()
            if result is None:
                delivery.status = "canceled"
                delivery.next_attempt_at = None
            else:
                await self._apply(session, delivery, endpoint, result, now)
            delivery.locked_until = None
            await session.commit()

    async def _apply(
        self,
        session: AsyncSession,
        delivery: WebhookDelivery,
        endpoint: WebhookEndpoint,
        result: AttemptResult,
        now: datetime,
    ) -> None:
        delivery.attempt_count += 1
        delivery.last_status_code = result.status_code
        await DeliveryQueueRepository(session).add_attempt(
            WebhookAttempt(
                id=new_id("wha"),
                organization_id=delivery.organization_id,
                delivery_id=delivery.id,
                attempt_number=delivery.attempt_count,
                attempted_at=now,
                status_code=result.status_code,
                response_body=result.response_body,
                error=result.error,
                duration_ms=result.duration_ms,
            )
        )
        code = result.status_code
        if code is not None and 200 <= code < 300:
            webhook_attempts_total.labels("delivered").inc()
            delivery.status = "delivered"
            delivery.delivered_at = now
            delivery.next_attempt_at = None
            endpoint.failing_since = None
            return
        webhook_attempts_total.labels("failed").inc()
        if code == 410:
            delivery.status = "failed"
            delivery.next_attempt_at = None
            await service.disable(session, endpoint, "the endpoint answered 410 Gone")
            logger.warning(
                "webhook endpoint disabled", extra={"endpoint_id": endpoint.id, "reason": "410"}
            )
            return
        if endpoint.failing_since is None:
            endpoint.failing_since = now
        failing_s = (now - endpoint.failing_since).total_seconds()
        if failing_s >= limits.webhook_failing_disable_after_s:
            delivery.status = "failed"
            delivery.next_attempt_at = None
            await service.disable(session, endpoint, "failing for 3 days")
            logger.warning(
                "webhook endpoint disabled", extra={"endpoint_id": endpoint.id, "reason": "failing"}
            )
            return
        delay_s = retry_delay_s(delivery.attempt_count, self.rng)
        if delay_s is None:
            delivery.status = "failed"
            delivery.next_attempt_at = None
            return
        if result.retry_after_s is not None:
            delay_s = min(
                max(delay_s, float(result.retry_after_s)), float(limits.webhook_retry_delays_s[-1])
            )
        delivery.next_attempt_at = now + timedelta(seconds=delay_s)
