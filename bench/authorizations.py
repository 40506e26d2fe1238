"""How fast is the authorization hot path? Measure it against a real server.

    .venv/bin/python bench/authorizations.py [--seconds 10] [--clients 64] [--rounds 1]

Creates a scratch PostgreSQL database (`billfold_bench_auth`, dropped at the
end), starts `billfold serve` on 127.0.0.1 (one worker process, webhook
delivery off) and measures, with `--clients` concurrent keep-alive
connections for `--seconds` each, after a short warm-up:

  (a) `POST /v1/authorizations` of 0.02 USD on one hot wallet. It holds
      1,000,000.00 USD, so it never runs out: every answer is `authorized`
      (the figures count declines, which should be 0);
  (b) the same on 10,000 wallets (1,000.00 USD each), one chosen at random
      per request;
  (c) `GET /v1/customers/{id}`: an authenticated read (API key lookup, one
      transaction, one query), the baseline;
  (d) the naive path: the server restarted with
      `BILLFOLD_AUTHORIZATION_BATCHING=0`, so every authorization is its own
      transaction and commit (row lock, conditional update, one fsync each),
      on the hot wallet (d) and on the 10,000 wallets (d').

and then, open loop (latency as a client at a steady rate sees it):

  (f) authorizations on the hot wallet sent at a fixed rate (`--open-rate`,
      default half of what (a) sustained), each at its scheduled instant on
      whichever connection is free (a new one when none is), its latency
      counted from that instant, so a stall delays every request scheduled
      behind it (no coordinated omission);
  (g) the same on the 10,000 wallets.

A closed loop of 64 connections measures throughput, but its latency is set by
the arithmetic of the loop (mean latency = connections / throughput): 20 ms
would take 3,200 requests/s. The open loop's p99 is the one to read against
the latency goal.

Every authorization carries its own `Idempotency-Key`, as a client would send.
Holds are taken with a one-hour TTL, so none expires during the run.

The load generator is wrk (C, epoll; Debian package `wrk`) with a Lua script
that builds each request (unique key, random wallet) and counts the answers,
run as its own process, as in bench/asgi_servers.py (its wrk runner and CPU
accounting are reused). On a machine with 2+ CPUs the server is pinned to
CPU 0 and wrk to CPU 1 (taskset); PostgreSQL is not pinned. The CPU each of
them used is printed: a server near 100 % of its core with wrk well below
means the server was measured, not the client. Latencies are wrk's
(closed loop: each connection sends its next request when the answer comes).
The setup (10,000 customers and grants) goes through the API too, on a
separate two-process server, before anything is measured, followed by an
ANALYZE (what autovacuum does where it runs).

Goals (issue 3): (a) and (b) ≥ 60 % of (c); (a) ≥ 0.8 x (b); p99 ≤ 20 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg

from asgi_servers import _free_port, _pin, _postgres_cpu_s, _tree_cpu_s, serving, wrk

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # for tests.live's HTTP client (setup only)
BILLFOLD = str(Path(sys.executable).parent / "billfold")
PG_ADMIN_URL = os.environ.get(
    "BILLFOLD_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)
DATABASE = "billfold_bench_auth"
HOT_FUNDS = "1000000.00"
WALLET_FUNDS = "1000.00"
AMOUNT = "0.02"
TTL_S = 3600
SETUP_CONCURRENCY = 32

# wrk Lua: builds each request, counts answers, prints one JSON line at the end
# (the fields bench/asgi_servers.py's runner reads, plus the counts).
LUA = r"""
local tag, mode, path, ids_file, amount, ttl = "%(tag)s", "%(mode)s", "%(path)s",
  "%(ids_file)s", "%(amount)s", %(ttl)d
local ids, counter, headers = {}, 0, {}
authorized, declined, other = 0, 0, 0  -- globals: done() reads them per thread
local threads = {}

function setup(thread) table.insert(threads, thread) end

function init(args)
  for line in io.lines(ids_file) do table.insert(ids, line) end
  for k, v in pairs(wrk.headers) do headers[k] = v end
  headers["Content-Type"] = "application/json"
  math.randomseed(os.time() + #tag)
end

function request()
  counter = counter + 1
  if mode == "read" then
    return wrk.format("GET", path .. ids[1], headers, nil)
  end
  local customer = ids[1]
  if mode == "random" then customer = ids[math.random(#ids)] end
  headers["Idempotency-Key"] = tag .. "-" .. counter
  local body = '{"customer_id":"' .. customer .. '","asset":"USD","amount":"' .. amount
    .. '","ttl_s":' .. ttl .. '}'
  return wrk.format("POST", path, headers, body)
end

function response(status, hdrs, body)
  if status ~= 200 then other = other + 1
  elseif mode == "read" then authorized = authorized + 1
  elseif string.find(body, '"status":"authorized"', 1, true) then authorized = authorized + 1
  else declined = declined + 1 end
end

done = function(summary, latency, requests)
  local a, d, o = 0, 0, 0
  for _, t in ipairs(threads) do
    a = a + t:get("authorized"); d = d + t:get("declined"); o = o + t:get("other")
  end
  local errors = summary.errors
  io.write(string.format(
    'BENCH_JSON {"requests": %%d, "duration_us": %%d, "p50_us": %%d, "p90_us": %%d, '
    .. '"p99_us": %%d, "max_us": %%d, "mean_us": %%.1f, "connect_errors": %%d, '
    .. '"read_errors": %%d, "write_errors": %%d, "status_errors": %%d, "timeouts": %%d, '
    .. '"ok": %%d, "declined": %%d, "other": %%d}\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(90),
    latency:percentile(99), latency.max, latency.mean, errors.connect, errors.read,
    errors.write, errors.status, errors.timeout, a, d, o))
end
"""


@dataclass
class Figure:
    label: str
    rps: float
    p50_ms: float
    p99_ms: float
    ok: int
    declined: int
    errors: int
    server_cpu: float
    client_cpu: float
    postgres_cpu: float
    #: CPU per request (ms), less sensitive than req/s to what else runs.
    server_ms: float
    postgres_ms: float


def _pg_admin(sql: str) -> None:
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as connection:
        connection.execute(sql.encode())


def _database_url() -> str:
    base, _, _ = PG_ADMIN_URL.rpartition("/")
    return f"{base}/{DATABASE}"


@contextlib.contextmanager
def serve(
    env: dict[str, str], *, workers: int = 1, cpu: int | None = None, worker: bool = False
) -> Iterator[tuple[int, int]]:
    """`billfold serve` on a free port until /healthz answers; stopped after.
    Its background worker runs in each server process only with `worker`."""
    command = [*_pin(cpu), BILLFOLD, "serve", "--host", "127.0.0.1", "--port", str(_free_port())]
    command += ["--workers", str(workers)]
    if not worker:
        command.append("--no-worker")
    with serving(command, env, name="billfold serve", start_timeout_s=60) as started:
        yield started


async def _setup(port: int, api_key: str, wallets: int) -> tuple[str, list[str]]:
    """The hot customer and `wallets` others, each funded by one paid grant.

    Sent with the tests' minimal HTTP/1.1 client (tests/live.py), which costs
    far less CPU per request than httpx: 20,000 setup requests add up.
    """
    base = f"http://127.0.0.1:{port}"
    live = importlib.import_module("tests.live")

    async def customer(lane: Any, external_id: str, funds: str) -> str:
        created = await lane.post(
            f"{base}/v1/customers", json.dumps({"external_id": external_id}).encode()
        )
        assert created.status_code in (200, 201), created.content
        customer_id = str(json.loads(created.content)["id"])
        grant = {"asset": "USD", "amount": funds, "purpose": "paid"}
        funded = await lane.post(
            f"{base}/v1/customers/{customer_id}/grants", json.dumps(grant).encode()
        )
        assert funded.status_code == 201, funded.content
        return customer_id

    async with live.lanes(api_key, SETUP_CONCURRENCY) as lanes:
        hot = await customer(lanes[0], "hot", HOT_FUNDS)
        ids: list[str] = [""] * wallets
        positions = iter(range(wallets))

        async def run(lane: Any) -> None:
            for i in positions:
                ids[i] = await customer(lane, f"w{i}", WALLET_FUNDS)

        await asyncio.gather(*(run(lane) for lane in lanes))
    return hot, ids


def _script(directory: Path, tag: str, mode: str, path: str, ids_file: Path) -> Path:
    script = directory / f"{tag}.lua"
    script.write_text(
        LUA
        % {
            "tag": tag,
            "mode": mode,
            "path": path,
            "ids_file": str(ids_file),
            "amount": AMOUNT,
            "ttl": TTL_S,
        }
    )
    return script


def run_one(
    args: argparse.Namespace,
    label: str,
    server: tuple[int, int],
    api_key: str,
    directory: Path,
    mode: str,
    ids_file: Path,
    tag: str,
) -> Figure:
    pid, port = server
    path = "/v1/customers/" if mode == "read" else "/v1/authorizations"
    endpoint = "/v1/customers" if mode == "read" else "/v1/authorizations"
    client_cpu = None if args.no_pin else 1
    if args.warmup:
        wrk(
            port, endpoint, api_key, duration_s=args.warmup, connections=args.clients,
            cpu=client_cpu, script=_script(directory, f"{tag}w", mode, path, ids_file),
        )  # fmt: skip
    script = _script(directory, tag, mode, path, ids_file)
    profiler = _profile(args, pid, tag)
    cpu_before, pg_before, started = _tree_cpu_s(pid), _postgres_cpu_s(), time.monotonic()
    report, client_cpu_s = wrk(
        port, endpoint, api_key, duration_s=args.seconds, connections=args.clients,
        cpu=client_cpu, script=script,
    )  # fmt: skip
    elapsed = time.monotonic() - started
    if profiler is not None:
        profiler.wait()
    errors = int(
        report["connect_errors"] + report["read_errors"] + report["write_errors"]
        + report["timeouts"] + report["non_2xx"]
    )  # fmt: skip
    server_cpu_s, postgres_cpu_s = _tree_cpu_s(pid) - cpu_before, _postgres_cpu_s() - pg_before
    requests = max(1, int(report["requests"]))
    figure = Figure(
        label=label,
        rps=report["requests"] / (report["duration_us"] / 1e6),
        p50_ms=report["p50_us"] / 1000,
        p99_ms=report["p99_us"] / 1000,
        ok=int(report["ok"]),
        declined=int(report["declined"]),
        errors=errors,
        server_cpu=server_cpu_s / elapsed,
        client_cpu=client_cpu_s / elapsed,
        postgres_cpu=postgres_cpu_s / elapsed,
        server_ms=1000 * server_cpu_s / requests,
        postgres_ms=1000 * postgres_cpu_s / requests,
    )
    print(
        f"  {label:34} {figure.rps:8.0f}/s  p50 {figure.p50_ms:6.2f} ms  "
        f"p99 {figure.p99_ms:7.2f} ms  ok {figure.ok} declined {figure.declined} "
        f"errors {errors}  cpu server {figure.server_cpu:4.0%} wrk {figure.client_cpu:4.0%} "
        f"postgres {figure.postgres_cpu:4.0%}  cpu/req server {figure.server_ms:.2f} ms "
        f"postgres {figure.postgres_ms:.2f} ms",
        flush=True,
    )
    return figure


def _profile(args: argparse.Namespace, pid: int, tag: str) -> subprocess.Popen[bytes] | None:
    """py-spy sampling the server while a figure is measured (`--profile DIR`):
    collapsed stacks per figure, for flame graphs or `sort | uniq` reading.
    Sampling costs the server some CPU, so profiled figures are not the
    reported ones."""
    if args.profile is None:
        return None
    args.profile.mkdir(parents=True, exist_ok=True)
    command = ["py-spy", "record", "--pid", str(pid), "--subprocesses"]
    command += ["--duration", str(args.seconds), "--format", "raw", "--rate", "200"]
    command += ["-o", str(args.profile / f"{tag}.txt")]
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


async def _open_loop(
    port: int, api_key: str, ids: list[str], rate_per_s: float, seconds: int, tag: str
) -> Figure:
    """Authorizations at `rate_per_s`, each sent at its scheduled instant."""
    live = importlib.import_module("tests.live")
    url = f"http://127.0.0.1:{port}/v1/authorizations"
    idle: list[Any] = []
    opened: list[Any] = []
    latencies_s: list[float] = []
    counts = {"ok": 0, "declined": 0, "errors": 0}
    count = int(rate_per_s * seconds)
    loop = asyncio.get_running_loop()
    started = loop.time() + 0.2

    async def one(index: int) -> None:
        scheduled = started + index / rate_per_s
        await asyncio.sleep(max(0.0, scheduled - loop.time()))
        lane = idle.pop() if idle else None
        if lane is None:
            lane = live.Lane({"authorization": f"Bearer {api_key}"})
            opened.append(lane)
        customer = ids[index % len(ids)]
        body = {"customer_id": customer, "asset": "USD", "amount": AMOUNT, "ttl_s": TTL_S}
        try:
            answer = await lane.post(
                url, json.dumps(body).encode(), {"idempotency-key": f"{tag}-{index}"}
            )
        except (OSError, asyncio.IncompleteReadError):
            counts["errors"] += 1
            return
        latencies_s.append(loop.time() - scheduled)
        idle.append(lane)
        if answer.status_code != 200:
            counts["errors"] += 1
        elif b'"status":"authorized"' in answer.content:
            counts["ok"] += 1
        else:
            counts["declined"] += 1

    try:
        await asyncio.gather(*(one(i) for i in range(count)))
    finally:
        for lane in opened:
            await lane.aclose()
    elapsed = loop.time() - started
    ordered = sorted(latencies_s) or [0.0]

    def at(q: float) -> float:
        return 1000 * ordered[min(len(ordered) - 1, int(q * len(ordered)))]

    return Figure(
        label="", rps=len(latencies_s) / elapsed, p50_ms=at(0.5), p99_ms=at(0.99),
        ok=counts["ok"], declined=counts["declined"], errors=counts["errors"],
        server_cpu=0.0, client_cpu=0.0, postgres_cpu=0.0, server_ms=0.0, postgres_ms=0.0,
    )  # fmt: skip


def run_open(
    args: argparse.Namespace,
    label: str,
    server: tuple[int, int],
    api_key: str,
    ids_file: Path,
    rate_per_s: float,
    tag: str,
) -> Figure:
    pid, port = server
    ids = ids_file.read_text().split()
    if not args.no_pin:
        os.sched_setaffinity(0, {1})  # this process is the client: wrk's CPU
    profiler = _profile(args, pid, tag)
    try:
        cpu_before, pg_before = _tree_cpu_s(pid), _postgres_cpu_s()
        client_before, started = time.process_time(), time.monotonic()
        figure = asyncio.run(_open_loop(port, api_key, ids, rate_per_s, args.seconds, tag))
        elapsed = time.monotonic() - started
        if profiler is not None:
            profiler.wait()
    finally:
        if not args.no_pin:
            os.sched_setaffinity(0, set(range(os.cpu_count() or 1)))
    requests = max(1, figure.ok + figure.declined)
    figure.label = label
    figure.server_cpu = (_tree_cpu_s(pid) - cpu_before) / elapsed
    figure.client_cpu = (time.process_time() - client_before) / elapsed
    figure.postgres_cpu = (_postgres_cpu_s() - pg_before) / elapsed
    figure.server_ms = 1000 * (_tree_cpu_s(pid) - cpu_before) / requests
    print(
        f"  {label:34} {figure.rps:8.0f}/s  p50 {figure.p50_ms:6.2f} ms  "
        f"p99 {figure.p99_ms:7.2f} ms  ok {figure.ok} declined {figure.declined} "
        f"errors {figure.errors}  cpu server {figure.server_cpu:4.0%} "
        f"client {figure.client_cpu:4.0%}  cpu/req server {figure.server_ms:.2f} ms",
        flush=True,
    )
    return figure


LABELS = {
    "a": "(a) authorize, one hot wallet",
    "b": "(b) authorize, 10,000 wallets",
    "c": "(c) GET /v1/customers/{id}",
    "d": "(d) naive, one hot wallet",
    "e": "(d') naive, 10,000 wallets",
    "f": "(f) open loop, one hot wallet",
    "g": "(g) open loop, 10,000 wallets",
}


def measure(
    args: argparse.Namespace, env: dict[str, str], api_key: str, hot_file: Path, many_file: Path
) -> dict[str, list[Figure]]:
    figures: dict[str, list[Figure]] = {key: [] for key in LABELS}
    directory = Path(tempfile.mkdtemp(prefix="bench_auth_"))
    server_cpu = None if args.no_pin else 0
    run_tag = f"r{int(time.time())}"
    try:
        for round_number in range(1, args.rounds + 1):
            print(f"round {round_number}", flush=True)
            batched = [("c", "read", hot_file), ("a", "hot", hot_file), ("b", "random", many_file)]
            if round_number % 2 == 0:
                batched.reverse()
            batched = [case for case in batched if case[0] in args.cases]
            with serve(env, cpu=server_cpu) as server:
                for key, mode, ids in batched:
                    tag = f"{run_tag}-{round_number}-{key}"
                    figures[key].append(
                        run_one(args, LABELS[key], server, api_key, directory, mode, ids, tag)
                    )
                for key, ids in (("f", hot_file), ("g", many_file)):
                    if key not in args.cases:
                        continue
                    rate = args.open_rate or (figures["a"][-1].rps / 2 if figures["a"] else 200)
                    tag = f"{run_tag}-{round_number}-{key}"
                    label = f"{LABELS[key]} at {rate:.0f}/s"
                    figures[key].append(run_open(args, label, server, api_key, ids, rate, tag))
            naive = [("d", "hot", hot_file), ("e", "random", many_file)]
            naive = [case for case in naive if case[0] in args.cases]
            if not naive:
                continue
            naive_env = env | {"BILLFOLD_AUTHORIZATION_BATCHING": "0"}
            with serve(naive_env, cpu=server_cpu) as server:
                for key, mode, ids in naive:
                    tag = f"{run_tag}-{round_number}-{key}"
                    figures[key].append(
                        run_one(args, LABELS[key], server, api_key, directory, mode, ids, tag)
                    )
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    return figures


def summarize(figures: dict[str, list[Figure]], args: argparse.Namespace) -> None:
    def median(key: str, attribute: str) -> float:
        return float(statistics.median(getattr(f, attribute) for f in figures[key]))

    print(f"\nMedian over {args.rounds} round(s), {args.clients} connections, {args.seconds} s:\n")
    print(
        "| | req/s | p50 ms | p99 ms | declined | errors | CPU: server | wrk | PG "
        "| server CPU ms/req | PG CPU ms/req |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for key, label in LABELS.items():
        if not figures[key]:
            continue
        print(
            f"| {label} | {median(key, 'rps'):,.0f} | {median(key, 'p50_ms'):.2f} | "
            f"{median(key, 'p99_ms'):.2f} | {sum(f.declined for f in figures[key])} | "
            f"{sum(f.errors for f in figures[key])} | {median(key, 'server_cpu'):.0%} | "
            f"{median(key, 'client_cpu'):.0%} | {median(key, 'postgres_cpu'):.0%} | "
            f"{median(key, 'server_ms'):.2f} | {median(key, 'postgres_ms'):.2f} |"
        )
    a, b, c = median("a", "rps"), median("b", "rps"), median("c", "rps")
    d, e = median("d", "rps"), median("e", "rps")
    p99 = max(median("a", "p99_ms"), median("b", "p99_ms"))
    print("\nRatios (goal in brackets):\n")
    print(f"  (a)/(c)  hot wallet vs read      {a / c:6.2f}   [>= 0.60]")
    print(f"  (b)/(c)  10k wallets vs read     {b / c:6.2f}   [>= 0.60]")
    print(f"  (a)/(b)  hot vs 10k wallets      {a / b:6.2f}   [>= 0.80]")
    print(f"  p99 of (a), (b), closed loop     {p99:6.2f} ms (64 connections / throughput)")
    if figures["f"] and figures["g"]:
        open_p99 = max(median("f", "p99_ms"), median("g", "p99_ms"))
        print(f"  p99 of (f), (g), open loop       {open_p99:6.2f} ms [<= 20 ms]")
    print(f"  (a)/(d)  batched vs naive, hot   {a / d:6.2f}")
    print(f"  (b)/(d)  10k batched vs naive hot {b / d:5.2f}")
    print(f"  (b)/(d') 10k batched vs naive 10k {b / e:5.2f}")
    print("\nThe same ratios from server CPU per request (what a saturated core would give):\n")
    ca, cb, cc = median("a", "server_ms"), median("b", "server_ms"), median("c", "server_ms")
    cd = median("d", "server_ms")
    print(f"  (a)/(c) {cc / ca:.2f}   (b)/(c) {cc / cb:.2f}   (a)/(b) {cb / ca:.2f}", end="")
    print(f"   (a)/(d) {cd / ca:.2f}")


def conditions(args: argparse.Namespace) -> None:
    cpu_model = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    with psycopg.connect(PG_ADMIN_URL) as connection:
        row = connection.execute(b"SHOW server_version").fetchone()
        sync = connection.execute(b"SHOW synchronous_commit").fetchone()
    print("Conditions:")
    print(f"  machine: {os.cpu_count()} CPUs ({cpu_model}), load average {os.getloadavg()}")
    print(f"  PostgreSQL {row[0] if row else '?'}, synchronous_commit={sync[0] if sync else '?'}")
    pinning = "none" if args.no_pin else "server on CPU 0, wrk on CPU 1, PostgreSQL unpinned"
    print(f"  billfold serve, 1 worker process; wrk 1 thread, {args.clients} connections")
    print(f"  pinning: {pinning}")
    print(f"  per figure: {args.warmup} s warm-up, {args.seconds} s measured\n", flush=True)


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=int, default=10, help="seconds measured per figure")
    parser.add_argument("--warmup", type=int, default=2, help="seconds of warm-up per figure")
    parser.add_argument("--clients", type=int, default=64, help="concurrent connections")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--wallets", type=int, default=10_000)
    parser.add_argument("--no-pin", action="store_true", help="don't pin processes to CPUs")
    parser.add_argument(
        "--cases", default="abcdefg", help="which figures to measure (e is d'); ratios need a-e"
    )
    parser.add_argument(
        "--open-rate", type=float, help="requests/s of (f) and (g); default half of (a)'s"
    )
    parser.add_argument(
        "--profile", type=Path, help="write py-spy collapsed stacks of the server per figure here"
    )
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        print("This benchmark drives the server with wrk: apt-get install -y wrk", file=sys.stderr)
        return 1
    if not args.no_pin and (shutil.which("taskset") is None or (os.cpu_count() or 1) < 2):
        args.no_pin = True
    if not 1 <= args.seconds <= 300 or not 0 <= args.warmup <= 60 or not 1 <= args.rounds <= 10:
        parser.error("seconds 1-300, warmup 0-60, rounds 1-10")
    if not 1 <= args.clients <= 1024 or not 1 <= args.wallets <= 100_000:
        parser.error("clients 1-1024, wallets 1-100000")

    # SIGTERM unwinds like Ctrl-C, so the servers and the database go too.
    signal.signal(signal.SIGTERM, _interrupt)
    _pg_admin(f"DROP DATABASE IF EXISTS {DATABASE} WITH (FORCE)")
    _pg_admin(f"CREATE DATABASE {DATABASE}")
    directory = Path(tempfile.mkdtemp(prefix="bench_auth_ids_"))
    try:
        env = os.environ | {
            "BILLFOLD_DATABASE_URL": _database_url(),
            "BILLFOLD_SERVE_WORKER": "0",
            "BILLFOLD_LOG_LEVEL": "WARNING",
        }
        env.pop("BILLFOLD_AUTHORIZATION_BATCHING", None)
        created = subprocess.run(
            [BILLFOLD, "org", "create", "Bench", "--json"],
            env=env,
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        )
        api_key = json.loads(created.stdout.strip().splitlines()[-1])["api_key"]
        started = time.monotonic()
        with serve(env, workers=2) as (_, port):
            hot, many = asyncio.run(_setup(port, api_key, args.wallets))
        # Planner statistics for the new rows, as autovacuum would gather them
        # on a server where it runs (it is off on some; the plans need them).
        with psycopg.connect(_database_url(), autocommit=True) as connection:
            connection.execute(b"ANALYZE")
        print(
            f"setup: 1 hot wallet ({HOT_FUNDS} USD) and {args.wallets} wallets "
            f"({WALLET_FUNDS} USD each) through the API in {time.monotonic() - started:.0f} s\n"
        )
        hot_file = directory / "hot.txt"
        hot_file.write_text(hot + "\n")
        many_file = directory / "many.txt"
        many_file.write_text("\n".join(many) + "\n")
        conditions(args)
        figures = measure(args, env, api_key, hot_file, many_file)
        if all(figures[key] for key in "abcde"):
            summarize(figures, args)
        print(f"\nload average after: {os.getloadavg()}")
    finally:
        shutil.rmtree(directory, ignore_errors=True)
        _pg_admin(f"DROP DATABASE IF EXISTS {DATABASE} WITH (FORCE)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
