"""The calculator: normalized usage × the rates in force = an exact cost.

Each bucket is priced at its own rate, or at the rate of the bucket it is a
part of when the table has none for it (cache reads at the input rate, 1-hour
writes at the cache-write rate, reasoning at the output rate…). A bucket with
tokens and no rate at all makes the model unpriced: `UnknownModel`, never $0.

Amounts are exact Decimals: a count times a price with at most 12 decimals,
shifted by 10**-6 (per million) or 10**-3 (per thousand). Rounding to an
asset's minor units happens once, on the total, half up (`Priced.amount_minor`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from decimal import ROUND_HALF_UP, Context, Decimal, localcontext
from typing import Any

from billfold.llmcost._errors import UnknownModel
from billfold.llmcost._table import PriceTable, Rate, decimal_text
from billfold.llmcost._usage import CALL_BUCKETS, NormalizedUsage, normalize

#: Bucket -> the rate keys that price it, most specific first.
BUCKET_RATES: dict[str, tuple[str, ...]] = {
    "input": ("input",),
    "embeddings": ("input",),
    "cache_read": ("cache_read", "input"),
    "cache_write": ("cache_write", "input"),
    "cache_write_5m": ("cache_write_5m", "cache_write", "input"),
    "cache_write_1h": ("cache_write_1h", "cache_write", "input"),
    "input_audio": ("input_audio", "input"),
    "input_image": ("input_image", "input"),
    "input_video": ("input_video", "input"),
    "output": ("output",),
    "reasoning": ("output_reasoning", "output"),
    "output_audio": ("output_audio", "output"),
    "output_image": ("output_image", "output"),
    "output_video": ("output_video", "output"),
    "web_search": ("web_search_per_k",),
    "file_search": ("file_search_per_k",),
}
PROCESSING = ("sync", "batch")
# Wide enough that no product of a count and a price is ever rounded.
_EXACT = Context(prec=60, rounding=ROUND_HALF_UP)


@dataclass(frozen=True, slots=True)
class PriceOverride:
    """An organization's negotiated prices for a model: `rates` replace list
    rates key by key; `multiplier` scales every list rate it does not replace
    (0.8 for a 20 % discount). With `rates`, an unlisted model becomes priced."""

    rates: Mapping[str, Rate]
    multiplier: Decimal | None = None
    id: str | None = None


@dataclass(frozen=True, slots=True)
class Line:
    bucket: str
    quantity: int
    #: "1M tokens" or "1K calls": what `unit_price` is the price of.
    unit: str
    unit_price: Decimal
    amount: Decimal

    def to_json(self) -> dict[str, Any]:
        return {
            "bucket": self.bucket,
            "tokens": self.quantity,
            "unit": self.unit,
            "unit_price": decimal_text(self.unit_price),
            "amount": decimal_text(self.amount),
        }


@dataclass(frozen=True, slots=True)
class Priced:
    provider: str
    model: str
    #: The table's id for the model (the reference itself for an override-only price).
    model_id: str
    currency: str
    amount: Decimal
    lines: tuple[Line, ...]
    usage: NormalizedUsage
    price_table_version: str
    processing: str
    service_tier: str | None
    override_id: str | None

    def amount_minor(self, scale: int) -> int:
        """The total in minor units of a `scale`-decimal asset, rounded half up once."""
        with localcontext(_EXACT):
            return int(self.amount.scaleb(scale).to_integral_value(rounding=ROUND_HALF_UP))


def _rate_for(bucket: str, rates: Mapping[str, Rate]) -> Rate | None:
    for key in BUCKET_RATES[bucket]:
        rate = rates.get(key)
        if rate is not None:
            return rate
    return None


def _apply(rates: dict[str, Rate], override: PriceOverride | None) -> dict[str, Rate]:
    if override is None:
        return rates
    if override.multiplier is not None:
        rates = {key: rate.scaled(override.multiplier) for key, rate in rates.items()}
    return {**rates, **override.rates}


def price_normalized(
    table: PriceTable,
    usage: NormalizedUsage,
    model: str,
    *,
    at: datetime,
    processing: str | None = None,
    service_tier: str | None = None,
    override: PriceOverride | None = None,
) -> Priced:
    """Price usage already split into buckets; see `price_usage`."""
    assert at.tzinfo is not None, "instants are timezone-aware"
    processing = processing or "sync"
    assert processing in PROCESSING, processing
    entry = table.find(usage.provider, model)
    context = {"processing": processing} if processing == "batch" else {}
    if service_tier:
        context["service_tier"] = service_tier
    if entry is not None:
        rates = _apply(entry.rates_at(at, context), override)
        model_id = entry.id
    elif override is not None and override.rates:
        rates, model_id = dict(override.rates), model
    else:
        raise UnknownModel(
            f"The price table {table.version} has no {usage.provider} model {model!r}.",
            field="model",
        )
    lines = []
    with localcontext(_EXACT):
        for bucket, quantity in usage.buckets.items():
            rate = _rate_for(bucket, rates)
            if rate is None:
                raise UnknownModel(
                    f"{usage.provider} {model!r} has no price for {bucket} in "
                    f"price table {table.version}.",
                    field="usage",
                )
            unit_price = rate.at(usage.input_tokens)
            per_thousand = bucket in CALL_BUCKETS
            amount = (quantity * unit_price).scaleb(-3 if per_thousand else -6)
            lines.append(
                Line(
                    bucket,
                    quantity,
                    "1K calls" if per_thousand else "1M tokens",
                    unit_price,
                    amount,
                )
            )
        total = sum((line.amount for line in lines), Decimal(0))
    return Priced(
        provider=usage.provider,
        model=model,
        model_id=model_id,
        currency=table.currency,
        amount=total,
        lines=tuple(lines),
        usage=usage,
        price_table_version=table.version,
        processing=processing,
        service_tier=service_tier,
        override_id=override.id if override is not None else None,
    )


def price_usage(
    table: PriceTable,
    provider: str,
    model: str,
    usage: Any,
    *,
    at: datetime,
    api: str | None = None,
    processing: str | None = None,
    service_tier: str | None = None,
    override: PriceOverride | None = None,
) -> Priced:
    """What one model call cost at list price (or the organization's `override`).

    `usage` is the provider's raw usage object for `api` (default: the
    provider's main API); `processing` is `sync` (default) or `batch`;
    `service_tier` selects a tier's prices (`flex`, `priority`). Prices are
    those in force at `at`, the time of the call.

    Raises `UnknownProvider`, `InvalidUsage` or `UnknownModel`.
    """
    normalized = normalize(provider, api, usage)
    return price_normalized(
        table,
        normalized,
        model,
        at=at,
        processing=processing,
        service_tier=service_tier,
        override=override,
    )
