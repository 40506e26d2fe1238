"""All catalog SQL."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm.attributes import set_committed_value

from billfold.catalog.models import Product, ProductVersion
from billfold.db.engine import upsert_insert


class ProductRepository:
    """Products and their versions, of one organization."""

    def __init__(self, session: AsyncSession, organization_id: str) -> None:
        self.session = session
        self.organization_id = organization_id

    async def insert_if_absent(self, product: Product) -> bool:
        """Insert unless the code is taken; say whether it was inserted."""
        assert product.organization_id == self.organization_id
        statement = (
            upsert_insert(self.session, Product)
            .values(
                id=product.id,
                organization_id=product.organization_id,
                code=product.code,
                name=product.name,
                latest_version=product.latest_version,
                created_at=product.created_at,
            )
            .on_conflict_do_nothing()
            # RETURNING, not rowcount: psycopg reports -1 for this INSERT.
            .returning(Product.id)
        )
        return (await self.session.execute(statement)).first() is not None

    async def count(self) -> int:
        count = await self.session.scalar(
            sa.select(sa.func.count()).where(Product.organization_id == self.organization_id)
        )
        return int(count or 0)

    async def get(self, product_id: str) -> Product | None:
        return await self.session.scalar(
            sa.select(Product).where(
                Product.organization_id == self.organization_id, Product.id == product_id
            )
        )

    async def get_by_code(self, code: str) -> Product | None:
        return await self.session.scalar(
            sa.select(Product).where(
                Product.organization_id == self.organization_id, Product.code == code
            )
        )

    async def get_many(self, product_ids: list[str]) -> list[Product]:
        if not product_ids:
            return []
        return list(
            await self.session.scalars(
                sa.select(Product).where(
                    Product.organization_id == self.organization_id,
                    Product.id.in_(sorted(set(product_ids))),
                )
            )
        )

    async def list_page(self, limit: int, starting_after: str | None) -> list[Product]:
        query = sa.select(Product).where(Product.organization_id == self.organization_id)
        if starting_after is not None:
            query = query.where(Product.id < starting_after)
        return list(await self.session.scalars(query.order_by(Product.id.desc()).limit(limit)))

    async def advance_latest(self, product_id: str, expected: int) -> bool:
        """Move `latest_version` from `expected` to `expected + 1`; say whether
        this call moved it. Of two racing writers of the same next version one
        moves it and the other gets False (PostgreSQL: the second waits for the
        first's row lock, then finds the number changed)."""
        row = (
            await self.session.execute(
                sa.update(Product)
                .where(
                    Product.organization_id == self.organization_id,
                    Product.id == product_id,
                    Product.latest_version == expected,
                )
                .values(latest_version=expected + 1)
                .returning(Product.id)
                .execution_options(synchronize_session=False)
            )
        ).first()
        if row is None:
            return False
        # Keep a loaded product in step without marking it dirty.
        product = await self.session.get(Product, product_id)
        if product is not None:
            set_committed_value(product, "latest_version", expected + 1)
        return True

    async def insert_version(self, version: ProductVersion) -> None:
        assert version.organization_id == self.organization_id
        await self.session.execute(
            sa.insert(ProductVersion).values(
                organization_id=version.organization_id,
                product_id=version.product_id,
                number=version.number,
                prices=version.prices,
                features=version.features,
                created_at=version.created_at,
            )
        )

    async def get_version(self, product_id: str, number: int) -> ProductVersion | None:
        return await self.session.scalar(
            sa.select(ProductVersion).where(
                ProductVersion.organization_id == self.organization_id,
                ProductVersion.product_id == product_id,
                ProductVersion.number == number,
            )
        )

    async def get_versions(self, keys: list[tuple[str, int]]) -> list[ProductVersion]:
        """The versions among these (product id, number) pairs, any order."""
        if not keys:
            return []
        return list(
            await self.session.scalars(
                sa.select(ProductVersion).where(
                    ProductVersion.organization_id == self.organization_id,
                    sa.tuple_(ProductVersion.product_id, ProductVersion.number).in_(
                        sorted(set(keys))
                    ),
                )
            )
        )
