"""The LLM calculator: provider conventions, variants, tiers, and a cross-check
of the bundled table against genai-prices' own calculator."""

from __future__ import annotations

import json
import warnings
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest

from billfold.llmcost import (
    InvalidPriceTable,
    InvalidUsage,
    PriceOverride,
    Rate,
    UnknownModel,
    UnknownProvider,
    _table,
    bundled_table,
    bundled_text,
    loads_table,
    normalize,
    price_usage,
)

AT = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
TABLE = bundled_table()


def cost(provider: str, model: str, usage: dict[str, Any], **options: Any) -> Decimal:
    return price_usage(TABLE, provider, model, usage, at=AT, **options).amount


def mtok(tokens: int, price: str) -> Decimal:
    return tokens * Decimal(price) / 1_000_000


# --- conventions -----------------------------------------------------------------


def test_openai_chat_counts_cached_and_reasoning_inside_its_totals() -> None:
    usage = {
        "prompt_tokens": 10_000,
        "completion_tokens": 2_000,
        "total_tokens": 12_000,
        "prompt_tokens_details": {"cached_tokens": 4_000, "audio_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": 1_500},
    }
    normalized = normalize("openai", "chat", usage)
    assert dict(normalized.buckets) == {
        "input": 6_000,
        "cache_read": 4_000,
        "output": 500,
        "reasoning": 1_500,
    }
    assert sum(normalized.buckets.values()) == usage["total_tokens"]
    # gpt-4o: $2.50 input, $1.25 cached, $10 output (reasoning at the output rate).
    assert cost("openai", "gpt-4o", usage) == (
        mtok(6_000, "2.5") + mtok(4_000, "1.25") + mtok(2_000, "10")
    )


def test_openai_responses_api_uses_its_own_field_names() -> None:
    usage = {
        "input_tokens": 5_000,
        "input_tokens_details": {"cached_tokens": 1_000},
        "output_tokens": 800,
        "output_tokens_details": {"reasoning_tokens": 600},
        "total_tokens": 5_800,
    }
    assert dict(normalize("openai", "responses", usage).buckets) == {
        "input": 4_000,
        "cache_read": 1_000,
        "output": 200,
        "reasoning": 600,
    }
    # gpt-5: $1.25 input, $0.125 cached, $10 output.
    assert cost("openai", "gpt-5", usage, api="responses") == (
        mtok(4_000, "1.25") + mtok(1_000, "0.125") + mtok(800, "10")
    )
    with pytest.raises(InvalidUsage) as caught:
        normalize("openai", "chat", usage)  # the chat API's fields are missing
    assert caught.value.field == "usage.prompt_tokens"


def test_anthropic_reports_cache_tokens_beside_input() -> None:
    usage = {
        "input_tokens": 100,
        "cache_read_input_tokens": 20_000,
        "cache_creation_input_tokens": 3_000,
        "output_tokens": 400,
    }
    normalized = normalize("anthropic", None, usage)
    assert dict(normalized.buckets) == {
        "input": 100,
        "cache_read": 20_000,
        "cache_write_5m": 3_000,
        "output": 400,
    }
    assert normalized.input_tokens == 23_100
    # claude-sonnet-4-5: $3 input, $0.30 read, $3.75 5-minute write, $15 output.
    assert cost("anthropic", "claude-sonnet-4-5-20250929", usage) == (
        mtok(100, "3") + mtok(20_000, "0.3") + mtok(3_000, "3.75") + mtok(400, "15")
    )


def test_the_same_numbers_under_the_other_convention_cost_differently() -> None:
    # Read as OpenAI's, 20,000 cached tokens inside 100 input tokens are impossible.
    with pytest.raises(InvalidUsage):
        normalize(
            "openai",
            "chat",
            {
                "prompt_tokens": 100,
                "completion_tokens": 1,
                "prompt_tokens_details": {"cached_tokens": 20_000},
            },
        )


def test_anthropic_cache_write_ttls_are_priced_apart() -> None:
    usage = {
        "input_tokens": 0,
        "cache_creation_input_tokens": 10_000,
        "cache_creation": {"ephemeral_5m_input_tokens": 4_000, "ephemeral_1h_input_tokens": 6_000},
        "output_tokens": 0,
    }
    # claude-opus-4-1: 5-minute writes $18.75, 1-hour writes $30 per MTok.
    assert cost("anthropic", "claude-opus-4-1", usage) == mtok(4_000, "18.75") + mtok(6_000, "30")
    with pytest.raises(InvalidUsage):
        normalize("anthropic", None, {**usage, "cache_creation_input_tokens": 9_000})


def test_anthropic_thinking_and_web_search() -> None:
    usage = {
        "input_tokens": 1_000,
        "output_tokens": 3_000,
        "output_tokens_details": {"thinking_tokens": 2_500},
        "server_tool_use": {"web_search_requests": 3},
    }
    priced = price_usage(TABLE, "anthropic", "claude-opus-4-1", usage, at=AT)
    assert {line.bucket: line.quantity for line in priced.lines} == {
        "input": 1_000,
        "output": 500,
        "reasoning": 2_500,
        "web_search": 3,
    }
    # Web search is $10 per 1,000 searches.
    assert priced.amount == mtok(1_000, "15") + mtok(3_000, "75") + Decimal("0.03")


def test_batch_processing_halves_anthropic_and_openai() -> None:
    usage = {"input_tokens": 10_000, "output_tokens": 1_000}
    assert cost("anthropic", "claude-sonnet-4-5", usage, processing="batch") == (
        mtok(10_000, "1.5") + mtok(1_000, "7.5")
    )
    chat = {"prompt_tokens": 10_000, "completion_tokens": 1_000}
    assert cost("openai", "gpt-4o", chat, processing="batch") == (
        mtok(10_000, "1.25") + mtok(1_000, "5")
    )
    assert cost("openai", "gpt-5", chat, service_tier="priority") == (
        mtok(10_000, "2.5") + mtok(1_000, "20")
    )


def test_long_context_tier_reprices_every_token_above_the_threshold() -> None:
    below = {"input_tokens": 150_000, "cache_read_input_tokens": 50_000, "output_tokens": 1_000}
    above = {**below, "input_tokens": 150_001}
    # Exactly 200,000 input tokens is still the base tier ...
    assert cost("anthropic", "claude-sonnet-4-5", below) == (
        mtok(150_000, "3") + mtok(50_000, "0.3") + mtok(1_000, "15")
    )
    # ... and one more reprices all of them, output included.
    assert cost("anthropic", "claude-sonnet-4-5", above) == (
        mtok(150_001, "6") + mtok(50_000, "0.6") + mtok(1_000, "22.5")
    )


def test_embeddings() -> None:
    usage = {"prompt_tokens": 123_457, "total_tokens": 123_457}
    priced = price_usage(TABLE, "openai", "text-embedding-3-small", usage, at=AT, api="embeddings")
    assert [(line.bucket, line.quantity) for line in priced.lines] == [("embeddings", 123_457)]
    assert priced.amount == mtok(123_457, "0.02") == Decimal("0.00246914")
    assert priced.amount_minor(9) == 2_469_140


def test_google_thoughts_are_additive() -> None:
    usage = {
        "promptTokenCount": 1_000,
        "cachedContentTokenCount": 400,
        "candidatesTokenCount": 200,
        "thoughtsTokenCount": 300,
    }
    assert dict(normalize("google", None, usage).buckets) == {
        "input": 600,
        "cache_read": 400,
        "output": 200,
        "reasoning": 300,
    }
    # gemini-2.5-pro: $1.25 input, $0.125 cached, $10 output.
    assert cost("google", "gemini-2.5-pro", usage) == (
        mtok(600, "1.25") + mtok(400, "0.125") + mtok(500, "10")
    )


def test_mistral_is_openai_shaped() -> None:
    priced = price_usage(
        TABLE,
        "mistral",
        "mistral-large-latest",
        {"prompt_tokens": 1_000, "completion_tokens": 100},
        at=AT,
    )
    assert priced.amount > 0
    assert [line.bucket for line in priced.lines] == ["input", "output"]


# --- refusals, overrides, exactness ----------------------------------------------


def test_unknown_models_and_providers_are_never_free() -> None:
    with pytest.raises(UnknownModel):
        cost("openai", "gpt-imaginary-9", {"prompt_tokens": 1, "completion_tokens": 1})
    with pytest.raises(UnknownProvider):
        cost("acme", "m", {"prompt_tokens": 1})
    # A usage bucket the model has no price for makes it unpriced too.
    no_search = next(
        model.id
        for model in TABLE.providers["anthropic"]
        if "web_search_per_k" not in model.prices[-1].rates
    )
    with pytest.raises(UnknownModel):
        cost(
            "anthropic",
            no_search,
            {"input_tokens": 1, "output_tokens": 1, "server_tool_use": {"web_search_requests": 1}},
        )


@pytest.mark.parametrize(
    "usage",
    [
        {"prompt_tokens": 1.5, "completion_tokens": 1},
        {"prompt_tokens": -1, "completion_tokens": 1},
        {"prompt_tokens": True, "completion_tokens": 1},
        {"prompt_tokens": "10", "completion_tokens": 1},
        {"completion_tokens": 1},
        {
            "prompt_tokens": 10,
            "completion_tokens": 5,
            "completion_tokens_details": {"reasoning_tokens": 6},
        },
        ["not", "an", "object"],
    ],
)
def test_bad_usage_is_refused(usage: Any) -> None:
    with pytest.raises(InvalidUsage):
        normalize("openai", "chat", usage)


def test_overrides_negotiate_rates_and_price_private_models() -> None:
    usage = {"prompt_tokens": 1_000_000, "completion_tokens": 1_000_000}
    discount = PriceOverride(rates={}, multiplier=Decimal("0.8"))
    assert cost("openai", "gpt-4o", usage, override=discount) == Decimal("10.0")  # 0.8 × 12.5
    fixed = PriceOverride(rates={"output": Rate(Decimal("7"))})
    assert cost("openai", "gpt-4o", usage, override=fixed) == Decimal("9.5")
    private = PriceOverride(rates={"input": Rate(Decimal("1")), "output": Rate(Decimal("2"))})
    assert cost("openai", "ft:my-model", usage, override=private) == Decimal("3")


def test_totals_round_half_up_once() -> None:
    # gpt-5 cached reads cost $0.125/MTok: 1 token is $0.000000125, 0.125 nano-dollars... ×1
    priced = price_usage(
        TABLE, "openai", "gpt-5", {"prompt_tokens": 1, "completion_tokens": 0}, at=AT
    )
    assert priced.amount == Decimal("0.00000125")
    assert priced.amount_minor(9) == 1_250
    assert priced.amount_minor(6) == 1  # 1.25 micro-dollars rounds to 1
    half = price_usage(
        TABLE, "openai", "gpt-5", {"prompt_tokens": 2, "completion_tokens": 0}, at=AT
    )
    assert half.amount_minor(5) == 0  # 0.25 → 0
    assert (
        price_usage(
            TABLE, "openai", "gpt-5", {"prompt_tokens": 4, "completion_tokens": 0}, at=AT
        ).amount_minor(5)
        == 1
    )  # 0.5 → 1, half up


def test_the_bundled_table_has_no_float_and_every_provider() -> None:
    def walk(node: Any) -> None:
        assert not isinstance(node, float)
        if isinstance(node, dict):
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(json.loads(bundled_text(), parse_float=Decimal))
    assert set(TABLE.providers) >= {"openai", "anthropic", "google", "mistral"}
    assert TABLE.source["name"] == "genai-prices"
    with pytest.raises(InvalidPriceTable):
        loads_table(
            '{"format": "billfold.llm_prices/1", "version": "x", "currency": "USD",'
            ' "unit": "per_mtok", "providers": [{"id": "openai", "models": [{"id": "m",'
            ' "match": {"equals": "m"}, "prices": [{"rates": {"input": 0.5}}]}]}]}'
        )


# --- cross-check against genai-prices ---------------------------------------------


def _corpus() -> list[tuple[str, str, str, dict[str, Any], dict[str, str]]]:
    """(provider, api, model, raw usage, context) for every bundled model."""
    cases: list[tuple[str, str, str, dict[str, Any], dict[str, str]]] = []
    for provider, models in TABLE.providers.items():
        for model in models:
            reference = _reference(model.match)
            if reference is None:
                continue
            rates = model.rates_at(AT, {})
            for size in (1_234, 150_000, 300_000):
                for context in ({}, {"processing": "batch"}, {"service_tier": "priority"}):
                    usage, api = _usage_for(provider, model.id, size, rates)
                    cases.append((provider, api, reference, usage, context))
    return cases


def _reference(clause: dict[str, Any]) -> str | None:
    kind, value = next(iter(clause.items()))
    if kind in ("equals", "starts_with"):
        return str(value)
    if kind in ("or", "and"):
        return _reference(value[0])
    return None


def _usage_for(provider: str, model_id: str, size: int, rates: Any) -> tuple[dict[str, Any], str]:
    cached = size // 4 if "cache_read" in rates else 0
    # genai-prices treats an unpriced bucket as free; Billfold refuses it.
    out = 1 if "output" in rates else 0
    if provider == "anthropic":
        write = size // 8 if "cache_write" in rates else 0
        one_hour = write // 2 if "cache_write_1h" in rates else 0
        return {
            "input_tokens": size - cached - write,
            "cache_read_input_tokens": cached,
            "cache_creation_input_tokens": write,
            "cache_creation": {
                "ephemeral_5m_input_tokens": write - one_hour,
                "ephemeral_1h_input_tokens": one_hour,
            },
            "output_tokens": (size // 10 + 7) * out,
        }, "messages"
    if provider == "google":
        return {
            "promptTokenCount": size,
            "cachedContentTokenCount": cached,
            "candidatesTokenCount": size // 10 * out,
            "thoughtsTokenCount": 7 * out,
        }, "generate_content"
    if provider == "openai" and "embedding" in model_id:
        return {"prompt_tokens": size, "total_tokens": size}, "embeddings"
    return {
        "prompt_tokens": size,
        "completion_tokens": (size // 10 + 11) * out,
        "prompt_tokens_details": {"cached_tokens": cached},
        "completion_tokens_details": {"reasoning_tokens": 11 * out},
    }, "chat"


GENAI_FLAVOR = {
    "chat": "chat",
    "embeddings": "embeddings",
    "messages": "default",
    "generate_content": "default",
}


def test_bundled_table_matches_genai_prices_within_half_a_percent() -> None:
    import genai_prices

    compared = 0
    mismatches = []
    for provider, api, reference, usage, context in _corpus():
        flavor = "default" if provider == "mistral" else GENAI_FLAVOR[api]
        root = "usageMetadata" if provider == "google" else "usage"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                extracted = genai_prices.extract_usage(
                    {"model": reference, root: usage}, provider_id=provider, api_flavor=flavor
                )
                theirs = genai_prices.calc_price(
                    extracted.usage,
                    reference,
                    provider_id=provider,
                    genai_request_timestamp=AT,
                    price_context=context or None,
                ).total_price
            except (LookupError, ValueError):
                continue
        ours = price_usage(
            TABLE,
            provider,
            reference,
            usage,
            at=AT,
            api=api,
            processing=context.get("processing"),
            service_tier=context.get("service_tier"),
        ).amount
        compared += 1
        if abs(ours - theirs) > theirs * Decimal("0.005"):
            mismatches.append((provider, reference, context, usage, ours, theirs))
    print(f"cross-checked {compared} usages")
    assert compared > 1_500, compared
    assert not mismatches, mismatches[:5]


def test_find_keeps_its_answers_and_gives_the_same_ones(monkeypatch: pytest.MonkeyPatch) -> None:
    table = loads_table(bundled_text())  # a table of its own: no answers kept yet
    references = ["gpt-4o", "GPT-4o", "gpt-4o-2024-08-06", "gpt-4o-20240806", "no-such-model"]
    fresh = [table._find("openai", reference) for reference in references]
    assert fresh[0] is not None
    assert fresh[-1] is None
    assert [table.find("openai", r) for r in references] == fresh
    assert [table.find("openai", r) for r in references] == fresh  # now kept
    assert len(table._found) == len(references)
    # Bounded: references come from callers, so a full table of answers is emptied.
    monkeypatch.setattr(_table, "FOUND_CACHED_MAX", 3)
    table._found.clear()
    assert [table.find("openai", r) for r in references] == fresh
    assert len(table._found) <= 3
