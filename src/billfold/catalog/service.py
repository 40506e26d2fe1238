"""Products and their immutable versions.

A product is a code and a name; what it sells is in its versions. Creating a
product creates version 1; every change is a whole new version (n + 1) and
versions are never edited, so a subscription on version 2 keeps its prices
when version 3 appears. Two requests racing to create the same next version:
one wins, the other gets 409 `product_version_conflict` and may retry.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from billfold import limits
from billfold.catalog.definitions import validate_code, validate_features, validate_prices
from billfold.catalog.models import Product, ProductVersion
from billfold.catalog.repository import ProductRepository
from billfold.clock import Clock
from billfold.errors import Conflict, InvalidRequest, LimitExceeded, NotFound
from billfold.ids import new_id
from billfold.organizations.service import Principal


@dataclass(frozen=True, slots=True)
class ProductView:
    product: Product
    version: ProductVersion


def _validate_name(name: str) -> str:
    name = name.strip()
    if (
        not name
        or len(name) > limits.product_name_length_max
        or any(unicodedata.category(char) in ("Cc", "Cf", "Zl", "Zp") for char in name)
    ):
        raise InvalidRequest(
            f"A name has 1 to {limits.product_name_length_max} printable characters.",
            code="invalid_name",
            field="name",
        )
    return name


async def _definition(
    session: AsyncSession, organization_id: str, prices: list[Any], features: list[Any] | None
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    return (
        await validate_prices(session, organization_id, prices),
        await validate_features(session, organization_id, features or []),
    )


async def create_product(
    session: AsyncSession,
    clock: Clock,
    principal: Principal,
    *,
    code: str,
    name: str,
    prices: list[Any],
    features: list[Any] | None,
) -> ProductView:
    """A new product with its version 1; a code is taken once (409 `product_code_taken`)."""
    validate_code(
        code, field="code", code="invalid_product_code", length_max=limits.product_code_length_max
    )
    name = _validate_name(name)
    organization_id = principal.organization_id
    canonical_prices, canonical_features = await _definition(
        session, organization_id, prices, features
    )
    repository = ProductRepository(session, organization_id)
    if await repository.count() >= limits.products_per_organization_max:
        raise LimitExceeded(
            f"An organization may have at most {limits.products_per_organization_max} products.",
            code="product_limit_reached",
        )
    now = clock.now()
    product = Product(
        id=new_id("prod"),
        organization_id=organization_id,
        code=code,
        name=name,
        latest_version=1,
        created_at=now,
    )
    if not await repository.insert_if_absent(product):
        raise Conflict(
            f"This organization already has a product {code}; "
            f"POST /v1/products/{code}/versions to change it.",
            code="product_code_taken",
            field="code",
        )
    version = ProductVersion(
        organization_id=organization_id,
        product_id=product.id,
        number=1,
        prices=canonical_prices,
        features=canonical_features,
        created_at=now,
    )
    await repository.insert_version(version)
    return ProductView(product, version)


async def get_product(session: AsyncSession, principal: Principal, code: str) -> Product:
    """The organization's product with this code; another organization's is not found."""
    product = None
    if len(code) <= limits.product_code_length_max:
        product = await ProductRepository(session, principal.organization_id).get_by_code(code)
    if product is None:
        raise NotFound.of("product", field="code")
    return product


async def get_version(
    session: AsyncSession, principal: Principal, code: str, number: int | None = None
) -> ProductView:
    """Version `number` of the product (its latest when None)."""
    product = await get_product(session, principal, code)
    wanted = product.latest_version if number is None else number
    version = None
    if 1 <= wanted <= product.latest_version:
        version = await ProductRepository(session, principal.organization_id).get_version(
            product.id, wanted
        )
    if version is None:
        raise NotFound.of("product_version", field="version")
    return ProductView(product, version)


async def create_version(
    session: AsyncSession,
    clock: Clock,
    principal: Principal,
    code: str,
    *,
    prices: list[Any],
    features: list[Any] | None,
) -> ProductView:
    """The product's next version: a whole new definition; earlier ones stay as they are."""
    product = await get_product(session, principal, code)
    organization_id = principal.organization_id
    canonical_prices, canonical_features = await _definition(
        session, organization_id, prices, features
    )
    current = product.latest_version
    if current >= limits.product_versions_per_product_max:
        raise LimitExceeded(
            f"A product may have at most {limits.product_versions_per_product_max} versions.",
            code="product_version_limit_reached",
        )
    repository = ProductRepository(session, organization_id)
    if not await repository.advance_latest(product.id, current):
        raise Conflict(
            "Another version of this product was created at the same time; retry.",
            code="product_version_conflict",
        )
    version = ProductVersion(
        organization_id=organization_id,
        product_id=product.id,
        number=current + 1,
        prices=canonical_prices,
        features=canonical_features,
        created_at=clock.now(),
    )
    await repository.insert_version(version)
    return ProductView(product, version)


async def list_products(
    session: AsyncSession, principal: Principal, limit: int, starting_after: str | None
) -> list[ProductView]:
    """Products, newest first, each with its latest version."""
    repository = ProductRepository(session, principal.organization_id)
    products = await repository.list_page(limit, starting_after)
    versions = {
        (v.product_id, v.number): v
        for v in await repository.get_versions([(p.id, p.latest_version) for p in products])
    }
    return [ProductView(p, versions[(p.id, p.latest_version)]) for p in products]
