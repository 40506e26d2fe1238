"""A price's JSON (API.md, "Prices") to a `Price`, and back.

Every refusal is an `InvalidRequest` with a stable code and the path of the
field at fault, under the prefix the caller gives (`prices.0.tiers.1.up_to`):

- `invalid_price`: the price object, its `model`, a model's own fields, a field
  that does not belong to the model, a bad `unit_amount` or `rate_percent`;
- `invalid_tiers`: `tiers` and everything inside them but money amounts;
- `invalid_dimensions`: `dimensions`, their `match` and what they override;
- `invalid_amount`: a money amount (`flat_amount`, `package_amount`,
  `fixed_amount`, `amount`, the per-event clamps), exactly as
  `billfold.assets.parse_amount` says it.

Keys outside rating's vocabulary (`RATING_FIELDS`) are the catalog's
(`code`, `type`, `meter`, `asset`, `billing` …) and are ignored here.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import replace
from decimal import Decimal
from typing import Any, cast

from billfold import limits
from billfold.assets.amounts import AssetInfo, format_amount, parse_amount
from billfold.errors import InvalidRequest
from billfold.rating._dimensions import value_text
from billfold.rating._exact import ZERO, text, to_minor
from billfold.rating._prices import (
    MODEL_FIELDS,
    MODELS,
    Dimension,
    Flat,
    Graduated,
    GraduatedPercentage,
    Model,
    Package,
    Percentage,
    PercentageTier,
    PerUnit,
    Price,
    Tier,
    Volume,
)

_CLAMP_FIELDS = ("min_amount_per_event", "max_amount_per_event")
# Every key rating reads from a price object.
RATING_FIELDS: frozenset[str] = frozenset(
    {"model", "dimensions", *_CLAMP_FIELDS}.union(*MODEL_FIELDS.values())
)
_AMOUNT_FIELDS = frozenset({"flat_amount", "package_amount", "fixed_amount", "amount"})
_NUMBER_RE = re.compile(r"(0|[1-9][0-9]*)(?:\.([0-9]+))?")
_TIER_FIELDS = {
    "graduated": ("up_to", "unit_amount", "flat_amount"),
    "volume": ("up_to", "unit_amount", "flat_amount"),
    "graduated_percentage": ("up_to", "rate_percent", "flat_amount"),
}


def _path(*parts: object) -> str:
    return ".".join(str(part) for part in parts if part != "")


def _fail(code: str, field: str, detail: str) -> InvalidRequest:
    return InvalidRequest(detail, code=code, field=field or None)


# --- scalars -----------------------------------------------------------------------


def _quantity(value: object, field: str, code: str, *, positive: bool) -> Decimal:
    """A quantity: a decimal string or a JSON integer, >= 0 (> 0 if
    `positive`), at most `rating_quantity_decimals_max` decimals."""
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str):
        raise _fail(code, field, f'{field} must be a decimal string such as "1000".')
    match = (
        _NUMBER_RE.fullmatch(value)
        if len(value) <= limits.rating_quantity_string_length_max
        else None
    )
    if match is None:
        raise _fail(code, field, f'{field} must be a plain decimal string >= 0 such as "1000".')
    if len(match[2] or "") > limits.rating_quantity_decimals_max:
        raise _fail(
            code,
            field,
            f"{field} may have at most {limits.rating_quantity_decimals_max} decimals.",
        )
    quantity = Decimal(value)
    if quantity > limits.rating_quantity_max:
        raise _fail(code, field, f"{field} may be at most {limits.rating_quantity_max}.")
    if positive and quantity == 0:
        raise _fail(code, field, f"{field} must be greater than zero.")
    return quantity


def _unit_amount(value: object, field: str, code: str) -> Decimal:
    """A unit price or a percentage: a decimal string >= 0, finer than any
    asset's scale if need be, bounded in decimals and significant digits."""
    if not isinstance(value, str):
        raise _fail(code, field, f'Send {field} as a decimal string such as "0.01".')
    match = (
        _NUMBER_RE.fullmatch(value)
        if len(value) <= limits.price_unit_amount_string_length_max
        else None
    )
    if match is None:
        raise _fail(code, field, f'{field} must be a plain decimal string >= 0 such as "0.01".')
    whole, decimals = match[1], match[2] or ""
    significant = (whole + decimals).lstrip("0")
    if len(decimals) > limits.price_unit_amount_decimals_max or (
        len(significant) > limits.price_unit_amount_significant_digits_max
    ):
        raise _fail(
            code,
            field,
            f"{field} may have at most {limits.price_unit_amount_decimals_max} decimals and "
            f"{limits.price_unit_amount_significant_digits_max} significant digits.",
        )
    return Decimal(value)


def _amount(asset: AssetInfo, value: object, field: str) -> Decimal:
    # parse_amount refuses anything but a plain decimal string itself, with
    # the house message; the value is then exactly the text as written.
    parse_amount(asset, cast(str, value), field=field, allow_zero=True)
    return Decimal(cast(str, value))


def _mapping(value: object, field: str, code: str, what: str) -> Mapping[str, object]:
    if not isinstance(value, Mapping) or not all(isinstance(k, str) for k in value):
        raise _fail(code, field, f"{field or 'The price'} must be {what}.")
    return value


def _list(value: object, field: str, code: str, *, most: int, what: str) -> list[object]:
    if not isinstance(value, list) or not value:
        raise _fail(code, field, f"{field} must be a non-empty list of {what}.")
    if len(value) > most:
        raise _fail(code, field, f"{field} may hold at most {most} {what}.")
    return value


# --- models ------------------------------------------------------------------------

# Where a key of the merged fields came from: its full path.
_Where = Callable[[str], str]


def _required(values: Mapping[str, object], key: str, where: _Where, code: str) -> object:
    if values.get(key) is None:
        raise _fail(code, where(key), f"{where(key)} is required.")
    return values[key]


def _tiers(
    name: str, value: object, where: _Where, code: str, asset: AssetInfo
) -> tuple[Tier, ...] | tuple[PercentageTier, ...]:
    field = where("tiers")
    items = _list(value, field, code, most=limits.price_tiers_max, what="tiers")
    allowed = _TIER_FIELDS[name]
    plain: list[Tier] = []
    percent: list[PercentageTier] = []
    previous = ZERO
    for index, item in enumerate(items):
        at = _path(field, index)
        tier = _mapping(item, at, code, "an object")
        for key in tier:
            if key not in allowed:
                raise _fail(
                    code,
                    _path(at, key),
                    f"A {name} tier takes {', '.join(allowed)}; not {key}.",
                )
        last = index == len(items) - 1
        up_to: Decimal | None = None
        if tier.get("up_to") is None:
            if not last:
                raise _fail(code, _path(at, "up_to"), "Only the last tier may have no up_to.")
        else:
            if last:
                raise _fail(
                    code, _path(at, "up_to"), "The last tier's up_to must be null: it has no end."
                )
            up_to = _quantity(tier["up_to"], _path(at, "up_to"), code, positive=True)
            if up_to <= previous:
                raise _fail(
                    code,
                    _path(at, "up_to"),
                    f"Tiers must rise: up_to {text(up_to)} is not above {text(previous)}.",
                )
            previous = up_to
        # Absent or null, a tier's prices are zero.
        flat_raw, price_key = tier.get("flat_amount"), allowed[1]
        flat = ZERO if flat_raw is None else _amount(asset, flat_raw, _path(at, "flat_amount"))
        price_raw = tier.get(price_key)
        unit = ZERO if price_raw is None else _unit_amount(price_raw, _path(at, price_key), code)
        if name == "graduated_percentage":
            percent.append(PercentageTier(up_to, unit, flat))
        else:
            plain.append(Tier(up_to, unit, flat))
    return tuple(percent) if name == "graduated_percentage" else tuple(plain)


def _model(name: str, values: Mapping[str, object], where: _Where, asset: AssetInfo) -> Model:
    """The model `name` from `values`; `where(key)` is the path of a key."""

    def quantity(key: str, *, positive: bool, required: bool) -> Decimal:
        raw = values.get(key)
        if raw is None:
            if required:
                raise _fail("invalid_price", where(key), f"{where(key)} is required.")
            return ZERO
        return _quantity(raw, where(key), "invalid_price", positive=positive)

    def unit(key: str) -> Decimal:
        raw = _required(values, key, where, "invalid_price")
        return _unit_amount(raw, where(key), "invalid_price")

    def amount(key: str, *, required: bool) -> Decimal:
        raw = values.get(key)
        if raw is None:
            if required:
                raise _fail("invalid_price", where(key), f"{where(key)} is required.")
            return ZERO
        return _amount(asset, raw, where(key))

    if name == "per_unit":
        return PerUnit(unit("unit_amount"))
    if name in _TIER_FIELDS:
        raw_tiers = _required(values, "tiers", where, "invalid_tiers")
        tiers = _tiers(name, raw_tiers, where, "invalid_tiers", asset)
        if name == "graduated_percentage":
            return GraduatedPercentage(tiers)  # type: ignore[arg-type]
        return Graduated(tiers) if name == "graduated" else Volume(tiers)  # type: ignore[arg-type]
    if name == "package":
        return Package(
            package_size=quantity("package_size", positive=True, required=True),
            package_amount=amount("package_amount", required=True),
            free_units=quantity("free_units", positive=False, required=False),
        )
    if name == "percentage":
        return Percentage(
            rate_percent=unit("rate_percent"),
            fixed_amount=amount("fixed_amount", required=False),
            free_units=quantity("free_units", positive=False, required=False),
        )
    return Flat(amount("amount", required=True))


def _clamps(
    values: Mapping[str, object], where: _Where, asset: AssetInfo, owns: Callable[[str], bool]
) -> tuple[Decimal | None, Decimal | None]:
    """The per-event minimum and maximum; `owns(key)` says whether a key is
    this object's own, to blame the right one when they cross."""
    low, high = _CLAMP_FIELDS
    minimum = None if values.get(low) is None else _amount(asset, values[low], where(low))
    maximum = None if values.get(high) is None else _amount(asset, values[high], where(high))
    if minimum is not None and maximum is not None and minimum > maximum:
        blamed = high if owns(high) else low
        raise _fail(
            "invalid_price",
            where(blamed),
            f"{high} must not be below {low}.",
        )
    return minimum, maximum


# --- dimensions --------------------------------------------------------------------


def _match(value: object, field: str) -> tuple[tuple[str, frozenset[str]], ...]:
    code = "invalid_dimensions"
    match = _mapping(value, field, code, "an object of data keys and the values they match")
    if not match:
        raise _fail(code, field, f"{field} must name at least one key.")
    if len(match) > limits.price_dimension_keys_max:
        raise _fail(
            code, field, f"{field} may name at most {limits.price_dimension_keys_max} keys."
        )
    pairs: list[tuple[str, frozenset[str]]] = []
    for key, raw in match.items():
        at = _path(field, key)
        if not key or len(key) > limits.price_dimension_key_length_max or "" in key.split("."):
            raise _fail(
                code,
                at,
                f"A match key is a dotted path into the event's data of at most "
                f"{limits.price_dimension_key_length_max} characters.",
            )
        raws = raw if isinstance(raw, list) else [raw]
        if not raws or len(raws) > limits.price_dimension_values_per_key_max:
            raise _fail(
                code,
                at,
                f"{at} must match one value or a list of 1 to "
                f"{limits.price_dimension_values_per_key_max} values.",
            )
        texts: set[str] = set()
        for item in raws:
            # Decimals and floats are refused: match numbers as integers or strings.
            item_text = value_text(item) if isinstance(item, str | int) else None
            if item_text is None or len(item_text) > limits.price_dimension_value_length_max:
                raise _fail(
                    code,
                    at,
                    f"{at} must be a string (at most {limits.price_dimension_value_length_max} "
                    "characters), an integer or a boolean, or a list of them.",
                )
            texts.add(item_text)
        pairs.append((key, frozenset(texts)))
    return tuple(sorted(pairs))


# On a tiered price, a dimension may set one unit price (or rate) for every
# tier, keeping the tiers' bounds and flat fees (API.md's example does).
_UNIFORM_TIER_FIELD = {
    "graduated": "unit_amount",
    "volume": "unit_amount",
    "graduated_percentage": "rate_percent",
}


def _with_uniform_rate(model: Model, rate: Decimal) -> Model:
    match model:
        case Graduated(tiers=tiers):
            return Graduated(tuple(replace(tier, unit_amount=rate) for tier in tiers))
        case Volume(tiers=tiers):
            return Volume(tuple(replace(tier, unit_amount=rate) for tier in tiers))
        case GraduatedPercentage(tiers=percent_tiers):
            return GraduatedPercentage(
                tuple(replace(tier, rate_percent=rate) for tier in percent_tiers)
            )
    raise AssertionError(f"not a tiered model: {model!r}")  # pragma: no cover


def _dimensions(
    raw: object,
    base: Mapping[str, object],
    name: str,
    field: str,
    asset: AssetInfo,
) -> tuple[Dimension, ...]:
    code = "invalid_dimensions"
    at = _path(field, "dimensions")
    items = _list(raw, at, code, most=limits.price_dimensions_max, what="dimensions")
    uniform = _UNIFORM_TIER_FIELD.get(name)
    allowed = set(MODEL_FIELDS[name]) | set(_CLAMP_FIELDS) | ({uniform} if uniform else set())
    dimensions: list[Dimension] = []
    seen: dict[tuple[tuple[str, frozenset[str]], ...], int] = {}
    for index, item in enumerate(items):
        here = _path(at, index)
        dimension = _mapping(item, here, code, "an object")
        if "match" not in dimension:
            raise _fail(code, _path(here, "match"), "A dimension needs a match.")
        for key in dimension:
            if key != "match" and key not in allowed:
                raise _fail(
                    code,
                    _path(here, key),
                    f"A dimension of a {name} price may override "
                    f"{', '.join(sorted(allowed))}; not {key}.",
                )
        match = _match(dimension["match"], _path(here, "match"))
        if match in seen:
            raise _fail(
                code,
                _path(here, "match"),
                f"Dimension {seen[match]} has the same match; this one could never apply.",
            )
        seen[match] = index
        if uniform in dimension and "tiers" in dimension:
            raise _fail(code, _path(here, uniform), f"Override tiers or {uniform}, not both.")
        merged = {**base, **{k: v for k, v in dimension.items() if k != "match"}}

        def where(key: str, here: str = here, own: Mapping[str, object] = dimension) -> str:
            return _path(here, key) if key in own else _path(field, key)

        model = _model(name, merged, where, asset)
        if uniform is not None and uniform in dimension:
            given = _required(dimension, uniform, where, "invalid_price")
            model = _with_uniform_rate(model, _unit_amount(given, where(uniform), "invalid_price"))
        minimum, maximum = _clamps(merged, where, asset, dimension.__contains__)
        dimensions.append(Dimension(match, model, minimum, maximum))
    return tuple(dimensions)


# --- public ------------------------------------------------------------------------


def parse_price(data: object, *, asset: AssetInfo, field: str = "") -> Price:
    """The `Price` of a price object from the API, or `InvalidRequest`.

    `asset` is the price's asset (the catalog resolves `data["asset"]`):
    money amounts may have at most its scale in decimals. `field` prefixes
    every field path named in an error (`"prices.0"`).
    """
    price = _mapping(data, field, "invalid_price", "an object")
    name = price.get("model")
    if not isinstance(name, str) or name not in MODELS:
        raise _fail(
            "invalid_price",
            _path(field, "model"),
            f"model must be one of {', '.join(MODELS)}.",
        )
    allowed = set(MODEL_FIELDS[name]) | set(_CLAMP_FIELDS) | {"model", "dimensions"}
    for key in price:
        if key in RATING_FIELDS and key not in allowed:
            raise _fail(
                "invalid_tiers" if key == "tiers" else "invalid_price",
                _path(field, key),
                f"{key} does not apply to a {name} price.",
            )

    def where(key: str) -> str:
        return _path(field, key)

    base = {key: price[key] for key in MODEL_FIELDS[name] + _CLAMP_FIELDS if key in price}
    model = _model(name, base, where, asset)
    minimum, maximum = _clamps(base, where, asset, lambda _key: True)
    dimensions = (
        ()
        if price.get("dimensions") is None
        else _dimensions(price["dimensions"], base, name, field, asset)
    )
    return Price(model, dimensions, minimum, maximum)


def _money(asset: AssetInfo, value: Decimal) -> str:
    return format_amount(asset, to_minor(value, asset.scale))


def _model_json(model: Model, asset: AssetInfo) -> dict[str, Any]:
    match model:
        case PerUnit():
            return {"unit_amount": text(model.unit_amount)}
        case Graduated(tiers=tiers) | Volume(tiers=tiers):
            return {
                "tiers": [
                    {
                        "up_to": None if t.up_to is None else text(t.up_to),
                        "unit_amount": text(t.unit_amount),
                        "flat_amount": _money(asset, t.flat_amount),
                    }
                    for t in tiers
                ]
            }
        case GraduatedPercentage(tiers=percent_tiers):
            return {
                "tiers": [
                    {
                        "up_to": None if t.up_to is None else text(t.up_to),
                        "rate_percent": text(t.rate_percent),
                        "flat_amount": _money(asset, t.flat_amount),
                    }
                    for t in percent_tiers
                ]
            }
        case Package():
            return {
                "package_size": text(model.package_size),
                "package_amount": _money(asset, model.package_amount),
                "free_units": text(model.free_units),
            }
        case Percentage():
            return {
                "rate_percent": text(model.rate_percent),
                "fixed_amount": _money(asset, model.fixed_amount),
                "free_units": text(model.free_units),
            }
        case Flat():
            return {"amount": _money(asset, model.amount)}
    raise AssertionError(f"unknown model {model!r}")  # pragma: no cover


def _clamps_json(
    minimum: Decimal | None, maximum: Decimal | None, asset: AssetInfo
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if minimum is not None:
        out["min_amount_per_event"] = _money(asset, minimum)
    if maximum is not None:
        out["max_amount_per_event"] = _money(asset, maximum)
    return out


def dump_price(price: Price, *, asset: AssetInfo) -> dict[str, Any]:
    """The canonical JSON of a price's rating fields: decimal strings, every
    default written out; a dimension lists only what it overrides.
    `parse_price(dump_price(p, asset=a), asset=a) == p`."""
    base = {
        "model": price.model.name,
        **_model_json(price.model, asset),
        **_clamps_json(price.min_amount_per_event, price.max_amount_per_event, asset),
    }
    if price.dimensions:
        dimensions: list[dict[str, Any]] = []
        for dimension in price.dimensions:
            own = {
                **_model_json(dimension.model, asset),
                **_clamps_json(
                    dimension.min_amount_per_event, dimension.max_amount_per_event, asset
                ),
            }
            match: dict[str, Any] = {
                key: next(iter(values)) if len(values) == 1 else sorted(values)
                for key, values in dimension.match
            }
            overrides = {key: value for key, value in own.items() if base.get(key) != value}
            # A clamp of the base that this dimension lifts is written as null.
            overrides |= {key: None for key in _CLAMP_FIELDS if key in base and key not in own}
            dimensions.append({"match": match, **overrides})
        base["dimensions"] = dimensions
    return base
