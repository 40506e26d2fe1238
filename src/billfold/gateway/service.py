"""Gateway keys: an end customer's credential for the gateway, mapped to that customer."""

from __future__ import annotations

import secrets
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncSession

from billfold import limits
from billfold.clock import Clock
from billfold.customers.service import resolve_customer
from billfold.errors import LimitExceeded, NotFound
from billfold.gateway.models import GatewayKey
from billfold.gateway.repository import GatewayKeyRepository, find_active_by_hash
from billfold.ids import new_id
from billfold.organizations.service import Principal, hash_key

GATEWAY_KEY_PREFIX = "bf_gk_"


@dataclass(frozen=True, slots=True)
class IssuedGatewayKey:
    gateway_key: GatewayKey
    secret: str


async def issue(
    session: AsyncSession, clock: Clock, principal: Principal, customer_ref: str, name: str
) -> IssuedGatewayKey:
    customer = await resolve_customer(session, principal.organization_id, customer_ref)
    repository = GatewayKeyRepository(session, principal.organization_id)
    if await repository.count_active(customer.id) >= limits.gateway_keys_per_customer_max:
        raise LimitExceeded(
            f"A customer may hold at most {limits.gateway_keys_per_customer_max} active "
            "gateway keys.",
            code="gateway_key_limit_reached",
        )
    secret = GATEWAY_KEY_PREFIX + secrets.token_urlsafe(32)
    key = GatewayKey(
        id=new_id("gwk"),
        organization_id=principal.organization_id,
        customer_id=customer.id,
        name=name,
        key_hash=hash_key(secret),
        key_prefix=secret[: len(GATEWAY_KEY_PREFIX) + 4],
        created_at=clock.now(),
        revoked_at=None,
    )
    await repository.add(key)
    return IssuedGatewayKey(key, secret)


async def list_keys(
    session: AsyncSession,
    principal: Principal,
    customer_ref: str,
    limit: int,
    starting_after: str | None,
) -> list[GatewayKey]:
    customer = await resolve_customer(session, principal.organization_id, customer_ref)
    return await GatewayKeyRepository(session, principal.organization_id).list_page(
        customer.id, limit, starting_after
    )


async def revoke(
    session: AsyncSession, clock: Clock, principal: Principal, customer_ref: str, key_id: str
) -> GatewayKey:
    customer = await resolve_customer(session, principal.organization_id, customer_ref)
    repository = GatewayKeyRepository(session, principal.organization_id)
    key = await repository.get(customer.id, key_id)
    if key is None or key.revoked_at is not None:
        raise NotFound.of("gateway_key", field="id")
    await repository.revoke(key, clock.now())
    return key


async def authenticate(session: AsyncSession, secret: str | None) -> GatewayKey | None:
    """The active key with this secret, or None."""
    if not secret or not secret.startswith(GATEWAY_KEY_PREFIX):
        return None
    return await find_active_by_hash(session, hash_key(secret))
