from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from billfold import limits
from billfold.db.base import Base


class Vendor(Base):
    """Someone the organization pays to serve its customers (a model provider, a GPU cloud)."""

    __tablename__ = "vendors"
    __table_args__ = (
        sa.UniqueConstraint("organization_id", "code"),
        sa.Index("ix_vendors_organization_id_id", "organization_id", "id"),
    )

    id: Mapped[str] = mapped_column(sa.String(40), primary_key=True)
    organization_id: Mapped[str] = mapped_column(sa.String(40), sa.ForeignKey("organizations.id"))
    code: Mapped[str] = mapped_column(sa.String(limits.vendor_code_length_max))
    name: Mapped[str | None] = mapped_column(sa.String(limits.vendor_name_length_max))
    created_at: Mapped[datetime]


class EventCost(Base):
    """What one event cost the organization at one vendor.

    An explicit cost (`source` explicit) keeps the amount as sent and its value
    in the organization's reporting asset at the rate in force at the event's
    time; an LLM cost (`source` llm) keeps the raw usage, its buckets and the
    price table version that priced it. `amount_minor` is null when the cost
    could not be valued (`status` names why): never a silent zero.
    """

    __tablename__ = "event_costs"
    __table_args__ = (
        # The idempotency guard for costs that carry an id.
        sa.UniqueConstraint("organization_id", "cost_key"),
        sa.Index("ix_event_costs_customer", "organization_id", "customer_id", "event_timestamp"),
        sa.Index("ix_event_costs_time", "organization_id", "event_timestamp"),
        sa.Index("ix_event_costs_event", "organization_id", "event_id"),
    )

    id: Mapped[str] = mapped_column(sa.String(40), primary_key=True)
    organization_id: Mapped[str] = mapped_column(sa.String(40), sa.ForeignKey("organizations.id"))
    #: `id:<client cost id>`, or `ev:<event id>#<index>` for a cost without one.
    cost_key: Mapped[str] = mapped_column(sa.String(320))
    event_id: Mapped[str] = mapped_column(sa.String(limits.event_id_length_max))
    event_type: Mapped[str] = mapped_column(sa.String(limits.event_type_length_max))
    customer_id: Mapped[str] = mapped_column(sa.String(40))
    event_timestamp: Mapped[datetime]
    vendor_id: Mapped[str | None] = mapped_column(sa.String(40))
    vendor_code: Mapped[str | None] = mapped_column(sa.String(limits.vendor_code_length_max))
    category: Mapped[str | None] = mapped_column(sa.String(limits.cost_category_length_max))
    #: explicit | llm
    source: Mapped[str] = mapped_column(sa.String(16))
    #: ok | unknown_model | invalid_usage | invalid_cost | no_rate
    status: Mapped[str] = mapped_column(sa.String(32))
    detail: Mapped[str | None] = mapped_column(sa.Text)
    #: In the reporting asset; null when not valued.
    amount_minor: Mapped[int | None] = mapped_column(sa.BigInteger)
    asset_code: Mapped[str] = mapped_column(sa.String(20))
    #: As the vendor charged it (explicit costs in another asset).
    original_amount_minor: Mapped[int | None] = mapped_column(sa.BigInteger)
    original_asset_code: Mapped[str | None] = mapped_column(sa.String(20))
    rate_id: Mapped[str | None] = mapped_column(sa.String(40))
    provider: Mapped[str | None] = mapped_column(sa.String(40))
    model: Mapped[str | None] = mapped_column(sa.String(limits.llm_model_length_max))
    price_table_version: Mapped[str | None] = mapped_column(sa.String(80))
    override_id: Mapped[str | None] = mapped_column(sa.String(40))
    #: Canonical JSON text (exact numbers): the breakdown lines and raw usage.
    breakdown: Mapped[str | None] = mapped_column(sa.Text)
    raw_usage: Mapped[str | None] = mapped_column(sa.Text)
    created_at: Mapped[datetime]


class CostSettings(Base):
    """One organization's cost policy; absent means the defaults."""

    __tablename__ = "cost_settings"

    organization_id: Mapped[str] = mapped_column(
        sa.String(40), sa.ForeignKey("organizations.id"), primary_key=True
    )
    #: block | record
    unknown_model_policy: Mapped[str] = mapped_column(sa.String(16))
    #: Exact decimal text: the default price is vendor cost × (1 + markup/100).
    markup_percent: Mapped[str] = mapped_column(sa.String(40))
    reporting_asset: Mapped[str] = mapped_column(sa.String(20))
    margin_low_percent: Mapped[str | None] = mapped_column(sa.String(40))
    alert_window_days: Mapped[int]
    updated_at: Mapped[datetime]


class LlmPriceOverride(Base):
    """An organization's negotiated price for a provider's model (or all its models)."""

    __tablename__ = "llm_price_overrides"
    __table_args__ = (
        sa.Index("ix_llm_price_overrides_lookup", "organization_id", "provider", "effective_from"),
    )

    id: Mapped[str] = mapped_column(sa.String(40), primary_key=True)
    organization_id: Mapped[str] = mapped_column(sa.String(40), sa.ForeignKey("organizations.id"))
    provider: Mapped[str] = mapped_column(sa.String(40))
    #: A model reference as providers report it; null for every model of the provider.
    model: Mapped[str | None] = mapped_column(sa.String(limits.llm_model_length_max))
    #: Canonical JSON text of rate key -> decimal text per MTok.
    rates: Mapped[str] = mapped_column(sa.Text)
    multiplier: Mapped[str | None] = mapped_column(sa.String(40))
    effective_from: Mapped[datetime]
    created_at: Mapped[datetime]


class LlmPriceTable(Base):
    """A list-price table version imported by an operator (`billfold prices import`).

    List prices are facts about providers, the same for every tenant of an
    installation, so this table alone has no organization: organizations
    layer their negotiated rates on top (`llm_price_overrides`). Versions are
    never edited; a newer one takes over from its `effective_from`, and the
    bundled snapshot applies before any.
    """

    __tablename__ = "llm_price_tables"

    version: Mapped[str] = mapped_column(sa.String(80), primary_key=True)
    effective_from: Mapped[datetime] = mapped_column(index=True)
    sha256: Mapped[str] = mapped_column(sa.String(64))
    document: Mapped[str] = mapped_column(sa.Text)
    imported_at: Mapped[datetime]


class CostAlertState(Base):
    """Whether a customer is inside an alert's condition, so a webhook fires on entry only."""

    __tablename__ = "cost_alert_states"
    __table_args__ = (sa.PrimaryKeyConstraint("organization_id", "customer_id", "topic"),)

    organization_id: Mapped[str] = mapped_column(sa.String(40), sa.ForeignKey("organizations.id"))
    customer_id: Mapped[str] = mapped_column(sa.String(40))
    topic: Mapped[str] = mapped_column(sa.String(64))
    active: Mapped[bool]
    changed_at: Mapped[datetime]
