"""Stripe-style `Idempotency-Key` handling.

A key is claimed in its own short transaction before the endpoint runs, so a
concurrent request with the same key sees it at once (409
`idempotency_key_in_use`). The stored response is written in the endpoint's
own transaction, so it exists exactly when the endpoint's changes do.
Validation failures and our own 5xx errors are not stored: nothing changed,
and the client may retry.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncSession

from billfold import limits
from billfold.clock import Clock
from billfold.errors import Conflict, InvalidRequest
from billfold.idempotency.models import IdempotencyKey
from billfold.idempotency.repository import IdempotencyRepository, prune_idempotency_keys

HEADER = "Idempotency-Key"


@dataclass(frozen=True, slots=True)
class StoredResponse:
    status: int
    body: bytes
    content_type: str | None


def validate_key(key: str) -> str:
    if not key or len(key) > limits.idempotency_key_length_max or not key.isprintable():
        raise InvalidRequest(
            f"An Idempotency-Key has 1 to {limits.idempotency_key_length_max} "
            "printable characters.",
            code="invalid_idempotency_key",
            field=HEADER,
        )
    return key


def fingerprint(method: str, path: str, body: bytes) -> str:
    """The request's identity: formatting and key order in the JSON do not count."""
    try:
        canonical = json.dumps(json.loads(body), sort_keys=True, separators=(",", ":")).encode()
    except (ValueError, UnicodeDecodeError):
        canonical = body
    digest = hashlib.sha256()
    digest.update(f"{method} {path}\n".encode())
    digest.update(canonical)
    return digest.hexdigest()


async def claim(
    session: AsyncSession,
    clock: Clock,
    organization_id: str,
    *,
    key: str,
    method: str,
    path: str,
    request_fingerprint: str,
    lease_s: float = limits.idempotency_in_flight_lease_s,
) -> StoredResponse | None:
    """Hold `key` for this request, or return the response to replay.

    Raises 409 when the key belongs to a different request or is in flight.
    An unfinished claim older than `lease_s` is taken over: its holder died.
    """
    repository = IdempotencyRepository(session, organization_id)
    now = clock.now()
    lease_until = now + timedelta(seconds=lease_s)
    if await repository.insert_if_absent(
        key=key,
        fingerprint=request_fingerprint,
        method=method,
        path=path,
        now=now,
        lease_until=lease_until,
    ):
        return None
    return await _claim_existing(
        repository, key, await repository.get(key), request_fingerprint, now, lease_until
    )


async def _claim_existing(
    repository: IdempotencyRepository,
    key: str,
    existing: IdempotencyKey | None,
    request_fingerprint: str,
    now: datetime,
    lease_until: datetime,
) -> StoredResponse | None:
    """`claim` once the key turned out to exist already."""
    if existing is None:
        # Pruned between our insert and read: the next attempt starts afresh.
        raise Conflict(
            "This Idempotency-Key is being used by another request; retry shortly.",
            code="idempotency_key_in_use",
            field=HEADER,
        )
    stored = _replay(existing, request_fingerprint)
    if stored is not None:
        return stored
    lease_expired = existing.locked_until is None or existing.locked_until <= now
    if lease_expired and await repository.take_over(key, existing.locked_until, lease_until):
        return None
    raise Conflict(
        "A request with this Idempotency-Key is still in progress; retry shortly.",
        code="idempotency_key_in_use",
        field=HEADER,
        headers={"Retry-After": "1"},
    )


@dataclass(frozen=True, slots=True)
class Claim:
    key: str
    method: str
    path: str
    request_fingerprint: str


async def claim_many(
    session: AsyncSession, clock: Clock, organization_id: str, claims: Sequence[Claim]
) -> list[StoredResponse | Conflict | None]:
    """`claim` for many distinct keys: one INSERT for all, one SELECT for those
    that exist. Each outcome is what `claim` would return (None: the key is
    held for this request) or raise (a Conflict). Keys are inserted in the
    order given: callers sort them, so two transactions never wait on each
    other's keys in opposite orders."""
    assert len({c.key for c in claims}) == len(claims), "claim_many takes distinct keys"
    repository = IdempotencyRepository(session, organization_id)
    now = clock.now()
    lease_until = now + timedelta(seconds=limits.idempotency_in_flight_lease_s)
    inserted = await repository.insert_many_if_absent(
        [(c.key, c.request_fingerprint, c.method, c.path) for c in claims],
        now=now,
        lease_until=lease_until,
    )
    existing = await repository.get_many([c.key for c in claims if c.key not in inserted])
    outcomes: list[StoredResponse | Conflict | None] = []
    for c in claims:
        if c.key in inserted:
            outcomes.append(None)
            continue
        try:
            outcomes.append(
                await _claim_existing(
                    repository, c.key, existing.get(c.key), c.request_fingerprint, now, lease_until
                )
            )
        except Conflict as conflict:
            outcomes.append(conflict)
    return outcomes


def _replay(existing: IdempotencyKey, request_fingerprint: str) -> StoredResponse | None:
    """The stored answer for a finished request; 409 if the key named another request."""
    if existing.request_fingerprint != request_fingerprint:
        raise Conflict(
            "This Idempotency-Key was already used with a different request "
            f"({existing.method} {existing.path}).",
            code="idempotency_key_reused",
            field=HEADER,
        )
    if existing.completed_at is None:
        return None
    assert existing.response_status is not None
    return StoredResponse(
        status=existing.response_status,
        body=existing.response_body or b"",
        content_type=existing.response_content_type,
    )


async def peek(
    session: AsyncSession, organization_id: str, *, key: str, request_fingerprint: str
) -> StoredResponse | None:
    """Read-only look for a finished request with this key (a replay's fast path)."""
    existing = await IdempotencyRepository(session, organization_id).get(key)
    if existing is None:
        return None
    return _replay(existing, request_fingerprint)


async def complete(
    session: AsyncSession,
    clock: Clock,
    organization_id: str,
    key: str,
    response: StoredResponse,
) -> None:
    repository = IdempotencyRepository(session, organization_id)
    if not await repository.complete(
        key,
        status=response.status,
        body=response.body,
        content_type=response.content_type,
        now=clock.now(),
    ):
        raise Conflict(
            "Another request completed this Idempotency-Key first.",
            code="idempotency_key_in_use",
            field=HEADER,
        )


async def complete_many(
    session: AsyncSession,
    clock: Clock,
    organization_id: str,
    responses: Sequence[tuple[str, StoredResponse]],
) -> None:
    """`complete` for many keys claimed in this transaction, in one round trip."""
    completed = await IdempotencyRepository(session, organization_id).complete_many(
        [(key, r.status, r.body, r.content_type) for key, r in responses], now=clock.now()
    )
    if completed != len(responses):
        raise Conflict(
            "Another request completed this Idempotency-Key first.",
            code="idempotency_key_in_use",
            field=HEADER,
        )


async def release(session: AsyncSession, organization_id: str, key: str) -> None:
    await IdempotencyRepository(session, organization_id).release(key)


async def prune(session: AsyncSession, clock: Clock) -> int:
    now = clock.now()
    return await prune_idempotency_keys(
        session, now - timedelta(seconds=limits.idempotency_key_retention_s), now
    )
