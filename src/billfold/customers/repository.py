from __future__ import annotations

from collections.abc import Collection

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql import Select

from billfold.customers.models import Customer
from billfold.db.arrays import text_array
from billfold.db.engine import dialect_of


# PostgreSQL: built once (see `text_array`), run with the organization and
# the distinct values.
def _pg_ids_among() -> Select[str]:
    wanted = text_array("values")
    return (
        sa.select(Customer.id)
        .join(wanted, wanted.c.value == Customer.id)
        .where(Customer.organization_id == sa.bindparam("organization_id"))
    )


def _pg_ids_by_external_id() -> Select[str, str]:
    wanted = text_array("values")
    return (
        sa.select(Customer.external_id, Customer.id)
        .join(wanted, wanted.c.value == Customer.external_id)
        .where(Customer.organization_id == sa.bindparam("organization_id"))
    )


_PG_IDS_AMONG = _pg_ids_among()
_PG_IDS_BY_EXTERNAL_ID = _pg_ids_by_external_id()


class CustomerRepository:
    """Customers of one organization."""

    def __init__(self, session: AsyncSession, organization_id: str) -> None:
        self.session = session
        self.organization_id = organization_id

    async def insert_if_absent(self, customer: Customer) -> bool:
        """Insert unless the external id is taken; say whether it was inserted.

        `ON CONFLICT DO NOTHING` waits for a concurrent insert of the same
        external id to commit and then does nothing, so two racing creates
        give one row and no error.
        """
        assert customer.organization_id == self.organization_id
        dialect = self.session.get_bind().dialect.name
        insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
        statement = (
            insert(Customer)
            .values(
                id=customer.id,
                organization_id=customer.organization_id,
                external_id=customer.external_id,
                name=customer.name,
                email=customer.email,
                metadata=customer.metadata_,
                created_at=customer.created_at,
            )
            .on_conflict_do_nothing()
            # RETURNING, not rowcount: psycopg reports -1 for this INSERT.
            .returning(Customer.id)
        )
        return (await self.session.execute(statement)).first() is not None

    async def get(self, customer_id: str) -> Customer | None:
        return await self.session.scalar(
            sa.select(Customer).where(
                Customer.organization_id == self.organization_id, Customer.id == customer_id
            )
        )

    async def get_by_external_id(self, external_id: str) -> Customer | None:
        return await self.session.scalar(
            sa.select(Customer).where(
                Customer.organization_id == self.organization_id,
                Customer.external_id == external_id,
            )
        )

    async def ids_among(self, customer_ids: Collection[str]) -> set[str]:
        """Which of these ids name a customer of the organization."""
        if not customer_ids:
            return set()
        if self._postgresql():
            parameters = {
                "organization_id": self.organization_id,
                "values": sorted(set(customer_ids)),
            }
            return set(await self.session.scalars(_PG_IDS_AMONG, parameters))
        query = sa.select(Customer.id).where(
            Customer.organization_id == self.organization_id, Customer.id.in_(sorted(customer_ids))
        )
        return set(await self.session.scalars(query))

    async def ids_by_external_id(self, external_ids: Collection[str]) -> dict[str, str]:
        """The id of each customer among these external ids; unknown ones are left out."""
        if not external_ids:
            return {}
        if self._postgresql():
            parameters = {
                "organization_id": self.organization_id,
                "values": sorted(set(external_ids)),
            }
            rows = await self.session.execute(_PG_IDS_BY_EXTERNAL_ID, parameters)
        else:
            rows = await self.session.execute(
                sa.select(Customer.external_id, Customer.id).where(
                    Customer.organization_id == self.organization_id,
                    Customer.external_id.in_(sorted(external_ids)),
                )
            )
        return {external_id: customer_id for external_id, customer_id in rows}

    def _postgresql(self) -> bool:
        return dialect_of(self.session) == "postgresql"

    async def list_page(self, limit: int, starting_after: str | None) -> list[Customer]:
        query = sa.select(Customer).where(Customer.organization_id == self.organization_id)
        if starting_after is not None:
            query = query.where(Customer.id < starting_after)
        return list(await self.session.scalars(query.order_by(Customer.id.desc()).limit(limit)))
