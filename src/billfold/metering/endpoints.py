from __future__ import annotations

import json
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.exceptions import RequestValidationError
from starlette.responses import Response

from billfold import limits
from billfold.api.boundary import BoundaryRoute, context_of
from billfold.api.deps import CurrentClock, CurrentPrincipal, Pagination, Session
from billfold.api.problems import error_responses
from billfold.api.schemas import Page, page_of
from billfold.errors import InvalidRequest
from billfold.metering import service, values
from billfold.metering.models import Meter
from billfold.metering.schemas import (
    EventBatchIn,
    EventBatchOut,
    EventIn,
    MeterCreate,
    MeterOut,
    UsageOut,
    UsageRowOut,
)

router = APIRouter(route_class=BoundaryRoute)


async def _backfill_window_s(request: Request) -> int:
    return context_of(request).settings.event_backfill_window_s


BackfillWindow = Annotated[int, Depends(_backfill_window_s)]


def _envelope_error(field: str, message: str, kind: str) -> RequestValidationError:
    # The same 422 `validation_error` FastAPI gives for a body of the wrong shape.
    return RequestValidationError([{"loc": ("body", field), "msg": message, "type": kind}])


def _events_of(body: bytes) -> list[Any]:
    """The raw events of `{"events": [...]}`, numbers exact; each event is
    validated later on its own."""
    try:
        document = values.loads(body) if body.strip() else {}
    except (ValueError, RecursionError):
        raise InvalidRequest("The request body is not valid JSON.", code="malformed_json") from None
    if not isinstance(document, dict):
        raise _envelope_error("events", 'The body is an object: {"events": [...]}.', "model_type")
    for key in document:
        if key != "events":
            raise _envelope_error(key, "Extra inputs are not permitted", "extra_forbidden")
    events = document.get("events")
    if events is None:
        raise _envelope_error("events", "Field required", "missing")
    if not isinstance(events, list):
        raise _envelope_error("events", "Input should be a valid list", "list_type")
    return events


_EVENT_BATCH_BODY = {
    "required": True,
    "content": {
        "application/json": {
            "schema": {
                "type": "object",
                "title": EventBatchIn.__name__,
                "required": ["events"],
                "additionalProperties": False,
                "properties": {
                    "events": {
                        "type": "array",
                        "maxItems": limits.events_per_batch_max,
                        "items": EventIn.model_json_schema(),
                    }
                },
            }
        }
    },
}


@router.post(
    "/v1/events",
    tags=["events"],
    response_model=EventBatchOut,
    responses=error_responses(),
    openapi_extra={"requestBody": _EVENT_BATCH_BODY},
)
async def ingest_events(
    request: Request,
    session: Session,
    principal: CurrentPrincipal,
    clock: CurrentClock,
    backfill_window_s: BackfillWindow,
) -> Response:
    """Ingest up to 1,000 usage events; 200 with one result per event, in order.

    Each result is `accepted`, `duplicate` (this id was stored before with the
    same payload: nothing changes) or `rejected` with a `code`
    (`invalid_data`, `customer_not_found`, `timestamp_out_of_range`,
    `event_id_conflict`) and the `field` at fault. One bad event never sinks
    the batch. An id repeated within a batch: an identical copy gets the first
    one's outcome (`accepted` reads `duplicate`), a different one
    `event_id_conflict`. More than 1,000 events: 422 `batch_too_large`.
    """
    outcome = await service.ingest(
        session,
        clock,
        principal,
        _events_of(await request.body()),
        backfill_window_s=backfill_window_s,
    )
    counts = {"accepted": 0, "duplicate": 0, "rejected": 0}
    results = []
    for result in outcome.results:
        counts[result.status] += 1
        item: dict[str, Any] = {"id": result.id, "status": result.status}
        if result.code is not None:
            item["code"] = result.code
            item["field"] = result.field
            item["detail"] = result.detail
        if result.extra:
            item.update(result.extra)
        results.append(item)
    body = json.dumps({"results": results, "summary": counts}, separators=(",", ":"))
    return Response(content=body, media_type="application/json")


def _meter_out(meter: Meter) -> MeterOut:
    return MeterOut.model_validate(meter)


@router.post("/v1/meters", tags=["meters"], status_code=201, responses=error_responses())
async def create_meter(
    body: MeterCreate, session: Session, principal: CurrentPrincipal, clock: CurrentClock
) -> MeterOut:
    """Define an aggregation over one event type: `count` events, or `sum`,
    `max`, `min`, `unique_count` or `latest` of the number (or, for
    unique_count, the value) at a dotted `field` of `data`, counting only
    events whose `filters` keys hold one of the allowed values. A code is
    taken once: 409 `meter_code_taken`."""
    meter = await service.create_meter(
        session,
        clock,
        principal,
        code=body.code,
        name=body.name,
        event_type=body.event_type,
        aggregation=body.aggregation,
        field=body.field,
        filters=body.filters,
        group_by=body.group_by,
    )
    return _meter_out(meter)


@router.get("/v1/meters", tags=["meters"], responses=error_responses())
async def list_meters(
    session: Session, principal: CurrentPrincipal, page: Pagination
) -> Page[MeterOut]:
    """Meters, newest first."""
    rows = await service.list_meters(session, principal, page.limit + 1, page.starting_after)
    return page_of([_meter_out(row) for row in rows], page.limit)


@router.get("/v1/meters/{code}", tags=["meters"], responses=error_responses(404))
async def get_meter(code: str, session: Session, principal: CurrentPrincipal) -> MeterOut:
    return _meter_out(await service.get_meter(session, principal, code))


@router.get("/v1/meters/{code}/usage", tags=["meters"], responses=error_responses(404))
async def get_usage(
    code: str,
    session: Session,
    principal: CurrentPrincipal,
    clock: CurrentClock,
    backfill_window_s: BackfillWindow,
    customer_id: Annotated[
        str | None,
        Query(
            max_length=300, description="`cus_…` or `ext:<external_id>`; all customers if absent"
        ),
    ] = None,
    from_: Annotated[
        str | None,
        Query(
            alias="from",
            max_length=limits.timestamp_string_length_max,
            description="Inclusive start (RFC 3339); default: the backfill window before `to`",
        ),
    ] = None,
    to: Annotated[
        str | None,
        Query(
            max_length=limits.timestamp_string_length_max,
            description="Exclusive end (RFC 3339); default: now plus the 5 minutes "
            "events may run ahead",
        ),
    ] = None,
    granularity: Annotated[
        str | None,
        Query(max_length=10, description="`hour`, `day` or `month` (UTC); one bucket if absent"),
    ] = None,
    group_by: Annotated[
        list[str] | None,
        Query(
            max_length=limits.meter_group_by_max,
            description="Keys among the meter's group_by; repeat or comma-separate",
        ),
    ] = None,
) -> UsageOut:
    """The meter's value over [from, to) per UTC bucket and group, as decimal strings."""
    result = await service.usage(
        session,
        clock,
        principal,
        code,
        customer_ref=customer_id,
        start_text=from_,
        end_text=to,
        granularity=granularity,
        group_by=group_by or [],
        backfill_window_s=backfill_window_s,
    )
    return UsageOut.model_validate(
        {
            "meter": result.meter.code,
            "aggregation": result.meter.aggregation,
            "customer_id": result.customer_id,
            "from": result.start,
            "to": result.end,
            "granularity": result.granularity,
            "group_by": result.group_by,
            "data": [
                UsageRowOut(start=row.start, end=row.end, group=row.group, value=row.value)
                for row in result.rows
            ],
        }
    )
