"""D1 (ledger-anchors §6): thousands of concurrent holds on one wallet, against
real `billfold serve` processes.

10,000 authorizations of 0.02 race for a 100.00 wallet, each with its own
Idempotency-Key, from 64-128 keep-alive connections (tests/live.py's Lane, a
minimal HTTP/1.1 client: httpx cost more CPU per request than the server):
exactly 5,000 are authorized and 5,000 declined (`insufficient_funds`). While
they run, a sampler thread reads the wallet's account rows straight from the
database and finds no moment when an account is below its floor. Afterwards
`billfold ledger verify` passes; replaying all 10,000 requests answers
byte-identical bodies and writes no row; capturing 0.01 of each hold leaves
posted 50.00, nothing held (D1's end; with four processes and on SQLite).

Run with one server process and with four (round-robin), which share nothing
but the database. A smaller run on SQLite checks the same on the embedded path.
"""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
import pytest

from billfold import limits
from tests.live import (
    Lane,
    billfold,
    create_org,
    lanes,
    pg_count_rows,
    scratch_postgres,
    servers,
    setup_customer,
    sync_client,
)

pytestmark = pytest.mark.slow

BACKENDS = os.environ.get("BILLFOLD_TEST_BACKENDS", "sqlite,postgresql").split(",")
needs_postgres = pytest.mark.skipif(
    "postgresql" not in BACKENDS, reason="PostgreSQL is not among BILLFOLD_TEST_BACKENDS"
)
needs_sqlite = pytest.mark.skipif(
    "sqlite" not in BACKENDS, reason="SQLite is not among BILLFOLD_TEST_BACKENDS"
)

USD_SCALE = 9
ROW_TABLES = (
    "authorizations",
    "authorization_splits",
    "journal_entries",
    "postings",
    "ledger_accounts",
    "idempotency_keys",
)
SAMPLES_MAX = 1_000_000
# Holds outlive the slowest run: none may expire between the race and the replay.
TTL_S = limits.authorization_ttl_max_s
# Each sample is one statement, so it sees one consistent snapshot of the rows.
SAMPLE_SQL = """
SELECT count(*),
       coalesce(sum(credits_posted_minor - debits_posted_minor - debits_pending_minor), 0),
       coalesce(min(credits_posted_minor - debits_posted_minor - debits_pending_minor
                    - floor_minor), 0),
       coalesce(sum(debits_pending_minor), 0)
  FROM ledger_accounts WHERE owner_id = {placeholder} AND tracked
"""


def minor(amount: str) -> int:
    whole, _, fraction = amount.partition(".")
    return int(whole) * 10**USD_SCALE + int(fraction.ljust(USD_SCALE, "0") or 0)


@dataclass(frozen=True)
class Call:
    """One request as sent: enough to send it again byte for byte."""

    base_url: str
    path: str
    key: str
    body: bytes


@dataclass(frozen=True)
class Reply:
    status: int
    body: bytes
    replayed: bool

    def json(self) -> dict[str, object]:
        decoded: dict[str, object] = json.loads(self.body)
        return decoded


async def send_all(workers: Sequence[Lane], calls: Sequence[Call]) -> list[Reply]:
    """Send every call, one in flight per lane; replies in call order."""
    replies: list[Reply | None] = [None] * len(calls)
    positions = iter(range(len(calls)))

    async def run(lane: Lane) -> None:
        for index in positions:  # shared iterator: each index is taken once
            call = calls[index]
            response = await lane.post(
                call.base_url + call.path, call.body, {"idempotency-key": call.key}
            )
            replies[index] = Reply(
                response.status_code,
                response.content,
                response.headers.get("idempotent-replayed") == "true",
            )

    await asyncio.gather(*(run(lane) for lane in workers))
    assert all(reply is not None for reply in replies)
    return [reply for reply in replies if reply is not None]


@dataclass
class Sampler:
    """Reads the wallet's account rows in a loop on its own thread and connection."""

    read: Callable[[], tuple[int, int, int, int]]
    samples: list[tuple[int, int, int, int]] = field(default_factory=list)
    error: BaseException | None = None
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def _run(self) -> None:
        try:
            while not self._stop.is_set() and len(self.samples) < SAMPLES_MAX:
                self.samples.append(self.read())
        except BaseException as exc:  # reported by stop()
            self.error = exc

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
            assert not self._thread.is_alive()
        if self.error is not None:
            raise self.error


@dataclass
class Run:
    urls: list[str]
    api_key: str
    customer_id: str
    count_rows: Callable[[], dict[str, int]]
    sample: Callable[[], tuple[int, int, int, int]]
    verify: Callable[[], None]
    close: Callable[[], None] = lambda: None


def calls_for(run: Run, count: int, amount: str, prefix: str) -> list[Call]:
    return [
        Call(
            run.urls[i % len(run.urls)],
            "/v1/authorizations",
            f"{prefix}-{i}",
            json.dumps(
                {"customer_id": run.customer_id, "asset": "USD", "amount": amount, "ttl_s": TTL_S}
            ).encode(),
        )
        for i in range(count)
    ]


async def hammer(
    run: Run, *, count: int, amount: str, funds: str, concurrency: int, capture: str | None
) -> None:
    """The D1 scenario: race, check every sampled moment, verify, replay, capture."""
    expected_authorized = minor(funds) // minor(amount)
    assert expected_authorized * 2 == count, "the scenario is half accepted, half declined"
    calls = calls_for(run, count, amount, "d1")

    sampler = Sampler(run.sample)
    async with lanes(run.api_key, concurrency) as workers:
        sampler.start()
        try:
            replies = await send_all(workers, calls)
        finally:
            sampler.stop()

        # Every request got a definite answer: exactly half held, half declined.
        assert {reply.status for reply in replies} == {200}, {r.status for r in replies}
        bodies = [reply.json() for reply in replies]
        authorized = [b for b in bodies if b["status"] == "authorized"]
        declined = [b for b in bodies if b["status"] == "declined"]
        assert len(authorized) == expected_authorized
        assert len(declined) == count - expected_authorized
        assert {b["decline_code"] for b in declined} == {"insufficient_funds"}
        assert all(b["amount"] == amount for b in bodies)
        assert len({b["id"] for b in bodies}) == count, "every request has its own authorization"
        assert not any(reply.replayed for reply in replies)

        # No sampled moment had an account below its floor or the wallet below zero.
        assert sampler.samples, "the sampler read nothing"
        assert all(accounts >= 1 for accounts, _, _, _ in sampler.samples)
        below = [s for s in sampler.samples if s[1] < 0 or s[2] < 0]
        assert not below, f"{len(below)} samples saw a balance below zero, first {below[0]}"
        # And the sampler did look while the holds were being taken.
        assert any(0 < held < minor(funds) for _, _, _, held in sampler.samples)
        final = run.sample()
        assert final[1] == 0, "everything is held"
        assert final[3] == minor(funds)
        run.verify()

        # Replaying every request answers the same bytes and writes nothing.
        before = run.count_rows()
        replays = await send_all(workers, calls)
        assert run.count_rows() == before
        for reply, replay in zip(replies, replays, strict=True):
            assert replay.status == reply.status
            assert replay.body == reply.body
            assert replay.replayed
        assert run.sample() == final

        if capture is None:
            return
        # D1's end: capture part of each hold; the rest returns to the wallet.
        captures = [
            Call(
                run.urls[i % len(run.urls)],
                f"/v1/authorizations/{body['id']}/capture",
                f"d1-capture-{i}",
                json.dumps({"amount": capture}).encode(),
            )
            for i, body in enumerate(authorized)
        ]
        captured = await send_all(workers, captures)
    assert {reply.status for reply in captured} == {200}, {r.status for r in captured}
    assert all(reply.json()["status"] == "captured" for reply in captured)
    assert all(reply.json()["captured_amount"] == capture for reply in captured)
    _, available, _, held = run.sample()
    assert held == 0
    assert available == minor(funds) - expected_authorized * minor(capture)
    run.verify()


# --- PostgreSQL -----------------------------------------------------------------


@pytest.fixture
def pg_database() -> Iterator[str]:
    with scratch_postgres("billfold_d1") as url:
        yield url


def pg_run(database_url: str, urls: list[str], api_key: str, customer_id: str) -> Run:
    connection = psycopg.connect(database_url, autocommit=True)
    lock = threading.Lock()

    def sample() -> tuple[int, int, int, int]:
        with lock:
            row = connection.execute(
                SAMPLE_SQL.format(placeholder="%s").encode(), (customer_id,)
            ).fetchone()
        assert row is not None
        return int(row[0]), int(row[1]), int(row[2]), int(row[3])

    def verify() -> None:
        done = billfold(database_url, "ledger", "verify")
        assert done.returncode == 0, done.stdout + done.stderr
        assert "every invariant holds" in done.stdout

    return Run(
        urls,
        api_key,
        customer_id,
        lambda: pg_count_rows(database_url, ROW_TABLES),
        sample,
        verify,
        connection.close,
    )


@needs_postgres
@pytest.mark.parametrize(
    ("processes", "concurrency", "capture"),
    [
        # One process is one core: D1's closing captures run with four only,
        # to keep each run within a couple of minutes on two cores.
        (1, 128, None),
        # Four processes share the connection budget of one PostgreSQL
        # (max_connections 100, up to 30 per process): 16 in flight each.
        (4, 64, "0.01"),
    ],
    ids=["1-process", "4-processes"],
)
async def test_ten_thousand_holds_on_one_wallet_postgres(
    pg_database: str, processes: int, concurrency: int, capture: str | None
) -> None:
    api_key = create_org(pg_database, "D1")
    with servers(pg_database, processes) as started:
        with sync_client(started[0].base_url, api_key) as http:
            customer_id = setup_customer(http, "d1-wallet", ["100.00"])
        run = pg_run(pg_database, [s.base_url for s in started], api_key, customer_id)
        try:
            await hammer(
                run, count=10_000, amount="0.02", funds="100.00", concurrency=concurrency,
                capture=capture,
            )  # fmt: skip
        except BaseException:
            for server in started:
                print(f"--- server on port {server.port}:\n{server.log()}")
            raise
        finally:
            run.close()
        for server in started:
            assert server.process is not None
            assert server.process.poll() is None, server.log()


# --- SQLite ---------------------------------------------------------------------


@needs_sqlite
async def test_one_thousand_holds_on_one_wallet_sqlite(tmp_path: Path) -> None:
    database_url = f"sqlite:///{tmp_path / 'd1.db'}"
    api_key = create_org(database_url, "D1")
    with servers(database_url, 1) as started:
        with sync_client(started[0].base_url, api_key) as http:
            customer_id = setup_customer(http, "d1-wallet", ["10.00"])
        # WAL: this reader never blocks the server's writer, nor it this reader.
        connection = sqlite3.connect(tmp_path / "d1.db", check_same_thread=False)
        lock = threading.Lock()

        def sample() -> tuple[int, int, int, int]:
            with lock:
                row = connection.execute(
                    SAMPLE_SQL.format(placeholder="?"), (customer_id,)
                ).fetchone()
            return int(row[0]), int(row[1]), int(row[2]), int(row[3])

        def count_rows() -> dict[str, int]:
            with lock:
                return {
                    t: int(connection.execute(f"SELECT count(*) FROM {t}").fetchone()[0])
                    for t in ROW_TABLES
                }

        def verify() -> None:
            done = billfold(database_url, "ledger", "verify")
            assert done.returncode == 0, done.stdout + done.stderr

        run = Run([started[0].base_url], api_key, customer_id, count_rows, sample, verify)
        try:
            await hammer(
                run, count=1_000, amount="0.02", funds="10.00", concurrency=32, capture="0.01"
            )
        except BaseException:
            print(f"--- server:\n{started[0].log()}")
            raise
        finally:
            connection.close()


@needs_postgres
async def test_many_wallets_in_shared_batches_across_four_processes(pg_database: str) -> None:
    """Batches span wallets: 40 wallets of 1.00, 100 holds of 0.02 each, all
    interleaved over four processes. Each wallet authorizes exactly 50, no
    batch deadlocks with another process's, and the journal verifies."""
    api_key = create_org(pg_database, "D1-many")
    with servers(pg_database, 4) as started:
        with sync_client(started[0].base_url, api_key) as http:
            customers = [setup_customer(http, f"w{i}", ["1.00"]) for i in range(40)]
        urls = [s.base_url for s in started]
        calls = [
            Call(
                urls[i % len(urls)],
                "/v1/authorizations",
                f"many-{i}",
                json.dumps(
                    {
                        "customer_id": customers[i % len(customers)],
                        "asset": "USD",
                        "amount": "0.02",
                        "ttl_s": TTL_S,
                    }
                ).encode(),
            )
            for i in range(4_000)
        ]
        async with lanes(api_key, 64) as workers:
            replies = await send_all(workers, calls)
        assert {reply.status for reply in replies} == {200}
        authorized: dict[str, int] = {}
        for reply in replies:
            body = reply.json()
            if body["status"] == "authorized":
                customer = str(body["customer_id"])
                authorized[customer] = authorized.get(customer, 0) + 1
        assert authorized == dict.fromkeys(customers, 50)
        done = billfold(pg_database, "ledger", "verify")
        assert done.returncode == 0, done.stdout + done.stderr
        for server in started:
            assert server.process is not None
            assert server.process.poll() is None, server.log()
