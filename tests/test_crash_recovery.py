"""Crash recovery (ledger-anchors §5.8 #9, D2): kill -9 a real server mid-load.

Lanes of a pooled async client drive authorizations, captures and releases
against `billfold serve` on PostgreSQL; once enough of them were answered the
server's whole process group gets SIGKILL, with requests in flight and
batches possibly committed but not yet answered. On the same database a new
server starts, and then:

- `billfold ledger verify` passes (journal folds, hold entries, splits);
- every answered (2xx) operation is in the database exactly as answered: the
  authorization's id, amount and status, the capture's amount, and the stored
  idempotent response is the very bytes the client got;
- no unanswered operation is half there: each authorization row has its one
  hold entry and splits (or is a decline with none), each resolution its
  one entry, each stored key its rows;
- retrying every unanswered request with its Idempotency-Key converges: it
  either replays the answer stored before the crash or is processed once,
  and a second retry replays that same answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest

from tests.live import (
    Lane,
    RawResponse,
    Server,
    billfold,
    create_org,
    lanes,
    pg_rows,
    scratch_postgres,
    setup_customer,
    sigterm_unwinds,
    sync_client,
)

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        "postgresql" not in os.environ.get("BILLFOLD_TEST_BACKENDS", "sqlite,postgresql"),
        reason="PostgreSQL is not among BILLFOLD_TEST_BACKENDS",
    ),
]

CUSTOMERS = 12
FUNDS = "20.00"
LANES = 48
OPS_PER_LANE_MAX = 10_000
ANSWERED_BEFORE_KILL = 400
LOAD_BEFORE_KILL_S_MAX = 90.0
USD_SCALE = 9


@dataclass
class Op:
    kind: str  # authorize | capture | release
    key: str
    path: str
    body: bytes
    authorization_id: str | None = None  # for captures and releases
    status: int | None = None  # None: no answer came (the crash)
    answer: bytes | None = None

    @property
    def answered(self) -> bool:
        return self.status is not None

    def json(self) -> dict[str, object]:
        assert self.answer is not None
        decoded: dict[str, object] = json.loads(self.answer)
        return decoded


@dataclass
class Load:
    customers: list[str]
    ops: list[Op] = field(default_factory=list)
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    #: Set once ANSWERED_BEFORE_KILL operations were answered.
    busy: asyncio.Event = field(default_factory=asyncio.Event)
    answered: int = 0


async def send(connection: Lane, base_url: str, op: Op) -> RawResponse:
    return await connection.post(base_url + op.path, op.body, {"idempotency-key": op.key})


async def drive(connection: Lane, base_url: str, load: Load, number: int) -> None:
    """Authorize; then capture part, release, or leave open. Stops at the first
    request without an answer, so each lane leaves at most one behind."""
    rng = random.Random(number)
    for n in range(OPS_PER_LANE_MAX):
        if load.stop.is_set():
            return
        key = f"crash-{number}-{n}"
        body = {
            "customer_id": rng.choice(load.customers),
            "asset": "USD",
            "amount": f"{rng.randint(1, 150) / 100:.2f}",
            "metadata": {"key": key},
        }
        held = Op("authorize", key, "/v1/authorizations", json.dumps(body).encode())
        if not await attempt(connection, base_url, load, held):
            return
        if held.status != 200 or held.json()["status"] != "authorized":
            continue
        authorization_id = str(held.json()["id"])
        choice = rng.random()
        if choice < 0.5:
            amount = rng.randint(0, int(float(body["amount"]) * 100)) / 100
            resolve = Op(
                "capture",
                f"{key}-capture",
                f"/v1/authorizations/{authorization_id}/capture",
                json.dumps({"amount": f"{amount:.2f}"}).encode(),
                authorization_id,
            )
        elif choice < 0.8:
            resolve = Op(
                "release",
                f"{key}-release",
                f"/v1/authorizations/{authorization_id}/release",
                b"{}",
                authorization_id,
            )
        else:
            continue
        if not await attempt(connection, base_url, load, resolve):
            return


async def attempt(connection: Lane, base_url: str, load: Load, op: Op) -> bool:
    load.ops.append(op)
    try:
        response = await send(connection, base_url, op)
    except (OSError, asyncio.IncompleteReadError):
        load.stop.set()
        return False
    op.status, op.answer = response.status_code, response.content
    load.answered += 1
    if load.answered >= ANSWERED_BEFORE_KILL:
        load.busy.set()
    assert response.status_code == 200, response.content
    return True


async def kill_when_busy(server: Server, load: Load) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(load.busy.wait(), LOAD_BEFORE_KILL_S_MAX)
    server.kill()  # SIGKILL to the whole process group, mid-load
    load.stop.set()


def minor(amount: str) -> int:
    whole, _, fraction = amount.partition(".")
    return int(whole) * 10**USD_SCALE + int(fraction.ljust(USD_SCALE, "0") or 0)


@pytest.fixture
def database() -> Iterator[str]:
    with scratch_postgres("billfold_crash") as url:
        yield url


@pytest.fixture
def server(database: str) -> Iterator[Server]:
    started = Server(database)
    with sigterm_unwinds():
        try:
            started.start()
            yield started
        finally:
            started.stop()


async def test_kill_9_mid_load_then_recover(database: str, server: Server) -> None:
    api_key = create_org(database, "Crash")
    with sync_client(server.base_url, api_key) as http:
        customers = [setup_customer(http, f"crash-{i}", [FUNDS]) for i in range(CUSTOMERS)]
    load = Load(customers)
    async with lanes(api_key, LANES) as connections:
        await asyncio.gather(
            kill_when_busy(server, load),
            *(
                drive(connection, server.base_url, load, number)
                for number, connection in enumerate(connections)
            ),
        )
    answered = [op for op in load.ops if op.answered]
    unanswered = [op for op in load.ops if not op.answered]
    assert len(answered) >= ANSWERED_BEFORE_KILL // 2, "the load ran before the kill"
    assert unanswered, "the kill left requests without an answer"
    assert len(unanswered) <= LANES

    server.start()  # the same database, after the crash

    # The ledger is whole.
    verified = billfold(database, "ledger", "verify")
    assert verified.returncode == 0, verified.stdout + verified.stderr

    # Every answered operation is there exactly as answered.
    holds = {
        row[0]: row[1:]
        for row in pg_rows(
            database,
            "SELECT id, status, decline_code, amount_minor, captured_minor, released_minor, "
            "details->'metadata'->>'key' FROM authorizations",
        )
    }
    stored = {
        row[0]: (row[1], bytes(row[2]) if row[2] is not None else None)
        for row in pg_rows(
            database, "SELECT key, response_status, response_body FROM idempotency_keys"
        )
    }
    resolved_by = {op.authorization_id: op for op in load.ops if op.authorization_id}
    for op in answered:
        assert stored[op.key] == (op.status, op.answer), f"{op.key}: stored answer differs"
        answer = op.json()
        if op.kind == "authorize":
            row = holds[str(answer["id"])]
            assert row[5] == op.key
            assert row[2] == minor(str(answer["amount"]))
            if answer["status"] == "declined":
                assert row[:2] == ("declined", "insufficient_funds")
            else:
                later = resolved_by.get(str(answer["id"]))
                settled = {"capture": "captured", "release": "released"}
                if later is None:
                    assert row[0] == "authorized"
                elif later.answered:
                    assert row[0] == settled[later.kind]
                else:
                    assert row[0] in ("authorized", settled[later.kind])
        else:
            row = holds[str(op.authorization_id)]
            assert (
                row[0]
                == answer["status"]
                == {"capture": "captured", "release": "released"}[op.kind]
            )
            assert row[3] == minor(str(answer["captured_amount"]))
            assert row[4] == minor(str(answer["released_amount"]))

    # Nothing is half there: one hold entry per non-declined authorization, one
    # entry per resolution, and an authorization row only with its stored key.
    entries = pg_rows(
        database,
        "SELECT a.id, a.status, count(*) FILTER (WHERE j.kind = 'hold'), "
        "count(*) FILTER (WHERE j.kind IN ('capture', 'release', 'hold_expiry')) "
        "FROM authorizations a LEFT JOIN journal_entries j ON j.reference_id = a.id "
        "GROUP BY a.id, a.status",
    )
    for authorization_id, status, hold_entries, resolutions in entries:
        if status == "declined":
            assert (hold_entries, resolutions) == (0, 0), authorization_id
        else:
            assert hold_entries == 1, authorization_id
            assert resolutions == (0 if status == "authorized" else 1), authorization_id
    for row in holds.values():
        key = row[5]
        assert stored.get(key, (None, None))[0] == 200, f"{key}: a row without its stored answer"
    for key, (status, body) in stored.items():
        assert status is not None, f"{key}: a key claimed but never completed"
        assert body is not None

    # Retrying each unanswered request converges: stored answer or processed once.
    async with lanes(api_key, len(unanswered)) as connections:
        first = await asyncio.gather(
            *(send(c, server.base_url, op) for c, op in zip(connections, unanswered, strict=True))
        )
        second = await asyncio.gather(
            *(send(c, server.base_url, op) for c, op in zip(connections, unanswered, strict=True))
        )
    committed_before_crash = 0
    for op, retry, again in zip(unanswered, first, second, strict=True):
        assert retry.status_code == 200, retry.content
        assert again.status_code == 200
        assert again.content == retry.content
        assert again.headers.get("idempotent-replayed") == "true"
        if retry.headers.get("idempotent-replayed") == "true":
            committed_before_crash += 1  # D2: committed, then killed before the reply
            assert stored[op.key] == (200, retry.content)
        else:
            assert op.key not in stored
        if op.kind == "authorize":
            rows = [row for row in holds.values() if row[5] == op.key]
            assert len(rows) == (1 if op.key in stored else 0)
    print(
        f"\n{len(answered)} answered, {len(unanswered)} unanswered at the kill, "
        f"of which {committed_before_crash} had committed"
    )
    count = pg_rows(
        database,
        "SELECT count(*) FROM authorizations WHERE details->'metadata'->>'key' = ANY(%s)",
        [op.key for op in unanswered if op.kind == "authorize"],
    )
    assert count[0][0] == sum(op.kind == "authorize" for op in unanswered)
    verified = billfold(database, "ledger", "verify")
    assert verified.returncode == 0, verified.stdout + verified.stderr
