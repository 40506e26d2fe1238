"""`billfold.llm.wrap`: the official openai and anthropic SDKs, wrapped, against
a fake provider speaking their wire formats and a real Billfold API.

Prices (tests/llm_support.py): 0.001 USD an input token, 0.002 an output
token, in real time; USD is stored at 9 decimals, so a token in is 1,000,000
minor units and a token out 2,000,000.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import anthropic
import openai
import pytest

import billfold.llm
from billfold import AsyncBillfold, Billfold
from billfold.llm import _estimate
from tests.llm_support import (
    ANTHROPIC_INPUT,
    OPENAI_PROMPT_TOKENS,
    TEXT_PARTS,
    FakeUpstream,
    ThreadServer,
    billfold_server,
    fake_upstream,
    holds,
    llm_customer,
    usage_events,
)

IN = 1_000_000
OUT = 2_000_000
HI = [{"role": "user", "content": "hi"}]


@dataclass
class World:
    database_url: str
    upstream: FakeUpstream
    server: ThreadServer
    billfold: Billfold
    customer: str
    made: list[Any] = field(default_factory=list)

    def openai(self, **wrap: Any) -> openai.OpenAI:
        client = openai.OpenAI(api_key="sk-test", base_url=self.upstream.base_url + "/v1")
        self.made.append(client)
        return billfold.llm.wrap(client, customer=self.customer, billfold=self.billfold, **wrap)

    def anthropic(self, **wrap: Any) -> anthropic.Anthropic:
        client = anthropic.Anthropic(api_key="sk-test", base_url=self.upstream.base_url)
        self.made.append(client)
        return billfold.llm.wrap(client, customer=self.customer, billfold=self.billfold, **wrap)

    def async_billfold(self) -> AsyncBillfold:
        return AsyncBillfold(self.server.api_key, base_url=self.server.base_url)

    def available(self) -> str:
        wallet = self.billfold.customers.wallet(self.customer)
        return str(wallet["balances"][0]["available"])


@pytest.fixture
def world(database_url: str) -> Iterator[World]:
    with (
        fake_upstream() as upstream,
        billfold_server(database_url) as server,
        Billfold(server.api_key, base_url=server.base_url) as client,
    ):
        customer = llm_customer(client)
        made = World(database_url, upstream, server, client, customer)
        yield made
        for model_client in made.made:
            model_client.close()


def test_a_chat_call_is_held_then_settled_with_its_usage(world: World) -> None:
    chat = world.openai(tags={"feature": "search"})
    answer = chat.chat.completions.create(model="gpt-4o", messages=HI, max_tokens=5)
    assert answer.choices[0].message.content == "Hello from the fake upstream"
    assert world.upstream.count() == 1
    [hold] = holds(world.database_url)
    assert hold == ("captured", hold[1], 12 * IN + 5 * OUT, hold[1] - 12 * IN - 5 * OUT)
    [data] = usage_events(world.database_url)
    assert (data["model"], data["model_resolved"]) == ("gpt-4o", "gpt-4o-2024-08-06")
    assert data["llm"]["model"] == "gpt-4o-2024-08-06"
    assert data["provider"] == "openai"
    assert (data["input_tokens"], data["output_tokens"], data["cached_input_tokens"]) == (12, 5, 4)
    assert data["usage_source"] == "provider"
    assert data["feature"] == "search"
    assert data["llm"]["usage"]["prompt_tokens"] == OPENAI_PROMPT_TOKENS
    assert world.available() == "99.978"
    usage = world.billfold.meters.usage("input_tokens", customer_id=world.customer)
    assert "12" in str(usage)


def test_the_estimate_holds_the_rated_worst_case(world: World) -> None:
    chat = world.openai()
    chat.chat.completions.create(model="gpt-4o", messages=HI, max_tokens=5)
    [hold] = holds(world.database_url)
    bound = _estimate.openai_chat({"model": "gpt-4o", "messages": HI, "max_tokens": 5})
    assert bound.output_tokens == 5
    assert bound.input_tokens >= len(b"hi")
    assert hold[1] == bound.input_tokens * IN + 5 * OUT


def test_a_declined_call_never_reaches_the_provider(world: World) -> None:
    poor = llm_customer(world.billfold, "poor", funds="0.01")
    raw = openai.OpenAI(api_key="sk-test", base_url=world.upstream.base_url + "/v1")
    world.made.append(raw)
    chat = billfold.llm.wrap(
        raw,
        customer=poor,
        billfold=world.billfold,
    )
    with pytest.raises(billfold.llm.AuthorizationDeclined) as declined:
        chat.chat.completions.create(model="gpt-4o", messages=HI, max_tokens=100)
    assert declined.value.code == "insufficient_funds"
    assert declined.value.status == 402
    assert world.upstream.count() == 0


def test_a_stream_forces_usage_hides_the_extra_chunk_and_settles(world: World) -> None:
    chat = world.openai()
    stream = chat.chat.completions.create(model="gpt-4o", messages=HI, stream=True)
    chunks = list(stream)
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == "".join(TEXT_PARTS)
    assert all(chunk.choices for chunk in chunks)
    assert world.upstream.requests[0].body["stream_options"] == {"include_usage": True}
    [hold] = holds(world.database_url)
    assert hold[0] == "captured"
    assert hold[2] == 12 * IN + 7 * OUT
    # Asked for, the usage chunk is the caller's to see.
    asked = chat.chat.completions.create(
        model="gpt-4o", messages=HI, stream=True, stream_options={"include_usage": True}
    )
    assert [chunk.usage is not None for chunk in asked][-1]


def test_a_dropped_stream_settles_on_an_estimate_never_zero(world: World) -> None:
    chat = world.openai()
    stream = chat.chat.completions.create(model="gpt-4o-drop", messages=HI, stream=True)
    got = []
    with pytest.raises(openai.APIError):
        got.extend(stream)
    [hold] = holds(world.database_url)
    [data] = usage_events(world.database_url)
    assert data["usage_source"] == "estimated"
    assert data["output_tokens"] >= 1
    assert hold[0] == "captured"
    assert hold[2] > 0


def test_a_caller_who_stops_early_still_pays_for_what_streamed(world: World) -> None:
    chat = world.anthropic()
    with chat.messages.create(
        model="claude-sonnet-4-6", max_tokens=100, messages=HI, stream=True
    ) as stream:
        for event in stream:
            if event.type == "content_block_delta":
                break
    [data] = usage_events(world.database_url)
    # message_start gave the input; the output is what was streamed, not the placeholder.
    assert data["input_tokens"] == sum(ANTHROPIC_INPUT.values())
    assert data["output_tokens"] >= 1
    assert data["usage_source"] == "estimated"
    assert holds(world.database_url)[0][2] > 0


def test_provider_errors_release_the_one_hold_of_all_retries(world: World) -> None:
    chat = world.openai()
    with pytest.raises(openai.InternalServerError):
        chat.chat.completions.create(model="gpt-4o-error-500", messages=HI)
    # The SDK retried twice; all three attempts ran under the one hold.
    assert world.upstream.count() == 3
    assert [hold[0] for hold in holds(world.database_url)] == ["released"]
    assert usage_events(world.database_url) == []
    assert world.available() == "100.00"


def test_a_policy_may_charge_the_input_of_a_failed_call(world: World) -> None:
    chat = world.openai(on_provider_error="charge_input")
    with pytest.raises(openai.BadRequestError):
        chat.chat.completions.create(model="gpt-4o-error-400", messages=HI, max_tokens=9)
    [hold] = holds(world.database_url)
    bound = _estimate.openai_chat({"model": "gpt-4o", "messages": HI, "max_tokens": 9})
    assert hold[0] == "captured"
    assert hold[2] == bound.input_tokens * IN


def test_a_timeout_after_sending_charges_the_input_not_zero(world: World) -> None:
    world.upstream.gate = threading.Event()  # the provider never answers in time
    raw = openai.OpenAI(
        api_key="sk-test", base_url=world.upstream.base_url + "/v1", max_retries=0, timeout=0.5
    )
    world.made.append(raw)
    chat = billfold.llm.wrap(raw, customer=world.customer, billfold=world.billfold)
    with pytest.raises(openai.APITimeoutError):
        chat.chat.completions.create(model="gpt-4o", messages=HI, max_tokens=5)
    world.upstream.gate.set()
    [hold] = holds(world.database_url)
    bound = _estimate.openai_chat({"model": "gpt-4o", "messages": HI, "max_tokens": 5})
    assert hold[0] == "captured"
    assert hold[2] == bound.input_tokens * IN
    [data] = usage_events(world.database_url)
    assert data["usage_source"] == "estimated"


def test_responses_and_embeddings_are_billed(world: World) -> None:
    client = world.openai()
    answer = client.responses.create(model="gpt-4.1", input="hi", max_output_tokens=3)
    assert answer.output_text == "Hello from the"
    events = list(client.responses.create(model="gpt-4.1", input="hi", stream=True))
    assert events[-1].type == "response.completed"
    client.embeddings.create(model="text-embedding-3-small", input=["a", "b"])
    charged = [hold[2] for hold in holds(world.database_url)]
    assert charged == [12 * IN + 3 * OUT, 12 * IN + 7 * OUT, 2 * IN]
    assert [d["api"] for d in usage_events(world.database_url)] == [
        "responses",
        "responses",
        "embeddings",
    ]


def test_anthropic_messages_count_cache_tokens_once(world: World) -> None:
    client = world.anthropic(tags={"team": "a"})
    message = client.messages.create(model="claude-sonnet-4-6", max_tokens=100, messages=HI)
    assert message.content[0].type == "text"
    with client.messages.stream(model="claude-sonnet-4-6", max_tokens=3, messages=HI) as stream:
        assert stream.get_final_text() == "Hello from the"
    first, second = usage_events(world.database_url)
    total_input = sum(ANTHROPIC_INPUT.values())
    assert (first["input_tokens"], first["cached_input_tokens"]) == (total_input, 2)
    assert first["cache_write_input_tokens"] == 3
    assert (second["output_tokens"], second["usage_source"]) == (3, "provider")
    assert first["team"] == "a"
    assert [hold[2] for hold in holds(world.database_url)] == [
        total_input * IN + 7 * OUT,
        total_input * IN + 3 * OUT,
    ]


async def test_async_clients_are_billed_streamed_or_not(world: World) -> None:
    async with world.async_billfold() as bf:
        chat = billfold.llm.wrap(
            openai.AsyncOpenAI(api_key="sk-test", base_url=world.upstream.base_url + "/v1"),
            customer=world.customer,
            billfold=bf,
        )
        await chat.chat.completions.create(model="gpt-4o", messages=HI, max_tokens=2)
        stream = await chat.chat.completions.create(model="gpt-4o", messages=HI, stream=True)
        parts = [chunk.choices[0].delta.content async for chunk in stream]
        assert "".join(p or "" for p in parts) == "".join(TEXT_PARTS)
        claude = billfold.llm.wrap(
            anthropic.AsyncAnthropic(api_key="sk-test", base_url=world.upstream.base_url),
            customer=world.customer,
            billfold=bf,
        )
        async with claude.messages.stream(
            model="claude-sonnet-4-6", max_tokens=100, messages=HI
        ) as messages:
            assert await messages.get_final_text() == "".join(TEXT_PARTS)
        with pytest.raises(billfold.llm.AuthorizationDeclined):
            await chat.chat.completions.create(
                model="gpt-4o", messages=[{"role": "user", "content": "x" * 80_000}]
            )
        await chat.close()
        await claude.close()
    assert [hold[2] for hold in holds(world.database_url)][:3] == [
        12 * IN + 2 * OUT,
        12 * IN + 7 * OUT,
        15 * IN + 7 * OUT,
    ]


def test_without_a_price_vendor_cost_times_markup_applies(world: World) -> None:
    bare = world.billfold.customers.create(external_id="bare")["id"]
    world.billfold.customers.create_grant(bare, asset="USD", amount="1.00", purpose="paid")
    world.billfold.llm.update_settings(markup_percent="50")
    raw = openai.OpenAI(api_key="sk-test", base_url=world.upstream.base_url + "/v1")
    world.made.append(raw)
    chat = billfold.llm.wrap(raw, customer=bare, billfold=world.billfold)
    chat.chat.completions.create(model="gpt-4o", messages=HI, max_tokens=5)
    [hold] = holds(world.database_url)
    [data] = usage_events(world.database_url)
    assert data["llm"]["usage"]["prompt_tokens_details"]["cached_tokens"] == 4
    cost = world.billfold.llm.cost(
        provider="openai", api="chat", model="gpt-4o-2024-08-06", usage=data["llm"]["usage"]
    )
    vendor_minor = int(Decimal(cost["cost"]["amount"]) * 10**9)
    assert hold[0] == "captured"
    assert hold[2] == vendor_minor * 3 // 2
    assert 0 < hold[2] < hold[1]


def test_ways_around_billing_are_refused(world: World) -> None:
    chat = world.openai()
    with pytest.raises(billfold.llm.NotBilled):
        chat.with_raw_response.chat.completions.create(model="gpt-4o", messages=HI)
    with pytest.raises(billfold.llm.NotBilled):
        chat.chat.completions.with_raw_response.create(model="gpt-4o", messages=HI)
    with pytest.raises(billfold.llm.NotBilled):
        chat.completions.create(model="gpt-3.5-turbo-instruct", prompt="hi")
    with pytest.raises(billfold.llm.NotBilled):
        world.anthropic().beta.messages.create(model="m", max_tokens=1, messages=HI)
    assert chat.models is not None  # free endpoints pass through
    with pytest.raises(ValueError, match="tags may not use"):
        world.openai(tags={"model": "x"})
    with pytest.raises(TypeError, match="openai or anthropic client"):
        billfold.llm.wrap(object(), customer=world.customer, billfold=world.billfold)
    assert world.upstream.count() == 0


def test_output_bounds() -> None:
    assert _estimate.output_limit("gpt-4o-mini-2024-07-18") == 16_384
    assert _estimate.output_limit("claude-opus-4-5-20251101") == 64_000
    assert _estimate.output_limit("some-new-model") == _estimate.OUTPUT_TOKENS_DEFAULT
    unset = _estimate.openai_chat({"model": "gpt-4o", "messages": HI})
    assert unset.output_tokens == 16_384
    capped = _estimate.anthropic_messages(
        {"model": "claude-3-haiku", "messages": HI, "max_tokens": 10**9}
    )
    assert capped.output_tokens == 4_096
    several = _estimate.openai_chat({"model": "gpt-4o", "messages": HI, "max_tokens": 10, "n": 3})
    assert several.output_tokens == 30
    text = "héllo wörld — 日本語 " * 50
    bound = _estimate.openai_chat(
        {"model": "gpt-4o", "messages": [{"role": "user", "content": text}]}
    )
    assert bound.input_tokens >= len(text.encode())
    image = _estimate.anthropic_messages(
        {
            "model": "claude-sonnet-4-6",
            "max_tokens": 1,
            "messages": [{"role": "user", "content": [{"type": "image", "source": {}}]}],
        }
    )
    assert image.input_tokens >= _estimate.IMAGE_TOKENS_MAX
