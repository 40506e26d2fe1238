"""Provider usage objects into disjoint token buckets.

Providers count the same tokens differently, and the wire shape does not say
how: the convention is keyed on (provider, api), never guessed from fields.

- OpenAI (chat completions, responses) and Mistral are *inclusive*: cached
  and cache-written tokens are inside `prompt_tokens`/`input_tokens`, and
  reasoning and audio tokens are inside `completion_tokens`/`output_tokens`.
- Anthropic messages are *additive* for input: `input_tokens` is only the
  uncached input, and cache reads and writes are reported beside it. Its
  `output_tokens` include thinking (`output_tokens_details.thinking_tokens`
  is a read-only split of it).
- Google (generateContent `usageMetadata`) is inclusive for cached input, but
  `thoughtsTokenCount` and `toolUsePromptTokenCount` are additive.

Every bucket is a leaf: summing the buckets never counts a token twice, and
the tokens of a usage add up to the provider's own total.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from billfold.llmcost._errors import InvalidUsage, UnknownProvider

#: Token buckets, in the order a breakdown lists them.
TOKEN_BUCKETS = (
    "input",
    "cache_read",
    "cache_write",
    "cache_write_5m",
    "cache_write_1h",
    "input_audio",
    "input_image",
    "input_video",
    "embeddings",
    "output",
    "reasoning",
    "output_audio",
    "output_image",
    "output_video",
)
#: Server-side tool calls billed per call.
CALL_BUCKETS = ("web_search", "file_search")
BUCKETS = TOKEN_BUCKETS + CALL_BUCKETS

#: provider -> its APIs, the default first, with each one's convention.
APIS: dict[str, dict[str, str]] = {
    "openai": {"chat": "inclusive", "responses": "inclusive", "embeddings": "inclusive"},
    "anthropic": {"messages": "additive"},
    "google": {"generate_content": "mixed"},
    "mistral": {"chat": "inclusive"},
}

TOKENS_MAX = 10**12


@dataclass(frozen=True, slots=True)
class NormalizedUsage:
    provider: str
    api: str
    convention: str
    #: Leaf bucket -> count; only buckets with a count above zero.
    buckets: Mapping[str, int]
    #: All input tokens of the request, cached and written ones included: what
    #: long-context tiers are decided on.
    input_tokens: int
    raw: Mapping[str, Any]


def default_api(provider: str) -> str:
    apis = APIS.get(provider)
    if apis is None:
        raise UnknownProvider(
            f"No usage convention for provider {provider!r}; known: {', '.join(APIS)}.",
            field="provider",
        )
    return next(iter(apis))


def _count(node: Any, key: str, path: str, *, required: bool = False) -> int:
    value = node.get(key) if isinstance(node, Mapping) else None
    if value is None:
        if required:
            raise InvalidUsage(f"usage.{path} is required for this API.", field=f"usage.{path}")
        return 0
    if isinstance(value, Decimal) and value.is_finite() and value == value.to_integral_value():
        value = int(value)
    if type(value) is not int or not 0 <= value <= TOKENS_MAX:
        raise InvalidUsage(
            f"usage.{path} is a whole number of tokens from 0 to {TOKENS_MAX}.",
            field=f"usage.{path}",
        )
    return value


def _child(node: Mapping[str, Any], key: str, path: str) -> Mapping[str, Any]:
    value = node.get(key)
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise InvalidUsage(f"usage.{path} is an object.", field=f"usage.{path}")
    return value


def _leaf(total: int, parts: Mapping[str, int], total_name: str) -> int:
    rest = total - sum(parts.values())
    if rest < 0:
        named = ", ".join(f"{name} {count}" for name, count in parts.items() if count)
        raise InvalidUsage(
            f"usage.{total_name} is {total}, less than the tokens it contains ({named}).",
            field=f"usage.{total_name}",
        )
    return rest


def _openai_like(usage: Mapping[str, Any], api: str) -> tuple[dict[str, int], int]:
    if api == "embeddings":
        prompt = _count(usage, "prompt_tokens", "prompt_tokens", required=True)
        return {"embeddings": prompt}, prompt
    if api == "responses":
        names = ("input_tokens", "input_tokens_details", "output_tokens", "output_tokens_details")
    else:
        names = (
            "prompt_tokens",
            "prompt_tokens_details",
            "completion_tokens",
            "completion_tokens_details",
        )
    total_in, in_details, total_out, out_details = names
    prompt = _count(usage, total_in, total_in, required=True)
    completion = _count(usage, total_out, total_out, required=True)
    details_in = _child(usage, in_details, in_details)
    details_out = _child(usage, out_details, out_details)
    inside_input = {
        "cache_read": _count(details_in, "cached_tokens", f"{in_details}.cached_tokens"),
        "cache_write": _count(details_in, "cache_write_tokens", f"{in_details}.cache_write_tokens"),
        "input_audio": _count(details_in, "audio_tokens", f"{in_details}.audio_tokens"),
    }
    inside_output = {
        "reasoning": _count(details_out, "reasoning_tokens", f"{out_details}.reasoning_tokens"),
        "output_audio": _count(details_out, "audio_tokens", f"{out_details}.audio_tokens"),
    }
    buckets = {
        "input": _leaf(prompt, inside_input, total_in),
        **inside_input,
        "output": _leaf(completion, inside_output, total_out),
        **inside_output,
    }
    return buckets, prompt


def _anthropic(usage: Mapping[str, Any]) -> tuple[dict[str, int], int]:
    uncached = _count(usage, "input_tokens", "input_tokens", required=True)
    output = _count(usage, "output_tokens", "output_tokens", required=True)
    read = _count(usage, "cache_read_input_tokens", "cache_read_input_tokens")
    creation = _child(usage, "cache_creation", "cache_creation")
    five_min = _count(
        creation, "ephemeral_5m_input_tokens", "cache_creation.ephemeral_5m_input_tokens"
    )
    one_hour = _count(
        creation, "ephemeral_1h_input_tokens", "cache_creation.ephemeral_1h_input_tokens"
    )
    written = (
        _count(usage, "cache_creation_input_tokens", "cache_creation_input_tokens")
        if usage.get("cache_creation_input_tokens") is not None
        else five_min + one_hour
    )
    # Writes without a TTL split are 5-minute writes, Anthropic's default.
    unsplit = _leaf(
        written,
        {"ephemeral_5m": five_min, "ephemeral_1h": one_hour},
        "cache_creation_input_tokens",
    )
    details = _child(usage, "output_tokens_details", "output_tokens_details")
    thinking = _count(details, "thinking_tokens", "output_tokens_details.thinking_tokens")
    tools = _child(usage, "server_tool_use", "server_tool_use")
    buckets = {
        "input": uncached,
        "cache_read": read,
        "cache_write_5m": five_min + unsplit,
        "cache_write_1h": one_hour,
        "output": _leaf(output, {"thinking": thinking}, "output_tokens"),
        "reasoning": thinking,
        "web_search": _count(tools, "web_search_requests", "server_tool_use.web_search_requests"),
    }
    return buckets, uncached + read + written


_GOOGLE_KEYS = {
    "promptTokenCount": "prompt_token_count",
    "cachedContentTokenCount": "cached_content_token_count",
    "candidatesTokenCount": "candidates_token_count",
    "thoughtsTokenCount": "thoughts_token_count",
    "toolUsePromptTokenCount": "tool_use_prompt_token_count",
    "promptTokensDetails": "prompt_tokens_details",
    "candidatesTokensDetails": "candidates_tokens_details",
}
_MODALITY_BUCKET = {"AUDIO": "audio", "IMAGE": "image", "DOCUMENT": "image", "VIDEO": "video"}


def _google_modalities(usage: Mapping[str, Any], key: str, direction: str) -> dict[str, int]:
    counts = {f"{direction}_audio": 0, f"{direction}_image": 0, f"{direction}_video": 0}
    details = usage.get(key)
    if details is None:
        return counts
    if not isinstance(details, list):
        raise InvalidUsage(f"usage.{key} is a list.", field=f"usage.{key}")
    for index, item in enumerate(details):
        if not isinstance(item, Mapping):
            raise InvalidUsage(f"usage.{key}[{index}] is an object.", field=f"usage.{key}")
        kind = _MODALITY_BUCKET.get(str(item.get("modality", "")).upper())
        if kind is not None:
            counts[f"{direction}_{kind}"] += _count(
                item, "tokenCount" if "tokenCount" in item else "token_count", f"{key}[{index}]"
            )
    return counts


def _google(usage: Mapping[str, Any]) -> tuple[dict[str, int], int]:
    # The REST API spells fields in camelCase, the Python SDK in snake_case.
    if not any(key in usage for key in _GOOGLE_KEYS):
        usage = {camel: usage[snake] for camel, snake in _GOOGLE_KEYS.items() if snake in usage}
    prompt = _count(usage, "promptTokenCount", "promptTokenCount")
    tool_prompt = _count(usage, "toolUsePromptTokenCount", "toolUsePromptTokenCount")
    cached = _count(usage, "cachedContentTokenCount", "cachedContentTokenCount")
    candidates = _count(usage, "candidatesTokenCount", "candidatesTokenCount")
    thoughts = _count(usage, "thoughtsTokenCount", "thoughtsTokenCount")
    total_input = prompt + tool_prompt
    modal_in = _google_modalities(usage, "promptTokensDetails", "input")
    modal_out = _google_modalities(usage, "candidatesTokensDetails", "output")
    buckets = {
        "input": _leaf(total_input, {"cache_read": cached, **modal_in}, "promptTokenCount"),
        "cache_read": cached,
        **modal_in,
        "output": _leaf(candidates, modal_out, "candidatesTokenCount"),
        **modal_out,
        "reasoning": thoughts,
    }
    return buckets, total_input


def normalize(provider: str, api: str | None, usage: Any) -> NormalizedUsage:
    """Disjoint buckets of a provider's raw usage object, keeping the raw object.

    Raises `UnknownProvider` or `InvalidUsage` (a missing total, a count that
    is not a whole number, or parts that exceed their total).
    """
    provider = provider.lower() if isinstance(provider, str) else provider
    api = default_api(provider) if api is None else api
    conventions = APIS[provider]
    if api not in conventions:
        raise InvalidUsage(
            f"{provider} usage comes from one of these APIs: {', '.join(conventions)}.",
            field="api",
        )
    if not isinstance(usage, Mapping):
        raise InvalidUsage("usage is the provider's usage object.", field="usage")
    if provider in ("openai", "mistral"):
        buckets, input_tokens = _openai_like(usage, api)
    elif provider == "anthropic":
        buckets, input_tokens = _anthropic(usage)
    else:
        buckets, input_tokens = _google(usage)
    assert set(buckets) <= set(BUCKETS), buckets
    return NormalizedUsage(
        provider=provider,
        api=api,
        convention=conventions[api],
        buckets={name: buckets[name] for name in BUCKETS if buckets.get(name)},
        input_tokens=input_tokens,
        raw=usage,
    )
