"""catalog: products, immutable product versions, minimal subscriptions

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-24 07:00:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

import billfold.db.base

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _json() -> sa.types.TypeEngine[Any]:
    return sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")


def upgrade() -> None:
    op.create_table(
        "products",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("organization_id", sa.String(length=40), nullable=False),
        sa.Column("code", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("latest_version", sa.Integer(), nullable=False),
        sa.Column("created_at", billfold.db.base.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["organization_id"],
            ["organizations.id"],
            name=op.f("fk_products_organization_id_organizations"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_products")),
        sa.UniqueConstraint(
            "organization_id", "code", name=op.f("uq_products_organization_id_code")
        ),
    )
    op.create_index(
        "ix_products_organization_id_id", "products", ["organization_id", "id"], unique=False
    )
    # Versions are inserted, never updated: the primary key is the guard of
    # "one version n per product".
    op.create_table(
        "product_versions",
        sa.Column("organization_id", sa.String(length=40), nullable=False),
        sa.Column("product_id", sa.String(length=40), nullable=False),
        sa.Column("number", sa.Integer(), nullable=False),
        sa.Column("prices", _json(), nullable=False),
        sa.Column("features", _json(), nullable=False),
        sa.Column("created_at", billfold.db.base.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["organization_id"],
            ["organizations.id"],
            name=op.f("fk_product_versions_organization_id_organizations"),
        ),
        sa.ForeignKeyConstraint(
            ["product_id"],
            ["products.id"],
            name=op.f("fk_product_versions_product_id_products"),
        ),
        sa.PrimaryKeyConstraint(
            "organization_id", "product_id", "number", name=op.f("pk_product_versions")
        ),
    )
    op.create_table(
        "subscriptions",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("organization_id", sa.String(length=40), nullable=False),
        sa.Column("customer_id", sa.String(length=40), nullable=False),
        sa.Column("product_id", sa.String(length=40), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("start_at", billfold.db.base.UTCDateTime(timezone=True), nullable=False),
        sa.Column("created_at", billfold.db.base.UTCDateTime(timezone=True), nullable=False),
        sa.Column("canceled_at", billfold.db.base.UTCDateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["customer_id"],
            ["customers.id"],
            name=op.f("fk_subscriptions_customer_id_customers"),
        ),
        sa.ForeignKeyConstraint(
            ["organization_id"],
            ["organizations.id"],
            name=op.f("fk_subscriptions_organization_id_organizations"),
        ),
        sa.ForeignKeyConstraint(
            ["product_id"],
            ["products.id"],
            name=op.f("fk_subscriptions_product_id_products"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_subscriptions")),
    )
    op.create_index(
        "ix_subscriptions_customer",
        "subscriptions",
        ["organization_id", "customer_id", "status"],
        unique=False,
    )
    op.create_index(
        "ix_subscriptions_organization_id_id",
        "subscriptions",
        ["organization_id", "id"],
        unique=False,
    )


def downgrade() -> None:
    op.drop_index("ix_subscriptions_organization_id_id", table_name="subscriptions")
    op.drop_index("ix_subscriptions_customer", table_name="subscriptions")
    op.drop_table("subscriptions")
    op.drop_table("product_versions")
    op.drop_index("ix_products_organization_id_id", table_name="products")
    op.drop_table("products")
