"""The gateway's billing steps, in process against the database: the same
authorization (wallet writer) and the same event ingestion (metering service)
that `POST /v1/authorizations` and `POST /v1/events` run, with the bodies the
SDK wrappers send (`billfold.llm._billing`)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
from dataclasses import dataclass
from datetime import timedelta
from multiprocessing.connection import Connection
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from billfold import limits
from billfold.api.context import AppContext
from billfold.assets.amounts import AssetInfo, parse_amount
from billfold.assets.service import get_asset
from billfold.authorizations.repository import AuthorizationRepository
from billfold.authorizations.service import AuthorizeRequest, IdempotencyRef, ResolveRequest
from billfold.config import Settings
from billfold.errors import Conflict, InvalidRequest
from billfold.expiring import ExpiringCache
from billfold.gateway import service as gateway_keys
from billfold.gateway.models import GatewayKey
from billfold.gateway.repository import SettlementRepository
from billfold.gateway.schemas import problem_document
from billfold.idempotency import service as idempotency
from billfold.llm._billing import (
    AuthorizationDeclined,
    Opened,
    Options,
    authorization_body,
    charged_input_data,
    new_call_id,
    settled_data,
    usage_event,
)
from billfold.llm._estimate import Estimate
from billfold.llm._usage import Tracker
from billfold.metering import service as metering
from billfold.metering import values
from billfold.observability import configure_logging
from billfold.organizations.service import Principal, hash_key
from billfold.realtime.service import PlannedEstimate, Pricing, plan_estimate

logger = logging.getLogger("billfold.gateway")


#: The answer to a repeat of a call that has ended (the same Idempotency-Key
#: and body), settled or released: the provider is called once per logical
#: call, and its answer is not kept to be replayed. The gateway sends it with
#: `x-should-retry: false`, which stops the SDKs retrying a 409.
CALL_ENDED = idempotency.StoredResponse(
    409,
    json.dumps(
        problem_document(
            409,
            "call_already_completed",
            "Conflict",
            "The call with this Idempotency-Key has already ended and its hold is "
            "settled; a new call needs a new key.",
        )
    ).encode(),
    "application/problem+json",
)


@dataclass(frozen=True, slots=True)
class Caller:
    """Whose wallet a gateway call bills."""

    organization_id: str
    customer_id: str
    gateway_key_id: str

    @property
    def principal(self) -> Principal:
        return Principal(organization_id=self.organization_id, api_key_id=self.gateway_key_id)


class LocalBilling:
    def __init__(
        self,
        ctx: AppContext,
        *,
        hold_amount: str | None,
        asset: str,
        ttl_s: int,
        settler_process: bool = False,
        lookup_ttl_s: float = limits.gateway_lookup_ttl_s,
    ) -> None:
        self.ctx = ctx
        # Read per call otherwise: 2.5-4 ms of the gateway's latency (README).
        self.lookup_ttl_s = lookup_ttl_s
        self._callers: ExpiringCache[str, Caller] = ExpiringCache(
            lookup_ttl_s, limits.gateway_lookups_cached_max
        )
        self._pricing: ExpiringCache[tuple[str, str], Pricing] = ExpiringCache(
            lookup_ttl_s, limits.gateway_lookups_cached_max
        )
        self.settler = Settler(
            ctx, own_queue=not settler_process, poll_s=limits.gateway_settlement_poll_s
        )
        self.hold_amount = hold_amount
        self.asset = asset
        self.ttl_s = ttl_s

    def options(self, caller: Caller, tags: dict[str, Any], on_provider_error: str) -> Options:
        return Options(
            customer=caller.customer_id,
            tags=tags,
            hold_amount=self.hold_amount,
            asset=self.asset,
            ttl_s=self.ttl_s,
            on_provider_error="charge_input" if on_provider_error == "charge_input" else "release",
        )

    async def authenticate(self, session: AsyncSession, secret: str | None) -> Caller | None:
        """The caller of an active key. A key revoked less than
        `lookup_ttl_s` ago may still pass: the cost of not reading it per call.
        Unknown keys are never cached (anyone can send a new one)."""
        digest = None if secret is None else hash_key(secret)
        cached = None if digest is None else self._callers.get(digest)
        if cached is not None:
            return cached
        key: GatewayKey | None = await gateway_keys.authenticate(session, secret)
        if key is None:
            return None
        caller = Caller(key.organization_id, key.customer_id, key.id)
        assert digest is not None
        self._callers.put(digest, caller)
        return caller

    async def claim_call(
        self, session: AsyncSession, caller: Caller, logical_key: str, path: str, body: bytes
    ) -> idempotency.StoredResponse | None:
        """Claim the client's Idempotency-Key for the call itself, beside its
        hold's: while the call runs, a repeat is refused with 409
        `idempotency_key_in_use` (retry shortly), and once it has ended it is
        answered `CALL_ENDED`, so the provider is never called twice for one
        call billed once. Raises Conflict; returns the answer for a call that
        has ended. `open` names the claim in `Opened.claimed_key`."""
        return await idempotency.claim(
            session,
            self.ctx.clock,
            caller.organization_id,
            key=_claim_key(caller, logical_key),
            method="POST",
            path=path,
            request_fingerprint=idempotency.fingerprint("POST", path, body),
            lease_s=limits.gateway_call_lease_s,
        )

    async def release_claim(self, caller: Caller, logical_key: str) -> None:
        """Give up the claim on a call that can run again: it was not held
        (declined, refused) or its hold is kept for a retry."""
        async with self.ctx.autocommit_sessions() as session:
            await idempotency.release(
                session, caller.organization_id, _claim_key(caller, logical_key)
            )
            await session.commit()

    async def _end_claim(self, caller: Caller, opened: Opened) -> None:
        if opened.claimed_key is None:
            return
        try:
            async with self.ctx.autocommit_sessions() as session:
                await idempotency.complete(
                    session, self.ctx.clock, caller.organization_id, opened.claimed_key, CALL_ENDED
                )
                await session.commit()
        except Conflict:
            # Our lease ran out and a repeat took the key over: it ends it.
            logger.warning("call %s outlived its claim on its key", opened.call_id)

    async def open(
        self,
        caller: Caller,
        options: Options,
        estimate: Estimate,
        logical_key: str | None,
        request_id: str | None,
        session: AsyncSession,
    ) -> Opened:
        """Hold the call's worst case; raises AuthorizationDeclined. Prices it
        in `session` (the one that found the key: a checkout saved), which it
        then ends, so no connection idles while the wallet's batch runs."""
        call_id = new_call_id() if logical_key is None else _call_id(caller, logical_key)
        body = authorization_body(options, estimate, call_id)
        planned: PlannedEstimate | None = None
        try:
            if "amount" in body:
                asset = await get_asset(session, caller.organization_id, body["asset"])
                amount_minor = parse_amount(asset, body["amount"], field="amount")
            else:
                # Rated by the writer, against the totals it reads with the lock.
                asset, planned = await self._estimated(session, caller, body["estimate"])
                amount_minor = 0
            await session.commit()
        finally:
            await session.close()
        # Only a client's own Idempotency-Key can make two requests one call;
        # a random call id needs no claim (that would cost queries per call).
        ref = (
            None
            if logical_key is None
            else IdempotencyRef(
                key=f"{call_id}:hold",
                fingerprint=idempotency.fingerprint(
                    "POST", "/v1/authorizations", json.dumps(body, sort_keys=True).encode()
                ),
                method="POST",
                path="/v1/authorizations",
            )
        )
        answer = await self.ctx.wallet_writer.submit(
            AuthorizeRequest(
                organization_id=caller.organization_id,
                customer_ref=caller.customer_id,
                asset=asset,
                amount_minor=amount_minor,
                ttl_s=options.ttl_s,
                metadata=body["metadata"],
                idempotency=ref,
                request_id=request_id,
                customer_known=True,  # the gateway key names it
                estimate=planned,
            )
        )
        document = json.loads(answer.body)
        if answer.status != 200 or document.get("status") != "authorized":
            code = document.get("decline_code") or document.get("code") or "declined"
            raise AuthorizationDeclined(str(code), request_id, document)
        claimed = None if logical_key is None else _claim_key(caller, logical_key)
        return Opened(call_id, document["id"], Tracker(estimate), claimed_key=claimed)

    async def _estimated(
        self, session: AsyncSession, caller: Caller, estimate: dict[str, Any]
    ) -> tuple[AssetInfo, PlannedEstimate]:
        """The worst-case event's asset and its estimate, as `POST
        /v1/authorizations` makes them for an `estimate`; the writer rates it.
        Reads nothing while this customer's `Pricing` is kept."""
        data = values.sanitize(estimate["data"], "estimate.data")
        now = self.ctx.clock.now()
        whose = (caller.organization_id, caller.customer_id)
        pricing = self._pricing.get(whose)
        if pricing is None or not pricing.covers(now):
            pricing = await Pricing.load(
                session, *whose, now, now + timedelta(seconds=self.lookup_ttl_s)
            )
            self._pricing.put(whose, pricing)
        planned = await plan_estimate(session, *whose, estimate["event_type"], data, now, pricing)
        if planned.unpriced is not None and planned.unpriced.policy == "block":
            # As `POST /v1/authorizations` answers: an unknown model is never free.
            raise AuthorizationDeclined(planned.unpriced.reason, None, {"status": "declined"})
        if not planned.priced:
            raise InvalidRequest(
                "No real-time price of this customer counts model calls, so the gateway "
                "cannot hold their cost. Price the usage events, or run the gateway with "
                "--hold-amount.",
                code="estimate_not_priced",
                status=422,
            )
        if self.asset in planned.base:
            return planned.base[self.asset][0], planned
        if len(planned.base) == 1:
            return next(iter(planned.base.values()))[0], planned
        raise InvalidRequest(
            f"Model calls are priced in several assets; none is {self.asset}.",
            code="estimate_asset_ambiguous",
            status=422,
        )

    async def settle(self, caller: Caller, options: Options, opened: Opened) -> None:
        if opened.done:
            return
        opened.done = True
        await self._ingest(caller, options, opened, settled_data(options, opened.tracker))
        await self._end_claim(caller, opened)

    async def fail(self, caller: Caller, options: Options, opened: Opened) -> None:
        if opened.done:
            return
        opened.done = True
        if options.on_provider_error == "charge_input":
            await self._ingest(caller, options, opened, charged_input_data(options, opened.tracker))
            await self._end_claim(caller, opened)
            return
        async with self.ctx.sessions() as session:
            hold = await AuthorizationRepository(session, caller.organization_id).get(
                opened.authorization_id
            )
            assert hold is not None, opened.authorization_id
            asset = await get_asset(session, caller.organization_id, hold.asset_code)
            await session.commit()
        answer = await self.ctx.wallet_writer.submit(
            ResolveRequest(
                organization_id=caller.organization_id,
                customer_id=caller.customer_id,
                asset=asset,
                authorization_id=opened.authorization_id,
                action="release",
                amount_minor=None,
                idempotency=None,
            )
        )
        if answer.status != 200:
            logger.error("could not release %s: %s", opened.authorization_id, answer.body[:300])
        await self._end_claim(caller, opened)

    async def _ingest(
        self, caller: Caller, options: Options, opened: Opened, data: dict[str, Any]
    ) -> None:
        """Queue the call's usage event durably (one short transaction) for
        the settler, which ingests it with the others queued meanwhile, in one
        transaction, which costs far less than one each. Returns once queued."""
        now = self.ctx.clock.now()
        event = usage_event(options, opened, data, now)
        async with self.ctx.autocommit_sessions() as session:  # one statement
            await SettlementRepository(session).add(caller.organization_id, json.dumps(event), now)
            await session.commit()
        self.settler.queued()

    def start(self) -> None:
        self.settler.start()

    async def close(self) -> None:
        await self.settler.close()


def _call_id(caller: Caller, logical_key: str) -> str:
    """One logical call per gateway key and client Idempotency-Key."""
    return f"llm_gw_{caller.gateway_key_id}_{logical_key[:100]}"


def _claim_key(caller: Caller, logical_key: str) -> str:
    """The idempotency key by which the gateway claims a logical call."""
    return f"{_call_id(caller, logical_key)}:call"


class Settler:
    """Ingests the queue of answered calls' usage events (`gateway_settlements`).

    In the server process itself (`own_queue`), woken by each queued row;
    every call's event waits `gateway_settle_linger_s` for others to share its
    transaction. `billfold gateway` runs one in a process of its own instead
    (`settle_in_own_process`): an ingest costs milliseconds of CPU, and on a
    server's event loop it would stall every call in flight meanwhile. The
    server processes then only take rows the settler left for longer than
    `gateway_settlement_stale_s` (it died, or is far behind), so the queue is
    drained whatever happens to that one process.
    """

    def __init__(self, ctx: AppContext, *, own_queue: bool, poll_s: float) -> None:
        self.ctx = ctx
        self.own_queue = own_queue
        self.poll_s = poll_s
        self._wake = asyncio.Event()
        self._closing = False
        self._drainer: asyncio.Task[None] | None = None

    def queued(self) -> None:
        """A row was queued by this process."""
        if self._drainer is None:
            self.start()  # an ASGI server that ran no lifespan: drain all the same
        if self.own_queue:
            self._wake.set()

    def start(self) -> None:
        """Start draining the queue, beginning with what an earlier process left."""
        self._drainer = asyncio.get_running_loop().create_task(self._drain_forever())

    async def close(self) -> None:
        """Drain what is queued (only stale rows, when a settler process owns
        the queue), then stop."""
        self._closing = True
        self._wake.set()
        if self._drainer is not None:
            await self._drainer
        # Once more for what was queued while its last pass ran: by now the
        # servers have stopped (the settler process) or this one has queued
        # its last call (a server process).
        while await self._drain_once():
            pass

    async def _drain_forever(self) -> None:
        while True:
            # Woken by a new row, or by the clock: for rows another process
            # queued (the settler polls), or could not ingest.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.poll_s)
            woken = self._wake.is_set()
            self._wake.clear()
            if woken and not self._closing:
                # Linger: the calls that end meanwhile share the transaction.
                await asyncio.sleep(limits.gateway_settle_linger_s)
            # Again at once only while a backlog remains; otherwise wait
            # first, or each call's event would go alone, right behind it.
            while await self._drain_once():
                pass
            if self._closing:
                return

    async def _drain_once(self) -> bool:
        """Ingest the oldest queued events of one organization; whether more
        were waiting (a full batch, or other organizations' events)."""
        stale = (
            None
            if self.own_queue
            else self.ctx.clock.now() - timedelta(seconds=limits.gateway_settlement_stale_s)
        )
        try:
            async with self.ctx.sessions() as session:
                queue = SettlementRepository(session)
                rows = await queue.take(limits.events_per_batch_max, queued_before=stale)
                if not rows:
                    return False
                organization_id = rows[0].organization_id
                backlog = len(rows) == limits.events_per_batch_max
                mine = [row for row in rows if row.organization_id == organization_id]
                backlog = backlog or len(mine) < len(rows)
                rows = mine
                # Removed first (the same transaction: an ingest that fails
                # puts them back): the ingest locks the customers' wallets,
                # which the calls' holds wait on, until the commit.
                await queue.remove([row.id for row in rows])
                outcome = await metering.ingest(
                    session,
                    self.ctx.clock,
                    Principal(organization_id=organization_id, api_key_id="gateway"),
                    [json.loads(row.event) for row in rows],
                    backfill_window_s=self.ctx.settings.event_backfill_window_s,
                )
                await session.commit()
        except Exception:
            # The rows stay queued and are tried again on the next tick.
            logger.exception("could not settle queued calls; they stay queued")
            return False
        for result in outcome.results:
            if result.status == "rejected":
                logger.error(
                    "usage event %s rejected: %s %s", result.id, result.code, result.detail
                )
        return backlog


def settle_in_own_process(parent: int, ready: Connection) -> None:
    """`billfold gateway`'s settler process: drains the queue until SIGTERM
    (sent once the servers have stopped) or the death of its `parent` (a
    process id: it may die before this one could ask), then ingests
    what is left and exits. Ctrl-C reaches it too, and is left to the parent:
    the servers may still queue events while they stop. Says so on `ready`
    once a SIGTERM would no longer kill it outright."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    settings = Settings.from_env()
    configure_logging(settings.log_level)

    async def run() -> None:
        ctx = AppContext.create(settings)
        # No process can wake this one: it polls, as often as a call lingers.
        settler = Settler(ctx, own_queue=True, poll_s=limits.gateway_settle_linger_s)
        stop = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
        # A pipe, not a multiprocessing.Event: setting one whose waiter was
        # killed while it waited blocks for good.
        with contextlib.suppress(OSError):
            ready.send(True)
        ready.close()
        settler.start()
        try:
            while os.getppid() == parent:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), limits.gateway_settlement_poll_s)
                if stop.is_set():
                    break
            await settler.close()
        finally:
            await ctx.engine.dispose()

    asyncio.run(run())
