from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Query

from billfold.api.boundary import BoundaryRoute
from billfold.api.deps import CurrentClock, CurrentPrincipal, Pagination, Session
from billfold.api.problems import error_responses
from billfold.api.schemas import Page, page_of
from billfold.webhooks import service
from billfold.webhooks.models import WebhookEndpoint
from billfold.webhooks.schemas import (
    WebhookAttemptOut,
    WebhookDeliveryOut,
    WebhookEndpointCreate,
    WebhookEndpointOut,
    WebhookEndpointUpdate,
    WebhookEndpointWithSecret,
)

router = APIRouter(tags=["webhooks"], route_class=BoundaryRoute)


def _with_secret(endpoint: WebhookEndpoint) -> WebhookEndpointWithSecret:
    return WebhookEndpointWithSecret(
        **WebhookEndpointOut.model_validate(endpoint).model_dump(), secret=endpoint.secret
    )


def _delivery_out(view: service.DeliveryView) -> WebhookDeliveryOut:
    d = view.delivery
    return WebhookDeliveryOut(
        id=d.id,
        event_id=d.event_id,
        event_type=view.event.type,
        endpoint_id=d.endpoint_id,
        status=d.status,
        attempt_count=d.attempt_count,
        next_attempt_at=d.next_attempt_at,
        last_status_code=d.last_status_code,
        created_at=d.created_at,
        delivered_at=d.delivered_at,
        payload=view.event.payload,
        attempts=[WebhookAttemptOut.model_validate(a) for a in view.attempts],
    )


@router.post("/v1/webhook-endpoints", status_code=201, responses=error_responses())
async def create_webhook_endpoint(
    body: WebhookEndpointCreate, session: Session, principal: CurrentPrincipal, clock: CurrentClock
) -> WebhookEndpointWithSecret:
    """Register a URL to receive events. The signing secret is returned only here."""
    endpoint = await service.create_endpoint(
        session,
        clock,
        principal,
        url=body.url,
        subscribed=body.topics,
        description=body.description,
    )
    return _with_secret(endpoint)


@router.get("/v1/webhook-endpoints", responses=error_responses())
async def list_webhook_endpoints(
    session: Session, principal: CurrentPrincipal, page: Pagination
) -> Page[WebhookEndpointOut]:
    rows = await service.list_endpoints(session, principal, page.limit + 1, page.starting_after)
    return page_of([WebhookEndpointOut.model_validate(r) for r in rows], page.limit)


@router.get("/v1/webhook-endpoints/{endpoint_id}", responses=error_responses(404))
async def get_webhook_endpoint(
    endpoint_id: str, session: Session, principal: CurrentPrincipal
) -> WebhookEndpointOut:
    return WebhookEndpointOut.model_validate(
        await service.get_endpoint(session, principal, endpoint_id)
    )


@router.patch("/v1/webhook-endpoints/{endpoint_id}", responses=error_responses(404))
async def update_webhook_endpoint(
    endpoint_id: str, body: WebhookEndpointUpdate, session: Session, principal: CurrentPrincipal
) -> WebhookEndpointOut:
    """Change the URL, topics or description; `status: enabled` revives a disabled endpoint."""
    endpoint = await service.update_endpoint(
        session,
        principal,
        endpoint_id,
        url=body.url,
        subscribed=body.topics,
        description=body.description,
        enabled=None if body.status is None else body.status == "enabled",
    )
    return WebhookEndpointOut.model_validate(endpoint)


@router.delete("/v1/webhook-endpoints/{endpoint_id}", responses=error_responses(404))
async def delete_webhook_endpoint(
    endpoint_id: str, session: Session, principal: CurrentPrincipal, clock: CurrentClock
) -> WebhookEndpointOut:
    """Stop sending to this endpoint; deliveries still owed to it are canceled."""
    endpoint = await service.delete_endpoint(session, clock, principal, endpoint_id)
    return WebhookEndpointOut.model_validate(endpoint)


@router.post("/v1/webhook-endpoints/{endpoint_id}/rotate-secret", responses=error_responses(404))
async def rotate_webhook_secret(
    endpoint_id: str, session: Session, principal: CurrentPrincipal, clock: CurrentClock
) -> WebhookEndpointWithSecret:
    """A new signing secret, returned once. The old one keeps signing for 24 hours."""
    return _with_secret(await service.rotate_secret(session, clock, principal, endpoint_id))


@router.post(
    "/v1/webhook-endpoints/{endpoint_id}/test", status_code=202, responses=error_responses(404)
)
async def send_test_webhook(
    endpoint_id: str, session: Session, principal: CurrentPrincipal, clock: CurrentClock
) -> WebhookDeliveryOut:
    """Queue a signed `webhook.test` event for this endpoint now."""
    return _delivery_out(await service.send_test(session, clock, principal, endpoint_id))


@router.get("/v1/webhook-endpoints/{endpoint_id}/deliveries", responses=error_responses(404))
async def list_webhook_deliveries(
    endpoint_id: str,
    session: Session,
    principal: CurrentPrincipal,
    page: Pagination,
    status: Annotated[Literal["pending", "delivered", "failed", "canceled"] | None, Query()] = None,
) -> Page[WebhookDeliveryOut]:
    """The delivery log: each event owed to the endpoint, with every attempt made."""
    views = await service.list_deliveries(
        session,
        principal,
        endpoint_id,
        limit=page.limit + 1,
        starting_after=page.starting_after,
        status=status,
    )
    return page_of([_delivery_out(v) for v in views], page.limit)


@router.post("/v1/webhook-deliveries/{delivery_id}/retry", responses=error_responses(404))
async def retry_webhook_delivery(
    delivery_id: str, session: Session, principal: CurrentPrincipal, clock: CurrentClock
) -> dict[str, str]:
    """Send a delivery again now, for instance after fixing a receiver."""
    delivery = await service.retry_delivery(session, clock, principal, delivery_id)
    return {"id": delivery.id, "status": delivery.status}
