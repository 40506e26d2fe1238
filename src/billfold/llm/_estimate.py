"""The worst case of a model call, known before it runs, with no network.

Input: the UTF-8 byte count of everything the request sends the model. For a
byte-level BPE tokenizer (OpenAI's cl100k/o200k, and the tokenizers Anthropic's
models are documented to behave like) every token covers at least one byte of
its text, so tokens ≤ bytes. The count is taken over the request's JSON, whose
quoting and keys (`{"role":"user","content":""}` is 28 bytes) outweigh the few
template tokens a chat format adds per message (≤ 4), plus a constant for the
reply's priming. What is not text gets a fixed allowance that is an assumption,
not a proof: `IMAGE_TOKENS_MAX` per image or file part (OpenAI's largest
high-detail image is ~2,500 tokens; Anthropic's cap is ~1,600), and
`TOOLS_SYSTEM_TOKENS_MAX` when tools are sent to Anthropic (its hidden tool
prompt is documented at 159–530 tokens).

Output: `max_tokens` (or the API's equivalent) when given, never more than
the model's output limit; the model's limit when not given; for a model not
in `OUTPUT_TOKENS_MAX`, `OUTPUT_TOKENS_DEFAULT`, deliberately high.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

IMAGE_TOKENS_MAX = 3_000
TOOLS_SYSTEM_TOKENS_MAX = 1_000
PRIMING_TOKENS = 16
OUTPUT_TOKENS_DEFAULT = 128_000

#: Output limits by model-name prefix; the longest matching prefix wins.
OUTPUT_TOKENS_MAX: Mapping[str, int] = {
    "gpt-3.5-turbo": 4_096,
    "gpt-4": 8_192,
    "gpt-4-turbo": 4_096,
    "gpt-4o": 16_384,
    "gpt-4o-mini": 16_384,
    "gpt-4.1": 32_768,
    "gpt-4.5": 16_384,
    "gpt-5": 128_000,
    "o1": 100_000,
    "o3": 100_000,
    "o4-mini": 100_000,
    "text-embedding": 0,
    "claude-3-haiku": 4_096,
    "claude-3-opus": 4_096,
    "claude-3-sonnet": 4_096,
    "claude-3-5": 8_192,
    "claude-3-7-sonnet": 64_000,
    "claude-haiku-4": 64_000,
    "claude-sonnet-4": 64_000,
    "claude-opus-4": 32_000,
    "claude-opus-4-5": 64_000,
}

_NON_TEXT_PARTS = frozenset({"image", "image_url", "input_image", "file", "input_file", "document"})


def output_limit(model: str) -> int:
    best = ""
    for prefix in OUTPUT_TOKENS_MAX:
        if model.startswith(prefix) and len(prefix) > len(best):
            best = prefix
    return OUTPUT_TOKENS_MAX[best] if best else OUTPUT_TOKENS_DEFAULT


@dataclass(frozen=True, slots=True)
class Estimate:
    """The most a call can use, in tokens."""

    provider: str
    api: str
    model: str
    input_tokens: int
    output_tokens: int
    #: Whether the request may write the prompt cache (Anthropic `cache_control`),
    #: which costs more than plain input.
    cache_write: bool = False


def _json_bytes(value: object) -> int:
    return len(json.dumps(value, ensure_ascii=False, default=str).encode())


def _non_text_parts(value: object) -> int:
    """How many image or file parts `value` holds, at any depth."""
    if isinstance(value, Mapping):
        own = 1 if value.get("type") in _NON_TEXT_PARTS else 0
        return own + sum(_non_text_parts(item) for item in value.values())
    if isinstance(value, list | tuple):
        return sum(_non_text_parts(item) for item in value)
    return 0


def _prompt_bound(*parts: object) -> int:
    sent = [part for part in parts if part is not None]
    return (
        sum(_json_bytes(part) for part in sent)
        + IMAGE_TOKENS_MAX * sum(_non_text_parts(part) for part in sent)
        + PRIMING_TOKENS
    )


def _output_bound(model: str, requested: object, choices: object = 1) -> int:
    limit = output_limit(model)
    if isinstance(requested, int) and not isinstance(requested, bool) and requested >= 0:
        limit = min(requested, limit)
    count = choices if isinstance(choices, int) and not isinstance(choices, bool) else 1
    return limit * max(count, 1)


def openai_chat(params: Mapping[str, Any]) -> Estimate:
    model = str(params.get("model", ""))
    requested = params.get("max_completion_tokens")
    if requested is None:
        requested = params.get("max_tokens")
    return Estimate(
        "openai",
        "chat",
        model,
        _prompt_bound(
            params.get("messages"),
            params.get("tools"),
            params.get("functions"),
            params.get("response_format"),
            params.get("prediction"),
        ),
        _output_bound(model, requested, params.get("n", 1)),
    )


def openai_responses(params: Mapping[str, Any]) -> Estimate:
    model = str(params.get("model", ""))
    return Estimate(
        "openai",
        "responses",
        model,
        _prompt_bound(
            params.get("input"), params.get("instructions"), params.get("tools"), params.get("text")
        ),
        _output_bound(model, params.get("max_output_tokens")),
    )


def openai_embeddings(params: Mapping[str, Any]) -> Estimate:
    model = str(params.get("model", ""))
    given = params.get("input")
    # Token arrays are counted exactly; text by its bytes.
    if isinstance(given, list) and given and all(isinstance(item, int) for item in given):
        bound = len(given)
    elif isinstance(given, list) and given and all(isinstance(item, list) for item in given):
        bound = sum(len(item) for item in given)
    elif isinstance(given, list):
        bound = sum(len(str(item).encode()) + 1 for item in given)
    else:
        bound = len(str(given or "").encode()) + 1
    return Estimate("openai", "embeddings", model, bound, 0)


def anthropic_messages(params: Mapping[str, Any]) -> Estimate:
    model = str(params.get("model", ""))
    tools = params.get("tools")
    bound = _prompt_bound(params.get("messages"), params.get("system"), tools)
    if tools:
        bound += TOOLS_SYSTEM_TOKENS_MAX
    cache_write = '"cache_control"' in json.dumps(
        [params.get("messages"), params.get("system"), tools, params.get("cache_control")],
        default=str,
    )
    return Estimate(
        "anthropic",
        "messages",
        model,
        bound,
        _output_bound(model, params.get("max_tokens")),
        cache_write=cache_write,
    )
