"""Vendor costs, LLM prices and margins.

An event's cost is what serving it cost the organization: explicit amounts a
client reports (`costs: [{vendor, amount, asset, category?, id?}]`) and the
vendor cost of the model call it carries (`data.llm`), priced by `llmcost`
with the price table in force at the event's time and the organization's
negotiated rates. Costs are stored in the organization's reporting asset,
converted at the exchange rate in force at the event's time, and keep what
the vendor actually charged. A cost that cannot be valued (an unknown model,
a malformed usage, a missing rate) is stored with a null amount and a status:
never as zero, and never by refusing the event, whose usage already happened.

Margins compare those costs with revenue: real-time event fees and holds
captured outside events. Invoiced revenue (in-arrears prices, subscriptions)
is not included yet.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from billfold import limits, llmcost
from billfold.assets.amounts import AssetInfo, format_amount, parse_amount
from billfold.assets.service import get_asset, parse_instant, rate_at
from billfold.clock import Clock
from billfold.costs.models import CostSettings, EventCost, LlmPriceOverride, LlmPriceTable, Vendor
from billfold.costs.repository import CostRepository, MoneyRow, PriceTableRepository
from billfold.customers.service import resolve_customer
from billfold.errors import BillfoldError, InvalidRequest, LimitExceeded, NotFound
from billfold.ids import new_id
from billfold.metering import values
from billfold.metering.realtime import AcceptedEvent
from billfold.metering.repository import EventRepository
from billfold.organizations.service import Principal
from billfold.webhooks import topics
from billfold.webhooks.service import emit

POLICIES = ("block", "record")
DEFAULT_POLICY = "block"
DEFAULT_ALERT_WINDOW_DAYS = 30
TOP_PERCENTILE = 5
LLM_VENDOR_CATEGORY = "llm"
GROUPS = ("customer", "vendor", "model", "feature")
GRANULARITIES = ("day", "month")


# --- settings -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CostPolicy:
    unknown_model_policy: str
    markup_percent: Decimal
    reporting_asset: str
    margin_low_percent: Decimal | None
    alert_window_days: int


def _policy(row: CostSettings | None) -> CostPolicy:
    if row is None:
        return CostPolicy(DEFAULT_POLICY, Decimal(0), "USD", None, DEFAULT_ALERT_WINDOW_DAYS)
    return CostPolicy(
        unknown_model_policy=row.unknown_model_policy,
        markup_percent=Decimal(row.markup_percent),
        reporting_asset=row.reporting_asset,
        margin_low_percent=(
            None if row.margin_low_percent is None else Decimal(row.margin_low_percent)
        ),
        alert_window_days=row.alert_window_days,
    )


async def cost_policy(session: AsyncSession, organization_id: str) -> CostPolicy:
    return _policy(await CostRepository(session, organization_id).settings())


def _percent(value: str, field: str, *, allow_negative: bool) -> Decimal:
    try:
        number = Decimal(value) if isinstance(value, str) and len(value) <= 20 else None
    except InvalidOperation:
        number = None
    if (
        number is None
        or not number.is_finite()
        or "e" in value.lower()
        or (number < 0 and not allow_negative)
        or abs(number) > 10_000
        or -number.as_tuple().exponent > 6  # type: ignore[operator]
    ):
        raise InvalidRequest(
            f'{field} is a decimal string percentage such as "25" or "12.5".',
            code="invalid_percent",
            field=field,
        )
    return number


async def update_settings(
    session: AsyncSession,
    clock: Clock,
    principal: Principal,
    *,
    changes: dict[str, Any],
) -> CostPolicy:
    """Change the fields given; the others keep their value."""
    repository = CostRepository(session, principal.organization_id)
    current = _policy(await repository.settings())
    policy = changes.get("unknown_model_policy", current.unknown_model_policy)
    if policy not in POLICIES:
        raise InvalidRequest(
            'unknown_model_policy is "block" or "record".',
            code="invalid_policy",
            field="unknown_model_policy",
        )
    markup = current.markup_percent
    if "markup_percent" in changes:
        markup = _percent(changes["markup_percent"], "markup_percent", allow_negative=False)
    reporting = current.reporting_asset
    if "reporting_asset" in changes:
        asset = await get_asset(
            session, principal.organization_id, changes["reporting_asset"], field="reporting_asset"
        )
        reporting = asset.code
    threshold = current.margin_low_percent
    if "margin_low_percent" in changes:
        raw = changes["margin_low_percent"]
        threshold = (
            None if raw is None else _percent(raw, "margin_low_percent", allow_negative=True)
        )
    window = changes.get("alert_window_days", current.alert_window_days)
    if type(window) is not int or not 1 <= window <= limits.cost_alert_window_days_max:
        raise InvalidRequest(
            f"alert_window_days is 1 to {limits.cost_alert_window_days_max}.",
            code="invalid_window",
            field="alert_window_days",
        )
    await repository.save_settings(
        CostSettings(
            organization_id=principal.organization_id,
            unknown_model_policy=policy,
            markup_percent=llmcost.decimal_text(markup),
            reporting_asset=reporting,
            margin_low_percent=None if threshold is None else llmcost.decimal_text(threshold),
            alert_window_days=window,
            updated_at=clock.now(),
        )
    )
    return await cost_policy(session, principal.organization_id)


def marked_up_minor(amount_minor: int, markup_percent: Decimal) -> int:
    """vendor cost × (1 + markup/100), rounded half up: the default price of usage."""
    exact = Decimal(amount_minor) * (100 + markup_percent) / 100
    return int(exact.to_integral_value(rounding=ROUND_HALF_UP))


# --- vendors ----------------------------------------------------------------------


def _validate_vendor_code(code: Any, field: str = "code") -> str:
    if (
        not isinstance(code, str)
        or not code
        or len(code) > limits.vendor_code_length_max
        or code != code.strip()
        or not code.isprintable()
    ):
        raise InvalidRequest(
            f"A vendor code has 1 to {limits.vendor_code_length_max} printable characters.",
            code="invalid_vendor_code",
            field=field,
        )
    return code


async def create_vendor(
    session: AsyncSession, clock: Clock, principal: Principal, *, code: str, name: str | None
) -> tuple[Vendor, bool]:
    """Create a vendor, or return the one with this code (and False)."""
    code = _validate_vendor_code(code)
    repository = CostRepository(session, principal.organization_id)
    existing = await repository.vendor_by_code(code)
    if existing is not None:
        return existing, False
    if await repository.count_vendors() >= limits.vendors_per_organization_max:
        raise LimitExceeded(
            f"An organization has at most {limits.vendors_per_organization_max} vendors.",
            code="vendor_limit_reached",
        )
    return await _ensure_vendor(session, clock, principal.organization_id, code, name), True


async def _ensure_vendor(
    session: AsyncSession, clock: Clock, organization_id: str, code: str, name: str | None = None
) -> Vendor:
    repository = CostRepository(session, organization_id)
    vendor = Vendor(
        id=new_id("vnd"),
        organization_id=organization_id,
        code=code,
        name=name,
        created_at=clock.now(),
    )
    if await repository.insert_vendor_if_absent(vendor):
        return vendor
    existing = await repository.vendor_by_code(code)
    assert existing is not None, "a conflicting insert means the code exists"
    return existing


async def get_vendor(session: AsyncSession, principal: Principal, vendor_id: str) -> Vendor:
    repository = CostRepository(session, principal.organization_id)
    vendor = await repository.vendor(vendor_id)
    if vendor is None:
        raise NotFound.of("vendor", field="id")
    return vendor


async def list_vendors(
    session: AsyncSession, principal: Principal, limit: int, starting_after: str | None
) -> list[Vendor]:
    return await CostRepository(session, principal.organization_id).list_vendors(
        limit, starting_after
    )


# --- price tables and overrides --------------------------------------------------

_tables: dict[tuple[str, str], llmcost.PriceTable] = {}


async def import_price_table(
    session: AsyncSession, clock: Clock, text: str, *, effective_from: datetime | None
) -> LlmPriceTable:
    """Store a table document as a new version, in force from `effective_from`
    (default now). A version is never replaced: importing one again is refused."""
    if len(text.encode("utf-8")) > limits.llm_price_table_bytes_max:
        raise LimitExceeded("The price table file is too large.", code="price_table_too_large")
    try:
        table = llmcost.loads_table(text)
    except llmcost.InvalidPriceTable as exc:
        raise InvalidRequest(exc.detail, code="invalid_price_table") from None
    row = LlmPriceTable(
        version=table.version,
        effective_from=effective_from or clock.now(),
        sha256=hashlib.sha256(text.encode("utf-8")).hexdigest(),
        document=text,
        imported_at=clock.now(),
    )
    if table.version == llmcost.bundled_table().version or not await PriceTableRepository(
        session
    ).add(row):
        raise BillfoldError(
            f"Price table version {table.version} exists; versions are never replaced.",
            code="price_table_version_exists",
            status=409,
        )
    return row


@dataclass(frozen=True, slots=True)
class PriceBook:
    """What `price_call` reads for a call, for every call at or before
    `through`: the imported table versions and the organization's overrides
    started by then, newest first. An ingest batch reads it once for all its
    calls, where each call would read it again."""

    through: datetime
    versions: list[tuple[datetime, str, str]]
    overrides: list[LlmPriceOverride]

    @classmethod
    async def load(
        cls, session: AsyncSession, organization_id: str, through: datetime
    ) -> PriceBook:
        return cls(
            through,
            await PriceTableRepository(session).versions_through(through),
            await CostRepository(session, organization_id).all_overrides_in_force(through),
        )

    def covers(self, at: datetime) -> bool:
        return at <= self.through


async def table_at(
    session: AsyncSession, at: datetime, book: PriceBook | None = None
) -> llmcost.PriceTable:
    """The list-price table in force at `at`: the newest imported version
    started by then, else the bundled snapshot."""
    repository = PriceTableRepository(session)
    if book is not None and book.covers(at):
        found = next(((v, sha) for start, v, sha in book.versions if start <= at), None)
    else:
        found = await repository.version_at(at)
    if found is None:
        return llmcost.bundled_table()
    cached = _tables.get(found)
    if cached is None:
        document = await repository.document(found[0])
        assert document is not None
        cached = llmcost.loads_table(document)
        _tables[found] = cached
    return cached


def _override_of(row: LlmPriceOverride) -> llmcost.PriceOverride:
    rates = llmcost.parse_rates(values.loads(row.rates), "rates")
    multiplier = None if row.multiplier is None else Decimal(row.multiplier)
    return llmcost.PriceOverride(rates=rates, multiplier=multiplier, id=row.id)


async def override_for(
    session: AsyncSession,
    organization_id: str,
    provider: str,
    model: str,
    at: datetime,
    book: PriceBook | None = None,
) -> llmcost.PriceOverride | None:
    """The newest override for this exact model, else for all the provider's models."""
    if book is not None and book.covers(at):
        rows = [r for r in book.overrides if r.provider == provider and r.effective_from <= at]
    else:
        rows = await CostRepository(session, organization_id).overrides_in_force(provider, at)
    model = model.lower()
    for row in rows:
        if row.model is not None and row.model.lower() == model:
            return _override_of(row)
    for row in rows:
        if row.model is None:
            return _override_of(row)
    return None


async def create_override(
    session: AsyncSession,
    clock: Clock,
    principal: Principal,
    *,
    provider: str,
    model: str | None,
    rates: dict[str, Any] | None,
    multiplier: str | None,
    effective_from: str | None,
) -> LlmPriceOverride:
    if provider not in llmcost.APIS:
        raise InvalidRequest(
            f"provider is one of {', '.join(llmcost.APIS)}.",
            code="unknown_provider",
            field="provider",
        )
    if model is not None and not 1 <= len(model) <= limits.llm_model_length_max:
        raise InvalidRequest("model names one model.", code="invalid_model", field="model")
    try:
        parsed = llmcost.parse_rates(rates or {}, "rates")
    except llmcost.InvalidPriceTable as exc:
        raise InvalidRequest(exc.detail, code="invalid_rates", field="rates") from None
    factor = None
    if multiplier is not None:
        factor = _percent(multiplier, "multiplier", allow_negative=False)
    if not parsed and factor is None:
        raise InvalidRequest(
            "An override gives rates, a multiplier, or both.",
            code="invalid_override",
            field="rates",
        )
    repository = CostRepository(session, principal.organization_id)
    if await repository.count_overrides() >= limits.llm_price_overrides_per_organization_max:
        raise LimitExceeded(
            "An organization has at most "
            f"{limits.llm_price_overrides_per_organization_max} price overrides.",
            code="override_limit_reached",
        )
    row = LlmPriceOverride(
        id=new_id("lpo"),
        organization_id=principal.organization_id,
        provider=provider,
        model=model,
        rates=values.canonical_json(llmcost.rates_json(parsed)),
        multiplier=None if factor is None else llmcost.decimal_text(factor),
        effective_from=(
            clock.now()
            if effective_from is None
            else parse_instant(effective_from, field="effective_from")
        ),
        created_at=clock.now(),
    )
    await repository.add_override(row)
    return row


async def list_overrides(
    session: AsyncSession, principal: Principal, limit: int, starting_after: str | None
) -> list[LlmPriceOverride]:
    return await CostRepository(session, principal.organization_id).list_overrides(
        limit, starting_after
    )


# --- LLM cost ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LlmCall:
    provider: str
    api: str | None
    model: str
    usage: Any
    processing: str | None
    service_tier: str | None


def parse_llm(llm: Any, field: str = "llm") -> LlmCall:
    """`{provider, api?, model, usage, processing?, service_tier?}`; raises `InvalidRequest`."""
    if not isinstance(llm, dict):
        raise InvalidRequest(f"{field} is an object.", code="invalid_llm", field=field)
    extra = set(llm) - {"provider", "api", "model", "usage", "processing", "service_tier"}
    if extra:
        raise InvalidRequest(
            f"{field}.{sorted(extra)[0]} is not a field of an LLM call.",
            code="invalid_llm",
            field=f"{field}.{sorted(extra)[0]}",
        )
    for name, required in (
        ("provider", True),
        ("model", True),
        ("api", False),
        ("processing", False),
        ("service_tier", False),
    ):
        value = llm.get(name)
        if (value is None and required) or (
            value is not None
            and (not isinstance(value, str) or not 1 <= len(value) <= limits.llm_model_length_max)
        ):
            raise InvalidRequest(
                f"{field}.{name} is a string.", code="invalid_llm", field=f"{field}.{name}"
            )
    if llm.get("processing") not in (None, *llmcost.PROCESSING):
        raise InvalidRequest(
            f'{field}.processing is "sync" or "batch".',
            code="invalid_llm",
            field=f"{field}.processing",
        )
    if "usage" not in llm:
        raise InvalidRequest(
            f"{field}.usage is the provider's usage object.",
            code="invalid_usage",
            field=f"{field}.usage",
        )
    return LlmCall(
        provider=llm["provider"].lower(),
        api=llm.get("api"),
        model=llm["model"],
        usage=llm["usage"],
        processing=llm.get("processing"),
        service_tier=llm.get("service_tier"),
    )


async def price_call(
    session: AsyncSession,
    organization_id: str,
    call: LlmCall,
    at: datetime,
    book: PriceBook | None = None,
) -> llmcost.Priced:
    """The vendor cost of one call at the organization's prices (read from
    `book` when it covers `at`); raises `llmcost` errors."""
    table = await table_at(session, at, book)
    override = await override_for(session, organization_id, call.provider, call.model, at, book)
    return llmcost.price_usage(
        table,
        call.provider,
        call.model,
        call.usage,
        at=at,
        api=call.api,
        processing=call.processing,
        service_tier=call.service_tier,
        override=override,
    )


def _http_error(exc: llmcost.LlmCostError, prefix: str) -> BillfoldError:
    field = exc.field
    if field is not None and prefix:
        field = f"{prefix}.{field}"
    if isinstance(exc, llmcost.UnknownModel):
        return BillfoldError(exc.detail, code="unknown_model", field=field, status=422)
    return InvalidRequest(exc.detail, code=exc.code, field=field)


async def llm_cost(
    session: AsyncSession, clock: Clock, principal: Principal, llm: Any
) -> llmcost.Priced:
    """`POST /v1/llm/cost`: price a call now; an unknown model is a 422 `unknown_model`."""
    call = parse_llm(llm, field="body")
    try:
        return await price_call(session, principal.organization_id, call, clock.now())
    except llmcost.LlmCostError as exc:
        raise _http_error(exc, "") from None


def priced_json(priced: llmcost.Priced, asset: AssetInfo) -> dict[str, Any]:
    return {
        "cost": {
            "amount": format_amount(asset, priced.amount_minor(asset.scale)),
            "asset": asset.code,
        },
        "breakdown": [line.to_json() for line in priced.lines],
        "price_table_version": priced.price_table_version,
        "provider": priced.provider,
        "model": priced.model,
        "priced_as": priced.model_id,
        "processing": priced.processing,
        "service_tier": priced.service_tier,
        "override_id": priced.override_id,
    }


@dataclass(frozen=True, slots=True)
class VendorCost:
    amount_minor: int
    asset: str
    price_table_version: str


@dataclass(frozen=True, slots=True)
class Unpriced:
    """No vendor cost: `reason` is `unknown_model` or `invalid_usage`;
    `policy` says what to do (`block`: decline an authorization by estimate)."""

    reason: str
    detail: str
    policy: str


async def vendor_cost_of(
    session: AsyncSession,
    organization_id: str,
    llm: dict[str, Any],
    at: datetime | None = None,
    settings: CostPolicy | None = None,
    book: PriceBook | None = None,
) -> VendorCost | Unpriced:
    """The vendor cost of `data.llm` in USD minor units, with the organization's
    overrides (from `book` when it covers `at`), at `at` (default now, for an
    estimate); unpriced, under its `settings` (read only then, when not
    given). Never raises for bad data."""
    at = at or datetime.now(UTC)
    try:
        call = parse_llm(llm)
        priced = await price_call(session, organization_id, call, at, book)
    except (InvalidRequest, llmcost.LlmCostError) as exc:
        settings = settings or await cost_policy(session, organization_id)
        reason = "unknown_model" if isinstance(exc, llmcost.UnknownModel) else "invalid_usage"
        return Unpriced(reason, exc.detail, settings.unknown_model_policy)
    usd = await get_asset(session, organization_id, priced.currency)
    return VendorCost(priced.amount_minor(usd.scale), usd.code, priced.price_table_version)


# --- event costs -----------------------------------------------------------------------


async def _convert(
    session: AsyncSession,
    organization_id: str,
    amount_minor: int,
    source: AssetInfo,
    target: AssetInfo,
    at: datetime,
) -> tuple[int, str | None] | None:
    """`amount_minor` of `source` in `target` at the rate in force at `at`
    (published either way round), rounded half up; None without a rate."""
    if source.code == target.code:
        return amount_minor, None
    shift = Decimal(10) ** (target.scale - source.scale)
    try:
        quote = await rate_at(session, organization_id, source.code, target.code, at)
        exact = Decimal(amount_minor) * quote.rate * shift
    except NotFound:
        try:
            quote = await rate_at(session, organization_id, target.code, source.code, at)
        except NotFound:
            return None
        exact = Decimal(amount_minor) * shift / quote.rate
    return int(exact.to_integral_value(rounding=ROUND_HALF_UP)), quote.rate_id


def _cost_json(
    row: EventCost, reporting: AssetInfo, assets: dict[str, AssetInfo], duplicate: bool = False
) -> dict[str, Any]:
    view: dict[str, Any] = {
        "id": row.cost_key[3:] if row.cost_key.startswith("id:") else None,
        "vendor": row.vendor_code,
        "category": row.category,
        "source": row.source,
        "status": row.status,
        "amount": None if row.amount_minor is None else format_amount(reporting, row.amount_minor),
        "asset": row.asset_code,
    }
    if row.detail:
        view["detail"] = row.detail
    if row.original_asset_code is not None and row.original_asset_code != row.asset_code:
        original = assets[row.original_asset_code]
        assert row.original_amount_minor is not None
        view["original"] = {
            "amount": format_amount(original, row.original_amount_minor),
            "asset": original.code,
        }
    if row.source == "llm":
        view["model"] = row.model
        view["price_table_version"] = row.price_table_version
        view["breakdown"] = None if row.breakdown is None else values.loads(row.breakdown)
    if duplicate:
        view["duplicate"] = True
    return view


@dataclass(slots=True)
class _Recorder:
    session: AsyncSession
    clock: Clock
    organization_id: str
    policy: CostPolicy
    reporting: AssetInfo
    book: PriceBook | None = None
    vendors: dict[str, Vendor] = field(default_factory=dict)

    async def vendor(self, code: str) -> Vendor:
        vendor = self.vendors.get(code)
        if vendor is None:
            vendor = await _ensure_vendor(self.session, self.clock, self.organization_id, code)
            self.vendors[code] = vendor
        return vendor

    def row(self, event: AcceptedEvent, cost_key: str, **fields: Any) -> EventCost:
        return EventCost(
            id=new_id("ecost"),
            organization_id=self.organization_id,
            cost_key=cost_key,
            event_id=event.id,
            event_type=event.type,
            customer_id=event.customer_id,
            event_timestamp=event.timestamp,
            asset_code=self.reporting.code,
            created_at=self.clock.now(),
            **fields,
        )

    async def explicit(self, event: AcceptedEvent, index: int, cost: dict[str, Any]) -> EventCost:
        key = f"id:{cost['id']}" if cost.get("id") else f"ev:{event.id}#{index}"
        vendor = await self.vendor(_validate_vendor_code(cost["vendor"], "vendor"))
        base = {
            "vendor_id": vendor.id,
            "vendor_code": vendor.code,
            "category": cost.get("category"),
            "source": "explicit",
        }
        try:
            asset = await get_asset(self.session, self.organization_id, cost["asset"])
            original = parse_amount(asset, cost["amount"], allow_zero=True)
        except BillfoldError as exc:
            return self.row(event, key, status="invalid_cost", detail=exc.detail, **base)
        converted = await _convert(
            self.session, self.organization_id, original, asset, self.reporting, event.timestamp
        )
        if converted is None:
            return self.row(
                event,
                key,
                status="no_rate",
                detail=f"No rate for {asset.code} in {self.reporting.code} at the event's time.",
                original_amount_minor=original,
                original_asset_code=asset.code,
                **base,
            )
        return self.row(
            event,
            key,
            status="ok",
            amount_minor=converted[0],
            rate_id=converted[1],
            original_amount_minor=original,
            original_asset_code=asset.code,
            **base,
        )

    async def llm(self, event: AcceptedEvent, raw: Any) -> EventCost:
        key = f"ev:{event.id}#llm"
        provider = raw.get("provider") if isinstance(raw, dict) else None
        vendor_code = provider.lower() if isinstance(provider, str) and provider else "unknown"
        vendor = await self.vendor(vendor_code[: limits.vendor_code_length_max])
        model = raw.get("model") if isinstance(raw, dict) else None
        base: dict[str, Any] = {
            "vendor_id": vendor.id,
            "vendor_code": vendor.code,
            "category": LLM_VENDOR_CATEGORY,
            "source": "llm",
            "provider": vendor_code[:40],
            "model": model[: limits.llm_model_length_max] if isinstance(model, str) else None,
            "raw_usage": (
                values.canonical_json(raw.get("usage")) if isinstance(raw, dict) else None
            ),
        }
        try:
            call = parse_llm(raw, field="data.llm")
            priced = await price_call(
                self.session, self.organization_id, call, event.timestamp, self.book
            )
        except InvalidRequest as exc:
            return self.row(event, key, status="invalid_usage", detail=exc.detail, **base)
        except llmcost.UnknownModel as exc:
            detail = f"{exc.detail} Policy: {self.policy.unknown_model_policy}."
            return self.row(event, key, status="unknown_model", detail=detail, **base)
        except llmcost.LlmCostError as exc:
            return self.row(event, key, status="invalid_usage", detail=exc.detail, **base)
        usd = await get_asset(self.session, self.organization_id, priced.currency)
        usd_minor = priced.amount_minor(usd.scale)
        converted = await _convert(
            self.session, self.organization_id, usd_minor, usd, self.reporting, event.timestamp
        )
        priced_fields = {
            "price_table_version": priced.price_table_version,
            "override_id": priced.override_id,
            "breakdown": values.canonical_json([line.to_json() for line in priced.lines]),
            "original_amount_minor": usd_minor,
            "original_asset_code": usd.code,
        }
        if converted is None:
            return self.row(
                event,
                key,
                status="no_rate",
                detail=f"No rate for USD in {self.reporting.code} at the event's time.",
                **base,
                **priced_fields,
            )
        return self.row(
            event,
            key,
            status="ok",
            amount_minor=converted[0],
            rate_id=converted[1],
            **base,
            **priced_fields,
        )


async def record_event_costs(
    session: AsyncSession,
    clock: Clock,
    organization_id: str,
    events: Sequence[AcceptedEvent],
) -> dict[str, list[dict[str, Any]]]:
    """Store the costs of accepted events and answer, per event id that has
    any, the costs as the ingest answer shows them.

    Runs inside the ingest transaction and never raises for an event's data:
    a cost that cannot be valued is stored flagged, with a null amount. A
    cost id seen before (on any event) is not stored again; the answer shows
    the stored cost marked `duplicate`.
    """
    relevant = [event for event in events if event.costs or isinstance(event.data.get("llm"), dict)]
    if not relevant:
        return {}
    policy = await cost_policy(session, organization_id)
    reporting = await get_asset(session, organization_id, policy.reporting_asset)
    book = None
    if any(isinstance(event.data.get("llm"), dict) for event in relevant):
        book = await PriceBook.load(
            session, organization_id, max(event.timestamp for event in relevant)
        )
    recorder = _Recorder(session, clock, organization_id, policy, reporting, book)
    repository = CostRepository(session, organization_id)
    costed: list[tuple[str, list[EventCost]]] = []
    for event in relevant:
        rows: list[EventCost] = []
        for index, cost in enumerate(event.costs or ()):
            rows.append(await recorder.explicit(event, index, cost))
        if isinstance(event.data.get("llm"), dict):
            rows.append(await recorder.llm(event, event.data["llm"]))
        costed.append((event.id, rows))
    stored = await repository.insert_costs_if_absent([row for _, rows in costed for row in rows])
    answers: dict[str, list[dict[str, Any]]] = {}
    for event_id, rows in costed:
        shown = []
        for row in rows:
            kept = stored[row.cost_key]
            assets = await _assets_of(session, organization_id, [kept])
            shown.append(_cost_json(kept, reporting, assets, duplicate=kept is not row))
        answers[event_id] = shown
    return answers


async def costs_of_event(
    session: AsyncSession, principal: Principal, event_id: str
) -> list[dict[str, Any]]:
    known = await EventRepository(session, principal.organization_id).fingerprints([event_id])
    if event_id not in known:
        # Another organization's event is not found, exactly like a missing one.
        raise NotFound.of("event", field="event_id")
    policy = await cost_policy(session, principal.organization_id)
    reporting = await get_asset(session, principal.organization_id, policy.reporting_asset)
    rows = await CostRepository(session, principal.organization_id).costs_of_event(event_id)
    assets = await _assets_of(session, principal.organization_id, rows)
    return [_cost_json(row, reporting, assets) for row in rows]


async def _assets_of(
    session: AsyncSession, organization_id: str, rows: Sequence[EventCost]
) -> dict[str, AssetInfo]:
    codes = {row.original_asset_code for row in rows if row.original_asset_code is not None}
    return {code: await get_asset(session, organization_id, code) for code in sorted(codes)}


# --- margins ---------------------------------------------------------------------------


@dataclass(slots=True)
class Tally:
    cost_minor: int = 0
    revenue_minor: int = 0
    unpriced_costs: int = 0
    other_assets: dict[str, int] = field(default_factory=dict)

    def add(self, row: MoneyRow, reporting: str) -> None:
        if row.amount_minor is None:
            self.unpriced_costs += 1
        elif row.asset_code != reporting:
            # Revenue in another asset (custom credits) is listed, not converted.
            self.other_assets[row.asset_code] = (
                self.other_assets.get(row.asset_code, 0) + row.amount_minor
            )
        elif row.kind == "cost":
            self.cost_minor += row.amount_minor
        else:
            self.revenue_minor += row.amount_minor


def margin_percent(revenue_minor: int, cost_minor: int) -> Decimal | None:
    """(revenue − cost) / revenue × 100, to 2 decimals half up; None without revenue."""
    if revenue_minor <= 0:
        return None
    exact = Decimal(revenue_minor - cost_minor) * 100 / Decimal(revenue_minor)
    return exact.quantize(Decimal("0.01"), rounding=ROUND_HALF_UP)


def tally_json(tally: Tally, asset: AssetInfo) -> dict[str, Any]:
    margin = margin_percent(tally.revenue_minor, tally.cost_minor)
    return {
        "revenue": {"amount": format_amount(asset, tally.revenue_minor), "asset": asset.code},
        "cost": {"amount": format_amount(asset, tally.cost_minor), "asset": asset.code},
        "net": {
            "amount": format_amount(asset, tally.revenue_minor - tally.cost_minor),
            "asset": asset.code,
        },
        "margin_percent": None if margin is None else str(margin),
        "unpriced_costs": tally.unpriced_costs,
        "other_assets": [
            {"asset": code, "amount_minor": amount}
            for code, amount in sorted(tally.other_assets.items())
        ],
    }


def _range(start: str, end: str) -> tuple[datetime, datetime]:
    begin = parse_instant(start, field="from")
    finish = parse_instant(end, field="to")
    if finish <= begin:
        raise InvalidRequest("to is after from.", code="invalid_range", field="to")
    return begin, finish


async def _rows(
    session: AsyncSession,
    organization_id: str,
    begin: datetime,
    finish: datetime,
    *,
    customer_id: str | None,
    with_data: bool,
) -> list[MoneyRow]:
    rows = await CostRepository(session, organization_id).money_rows(
        begin,
        finish,
        customer_id=customer_id,
        with_data=with_data,
        row_limit=limits.profitability_rows_max,
    )
    if len(rows) > limits.profitability_rows_max:
        raise LimitExceeded(
            f"More than {limits.profitability_rows_max} costs and fees in this range; "
            "ask for a shorter one.",
            code="range_too_large",
            field="from",
        )
    return rows


async def customer_profitability(
    session: AsyncSession, principal: Principal, customer_ref: str, start: str, end: str
) -> dict[str, Any]:
    organization_id = principal.organization_id
    customer = await resolve_customer(session, organization_id, customer_ref, field="id")
    begin, finish = _range(start, end)
    policy = await cost_policy(session, organization_id)
    reporting = await get_asset(session, organization_id, policy.reporting_asset)
    tally = Tally()
    for row in await _rows(
        session, organization_id, begin, finish, customer_id=customer.id, with_data=False
    ):
        tally.add(row, reporting.code)
    return {
        "customer_id": customer.id,
        "from": begin,
        "to": finish,
        **tally_json(tally, reporting),
        "revenue_sources": ["real_time_fees", "captured_authorizations"],
        "invoiced_revenue_included": False,
    }


def _data_value(row: MoneyRow, path: tuple[str, ...]) -> str | None:
    if row.data_text is None:
        return None
    value = values.value_at(values.loads(row.data_text), path)
    if value is None or isinstance(value, dict | list):
        return None
    return values.text_of(value)


def _grouper(group_by: str) -> tuple[Callable[[MoneyRow], str | None], bool]:
    """The group key of a row, and whether it needs the event's data."""
    if group_by == "customer":
        return (lambda row: row.customer_id), False
    if group_by == "vendor":
        return (lambda row: row.vendor_code), False
    if group_by == "feature":
        return (lambda row: row.event_type), False
    if group_by == "model":
        model_path = ("llm", "model")
        return (lambda row: row.model or _data_value(row, model_path)), True
    path = values.parse_path(group_by.removeprefix("data."))
    if path is None:
        raise InvalidRequest(
            f"group_by is one of {', '.join(GROUPS)}, or a data key such as "
            '"session_id" or "data.agent.task".',
            code="invalid_group_by",
            field="group_by",
        )
    key_path = path
    return (lambda row: _data_value(row, key_path)), True


def _bucket_start(at: datetime, granularity: str) -> datetime:
    day = at.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    return day.replace(day=1) if granularity == "month" else day


async def analytics_profitability(
    session: AsyncSession,
    principal: Principal,
    *,
    group_by: str,
    start: str,
    end: str,
    granularity: str,
) -> dict[str, Any]:
    """Cost, revenue and margin per group and time bucket, most costly group first.

    Revenue that cannot be attributed to a group (fees under `vendor`, fees of
    events without the data key) is reported under `unattributed`.
    """
    if granularity not in GRANULARITIES:
        raise InvalidRequest(
            'granularity is "day" or "month".', code="invalid_granularity", field="granularity"
        )
    key_of, with_data = _grouper(group_by)
    begin, finish = _range(start, end)
    organization_id = principal.organization_id
    policy = await cost_policy(session, organization_id)
    reporting = await get_asset(session, organization_id, policy.reporting_asset)
    groups: dict[str, Tally] = {}
    buckets: dict[str, dict[datetime, Tally]] = {}
    unattributed = Tally()
    for row in await _rows(
        session, organization_id, begin, finish, customer_id=None, with_data=with_data
    ):
        key = key_of(row)
        if key is None:
            unattributed.add(row, reporting.code)
            continue
        groups.setdefault(key, Tally()).add(row, reporting.code)
        bucket = _bucket_start(row.at, granularity)
        buckets.setdefault(key, {}).setdefault(bucket, Tally()).add(row, reporting.code)
    if len(groups) > limits.profitability_groups_max:
        raise LimitExceeded(
            f"More than {limits.profitability_groups_max} groups; narrow the range or group_by.",
            code="too_many_groups",
            field="group_by",
        )
    ordered = sorted(groups.items(), key=lambda item: (-item[1].cost_minor, item[0]))
    return {
        "group_by": group_by,
        "granularity": granularity,
        "from": begin,
        "to": finish,
        "asset": reporting.code,
        "data": [
            {
                "key": key,
                **tally_json(tally, reporting),
                "buckets": [
                    {"start": start_at, **tally_json(bucket, reporting)}
                    for start_at, bucket in sorted(buckets[key].items())
                ],
            }
            for key, tally in ordered
        ],
        "unattributed": tally_json(unattributed, reporting),
        "invoiced_revenue_included": False,
    }


# --- alerts ------------------------------------------------------------------------


async def evaluate_cost_alerts(session: AsyncSession, clock: Clock, organization_id: str) -> int:
    """Emit `customer.margin_low` and `customer.cost_top_percentile` for
    customers who entered the condition over the rolling window since the
    last evaluation; a customer who leaves it can enter (and alert) again.
    Returns the number of webhooks emitted."""
    policy = await cost_policy(session, organization_id)
    reporting = await get_asset(session, organization_id, policy.reporting_asset)
    now = clock.now()
    begin = now - timedelta(days=policy.alert_window_days)
    per_customer: dict[str, Tally] = {}
    for row in await _rows(session, organization_id, begin, now, customer_id=None, with_data=False):
        per_customer.setdefault(row.customer_id, Tally()).add(row, reporting.code)
    repository = CostRepository(session, organization_id)
    emitted = 0
    low: set[str] = set()
    if policy.margin_low_percent is not None:
        for customer_id, tally in per_customer.items():
            margin = margin_percent(tally.revenue_minor, tally.cost_minor)
            losing = margin is None and tally.cost_minor > 0
            if losing or (margin is not None and margin < policy.margin_low_percent):
                low.add(customer_id)
    costly = sorted(
        (item for item in per_customer.items() if item[1].cost_minor > 0),
        key=lambda item: (-item[1].cost_minor, item[0]),
    )
    top_count = math.ceil(len(costly) * TOP_PERCENTILE / 100)
    top = {customer_id for customer_id, _ in costly[:top_count]}
    for topic, inside in (
        (topics.CUSTOMER_MARGIN_LOW, low),
        (topics.CUSTOMER_COST_TOP_PERCENTILE, top),
    ):
        active = await repository.active_alerts(topic)
        for customer_id in sorted(inside - active):
            tally = per_customer[customer_id]
            await emit(
                session,
                clock,
                organization_id,
                topic,
                {
                    "customer_id": customer_id,
                    "window_days": policy.alert_window_days,
                    "threshold_percent": (
                        None
                        if topic != topics.CUSTOMER_MARGIN_LOW or policy.margin_low_percent is None
                        else llmcost.decimal_text(policy.margin_low_percent)
                    ),
                    "top_percent": TOP_PERCENTILE,
                    **tally_json(tally, reporting),
                },
            )
            await repository.set_alert(customer_id, topic, True, now)
            emitted += 1
        for customer_id in sorted(active - inside):
            await repository.set_alert(customer_id, topic, False, now)
    return emitted


async def evaluate_all_cost_alerts(sessions: async_sessionmaker[AsyncSession], clock: Clock) -> int:
    """The worker's pass: every organization with cost settings, one transaction each."""
    async with sessions() as session:
        organization_ids = [
            row.organization_id for row in await CostRepository(session, "").all_settings()
        ]
    emitted = 0
    for organization_id in organization_ids:
        async with sessions() as session:
            emitted += await evaluate_cost_alerts(session, clock, organization_id)
            await session.commit()
    return emitted
