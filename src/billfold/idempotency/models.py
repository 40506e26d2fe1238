from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from billfold.db.base import Base


class IdempotencyKey(Base):
    """A client's `Idempotency-Key` and the response it first produced.

    The row is claimed (`completed_at` null) before the endpoint runs, and
    completed in the same transaction as the endpoint's own changes, so a
    stored response exists exactly when those changes do.
    """

    __tablename__ = "idempotency_keys"

    organization_id: Mapped[str] = mapped_column(
        sa.String(40), sa.ForeignKey("organizations.id"), primary_key=True
    )
    key: Mapped[str] = mapped_column(sa.String(255), primary_key=True)
    request_fingerprint: Mapped[str] = mapped_column(sa.String(64))
    method: Mapped[str] = mapped_column(sa.String(8))
    path: Mapped[str] = mapped_column(sa.String(2048))
    created_at: Mapped[datetime] = mapped_column(index=True)
    locked_until: Mapped[datetime | None]
    completed_at: Mapped[datetime | None]
    response_status: Mapped[int | None]
    response_body: Mapped[bytes | None] = mapped_column(sa.LargeBinary)
    response_content_type: Mapped[str | None] = mapped_column(sa.String(100))
