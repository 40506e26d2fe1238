from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import cast

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from billfold.db.bulk import insert_rows
from billfold.db.engine import upsert_insert
from billfold.idempotency.models import IdempotencyKey


class IdempotencyRepository:
    def __init__(self, session: AsyncSession, organization_id: str) -> None:
        self.session = session
        self.organization_id = organization_id

    def _this(self, key: str) -> sa.ColumnElement[bool]:
        return sa.and_(
            IdempotencyKey.organization_id == self.organization_id, IdempotencyKey.key == key
        )

    async def insert_if_absent(
        self,
        *,
        key: str,
        fingerprint: str,
        method: str,
        path: str,
        now: datetime,
        lease_until: datetime,
    ) -> bool:
        """True when this call created the row, i.e. holds the key."""
        statement = (
            upsert_insert(self.session, IdempotencyKey)
            .values(
                organization_id=self.organization_id,
                key=key,
                request_fingerprint=fingerprint,
                method=method,
                path=path,
                created_at=now,
                locked_until=lease_until,
            )
            .on_conflict_do_nothing(index_elements=["organization_id", "key"])
            # RETURNING, not rowcount: psycopg reports -1 for this INSERT.
            .returning(IdempotencyKey.key)
        )
        result = await self.session.execute(statement)
        return result.first() is not None

    async def insert_many_if_absent(
        self,
        keys: Sequence[tuple[str, str, str, str]],
        *,
        now: datetime,
        lease_until: datetime,
    ) -> set[str]:
        """`insert_if_absent` for many (key, fingerprint, method, path) in one
        statement, rows in the order given; returns the keys this call created."""
        created = await insert_rows(
            self.session,
            cast(sa.Table, IdempotencyKey.__table__),
            [
                {
                    "organization_id": self.organization_id,
                    "key": key,
                    "request_fingerprint": fingerprint,
                    "method": method,
                    "path": path,
                    "created_at": now,
                    "locked_until": lease_until,
                }
                for key, fingerprint, method, path in keys
            ],
            conflict_do_nothing=("organization_id", "key"),
            returning="key",
        )
        return set(created)

    async def get_many(self, keys: Sequence[str]) -> dict[str, IdempotencyKey]:
        if not keys:
            return {}
        rows = await self.session.scalars(
            sa.select(IdempotencyKey)
            .where(
                IdempotencyKey.organization_id == self.organization_id,
                IdempotencyKey.key.in_(keys),
            )
            .execution_options(populate_existing=True)
        )
        return {row.key: row for row in rows}

    async def get(self, key: str) -> IdempotencyKey | None:
        return await self.session.scalar(
            sa.select(IdempotencyKey)
            .where(self._this(key))
            .execution_options(populate_existing=True)
        )

    async def take_over(
        self, key: str, stale_lease: datetime | None, lease_until: datetime
    ) -> bool:
        """Claim a key whose holder died, only if nobody else did first."""
        lease_matches = (
            IdempotencyKey.locked_until.is_(None)
            if stale_lease is None
            else IdempotencyKey.locked_until == stale_lease
        )
        result = await self.session.execute(
            sa.update(IdempotencyKey)
            .where(self._this(key), IdempotencyKey.completed_at.is_(None), lease_matches)
            .values(locked_until=lease_until)
        )
        return bool(getattr(result, "rowcount", 0) == 1)

    async def complete(
        self, key: str, *, status: int, body: bytes, content_type: str | None, now: datetime
    ) -> bool:
        result = await self.session.execute(
            sa.update(IdempotencyKey)
            .where(self._this(key), IdempotencyKey.completed_at.is_(None))
            .values(
                completed_at=now,
                locked_until=None,
                response_status=status,
                response_body=body,
                response_content_type=content_type,
            )
        )
        return bool(getattr(result, "rowcount", 0) == 1)

    async def complete_many(
        self, responses: Sequence[tuple[str, int, bytes, str | None]], *, now: datetime
    ) -> int:
        """`complete` for many (key, status, body, content type) in one round
        trip; returns how many were completed."""
        if not responses:
            return 0
        # The Core table: an ORM UPDATE with a parameter list would be a bulk
        # update by primary key, which takes no extra WHERE.
        table = cast(sa.Table, IdempotencyKey.__table__)
        result = await self.session.execute(
            sa.update(table)
            .where(
                table.c.organization_id == self.organization_id,
                table.c.key == sa.bindparam("b_key"),
                table.c.completed_at.is_(None),
            )
            .values(
                completed_at=now,
                locked_until=None,
                response_status=sa.bindparam("b_status"),
                response_body=sa.bindparam("b_body"),
                response_content_type=sa.bindparam("b_content_type"),
            ),
            [
                {"b_key": key, "b_status": status, "b_body": body, "b_content_type": content_type}
                for key, status, body, content_type in responses
            ],
        )
        return int(getattr(result, "rowcount", 0) or 0)

    async def release(self, key: str) -> None:
        await self.session.execute(
            sa.delete(IdempotencyKey).where(self._this(key), IdempotencyKey.completed_at.is_(None))
        )


async def prune_idempotency_keys(session: AsyncSession, older_than: datetime, now: datetime) -> int:
    """Forget keys past retention; never one whose request may still be running."""
    result = await session.execute(
        sa.delete(IdempotencyKey).where(
            IdempotencyKey.created_at < older_than,
            sa.or_(
                IdempotencyKey.completed_at.is_not(None),
                IdempotencyKey.locked_until.is_(None),
                IdempotencyKey.locked_until < now,
            ),
        )
    )
    return int(getattr(result, "rowcount", 0) or 0)
