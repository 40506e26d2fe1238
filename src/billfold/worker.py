"""Background work: webhook delivery and housekeeping.

Runs inside `billfold serve` and alone as `billfold worker`; several may run
against one database, since every job claims its rows before acting.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from billfold import limits
from billfold.api.context import AppContext
from billfold.costs.service import evaluate_all_cost_alerts
from billfold.idempotency import service as idempotency
from billfold.invoicing.service import run_billing
from billfold.metering import rollups
from billfold.wallets.service import sweep_due_wallets
from billfold.webhooks.delivery import WebhookSender

logger = logging.getLogger("billfold.worker")

ERROR_BACKOFF_S = 5.0


class Worker:
    def __init__(self, ctx: AppContext) -> None:
        self.ctx = ctx
        self.sender = WebhookSender(ctx.sessions, ctx.clock)
        self._last_housekeeping = 0.0
        self._last_billing_run = 0.0

    async def housekeeping(self) -> None:
        async with self.ctx.sessions() as session:
            pruned = await idempotency.prune(session, self.ctx.clock)
            await session.commit()
        if pruned:
            logger.info("pruned idempotency keys", extra={"count": pruned})
        # Margin and top-cost alerts over rolling windows: cheap enough at the
        # housekeeping pace, and evaluated on committed fees and costs only.
        alerts = await evaluate_all_cost_alerts(self.ctx.sessions, self.ctx.clock)
        if alerts:
            logger.info("cost alerts emitted", extra={"count": alerts})

    async def tick(self) -> int:
        if time.monotonic() - self._last_housekeeping >= limits.housekeeping_interval_s:
            self._last_housekeeping = time.monotonic()
            await self.housekeeping()
        # Expiry is also applied lazily whenever a wallet is touched; the sweep
        # makes sure idle wallets release their expired holds and grants too.
        swept = await sweep_due_wallets(self.ctx.sessions, self.ctx.clock)
        # A full batch counts as work: a backlog is moved without sleeping.
        moved = await rollups.compact(self.ctx.sessions)
        swept += moved if moved >= limits.rollup_deltas_per_compaction_max else 0
        if time.monotonic() - self._last_billing_run >= limits.billing_run_interval_s:
            # Closes the periods that ended since the last run and finalizes
            # drafts past their grace period; idempotent, so workers may overlap.
            self._last_billing_run = time.monotonic()
            report = await run_billing(self.ctx.sessions, self.ctx.clock)
            swept += report.invoices + report.finalized
        return swept + await self.sender.run_once()

    async def run(self, stop: asyncio.Event) -> None:
        try:
            while not stop.is_set():
                try:
                    busy = await self.tick() > 0
                except Exception:
                    logger.exception("worker tick failed; retrying")
                    busy = False
                    await _sleep_unless(stop, ERROR_BACKOFF_S)
                    continue
                if not busy:
                    await _sleep_unless(stop, limits.webhook_poll_interval_s)
        finally:
            await self.sender.aclose()


async def _sleep_unless(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), timeout=seconds)
