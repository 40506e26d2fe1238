"""The request boundary: where authentication, idempotency and the one commit happen.

Every `/v1` route runs through `BoundaryRoute`. Services below it never
commit; this is the only place a request's transaction ends.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import Request
from fastapi.routing import APIRoute
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from billfold.api.context import AppContext
from billfold.api.problems import billfold_error_response, error_responses, http_error_response
from billfold.errors import BillfoldError
from billfold.idempotency import service as idempotency
from billfold.organizations.service import Principal, authenticate

Handler = Callable[[Request], Coroutine[Any, Any, Response]]


def context_of(request: Request) -> AppContext:
    ctx = request.app.state.ctx
    assert isinstance(ctx, AppContext)
    return ctx


def _stored(response: Response, secret_fields: tuple[str, ...] = ()) -> idempotency.StoredResponse:
    body = bytes(response.body)
    if secret_fields and response.status_code < 300:
        # A secret we keep only as a hash is never kept in plain text here
        # either: a replay says it was issued, and shows it no more.
        document = json.loads(body)
        for name in secret_fields:
            if name in document:
                document[name] = None
        body = json.dumps(document, separators=(",", ":")).encode()
    return idempotency.StoredResponse(
        status=response.status_code, body=body, content_type=response.headers.get("content-type")
    )


class BoundaryRoute(APIRoute):
    #: Whether this boundary claims and stores the Idempotency-Key. Routes whose
    #: work commits elsewhere (the wallet writer) store it in that commit instead.
    claims_idempotency_key = True
    #: Response fields blanked in the copy kept for replay.
    secret_fields: tuple[str, ...] = ()

    def __init__(
        self,
        path: str,
        endpoint: Callable[..., Any],
        *,
        methods: set[str] | list[str] | None = None,
        responses: dict[int | str, dict[str, Any]] | None = None,
        **kwargs: Any,
    ) -> None:
        if methods is not None and "POST" in {method.upper() for method in methods}:
            # Any POST may carry an Idempotency-Key, so any POST may answer 409.
            responses = error_responses(409) | (responses or {})
        super().__init__(path, endpoint, methods=methods, responses=responses, **kwargs)

    def get_route_handler(self) -> Handler:
        inner = super().get_route_handler()
        claims = self.claims_idempotency_key
        secret_fields = self.secret_fields

        async def handle(request: Request) -> Response:
            ctx = context_of(request)
            key = (
                request.headers.get(idempotency.HEADER)
                if claims and request.method == "POST"
                else None
            )
            if key is None:
                # Nothing to claim first: authenticate in the endpoint's own
                # transaction, one connection checkout and one commit in all.
                own = ctx.sessions()
                try:
                    principal = await authenticate(own, request.headers.get("authorization"))
                except BaseException:
                    await own.close()
                    raise
                request.state.principal = principal
                return await _run(ctx, request, inner, principal, None, own)
            async with ctx.sessions() as session:
                principal = await authenticate(session, request.headers.get("authorization"))
                replay = None
                if key is not None:
                    idempotency.validate_key(key)
                    replay = await idempotency.claim(
                        session,
                        ctx.clock,
                        principal.organization_id,
                        key=key,
                        method=request.method,
                        path=request.url.path,
                        request_fingerprint=idempotency.fingerprint(
                            request.method, request.url.path, await request.body()
                        ),
                    )
                await session.commit()
            request.state.principal = principal
            if replay is not None:
                return Response(
                    content=replay.body,
                    status_code=replay.status,
                    headers={"Idempotent-Replayed": "true"}
                    | ({"content-type": replay.content_type} if replay.content_type else {}),
                )
            return await _run(ctx, request, inner, principal, key, secret_fields=secret_fields)

        return handle


class WriterRoute(BoundaryRoute):
    claims_idempotency_key = False


class SecretIssuingRoute(BoundaryRoute):
    """A route whose answer carries a secret Billfold keeps only as a hash (API keys).

    Its answer is stored for Idempotency-Key replay with the secret set to
    null, so no plaintext key sits in the idempotency table; a replay still
    names what was issued, and a retry never issues a second key.
    """

    secret_fields: tuple[str, ...] = ("key",)


async def _run(
    ctx: AppContext,
    request: Request,
    inner: Handler,
    principal: Principal,
    key: str | None,
    session: AsyncSession | None = None,
    *,
    secret_fields: tuple[str, ...] = (),
) -> Response:
    session = session or ctx.sessions()
    request.state.session = session
    try:
        try:
            response = await inner(request)
        except (BillfoldError, StarletteHTTPException) as exc:
            # The caller's mistake, found while the endpoint ran: nothing it did
            # stays, and the answer is stored for the key like any other.
            await session.rollback()
            if isinstance(exc, BillfoldError):
                response = billfold_error_response(request, exc)
            else:
                response = http_error_response(request, exc)
            if key is not None:
                await _store_alone(ctx, principal, key, response)
            return response
        except BaseException:
            # Validation failures and our own bugs: nothing is stored for the
            # key, so the client can correct or simply retry the request.
            await session.rollback()
            if key is not None:
                await _release(ctx, principal, key)
            raise
        try:
            if key is not None:
                await idempotency.complete(
                    session,
                    ctx.clock,
                    principal.organization_id,
                    key,
                    _stored(response, secret_fields),
                )
            await session.commit()
        except BaseException:
            await session.rollback()
            if key is not None:
                await _release(ctx, principal, key)
            raise
        return response
    finally:
        await session.close()


async def _store_alone(ctx: AppContext, principal: Principal, key: str, response: Response) -> None:
    async with ctx.sessions() as session:
        await idempotency.complete(
            session, ctx.clock, principal.organization_id, key, _stored(response)
        )
        await session.commit()


async def _release(ctx: AppContext, principal: Principal, key: str) -> None:
    async with ctx.sessions() as session:
        await idempotency.release(session, principal.organization_id, key)
        await session.commit()
