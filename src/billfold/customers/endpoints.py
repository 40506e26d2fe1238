from __future__ import annotations

from fastapi import APIRouter, Response

from billfold.api.boundary import BoundaryRoute
from billfold.api.deps import CurrentClock, CurrentPrincipal, Pagination, Session
from billfold.api.problems import error_responses
from billfold.api.schemas import Page, page_of
from billfold.customers import service
from billfold.customers.models import Customer
from billfold.customers.schemas import CustomerCreate, CustomerOut

router = APIRouter(prefix="/v1/customers", tags=["customers"], route_class=BoundaryRoute)


def customer_out(customer: Customer) -> CustomerOut:
    return CustomerOut(
        id=customer.id,
        external_id=customer.external_id,
        name=customer.name,
        email=customer.email,
        metadata=customer.metadata_,
        created_at=customer.created_at,
    )


@router.post(
    "",
    status_code=201,
    responses=error_responses()
    | {200: {"description": "A customer with this external_id already existed"}},
)
async def create_customer(
    body: CustomerCreate,
    response: Response,
    session: Session,
    principal: CurrentPrincipal,
    clock: CurrentClock,
) -> CustomerOut:
    """Create a customer (201), or return the one with this `external_id` (200).

    An existing customer is returned as it is: a different name, email or
    metadata in the request does not change it.
    """
    result = await service.create_or_get(
        session,
        clock,
        principal,
        external_id=body.external_id,
        name=body.name,
        email=body.email,
        metadata=body.metadata,
    )
    if not result.created:
        response.status_code = 200
    return customer_out(result.customer)


@router.get("", responses=error_responses())
async def list_customers(
    session: Session, principal: CurrentPrincipal, page: Pagination
) -> Page[CustomerOut]:
    """Customers, newest first."""
    rows = await service.list_customers(session, principal, page.limit + 1, page.starting_after)
    return page_of([customer_out(row) for row in rows], page.limit)


@router.get("/{customer_id}", responses=error_responses(404))
async def get_customer(
    customer_id: str, session: Session, principal: CurrentPrincipal
) -> CustomerOut:
    """`customer_id` is the `cus_…` id or `ext:<external_id>`."""
    return customer_out(
        await service.resolve_customer(session, principal.organization_id, customer_id, field="id")
    )
