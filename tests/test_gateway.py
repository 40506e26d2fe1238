"""`billfold gateway`'s app: the official openai and anthropic SDKs pointed at
it with gateway keys, a fake provider behind it, a real Billfold API beside it.

Prices as in tests/test_llm_wrap.py: an input token 1,000,000 minor units of
USD, an output token 2,000,000.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import anthropic
import httpx
import openai
import pytest
import sqlalchemy as sa

from billfold import Billfold, limits
from billfold.api.context import AppContext
from billfold.config import Settings
from billfold.gateway.app import GatewayConfig, Upstream, origin
from billfold.gateway.billing import Settler
from tests.live import free_port
from tests.llm_support import (
    ANTHROPIC_INPUT,
    TEXT_PARTS,
    FakeUpstream,
    ThreadServer,
    billfold_server,
    db_rows,
    fake_upstream,
    holds,
    llm_customer,
    usage_events,
)

IN = 1_000_000
OUT = 2_000_000
HI = [{"role": "user", "content": "hi"}]


@dataclass
class Gate:
    database_url: str
    upstream: FakeUpstream
    server: ThreadServer
    billfold: Billfold
    key: str
    key_id: str
    made: list[Any] = field(default_factory=list)

    @property
    def url(self) -> str:
        assert self.server.gateway_url is not None
        return self.server.gateway_url

    def openai(self, key: str | None = None) -> openai.OpenAI:
        client = openai.OpenAI(api_key=key or self.key, base_url=self.url + "/v1", max_retries=0)
        self.made.append(client)
        return client

    def anthropic(self, key: str | None = None) -> anthropic.Anthropic:
        client = anthropic.Anthropic(api_key=key or self.key, base_url=self.url, max_retries=0)
        self.made.append(client)
        return client

    def settled(self, count: int) -> list[tuple[str, int, int, int]]:
        """The holds, once `count` of them are resolved (settling after a
        client left runs on after its answer)."""
        deadline = time.monotonic() + 30
        while True:
            rows = holds(self.database_url)
            if sum(row[0] != "authorized" for row in rows) >= count or time.monotonic() > deadline:
                return rows
            time.sleep(0.05)


@contextlib.contextmanager
def _gate(database_url: str, upstream: FakeUpstream, config: GatewayConfig) -> Iterator[Gate]:
    with (
        billfold_server(database_url, gateway=config) as server,
        Billfold(server.api_key, base_url=server.base_url) as client,
    ):
        customer = llm_customer(client)
        issued = client.customers.gateway_keys.create(customer, name="app")
        gate = Gate(database_url, upstream, server, client, issued["key"], issued["id"])
        yield gate
        for model_client in gate.made:
            model_client.close()


def _config(upstream: FakeUpstream, *, settler_process: bool = False) -> GatewayConfig:
    return GatewayConfig(
        openai=Upstream(upstream.base_url + "/v1", "sk-operator-openai"),
        anthropic=Upstream(upstream.base_url, "sk-operator-anthropic"),
        settler_process=settler_process,
    )


@pytest.fixture
def gate(database_url: str) -> Iterator[Gate]:
    with fake_upstream() as upstream, _gate(database_url, upstream, _config(upstream)) as made:
        yield made


@pytest.fixture
def gate_with_settler(database_url: str) -> Iterator[Gate]:
    """A server process as `billfold gateway` runs it: a settler process of
    its own ingests the queued usage events."""
    with (
        fake_upstream() as upstream,
        _gate(database_url, upstream, _config(upstream, settler_process=True)) as made,
    ):
        yield made


async def _run_settler(database_url: str) -> None:
    """What `billfold gateway`'s settler process does, until it is stopped at once."""
    ctx = AppContext.create(
        Settings(database_url=database_url, log_level="WARNING", run_worker_in_server=False)
    )
    settler = Settler(ctx, own_queue=True, poll_s=limits.gateway_settle_linger_s)
    settler.start()
    await settler.close()  # ingests everything queued, then returns
    await ctx.engine.dispose()


def test_health_and_upstream_origins(gate: Gate) -> None:
    assert httpx.get(gate.url + "/healthz").json() == {"status": "ok"}
    assert origin("https://api.openai.com/v1/") == "https://api.openai.com"
    assert origin("https://api.anthropic.com") == "https://api.anthropic.com"


def test_a_chat_call_is_forwarded_with_the_operators_key_and_settled(gate: Gate) -> None:
    answer = gate.openai().chat.completions.create(model="gpt-4o", messages=HI, max_tokens=5)
    assert answer.choices[0].message.content == "Hello from the fake upstream"
    [seen] = gate.upstream.requests
    assert seen.headers["authorization"] == "Bearer sk-operator-openai"
    assert gate.key not in str(seen.headers)
    [hold] = gate.settled(1)
    assert hold[0] == "captured"
    assert hold[2] == 12 * IN + 5 * OUT
    [data] = usage_events(gate.database_url)
    assert data["gateway_key_id"] == gate.key_id
    assert (data["input_tokens"], data["output_tokens"], data["usage_source"]) == (
        12,
        5,
        "provider",
    )


def test_tags_from_a_header_reach_the_usage_event(gate: Gate) -> None:
    client = gate.openai()
    client.chat.completions.create(
        model="gpt-4o", messages=HI, extra_headers={"X-Billfold-Tags": '{"feature": "search"}'}
    )
    with pytest.raises(openai.BadRequestError) as refused:
        client.chat.completions.create(
            model="gpt-4o", messages=HI, extra_headers={"X-Billfold-Tags": '{"model": "x"}'}
        )
    assert refused.value.code == "invalid_tags"
    gate.settled(1)
    [data] = usage_events(gate.database_url)
    assert data["feature"] == "search"
    assert gate.upstream.count() == 1


def test_streams_pass_through_with_usage_forced_and_hidden(gate: Gate) -> None:
    chunks = list(gate.openai().chat.completions.create(model="gpt-4o", messages=HI, stream=True))
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == "".join(TEXT_PARTS)
    assert all(chunk.choices for chunk in chunks)
    assert gate.upstream.requests[0].body["stream_options"] == {"include_usage": True}
    [hold] = gate.settled(1)
    assert hold[2] == 12 * IN + 7 * OUT


def test_every_surface_speaks_its_wire_format(gate: Gate) -> None:
    client = gate.openai()
    assert client.responses.create(model="gpt-4.1", input="hi", max_output_tokens=3).output_text
    events = list(client.responses.create(model="gpt-4.1", input="hi", stream=True))
    assert events[-1].type == "response.completed"
    assert len(client.embeddings.create(model="text-embedding-3-small", input=["a", "b"]).data) == 2
    claude = gate.anthropic()
    message = claude.messages.create(model="claude-sonnet-4-6", max_tokens=100, messages=HI)
    assert message.usage.output_tokens == 7
    with claude.messages.stream(model="claude-sonnet-4-6", max_tokens=3, messages=HI) as stream:
        assert stream.get_final_text() == "Hello from the"
    assert gate.upstream.requests[-1].headers["x-api-key"] == "sk-operator-anthropic"
    total_input = sum(ANTHROPIC_INPUT.values())
    assert [row[2] for row in gate.settled(5)] == [
        12 * IN + 3 * OUT,
        12 * IN + 7 * OUT,
        2 * IN,
        total_input * IN + 7 * OUT,
        total_input * IN + 3 * OUT,
    ]


def test_a_declined_call_is_a_402_the_sdks_raise(gate: Gate) -> None:
    poor = llm_customer(gate.billfold, "poor", funds="0.01")
    key = gate.billfold.customers.gateway_keys.create(poor)["key"]
    with pytest.raises(openai.APIStatusError) as raised:
        gate.openai(key).chat.completions.create(model="gpt-4o", messages=HI)
    assert raised.value.status_code == 402
    # The SDK shows the `error` member; the whole answer is an RFC 9457 problem.
    assert raised.value.code == "insufficient_funds"
    problem = raised.value.response.json()
    assert (problem["status"], problem["code"]) == (402, "insufficient_funds")
    assert problem["type"].endswith("/insufficient_funds")
    assert raised.value.response.headers["content-type"] == "application/problem+json"
    with pytest.raises(anthropic.APIStatusError) as refused:
        gate.anthropic(key).messages.create(model="claude-sonnet-4-6", max_tokens=10, messages=HI)
    assert refused.value.status_code == 402
    assert gate.upstream.count() == 0


def test_an_unknown_model_is_never_free(gate: Gate) -> None:
    gate.billfold.llm.update_settings(unknown_model_policy="block")
    with pytest.raises(openai.APIStatusError) as raised:
        gate.openai().chat.completions.create(model="mystery-model", messages=HI)
    assert raised.value.status_code == 402
    assert raised.value.code == "unknown_model"
    assert gate.upstream.count() == 0


def test_unknown_and_revoked_keys_are_refused(gate: Gate) -> None:
    with pytest.raises(openai.AuthenticationError):
        gate.openai("bf_gk_nope").chat.completions.create(model="gpt-4o", messages=HI)
    gate.billfold.customers.gateway_keys.revoke("ext:acme", gate.key_id)
    with pytest.raises(anthropic.AuthenticationError):
        gate.anthropic().messages.create(model="claude-sonnet-4-6", max_tokens=10, messages=HI)
    assert gate.upstream.count() == 0
    assert holds(gate.database_url) == []


@pytest.mark.parametrize("lookup_ttl_s", [0.0, 0.5])
def test_a_revoked_key_is_refused_once_its_lookup_expires(
    database_url: str, lookup_ttl_s: float
) -> None:
    """A key's customer, once read, serves its calls for `lookup_ttl_s`
    (0: never kept): its revocation reaches the gateway that much later."""
    with fake_upstream() as upstream:
        config = dataclasses.replace(_config(upstream), lookup_ttl_s=lookup_ttl_s)
        with _gate(database_url, upstream, config) as gate:
            gate.openai().chat.completions.create(model="gpt-4o", messages=HI)
            gate.billfold.customers.gateway_keys.revoke("ext:acme", gate.key_id)
            time.sleep(lookup_ttl_s)
            with pytest.raises(openai.AuthenticationError):
                gate.openai().chat.completions.create(model="gpt-4o", messages=HI)
            assert gate.upstream.count() == 1
            assert [row[0] for row in gate.settled(1)] == ["captured"]


def test_a_provider_error_is_passed_on_and_releases_the_hold(gate: Gate) -> None:
    with pytest.raises(openai.RateLimitError):
        gate.openai().chat.completions.create(model="gpt-4o-error-429", messages=HI)
    with pytest.raises(anthropic.InternalServerError):
        gate.anthropic().messages.create(model="claude-error-500", max_tokens=10, messages=HI)
    assert [row[0] for row in gate.settled(2)] == ["released", "released"]
    assert usage_events(gate.database_url) == []


def test_retries_named_by_an_idempotency_key_stay_under_one_hold(gate: Gate) -> None:
    gate.upstream.fail_next = [500, 429]
    client = openai.OpenAI(api_key=gate.key, base_url=gate.url + "/v1", max_retries=2)
    gate.made.append(client)
    answer = client.chat.completions.create(
        model="gpt-4o", messages=HI, max_tokens=5, extra_headers={"Idempotency-Key": "call-1"}
    )
    assert answer.choices[0].message.content
    assert gate.upstream.count() == 3
    [hold] = gate.settled(1)
    assert hold[0] == "captured"
    assert hold[2] == 12 * IN + 5 * OUT


def _keyed_call(
    gate: Gate, key: str, max_tokens: int = 5, api_key: str | None = None
) -> httpx.Response:
    body = {"model": "gpt-4o", "messages": HI, "max_tokens": max_tokens}
    headers = {"authorization": f"Bearer {api_key or gate.key}", "idempotency-key": key}
    return httpx.post(gate.url + "/v1/chat/completions", json=body, headers=headers, timeout=30)


def _wait_for_claim_to_end(gate: Gate, key: str) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        ended = db_rows(
            gate.database_url,
            "SELECT completed_at FROM idempotency_keys WHERE key = :key",
            key=f"llm_gw_{gate.key_id}_{key}:call",
        )
        if ended and ended[0][0] is not None:
            return
        time.sleep(0.05)
    raise AssertionError("the call's claim on its key never ended")


def test_a_repeat_of_a_call_that_ended_never_reaches_the_provider(gate: Gate) -> None:
    """The same Idempotency-Key and body after the call was answered: one
    provider call, billed once, and a 409 the SDKs do not retry."""
    client = openai.OpenAI(api_key=gate.key, base_url=gate.url + "/v1", max_retries=2)
    gate.made.append(client)

    def call() -> Any:
        return client.chat.completions.create(
            model="gpt-4o", messages=HI, max_tokens=5, extra_headers={"Idempotency-Key": "c-9"}
        )

    assert call().choices[0].message.content
    _wait_for_claim_to_end(gate, "c-9")
    with pytest.raises(openai.ConflictError) as raised:
        call()
    assert raised.value.code == "call_already_completed"
    assert raised.value.response.headers["x-should-retry"] == "false"
    again = _keyed_call(gate, "c-9")
    assert (again.status_code, again.json()["code"]) == (409, "call_already_completed")
    assert gate.upstream.count() == 1
    [hold] = gate.settled(1)
    assert hold[0] == "captured"
    assert len(usage_events(gate.database_url)) == 1


def test_a_repeat_while_the_call_runs_is_told_to_retry_shortly(gate: Gate) -> None:
    gate.upstream.gate = threading.Event()
    try:
        with ThreadPoolExecutor(1) as pool:
            first = pool.submit(_keyed_call, gate, "c-10")
            deadline = time.monotonic() + 30
            while gate.upstream.count() == 0 and time.monotonic() < deadline:
                time.sleep(0.01)
            repeat = _keyed_call(gate, "c-10")
            assert (repeat.status_code, repeat.json()["code"]) == (409, "idempotency_key_in_use")
            assert repeat.headers["retry-after"] == "1"
            assert "x-should-retry" not in repeat.headers
            gate.upstream.gate.set()
            assert first.result(30).status_code == 200
    finally:
        gate.upstream.gate.set()
    assert gate.upstream.count() == 1


def test_a_key_reused_for_another_request_is_refused_and_not_retried(gate: Gate) -> None:
    assert _keyed_call(gate, "c-11").status_code == 200
    other = _keyed_call(gate, "c-11", max_tokens=6)
    assert (other.status_code, other.json()["code"]) == (409, "idempotency_key_reused")
    assert other.headers["x-should-retry"] == "false"
    assert gate.upstream.count() == 1


def test_a_declined_call_can_be_repeated_and_is_declined_again(gate: Gate) -> None:
    poor = llm_customer(gate.billfold, "poor", funds="0.01")
    key = gate.billfold.customers.gateway_keys.create(poor)["key"]
    for _ in range(2):
        declined = _keyed_call(gate, "c-12", api_key=key)
        assert (declined.status_code, declined.json()["code"]) == (402, "insufficient_funds")
    assert gate.upstream.count() == 0


def test_a_call_kept_for_its_retry_can_run_again_under_its_hold(gate: Gate) -> None:
    gate.upstream.fail_next = [500]
    assert _keyed_call(gate, "c-13").status_code == 500
    assert holds(gate.database_url)[0][0] == "authorized"
    assert _keyed_call(gate, "c-13").status_code == 200
    assert gate.upstream.count() == 2
    [hold] = gate.settled(1)
    assert hold[0] == "captured"


def test_a_provider_stream_that_breaks_off_settles_on_an_estimate(gate: Gate) -> None:
    with pytest.raises(openai.APIError):
        list(gate.openai().chat.completions.create(model="gpt-4o-drop", messages=HI, stream=True))
    [hold] = gate.settled(1)
    assert hold[0] == "captured"
    assert hold[2] > 0
    [data] = usage_events(gate.database_url)
    assert data["usage_source"] == "estimated"


def test_a_client_that_leaves_mid_stream_pays_what_the_provider_reports(gate: Gate) -> None:
    body = {"model": "claude-sonnet-4-6", "max_tokens": 100, "messages": HI, "stream": True}
    headers = {"x-api-key": gate.key, "anthropic-version": "2023-06-01"}
    with (
        httpx.Client() as http,
        http.stream("POST", gate.url + "/v1/messages", json=body, headers=headers) as answer,
    ):
        assert answer.status_code == 200
        first = next(answer.iter_raw())
        assert b"message_start" in first
    # The gateway drained the provider's stream after the client left.
    [hold] = gate.settled(1)
    assert hold[0] == "captured"
    assert hold[2] > 0
    [data] = usage_events(gate.database_url)
    assert data["input_tokens"] == sum(ANTHROPIC_INPUT.values())
    assert data["output_tokens"] >= 1


def test_an_unreachable_provider_is_a_502_and_releases(database_url: str) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    with fake_upstream() as upstream:
        config = GatewayConfig(openai=Upstream(dead, None), anthropic=None)
        with _gate(database_url, upstream, config) as gate:
            with pytest.raises(openai.APIStatusError) as raised:
                gate.openai().chat.completions.create(model="gpt-4o", messages=HI)
            assert raised.value.status_code == 502
            assert [row[0] for row in gate.settled(1)] == ["released"]
            with pytest.raises(anthropic.NotFoundError):
                gate.anthropic().messages.create(model="c", max_tokens=1, messages=HI)


@pytest.mark.parametrize("settler_process", [False, True])
def test_a_settlement_left_queued_by_a_process_that_died_is_ingested(
    database_url: str, settler_process: bool
) -> None:
    """A gateway queues each answered call's usage event durably; one that
    died before ingesting leaves the row, and a running gateway ingests it,
    its server processes too when a settler process would (it died as well)."""
    with (
        fake_upstream() as upstream,
        _gate(database_url, upstream, _config(upstream, settler_process=settler_process)) as gate,
    ):
        _left_behind(gate)


def _left_behind(gate: Gate) -> None:
    hold = gate.billfold.authorizations.create(customer_id="ext:acme", asset="USD", amount="1.00")
    [(organization_id,)] = db_rows(
        gate.database_url, "SELECT organization_id FROM customers WHERE external_id = 'acme'"
    )
    queued_at = datetime.now(UTC) - timedelta(seconds=limits.gateway_settlement_stale_s + 1)
    event = {
        "id": "llm_call_left_behind",
        "type": "llm.usage",
        "customer_id": "ext:acme",
        "timestamp": datetime.now(UTC).isoformat(),  # the subscription's prices apply
        "authorization_id": hold["id"],
        "data": {"model": "gpt-4o", "provider": "openai", "input_tokens": 10, "output_tokens": 5},
    }
    engine = sa.create_engine(gate.database_url.replace("postgresql://", "postgresql+psycopg://"))
    try:
        with engine.begin() as connection:
            connection.execute(
                sa.text(
                    "INSERT INTO gateway_settlements (organization_id, event, created_at) "
                    "VALUES (:organization_id, :event, :queued_at)"
                ),
                {
                    "organization_id": organization_id,
                    "event": json.dumps(event),
                    "queued_at": queued_at.replace(tzinfo=None),
                },
            )
    finally:
        engine.dispose()
    [settled] = gate.settled(1)
    # 10 input tokens at 0.001 USD and 5 output tokens at 0.002 USD (llm_prices).
    assert settled[0] == "captured"
    assert settled[2] == 20_000_000
    assert [data["input_tokens"] for data in usage_events(gate.database_url)] == [10]
    assert db_rows(gate.database_url, "SELECT count(*) FROM gateway_settlements") == [(0,)]


def test_under_a_settler_process_the_server_leaves_fresh_events_to_it(
    gate_with_settler: Gate,
) -> None:
    """The server process only queues a call's usage event; the settler
    ingests it. (A server stalled by ingesting would delay every call.)"""
    gate = gate_with_settler
    gate.openai().chat.completions.create(model="gpt-4o", messages=HI, max_tokens=5)
    queued = "SELECT count(*) FROM gateway_settlements"
    deadline = time.monotonic() + 30
    while db_rows(gate.database_url, queued) != [(1,)]:
        assert time.monotonic() < deadline, "the call's usage event was never queued"
        time.sleep(0.05)
    # Longer than the server's linger and its poll for stale rows: it would
    # have ingested the event by now if it took fresh ones.
    time.sleep(limits.gateway_settlement_poll_s + 0.5)
    assert [row[0] for row in holds(gate.database_url)] == ["authorized"]
    assert db_rows(gate.database_url, queued) == [(1,)]
    asyncio.run(_run_settler(gate.database_url))
    [hold] = holds(gate.database_url)
    assert hold[0] == "captured"
    assert hold[2] == 12 * IN + 5 * OUT
    assert db_rows(gate.database_url, queued) == [(0,)]
