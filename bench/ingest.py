"""How fast is `POST /v1/events`? Measure it against a real server, next to COPY.

    .venv/bin/python bench/ingest.py [--events 100000] [--clients 4] [--customers 1000]
                                     [--workers 1] [--no-pin] [--plain-only]

Creates a scratch PostgreSQL database (`billfold_bench_ingest`, dropped at
the end), starts `billfold serve` on 127.0.0.1 (`--workers` processes, each
with its background worker, which moves the rollup deltas that ingest appends
into the rollups; its CPU counts as the server's) and measures, one after
the other:

  (a) HTTP ingest: `--events` new events in batches of 1,000, sent by
      `--clients` concurrent keep-alive connections, for customers that have
      no real-time price (a `sum` meter over the events exists, so ingest
      checks the events against it);
  (b) the physical baseline: PostgreSQL `COPY` of the same number of rows,
      shaped like (a)'s (same columns, same `data`), into the events table,
      through one connection in one transaction;
  (c) unless `--plain-only`, HTTP ingest as (a) where every event is billed
      in real time: the customers are subscribed (from two hours back,
      before every event) to a product with a `billing: real_time` graduated
      price over the sum meter and their wallets are funded, so each event
      is rated, debited from a wallet and its fee written.

Events carry `{"output_tokens": n, "model": m}` with timestamps spread over
the last hour, customers picked at random. Each answer's summary is checked:
every event must be `accepted`, and in (c) every event must carry a fee.

The client is this process: asyncio over the tests' minimal HTTP/1.1 client
(tests/live.py), with every request body built before the clock starts, so
the client only writes bytes and reads answers. On 2+ CPUs the server is
pinned to CPU 0 and this process to CPU 1 (taskset, sched_setaffinity);
PostgreSQL is not pinned. The CPU used by the server, the client and
PostgreSQL is printed: the server near 100 % of its core while the client
has headroom means the server was measured. The setup (customers, grants,
subscriptions) goes through the API before anything is measured, followed by
an ANALYZE (what autovacuum does on a server where it runs), and both kinds
of ingest are warmed up.

Goals (issue 4): (a) >= 50,000 events/s and >= 40 % of (b); (c) >= 20,000 events/s.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import importlib
import io
import json
import os
import random
import resource
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg

from asgi_servers import _postgres_cpu_s, _tree_cpu_s
from authorizations import BILLFOLD, PG_ADMIN_URL, ROOT, serve

DATABASE = "billfold_bench_ingest"
BATCH = 1000
SETUP_CONCURRENCY = 16
PRICE: dict[str, Any] = {
    "code": "tokens_out",
    "type": "usage",
    "meter": "output_tokens",
    "asset": "USD",
    "billing": "real_time",
    "model": "graduated",
    "tiers": [
        {"up_to": "1000000", "unit_amount": "0.00001"},
        {"up_to": None, "unit_amount": "0.000008"},
    ],
}


@dataclass
class Figure:
    label: str
    events: int
    seconds: float
    server_cpu_s: float
    client_cpu_s: float
    postgres_cpu_s: float

    @property
    def rate(self) -> float:
        return self.events / self.seconds

    def line(self) -> str:
        return (
            f"  {self.label:40} {self.rate:9,.0f} events/s  ({self.events:,} in "
            f"{self.seconds:.2f} s)  cpu: server {self.server_cpu_s / self.seconds:4.0%} "
            f"client {self.client_cpu_s / self.seconds:4.0%} "
            f"postgres {self.postgres_cpu_s / self.seconds:4.0%}"
        )


def _pg_admin(sql: str) -> None:
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as connection:
        connection.execute(sql.encode())


def _database_url() -> str:
    base, _, _ = PG_ADMIN_URL.rpartition("/")
    return f"{base}/{DATABASE}"


def _client_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def _setup(
    port: int, api_key: str, customers: int, *, billed_too: bool
) -> tuple[list[str], list[str]]:
    """The meter and product, `customers` plain customers and (`billed_too`)
    as many subscribed ones with funded wallets; returns both lists of ids."""
    base = f"http://127.0.0.1:{port}"
    live = importlib.import_module("tests.live")

    async def post(lane: Any, path: str, body: dict[str, Any]) -> dict[str, Any]:
        answer = await lane.post(f"{base}{path}", json.dumps(body).encode())
        assert answer.status_code in (200, 201), (path, answer.content)
        result: dict[str, Any] = json.loads(answer.content)
        return result

    async with live.lanes(api_key, SETUP_CONCURRENCY) as lanes:
        meter = {
            "code": "output_tokens",
            "event_type": "llm.completion",
            "aggregation": "sum",
            "field": "output_tokens",
        }
        await post(lanes[0], "/v1/meters", meter)
        await post(lanes[0], "/v1/products", {"code": "api", "name": "API", "prices": [PRICE]})
        plain: list[str] = [""] * customers
        billed: list[str] = [""] * customers if billed_too else []
        positions = iter(range((2 if billed_too else 1) * customers))
        # Started before the oldest event (the last hour): a subscription
        # bills only the usage after its start, and every event must be billed.
        start_at = (datetime.now(UTC) - timedelta(hours=2)).isoformat()

        async def run(lane: Any) -> None:
            for i in positions:
                if i < customers:
                    plain[i] = (await post(lane, "/v1/customers", {"external_id": f"p{i}"}))["id"]
                    continue
                j = i - customers
                customer = (await post(lane, "/v1/customers", {"external_id": f"b{j}"}))["id"]
                grant = {"asset": "USD", "amount": "1000000.00", "purpose": "paid"}
                await post(lane, f"/v1/customers/{customer}/grants", grant)
                subscription = {"customer_id": customer, "product": "api", "start_at": start_at}
                await post(lane, "/v1/subscriptions", subscription)
                billed[j] = customer

        await asyncio.gather(*(run(lane) for lane in lanes))
    return plain, billed


def _events(tag: str, customers: list[str], count: int, now: datetime) -> list[dict[str, Any]]:
    rng = random.Random(tag)
    return [
        {
            "id": f"{tag}-{i}",
            "customer_id": rng.choice(customers),
            "type": "llm.completion",
            "timestamp": (now - timedelta(seconds=rng.randrange(3600))).isoformat(),
            "data": {"model": f"m{rng.randrange(4)}", "output_tokens": rng.randrange(1, 2000)},
        }
        for i in range(count)
    ]


def _bodies(events: list[dict[str, Any]]) -> list[bytes]:
    return [
        json.dumps({"events": events[i : i + BATCH]}, separators=(",", ":")).encode()
        for i in range(0, len(events), BATCH)
    ]


async def _send(port: int, api_key: str, bodies: list[bytes], clients: int, *, billed: bool) -> int:
    """POST every body over `clients` connections; the number accepted (and,
    when `billed`, charged a fee)."""
    live = importlib.import_module("tests.live")
    url = f"http://127.0.0.1:{port}/v1/events"
    queue = iter(bodies)
    accepted = 0

    async def run(lane: Any) -> None:
        nonlocal accepted
        for body in queue:
            answer = await lane.post(url, body)
            assert answer.status_code == 200, answer.content[:500]
            document = json.loads(answer.content)
            summary = document["summary"]
            assert summary["accepted"] == BATCH, summary
            if billed:
                unbilled = [r["id"] for r in document["results"] if not r.get("fees")]
                assert not unbilled, f"events not billed: {unbilled[:5]}"
            accepted += summary["accepted"]

    async with live.lanes(api_key, clients) as lanes:
        await asyncio.gather(*(run(lane) for lane in lanes))
    return accepted


def http_ingest(
    label: str,
    server: tuple[int, int],
    api_key: str,
    bodies: list[bytes],
    clients: int,
    *,
    billed: bool = False,
) -> Figure:
    pid, port = server
    cpu, pg, client = _tree_cpu_s(pid), _postgres_cpu_s(), _client_cpu_s()
    started = time.monotonic()
    accepted = asyncio.run(_send(port, api_key, bodies, clients, billed=billed))
    seconds = time.monotonic() - started
    return Figure(
        label,
        accepted,
        seconds,
        _tree_cpu_s(pid) - cpu,
        _client_cpu_s() - client,
        _postgres_cpu_s() - pg,
    )


def copy_baseline(organization_id: str, events: list[dict[str, Any]]) -> Figure:
    """COPY rows shaped like the HTTP ones into events, one transaction."""
    received_at = datetime.now(UTC)
    lines = io.StringIO()
    for event in events:
        data = json.dumps(event["data"], separators=(",", ":"), sort_keys=True)
        fingerprint = hashlib.sha256(json.dumps(event).encode()).hexdigest()
        lines.write(
            f"{organization_id}\t{event['id']}\t{event['customer_id']}\t{event['type']}\t"
            f"{event['timestamp']}\t{data}\t{fingerprint}\t{received_at.isoformat()}\n"
        )
    payload = lines.getvalue().encode()
    pg, client = _postgres_cpu_s(), _client_cpu_s()
    started = time.monotonic()
    with psycopg.connect(_database_url()) as connection:
        with (
            connection.cursor() as cursor,
            cursor.copy(
                b"COPY events (organization_id, id, customer_id, type, timestamp, data, "
                b"fingerprint, received_at) FROM STDIN"
            ) as copy,
        ):
            for start in range(0, len(payload), 1 << 20):
                copy.write(payload[start : start + (1 << 20)])
        connection.commit()
    seconds = time.monotonic() - started
    return Figure(
        "(b) COPY into events (one connection)",
        len(events),
        seconds,
        0.0,
        _client_cpu_s() - client,
        _postgres_cpu_s() - pg,
    )


def conditions(args: argparse.Namespace) -> None:
    with psycopg.connect(PG_ADMIN_URL) as connection:
        row = connection.execute(b"SHOW server_version").fetchone()
        sync = connection.execute(b"SHOW synchronous_commit").fetchone()
    print("Conditions:")
    print(f"  machine: {os.cpu_count()} CPUs, load average {os.getloadavg()}")
    if os.getloadavg()[0] > 1.0:
        print("  WARNING: the machine is busy; other work will skew these figures")
    print(f"  PostgreSQL {row[0] if row else '?'}, synchronous_commit={sync[0] if sync else '?'}")
    pinning = "none" if args.no_pin else "server on CPU 0, client on CPU 1, PostgreSQL unpinned"
    print(f"  billfold serve, {args.workers} worker process(es); pinning: {pinning}")
    print(
        f"  {args.events:,} events per figure in batches of {BATCH}, {args.clients} clients, "
        f"{args.customers} customers per population\n",
        flush=True,
    )


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=100_000, help="events per figure")
    parser.add_argument("--clients", type=int, default=4, help="concurrent connections")
    parser.add_argument("--customers", type=int, default=1000)
    parser.add_argument("--workers", type=int, default=1, help="server processes")
    parser.add_argument("--no-pin", action="store_true", help="don't pin processes to CPUs")
    parser.add_argument(
        "--plain-only", action="store_true", help="only (a) and (b): no billed customers or (c)"
    )
    args = parser.parse_args()
    if not BATCH <= args.events <= 10_000_000 or args.events % BATCH:
        parser.error(f"events: a multiple of {BATCH}, at most 10,000,000")
    if not 1 <= args.clients <= 256 or not 1 <= args.customers <= 100_000:
        parser.error("clients 1-256, customers 1-100000")
    if not args.no_pin and (os.cpu_count() or 1) < 2:
        args.no_pin = True

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
        organization = json.loads(created.stdout.strip().splitlines()[-1])
        api_key = organization["api_key"]
        started = time.monotonic()
        with serve(env, workers=2) as (_, port):
            plain, billed = asyncio.run(
                _setup(port, api_key, args.customers, billed_too=not args.plain_only)
            )
        # Planner statistics, as autovacuum would have gathered them on a
        # server where it runs (it may be off here): without them PostgreSQL
        # plans a join of a request's hundreds of ids as if tables were empty.
        with psycopg.connect(_database_url(), autocommit=True) as connection:
            connection.execute(b"ANALYZE")
        print(
            f"setup: {args.customers} plain customers, {len(billed)} subscribed with funded "
            f"wallets, through the API in {time.monotonic() - started:.0f} s\n"
        )
        conditions(args)
        now = datetime.now(UTC)
        plain_events = _events("plain", plain, args.events, now)
        billed_events = _events("billed", billed, args.events if billed else 0, now)
        copied = _events("copy", plain, args.events, now)
        warm = _bodies(_events("warm", plain, 5 * BATCH, now))
        warm_billed = _bodies(_events("warm-billed", billed, 5 * BATCH if billed else 0, now))
        plain_bodies, billed_bodies = _bodies(plain_events), _bodies(billed_events)
        if not args.no_pin:
            os.sched_setaffinity(0, {1})
        figures: list[Figure] = []
        measured = serve(
            env | {"BILLFOLD_SERVE_WORKER": "1"},
            workers=args.workers,
            cpu=None if args.no_pin else 0,
            worker=True,
        )
        with measured as server:
            http_ingest("warm-up", server, api_key, warm, args.clients)
            if billed:
                http_ingest("warm-up", server, api_key, warm_billed, args.clients, billed=True)
            _compacted()
            a = http_ingest("(a) HTTP ingest", server, api_key, plain_bodies, args.clients)
            print(a.line(), flush=True)
            print(_compacted(), flush=True)
            b = copy_baseline(_organization_id(api_key, env), copied)
            print(b.line(), flush=True)
            figures += [a, b]
            if billed:
                c = http_ingest(
                    "(c) HTTP ingest, billed in real time",
                    server,
                    api_key,
                    billed_bodies,
                    args.clients,
                    billed=True,
                )
                print(c.line(), flush=True)
                print(_compacted(), flush=True)
                figures.append(c)
        print("\nGoals (issue 4):\n")
        print(f"  (a) events/s            {a.rate:9,.0f}   [>= 50,000]")
        print(f"  (a)/(b) share of COPY   {a.rate / b.rate:9.1%}   [>= 40 %]")
        if billed:
            print(f"  (c) billed events/s     {figures[2].rate:9,.0f}   [>= 20,000]")
        print("\nCPU per event (microseconds; what a saturated core would give):\n")
        for figure in figures:
            print(
                f"  {figure.label:40} server {1e6 * figure.server_cpu_s / figure.events:7.1f}  "
                f"postgres {1e6 * figure.postgres_cpu_s / figure.events:7.1f}  "
                f"client {1e6 * figure.client_cpu_s / figure.events:7.1f}"
            )
        print(f"\nload average after: {os.getloadavg()}")
    finally:
        with contextlib.suppress(Exception):
            _pg_admin(f"DROP DATABASE IF EXISTS {DATABASE} WITH (FORCE)")
    return 0


def _compacted() -> str:
    """Wait for the server's worker to move every rollup delta (PostgreSQL
    appends them at ingest) into the rollups; what was left and how long it took."""
    started = time.monotonic()
    with psycopg.connect(_database_url(), autocommit=True) as connection:
        if connection.execute(b"SELECT to_regclass('usage_rollup_deltas')").fetchone() == (None,):
            return "      (no rollup deltas: this version adds to the rollups at ingest)"
        left = None
        while time.monotonic() - started < 300:
            row = connection.execute(b"SELECT count(*) FROM usage_rollup_deltas").fetchone()
            assert row is not None
            left = left if left is not None else int(row[0])
            if row[0] == 0:
                break
            time.sleep(0.1)
        else:
            raise RuntimeError("the worker did not compact the rollup deltas within 300 s")
    return (
        f"      rollup deltas left at its end: {left:,}, "
        f"moved by the worker within {time.monotonic() - started:.1f} s"
    )


def _organization_id(api_key: str, env: dict[str, str]) -> str:
    with psycopg.connect(_database_url()) as connection:
        row = connection.execute(
            b"SELECT organization_id FROM customers WHERE external_id = 'p0'"
        ).fetchone()
    assert row is not None
    return str(row[0])


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    sys.exit(main())
