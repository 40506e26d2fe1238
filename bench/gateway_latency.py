"""What latency does the gateway add to a model call? Measured in one run.

    .venv/bin/python bench/gateway_latency.py [--requests 500] [--warmup 50] [--lookup-ttl S]

Creates a scratch PostgreSQL database (dropped at the end), starts the fake
provider of the tests (tests/llm_support.py) in its own process, `billfold
serve` for the setup (a customer subscribed to real-time per-token prices,
funded, with a gateway key) and `billfold gateway --upstream-openai <fake>`
(one worker and its settler process), then sends the same Chat Completions
request, one at a time over one keep-alive connection, (a) straight to the
fake provider and (b) through the gateway, non-streamed and streamed (SSE, 7
content chunks plus the usage chunk). Every gateway call is held against the
wallet (the rated estimate), forwarded, and settled by a usage event after its
answer.

Latency is until the last byte of the answer. Printed: p50/p99 per mode and
the gateway's overhead (gateway minus direct) at p50 and p99, beside the
latency of the hold alone (`POST /v1/authorizations` with the same estimate,
straight to `billfold serve`): no gateway can answer sooner than its hold.
Goal (issue 7): p50 overhead ≤ 5 ms.

The gateway keeps a key's customer and that customer's prices for
`--lookup-ttl` seconds (its default, `limits.gateway_lookup_ttl_s`): these
sequential calls of one key find them kept. `--lookup-ttl 0` measures every
call reading them, as the first call of a key in a second does.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402
from tests.live import (  # noqa: E402
    Lane,
    create_org,
    free_port,
    scratch_postgres,
    server_env,
    servers,
    sigterm_unwinds,
)

from billfold import Billfold  # noqa: E402

BILLFOLD = str(Path(sys.executable).parent / "billfold")
BODY = {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 7}


def serve_upstream(port: int) -> None:
    from tests.llm_support import FakeUpstream

    upstream = FakeUpstream(port=port)
    upstream.start()
    assert upstream._thread is not None
    upstream._thread.join()


def _wait_healthy(url: str, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{url} exited")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url, timeout=1).status_code in (200, 404):
                return
        time.sleep(0.1)
    raise RuntimeError(f"no answer from {url}")


@contextlib.contextmanager
def process(command: list[str], env: dict[str, str], health: str) -> Iterator[None]:
    started = subprocess.Popen(
        command,
        env=env,
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        _wait_healthy(health, started)
        yield
    finally:
        started.terminate()
        try:
            started.wait(20)
        except subprocess.TimeoutExpired:
            started.kill()
            started.wait(20)


async def measure(
    url: str, headers: dict[str, str], stream: bool, count: int, warmup: int
) -> list[float]:
    lane = Lane(headers)
    body = json.dumps(BODY | ({"stream": True} if stream else {})).encode()
    timings: list[float] = []
    try:
        for index in range(warmup + count):
            started = time.perf_counter()
            answer = await lane.post(url, body)
            elapsed = time.perf_counter() - started
            assert answer.status_code == 200, answer.content[:300]
            if stream:
                assert answer.content.rstrip().endswith(b"data: [DONE]"), answer.content[-200:]
            if index >= warmup:
                timings.append(elapsed * 1000)
    finally:
        await lane.aclose()
    return timings


async def measure_authorizations(
    base_url: str, api_key: str, customer: str, count: int, warmup: int
) -> list[float]:
    from billfold.llm._billing import Options, authorization_body
    from billfold.llm._estimate import openai_chat

    body = json.dumps(authorization_body(Options(customer=customer), openai_chat(BODY), "bench"))
    lane = Lane({"authorization": f"Bearer {api_key}"})
    timings: list[float] = []
    try:
        for index in range(warmup + count):
            started = time.perf_counter()
            answer = await lane.post(base_url + "/v1/authorizations", body.encode())
            elapsed = time.perf_counter() - started
            assert answer.status_code == 200, answer.content[:300]
            assert json.loads(answer.content)["status"] == "authorized", answer.content[:300]
            if index >= warmup:
                timings.append(elapsed * 1000)
    finally:
        await lane.aclose()
    return timings


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=500)
    parser.add_argument("--warmup", type=int, default=50)
    parser.add_argument("--lookup-ttl", type=float, default=None)
    parser.add_argument("--serve-upstream", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_upstream:
        serve_upstream(args.serve_upstream)
        return
    from tests.llm_support import llm_customer

    upstream_port = free_port()
    upstream_url = f"http://127.0.0.1:{upstream_port}"
    gateway_port = free_port()
    gateway_url = f"http://127.0.0.1:{gateway_port}"
    with (
        contextlib.ExitStack() as stack,
        scratch_postgres("billfold_bench_gateway") as database_url,
        process(
            [sys.executable, __file__, "--serve-upstream", str(upstream_port)],
            dict(os.environ),
            upstream_url + "/healthz",
        ),
    ):
        api_key = create_org(database_url)
        stack.enter_context(sigterm_unwinds())
        [api] = stack.enter_context(servers(database_url))
        with Billfold(api_key, base_url=api.base_url) as client:
            customer = llm_customer(client, funds="1000000.00")
            key = client.customers.gateway_keys.create(customer)["key"]
        gateway = [
            BILLFOLD,
            "gateway",
            "--port",
            str(gateway_port),
            "--upstream-openai",
            upstream_url,
        ]
        if args.lookup_ttl is not None:
            gateway += ["--lookup-ttl", str(args.lookup_ttl)]
        with process(
            gateway, server_env(database_url, OPENAI_API_KEY="sk-bench"), gateway_url + "/healthz"
        ):
            results: dict[str, list[float]] = {}
            # The floor of any hold-before-the-call design: the hold alone,
            # `POST /v1/authorizations` with the same estimate, on the API.
            results["authorization alone"] = asyncio.run(
                measure_authorizations(api.base_url, api_key, customer, args.requests, args.warmup)
            )
            for stream in (False, True):
                mode = "streamed" if stream else "non-streamed"
                results[f"direct {mode}"] = asyncio.run(
                    measure(
                        upstream_url + "/v1/chat/completions",
                        {},
                        stream,
                        args.requests,
                        args.warmup,
                    )
                )
                results[f"gateway {mode}"] = asyncio.run(
                    measure(
                        gateway_url + "/v1/chat/completions",
                        {"authorization": f"Bearer {key}"},
                        stream,
                        args.requests,
                        args.warmup,
                    )
                )
    kept = "the default" if args.lookup_ttl is None else f"{args.lookup_ttl} s"
    print(
        f"{args.requests} sequential requests per mode after {args.warmup} warm-up; "
        f"ms until the last byte; lookups kept for {kept}"
    )
    print(f"{'mode':<26}{'p50':>9}{'p99':>9}{'mean':>9}")
    for name, values in results.items():
        p50, p99 = percentile(values, 0.5), percentile(values, 0.99)
        print(f"{name:<26}{p50:>9.2f}{p99:>9.2f}{statistics.fmean(values):>9.2f}")
    for mode in ("non-streamed", "streamed"):
        direct, through = results[f"direct {mode}"], results[f"gateway {mode}"]
        p50 = percentile(through, 0.5) - percentile(direct, 0.5)
        p99 = percentile(through, 0.99) - percentile(direct, 0.99)
        print(f"gateway overhead, {mode:<13} p50 {p50:6.2f} ms   p99 {p99:6.2f} ms")


if __name__ == "__main__":
    main()
