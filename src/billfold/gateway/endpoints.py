from __future__ import annotations

from fastapi import APIRouter

from billfold.api.boundary import BoundaryRoute, SecretIssuingRoute
from billfold.api.deps import CurrentClock, CurrentPrincipal, Pagination, Session
from billfold.api.problems import error_responses
from billfold.api.schemas import Page, page_of
from billfold.gateway import service
from billfold.gateway.schemas import GatewayKeyCreate, GatewayKeyCreated, GatewayKeyOut

_PREFIX = "/v1/customers/{customer_id}/gateway-keys"
router = APIRouter(prefix=_PREFIX, tags=["gateway_keys"], route_class=BoundaryRoute)
issuing = APIRouter(prefix=_PREFIX, tags=["gateway_keys"], route_class=SecretIssuingRoute)


@issuing.post("", status_code=201, responses=error_responses(404, 409))
async def create_gateway_key(
    customer_id: str,
    session: Session,
    principal: CurrentPrincipal,
    clock: CurrentClock,
    body: GatewayKeyCreate | None = None,
) -> GatewayKeyCreated:
    """Issue a gateway key for this customer: calls made with it through
    `billfold gateway` are held against and charged to the customer's wallet.
    The key is shown once (a replay by Idempotency-Key shows `key: null`)."""
    issued = await service.issue(
        session, clock, principal, customer_id, (body or GatewayKeyCreate()).name
    )
    return GatewayKeyCreated(
        **GatewayKeyOut.model_validate(issued.gateway_key).model_dump(), key=issued.secret
    )


@router.get("", responses=error_responses(404))
async def list_gateway_keys(
    customer_id: str, session: Session, principal: CurrentPrincipal, page: Pagination
) -> Page[GatewayKeyOut]:
    rows = await service.list_keys(
        session, principal, customer_id, page.limit + 1, page.starting_after
    )
    return page_of([GatewayKeyOut.model_validate(row) for row in rows], page.limit)


@router.delete("/{gateway_key_id}", responses=error_responses(404))
async def revoke_gateway_key(
    customer_id: str,
    gateway_key_id: str,
    session: Session,
    principal: CurrentPrincipal,
    clock: CurrentClock,
) -> GatewayKeyOut:
    """Revoke: the gateway answers 401 to the key from now on, or, where a
    gateway process has just used it, once that process's `--lookup-ttl`
    (default 1 s) has passed."""
    return GatewayKeyOut.model_validate(
        await service.revoke(session, clock, principal, customer_id, gateway_key_id)
    )
