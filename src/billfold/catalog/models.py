from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from billfold import limits
from billfold.db.base import Base, JSONType


class Product(Base):
    """What an organization sells, known by its `code`; its definitions are versions."""

    __tablename__ = "products"
    __table_args__ = (
        sa.UniqueConstraint("organization_id", "code"),
        # Lists are newest first within one organization.
        sa.Index("ix_products_organization_id_id", "organization_id", "id"),
    )

    id: Mapped[str] = mapped_column(sa.String(40), primary_key=True)
    organization_id: Mapped[str] = mapped_column(sa.String(40), sa.ForeignKey("organizations.id"))
    code: Mapped[str] = mapped_column(sa.String(limits.product_code_length_max))
    name: Mapped[str] = mapped_column(sa.String(limits.product_name_length_max))
    # The highest version number; moved only by a compare-and-set from n to n+1.
    latest_version: Mapped[int]
    created_at: Mapped[datetime]


class ProductVersion(Base):
    """One immutable definition of a product: rows are inserted, never updated.

    `prices` and `features` hold the canonical JSON the catalog validated
    (rating's `dump_price` plus the catalog's fields): decimal strings only.
    """

    __tablename__ = "product_versions"
    __table_args__ = (
        # The real guard of "one version n per product".
        sa.PrimaryKeyConstraint("organization_id", "product_id", "number"),
    )

    organization_id: Mapped[str] = mapped_column(sa.String(40), sa.ForeignKey("organizations.id"))
    product_id: Mapped[str] = mapped_column(sa.String(40), sa.ForeignKey("products.id"))
    number: Mapped[int]
    prices: Mapped[list[Any]] = mapped_column(JSONType)
    features: Mapped[list[Any]] = mapped_column(JSONType)
    created_at: Mapped[datetime]
