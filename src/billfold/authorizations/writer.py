"""The wallet writer: the hot path for holds, captures and releases.

Requests of one organization queue up behind one drain task, whatever their
wallets. Each turn takes everything queued (up to a bound), opens one
transaction, locks every wallet the batch touches with one statement (in
customer, asset order), loads them with a fixed number of queries, decides
every request in memory in arrival order, writes all rows with a handful of
statements, stores each request's idempotent answer in the same
transaction, commits once, and only then answers each caller. Under load a
batch grows to what queued during the previous commit, so one transaction
and one fsync serve many requests, for one hot wallet or for thousands;
when idle a batch is a single request.

Several processes stay correct together because each batch holds its
wallets' row locks, and the account counters are also guarded by the
database's own conditional update (ledger/repository.py).

With batching off (`BILLFOLD_AUTHORIZATION_BATCHING=0`) there is no queue:
each request runs alone in its own transaction at once, and concurrent ones
for a wallet wait on its row lock in the database — the naive path the
benchmark (bench/authorizations.py) compares against.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from billfold import limits
from billfold.assets.amounts import format_amount
from billfold.authorizations import service
from billfold.authorizations.models import Authorization
from billfold.authorizations.repository import AuthorizationRepository
from billfold.authorizations.service import (
    Answer,
    AuthorizeRequest,
    IdempotencyRef,
    ResolveRequest,
    WalletRequest,
)
from billfold.clock import Clock
from billfold.customers.service import resolve_customer_ids
from billfold.db.engine import dialect_of
from billfold.errors import BillfoldError, Conflict, NotFound
from billfold.idempotency import service as idempotency
from billfold.realtime.repository import RealtimeRepository, Total, TotalKey
from billfold.wallets.service import OpenWallet, close_wallets, open_wallets_reading
from billfold.wallets.state import Split

logger = logging.getLogger("billfold.authorizations")


@dataclass(slots=True)
class _Queued:
    request: WalletRequest
    future: asyncio.Future[Answer]


class WalletWriter:
    def __init__(
        self, sessions: async_sessionmaker[AsyncSession], clock: Clock, *, batching: bool = True
    ) -> None:
        self.sessions = sessions
        self.clock = clock
        self.batching = batching
        self._queues: dict[str, list[_Queued]] = {}  # by organization
        # Strong references: the event loop keeps only weak ones to tasks.
        self._drains: set[asyncio.Task[None]] = set()
        self._alone: set[asyncio.Task[list[Answer]]] = set()

    async def submit(self, request: WalletRequest) -> Answer:
        key = request.organization_id
        if not self.batching:
            return await self._run_alone(key, request)
        future: asyncio.Future[Answer] = asyncio.get_running_loop().create_future()
        queue = self._queues.get(key)
        if queue is None:
            queue = self._queues[key] = []
            drain = asyncio.create_task(self._drain(key, queue))
            self._drains.add(drain)
            drain.add_done_callback(self._drains.discard)
        queue.append(_Queued(request, future))
        # The batch runs to its commit even if this caller goes away; a retry
        # with the same Idempotency-Key then gets the stored answer.
        return await asyncio.shield(future)

    async def _run_alone(self, key: str, request: WalletRequest) -> Answer:
        """The naive path: a batch of one, in its own transaction, now."""
        run = asyncio.create_task(self._run_batch(key, [request]))
        self._alone.add(run)
        run.add_done_callback(self._alone.discard)
        # Like a batch, it runs to its commit even if the caller goes away.
        (result,) = await asyncio.shield(run)
        return result

    async def _drain(self, key: str, queue: list[_Queued]) -> None:
        try:
            while queue:
                batch = queue[: limits.authorizations_per_batch_max]
                del queue[: limits.authorizations_per_batch_max]
                try:
                    answers = await self._run_batch(key, [item.request for item in batch])
                except BaseException as exc:
                    logger.exception("wallet batch failed", extra={"size": len(batch)})
                    for item in batch:
                        if not item.future.done():
                            item.future.set_exception(exc)
                    if not isinstance(exc, Exception):
                        raise
                    continue
                for item, result in zip(batch, answers, strict=True):
                    if not item.future.done():
                        item.future.set_result(result)
        finally:
            # No await between the emptiness check above and this: a request
            # arriving now either found the queue (and was drained) or will
            # start a new one.
            if self._queues.get(key) is queue:
                del self._queues[key]

    async def _run_batch(
        self, organization_id: str, requests: Sequence[WalletRequest]
    ) -> list[Answer]:
        async with self.sessions() as session:
            now = self.clock.now()
            authorizing = [r for r in requests if isinstance(r, AuthorizeRequest)]
            customer_ids = await resolve_customer_ids(
                session,
                organization_id,
                {r.customer_ref for r in authorizing if not r.customer_known},
            )
            customer_ids.update(
                (r.customer_ref, r.customer_ref) for r in authorizing if r.customer_known
            )
            # Estimates are rated against the totals as they stand once the
            # wallets are locked (an ingest moves them under those locks),
            # read in the same round trip on PostgreSQL.
            estimated = [r.estimate for r in authorizing if r.estimate is not None]
            realtime = RealtimeRepository(session, organization_id)
            total_keys = set().union(*(planned.total_keys for planned in estimated))
            reading = realtime.pg_read_totals(total_keys)
            wallets, read = await open_wallets_reading(
                session,
                now,
                organization_id,
                _wallet_keys(requests, customer_ids),
                [] if reading is None else [reading],
            )
            if estimated:
                totals = (
                    await realtime.read_totals(total_keys)
                    if reading is None
                    else realtime.totals_of(read[0])
                )
                requests = [_rated(request, totals) for request in requests]
            answers: list[Answer | None] = [None] * len(requests)
            first_with_key: dict[str, int] = {}
            await self._claim_keys(session, organization_id, requests, answers, first_with_key)

            holds = AuthorizationRepository(session, organization_id)
            resolving = [r.authorization_id for r in requests if isinstance(r, ResolveRequest)]
            loaded = await holds.get_many(resolving)
            splits = await holds.splits_of(list(loaded))
            new_rows: list[Authorization] = []
            new_splits: list[tuple[str, list[Split]]] = []
            for index, request in enumerate(requests):
                if answers[index] is not None or _is_duplicate(request, index, first_with_key):
                    continue
                if isinstance(request, AuthorizeRequest):
                    customer_id = customer_ids.get(request.customer_ref)
                    if customer_id is None:
                        answers[index] = service.declined_without_wallet(
                            request.asset.code,
                            format_amount(request.asset, request.amount_minor),
                            request.metadata,
                            "customer_not_found",
                        )
                        continue
                    opened = wallets.get((customer_id, request.asset.code))
                    row, taken = service.authorize(opened, request, customer_id, now)
                    new_rows.append(row)
                    if taken:
                        new_splits.append((row.id, taken))
                    answers[index] = service.answer(200, service.render(row, request.asset))
                else:
                    answers[index] = await self._resolve(
                        holds,
                        wallets.get((request.customer_id, request.asset.code)),
                        loaded.get(request.authorization_id),
                        splits,
                        request,
                        now,
                    )

            hold_rows = [_row_values(row) for row in new_rows]
            split_rows = [
                {
                    "authorization_id": authorization_id,
                    "seq": seq,
                    "organization_id": organization_id,
                    "account_id": split.account_id,
                    "grant_id": split.grant_id,
                    "amount_minor": split.amount_minor,
                }
                for authorization_id, taken in new_splits
                for seq, split in enumerate(taken)
            ]
            if dialect_of(session) == "postgresql":
                # The new holds go with the ledger's writes: one round trip.
                await close_wallets(
                    session,
                    self.clock,
                    list(wallets.values()),
                    then=holds.pg_inserts(hold_rows, split_rows),
                )
            else:
                await close_wallets(session, self.clock, list(wallets.values()))
                await holds.insert(hold_rows, split_rows)
            completed: list[tuple[str, idempotency.StoredResponse]] = []
            for key_text, index in first_with_key.items():
                result = answers[index]
                assert result is not None
                completed.append(
                    (
                        key_text,
                        idempotency.StoredResponse(result.status, result.body, result.content_type),
                    )
                )
            await idempotency.complete_many(session, self.clock, organization_id, completed)
            await session.commit()
        return [_final(answers, requests, index, first_with_key) for index in range(len(requests))]

    async def _claim_keys(
        self,
        session: AsyncSession,
        organization_id: str,
        requests: Sequence[WalletRequest],
        answers: list[Answer | None],
        first_with_key: dict[str, int],
    ) -> None:
        """Claim each Idempotency-Key inside the batch's transaction.

        Keys are claimed in sorted order so two processes' batches never wait
        on each other's keys in opposite orders (no deadlock). A key already
        completed replays; one used for a different request is refused.
        """
        keyed = [(r.idempotency, i) for i, r in enumerate(requests) if r.idempotency is not None]
        keyed.sort(key=lambda pair: (pair[0].key, pair[1]))
        # Every distinct key at once (one INSERT, one SELECT); a key that
        # comes again in this batch is settled one by one below.
        firsts: dict[str, int] = {}
        for ref, index in keyed:
            firsts.setdefault(ref.key, index)
        claims = [
            idempotency.Claim(ref.key, ref.method, ref.path, ref.fingerprint)
            for ref, index in keyed
            if firsts[ref.key] == index
        ]
        outcomes = await idempotency.claim_many(session, self.clock, organization_id, claims)
        for claim, outcome in zip(claims, outcomes, strict=True):
            index = firsts[claim.key]
            if isinstance(outcome, Conflict):
                answers[index] = service.problem_answer(outcome, requests[index].request_id)
            elif outcome is not None:
                answers[index] = Answer(
                    outcome.status, outcome.body, outcome.content_type or "application/json", True
                )
            else:
                first_with_key[claim.key] = index
        for ref, index in keyed:
            if firsts[ref.key] == index:
                continue
            if ref.key in first_with_key:
                first = requests[first_with_key[ref.key]].idempotency
                assert first is not None
                if first.fingerprint != ref.fingerprint:
                    answers[index] = service.problem_answer(_reused(), requests[index].request_id)
                continue
            try:
                stored = await idempotency.claim(
                    session,
                    self.clock,
                    organization_id,
                    key=ref.key,
                    method=ref.method,
                    path=ref.path,
                    request_fingerprint=ref.fingerprint,
                )
            except Conflict as conflict:
                answers[index] = service.problem_answer(conflict, requests[index].request_id)
                continue
            if stored is not None:
                answers[index] = Answer(
                    stored.status, stored.body, stored.content_type or "application/json", True
                )
                continue
            first_with_key[ref.key] = index

    async def _resolve(
        self,
        holds: AuthorizationRepository,
        opened: OpenWallet | None,
        authorization: Authorization | None,
        splits: dict[str, list[Split]],
        request: ResolveRequest,
        now: datetime,
    ) -> Answer:
        if authorization is None:
            return service.problem_answer(
                NotFound.of("authorization", field="id"), request.request_id
            )
        if authorization.status == "authorized" and authorization.expires_at <= now:
            # The sweep normally got here first; expiry is server time either way.
            assert opened is not None, "an open hold always has its wallet"
            settlement = opened.state.settle(
                authorization.id, splits[authorization.id], 0, "hold_expiry", now
            )
            await holds.resolve(authorization, "expired", 0, settlement.released_minor, now)
        if request.action == "refresh":
            return service.answer(200, service.render(authorization, request.asset))
        try:
            service.check_resolvable(authorization, request)
        except BillfoldError as error:
            return service.problem_answer(error, request.request_id)
        assert opened is not None, "an open hold always has its wallet"
        status, captured, released = service.resolve(
            opened, authorization, splits[authorization.id], request, now
        )
        await holds.resolve(authorization, status, captured, released, now)
        return service.answer(200, service.render(authorization, request.asset))


def _rated(request: WalletRequest, totals: Mapping[TotalKey, Total]) -> WalletRequest:
    """An estimate's request with the amount it holds."""
    if not isinstance(request, AuthorizeRequest) or request.estimate is None:
        return request
    fees = request.estimate.finish(totals).fees
    _, amount_minor = fees.get(request.asset.code, (request.asset, 0))
    return replace(request, amount_minor=amount_minor)


def _wallet_keys(
    requests: Sequence[WalletRequest], customer_ids: dict[str, str]
) -> list[tuple[str, str]]:
    """The (customer, asset) of every wallet the batch touches, sorted: the
    order every path locks wallets in."""
    keys: set[tuple[str, str]] = set()
    for request in requests:
        if isinstance(request, ResolveRequest):
            keys.add((request.customer_id, request.asset.code))
        elif (customer_id := customer_ids.get(request.customer_ref)) is not None:
            keys.add((customer_id, request.asset.code))
    return sorted(keys)


def _reused() -> Conflict:
    return Conflict(
        "This Idempotency-Key was already used with a different request.",
        code="idempotency_key_reused",
        field=idempotency.HEADER,
    )


def _is_duplicate(request: WalletRequest, index: int, first_with_key: dict[str, int]) -> bool:
    ref: IdempotencyRef | None = request.idempotency
    return ref is not None and first_with_key.get(ref.key, index) != index


def _final(
    answers: list[Answer | None],
    requests: Sequence[WalletRequest],
    index: int,
    first_with_key: dict[str, int],
) -> Answer:
    result = answers[index]
    if result is not None:
        return result
    ref = requests[index].idempotency
    assert ref is not None
    first = answers[first_with_key[ref.key]]
    assert first is not None
    # The same key twice in one batch: the second is a replay of the first.
    return Answer(first.status, first.body, first.content_type, True)


def _row_values(row: Authorization) -> dict[str, object]:
    return {
        "id": row.id,
        "organization_id": row.organization_id,
        "customer_id": row.customer_id,
        "asset_code": row.asset_code,
        "amount_minor": row.amount_minor,
        "status": row.status,
        "decline_code": row.decline_code,
        "captured_minor": row.captured_minor,
        "released_minor": row.released_minor,
        "expires_at": row.expires_at,
        "created_at": row.created_at,
        "resolved_at": row.resolved_at,
        "details": row.details,
    }
