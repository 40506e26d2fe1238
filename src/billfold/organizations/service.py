"""Organizations and their API keys."""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncSession

from billfold import limits
from billfold.clock import Clock
from billfold.errors import InvalidRequest, LimitExceeded, NotFound, Unauthorized
from billfold.ids import new_id
from billfold.organizations.models import ApiKey, Organization
from billfold.organizations.repository import (
    ApiKeyRepository,
    OrganizationRepository,
    find_active_key_by_hash,
)

API_KEY_PREFIX = "bf_sk_"


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: the organization a key belongs to, and the key."""

    organization_id: str
    api_key_id: str


@dataclass(frozen=True, slots=True)
class IssuedKey:
    api_key: ApiKey
    secret: str


def hash_key(secret: str) -> str:
    # Keys carry 256 random bits, so a fast hash is enough: there is nothing to brute-force.
    return hashlib.sha256(secret.encode()).hexdigest()


def _new_secret() -> str:
    return API_KEY_PREFIX + secrets.token_urlsafe(32)


async def issue_key(
    session: AsyncSession, clock: Clock, organization_id: str, name: str
) -> IssuedKey:
    repository = ApiKeyRepository(session, organization_id)
    if await repository.count_active() >= limits.api_keys_per_organization_max:
        raise LimitExceeded(
            f"An organization may hold at most {limits.api_keys_per_organization_max} active keys.",
            code="api_key_limit_reached",
        )
    secret = _new_secret()
    api_key = ApiKey(
        id=new_id("key"),
        organization_id=organization_id,
        name=name,
        key_hash=hash_key(secret),
        key_prefix=secret[: len(API_KEY_PREFIX) + 4],
        created_at=clock.now(),
        revoked_at=None,
    )
    await repository.add(api_key)
    return IssuedKey(api_key=api_key, secret=secret)


async def create_organization(
    session: AsyncSession, clock: Clock, name: str
) -> tuple[Organization, IssuedKey]:
    name = name.strip()
    if not name or len(name) > limits.organization_name_length_max:
        raise InvalidRequest(
            f"An organization name has 1 to {limits.organization_name_length_max} characters.",
            code="invalid_name",
            field="name",
        )
    organization = Organization(id=new_id("org"), name=name, created_at=clock.now())
    await OrganizationRepository(session).add(organization)
    issued = await issue_key(session, clock, organization.id, "default")
    return organization, issued


async def list_keys(
    session: AsyncSession, principal: Principal, limit: int, starting_after: str | None
) -> list[ApiKey]:
    return await ApiKeyRepository(session, principal.organization_id).list_page(
        limit, starting_after
    )


async def revoke_key(
    session: AsyncSession, clock: Clock, principal: Principal, api_key_id: str
) -> ApiKey:
    repository = ApiKeyRepository(session, principal.organization_id)
    api_key = await repository.get(api_key_id)
    if api_key is None or api_key.revoked_at is not None:
        raise NotFound.of("api_key", field="id")
    await repository.revoke(api_key, clock.now())
    return api_key


async def authenticate(session: AsyncSession, authorization: str | None) -> Principal:
    if not authorization:
        raise Unauthorized(
            "Send your API key as `Authorization: Bearer bf_sk_...`.", code="missing_api_key"
        )
    scheme, _, secret = authorization.partition(" ")
    secret = secret.strip()
    if scheme.lower() != "bearer" or not secret.startswith(API_KEY_PREFIX):
        raise Unauthorized(
            "Send your API key as `Authorization: Bearer bf_sk_...`.", code="invalid_api_key"
        )
    api_key = await find_active_key_by_hash(session, hash_key(secret))
    if api_key is None:
        raise Unauthorized("This API key is not valid or was revoked.", code="invalid_api_key")
    return Principal(organization_id=api_key.organization_id, api_key_id=api_key.id)
