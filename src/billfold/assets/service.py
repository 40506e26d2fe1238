"""Assets, exchange rates and quotes.

ISO currencies are built in; each organization adds its own assets. A rate
says what one unit of an asset costs in a base asset from an instant on, and
a quote answers how much of the asset an amount of the base buys at any
instant, rounded down so a buyer never gets more than was paid for.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal

from sqlalchemy.ext.asyncio import AsyncSession

from billfold import limits
from billfold.assets.amounts import (
    AssetInfo,
    convert_base_to_asset,
    format_amount,
    parse_amount,
    parse_rate,
    rate_string,
)
from billfold.assets.builtin import BUILTIN_ASSETS
from billfold.assets.models import Asset, ExchangeRate
from billfold.assets.repository import AssetRepository
from billfold.clock import Clock
from billfold.errors import Conflict, InvalidRequest, LimitExceeded, NotFound
from billfold.ids import new_id
from billfold.organizations.service import Principal

__all__ = [
    "AssetInfo",
    "Quote",
    "RateQuote",
    "convert_base_to_asset",
    "create_asset",
    "create_rate",
    "describe_asset",
    "format_amount",
    "get_asset",
    "list_assets",
    "list_rates",
    "parse_amount",
    "parse_instant",
    "quote",
    "rate_at",
]

ASSET_CODE_RE = re.compile(r"[A-Z][A-Z0-9_]{1,19}")
# RFC 3339 with a mandatory offset; up to nanoseconds, kept to microseconds.
_INSTANT_RE = re.compile(
    r"([0-9]{4}-[0-9]{2}-[0-9]{2})[Tt ]([0-9]{2}:[0-9]{2}:[0-9]{2})(?:\.([0-9]{1,9}))?"
    r"([Zz]|[+-][0-9]{2}:[0-9]{2})"
)


@dataclass(frozen=True, slots=True)
class RateQuote:
    """The rate version in force at an instant: 1 `asset` costs `rate` `base`."""

    rate_id: str
    asset: str
    base: str
    rate: Decimal
    valid_from: datetime


@dataclass(frozen=True, slots=True)
class Quote:
    asset: AssetInfo
    base: AssetInfo
    amount_minor: int
    quantity_minor: int
    rate: RateQuote
    at: datetime


def parse_instant(value: str, *, field: str) -> datetime:
    """An RFC 3339 timestamp with an explicit offset, as an aware UTC datetime."""
    too_long = len(value) > limits.timestamp_string_length_max
    match = None if too_long else _INSTANT_RE.fullmatch(value)
    if match is not None:
        date, time, fraction, offset = match.groups()
        micros = f".{fraction[:6]}" if fraction else ""
        offset = "+00:00" if offset in ("Z", "z") else offset
        try:
            return datetime.fromisoformat(f"{date}T{time}{micros}{offset}").astimezone(UTC)
        except ValueError:
            pass
    raise InvalidRequest(
        f'{field} must be an RFC 3339 timestamp with an offset, such as "2025-01-31T12:00:00Z".',
        code="invalid_timestamp",
        field=field,
    )


def _info(asset: Asset) -> AssetInfo:
    return AssetInfo(
        code=asset.code,
        name=asset.name,
        scale=asset.scale,
        kind=asset.kind,
        symbol=asset.symbol,
        display_exponent=None,
    )


async def get_asset(
    session: AsyncSession, organization_id: str, code: str, *, field: str = "asset"
) -> AssetInfo:
    """A built-in currency or one of the organization's own assets.

    Another organization's asset is not found, exactly like a missing one.
    """
    builtin = BUILTIN_ASSETS.get(code)
    if builtin is not None:
        return builtin
    if isinstance(code, str) and ASSET_CODE_RE.fullmatch(code):
        asset = await AssetRepository(session, organization_id).get_asset(code)
        if asset is not None:
            return _info(asset)
    raise NotFound.of("asset", field=field)


def _validate_new_asset(
    code: str, name: str, scale: int, kind: str | None, symbol: str | None
) -> tuple[str, str | None]:
    if not ASSET_CODE_RE.fullmatch(code):
        raise InvalidRequest(
            "An asset code is 2 to 20 characters: an uppercase letter, then uppercase "
            'letters, digits or "_" (TOKENS, GPU_HOURS).',
            code="invalid_asset_code",
            field="code",
        )
    name = name.strip()
    if not name:
        raise InvalidRequest("An asset needs a name.", code="invalid_name", field="name")
    if not 0 <= scale <= limits.asset_scale_max:
        raise InvalidRequest(
            f"scale is the number of decimals stored, 0 to {limits.asset_scale_max}.",
            code="invalid_scale",
            field="scale",
        )
    if kind not in (None, "custom"):
        raise InvalidRequest(
            'Assets you create have kind "custom"; ISO currencies ("fiat") are built in.',
            code="invalid_kind",
            field="kind",
        )
    if symbol is not None:
        symbol = symbol.strip() or None
    return name, symbol


async def create_asset(
    session: AsyncSession,
    clock: Clock,
    principal: Principal,
    *,
    code: str,
    name: str,
    scale: int,
    kind: str | None,
    symbol: str | None,
) -> Asset:
    name, symbol = _validate_new_asset(code, name, scale, kind, symbol)
    if code in BUILTIN_ASSETS:
        raise Conflict(f"{code} is a built-in currency.", code="asset_code_taken", field="code")
    repository = AssetRepository(session, principal.organization_id)
    if await repository.count_assets() >= limits.custom_assets_per_organization_max:
        raise LimitExceeded(
            f"An organization may have at most {limits.custom_assets_per_organization_max} "
            "custom assets.",
            code="asset_limit_reached",
        )
    asset = Asset(
        organization_id=principal.organization_id,
        code=code,
        name=name,
        scale=scale,
        kind="custom",
        symbol=symbol,
        created_at=clock.now(),
    )
    if not await repository.add_asset(asset):
        raise Conflict(
            f"This organization already has an asset {code}.",
            code="asset_code_taken",
            field="code",
        )
    return asset


async def describe_asset(
    session: AsyncSession, principal: Principal, code: str
) -> AssetInfo | Asset:
    """A built-in currency, or the row of a custom asset (which knows its `created_at`)."""
    builtin = BUILTIN_ASSETS.get(code)
    if builtin is not None:
        return builtin
    asset = None
    if ASSET_CODE_RE.fullmatch(code):
        asset = await AssetRepository(session, principal.organization_id).get_asset(code)
    if asset is None:
        raise NotFound.of("asset", field="code")
    return asset


async def list_assets(
    session: AsyncSession, principal: Principal, limit: int, starting_after: str | None
) -> list[AssetInfo | Asset]:
    """Built-in currencies and the organization's own assets, in code order."""
    custom = await AssetRepository(session, principal.organization_id).list_assets(
        limit, starting_after
    )
    builtin = [
        info
        for code, info in BUILTIN_ASSETS.items()
        if starting_after is None or code > starting_after
    ]
    merged: list[AssetInfo | Asset] = [*builtin, *custom]
    merged.sort(key=lambda item: item.code)
    return merged[:limit]


async def create_rate(
    session: AsyncSession,
    clock: Clock,
    principal: Principal,
    asset_code: str,
    *,
    base_code: str,
    rate: str,
    valid_from: str | None,
) -> ExchangeRate:
    """Publish a rate version: 1 `asset_code` costs `rate` `base_code` from `valid_from` on."""
    organization_id = principal.organization_id
    asset = await get_asset(session, organization_id, asset_code, field="code")
    base = await get_asset(session, organization_id, base_code, field="base")
    if base.code == asset.code:
        raise InvalidRequest(
            "A rate prices an asset in another asset.", code="invalid_base", field="base"
        )
    exact = parse_rate(rate, field="rate")
    start = clock.now() if valid_from is None else parse_instant(valid_from, field="valid_from")
    repository = AssetRepository(session, organization_id)
    if await repository.count_rates(asset.code, base.code) >= limits.exchange_rates_per_pair_max:
        raise LimitExceeded(
            f"A pair of assets may have at most {limits.exchange_rates_per_pair_max} rates.",
            code="rate_limit_reached",
        )
    row = ExchangeRate(
        id=new_id("rate"),
        organization_id=organization_id,
        asset_code=asset.code,
        base_code=base.code,
        rate=rate_string(exact),
        valid_from=start,
        created_at=clock.now(),
    )
    if not await repository.add_rate(row):
        raise Conflict(
            f"A rate for {asset.code} in {base.code} already starts at that instant; "
            "rates are never edited, publish a new one from a later instant.",
            code="rate_exists",
            field="valid_from",
        )
    return row


async def list_rates(
    session: AsyncSession,
    principal: Principal,
    asset_code: str,
    *,
    base_code: str | None,
    limit: int,
    starting_after: str | None,
) -> list[ExchangeRate]:
    organization_id = principal.organization_id
    asset = await get_asset(session, organization_id, asset_code, field="code")
    if base_code is not None:
        base_code = (await get_asset(session, organization_id, base_code, field="base")).code
    return await AssetRepository(session, organization_id).list_rates(
        asset.code, base_code, limit, starting_after
    )


async def rate_at(
    session: AsyncSession, organization_id: str, asset_code: str, base_code: str, at: datetime
) -> RateQuote:
    """The rate in force at `at` for 1 `asset_code` in `base_code`.

    Rates are directional: only rates published for this asset in this base
    count, never the inverse of one published the other way round.
    """
    assert at.tzinfo is not None, "instants are timezone-aware"
    row = await AssetRepository(session, organization_id).rate_at(asset_code, base_code, at)
    if row is None:
        raise NotFound(
            f"No rate for {asset_code} in {base_code} is in force at that instant.",
            code="rate_not_found",
        )
    return RateQuote(
        rate_id=row.id,
        asset=row.asset_code,
        base=row.base_code,
        rate=Decimal(row.rate),
        valid_from=row.valid_from,
    )


async def quote(
    session: AsyncSession,
    clock: Clock,
    principal: Principal,
    asset_code: str,
    *,
    base_code: str,
    amount: str,
    at: str | None,
) -> Quote:
    """How much of `asset_code` `amount` of `base_code` buys at `at` (default now)."""
    organization_id = principal.organization_id
    asset = await get_asset(session, organization_id, asset_code, field="code")
    base = await get_asset(session, organization_id, base_code, field="base")
    if base.code == asset.code:
        raise InvalidRequest(
            "A quote converts between two different assets.", code="invalid_base", field="base"
        )
    amount_minor = parse_amount(base, amount, field="amount")
    instant = clock.now() if at is None else parse_instant(at, field="at")
    rate = await rate_at(session, organization_id, asset.code, base.code, instant)
    quantity_minor = convert_base_to_asset(rate.rate, base, amount_minor, asset)
    if quantity_minor > limits.amount_minor_max:
        raise InvalidRequest(
            f"That amount buys more {asset.code} than Billfold can hold in one amount.",
            code="invalid_amount",
            field="amount",
        )
    return Quote(
        asset=asset,
        base=base,
        amount_minor=amount_minor,
        quantity_minor=quantity_minor,
        rate=rate,
        at=instant,
    )


def quote_text(q: Quote) -> tuple[str, str, str]:
    """The amount, quantity and rate of a quote as the API shows them."""
    return (
        format_amount(q.base, q.amount_minor),
        format_amount(q.asset, q.quantity_minor),
        rate_string(q.rate.rate),
    )
