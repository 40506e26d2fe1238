"""LLM usage to vendor cost: pure functions, no I/O.

`normalize` splits a provider's raw usage object into disjoint token buckets
(keyed on the provider's convention: OpenAI counts cached and reasoning
tokens inside its totals, Anthropic reports cache tokens beside its input).
`price_usage` prices them with a `PriceTable` at the prices in force at the
call's time, with batch and service-tier variants, cache-write TTLs and
long-context tiers, exactly in Decimal.

The bundled table (`bundled_table()`) is a dated snapshot built from
genai-prices (MIT, Copyright (c) Pydantic Services Inc.; see
data/NOTICE-genai-prices.txt) by scripts/llm_prices_snapshot.py.
"""

from billfold.llmcost._calc import (
    BUCKET_RATES,
    PROCESSING,
    Line,
    Priced,
    PriceOverride,
    price_normalized,
    price_usage,
)
from billfold.llmcost._errors import (
    InvalidPriceTable,
    InvalidUsage,
    LlmCostError,
    UnknownModel,
    UnknownProvider,
)
from billfold.llmcost._table import (
    RATE_KEYS,
    ModelPrices,
    PriceTable,
    Rate,
    Tier,
    bundled_table,
    bundled_text,
    decimal_text,
    loads_table,
    parse_decimal,
    parse_rates,
    parse_table,
    rates_json,
)
from billfold.llmcost._usage import APIS, BUCKETS, NormalizedUsage, default_api, normalize

__all__ = [
    "APIS",
    "BUCKETS",
    "BUCKET_RATES",
    "PROCESSING",
    "RATE_KEYS",
    "InvalidPriceTable",
    "InvalidUsage",
    "Line",
    "LlmCostError",
    "ModelPrices",
    "NormalizedUsage",
    "PriceOverride",
    "PriceTable",
    "Priced",
    "Rate",
    "Tier",
    "UnknownModel",
    "UnknownProvider",
    "bundled_table",
    "bundled_text",
    "decimal_text",
    "default_api",
    "loads_table",
    "normalize",
    "parse_decimal",
    "parse_rates",
    "parse_table",
    "price_normalized",
    "price_usage",
    "rates_json",
]
