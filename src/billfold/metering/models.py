from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from billfold import limits
from billfold.db.base import Base, JSONType


class Event(Base):
    """A usage event, stored once per organization and client id, forever.

    `data` and `costs` are written by the metering repository as canonical
    JSON text (exact numbers); read them back with `values.loads` on the text
    rather than through this column's JSON type, which would give floats.
    """

    __tablename__ = "events"
    __table_args__ = (
        # The key is the dedup guard: one row per (organization, client id),
        # and the organization first so the table can be distributed by it.
        sa.PrimaryKeyConstraint("organization_id", "id"),
        # Usage queries: one customer's events of one type over a time range.
        sa.Index("ix_events_usage", "organization_id", "customer_id", "type", "timestamp"),
    )

    organization_id: Mapped[str] = mapped_column(sa.String(40), sa.ForeignKey("organizations.id"))
    # The client's id for the event, not one of ours.
    id: Mapped[str] = mapped_column(sa.String(limits.event_id_length_max))
    customer_id: Mapped[str] = mapped_column(sa.String(40))
    type: Mapped[str] = mapped_column(sa.String(limits.event_type_length_max))
    timestamp: Mapped[datetime]
    data: Mapped[dict[str, Any]]
    # sha256 of the canonical JSON of the event as the client sent it: the same
    # id with another fingerprint is a conflict, with the same one a duplicate.
    fingerprint: Mapped[str] = mapped_column(sa.String(64))
    received_at: Mapped[datetime]
    # Reserved for real-time settlement and vendor costs (later issues):
    # stored as sent, acted on by nobody yet.
    authorization_id: Mapped[str | None] = mapped_column(
        sa.String(limits.event_authorization_id_length_max)
    )
    costs: Mapped[list[Any] | None] = mapped_column(JSONType)


class Meter(Base):
    """An aggregation over one event type's data: what a usage price counts."""

    __tablename__ = "meters"
    __table_args__ = (
        sa.UniqueConstraint("organization_id", "code"),
        # Lists are newest first within one organization.
        sa.Index("ix_meters_organization_id_id", "organization_id", "id"),
        # Ingest checks an event's numbers against the meters of its type.
        sa.Index("ix_meters_organization_id_event_type", "organization_id", "event_type"),
    )

    id: Mapped[str] = mapped_column(sa.String(40), primary_key=True)
    organization_id: Mapped[str] = mapped_column(sa.String(40), sa.ForeignKey("organizations.id"))
    code: Mapped[str] = mapped_column(sa.String(limits.meter_code_length_max))
    name: Mapped[str | None] = mapped_column(sa.String(limits.meter_name_length_max))
    event_type: Mapped[str] = mapped_column(sa.String(limits.event_type_length_max))
    # count | sum | max | min | unique_count | latest
    aggregation: Mapped[str] = mapped_column(sa.String(16))
    # A dotted path into `data`; None only for count.
    field: Mapped[str | None] = mapped_column(sa.String(limits.meter_path_length_max))
    # Dotted key -> the values (as text) an event must have there to count.
    filters: Mapped[dict[str, Any]]
    group_by: Mapped[list[str]] = mapped_column(sa.JSON)
    created_at: Mapped[datetime]


# Rollup value columns: exact numbers. PostgreSQL adds `numeric` in SQL;
# SQLite has no exact decimal (a NUMERIC column would turn "0.1" into a
# float), so there they are canonical decimal text, added up in Python.
RollupNumber = sa.Text().with_variant(sa.Numeric(), "postgresql")


class UsageRollup(Base):
    """count, sum, min and max of one meter's events per customer, UTC hour
    and group, kept exact in the transaction that accepts the events (and
    built from the stored events when the meter is created).

    Usage queries read whole hours here and only the partial hours at the
    edges of their range from `events`. unique_count and latest are not
    rolled up: they always scan the events.
    """

    __tablename__ = "usage_rollups"
    __table_args__ = (
        # Queries name the organization, the meter, usually one customer, and
        # a range of hours: the key is that index.
        sa.PrimaryKeyConstraint(
            "organization_id", "meter_id", "customer_id", "hour", "group_values"
        ),
    )

    organization_id: Mapped[str] = mapped_column(sa.String(40), sa.ForeignKey("organizations.id"))
    meter_id: Mapped[str] = mapped_column(sa.String(40), sa.ForeignKey("meters.id"))
    customer_id: Mapped[str] = mapped_column(sa.String(40))
    # The start of the UTC hour.
    hour: Mapped[datetime]
    # A JSON array of the text of each of the meter's group_by values, in the
    # meter's order (null where an event has none): '["gpt-4o",null]'.
    group_values: Mapped[str] = mapped_column(sa.Text())
    # Events that passed the meter's filters.
    event_count: Mapped[int] = mapped_column(sa.BigInteger())
    # Of the numbers at the meter's field (none for count): 0, null and null
    # when no event had one.
    value_sum: Mapped[Any] = mapped_column(RollupNumber, nullable=False)
    value_min: Mapped[Any] = mapped_column(RollupNumber, nullable=True)
    value_max: Mapped[Any] = mapped_column(RollupNumber, nullable=True)


class UsageRollupDelta(Base):
    """What one ingest transaction adds to `usage_rollups` on PostgreSQL, as
    rows of its own: appended, never updated, so concurrent ingests of the
    same customer and hour never wait for each other's row locks. Usage
    queries add them to the rollups; the worker moves them in
    (`compact_rollup_deltas`), a few thousand rows per statement.

    SQLite runs one writer at a time and adds to `usage_rollups` directly;
    this table stays empty there.
    """

    __tablename__ = "usage_rollup_deltas"
    __table_args__ = (
        sa.Index(
            "ix_usage_rollup_deltas_key", "organization_id", "meter_id", "customer_id", "hour"
        ),
    )

    id: Mapped[int] = mapped_column(
        sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True, autoincrement=True
    )
    # No foreign keys: a key check per appended row would cost about as much
    # as the row, and each names the meter and organization ingest just read.
    organization_id: Mapped[str] = mapped_column(sa.String(40))
    meter_id: Mapped[str] = mapped_column(sa.String(40))
    customer_id: Mapped[str] = mapped_column(sa.String(40))
    hour: Mapped[datetime]
    group_values: Mapped[str] = mapped_column(sa.Text())
    event_count: Mapped[int] = mapped_column(sa.BigInteger())
    value_sum: Mapped[Any] = mapped_column(RollupNumber, nullable=False)
    value_min: Mapped[Any] = mapped_column(RollupNumber, nullable=True)
    value_max: Mapped[Any] = mapped_column(RollupNumber, nullable=True)
