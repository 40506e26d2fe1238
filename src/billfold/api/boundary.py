"""The request boundary: where authentication, idempotency and the one commit happen.

Every `/v1` route runs through `BoundaryRoute`. Services below it never
commit; this is the only place a request's transaction ends.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import Request
from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from billfold.api.context import AppContext
from billfold.api.problems import billfold_error_response, http_error_response
from billfold.errors import BillfoldError
from billfold.idempotency import service as idempotency
from billfold.organizations.service import Principal, authenticate

Handler = Callable[[Request], Coroutine[Any, Any, Response]]


def context_of(request: Request) -> AppContext:
    ctx = request.app.state.ctx
    assert isinstance(ctx, AppContext)
    return ctx


def _stored(response: Response) -> idempotency.StoredResponse:
    return idempotency.StoredResponse(
        status=response.status_code,
        body=bytes(response.body),
        content_type=response.headers.get("content-type"),
    )


class BoundaryRoute(APIRoute):
    #: Whether this boundary claims and stores the Idempotency-Key. Routes whose
    #: work commits elsewhere (the wallet writer) store it in that commit instead.
    claims_idempotency_key = True

    def get_route_handler(self) -> Handler:
        inner = super().get_route_handler()
        claims = self.claims_idempotency_key

        async def handle(request: Request) -> Response:
            ctx = context_of(request)
            key = (
                request.headers.get(idempotency.HEADER)
                if claims and request.method == "POST"
                else None
            )
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
            return await _run(ctx, request, inner, principal, key)

        return handle


class WriterRoute(BoundaryRoute):
    claims_idempotency_key = False


async def _run(
    ctx: AppContext, request: Request, inner: Handler, principal: Principal, key: str | None
) -> Response:
    session = ctx.sessions()
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
                    session, ctx.clock, principal.organization_id, key, _stored(response)
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
