"""A product version's definition: its prices and features, validated and made canonical.

What is stored is what this module returns: every amount a decimal string
in the asset's terms, every default written out, so a version reads back
exactly as it will be rated. Every refusal names its field
(`prices.1.tiers.0.up_to`, `features.0.limit`).

Prices (API.md, "Prices"):

- `usage`: `{code, type, meter, asset, billing, model, ...}`; `billing` is
  `real_time` (each event debited as it is ingested) or `in_arrears` (on the
  period's invoice); the rating fields are `billfold.rating`'s. `volume` is
  refused with `real_time` (`real_time_volume_unsupported`): a period total
  that moves into a cheaper tier would charge an event a negative fee, a
  credit to the wallet that real-time billing has no way to give (Lago
  refuses pay-in-advance volume charges for the same reason).
- `fixed`: `{code, type, asset, amount, billing?, interval?}`; billing
  `in_advance` (default) or `in_arrears`; interval `month` (default),
  `week`, `quarter`, `year` or `one_time`.
- `credits`: `{code, type, asset, amount, refresh, rollover_cap?}`; the
  amount of `asset` granted each period, `refresh` `expire_and_replace` or
  `rollover` (then `rollover_cap` bounds what carries over). Stored and
  validated only: issuing the grants belongs to invoicing.

Features: `{code, type, limit?, meter?, period?, enforcement?}`; `boolean`
(no other fields), `numeric` (`limit`, null for unlimited; `enforcement`)
and `metered` (`meter`, `limit` per `period`: `day`, `month` (default) or
`year`, UTC calendar; `enforcement`). `enforcement` is `hard` (default: at
the limit there is no access) or `soft` (access stays; the numbers say so).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from billfold import limits
from billfold.assets import AssetInfo, format_amount, get_asset, parse_amount
from billfold.errors import InvalidRequest, NotFound
from billfold.metering.models import Meter
from billfold.metering.repository import MeterRepository
from billfold.rating import RATING_FIELDS, Price, Volume, decimal_text, dump_price, parse_price

CODE_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
PRICE_TYPES = ("usage", "fixed", "credits")
USAGE_BILLINGS = ("real_time", "in_arrears")
FIXED_BILLINGS = ("in_advance", "in_arrears")
FIXED_INTERVALS = ("month", "week", "quarter", "year", "one_time")
CREDIT_REFRESHES = ("expire_and_replace", "rollover")
FEATURE_TYPES = ("boolean", "numeric", "metered")
FEATURE_PERIODS = ("month", "day", "year")
ENFORCEMENTS = ("hard", "soft")

_USAGE_KEYS = frozenset({"code", "type", "meter", "asset", "billing"}) | RATING_FIELDS
_FIXED_KEYS = frozenset({"code", "type", "asset", "amount", "billing", "interval"})
_CREDITS_KEYS = frozenset({"code", "type", "asset", "amount", "refresh", "rollover_cap"})
_FEATURE_KEYS = {
    "boolean": frozenset({"code", "type"}),
    "numeric": frozenset({"code", "type", "limit", "enforcement"}),
    "metered": frozenset({"code", "type", "limit", "meter", "period", "enforcement"}),
}
_NUMBER_RE = re.compile(r"(0|[1-9][0-9]*)(?:\.([0-9]+))?")


def _fail(code: str, field: str, detail: str) -> InvalidRequest:
    return InvalidRequest(detail, code=code, field=field)


def validate_code(value: object, *, field: str, code: str, length_max: int) -> str:
    """A code: 1 to `length_max` letters, digits, "_", "-" or ".", starting
    with a letter or digit (it travels in URLs)."""
    if not isinstance(value, str) or len(value) > length_max or not CODE_RE.fullmatch(value):
        raise _fail(
            code,
            field,
            f'{field} is 1 to {length_max} letters, digits, "_", "-" or ".", '
            "starting with a letter or digit.",
        )
    return value


def _choice(
    raw: Mapping[str, object], key: str, at: str, options: tuple[str, ...], *, code: str
) -> str:
    value = raw.get(key)
    if value is None:
        return options[0]
    if not isinstance(value, str) or value not in options:
        raise _fail(code, f"{at}.{key}", f"{at}.{key} is one of {', '.join(options)}.")
    return value


def _no_extra(
    raw: Mapping[str, object], allowed: frozenset[str], at: str, what: str, code: str
) -> None:
    for key in raw:
        if key not in allowed:
            raise _fail(
                code, f"{at}.{key}", f"A {what} takes {', '.join(sorted(allowed))}; not {key}."
            )


class MeterLookup:
    """The organization's meter codes, each looked up once per request."""

    def __init__(self, session: AsyncSession, organization_id: str) -> None:
        self._repository = MeterRepository(session, organization_id)
        self._known: dict[str, Meter | None] = {}

    async def require(self, value: object, *, field: str) -> str:
        return (await self.get(value, field=field)).code

    async def get(self, value: object, *, field: str) -> Meter:
        code = validate_code(
            value, field=field, code="invalid_meter_code", length_max=limits.meter_code_length_max
        )
        if code not in self._known:
            self._known[code] = await self._repository.get_by_code(code)
        meter = self._known[code]
        if meter is None:
            raise NotFound.of("meter", field=field)
        return meter


class AssetLookup:
    def __init__(self, session: AsyncSession, organization_id: str) -> None:
        self._session = session
        self._organization_id = organization_id
        self._known: dict[str, AssetInfo] = {}

    async def get(self, value: object, *, field: str) -> AssetInfo:
        if not isinstance(value, str) or not value:
            raise _fail("invalid_price", field, f"{field} is required: an asset code such as USD.")
        if value not in self._known:
            self._known[value] = await get_asset(
                self._session, self._organization_id, value, field=field
            )
        return self._known[value]


# --- prices ------------------------------------------------------------------------


async def _usage(
    raw: Mapping[str, Any], at: str, asset: AssetInfo, meters: MeterLookup
) -> dict[str, Any]:
    _no_extra(raw, _USAGE_KEYS, at, "usage price", "invalid_price")
    billing = raw.get("billing")
    if billing not in USAGE_BILLINGS:
        raise _fail(
            "invalid_billing",
            f"{at}.billing",
            "A usage price's billing is real_time or in_arrears (in_advance is for fixed prices).",
        )
    if raw.get("meter") is None:
        raise _fail("invalid_price", f"{at}.meter", "A usage price names the meter it rates.")
    meter = await meters.get(raw["meter"], field=f"{at}.meter")
    if billing == "real_time" and meter.aggregation not in ("count", "sum", "max"):
        raise _fail(
            "real_time_aggregation_unsupported",
            f"{at}.billing",
            f"Meter {meter.code} aggregates by {meter.aggregation}, which a running total "
            "cannot follow event by event; real-time prices take count, sum or max meters. "
            "Bill it in_arrears.",
        )
    price = parse_price(raw, asset=asset, field=at)
    if billing == "real_time" and isinstance(price.model, Volume):
        raise _fail(
            "real_time_volume_unsupported",
            f"{at}.billing",
            "A volume price cannot bill in real time: a total moving into a cheaper tier "
            "would charge an event a negative fee. Bill it in_arrears, or use graduated.",
        )
    return {
        "code": raw["code"],
        "type": "usage",
        "meter": meter.code,
        "asset": asset.code,
        "billing": billing,
        **dump_price(price, asset=asset),
    }


def _fixed(raw: Mapping[str, Any], at: str, asset: AssetInfo) -> dict[str, Any]:
    _no_extra(raw, _FIXED_KEYS, at, "fixed price", "invalid_price")
    billing = raw.get("billing")
    if billing is not None and billing not in FIXED_BILLINGS:
        raise _fail(
            "invalid_billing",
            f"{at}.billing",
            "A fixed price's billing is in_advance or in_arrears.",
        )
    if raw.get("amount") is None:
        raise _fail("invalid_price", f"{at}.amount", f"{at}.amount is required.")
    amount_minor = parse_amount(asset, raw["amount"], field=f"{at}.amount", allow_zero=True)
    return {
        "code": raw["code"],
        "type": "fixed",
        "asset": asset.code,
        "billing": billing or "in_advance",
        "amount": format_amount(asset, amount_minor),
        "interval": _choice(raw, "interval", at, FIXED_INTERVALS, code="invalid_price"),
    }


def _credits(raw: Mapping[str, Any], at: str, asset: AssetInfo) -> dict[str, Any]:
    _no_extra(raw, _CREDITS_KEYS, at, "credits price", "invalid_price")
    if raw.get("amount") is None:
        raise _fail("invalid_price", f"{at}.amount", f"{at}.amount is required.")
    amount_minor = parse_amount(asset, raw["amount"], field=f"{at}.amount")
    if raw.get("refresh") is None:
        raise _fail(
            "invalid_price", f"{at}.refresh", f"{at}.refresh is expire_and_replace or rollover."
        )
    refresh = _choice(raw, "refresh", at, CREDIT_REFRESHES, code="invalid_price")
    out: dict[str, Any] = {
        "code": raw["code"],
        "type": "credits",
        "asset": asset.code,
        "amount": format_amount(asset, amount_minor),
        "refresh": refresh,
    }
    if raw.get("rollover_cap") is not None:
        if refresh != "rollover":
            raise _fail(
                "invalid_price",
                f"{at}.rollover_cap",
                "rollover_cap applies only to refresh: rollover.",
            )
        cap = parse_amount(asset, raw["rollover_cap"], field=f"{at}.rollover_cap", allow_zero=True)
        out["rollover_cap"] = format_amount(asset, cap)
    return out


async def validate_prices(
    session: AsyncSession, organization_id: str, raw_prices: list[Any]
) -> list[dict[str, Any]]:
    """The canonical prices of a version, or the first refusal."""
    if len(raw_prices) > limits.prices_per_version_max:
        raise _fail(
            "invalid_price",
            "prices",
            f"A version has at most {limits.prices_per_version_max} prices.",
        )
    assets = AssetLookup(session, organization_id)
    meters = MeterLookup(session, organization_id)
    out: list[dict[str, Any]] = []
    seen: dict[str, int] = {}
    for index, raw in enumerate(raw_prices):
        at = f"prices.{index}"
        if not isinstance(raw, dict):
            raise _fail("invalid_price", at, f"{at} must be an object.")
        code = validate_code(
            raw.get("code"),
            field=f"{at}.code",
            code="invalid_price",
            length_max=limits.price_code_length_max,
        )
        if code in seen:
            raise _fail(
                "duplicate_price_code",
                f"{at}.code",
                f"prices.{seen[code]} already has the code {code}; codes are unique per version.",
            )
        seen[code] = index
        kind = raw.get("type")
        if kind not in PRICE_TYPES:
            raise _fail(
                "invalid_price", f"{at}.type", f"{at}.type is one of {', '.join(PRICE_TYPES)}."
            )
        asset = await assets.get(raw.get("asset"), field=f"{at}.asset")
        if kind == "usage":
            out.append(await _usage(raw, at, asset, meters))
        elif kind == "fixed":
            out.append(_fixed(raw, at, asset))
        else:
            out.append(_credits(raw, at, asset))
    return out


# --- features ----------------------------------------------------------------------


def _limit(value: object, field: str) -> str | None:
    """A limit: null (unlimited), a JSON integer or a decimal string >= 0."""
    if value is None:
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    match = (
        _NUMBER_RE.fullmatch(value)
        if isinstance(value, str) and len(value) <= limits.rating_quantity_string_length_max
        else None
    )
    if (
        match is None
        or len(match[2] or "") > limits.rating_quantity_decimals_max
        or Decimal(match[0]) > limits.rating_quantity_max
    ):
        raise _fail(
            "invalid_feature",
            field,
            f'{field} is null (unlimited), or a number >= 0 such as 1000 or "2.5" '
            f"(at most {limits.rating_quantity_decimals_max} decimals).",
        )
    return decimal_text(Decimal(match[0]))


async def validate_features(
    session: AsyncSession, organization_id: str, raw_features: list[Any]
) -> list[dict[str, Any]]:
    """The canonical features of a version, or the first refusal."""
    if len(raw_features) > limits.features_per_version_max:
        raise _fail(
            "invalid_feature",
            "features",
            f"A version has at most {limits.features_per_version_max} features.",
        )
    meters = MeterLookup(session, organization_id)
    out: list[dict[str, Any]] = []
    seen: dict[str, int] = {}
    for index, raw in enumerate(raw_features):
        at = f"features.{index}"
        if not isinstance(raw, dict):
            raise _fail("invalid_feature", at, f"{at} must be an object.")
        code = validate_code(
            raw.get("code"),
            field=f"{at}.code",
            code="invalid_feature",
            length_max=limits.feature_code_length_max,
        )
        if code in seen:
            raise _fail(
                "duplicate_feature_code",
                f"{at}.code",
                f"features.{seen[code]} already has the code {code}; codes are unique per version.",
            )
        seen[code] = index
        kind = raw.get("type")
        if not isinstance(kind, str) or kind not in FEATURE_TYPES:
            raise _fail(
                "invalid_feature", f"{at}.type", f"{at}.type is one of {', '.join(FEATURE_TYPES)}."
            )
        _no_extra(raw, _FEATURE_KEYS[kind], at, f"{kind} feature", "invalid_feature")
        feature: dict[str, Any] = {"code": code, "type": kind}
        if kind == "metered":
            if raw.get("meter") is None:
                raise _fail("invalid_feature", f"{at}.meter", "A metered feature names its meter.")
            feature["meter"] = await meters.require(raw["meter"], field=f"{at}.meter")
            feature["period"] = _choice(raw, "period", at, FEATURE_PERIODS, code="invalid_feature")
        if kind != "boolean":
            feature["limit"] = _limit(raw.get("limit"), f"{at}.limit")
            feature["enforcement"] = _choice(
                raw, "enforcement", at, ENFORCEMENTS, code="invalid_feature"
            )
        out.append(feature)
    return out


def usage_price(stored: Mapping[str, Any], asset: AssetInfo) -> Price:
    """The rating `Price` of a stored usage price (already canonical)."""
    return parse_price(stored, asset=asset, field="")
