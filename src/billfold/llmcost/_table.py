"""Price tables: exact list prices per million tokens, versioned and dated.

A table document (JSON, `format: billfold.llm_prices/1`) holds providers, each
with models in match order. A model names the references it answers to (a
small clause language: `equals`, `starts_with`, `ends_with`, `contains`,
`regex`, `or`, `and`), its price history (`prices`: rates from an
`effective_from` date on, the first entry applying before any date), and
request variants (`when: {processing: batch}` / `{service_tier: priority}`)
whose rates replace the standard ones key by key.

A rate is a decimal string in the table's currency per million tokens (per
thousand calls for `*_per_k` keys), or `{base, tiers: [{above_input_tokens,
price}]}`: a long-context tier reprices every token of that key once the
request's whole input (cached and written tokens included) is above the
threshold. Numbers are parsed as Decimal; a float never appears.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from decimal import Decimal
from functools import cache
from importlib import resources
from typing import Any

from billfold.llmcost._errors import InvalidPriceTable

FORMAT = "billfold.llm_prices/1"

#: Every rate key a table may hold.
RATE_KEYS = frozenset(
    {
        "input",
        "output",
        "cache_read",
        "cache_write",
        "cache_write_5m",
        "cache_write_1h",
        "input_audio",
        "output_audio",
        "input_image",
        "output_image",
        "input_video",
        "output_video",
        "output_reasoning",
        "web_search_per_k",
        "file_search_per_k",
    }
)
_DECIMAL_RE = re.compile(r"(0|[1-9][0-9]{0,8})(\.[0-9]{1,12})?")
_PROVIDER_RE = re.compile(r"[a-z0-9][a-z0-9_-]{0,39}")
_COMPACT_DATE_RE = re.compile(r"-(20\d{2})(0[1-9]|1[0-2])(0[1-9]|[12]\d|3[01])(?=-|:|$)")


@dataclass(frozen=True, slots=True)
class Tier:
    above_input_tokens: int
    price: Decimal


@dataclass(frozen=True, slots=True)
class Rate:
    """A price per unit of a key, with long-context tiers (ascending)."""

    base: Decimal
    tiers: tuple[Tier, ...] = ()

    def at(self, input_tokens: int) -> Decimal:
        for tier in reversed(self.tiers):
            if input_tokens > tier.above_input_tokens:
                return tier.price
        return self.base

    def scaled(self, factor: Decimal) -> Rate:
        return Rate(
            self.base * factor,
            tuple(Tier(tier.above_input_tokens, tier.price * factor) for tier in self.tiers),
        )

    def to_json(self) -> Any:
        if not self.tiers:
            return decimal_text(self.base)
        return {
            "base": decimal_text(self.base),
            "tiers": [
                {"above_input_tokens": t.above_input_tokens, "price": decimal_text(t.price)}
                for t in self.tiers
            ],
        }


@dataclass(frozen=True, slots=True)
class DatedRates:
    effective_from: date | None
    rates: Mapping[str, Rate]


@dataclass(frozen=True, slots=True)
class Variant:
    when: Mapping[str, str]
    effective_from: date | None
    rates: Mapping[str, Rate]


@dataclass(frozen=True, slots=True)
class ModelPrices:
    provider: str
    id: str
    match: Any
    prices: tuple[DatedRates, ...]
    variants: tuple[Variant, ...] = ()
    context_window: int | None = None

    def is_match(self, reference: str) -> bool:
        return _clause_matches(self.match, reference)

    def rates_at(self, at: datetime, context: Mapping[str, str]) -> dict[str, Rate]:
        """The rates in force at `at` for a request with this context
        (`processing`, `service_tier`): dated standard rates, then each key
        replaced by the first active variant whose conditions all hold."""
        day = at.astimezone(UTC).date()
        standard = self.prices[0].rates
        for entry in reversed(self.prices):
            if entry.effective_from is None or day >= entry.effective_from:
                standard = entry.rates
                break
        resolved = dict(standard)
        if not context:
            return resolved
        overridden: set[str] = set()
        for variant in self.variants:
            if variant.effective_from is not None and day < variant.effective_from:
                continue
            if not all(context.get(key) == value for key, value in variant.when.items()):
                continue
            for key, rate in variant.rates.items():
                if key not in overridden:
                    overridden.add(key)
                    resolved[key] = rate
        return resolved


#: How many `PriceTable.find` answers a table keeps.
FOUND_CACHED_MAX = 4096


@dataclass(frozen=True, slots=True)
class PriceTable:
    version: str
    currency: str
    source: Mapping[str, Any]
    providers: Mapping[str, tuple[ModelPrices, ...]] = field(default_factory=dict)
    #: What `find` answered, by (provider, reference): matching walks every
    #: model's clauses (a quarter of a gateway call's estimate). Emptied when
    #: full, as references come from callers.
    _found: dict[tuple[str, str], ModelPrices | None] = field(
        default_factory=dict, compare=False, repr=False
    )

    def find(self, provider: str, reference: str) -> ModelPrices | None:
        """The first model of `provider` answering to `reference` (case-insensitive);
        a compact date suffix (`-20251211`) is retried in its dashed form."""
        key = (provider, reference)
        try:
            return self._found[key]
        except KeyError:
            pass
        if len(self._found) >= FOUND_CACHED_MAX:
            self._found.clear()
        found = self._find(provider, reference)
        self._found[key] = found
        return found

    def _find(self, provider: str, reference: str) -> ModelPrices | None:
        models = self.providers.get(provider.lower(), ())
        reference = reference.lower()
        for candidate in (reference, _dashed_date(reference)):
            for model in models:
                if model.is_match(candidate):
                    return model
        return None

    def model_count(self) -> int:
        return sum(len(models) for models in self.providers.values())


def decimal_text(value: Decimal) -> str:
    """Plain digits, no exponent, no trailing zeros."""
    assert value.is_finite(), value
    text = format(value, "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return text or "0"


def _dashed_date(reference: str) -> str:
    def replace(match: re.Match[str]) -> str:
        year, month, day = (int(match.group(index)) for index in range(1, 4))
        try:
            date(year, month, day)
        except ValueError:
            return match.group(0)
        return f"-{year:04d}-{month:02d}-{day:02d}"

    return _COMPACT_DATE_RE.sub(replace, reference)


def _clause_matches(clause: Any, text: str) -> bool:
    (kind, value), *_ = clause.items()
    if kind == "or":
        return any(_clause_matches(inner, text) for inner in value)
    if kind == "and":
        return all(_clause_matches(inner, text) for inner in value)
    assert isinstance(value, str), clause
    if kind == "regex":
        return re.search(value, text) is not None
    value = value.lower()
    if kind == "equals":
        return text == value
    if kind == "starts_with":
        return text.startswith(value)
    if kind == "ends_with":
        return text.endswith(value)
    assert kind == "contains", kind
    return value in text


# --- parsing -------------------------------------------------------------------


def _fail(path: str, message: str) -> InvalidPriceTable:
    return InvalidPriceTable(f"{path}: {message}")


def parse_decimal(value: Any, path: str) -> Decimal:
    if not isinstance(value, str) or _DECIMAL_RE.fullmatch(value) is None:
        raise _fail(path, 'a price is a plain non-negative decimal string such as "2.5"')
    return Decimal(value)


def _parse_rate(value: Any, path: str) -> Rate:
    if isinstance(value, str):
        return Rate(parse_decimal(value, path))
    if not isinstance(value, dict) or set(value) != {"base", "tiers"}:
        raise _fail(path, "a rate is a decimal string or {base, tiers}")
    tiers: list[Tier] = []
    previous = -1
    if not isinstance(value["tiers"], list) or not value["tiers"]:
        raise _fail(f"{path}.tiers", "a tiered rate lists at least one tier")
    for index, raw in enumerate(value["tiers"]):
        where = f"{path}.tiers[{index}]"
        if not isinstance(raw, dict) or set(raw) != {"above_input_tokens", "price"}:
            raise _fail(where, "a tier is {above_input_tokens, price}")
        above = raw["above_input_tokens"]
        if type(above) is not int or above <= previous:
            raise _fail(where, "tiers ascend by above_input_tokens, a non-negative integer")
        previous = above
        tiers.append(Tier(above, parse_decimal(raw["price"], f"{where}.price")))
    return Rate(parse_decimal(value["base"], f"{path}.base"), tuple(tiers))


def parse_rates(value: Any, path: str) -> dict[str, Rate]:
    if not isinstance(value, dict):
        raise _fail(path, "rates are an object of rate key to rate")
    unknown = set(value) - RATE_KEYS
    if unknown:
        raise _fail(path, f"unknown rate keys {sorted(unknown)}; known: {sorted(RATE_KEYS)}")
    return {key: _parse_rate(rate, f"{path}.{key}") for key, rate in value.items()}


def _parse_date(value: Any, path: str) -> date | None:
    if value is None:
        return None
    try:
        return date.fromisoformat(value)
    except (TypeError, ValueError):
        raise _fail(path, "a date is YYYY-MM-DD or null") from None


def _check_clause(clause: Any, path: str) -> None:
    if not isinstance(clause, dict) or len(clause) != 1:
        raise _fail(path, "a match clause is an object with one key")
    (kind, value), *_ = clause.items()
    if kind in ("or", "and"):
        if not isinstance(value, list) or not value:
            raise _fail(path, f"{kind} takes a list of clauses")
        for index, inner in enumerate(value):
            _check_clause(inner, f"{path}.{kind}[{index}]")
    elif kind in ("equals", "starts_with", "ends_with", "contains", "regex"):
        if not isinstance(value, str) or not value:
            raise _fail(path, f"{kind} takes a non-empty string")
        if kind == "regex":
            try:
                re.compile(value)
            except re.error as exc:
                raise _fail(path, f"bad regex: {exc}") from None
    else:
        raise _fail(path, f"unknown clause {kind!r}")


def _parse_model(provider: str, raw: Any, path: str) -> ModelPrices:
    if not isinstance(raw, dict) or not isinstance(raw.get("id"), str):
        raise _fail(path, "a model is an object with an id")
    _check_clause(raw.get("match"), f"{path}.match")
    raw_prices = raw.get("prices")
    if not isinstance(raw_prices, list) or not raw_prices:
        raise _fail(f"{path}.prices", "a model has at least one price entry")
    prices = []
    for index, entry in enumerate(raw_prices):
        where = f"{path}.prices[{index}]"
        if not isinstance(entry, dict):
            raise _fail(where, "a price entry is {effective_from, rates}")
        prices.append(
            DatedRates(
                _parse_date(entry.get("effective_from"), f"{where}.effective_from"),
                parse_rates(entry.get("rates"), f"{where}.rates"),
            )
        )
    variants = []
    for index, entry in enumerate(raw.get("variants") or ()):
        where = f"{path}.variants[{index}]"
        when = entry.get("when") if isinstance(entry, dict) else None
        if not isinstance(when, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in when.items()
        ):
            raise _fail(where, "a variant has when: {condition: value}")
        variants.append(
            Variant(
                when=dict(when),
                effective_from=_parse_date(entry.get("effective_from"), f"{where}.effective_from"),
                rates=parse_rates(entry.get("rates"), f"{where}.rates"),
            )
        )
    window = raw.get("context_window")
    return ModelPrices(
        provider=provider,
        id=raw["id"],
        match=raw["match"],
        prices=tuple(prices),
        variants=tuple(variants),
        context_window=window if type(window) is int else None,
    )


def parse_table(document: Any) -> PriceTable:
    """A price table from its JSON document (as parsed with Decimal for floats),
    or `InvalidPriceTable` naming the first thing wrong."""
    if not isinstance(document, dict) or document.get("format") != FORMAT:
        raise _fail("format", f'a price table document has "format": "{FORMAT}"')
    version = document.get("version")
    if not isinstance(version, str) or not 1 <= len(version) <= 80:
        raise _fail("version", "a version is a string of 1 to 80 characters")
    currency = document.get("currency")
    if currency != "USD":
        raise _fail("currency", 'prices are in "USD"')
    if document.get("unit") != "per_mtok":
        raise _fail("unit", 'rates are "per_mtok"')
    raw_providers = document.get("providers")
    if not isinstance(raw_providers, list):
        raise _fail("providers", "a list of providers")
    providers: dict[str, tuple[ModelPrices, ...]] = {}
    for index, raw in enumerate(raw_providers):
        where = f"providers[{index}]"
        provider_id = raw.get("id") if isinstance(raw, dict) else None
        if not isinstance(provider_id, str) or not _PROVIDER_RE.fullmatch(provider_id):
            raise _fail(f"{where}.id", "a provider id is lowercase letters, digits, - and _")
        models = raw.get("models")
        if not isinstance(models, list):
            raise _fail(f"{where}.models", "a list of models")
        providers[provider_id] = tuple(
            _parse_model(provider_id, model, f"{where}.models[{position}]")
            for position, model in enumerate(models)
        )
    source = document.get("source")
    return PriceTable(
        version=version,
        currency=currency,
        source=source if isinstance(source, dict) else {},
        providers=providers,
    )


def loads_table(text: str | bytes) -> PriceTable:
    """Parse a table document from JSON text; numbers become Decimal, never float."""
    try:
        document = json.loads(text, parse_float=Decimal)
    except (ValueError, RecursionError) as exc:
        raise InvalidPriceTable(f"not JSON: {exc}") from None
    return parse_table(document)


def bundled_text() -> str:
    return resources.files("billfold.llmcost").joinpath("data/prices.json").read_text("utf-8")


@cache
def bundled_table() -> PriceTable:
    """The dated snapshot shipped in the package (built from genai-prices, MIT)."""
    return loads_table(bundled_text())


def rates_json(rates: Mapping[str, Rate]) -> dict[str, Any]:
    return {key: rate.to_json() for key, rate in sorted(rates.items())}
