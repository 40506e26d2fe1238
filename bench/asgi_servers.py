"""Which ASGI server should `billfold serve` use? Measure, don't guess.

    .venv/bin/python bench/asgi_servers.py [--duration 10] [--rounds 3]   # or `make bench`

Serves the real Billfold app (`billfold.api.asgi:app`) on PostgreSQL under
each candidate, as a real server process on 127.0.0.1, and drives it with
64 concurrent keep-alive connections for a fixed duration per endpoint:

- `GET /healthz`: the HTTP stack alone (server, FastAPI, our middleware);
- `GET /v1/api-keys`: an authenticated request through the boundary (key
  lookup, one transaction, a list query) on PostgreSQL.

Candidates: uvicorn with uvloop + httptools, and granian (Rust HTTP, uvloop).

The load generator is wrk (C, epoll; Debian package `wrk`), run as its own
process. On a 2-core machine the server process is pinned to CPU 0 and wrk
to CPU 1 (taskset), so the client never takes the server's core; PostgreSQL
is left unpinned. The CPU time each process used is reported: a server at
~100% of its core while wrk has headroom means the server is what was
measured. Latency percentiles come from wrk's own histogram through a Lua
`done` hook. wrk is closed-loop, so latencies are those seen at that load.

Each round starts every server afresh, warms it up, measures each endpoint
and stops it; the order of the servers alternates between rounds, and the
median over rounds is reported. Webhook delivery is off in the server
(BILLFOLD_SERVE_WORKER=0) so that only the HTTP path is measured. A scratch
database `billfold_bench` is created and dropped at the end.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import psycopg

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
BIN = Path(PYTHON).parent
APP = "billfold.api.asgi:app"
PG_ADMIN_URL = os.environ.get(
    "BILLFOLD_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)
DATABASE = "billfold_bench"
ENDPOINTS = ("/healthz", "/v1/api-keys")

# wrk prints one JSON line of its own figures when a run is done.
WRK_REPORT_LUA = """
done = function(summary, latency, requests)
  local errors = summary.errors
  io.write(string.format(
    'BENCH_JSON {"requests": %d, "duration_us": %d, "p50_us": %d, "p90_us": %d, '
    .. '"p99_us": %d, "max_us": %d, "mean_us": %.1f, "connect_errors": %d, '
    .. '"read_errors": %d, "write_errors": %d, "status_errors": %d, "timeouts": %d}\\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(90),
    latency:percentile(99), latency.max, latency.mean, errors.connect, errors.read,
    errors.write, errors.status, errors.timeout))
end
"""


@dataclass(frozen=True)
class Server:
    name: str
    description: str

    def command(self, port: int, workers: int) -> list[str]:
        if self.name == "uvicorn":
            return [
                PYTHON, "-m", "uvicorn", APP,
                "--host", "127.0.0.1", "--port", str(port),
                "--loop", "uvloop", "--http", "httptools",
                "--no-access-log", "--log-level", "warning",
            ] + (["--workers", str(workers)] if workers > 1 else [])  # fmt: skip
        return [
            PYTHON, "-m", "granian", "--interface", "asgi",
            "--host", "127.0.0.1", "--port", str(port),
            "--workers", str(workers), "--loop", "uvloop", "--http", "1", "--no-ws",
            "--log-level", "warning", APP,
        ]  # fmt: skip


SERVERS = {
    "uvicorn": Server("uvicorn", f"uvicorn {metadata.version('uvicorn')} (uvloop, httptools)"),
    "granian": Server("granian", f"granian {metadata.version('granian')} (uvloop, HTTP/1)"),
}


@dataclass
class Result:
    server: str
    endpoint: str
    round: int
    rps: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    errors: int
    server_cpu: float  # share of one core the server's processes used
    client_cpu: float  # share of one core wrk used
    postgres_cpu: float  # share of one core PostgreSQL's processes used


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _pg_admin(sql: str) -> None:
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as connection:
        connection.execute(sql.encode())


def _database_url() -> str:
    base, _, _ = PG_ADMIN_URL.rpartition("/")
    return f"{base}/{DATABASE}"


def _pin(cpu: int | None) -> list[str]:
    return ["taskset", "-c", str(cpu)] if cpu is not None else []


def _tree_cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process and its live children."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0.0
    pids = [pid]
    with contextlib.suppress(OSError):
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        pids += [int(c) for c in children]
    for p in pids:
        with contextlib.suppress(OSError):
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / ticks
    return total


def _postgres_cpu_s() -> float:
    """User + system CPU seconds of the live PostgreSQL processes."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, IndexError, ValueError):
            text = stat.read_text()
            if text.split("(", 1)[1].split(")", 1)[0] == "postgres":
                fields = text.rsplit(")", 1)[1].split()
                total += (int(fields[11]) + int(fields[12])) / ticks
    return total


@contextlib.contextmanager
def serving(
    command: list[str], env: dict[str, str], *, name: str, start_timeout_s: float = 30
) -> Iterator[tuple[int, int]]:
    """Run `command` (which must listen on the port it names) until /healthz
    answers; stop its whole process group after. Yields (pid, port)."""
    port = int(command[command.index("--port") + 1])
    with tempfile.TemporaryFile() as log:
        process = subprocess.Popen(
            command,
            env=env,
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        try:
            deadline = time.monotonic() + start_timeout_s
            while True:
                if process.poll() is not None:
                    log.seek(0)
                    raise SystemExit(f"{name} exited:\n{log.read().decode()[-3000:]}")
                with contextlib.suppress(OSError):
                    url = f"http://127.0.0.1:{port}/healthz"
                    with urllib.request.urlopen(url, timeout=1) as answer:
                        if answer.status == 200:
                            break
                if time.monotonic() > deadline:
                    raise SystemExit(f"{name} did not answer /healthz within {start_timeout_s:g} s")
                time.sleep(0.1)
            yield process.pid, port
        except BaseException:
            log.seek(0)
            print(f"{name} log:\n{log.read().decode()[-3000:]}", file=sys.stderr)
            raise
        finally:
            try:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGTERM)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    process.wait(timeout=20)
            finally:  # even if interrupted while waiting
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)  # workers left behind, if any
                with contextlib.suppress(subprocess.TimeoutExpired):
                    process.wait(timeout=20)


@contextlib.contextmanager
def running(
    server: Server, env: dict[str, str], workers: int, cpu: int | None
) -> Iterator[tuple[int, int]]:
    """Start `server` on a free port, wait until /healthz answers, stop it after."""
    command = _pin(cpu) + server.command(_free_port(), workers)
    with serving(command, env, name=server.name) as started:
        yield started


def wrk(
    port: int,
    endpoint: str,
    api_key: str,
    *,
    duration_s: int,
    connections: int,
    cpu: int | None,
    script: Path,
) -> tuple[dict[str, float], float]:
    """One bounded wrk run: its report, and the CPU seconds wrk itself used."""
    command = [
        *_pin(cpu),
        "wrk",
        "--threads", "1",
        "--connections", str(connections),
        "--duration", f"{duration_s}s",
        "--timeout", "10s",
        "--script", str(script),
        "--header", f"Authorization: Bearer {api_key}",
        f"http://127.0.0.1:{port}{endpoint}",
    ]  # fmt: skip
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    assert process.stdout is not None
    output = process.stdout.read().decode()
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    match = re.search(r"^BENCH_JSON (.*)$", output, re.MULTILINE)
    if process.returncode != 0 or match is None:
        raise SystemExit(f"wrk failed ({process.returncode}):\n{output}")
    report: dict[str, float] = json.loads(match.group(1))
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    report["non_2xx"] = int(non_2xx.group(1)) if non_2xx else 0
    return report, usage.ru_utime + usage.ru_stime


def measure(args: argparse.Namespace, api_key: str, env: dict[str, str]) -> list[Result]:
    results: list[Result] = []
    names = [s.strip() for s in args.servers.split(",") if s.strip()]
    script = Path(tempfile.mkdtemp()) / "report.lua"
    script.write_text(WRK_REPORT_LUA)
    server_cpu = None if args.no_pin else 0
    client_cpu = None if args.no_pin else 1
    for round_number in range(1, args.rounds + 1):
        order = names if round_number % 2 else list(reversed(names))
        for name in order:
            server = SERVERS[name]
            with running(server, env, args.workers, server_cpu) as (pid, port):
                for endpoint in ENDPOINTS:
                    if args.warmup:
                        wrk(
                            port, endpoint, api_key, duration_s=args.warmup,
                            connections=args.connections, cpu=client_cpu, script=script,
                        )  # fmt: skip
                    cpu_before = _tree_cpu_s(pid)
                    postgres_before = _postgres_cpu_s()
                    started = time.monotonic()
                    report, client_cpu_s = wrk(
                        port, endpoint, api_key, duration_s=args.duration,
                        connections=args.connections, cpu=client_cpu, script=script,
                    )  # fmt: skip
                    elapsed = time.monotonic() - started
                    server_cpu_s = _tree_cpu_s(pid) - cpu_before
                    postgres_cpu_s = _postgres_cpu_s() - postgres_before
                    errors = int(
                        report["connect_errors"] + report["read_errors"]
                        + report["write_errors"] + report["timeouts"] + report["non_2xx"]
                    )  # fmt: skip
                    result = Result(
                        server=name,
                        endpoint=endpoint,
                        round=round_number,
                        rps=report["requests"] / (report["duration_us"] / 1e6),
                        p50_ms=report["p50_us"] / 1000,
                        p90_ms=report["p90_us"] / 1000,
                        p99_ms=report["p99_us"] / 1000,
                        errors=errors,
                        server_cpu=server_cpu_s / elapsed,
                        client_cpu=client_cpu_s / elapsed,
                        postgres_cpu=postgres_cpu_s / elapsed,
                    )
                    results.append(result)
                    print(
                        f"  round {round_number} {name:8} {endpoint:14} "
                        f"{result.rps:9.0f} req/s  p50 {result.p50_ms:6.2f} ms  "
                        f"p99 {result.p99_ms:7.2f} ms  errors {errors}  "
                        f"cpu server {result.server_cpu:4.0%} wrk {result.client_cpu:4.0%} "
                        f"postgres {result.postgres_cpu:4.0%}",
                        flush=True,
                    )
    return results


def summarize(results: list[Result], names: list[str]) -> None:
    print("\nMedian over rounds (64 connections):\n")
    header = (
        "| server | endpoint | req/s | p50 ms | p99 ms | errors | CPU: server | wrk | PG |\n"
        "|---|---|---:|---:|---:|---:|---:|---:|---:|"
    )
    print(header)
    medians: dict[tuple[str, str], dict[str, float]] = {}
    for name in names:
        for endpoint in ENDPOINTS:
            rows = [r for r in results if r.server == name and r.endpoint == endpoint]
            m = {
                "rps": statistics.median(r.rps for r in rows),
                "p50": statistics.median(r.p50_ms for r in rows),
                "p99": statistics.median(r.p99_ms for r in rows),
                "errors": sum(r.errors for r in rows),
                "server_cpu": statistics.median(r.server_cpu for r in rows),
                "client_cpu": statistics.median(r.client_cpu for r in rows),
                "postgres_cpu": statistics.median(r.postgres_cpu for r in rows),
            }
            medians[name, endpoint] = m
            print(
                f"| {SERVERS[name].description} | `GET {endpoint}` | {m['rps']:,.0f} | "
                f"{m['p50']:.2f} | {m['p99']:.2f} | {m['errors']:.0f} | "
                f"{m['server_cpu']:.0%} | {m['client_cpu']:.0%} | {m['postgres_cpu']:.0%} |"
            )
    if len(names) == 2:
        a, b = names
        print(f"\nRatios {b} / {a}:\n")
        print("| endpoint | req/s | p50 | p99 |\n|---|---:|---:|---:|")
        for endpoint in ENDPOINTS:
            x, y = medians[a, endpoint], medians[b, endpoint]
            print(
                f"| `GET {endpoint}` | {y['rps'] / x['rps']:.2f}× | "
                f"{y['p50'] / x['p50']:.2f}× | {y['p99'] / x['p99']:.2f}× |"
            )


def conditions(args: argparse.Namespace) -> None:
    cpu_model = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    wrk_version = subprocess.run(
        ["wrk", "--version"], capture_output=True, text=True, check=False
    ).stdout.splitlines()[0:1]
    with psycopg.connect(PG_ADMIN_URL) as connection:
        row = connection.execute(b"SHOW server_version").fetchone()
    print("Conditions:")
    print(f"  machine: {os.cpu_count()} CPUs ({cpu_model}), load average {os.getloadavg()}")
    if os.getloadavg()[0] > 1.0:
        print("  WARNING: the machine is busy; other work will skew these figures")
    print(f"  python: {platform.python_version()}; {platform.platform()}")
    print(f"  servers: {', '.join(s.description for s in SERVERS.values())}")
    print(f"  client: {' '.join(wrk_version)}; 1 thread, {args.connections} connections")
    print(f"  PostgreSQL {row[0] if row else '?'} at 127.0.0.1 (database {DATABASE})")
    pinning = "none" if args.no_pin else "server on CPU 0, wrk on CPU 1, PostgreSQL unpinned"
    print(f"  pinning: {pinning}; {args.workers} server worker process(es)")
    print(
        f"  per endpoint: {args.warmup} s warm-up, {args.duration} s measured; "
        f"{args.rounds} rounds, server order alternating\n",
        flush=True,
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=int, default=10, help="seconds measured per run")
    parser.add_argument("--warmup", type=int, default=2, help="seconds of warm-up per run")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--workers", type=int, default=1, help="server worker processes")
    parser.add_argument("--servers", default="uvicorn,granian")
    parser.add_argument("--no-pin", action="store_true", help="don't pin processes to CPUs")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        print("This benchmark drives the servers with wrk: apt-get install -y wrk", file=sys.stderr)
        return 1
    if not args.no_pin and (shutil.which("taskset") is None or (os.cpu_count() or 1) < 2):
        args.no_pin = True
    if not 1 <= args.duration <= 120 or not 0 <= args.warmup <= 30 or not 1 <= args.rounds <= 10:
        parser.error("duration 1-120 s, warmup 0-30 s, rounds 1-10")
    names = [s.strip() for s in args.servers.split(",") if s.strip()]
    for name in names:
        if name not in SERVERS:
            parser.error(f"unknown server {name!r}; known: {', '.join(SERVERS)}")

    _pg_admin(f"DROP DATABASE IF EXISTS {DATABASE} WITH (FORCE)")
    _pg_admin(f"CREATE DATABASE {DATABASE}")
    try:
        env = os.environ | {
            "BILLFOLD_DATABASE_URL": _database_url(),
            "BILLFOLD_SERVE_WORKER": "0",
            "BILLFOLD_LOG_LEVEL": "WARNING",
        }
        created = subprocess.run(
            [str(BIN / "billfold"), "org", "create", "Bench", "--json"],
            env=env,
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        )
        api_key = json.loads(created.stdout.strip().splitlines()[-1])["api_key"]
        conditions(args)
        results = measure(args, api_key, env)
        summarize(results, names)
        print(f"\nload average after: {os.getloadavg()}")
    finally:
        _pg_admin(f"DROP DATABASE IF EXISTS {DATABASE} WITH (FORCE)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
