"""Provider usage → the normalized counts a usage event carries.

Normalized fields (all integers, every provider the same convention, the
inclusive one OpenTelemetry's GenAI conventions use):

- `input_tokens`: every input token, cached or not. For Anthropic that is
  `input_tokens + cache_creation_input_tokens + cache_read_input_tokens`
  (Anthropic reports cache reads and writes beside its `input_tokens`; OpenAI
  reports them inside `prompt_tokens`).
- `cached_input_tokens`: of those, read from the prompt cache.
- `cache_write_input_tokens`: of those, written to the cache (Anthropic).
- `output_tokens`: every generated token, reasoning included.
- `reasoning_tokens`: of those, hidden reasoning/thinking (when reported).
- `model`: the model asked for; `model_resolved`: the provider's answer
  (a dated snapshot, say), also `llm.model`, which vendor cost is priced by.
- `usage_source`: `provider` (the provider's own count) or `estimated` (a
  stream that ended early or a policy charge: see `Tracker.estimated`).

The raw provider usage travels unchanged in `data.llm.usage`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from billfold.llm._estimate import Estimate


def _int(value: object) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _detail(usage: Mapping[str, Any], group: str, name: str) -> int:
    details = usage.get(group)
    return _int(details.get(name)) if isinstance(details, Mapping) else 0


def normalize(provider: str, api: str, usage: Mapping[str, Any]) -> dict[str, int]:
    """The normalized counts of one provider usage object."""
    if provider == "anthropic":
        cache_read = _int(usage.get("cache_read_input_tokens"))
        cache_write = _int(usage.get("cache_creation_input_tokens"))
        return {
            "input_tokens": _int(usage.get("input_tokens")) + cache_read + cache_write,
            "output_tokens": _int(usage.get("output_tokens")),
            "cached_input_tokens": cache_read,
            "cache_write_input_tokens": cache_write,
            "reasoning_tokens": _detail(usage, "output_tokens_details", "thinking_tokens"),
        }
    if api == "responses":
        return {
            "input_tokens": _int(usage.get("input_tokens")),
            "output_tokens": _int(usage.get("output_tokens")),
            "cached_input_tokens": _detail(usage, "input_tokens_details", "cached_tokens"),
            "cache_write_input_tokens": 0,
            "reasoning_tokens": _detail(usage, "output_tokens_details", "reasoning_tokens"),
        }
    return {
        "input_tokens": _int(usage.get("prompt_tokens")),
        "output_tokens": _int(usage.get("completion_tokens")),
        "cached_input_tokens": _detail(usage, "prompt_tokens_details", "cached_tokens"),
        "cache_write_input_tokens": _detail(usage, "prompt_tokens_details", "cache_write_tokens"),
        "reasoning_tokens": _detail(usage, "completion_tokens_details", "reasoning_tokens"),
    }


def event_data(
    estimate: Estimate,
    *,
    model: str | None,
    usage: Mapping[str, Any] | None,
    counts: Mapping[str, int],
    usage_source: str,
    tags: Mapping[str, Any],
) -> dict[str, Any]:
    """The `data` of the usage event that settles a call."""
    resolved = model or estimate.model
    data: dict[str, Any] = dict(tags)
    data |= {
        # The model asked for, as the estimate had it, so that a price's
        # `model` dimension matches the hold and the charge alike; the
        # provider's resolved snapshot beside it, and in `llm` for its cost.
        "model": estimate.model,
        "model_resolved": resolved,
        "provider": estimate.provider,
        "api": estimate.api,
        **counts,
        "usage_source": usage_source,
        "llm": {
            "provider": estimate.provider,
            "api": estimate.api,
            "model": resolved,
            "usage": dict(usage) if usage is not None else None,
        },
    }
    return data


def worst_usage(estimate: Estimate) -> dict[str, Any]:
    """The worst case as the provider's own usage object, so that a price
    computed from `data.llm.usage` (vendor cost × markup) rates it too. A
    request that may write Anthropic's cache is priced as writing all its
    input for an hour, the dearest input there is."""
    inputs, outputs = estimate.input_tokens, estimate.output_tokens
    if estimate.provider == "anthropic":
        if estimate.cache_write:
            return {
                "input_tokens": 0,
                "cache_creation_input_tokens": inputs,
                "cache_creation": {
                    "ephemeral_5m_input_tokens": 0,
                    "ephemeral_1h_input_tokens": inputs,
                },
                "cache_read_input_tokens": 0,
                "output_tokens": outputs,
            }
        return {"input_tokens": inputs, "output_tokens": outputs}
    if estimate.api == "responses":
        return {"input_tokens": inputs, "output_tokens": outputs, "total_tokens": inputs + outputs}
    if estimate.api == "embeddings":
        return {"prompt_tokens": inputs, "total_tokens": inputs}
    return {
        "prompt_tokens": inputs,
        "completion_tokens": outputs,
        "total_tokens": inputs + outputs,
    }


def estimate_data(estimate: Estimate, tags: Mapping[str, Any]) -> dict[str, Any]:
    """The `data` of the worst-case event an authorization holds the price of."""
    usage = worst_usage(estimate)
    return dict(tags) | {
        "model": estimate.model,
        "model_resolved": estimate.model,
        "provider": estimate.provider,
        "api": estimate.api,
        "input_tokens": estimate.input_tokens,
        "output_tokens": estimate.output_tokens,
        "cached_input_tokens": 0,
        "cache_write_input_tokens": estimate.input_tokens if estimate.cache_write else 0,
        "reasoning_tokens": 0,
        "usage_source": "estimated",
        "llm": {
            "provider": estimate.provider,
            "api": estimate.api,
            "model": estimate.model,
            "usage": usage,
        },
    }


RESERVED_DATA_KEYS = frozenset(
    {
        "model",
        "model_resolved",
        "provider",
        "api",
        "input_tokens",
        "output_tokens",
        "cached_input_tokens",
        "cache_write_input_tokens",
        "reasoning_tokens",
        "usage_source",
        "llm",
    }
)


@dataclass
class Tracker:
    """What one call has shown of its usage so far: a final usage object, or
    the streamed parts an estimate is made from when the stream ends early."""

    estimate: Estimate
    model: str | None = None
    usage: dict[str, Any] | None = None
    #: Whether `usage` is the provider's final word (a stream's last usage).
    final: bool = False
    streamed_bytes: int = 0
    streamed_parts: int = 0
    _anthropic: dict[str, Any] = field(default_factory=dict)

    def response(self, body: Mapping[str, Any]) -> None:
        """A whole (non-streamed) response body."""
        if isinstance(body.get("model"), str):
            self.model = body["model"]
        usage = body.get("usage")
        if isinstance(usage, Mapping):
            self.usage = dict(usage)
            self.final = True

    def _text(self, text: object) -> None:
        if isinstance(text, str) and text:
            self.streamed_bytes += len(text.encode())
            self.streamed_parts += 1

    def event(self, event: Mapping[str, Any]) -> None:
        """One streamed event or chunk, as its JSON object."""
        if self.estimate.provider == "anthropic":
            self._anthropic_event(event)
        elif self.estimate.api == "responses":
            self._responses_event(event)
        else:
            self._chat_chunk(event)

    def _chat_chunk(self, chunk: Mapping[str, Any]) -> None:
        if isinstance(chunk.get("model"), str):
            self.model = chunk["model"]
        for choice in chunk.get("choices") or ():
            delta = choice.get("delta") or {}
            self._text(delta.get("content"))
            self._text(delta.get("refusal"))
            for call in delta.get("tool_calls") or ():
                self._text((call.get("function") or {}).get("arguments"))
        usage = chunk.get("usage")
        if isinstance(usage, Mapping):
            self.usage = dict(usage)
            self.final = True

    def _responses_event(self, event: Mapping[str, Any]) -> None:
        kind = event.get("type")
        if isinstance(kind, str) and kind.endswith(".delta"):
            self._text(event.get("delta"))
        response = event.get("response")
        if isinstance(response, Mapping):
            if isinstance(response.get("model"), str):
                self.model = response["model"]
            usage = response.get("usage")
            if kind in {"response.completed", "response.incomplete", "response.failed"} and (
                isinstance(usage, Mapping)
            ):
                self.usage = dict(usage)
                self.final = True

    def _anthropic_event(self, event: Mapping[str, Any]) -> None:
        kind = event.get("type")
        if kind == "message_start":
            message = event.get("message") or {}
            if isinstance(message.get("model"), str):
                self.model = message["model"]
            self._anthropic.update(message.get("usage") or {})
            self.usage = dict(self._anthropic)
        elif kind == "content_block_delta":
            delta = event.get("delta") or {}
            for name in ("text", "partial_json", "thinking"):
                self._text(delta.get(name))
        elif kind == "message_delta":
            # Cumulative counts: the latest replaces, never adds.
            given = {k: v for k, v in (event.get("usage") or {}).items() if v is not None}
            self._anthropic.update(given)
            self.usage = dict(self._anthropic)
        elif kind == "message_stop":
            self.final = self.usage is not None

    def streamed_output_tokens(self) -> int:
        """An estimate of the tokens streamed so far: ~4 bytes a token, and at
        least one per streamed part (providers stream about a token a part)."""
        return max(math.ceil(self.streamed_bytes / 4), self.streamed_parts)

    def settled_counts(self) -> tuple[dict[str, int], str]:
        """The counts to bill and their source. Never zero once dispatched:
        without the provider's final usage the input is the provider's
        (Anthropic's `message_start`) or our bound, and the output what was
        streamed, whichever is more for each (a provider's explicit count is
        kept as it is)."""
        if self.final and self.usage is not None:
            return normalize(self.estimate.provider, self.estimate.api, self.usage), "provider"
        partial = normalize(self.estimate.provider, self.estimate.api, self.usage or {})
        if partial["input_tokens"] == 0:
            partial["input_tokens"] = self.estimate.input_tokens
        partial["output_tokens"] = max(partial["output_tokens"], self.streamed_output_tokens())
        return partial, "estimated"

    def input_only_counts(self) -> dict[str, int]:
        """A failed call charged its input, by policy: our bound."""
        counts = normalize(self.estimate.provider, self.estimate.api, {})
        counts["input_tokens"] = self.estimate.input_tokens
        return counts
