"""`insert_rows` writes exactly what an ORM insert would, on both backends:
every column type the hot paths use (text, integers past 2**53, aware
datetimes, JSON, bytes, NULL), rows in the order given, conflicts skipped,
and only the inserted rows returned."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any, cast

import pytest
import sqlalchemy as sa

from billfold.api.context import AppContext
from billfold.authorizations.models import Authorization
from billfold.db.bulk import insert_rows
from billfold.idempotency.models import IdempotencyKey
from tests.conftest import Tenant

NOW = datetime(2026, 11, 24, 12, 30, 15, 123456, tzinfo=UTC)


def _key_row(tenant: Tenant, key: str, **extra: Any) -> dict[str, Any]:
    return {
        "organization_id": tenant.organization_id,
        "key": key,
        "request_fingerprint": "f" * 64,
        "method": "POST",
        "path": "/v1/x",
        "created_at": NOW,
        "locked_until": None,
        "response_body": None,
    } | extra


async def test_values_round_trip(ctx: AppContext, tenant: Tenant) -> None:
    table = cast(sa.Table, Authorization.__table__)
    row = {
        "id": "auth_bulk_1",
        "organization_id": tenant.organization_id,
        "customer_id": "cus_x",
        "asset_code": "USD",
        "amount_minor": 2**62 + 1,  # past a double's exact integers
        "status": "authorized",
        "decline_code": None,
        "captured_minor": 0,
        "released_minor": 0,
        "expires_at": NOW + timedelta(minutes=10),
        "created_at": NOW.astimezone(),  # any zone: stored as the same instant
        "resolved_at": None,
        "details": {"metadata": {"quote": 'a "b" \\ é', "n": "1"}, "list": [1, None]},
    }
    async with ctx.sessions() as session:
        await insert_rows(session, table, [row])
        await session.commit()
    async with ctx.sessions() as session:
        stored = await session.get(Authorization, "auth_bulk_1")
    assert stored is not None
    assert stored.amount_minor == 2**62 + 1
    assert stored.decline_code is None
    assert stored.resolved_at is None
    assert stored.expires_at == NOW + timedelta(minutes=10)
    assert stored.created_at == NOW
    assert stored.details == row["details"]


async def test_bytes_conflicts_returning_and_order(ctx: AppContext, tenant: Tenant) -> None:
    table = cast(sa.Table, IdempotencyKey.__table__)
    body = bytes(range(256))
    async with ctx.sessions() as session:
        first = await insert_rows(
            session,
            table,
            [_key_row(tenant, "k2", response_body=body), _key_row(tenant, "k1")],
            conflict_do_nothing=("organization_id", "key"),
            returning="key",
        )
        again = await insert_rows(
            session,
            table,
            [_key_row(tenant, "k1"), _key_row(tenant, "k3"), _key_row(tenant, "k2")],
            conflict_do_nothing=("organization_id", "key"),
            returning="key",
        )
        await session.commit()
    assert sorted(first) == ["k1", "k2"]
    assert again == ["k3"]  # the conflicting rows are skipped, not returned
    async with ctx.sessions() as session:
        stored = await session.scalar(
            sa.select(IdempotencyKey).where(
                IdempotencyKey.organization_id == tenant.organization_id,
                IdempotencyKey.key == "k2",
            )
        )
    assert stored is not None
    assert stored.response_body == body


async def test_nothing_to_insert_and_bad_rows(ctx: AppContext, tenant: Tenant) -> None:
    table = cast(sa.Table, IdempotencyKey.__table__)
    async with ctx.sessions() as session:
        assert await insert_rows(session, table, [], returning="key") == []
        with pytest.raises((ValueError, sa.exc.StatementError)):
            await insert_rows(
                session, table, [_key_row(tenant, "naive", created_at=NOW.replace(tzinfo=None))]
            )
        await session.rollback()
        with pytest.raises(KeyError):
            await insert_rows(session, table, [_key_row(tenant, "x", no_such_column=1)])
