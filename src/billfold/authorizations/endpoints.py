"""Authorization endpoints. The decisions happen in the wallet writer; these
handlers validate, resolve names to ids, end their own read-only transaction
(so no connection idles while the batch runs), and return the writer's answer."""

from __future__ import annotations

from fastapi import APIRouter, Request
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.responses import Response

from billfold.api.boundary import BoundaryRoute, WriterRoute, context_of
from billfold.api.deps import CurrentClock, CurrentPrincipal, Session
from billfold.api.problems import error_responses, request_id_of
from billfold.assets.amounts import AssetInfo, parse_amount
from billfold.assets.service import get_asset
from billfold.authorizations import service
from billfold.authorizations.repository import AuthorizationRepository
from billfold.authorizations.schemas import AuthorizationCreate, AuthorizationOut, CaptureBody
from billfold.authorizations.service import (
    Answer,
    AuthorizeRequest,
    IdempotencyRef,
    ResolveRequest,
)
from billfold.clock import Clock
from billfold.customers.service import resolve_customer, validate_metadata
from billfold.errors import BillfoldError, InvalidRequest, NotFound
from billfold.idempotency import service as idempotency
from billfold.metering import values
from billfold.organizations.service import Principal
from billfold.realtime.service import PlannedEstimate, plan_estimate

writes = APIRouter(prefix="/v1/authorizations", tags=["authorizations"], route_class=WriterRoute)
reads = APIRouter(prefix="/v1/authorizations", tags=["authorizations"], route_class=BoundaryRoute)


def _respond(result: Answer) -> Response:
    headers = {"Idempotent-Replayed": "true"} if result.replayed else None
    return Response(
        content=result.body,
        status_code=result.status,
        media_type=result.content_type,
        headers=headers,
    )


async def _end_reads(session: AsyncSession) -> None:
    """Reads are done: hand the connection back before waiting on the batch.

    Commit, not rollback: the transaction wrote nothing either way, but a
    rollback makes psycopg drop the connection's prepared statements (and
    DEALLOCATE ALL on the server), which on the hot path meant re-preparing
    the writer's statements over and over. Loaded objects stay readable
    (sessions don't expire on commit) and close() detaches them.
    """
    await session.commit()
    await session.close()


async def _idempotency_ref(request: Request) -> IdempotencyRef | None:
    key = request.headers.get(idempotency.HEADER)
    if key is None:
        return None
    idempotency.validate_key(key)
    path = request.url.path
    return IdempotencyRef(
        key=key,
        fingerprint=idempotency.fingerprint("POST", path, await request.body()),
        method="POST",
        path=path,
    )


async def _replay(
    session: AsyncSession, principal: Principal, ref: IdempotencyRef | None
) -> Response | None:
    if ref is None:
        return None
    stored = await idempotency.peek(
        session, principal.organization_id, key=ref.key, request_fingerprint=ref.fingerprint
    )
    if stored is None:
        return None
    return _respond(
        Answer(stored.status, stored.body, stored.content_type or "application/json", True)
    )


async def _decline_without_wallet(
    session: AsyncSession,
    clock: Clock,
    principal: Principal,
    ref: IdempotencyRef | None,
    body: AuthorizationCreate,
    decline_code: str,
) -> Response:
    """A decline that needs no wallet, found before the batch (an unknown
    asset, or an estimate's unknown customer): answered here, and stored for
    its key so a retry gets the same decline."""
    result = service.declined_without_wallet(
        body.asset, body.amount or "0", body.metadata or {}, decline_code
    )
    if ref is not None:
        stored = await idempotency.claim(
            session,
            clock,
            principal.organization_id,
            key=ref.key,
            method=ref.method,
            path=ref.path,
            request_fingerprint=ref.fingerprint,
        )
        if stored is not None:
            return _respond(
                Answer(stored.status, stored.body, stored.content_type or "application/json", True)
            )
        await idempotency.complete(
            session,
            clock,
            principal.organization_id,
            ref.key,
            idempotency.StoredResponse(result.status, result.body, result.content_type),
        )
    return _respond(result)


@writes.post("", response_model=AuthorizationOut, responses=error_responses(409))
async def create_authorization(
    body: AuthorizationCreate,
    request: Request,
    session: Session,
    principal: CurrentPrincipal,
    clock: CurrentClock,
) -> Response:
    """Hold an amount of the customer's wallet before the work runs.

    Give `asset` and `amount`, or an `estimate` (`{event_type, data}`): the
    hold is then that event's fee under the customer's current real-time
    prices, rated against the period's running totals as they stand once the
    hold has the wallet's lock (422
    `estimate_not_priced` when no real-time price counts such an event).

    Answers 200 with `status: "authorized"` or `status: "declined"` and a
    `decline_code` (`insufficient_funds`, `customer_not_found`,
    `asset_not_found`). A declined key stays declined: retry with a new key.
    """
    ref = await _idempotency_ref(request)
    # No look for a stored answer first: the writer's claim replays one (or
    # refuses a reused key) in its batch, which saves a query per new request.
    # Nor for the customer: the writer resolves a whole batch's at once (and
    # declines `customer_not_found` there); only an estimate needs it here.
    customer_ref = body.customer_id
    if body.estimate is not None:
        try:
            customer = await resolve_customer(session, principal.organization_id, customer_ref)
        except NotFound:
            return await _decline_without_wallet(
                session, clock, principal, ref, body, "customer_not_found"
            )
        customer_ref = customer.id
    try:
        asset = (
            None
            if body.asset is None
            else await get_asset(session, principal.organization_id, body.asset)
        )
    except NotFound:
        return await _decline_without_wallet(
            session, clock, principal, ref, body, "asset_not_found"
        )
    planned: PlannedEstimate | None = None
    try:
        if body.estimate is None:
            asset, amount_minor = _plain_amount(asset, body)
        else:
            estimated = await _estimated_amount(
                session, clock, principal, customer_ref, asset, body, await request.body()
            )
            if isinstance(estimated, str):
                return await _decline_without_wallet(
                    session, clock, principal, ref, body, estimated
                )
            # Rated by the writer, against the totals it reads with the lock.
            asset, planned = estimated
            amount_minor = 0
        metadata = validate_metadata(body.metadata, field="metadata")
    except BillfoldError:
        # A key that holds an earlier, different request answers 409
        # `idempotency_key_reused` before this request's own mistake.
        replay = await _replay(session, principal, ref)
        if replay is not None:
            return replay
        raise
    await _end_reads(session)
    result = await context_of(request).wallet_writer.submit(
        AuthorizeRequest(
            organization_id=principal.organization_id,
            customer_ref=customer_ref,
            asset=asset,
            amount_minor=amount_minor,
            ttl_s=body.ttl_s,
            metadata=metadata,
            idempotency=ref,
            request_id=request_id_of(request),
            estimate=planned,
        )
    )
    return _respond(result)


def _plain_amount(asset: AssetInfo | None, body: AuthorizationCreate) -> tuple[AssetInfo, int]:
    if body.amount is None:
        raise InvalidRequest(
            "Give the `amount` to hold, or an `estimate`.", code="invalid_amount", field="amount"
        )
    if asset is None:
        raise InvalidRequest("Give the `asset` of the amount.", code="invalid_asset", field="asset")
    return asset, parse_amount(asset, body.amount, field="amount")


async def _estimated_amount(
    session: AsyncSession,
    clock: Clock,
    principal: Principal,
    customer_id: str,
    asset: AssetInfo | None,
    body: AuthorizationCreate,
    raw: bytes,
) -> tuple[AssetInfo, PlannedEstimate] | str:
    """The estimate's asset and the estimate (rated by the writer), or a
    decline code (an LLM call the organization's policy blocks: an unknown
    model is never free)."""
    if body.amount is not None:
        raise InvalidRequest(
            "Give `amount` or `estimate`, not both.", code="invalid_estimate", field="amount"
        )
    assert body.estimate is not None
    # Pydantic read the numbers as floats; rating takes the exact ones.
    try:
        data = values.sanitize(values.loads(raw)["estimate"].get("data") or {}, "estimate.data")
    except values.DataError as error:
        raise InvalidRequest(
            f"{error.path} {error.message}.", code="invalid_data", field=error.path
        ) from None
    estimate = await plan_estimate(
        session, principal.organization_id, customer_id, body.estimate.event_type, data, clock.now()
    )
    if estimate.unpriced is not None and estimate.unpriced.policy == "block":
        return estimate.unpriced.reason
    if not estimate.priced:
        raise InvalidRequest(
            "No real-time price of this customer counts such an event, so there is nothing "
            "to estimate. Hold a plain `amount` instead.",
            code="estimate_not_priced",
            field="estimate.event_type",
            status=422,
        )
    if asset is None:
        if len(estimate.base) > 1:
            raise InvalidRequest(
                "This event is priced in several assets "
                f"({', '.join(sorted(estimate.base))}); give the `asset` to hold.",
                code="estimate_asset_ambiguous",
                field="asset",
                status=422,
            )
        return next(iter(estimate.base.values()))[0], estimate
    if asset.code not in estimate.base:
        raise InvalidRequest(
            f"No real-time price of this customer charges such an event in {asset.code}.",
            code="estimate_not_priced",
            field="asset",
            status=422,
        )
    return estimate.base[asset.code][0], estimate


async def _resolve(
    request: Request,
    session: AsyncSession,
    principal: Principal,
    authorization_id: str,
    action: str,
    amount: str | None,
) -> Response:
    ref = await _idempotency_ref(request) if action != "refresh" else None
    replay = await _replay(session, principal, ref)
    if replay is not None:
        return replay
    authorization = await AuthorizationRepository(session, principal.organization_id).get(
        authorization_id
    )
    if authorization is None:
        raise NotFound.of("authorization", field="id")
    asset = await get_asset(session, principal.organization_id, authorization.asset_code)
    amount_minor = (
        None if amount is None else parse_amount(asset, amount, field="amount", allow_zero=True)
    )
    await _end_reads(session)
    result = await context_of(request).wallet_writer.submit(
        ResolveRequest(
            organization_id=principal.organization_id,
            customer_id=authorization.customer_id,
            asset=asset,
            authorization_id=authorization.id,
            action=action,
            amount_minor=amount_minor,
            idempotency=ref,
            request_id=request_id_of(request),
        )
    )
    return _respond(result)


@writes.post(
    "/{authorization_id}/capture",
    response_model=AuthorizationOut,
    responses=error_responses(404, 409),
)
async def capture_authorization(
    authorization_id: str,
    request: Request,
    session: Session,
    principal: CurrentPrincipal,
    body: CaptureBody | None = None,
) -> Response:
    """Take `amount` (default: all) of the hold; the rest returns to the grants it
    came from. Errors: `exceeds_authorized_amount` (422), `already_captured`,
    `already_released`, `expired` (409)."""
    return await _resolve(
        request, session, principal, authorization_id, "capture", body.amount if body else None
    )


@writes.post(
    "/{authorization_id}/release",
    response_model=AuthorizationOut,
    responses=error_responses(404, 409),
)
async def release_authorization(
    authorization_id: str, request: Request, session: Session, principal: CurrentPrincipal
) -> Response:
    """Return everything held to the wallet."""
    return await _resolve(request, session, principal, authorization_id, "release", None)


@reads.get("/{authorization_id}", response_model=AuthorizationOut, responses=error_responses(404))
async def get_authorization(
    authorization_id: str,
    request: Request,
    session: Session,
    principal: CurrentPrincipal,
    clock: CurrentClock,
) -> Response:
    """The hold as it stands; one past its expiry is expired on the spot."""
    authorization = await AuthorizationRepository(session, principal.organization_id).get(
        authorization_id
    )
    if authorization is None:
        raise NotFound.of("authorization", field="id")
    if authorization.status == "authorized" and authorization.expires_at <= clock.now():
        return await _resolve(request, session, principal, authorization_id, "refresh", None)
    asset = await get_asset(session, principal.organization_id, authorization.asset_code)
    return _respond(service.answer(200, service.render(authorization, asset)))
