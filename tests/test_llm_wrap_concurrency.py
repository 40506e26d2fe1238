"""500 concurrent wrapped calls against a wallet that affords 100 of them, on
PostgreSQL with a real `billfold serve` process: exactly 100 reach the
provider, the other 400 are declined before any provider call, and the
wallet never goes below zero."""

from __future__ import annotations

import asyncio
import threading
import time
from decimal import Decimal

import openai
import pytest

import billfold.llm
from billfold import AsyncBillfold, Billfold
from billfold.llm import _estimate
from tests.conftest import BACKENDS
from tests.live import billfold as run_billfold
from tests.live import create_org, pg_rows, scratch_postgres, servers
from tests.llm_support import fake_upstream, llm_customer

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif("postgresql" not in BACKENDS, reason="a PostgreSQL proof"),
]

CALLS = 500
AFFORDED = 100
PARAMS = {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 7}
IN = 1_000_000
OUT = 2_000_000
DECIDED_WITHIN_S = 300


async def test_500_calls_against_a_wallet_for_100() -> None:
    estimate = _estimate.openai_chat(PARAMS)
    hold_minor = estimate.input_tokens * IN + estimate.output_tokens * OUT
    funds = Decimal(hold_minor * AFFORDED) / 10**9
    with (
        scratch_postgres("billfold_llm") as database_url,
        servers(database_url) as [server],
        fake_upstream() as upstream,
    ):
        api_key = create_org(database_url)
        with Billfold(api_key, base_url=server.base_url) as setup:
            customer = llm_customer(setup, funds=str(funds))
        upstream.gate = threading.Event()
        raw = openai.AsyncOpenAI(
            api_key="sk-test", base_url=upstream.base_url + "/v1", max_retries=0, timeout=600
        )
        async with AsyncBillfold(api_key, base_url=server.base_url, timeout=600) as client:
            chat = billfold.llm.wrap(raw, customer=customer, billfold=client)

            async def call() -> str:
                try:
                    await chat.chat.completions.create(**PARAMS)
                except billfold.llm.AuthorizationDeclined as declined:
                    return f"declined: {declined.code}"
                return "answered"

            tasks = [asyncio.create_task(call()) for _ in range(CALLS)]
            # Every call is decided once it is either waiting at the provider
            # (which answers nobody yet) or finished, i.e. declined.
            deadline = time.monotonic() + DECIDED_WITHIN_S
            while upstream.count() + sum(task.done() for task in tasks) < CALLS:
                assert time.monotonic() < deadline, "calls still undecided"
                await asyncio.sleep(0.05)
            assert upstream.count() == AFFORDED
            assert [task.result() for task in tasks if task.done()] == [
                "declined: insufficient_funds"
            ] * (CALLS - AFFORDED)
            wallet = (await client.customers.wallet(customer))["balances"][0]
            assert Decimal(wallet["available"]) == 0
            assert Decimal(wallet["held"]) == funds
            upstream.gate.set()
            outcomes = await asyncio.gather(*tasks)
            await raw.close()
            assert outcomes.count("answered") == AFFORDED
            assert upstream.count() == AFFORDED
            wallet = (await client.customers.wallet(customer))["balances"][0]
        charged_minor = AFFORDED * (12 * IN + 7 * OUT)
        assert Decimal(wallet["held"]) == 0
        assert Decimal(wallet["available"]) == funds - Decimal(charged_minor) / 10**9
        assert Decimal(wallet["available"]) >= 0
        statuses = dict(
            pg_rows(database_url, "SELECT status, count(*) FROM authorizations GROUP BY status")
        )
        assert statuses == {"captured": AFFORDED, "declined": CALLS - AFFORDED}
        verified = run_billfold(database_url, "ledger", "verify")
        assert verified.returncode == 0, verified.stderr
