"""How fast is `GET /v1/meters/{code}/usage` over one customer's million events?

    .venv/bin/python bench/usage.py [--events 1000000] [--requests 50]

Creates a scratch PostgreSQL database (`billfold_bench_usage`, dropped at the
end), starts `billfold serve` on 127.0.0.1 (one worker process, webhook
delivery off), creates one customer and loads `--events` events for it,
spread evenly at random over the last 30 days, with PostgreSQL `COPY`
straight into the events table (setup, not measured). Then it creates the
meters through the API, which builds their hourly rollups from those events
(timed: that is what creating a meter over existing events costs), and
times, one request after the other:

  (a) `GET /v1/meters/tokens/usage` (sum) for the customer over the last 30
      days (not hour-aligned, so both edges are read from the events), day
      granularity: 30-31 buckets;
  (b) the same grouped by `model` (4 models);
  (c) the same as (a) on a `unique_count` meter, which has no rollups and
      scans the events: what every meter cost before rollups;
  (d) in-process, without HTTP: the raw scan `UsageRepository.aggregate` of
      query (a), i.e. what (a) cost before rollups.

Each request's answer is checked against the number of events loaded.
p50 and p99 are over `--requests` requests (fewer for the slow scans).

Goal (issue 4): p50 of (a) <= 100 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import signal
import statistics
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import psycopg

from authorizations import BILLFOLD, PG_ADMIN_URL, ROOT, serve

DATABASE = "billfold_bench_usage"
DAYS = 30


def _pg_admin(sql: str) -> None:
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as connection:
        connection.execute(sql.encode())


def _database_url() -> str:
    base, _, _ = PG_ADMIN_URL.rpartition("/")
    return f"{base}/{DATABASE}"


def _call(
    port: int, api_key: str, method: str, path: str, body: dict[str, Any] | None = None
) -> dict[str, Any]:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}{path}",
        method=method,
        data=None if body is None else json.dumps(body).encode(),
        headers={"Authorization": f"Bearer {api_key}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=600) as answer:
        result: dict[str, Any] = json.loads(answer.read())
        return result


def load(organization_id: str, customer_id: str, count: int, now: datetime) -> int:
    """COPY `count` events for one customer; returns the sum of their tokens."""
    rng = random.Random(4)
    span_s = DAYS * 86400
    received = now.isoformat()
    total = 0
    with psycopg.connect(_database_url()) as connection:
        with (
            connection.cursor() as cursor,
            cursor.copy(
                b"COPY events (organization_id, id, customer_id, type, timestamp, data, "
                b"fingerprint, received_at) FROM STDIN"
            ) as copy,
        ):
            lines = []
            for i in range(count):
                tokens = rng.randrange(1, 2000)
                total += tokens
                at = now - timedelta(microseconds=rng.randrange(span_s * 10**6))
                lines.append(
                    f"{organization_id}\te{i}\t{customer_id}\tllm.completion\t"
                    f"{at.isoformat()}\t"
                    f'{{"model":"m{i % 4}","output_tokens":{tokens}}}\t{"0" * 64}\t'
                    f"{received}\n"
                )
                if len(lines) == 10_000:
                    copy.write("".join(lines))
                    lines.clear()
            copy.write("".join(lines))
        connection.commit()
        connection.execute(b"ANALYZE events")
    return total


def timed(label: str, call: Any, requests: int, check: Any) -> list[float]:
    latencies = []
    for _ in range(requests):
        started = time.perf_counter()
        answer = call()
        latencies.append(1000 * (time.perf_counter() - started))
        check(answer)
    latencies.sort()
    p99 = latencies[min(len(latencies) - 1, round(0.99 * (len(latencies) - 1)))]
    print(
        f"  {label:52} p50 {statistics.median(latencies):8.1f} ms   p99 {p99:8.1f} ms   "
        f"({requests} requests)",
        flush=True,
    )
    return latencies


async def raw_scan(
    database_url: str, organization_id: str, customer_id: str, start: datetime, end: datetime
) -> tuple[float, Decimal]:
    """Query (a) through the raw scan, in-process: (ms, total)."""
    sys.path.insert(0, str(ROOT / "src"))
    from billfold.api.context import AppContext
    from billfold.config import Settings
    from billfold.metering import service
    from billfold.metering.repository import UsageQuery, UsageRepository

    ctx = AppContext.create(
        Settings(database_url=database_url, log_level="WARNING", run_worker_in_server=False)
    )
    try:
        query = UsageQuery(
            event_type="llm.completion",
            aggregation="sum",
            field=("output_tokens",),
            filters={},
            customer_id=customer_id,
            start=start,
            end=end,
            granularity="day",
            group_by=(),
            ranges=tuple(service.buckets(start, end, "day")),
        )
        async with ctx.sessions() as session:
            started = time.perf_counter()
            cells = await UsageRepository(session, organization_id).aggregate(query)
            elapsed = 1000 * (time.perf_counter() - started)
        return elapsed, sum((cell.value or Decimal(0) for cell in cells), Decimal(0))
    finally:
        await ctx.engine.dispose()


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--requests", type=int, default=50)
    args = parser.parse_args()
    if not 1000 <= args.events <= 20_000_000 or not 5 <= args.requests <= 10_000:
        parser.error("events 1,000-20,000,000, requests 5-10,000")

    signal.signal(signal.SIGTERM, _interrupt)
    _pg_admin(f"DROP DATABASE IF EXISTS {DATABASE} WITH (FORCE)")
    _pg_admin(f"CREATE DATABASE {DATABASE}")
    try:
        env = os.environ | {
            "BILLFOLD_DATABASE_URL": _database_url(),
            "BILLFOLD_SERVE_WORKER": "0",
            "BILLFOLD_LOG_LEVEL": "WARNING",
        }
        created = subprocess.run(
            [BILLFOLD, "org", "create", "Bench", "--json"],
            env=env,
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        )
        api_key = json.loads(created.stdout.strip().splitlines()[-1])["api_key"]
        print(f"Conditions: {os.cpu_count()} CPUs, load average {os.getloadavg()}")
        with serve(env) as (_, port):
            customer = _call(port, api_key, "POST", "/v1/customers", {"external_id": "big"})
            customer_id = customer["id"]
            with psycopg.connect(_database_url()) as connection:
                row = connection.execute(
                    b"SELECT organization_id FROM customers WHERE id = %s", (customer_id,)
                ).fetchone()
            assert row is not None
            organization_id = str(row[0])
            now = datetime.now(UTC)
            started = time.monotonic()
            total = load(organization_id, customer_id, args.events, now)
            print(f"setup: {args.events:,} events COPYed in {time.monotonic() - started:.1f} s")
            meters: list[dict[str, Any]] = [
                {
                    "code": "tokens",
                    "event_type": "llm.completion",
                    "aggregation": "sum",
                    "field": "output_tokens",
                    "group_by": ["model"],
                },
                {
                    "code": "models",
                    "event_type": "llm.completion",
                    "aggregation": "unique_count",
                    "field": "model",
                },
            ]
            for meter in meters:
                started = time.monotonic()
                _call(port, api_key, "POST", "/v1/meters", meter)
                print(
                    f"meter {meter['code']} ({meter['aggregation']}) created, rollups built "
                    f"from the events, in {time.monotonic() - started:.2f} s"
                )
            with psycopg.connect(_database_url()) as connection:
                row = connection.execute(b"SELECT count(*) FROM usage_rollups").fetchone()
            print(f"usage_rollups rows: {row[0] if row else '?'}\n")
            end = now + timedelta(seconds=1)
            start = end - timedelta(days=DAYS, seconds=2)
            params = {
                "customer_id": customer_id,
                "from": start.isoformat(),
                "to": end.isoformat(),
                "granularity": "day",
            }

            def get(code: str, **extra: str) -> Any:
                query = urllib.parse.urlencode(params | extra)
                return lambda: _call(port, api_key, "GET", f"/v1/meters/{code}/usage?{query}")

            def sums_to(expected: int) -> Any:
                def check(answer: dict[str, Any]) -> None:
                    got = sum(Decimal(row["value"] or 0) for row in answer["data"])
                    assert got == expected, (got, expected)

                return check

            def four_models(answer: dict[str, Any]) -> None:
                assert max(Decimal(row["value"]) for row in answer["data"]) == 4

            print("Usage over 30 days for one customer, day granularity:")
            a = timed("(a) sum, from rollups + edges", get("tokens"), args.requests, sums_to(total))
            timed(
                "(b) sum grouped by model", get("tokens", group_by="model"), args.requests,
                sums_to(total),
            )  # fmt: skip
            slow = max(5, args.requests // 10)
            timed("(c) unique_count (raw scan, no rollups)", get("models"), slow, four_models)
            raw = []
            for _ in range(slow):
                elapsed, got = asyncio.run(
                    raw_scan(env["BILLFOLD_DATABASE_URL"], organization_id, customer_id, start, end)
                )
                assert got == total, (got, total)
                raw.append(elapsed)
            print(
                f"  {'(d) query (a) as a raw scan, in-process':52} p50 "
                f"{statistics.median(raw):8.1f} ms   max {max(raw):8.1f} ms   ({slow} runs)"
            )
            print(f"\nGoal: p50 of (a) <= 100 ms: {statistics.median(a):.1f} ms")
        print(f"load average after: {os.getloadavg()}")
    finally:
        with contextlib.suppress(Exception):
            _pg_admin(f"DROP DATABASE IF EXISTS {DATABASE} WITH (FORCE)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
