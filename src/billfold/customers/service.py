"""Customers: who an organization bills, keyed by the organization's own id for them.

Creating a customer is idempotent by `external_id`: asking again for an
external id that exists returns that customer as it is, even when the name,
email or metadata sent differ (creation never edits).
"""

from __future__ import annotations

import unicodedata
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from billfold import limits
from billfold.clock import Clock
from billfold.customers.models import Customer
from billfold.customers.repository import CustomerRepository
from billfold.errors import InvalidRequest, NotFound
from billfold.ids import new_id
from billfold.organizations.service import Principal

ID_PREFIX = "cus_"
EXTERNAL_REF_PREFIX = "ext:"


@dataclass(frozen=True, slots=True)
class Upserted:
    customer: Customer
    created: bool


def _has_control(text: str) -> bool:
    return any(unicodedata.category(char) in ("Cc", "Cf", "Zl", "Zp") for char in text)


def validate_external_id(external_id: str, *, field: str = "external_id") -> str:
    """Your id for the customer: 1 to 255 characters, no "/", no control
    characters, no spaces at either end (it travels in URLs as `ext:<id>`)."""
    if (
        not external_id
        or len(external_id) > limits.customer_external_id_length_max
        or external_id != external_id.strip()
        or "/" in external_id
        or _has_control(external_id)
    ):
        raise InvalidRequest(
            f"An external id has 1 to {limits.customer_external_id_length_max} characters, "
            'with no "/", no control characters and no spaces at either end.',
            code="invalid_external_id",
            field=field,
        )
    return external_id


def _validate_name(name: str | None) -> str | None:
    if name is None:
        return None
    name = name.strip()
    if not name or _has_control(name) or len(name) > limits.customer_name_length_max:
        raise InvalidRequest(
            f"A name has 1 to {limits.customer_name_length_max} printable characters.",
            code="invalid_name",
            field="name",
        )
    return name


def _validate_email(email: str | None) -> str | None:
    if email is None:
        return None
    local, at, domain = email.rpartition("@")
    if (
        not at
        or not local
        or "." not in domain.strip(".")
        or len(email) > limits.customer_email_length_max
        or any(char.isspace() for char in email)
        or _has_control(email)
    ):
        raise InvalidRequest(
            "email must be an address such as billing@example.com.",
            code="invalid_email",
            field="email",
        )
    return email


def validate_metadata(
    metadata: dict[str, Any] | None, *, field: str = "metadata"
) -> dict[str, str]:
    """Free-form labels: up to 50 string keys of at most 40 characters, each
    with a string value of at most 500 characters."""
    if metadata is None:
        return {}
    if len(metadata) > limits.customer_metadata_keys_max:
        raise InvalidRequest(
            f"metadata holds at most {limits.customer_metadata_keys_max} keys.",
            code="invalid_metadata",
            field=field,
        )
    for key, value in metadata.items():
        if not key or len(key) > limits.customer_metadata_key_length_max or _has_control(key):
            raise InvalidRequest(
                f"A metadata key has 1 to {limits.customer_metadata_key_length_max} "
                "printable characters.",
                code="invalid_metadata",
                field=f"{field}.{key}",
            )
        if not isinstance(value, str) or len(value) > limits.customer_metadata_value_length_max:
            raise InvalidRequest(
                f"A metadata value is a string of at most "
                f"{limits.customer_metadata_value_length_max} characters.",
                code="invalid_metadata",
                field=f"{field}.{key}",
            )
    return dict(metadata)


async def create_or_get(
    session: AsyncSession,
    clock: Clock,
    principal: Principal,
    *,
    external_id: str,
    name: str | None,
    email: str | None,
    metadata: dict[str, Any] | None,
) -> Upserted:
    """Create the customer, or return the existing one with this external id unchanged."""
    external_id = validate_external_id(external_id)
    customer = Customer(
        id=new_id("cus"),
        organization_id=principal.organization_id,
        external_id=external_id,
        name=_validate_name(name),
        email=_validate_email(email),
        metadata_=validate_metadata(metadata),
        created_at=clock.now(),
    )
    repository = CustomerRepository(session, principal.organization_id)
    existing = await repository.get_by_external_id(external_id)
    if existing is not None:
        return Upserted(existing, created=False)
    if await repository.insert_if_absent(customer):
        return Upserted(customer, created=True)
    # Another request created it between our read and our insert.
    existing = await repository.get_by_external_id(external_id)
    assert existing is not None, "a conflicting insert is visible once it committed"
    return Upserted(existing, created=False)


async def resolve_customer(
    session: AsyncSession, organization_id: str, ref: str, *, field: str = "customer_id"
) -> Customer:
    """The customer `ref` names: its `cus_…` id or `ext:<external_id>`.

    Another organization's customer is not found, exactly like a missing one.
    """
    repository = CustomerRepository(session, organization_id)
    customer = None
    if ref.startswith(ID_PREFIX) and len(ref) <= 40:
        customer = await repository.get(ref)
    elif ref.startswith(EXTERNAL_REF_PREFIX):
        external_id = ref[len(EXTERNAL_REF_PREFIX) :]
        if 0 < len(external_id) <= limits.customer_external_id_length_max:
            customer = await repository.get_by_external_id(external_id)
    if customer is None:
        raise NotFound.of("customer", field=field)
    return customer


async def resolve_customer_ids(
    session: AsyncSession, organization_id: str, refs: Collection[str]
) -> dict[str, str]:
    """`resolve_customer` for many references at once, in two queries at most,
    reading ids only (ingest resolves hundreds per request).

    Maps each reference that names a customer of the organization (`cus_…` or
    `ext:<external_id>`) to its id; references to no customer are left out.
    """
    ids: set[str] = set()
    external_ids: set[str] = set()
    for ref in refs:
        if ref.startswith(ID_PREFIX) and len(ref) <= 40:
            ids.add(ref)
        elif ref.startswith(EXTERNAL_REF_PREFIX):
            external_id = ref[len(EXTERNAL_REF_PREFIX) :]
            if 0 < len(external_id) <= limits.customer_external_id_length_max:
                external_ids.add(external_id)
    repository = CustomerRepository(session, organization_id)
    found = {customer_id: customer_id for customer_id in await repository.ids_among(ids)}
    for external_id, customer_id in (await repository.ids_by_external_id(external_ids)).items():
        found[EXTERNAL_REF_PREFIX + external_id] = customer_id
    return found


async def list_customers(
    session: AsyncSession, principal: Principal, limit: int, starting_after: str | None
) -> list[Customer]:
    return await CustomerRepository(session, principal.organization_id).list_page(
        limit, starting_after
    )
