"""All SQL of the costs domain."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from billfold.authorizations.models import Authorization
from billfold.costs.models import (
    CostAlertState,
    CostSettings,
    EventCost,
    LlmPriceOverride,
    LlmPriceTable,
    Vendor,
)
from billfold.db.arrays import text_array
from billfold.db.bulk import insert_rows
from billfold.db.engine import dialect_of
from billfold.metering.models import Event
from billfold.realtime.models import EventFee

# The estimate's reads, built once: building a statement costs more than running it.
_OVERRIDES_IN_FORCE = (
    sa.select(LlmPriceOverride)
    .where(
        LlmPriceOverride.organization_id == sa.bindparam("organization_id"),
        LlmPriceOverride.provider == sa.bindparam("provider"),
        LlmPriceOverride.effective_from <= sa.bindparam("at"),
    )
    .order_by(LlmPriceOverride.effective_from.desc(), LlmPriceOverride.id.desc())
)
_ALL_OVERRIDES_IN_FORCE = (
    sa.select(LlmPriceOverride)
    .where(
        LlmPriceOverride.organization_id == sa.bindparam("organization_id"),
        LlmPriceOverride.effective_from <= sa.bindparam("at"),
    )
    .order_by(LlmPriceOverride.effective_from.desc(), LlmPriceOverride.id.desc())
)
_TABLE_VERSIONS_THROUGH = (
    sa.select(LlmPriceTable.effective_from, LlmPriceTable.version, LlmPriceTable.sha256)
    .where(LlmPriceTable.effective_from <= sa.bindparam("at"))
    .order_by(LlmPriceTable.effective_from.desc(), LlmPriceTable.version.desc())
)
_TABLE_VERSION_AT = (
    sa.select(LlmPriceTable.version, LlmPriceTable.sha256)
    .where(LlmPriceTable.effective_from <= sa.bindparam("at"))
    .order_by(LlmPriceTable.effective_from.desc(), LlmPriceTable.version.desc())
    .limit(1)
)


def _pg_costs_by_key() -> sa.Select[EventCost]:
    keys = text_array("keys")
    return (
        sa.select(EventCost)
        .join(keys, keys.c.value == EventCost.cost_key)
        .where(EventCost.organization_id == sa.bindparam("organization_id"))
    )


_PG_COSTS_BY_KEY = _pg_costs_by_key()


def _insert(session: AsyncSession) -> Any:
    return postgresql.insert if session.get_bind().dialect.name == "postgresql" else sqlite.insert


@dataclass(frozen=True, slots=True)
class MoneyRow:
    """A cost or a revenue amount with what margins group it by."""

    kind: str  # cost | revenue
    customer_id: str
    event_type: str | None
    at: datetime
    amount_minor: int | None
    asset_code: str
    vendor_code: str | None
    model: str | None
    data_text: str | None


class CostRepository:
    def __init__(self, session: AsyncSession, organization_id: str) -> None:
        self.session = session
        self.organization_id = organization_id

    # --- vendors ---------------------------------------------------------------

    async def insert_vendor_if_absent(self, vendor: Vendor) -> bool:
        statement = (
            _insert(self.session)(Vendor)
            .values(
                id=vendor.id,
                organization_id=self.organization_id,
                code=vendor.code,
                name=vendor.name,
                created_at=vendor.created_at,
            )
            .on_conflict_do_nothing()
            .returning(Vendor.id)
        )
        return (await self.session.execute(statement)).first() is not None

    async def vendor_by_code(self, code: str) -> Vendor | None:
        return await self.session.scalar(
            sa.select(Vendor).where(
                Vendor.organization_id == self.organization_id, Vendor.code == code
            )
        )

    async def vendor(self, vendor_id: str) -> Vendor | None:
        return await self.session.scalar(
            sa.select(Vendor).where(
                Vendor.organization_id == self.organization_id, Vendor.id == vendor_id
            )
        )

    async def count_vendors(self) -> int:
        count = await self.session.scalar(
            sa.select(sa.func.count()).where(Vendor.organization_id == self.organization_id)
        )
        return int(count or 0)

    async def list_vendors(self, limit: int, starting_after: str | None) -> list[Vendor]:
        query = sa.select(Vendor).where(Vendor.organization_id == self.organization_id)
        if starting_after is not None:
            query = query.where(Vendor.id < starting_after)
        return list(await self.session.scalars(query.order_by(Vendor.id.desc()).limit(limit)))

    # --- settings and overrides -------------------------------------------------

    async def settings(self) -> CostSettings | None:
        return await self.session.get(CostSettings, self.organization_id)

    async def save_settings(self, row: CostSettings) -> None:
        assert row.organization_id == self.organization_id
        await self.session.merge(row)
        await self.session.flush()

    async def all_settings(self) -> list[CostSettings]:
        """Every organization's settings (the alert job's work list)."""
        return list(await self.session.scalars(sa.select(CostSettings)))

    async def add_override(self, row: LlmPriceOverride) -> None:
        self.session.add(row)
        await self.session.flush()

    async def count_overrides(self) -> int:
        count = await self.session.scalar(
            sa.select(sa.func.count()).where(
                LlmPriceOverride.organization_id == self.organization_id
            )
        )
        return int(count or 0)

    async def list_overrides(
        self, limit: int, starting_after: str | None
    ) -> list[LlmPriceOverride]:
        query = sa.select(LlmPriceOverride).where(
            LlmPriceOverride.organization_id == self.organization_id
        )
        if starting_after is not None:
            query = query.where(LlmPriceOverride.id < starting_after)
        return list(
            await self.session.scalars(query.order_by(LlmPriceOverride.id.desc()).limit(limit))
        )

    async def all_overrides_in_force(self, at: datetime) -> list[LlmPriceOverride]:
        """Every provider's overrides started by `at`, newest first."""
        found = await self.session.scalars(
            _ALL_OVERRIDES_IN_FORCE, {"organization_id": self.organization_id, "at": at}
        )
        return list(found)

    async def overrides_in_force(self, provider: str, at: datetime) -> list[LlmPriceOverride]:
        """The provider's overrides started by `at`, newest first."""
        found = await self.session.scalars(
            _OVERRIDES_IN_FORCE,
            {"organization_id": self.organization_id, "provider": provider, "at": at},
        )
        return list(found)

    # --- costs -----------------------------------------------------------------

    async def insert_costs_if_absent(self, rows: Sequence[EventCost]) -> dict[str, EventCost]:
        """Store the rows whose cost key is new (in order: of two with one
        key, the first) with two statements however many; answer the stored
        row of every key, which is the given row where it was the one stored."""
        if not rows:
            return {}
        columns = [column.key for column in EventCost.__table__.columns]
        await insert_rows(
            self.session,
            cast(sa.Table, EventCost.__table__),
            [{name: getattr(row, name) for name in columns} for row in rows],
            conflict_do_nothing=("organization_id", "cost_key"),
        )
        keys = sorted({row.cost_key for row in rows})
        if dialect_of(self.session) == "postgresql":
            found = await self.session.scalars(
                _PG_COSTS_BY_KEY, {"organization_id": self.organization_id, "keys": keys}
            )
        else:
            found = await self.session.scalars(
                sa.select(EventCost).where(
                    EventCost.organization_id == self.organization_id,
                    EventCost.cost_key.in_(keys),
                )
            )
        given = {row.id: row for row in rows}
        return {stored.cost_key: given.get(stored.id, stored) for stored in found}

    async def costs_of_event(self, event_id: str) -> list[EventCost]:
        return list(
            await self.session.scalars(
                sa.select(EventCost)
                .where(
                    EventCost.organization_id == self.organization_id,
                    EventCost.event_id == event_id,
                )
                .order_by(EventCost.cost_key)
            )
        )

    # --- margins ---------------------------------------------------------------

    async def money_rows(
        self,
        start: datetime,
        end: datetime,
        *,
        customer_id: str | None,
        with_data: bool,
        row_limit: int,
    ) -> list[MoneyRow]:
        """Costs, real-time fees and captured holds in [start, end), at most
        `row_limit` + 1 of them (the caller refuses a range that has more)."""
        data = sa.cast(Event.data, sa.Text) if with_data else sa.null()
        costs = (
            sa.select(
                EventCost.customer_id,
                EventCost.event_type,
                EventCost.event_timestamp,
                EventCost.amount_minor,
                EventCost.asset_code,
                EventCost.vendor_code,
                EventCost.model,
                data,
            )
            .where(
                EventCost.organization_id == self.organization_id,
                EventCost.event_timestamp >= start,
                EventCost.event_timestamp < end,
            )
            .limit(row_limit + 1)
        )
        fees = (
            sa.select(
                EventFee.customer_id,
                EventFee.event_type,
                EventFee.event_timestamp,
                EventFee.amount_minor,
                EventFee.asset_code,
                data,
            )
            .where(
                EventFee.organization_id == self.organization_id,
                EventFee.event_timestamp >= start,
                EventFee.event_timestamp < end,
            )
            .limit(row_limit + 1)
        )
        if with_data:
            costs = costs.outerjoin(
                Event,
                sa.and_(
                    Event.organization_id == EventCost.organization_id,
                    Event.id == EventCost.event_id,
                ),
            )
            fees = fees.outerjoin(
                Event,
                sa.and_(
                    Event.organization_id == EventFee.organization_id,
                    Event.id == EventFee.event_id,
                ),
            )
        settled_by_events = sa.select(EventFee.authorization_id).where(
            EventFee.organization_id == self.organization_id,
            EventFee.authorization_id.is_not(None),
        )
        # Holds captured directly (not settled by an event's fees, which are
        # counted above), at the time they were captured.
        captures = (
            sa.select(
                Authorization.customer_id,
                Authorization.resolved_at,
                Authorization.captured_minor,
                Authorization.asset_code,
            )
            .where(
                Authorization.organization_id == self.organization_id,
                Authorization.status == "captured",
                Authorization.resolved_at >= start,
                Authorization.resolved_at < end,
                Authorization.id.not_in(settled_by_events),
            )
            .limit(row_limit + 1)
        )
        if customer_id is not None:
            costs = costs.where(EventCost.customer_id == customer_id)
            fees = fees.where(EventFee.customer_id == customer_id)
            captures = captures.where(Authorization.customer_id == customer_id)
        rows: list[MoneyRow] = []
        for cost in await self.session.execute(costs):
            rows.append(MoneyRow("cost", *cost))
        for fee in await self.session.execute(fees):
            customer, event_type, at, amount, asset, data_text = fee
            rows.append(
                MoneyRow("revenue", customer, event_type, at, amount, asset, None, None, data_text)
            )
        for capture in await self.session.execute(captures):
            customer, resolved_at, amount, asset = capture
            assert resolved_at is not None, "a captured hold has resolved"
            rows.append(
                MoneyRow("revenue", customer, None, resolved_at, amount, asset, None, None, None)
            )
        return rows

    # --- alert states ----------------------------------------------------------

    async def active_alerts(self, topic: str) -> set[str]:
        return set(
            await self.session.scalars(
                sa.select(CostAlertState.customer_id).where(
                    CostAlertState.organization_id == self.organization_id,
                    CostAlertState.topic == topic,
                    CostAlertState.active.is_(True),
                )
            )
        )

    async def set_alert(self, customer_id: str, topic: str, active: bool, at: datetime) -> None:
        await self.session.merge(
            CostAlertState(
                organization_id=self.organization_id,
                customer_id=customer_id,
                topic=topic,
                active=active,
                changed_at=at,
            )
        )
        await self.session.flush()


class PriceTableRepository:
    """Imported list-price tables: global to the installation (see the model)."""

    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def add(self, row: LlmPriceTable) -> bool:
        statement = (
            _insert(self.session)(LlmPriceTable)
            .values(
                version=row.version,
                effective_from=row.effective_from,
                sha256=row.sha256,
                document=row.document,
                imported_at=row.imported_at,
            )
            .on_conflict_do_nothing()
            .returning(LlmPriceTable.version)
        )
        return (await self.session.execute(statement)).first() is not None

    async def versions_through(self, at: datetime) -> list[tuple[datetime, str, str]]:
        """(start, version, sha256) of every imported table started by `at`, newest first."""
        rows = await self.session.execute(_TABLE_VERSIONS_THROUGH, {"at": at})
        return [(start, version, sha256) for start, version, sha256 in rows]

    async def version_at(self, at: datetime) -> tuple[str, str] | None:
        """(version, sha256) of the imported table in force at `at`, if any."""
        row = (await self.session.execute(_TABLE_VERSION_AT, {"at": at})).first()
        return None if row is None else (row[0], row[1])

    async def document(self, version: str) -> str | None:
        return await self.session.scalar(
            sa.select(LlmPriceTable.document).where(LlmPriceTable.version == version)
        )

    async def list(self) -> Sequence[LlmPriceTable]:
        return list(
            await self.session.scalars(
                sa.select(LlmPriceTable).order_by(LlmPriceTable.effective_from.desc())
            )
        )
