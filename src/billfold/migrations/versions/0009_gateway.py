"""gateway keys

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-24 08:00:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import billfold.db.base

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "gateway_keys",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("organization_id", sa.String(length=40), nullable=False),
        sa.Column("customer_id", sa.String(length=40), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("key_hash", sa.String(length=64), nullable=False),
        sa.Column("key_prefix", sa.String(length=16), nullable=False),
        sa.Column("created_at", billfold.db.base.UTCDateTime(timezone=True), nullable=False),
        sa.Column("revoked_at", billfold.db.base.UTCDateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["customer_id"], ["customers.id"], name=op.f("fk_gateway_keys_customer_id_customers")
        ),
        sa.ForeignKeyConstraint(
            ["organization_id"],
            ["organizations.id"],
            name=op.f("fk_gateway_keys_organization_id_organizations"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_gateway_keys")),
        sa.UniqueConstraint("key_hash", name=op.f("uq_gateway_keys_key_hash")),
    )
    with op.batch_alter_table("gateway_keys", schema=None) as batch_op:
        batch_op.create_index(
            "ix_gateway_keys_organization_id_customer_id",
            ["organization_id", "customer_id", "id"],
            unique=False,
        )


def downgrade() -> None:
    with op.batch_alter_table("gateway_keys", schema=None) as batch_op:
        batch_op.drop_index("ix_gateway_keys_organization_id_customer_id")
    op.drop_table("gateway_keys")
