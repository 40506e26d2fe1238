"""`wrap(client, customer=…)`: the same client, every model call billed.

The wrapped client is a thin proxy: `create` on chat completions, responses
and embeddings (OpenAI) and on messages (Anthropic), and Anthropic's
`messages.stream`, are replaced by billed versions; everything else passes
through. Ways to call a model that would bypass billing (`with_raw_response`,
`with_streaming_response`, OpenAI's `.stream()`/`.parse()` helpers) raise
rather than run unbilled.

One `create` is one logical call under one hold: the provider SDK's own
retries happen inside it, so they never take a second hold.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from typing import Any, TypeVar, cast

from billfold.llm import _estimate
from billfold.llm._billing import AsyncMeter, Opened, Options, SyncMeter
from billfold.llm._estimate import Estimate
from billfold.sdk import AsyncBillfold, Billfold

T = TypeVar("T")
Estimator = Callable[[Mapping[str, Any]], Estimate]


class NotBilled(RuntimeError):
    """A way of calling the model that the wrapper cannot bill."""


def _as_dict(value: object) -> dict[str, Any]:
    if isinstance(value, Mapping):
        return dict(value)
    dump = getattr(value, "model_dump", None)
    if callable(dump):
        dumped = dump(mode="json", exclude_none=True)
        if isinstance(dumped, dict):
            return dumped
    return {}


class _Refused:
    def __init__(self, what: str) -> None:
        self.what = what


class _Proxy:
    """`target` with some attributes replaced, and some refused."""

    def __init__(self, target: object, overrides: Mapping[str, object]) -> None:
        self.__dict__["_billfold_target"] = target
        self.__dict__["_billfold_refused"] = {
            name: value.what for name, value in overrides.items() if isinstance(value, _Refused)
        }
        self.__dict__.update(
            {name: value for name, value in overrides.items() if not isinstance(value, _Refused)}
        )

    def __getattr__(self, name: str) -> Any:
        refused = self.__dict__["_billfold_refused"].get(name)
        if refused is not None:
            raise NotBilled(
                f"{refused} is not billed by billfold.llm.wrap; "
                "use create() (stream=True to stream)."
            )
        return getattr(self.__dict__["_billfold_target"], name)

    def __setattr__(self, name: str, value: object) -> None:
        setattr(self.__dict__["_billfold_target"], name, value)

    def __repr__(self) -> str:
        return f"billed({self.__dict__['_billfold_target']!r})"


def _refuse(what: str) -> _Refused:
    return _Refused(what)


def _is_usage_only(chunk: Mapping[str, Any]) -> bool:
    return not chunk.get("choices") and chunk.get("usage") is not None


def _prepare_stream(estimate: Estimate, kwargs: dict[str, Any]) -> bool:
    """Forces usage into an OpenAI chat stream; whether to hide the extra
    usage chunk from a caller who did not ask for it."""
    if estimate.api != "chat" or kwargs.get("stream") is not True:
        return False
    given = kwargs.get("stream_options")
    options = dict(given) if isinstance(given, Mapping) else {}
    asked = options.get("include_usage") is True
    kwargs["stream_options"] = options | {"include_usage": True}
    return not asked


class _SyncStream:
    """The provider's stream, settled when it ends, fails, is closed or is dropped."""

    def __init__(self, stream: Any, meter: SyncMeter, opened: Opened, hide_usage: bool) -> None:
        self._stream = stream
        self._iterator: Iterator[Any] = iter(stream)
        self._meter = meter
        self._opened = opened
        self._hide_usage = hide_usage

    def __iter__(self) -> _SyncStream:
        return self

    def __next__(self) -> Any:
        while True:
            try:
                item = next(self._iterator)
            except BaseException:
                # The end, a dropped connection or the caller's interrupt: bill
                # what the stream showed (the final usage, or an estimate).
                self._meter.settle(self._opened)
                raise
            event = _as_dict(item)
            self._opened.tracker.event(event)
            if not (self._hide_usage and _is_usage_only(event)):
                return item

    def close(self) -> None:
        try:
            self._stream.close()
        finally:
            self._meter.settle(self._opened)

    def __enter__(self) -> _SyncStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)

    def __del__(self) -> None:
        # A caller who drops the stream without closing it still pays for it.
        if not self._opened.done:
            with contextlib.suppress(Exception):
                self.close()


class _AsyncStream:
    def __init__(self, stream: Any, meter: AsyncMeter, opened: Opened, hide_usage: bool) -> None:
        self._loop = asyncio.get_running_loop()
        self._stream = stream
        self._iterator: AsyncIterator[Any] = stream.__aiter__()
        self._meter = meter
        self._opened = opened
        self._hide_usage = hide_usage

    def __aiter__(self) -> _AsyncStream:
        return self

    async def __anext__(self) -> Any:
        while True:
            try:
                item = await self._iterator.__anext__()
            except BaseException:
                await self._meter.settle(self._opened)
                raise
            event = _as_dict(item)
            self._opened.tracker.event(event)
            if not (self._hide_usage and _is_usage_only(event)):
                return item

    async def close(self) -> None:
        try:
            await self._stream.close()
        finally:
            await self._meter.settle(self._opened)

    async def __aenter__(self) -> _AsyncStream:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)

    def __del__(self) -> None:
        # Dropped without being closed: settle on the loop it ran on, if any.
        if not self._opened.done and not self._loop.is_closed():
            settle = self._meter.settle(self._opened)
            with contextlib.suppress(RuntimeError):
                self._loop.call_soon_threadsafe(self._loop.create_task, settle)


def _timed_out(exc: BaseException) -> bool:
    """A timeout came after the request was sent: the provider may well have
    run (and billed) it, so it is not released like a provider's refusal."""
    return type(exc).__name__ == "APITimeoutError"


def _sync_create(create: Any, meter: SyncMeter, estimator: Estimator) -> Callable[..., Any]:
    def billed(**kwargs: Any) -> Any:
        estimate = estimator(kwargs)
        hide_usage = _prepare_stream(estimate, kwargs)
        opened = meter.open(estimate)
        try:
            result = create(**kwargs)
        except BaseException as exc:
            meter.fail(opened, dispatched=_timed_out(exc))
            raise
        if kwargs.get("stream") is True:
            return _SyncStream(result, meter, opened, hide_usage)
        opened.tracker.response(_as_dict(result))
        meter.settle(opened)
        return result

    return billed


def _async_create(create: Any, meter: AsyncMeter, estimator: Estimator) -> Callable[..., Any]:
    async def billed(**kwargs: Any) -> Any:
        estimate = estimator(kwargs)
        hide_usage = _prepare_stream(estimate, kwargs)
        opened = await meter.open(estimate)
        try:
            result = await create(**kwargs)
        except BaseException as exc:
            await meter.fail(opened, dispatched=_timed_out(exc))
            raise
        if kwargs.get("stream") is True:
            return _AsyncStream(result, meter, opened, hide_usage)
        opened.tracker.response(_as_dict(result))
        await meter.settle(opened)
        return result

    return billed


_BYPASSES = ("with_raw_response", "with_streaming_response")
# Model calls the wrapper does not bill, and copies that would drop the
# wrapping: refused rather than run unbilled. (Free endpoints such as files,
# models and moderations pass through.)
_UNBILLED_OPENAI = (
    "with_options",
    "copy",
    "completions",
    "images",
    "audio",
    "realtime",
    "batches",
    "beta",
    "fine_tuning",
    "videos",
)
_UNBILLED_ANTHROPIC = ("with_options", "copy", "beta", "completions")


def _openai(client: Any, meter: Any, make: Callable[..., Callable[..., Any]]) -> _Proxy:
    completions = client.chat.completions
    return _Proxy(
        client,
        {
            "chat": _Proxy(
                client.chat,
                {
                    "completions": _Proxy(
                        completions,
                        {
                            "create": make(completions.create, meter, _estimate.openai_chat),
                            "stream": _refuse("chat.completions.stream()"),
                            "parse": _refuse("chat.completions.parse()"),
                        }
                        | {name: _refuse(name) for name in _BYPASSES},
                    ),
                }
                | {name: _refuse(name) for name in _BYPASSES},
            ),
            "responses": _Proxy(
                client.responses,
                {
                    "create": make(client.responses.create, meter, _estimate.openai_responses),
                    "stream": _refuse("responses.stream()"),
                    "parse": _refuse("responses.parse()"),
                }
                | {name: _refuse(name) for name in _BYPASSES},
            ),
            "embeddings": _Proxy(
                client.embeddings,
                {"create": make(client.embeddings.create, meter, _estimate.openai_embeddings)}
                | {name: _refuse(name) for name in _BYPASSES},
            ),
        }
        | {name: _refuse(name) for name in (*_BYPASSES, *_UNBILLED_OPENAI)},
    )


def _anthropic(
    client: Any, meter: Any, make: Callable[..., Callable[..., Any]], sync: bool
) -> _Proxy:
    messages = client.messages
    create = make(messages.create, meter, _estimate.anthropic_messages)
    return _Proxy(
        client,
        {
            "messages": _Proxy(
                messages,
                {"create": create, "stream": _anthropic_stream(create, sync)}
                | {name: _refuse(name) for name in (*_BYPASSES, "parse")},
            ),
        }
        | {name: _refuse(name) for name in (*_BYPASSES, *_UNBILLED_ANTHROPIC)},
    )


def _anthropic_stream(create: Callable[..., Any], sync: bool) -> Callable[..., Any]:
    """`messages.stream(...)`: the SDK's own stream helper over a billed
    `create(stream=True)`; the hold is taken when the block is entered."""

    def stream(**kwargs: Any) -> Any:
        from anthropic import NOT_GIVEN
        from anthropic.lib.streaming import AsyncMessageStreamManager, MessageStreamManager

        if kwargs.get("output_format") is not None:
            raise NotBilled("messages.stream(output_format=...) is not billed by wrap().")
        kwargs.pop("output_format", None)
        kwargs["stream"] = True
        if sync:
            return MessageStreamManager(lambda: create(**kwargs), output_format=NOT_GIVEN)
        return AsyncMessageStreamManager(create(**kwargs), output_format=NOT_GIVEN)

    return stream


def wrap(
    client: T,
    *,
    customer: str,
    tags: Mapping[str, Any] | None = None,
    billfold: Billfold | AsyncBillfold | None = None,
    event_type: str = "llm.usage",
    hold_amount: str | None = None,
    asset: str = "USD",
    ttl_s: int = 900,
    on_provider_error: str = "release",
) -> T:
    """`client` (an `openai` or `anthropic` client, sync or async) with every
    model call authorized against `customer`'s wallet before it runs and
    settled by a usage event after.

    `customer` is a `cus_…` id or `ext:<external_id>`; `tags` go into every
    usage event's data. The hold is the rated price of the call's worst case
    (`estimate`), or `hold_amount` of `asset` when given. `billfold` defaults
    to a client from `BILLFOLD_API_KEY` and `BILLFOLD_BASE_URL`.
    """
    options = Options(
        customer=customer,
        tags=dict(tags or {}),
        event_type=event_type,
        hold_amount=hold_amount,
        asset=asset,
        ttl_s=ttl_s,
        on_provider_error=cast(Any, on_provider_error),
    )
    module = type(client).__module__.split(".")[0]
    is_async = type(client).__name__.startswith("Async")
    if module not in ("openai", "anthropic"):
        raise TypeError(f"wrap() takes an openai or anthropic client, not {type(client)!r}")
    if is_async:
        async_billfold = billfold if billfold is not None else AsyncBillfold()
        if not isinstance(async_billfold, AsyncBillfold):
            raise TypeError("an async model client needs an AsyncBillfold")
        meter: Any = AsyncMeter(async_billfold, options)
        make: Callable[..., Callable[..., Any]] = _async_create
    else:
        sync_billfold = billfold if billfold is not None else Billfold()
        if not isinstance(sync_billfold, Billfold):
            raise TypeError("a sync model client needs a Billfold")
        meter = SyncMeter(sync_billfold, options)
        make = _sync_create
    if module == "openai":
        return cast(T, _openai(client, meter, make))
    return cast(T, _anthropic(client, meter, make, sync=not is_async))
