"""Regenerate the LLM price table bundled in `billfold.llmcost` from genai-prices.

    .venv/bin/python scripts/llm_prices_snapshot.py [--date YYYY-MM-DD] [--out FILE]

genai-prices (Pydantic, MIT) keeps providers' list prices as exact Decimals per
million tokens, with dated history, batch and service-tier variants and
long-context tiers. This script copies the OpenAI, Anthropic, Google and
Mistral models into Billfold's own table format (see
`billfold/llmcost/_table.py`), keeping only the price keys Billfold's usage
buckets read. The output is also what `billfold prices import FILE` takes, so
an operator can refresh the table by running this after upgrading
genai-prices, then importing the file as a new version.

Prices are copied as decimal strings: no float is ever involved.
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import UTC, date, datetime
from decimal import Decimal
from importlib.metadata import version
from pathlib import Path
from typing import Any

from genai_prices import types as gp
from genai_prices.data import providers

PROVIDERS = ("openai", "anthropic", "google", "mistral")

# genai-prices price key -> Billfold rate key. Per-MTok unless the rate key ends in `_per_k`.
RATE_KEYS = {
    "input_mtok": "input",
    "output_mtok": "output",
    "cache_read_mtok": "cache_read",
    "cache_write_mtok": "cache_write",
    "cache_write_5m_mtok": "cache_write_5m",
    "cache_write_1h_mtok": "cache_write_1h",
    "input_audio_mtok": "input_audio",
    "output_audio_mtok": "output_audio",
    "input_image_mtok": "input_image",
    "output_image_mtok": "output_image",
    "input_video_mtok": "input_video",
    "output_video_mtok": "output_video",
    "output_reasoning_mtok": "output_reasoning",
    "web_searches_kcount": "web_search_per_k",
    "storage_searches_kcount": "file_search_per_k",
}

DEFAULT_OUT = (
    Path(__file__).resolve().parent.parent / "src" / "billfold" / "llmcost" / "data" / "prices.json"
)


def _decimal_text(value: Decimal) -> str:
    assert isinstance(value, Decimal), value
    assert value.is_finite(), value
    assert value >= 0, value
    text = format(value, "f")
    return text.rstrip("0").rstrip(".") if "." in text else text


def _rate(value: Decimal | gp.TieredPrices) -> Any:
    if isinstance(value, gp.TieredPrices):
        return {
            "base": _decimal_text(value.base),
            # genai-prices applies a tier when the request's whole input is
            # strictly above `start`, and then to every token of that price key.
            "tiers": [
                {"above_input_tokens": tier.start, "price": _decimal_text(tier.price)}
                for tier in value.tiers
            ],
        }
    return _decimal_text(value)


def _rates(price: gp.ModelPrice, dropped: set[str]) -> dict[str, Any]:
    rates: dict[str, Any] = {}
    for key, value in price.__dict__.items():
        if value is None or key.startswith("_"):
            continue
        ours = RATE_KEYS.get(key)
        if ours is None:
            dropped.add(key)
            continue
        rates[ours] = _rate(value)
    return rates


def _match(clause: Any) -> Any:
    if isinstance(clause, gp.ClauseOr):
        return {"or": [_match(inner) for inner in clause.or_]}
    if isinstance(clause, gp.ClauseAnd):
        return {"and": [_match(inner) for inner in clause.and_]}
    for name in ("starts_with", "ends_with", "contains", "regex", "equals"):
        if hasattr(clause, name):
            return {name: getattr(clause, name)}
    raise TypeError(f"unknown clause {clause!r}")


def _start(constraint: Any) -> str | bool | None:
    """The ISO date a price starts, None for always, False for a shape we skip."""
    if constraint is None:
        return None
    if isinstance(constraint, gp.StartDateConstraint):
        return constraint.start_date.isoformat()
    return False  # time-of-day prices (off-peak discounts) are not modelled


def _model(model: gp.ModelInfo, dropped: set[str]) -> dict[str, Any] | None:
    conditional = model.prices if isinstance(model.prices, list) else None
    prices: list[dict[str, Any]] = []
    if conditional is None:
        assert isinstance(model.prices, gp.ModelPrice)
        prices.append({"effective_from": None, "rates": _rates(model.prices, dropped)})
    else:
        for index, entry in enumerate(conditional):
            start = _start(entry.constraint)
            if start is False:
                return None
            # genai-prices uses the first entry when no constraint holds yet.
            prices.append(
                {
                    "effective_from": None if index == 0 else start,
                    "rates": _rates(entry.prices, dropped),
                }
            )
    if not any("input" in entry["rates"] or "output" in entry["rates"] for entry in prices):
        return None  # billed by the hour, page or character: not a token model
    variants = []
    for variant in model.price_variants or ():
        start = _start(variant.constraint)
        if start is False:
            continue
        variants.append(
            {
                "when": dict(variant.when),
                "effective_from": start,
                "rates": _rates(variant.prices, dropped),
            }
        )
    entry: dict[str, Any] = {"id": model.id, "match": _match(model.match)}
    if model.name:
        entry["name"] = model.name
    if model.context_window:
        entry["context_window"] = model.context_window
    entry["prices"] = prices
    if variants:
        entry["variants"] = variants
    return entry


def build(snapshot_date: date) -> dict[str, Any]:
    dropped: set[str] = set()
    out_providers = []
    skipped: list[str] = []
    for provider in providers:
        if provider.id not in PROVIDERS:
            continue
        models = []
        for model in provider.models:
            entry = _model(model, dropped)
            if entry is None:
                skipped.append(f"{provider.id}/{model.id}")
            else:
                models.append(entry)
        out_providers.append({"id": provider.id, "name": provider.name, "models": models})
    source_version = version("genai-prices")
    return {
        "format": "billfold.llm_prices/1",
        "version": f"{snapshot_date.isoformat()}.genai-prices-{source_version}",
        "currency": "USD",
        "unit": "per_mtok",
        "generated_at": datetime.now(UTC).replace(microsecond=0).isoformat(),
        "source": {
            "name": "genai-prices",
            "version": source_version,
            "license": "MIT",
            "copyright": "Copyright (c) Pydantic Services Inc. 2025 to present",
            "url": "https://github.com/pydantic/genai-prices",
        },
        "notes": {
            "price_keys_not_modelled": sorted(dropped),
            "models_not_included": sorted(skipped),
        },
        "providers": out_providers,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--date", default=datetime.now(UTC).date().isoformat())
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args()
    document = build(date.fromisoformat(args.date))
    text = json.dumps(document, indent=1, sort_keys=False, ensure_ascii=False) + "\n"
    args.out.write_text(text, encoding="utf-8")
    count = sum(len(provider["models"]) for provider in document["providers"])
    sys.stdout.write(f"wrote {args.out}: {document['version']}, {count} models\n")


if __name__ == "__main__":
    main()
