"""Benchmark: one billing run over many subscriptions with usage, on PostgreSQL.

    .venv/bin/python bench/billing_run.py [--subscriptions 10000] [--events 100]
        [--keep-setup] [--profile FILE]

Creates a fresh database, one organization, a product with a monthly fixed
fee and an in-arrears graduated usage price, N customers each subscribed on
Jan 1 and each with E events in January, then times `run_billing` at Feb 1:
every subscription closes January (usage rated with its tiers, the February
fee in advance) and its invoice is finalized and numbered. Prints the setup
time, the run's total time and invoices per second.

`--keep-setup` keeps the set-up database as a template
(`billfold_bench_billing_<N>x<E>`) and clones it on later runs with the same
sizes and schema, so a run can be repeated without the long setup; `--profile`
writes a cProfile of the billing run (read it with `python -m pstats FILE`).
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import os
import time
from datetime import UTC, datetime, timedelta

import psycopg

from billfold.api.context import AppContext
from billfold.catalog import service as catalog
from billfold.clock import FrozenClock
from billfold.config import Settings
from billfold.customers import service as customers
from billfold.db.migrate import upgrade
from billfold.invoicing.service import run_billing
from billfold.metering import service as metering
from billfold.organizations import service as organizations
from billfold.organizations.service import Principal
from billfold.subscriptions import service as subscriptions

PG_ADMIN_URL = os.environ.get(
    "BILLFOLD_BENCH_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)
DATABASE = "billfold_bench_billing"
START = datetime(2030, 1, 1, tzinfo=UTC)


def _pg_admin(sql: str) -> None:
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as connection:
        connection.execute(sql.encode())


def _database_exists(name: str) -> bool:
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as connection:
        found = connection.execute(
            b"SELECT 1 FROM pg_database WHERE datname = %s", (name,)
        ).fetchone()
    return found is not None


async def setup(ctx: AppContext, clock: FrozenClock, count: int, events: int) -> None:
    async with ctx.sessions() as session:
        organization, issued = await organizations.create_organization(session, clock, "Bench")
        await session.commit()
    principal = Principal(organization.id, issued.api_key.id)
    async with ctx.sessions() as session:
        await metering.create_meter(
            session,
            clock,
            principal,
            code="tokens",
            name=None,
            event_type="llm",
            aggregation="sum",
            field="tokens",
            filters=None,
            group_by=None,
        )
        await catalog.create_product(
            session,
            clock,
            principal,
            code="pro",
            name="Pro",
            prices=[
                {"code": "base", "type": "fixed", "asset": "USD", "amount": "20"},
                {
                    "code": "usage",
                    "type": "usage",
                    "meter": "tokens",
                    "asset": "USD",
                    "billing": "in_arrears",
                    "model": "graduated",
                    "tiers": [
                        {"up_to": "1000", "unit_amount": "0.001"},
                        {"up_to": None, "unit_amount": "0.0005"},
                    ],
                },
            ],
            features=None,
        )
        await session.commit()
    batch: list[dict[str, object]] = []
    for n in range(count):
        async with ctx.sessions() as session:
            customer = (
                await customers.create_or_get(
                    session,
                    clock,
                    principal,
                    external_id=f"c{n}",
                    name=None,
                    email=None,
                    metadata=None,
                )
            ).customer
            await subscriptions.create_subscription(
                session,
                clock,
                principal,
                customer_ref=customer.id,
                product_code="pro",
                version=None,
                start_at="2030-01-01T00:00:00Z",
            )
            await session.commit()
        for e in range(events):
            at = START + timedelta(minutes=7 * e + n % 7)
            batch.append(
                {
                    "id": f"e{n}-{e}",
                    "customer_id": customer.id,
                    "type": "llm",
                    "timestamp": at.isoformat(),
                    "data": {"tokens": 10 + e},
                }
            )
        if len(batch) >= 1000 or n == count - 1:
            clock.set(max(clock.now(), datetime(2030, 1, 31, tzinfo=UTC)))
            async with ctx.sessions() as session:
                await metering.ingest(
                    session, clock, principal, batch, backfill_window_s=40 * 86400
                )
                await session.commit()
            batch = []


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--subscriptions", type=int, default=10_000)
    parser.add_argument("--events", type=int, default=100)
    parser.add_argument("--keep-setup", action="store_true")
    parser.add_argument("--profile", metavar="FILE")
    args = parser.parse_args()
    template = f"{DATABASE}_{args.subscriptions}x{args.events}"
    _pg_admin(f"DROP DATABASE IF EXISTS {DATABASE} WITH (FORCE)")
    reuse = args.keep_setup and _database_exists(template)
    if reuse:
        _pg_admin(f"CREATE DATABASE {DATABASE} TEMPLATE {template}")
    else:
        _pg_admin(f"CREATE DATABASE {DATABASE}")
    base, _, _ = PG_ADMIN_URL.rpartition("/")
    url = f"{base}/{DATABASE}"
    upgrade(url)
    clock = FrozenClock(START)
    ctx = AppContext.create(
        Settings(database_url=url, log_level="WARNING", run_worker_in_server=False), clock=clock
    )
    try:
        if reuse:
            print(f"setup: cloned from {template}")
        else:
            began = time.perf_counter()
            await setup(ctx, clock, args.subscriptions, args.events)
            print(
                f"setup: {args.subscriptions} subscriptions × {args.events} events "
                f"in {time.perf_counter() - began:.1f} s",
                flush=True,
            )
            if args.keep_setup:
                await ctx.engine.dispose()
                _pg_admin(f"DROP DATABASE IF EXISTS {template} WITH (FORCE)")
                _pg_admin(f"CREATE DATABASE {template} TEMPLATE {DATABASE}")
        clock.set(datetime(2030, 2, 1, 0, 0, 1, tzinfo=UTC))
        profiler = cProfile.Profile() if args.profile else None
        began = time.perf_counter()
        if profiler is not None:
            profiler.enable()
        report = await run_billing(ctx.sessions, clock)
        elapsed = time.perf_counter() - began
        if profiler is not None:
            profiler.disable()
            profiler.dump_stats(args.profile)
        print(
            f"billing run: {report.subscriptions} subscriptions, {report.invoices} invoices, "
            f"{report.finalized} finalized, {report.failed} failed in {elapsed:.2f} s "
            f"= {report.invoices / elapsed:.0f} invoices/s"
        )
    finally:
        await ctx.engine.dispose()
        _pg_admin(f"DROP DATABASE IF EXISTS {DATABASE} WITH (FORCE)")


if __name__ == "__main__":
    asyncio.run(main())
