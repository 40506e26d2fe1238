from __future__ import annotations

from fastapi import APIRouter

from billfold.api.boundary import BoundaryRoute, SecretIssuingRoute
from billfold.api.deps import CurrentClock, CurrentPrincipal, Pagination, Session
from billfold.api.problems import error_responses
from billfold.api.schemas import Page, page_of
from billfold.organizations import service
from billfold.organizations.schemas import ApiKeyCreate, ApiKeyCreated, ApiKeyOut

router = APIRouter(prefix="/v1/api-keys", tags=["api_keys"], route_class=BoundaryRoute)
issuing = APIRouter(prefix="/v1/api-keys", tags=["api_keys"], route_class=SecretIssuingRoute)


@issuing.post("", status_code=201, responses=error_responses(409))
async def create_api_key(
    body: ApiKeyCreate, session: Session, principal: CurrentPrincipal, clock: CurrentClock
) -> ApiKeyCreated:
    """Issue another key for the calling organization. The key is shown once.

    Not replayable by Idempotency-Key: the answer holds the secret, which
    Billfold keeps only as a hash. A retry issues another key; revoke spares.
    """
    issued = await service.issue_key(session, clock, principal.organization_id, body.name)
    return ApiKeyCreated(**ApiKeyOut.model_validate(issued.api_key).model_dump(), key=issued.secret)


@router.get("", responses=error_responses())
async def list_api_keys(
    session: Session, principal: CurrentPrincipal, page: Pagination
) -> Page[ApiKeyOut]:
    rows = await service.list_keys(session, principal, page.limit + 1, page.starting_after)
    return page_of([ApiKeyOut.model_validate(row) for row in rows], page.limit)


@router.delete("/{api_key_id}", responses=error_responses(404))
async def revoke_api_key(
    api_key_id: str, session: Session, principal: CurrentPrincipal, clock: CurrentClock
) -> ApiKeyOut:
    """Revoke a key at once. Requests made with it afterwards get 401."""
    return ApiKeyOut.model_validate(await service.revoke_key(session, clock, principal, api_key_id))
