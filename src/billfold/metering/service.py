"""Metering: usage events in, aggregated usage out.

Ingest takes a batch of events and answers each one on its own: `accepted`
(stored now), `duplicate` (this id was stored before with the same payload;
nothing changes) or `rejected` with a code. A bad event never sinks the
batch. The order of checks for an event:

1. its shape (`invalid_data`, naming the field);
2. an id seen earlier in the same batch: identical, it gets that event's
   outcome (`accepted` reads `duplicate`); different, `event_id_conflict`;
3. its customer (`customer_not_found`);
4. an id stored before: same payload `duplicate`, another `event_id_conflict`;
5. its timestamp (`timestamp_out_of_range`: older than the backfill window or
   more than 5 minutes ahead of the server clock), and its numbers against the
   meters that read it (`invalid_data` for a non-number where a meter sums).

The payload compared is the event as sent, normalised: key order and number
spelling do not matter (1.50 == 1.5), the timestamp is compared as an instant,
and naming the customer by `customer_id` or by `customer_external_id` makes a
different payload. Dedup is forever: the primary key (organization, id) is the
guard, so two concurrent requests carrying the same event store it once and
the one that loses answers `duplicate`.

Meters aggregate one event type's `data` over a time range; `usage` answers
per UTC calendar bucket and group. See the repository for how each backend
computes them exactly.
"""

from __future__ import annotations

import functools
import hashlib
import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, NamedTuple

from pydantic import ValidationError
from sqlalchemy.ext.asyncio import AsyncSession

from billfold import limits
from billfold.assets.service import parse_instant
from billfold.authorizations.repository import AuthorizationRepository
from billfold.clock import Clock
from billfold.costs.shape import costs_problem
from billfold.customers.service import (
    EXTERNAL_REF_PREFIX,
    resolve_customer,
    resolve_customer_ids,
    validate_external_id,
)
from billfold.errors import Conflict, InvalidRequest, LimitExceeded, NotFound
from billfold.ids import new_id
from billfold.metering import rollups, values
from billfold.metering.models import Meter
from billfold.metering.realtime import AcceptedEvent, on_events_accepted
from billfold.metering.repository import (
    EventRepository,
    EventRow,
    MeterRepository,
    TooManyRows,
    UsageQuery,
    UsageRepository,
)
from billfold.metering.schemas import EventIn
from billfold.organizations.service import Principal

AGGREGATIONS = ("count", "sum", "max", "min", "unique_count", "latest")
NUMERIC_AGGREGATIONS = frozenset({"sum", "max", "min", "latest"})
GRANULARITIES = ("hour", "day", "month")
_METER_CODE_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


# --- ingest ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class EventResult:
    id: str | None
    status: str  # accepted | duplicate | rejected
    code: str | None = None
    field: str | None = None
    detail: str | None = None
    #: What billing adds to an accepted event's answer (`fees`).
    extra: dict[str, Any] | None = None


def _rejected(event_id: str | None, code: str, detail: str, field: str | None) -> EventResult:
    return EventResult(event_id, "rejected", code=code, field=field, detail=detail)


@dataclass(slots=True)
class _Candidate:
    """An event whose shape is valid, on its way through the later checks."""

    index: int
    id: str
    customer_ref: str
    customer_field: str
    type: str
    timestamp: datetime
    #: `timestamp.isoformat()`, which the fingerprint and the insert both spell.
    timestamp_text: str
    data: dict[str, Any]
    costs: list[Any] | None
    authorization_id: str | None
    data_json: str
    costs_json: str | None
    fingerprint: str
    customer_id: str | None = None
    # A reason to refuse it, if its id turns out to be new.
    refusal: EventResult | None = None
    copies: list[_Candidate] = field(default_factory=list)


def _has_control(text: str) -> bool:
    if text.isascii() and text.isprintable():
        return False  # the common case, without a lookup per character
    return any(unicodedata.category(char) in ("Cc", "Cf", "Zl", "Zp") for char in text)


def _printable(text: str) -> bool:
    if text.isascii() and text.isprintable():
        # The common case: no control character, nothing unstorable, and a
        # space is the only whitespace there is to strip.
        return bool(text) and text[0] != " " and text[-1] != " "
    return bool(text) and text == text.strip() and not _has_control(text) and values.storable(text)


def _validate_event_type(event_type: str, *, field: str) -> str:
    if not _printable(event_type) or len(event_type) > limits.event_type_length_max:
        raise InvalidRequest(
            f"An event type has 1 to {limits.event_type_length_max} printable characters "
            "and no spaces at either end.",
            code="invalid_event_type",
            field=field,
        )
    return event_type


class _Shape(NamedTuple):
    """An event's fields once its shape is right (what `EventIn` checks)."""

    id: str
    customer_id: str | None
    customer_external_id: str | None
    type: str
    timestamp: str
    data: dict[str, Any]
    costs: list[dict[str, Any]] | None
    authorization_id: str | None


def _max_length(name: str) -> int:
    (bound,) = [
        m.max_length for m in EventIn.model_fields[name].metadata if hasattr(m, "max_length")
    ]
    assert isinstance(bound, int)
    return bound


def _min_length(name: str) -> int:
    bounds = [m.min_length for m in EventIn.model_fields[name].metadata if hasattr(m, "min_length")]
    return int(bounds[0]) if bounds else 0


# EventIn's bounds, read from it so that the fast path below cannot drift; and
# what the fast path assumes of it: strict types, no extra keys, and no
# constraint but lengths.
assert EventIn.model_config.get("strict") is True
assert EventIn.model_config.get("extra") == "forbid"
assert all(
    type(m).__name__ in ("MinLen", "MaxLen")
    for f in EventIn.model_fields.values()
    for m in f.metadata
)
_EVENT_FIELDS = frozenset(EventIn.model_fields)
_ID_MIN, _TYPE_MIN = _min_length("id"), _min_length("type")
_TIMESTAMP_MIN = _min_length("timestamp")
_CUSTOMER_ID_MIN = _min_length("customer_id")
_EXTERNAL_ID_MIN = _min_length("customer_external_id")
_AUTHORIZATION_ID_MIN = _min_length("authorization_id")
_COSTS_MIN = _min_length("costs")
_ID_MAX = _max_length("id")
_CUSTOMER_ID_MAX = _max_length("customer_id")
_EXTERNAL_ID_MAX = _max_length("customer_external_id")
_TYPE_MAX = _max_length("type")
_TIMESTAMP_MAX = _max_length("timestamp")
_COSTS_MAX = _max_length("costs")
_AUTHORIZATION_ID_MAX = _max_length("authorization_id")
_NO_DATA: dict[str, Any] = {}


def _text(value: object, low: int, high: int) -> bool:
    """Whether `EventIn` takes `value` for a strict str field of these bounds:
    a str (not a subclass) of low..high characters that is valid Unicode (a
    lone surrogate is not)."""
    if type(value) is not str or not low <= len(value) <= high:
        return False
    if value.isascii():
        return True
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _str_keyed(value: object) -> bool:
    return type(value) is dict and all(type(key) is str for key in value)


def _fast_shape(raw: dict[Any, Any]) -> _Shape | None:
    """The shape of an event `EventIn` certainly accepts, checked without
    building the model (a third of the validation's cost); None whenever
    in doubt, and `EventIn` decides and words the error. What it returns
    equals what `EventIn` would hold, `data` and `costs` copied as it copies."""
    if not _EVENT_FIELDS.issuperset(raw):
        return None
    get = raw.get
    # Any: each is proven of its field's type below before it is used.
    event_id: Any = get("id")
    customer_id: Any = get("customer_id")
    external_id: Any = get("customer_external_id")
    event_type: Any = get("type")
    timestamp: Any = get("timestamp")
    authorization_id: Any = get("authorization_id")
    data: Any = get("data", _NO_DATA)
    costs: Any = get("costs")
    if not (
        _text(event_id, _ID_MIN, _ID_MAX)
        and _text(event_type, _TYPE_MIN, _TYPE_MAX)
        and _text(timestamp, _TIMESTAMP_MIN, _TIMESTAMP_MAX)
        and (customer_id is None) != (external_id is None)
        and (customer_id is None or _text(customer_id, _CUSTOMER_ID_MIN, _CUSTOMER_ID_MAX))
        and (external_id is None or _text(external_id, _EXTERNAL_ID_MIN, _EXTERNAL_ID_MAX))
        and (
            authorization_id is None
            or _text(authorization_id, _AUTHORIZATION_ID_MIN, _AUTHORIZATION_ID_MAX)
        )
        and _str_keyed(data)
        and (
            costs is None
            or (
                type(costs) is list
                and _COSTS_MIN <= len(costs) <= _COSTS_MAX
                and all(_str_keyed(cost) for cost in costs)
            )
        )
    ):
        return None
    return _Shape(
        event_id,
        customer_id,
        external_id,
        event_type,
        timestamp,
        dict(data),
        None if costs is None else [dict(cost) for cost in costs],
        authorization_id,
    )


def _shape_of(raw: dict[Any, Any], event_id: str | None) -> _Shape | EventResult:
    shape = _fast_shape(raw)
    if shape is not None:
        return shape
    try:
        event = EventIn.model_validate(raw)
    except ValidationError as exc:
        error = exc.errors()[0]
        loc = ".".join(str(part) for part in error["loc"]) or "customer_id"
        return _rejected(event_id, "invalid_data", f"{loc}: {error['msg']}", loc)
    return _Shape(
        event.id,
        event.customer_id,
        event.customer_external_id,
        event.type,
        event.timestamp,
        event.data,
        event.costs,
        event.authorization_id,
    )


def _fingerprint(event: _Shape, timestamp_text: str, data_json: str, costs_json: str | None) -> str:
    # The canonical JSON of {id, customer_id or customer_external_id, type,
    # timestamp, authorization_id}, spelled out in its sorted key order (this
    # runs for every event); data and costs are already canonical text.
    quote = values.quote_json
    if event.customer_id is not None:
        customer = f'"customer_id":{quote(event.customer_id)}'
    else:
        assert event.customer_external_id is not None
        customer = f'"customer_external_id":{quote(event.customer_external_id)}'
    authorization = "null" if event.authorization_id is None else quote(event.authorization_id)
    head = (
        f'{{"authorization_id":{authorization},{customer},"id":{quote(event.id)},'
        f'"timestamp":{quote(timestamp_text)},"type":{quote(event.type)}}}'
    )
    text = f'{{"event":{head},"data":{data_json},"costs":{costs_json or "null"}}}'
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _validate_event(index: int, raw: Any) -> _Candidate | EventResult:
    """A candidate, or the rejection of an event whose shape is wrong."""
    if not isinstance(raw, dict):
        return _rejected(None, "invalid_data", "An event is a JSON object.", None)
    raw_id = raw.get("id")
    event_id = raw_id if isinstance(raw_id, str) else None
    event = _shape_of(raw, event_id)
    if isinstance(event, EventResult):
        return event
    for name, text in (
        ("id", event.id),
        ("customer_id", event.customer_id),
        ("customer_external_id", event.customer_external_id),
        ("authorization_id", event.authorization_id),
    ):
        if text is not None and not _printable(text):
            return _rejected(
                event_id if event_id is not None and values.storable(event_id) else None,
                "invalid_data",
                f"{name} has printable characters and no spaces at either end.",
                name,
            )
    try:
        _validate_event_type(event.type, field="type")
        if event.customer_external_id is not None:
            validate_external_id(event.customer_external_id, field="customer_external_id")
        timestamp = parse_instant(event.timestamp, field="timestamp")
    except InvalidRequest as exc:
        return _rejected(event.id, "invalid_data", exc.detail, exc.field)
    try:
        data, data_json = values.sanitize_json(event.data, "data")
        costs, costs_json = (
            (None, None) if event.costs is None else values.sanitize_json(event.costs, "costs")
        )
    except values.DataError as exc:
        return _rejected(event.id, "invalid_data", f"{exc.path} {exc.message}.", exc.path)
    # A code point takes at most 4 bytes in UTF-8: most data needs no encoding to tell.
    if (
        len(data_json) * 4 > limits.event_data_bytes_max
        and len(data_json.encode("utf-8")) > limits.event_data_bytes_max
    ):
        return _rejected(
            event.id,
            "invalid_data",
            f"data is larger than {limits.event_data_bytes_max} bytes as JSON.",
            "data",
        )
    if costs is not None and (problem := costs_problem(costs)) is not None:
        return _rejected(event.id, "invalid_costs", problem[1], problem[0])
    if event.customer_id is not None:
        customer_ref, customer_field = event.customer_id, "customer_id"
    else:
        assert event.customer_external_id is not None
        customer_ref = EXTERNAL_REF_PREFIX + event.customer_external_id
        customer_field = "customer_external_id"
    timestamp_text = timestamp.isoformat()
    return _Candidate(
        index=index,
        id=event.id,
        customer_ref=customer_ref,
        customer_field=customer_field,
        type=event.type,
        timestamp=timestamp,
        timestamp_text=timestamp_text,
        data=data,
        costs=costs,
        authorization_id=event.authorization_id,
        data_json=data_json,
        costs_json=costs_json,
        fingerprint=_fingerprint(event, timestamp_text, data_json, costs_json),
    )


def _meter_refusal(candidate: _Candidate, meters: Sequence[Meter]) -> EventResult | None:
    """`invalid_data` when a meter that counts this event needs a number where
    the event has something else (a boolean, a word, an object)."""
    for meter in meters:
        if meter.aggregation not in NUMERIC_AGGREGATIONS or not _matches(meter, candidate.data):
            continue
        assert meter.field is not None
        value = values.value_at(candidate.data, _path(meter.field))
        if value is not None and values.numeric_value(value) is None:
            return _rejected(
                candidate.id,
                "invalid_data",
                f"data.{meter.field} is not a number, and meter {meter.code} "
                f"({meter.aggregation}) needs one.",
                f"data.{meter.field}",
            )
    return None


def _matches(meter: Meter, data: dict[str, Any]) -> bool:
    return all(
        values.text_of(values.value_at(data, _path(key))) in allowed
        for key, allowed in meter.filters.items()
    )


@functools.lru_cache(maxsize=4096)
def _path(dotted: str) -> tuple[str, ...]:
    # Cached: ingest reads the same few meter paths for every event.
    segments = values.parse_path(dotted)
    assert segments is not None, dotted
    return segments


@dataclass(frozen=True, slots=True)
class IngestOutcome:
    results: list[EventResult]
    accepted: list[AcceptedEvent]


async def ingest(
    session: AsyncSession,
    clock: Clock,
    principal: Principal,
    raw_events: Sequence[Any],
    *,
    backfill_window_s: int,
) -> IngestOutcome:
    """Store the new events of a batch and answer each one; see the module doc.

    Raises only for the batch as a whole (`batch_too_large`).
    """
    if len(raw_events) > limits.events_per_batch_max:
        raise LimitExceeded(
            f"A batch holds at most {limits.events_per_batch_max} events; "
            f"this one has {len(raw_events)}. Split it.",
            code="batch_too_large",
            field="events",
        )
    organization_id = principal.organization_id
    now = clock.now()
    results: list[EventResult | None] = [None] * len(raw_events)
    firsts = _first_of_each_id(raw_events, results)
    known = await _with_customers(session, organization_id, firsts, results)
    meters = await _decide_refusals(session, organization_id, known, now, backfill_window_s)
    accepted = await _store(session, organization_id, known, now, results)
    events = [
        AcceptedEvent(
            id=candidate.id,
            customer_id=_customer_id(candidate),
            type=candidate.type,
            timestamp=candidate.timestamp,
            data=candidate.data,
            costs=candidate.costs,
            authorization_id=candidate.authorization_id,
            received_at=now,
        )
        for candidate in accepted
    ]
    # Before billing, which locks the customers' wallets until the commit:
    # holds wait on those locks, so the work after them is kept short. The
    # rollups lock nothing others wait on (PostgreSQL appends deltas;
    # SQLite's one writer already holds the database).
    await rollups.write(
        session,
        organization_id,
        meters,
        [(event.customer_id, event.type, event.timestamp, event.data) for event in events],
    )
    extras = await on_events_accepted(session, clock, organization_id, events)
    for candidate in accepted:
        extra = extras.get(candidate.id)
        if extra:
            current = results[candidate.index]
            assert current is not None
            assert current.status == "accepted"
            results[candidate.index] = EventResult(candidate.id, "accepted", extra=extra)
    final = [result for result in results if result is not None]
    assert len(final) == len(raw_events), "every event is answered"
    return IngestOutcome(final, events)


def _first_of_each_id(
    raw_events: Sequence[Any], results: list[EventResult | None]
) -> list[_Candidate]:
    """Checks 1 and 2: each event's shape, then ids repeated within the batch.
    Returns the first well-formed event of each id, in request order."""
    firsts: dict[str, _Candidate] = {}
    for index, raw in enumerate(raw_events):
        checked = _validate_event(index, raw)
        if isinstance(checked, EventResult):
            results[index] = checked
            continue
        first = firsts.get(checked.id)
        if first is None:
            firsts[checked.id] = checked
        elif first.fingerprint == checked.fingerprint:
            first.copies.append(checked)
        else:
            results[index] = _rejected(
                checked.id,
                "event_id_conflict",
                "An earlier event in this batch has this id and another payload.",
                "id",
            )
    return list(firsts.values())


async def _with_customers(
    session: AsyncSession,
    organization_id: str,
    candidates: list[_Candidate],
    results: list[EventResult | None],
) -> list[_Candidate]:
    """Check 3: the candidates whose customer exists, in two queries."""
    customers = await resolve_customer_ids(
        session, organization_id, {candidate.customer_ref for candidate in candidates}
    )
    known: list[_Candidate] = []
    for candidate in candidates:
        customer_id = customers.get(candidate.customer_ref)
        if customer_id is None:
            refusal = _rejected(
                candidate.id, "customer_not_found", "No such customer.", candidate.customer_field
            )
            _settle(results, candidate, refusal)
        else:
            candidate.customer_id = customer_id
            known.append(candidate)
    return known


async def _decide_refusals(
    session: AsyncSession,
    organization_id: str,
    candidates: list[_Candidate],
    now: datetime,
    backfill_window_s: int,
) -> list[Meter]:
    """Check 5, decided now and applied later, only to ids that are new.
    Returns the meters of the candidates' types."""
    earliest = now - timedelta(seconds=backfill_window_s)
    latest = now + timedelta(seconds=limits.event_future_skew_max_s)
    meters_by_type: dict[str, list[Meter]] = {}
    meters = await MeterRepository(session, organization_id).for_event_types(
        {candidate.type for candidate in candidates}
    )
    for meter in meters:
        meters_by_type.setdefault(meter.event_type, []).append(meter)
    named = await AuthorizationRepository(session, organization_id).get_many(
        sorted({c.authorization_id for c in candidates if c.authorization_id is not None})
    )
    for candidate in candidates:
        hold = named.get(candidate.authorization_id or "")
        if candidate.authorization_id is not None and (
            hold is None or hold.customer_id != candidate.customer_id
        ):
            # Another customer's hold is not found, exactly like a missing one.
            candidate.refusal = _rejected(
                candidate.id,
                "authorization_not_found",
                "No such authorization for this event's customer.",
                "authorization_id",
            )
        elif not earliest <= candidate.timestamp <= latest:
            candidate.refusal = _rejected(
                candidate.id,
                "timestamp_out_of_range",
                f"An event's timestamp is at most {backfill_window_s // 86400} days "
                f"({backfill_window_s} s) before the server clock and at most "
                f"{limits.event_future_skew_max_s // 60} minutes after it.",
                "timestamp",
            )
        else:
            candidate.refusal = _meter_refusal(candidate, meters_by_type.get(candidate.type, ()))
    return meters


async def _store(
    session: AsyncSession,
    organization_id: str,
    candidates: list[_Candidate],
    now: datetime,
    results: list[EventResult | None],
) -> list[_Candidate]:
    """Check 4 and the insert: the primary key decides which ids are new.
    Returns the candidates stored now, in request order."""
    repository = EventRepository(session, organization_id)
    inserted = await repository.insert_new(
        [
            EventRow(
                id=candidate.id,
                customer_id=_customer_id(candidate),
                type=candidate.type,
                timestamp=candidate.timestamp,
                timestamp_text=candidate.timestamp_text,
                data_json=candidate.data_json,
                fingerprint=candidate.fingerprint,
                received_at=now,
                authorization_id=candidate.authorization_id,
                costs_json=candidate.costs_json,
            )
            for candidate in candidates
            if candidate.refusal is None
        ]
    )
    stored = await repository.fingerprints(
        [candidate.id for candidate in candidates if candidate.id not in inserted]
    )
    accepted: list[_Candidate] = []
    for candidate in candidates:
        if candidate.id in inserted:
            accepted.append(candidate)
            _settle(results, candidate, EventResult(candidate.id, "accepted"))
        elif candidate.id in stored:
            _settle(results, candidate, _against_stored(candidate, stored[candidate.id]))
        else:
            assert candidate.refusal is not None, "a conflicting insert is visible once committed"
            _settle(results, candidate, candidate.refusal)
    return accepted


def _customer_id(candidate: _Candidate) -> str:
    assert candidate.customer_id is not None
    return candidate.customer_id


def _against_stored(candidate: _Candidate, fingerprint: str) -> EventResult:
    if fingerprint == candidate.fingerprint:
        return EventResult(candidate.id, "duplicate")
    return _rejected(
        candidate.id,
        "event_id_conflict",
        "An event with this id was stored before with another payload; ids are never reused.",
        "id",
    )


def _settle(results: list[EventResult | None], candidate: _Candidate, result: EventResult) -> None:
    """Answer an event and its identical copies later in the batch."""
    results[candidate.index] = result
    if not candidate.copies:
        return  # the common case, without building an answer for no one
    copy = EventResult(candidate.id, "duplicate") if result.status == "accepted" else result
    for duplicate in candidate.copies:
        results[duplicate.index] = copy


# --- meters ------------------------------------------------------------------


def _validate_path(path: str, *, field: str, code: str) -> tuple[str, ...]:
    segments = values.parse_path(path) if isinstance(path, str) else None
    if segments is None:
        raise InvalidRequest(
            f'{field} must be a dotted path into data ("usage.output_tokens"): 1 to '
            f'{limits.meter_path_segments_max} keys of letters, digits, "_" and "-".',
            code=code,
            field=field,
        )
    return segments


def _validate_filters(filters: dict[str, list[str]] | None) -> dict[str, list[str]]:
    if not filters:
        return {}
    if len(filters) > limits.meter_filter_keys_max:
        raise InvalidRequest(
            f"A meter has at most {limits.meter_filter_keys_max} filters.",
            code="invalid_filters",
            field="filters",
        )
    cleaned: dict[str, list[str]] = {}
    for key, allowed in filters.items():
        _validate_path(key, field=f"filters.{key}", code="invalid_filters")
        if not 0 < len(allowed) <= limits.meter_filter_values_max or any(
            len(value) > limits.meter_filter_value_length_max or not values.storable(value)
            for value in allowed
        ):
            raise InvalidRequest(
                f"A filter allows 1 to {limits.meter_filter_values_max} values of at most "
                f"{limits.meter_filter_value_length_max} characters.",
                code="invalid_filters",
                field=f"filters.{key}",
            )
        cleaned[key] = list(dict.fromkeys(allowed))
    return cleaned


def _validate_group_by(group_by: list[str] | None) -> list[str]:
    if not group_by:
        return []
    if len(group_by) > limits.meter_group_by_max or len(set(group_by)) != len(group_by):
        raise InvalidRequest(
            f"group_by lists at most {limits.meter_group_by_max} different keys.",
            code="invalid_group_by",
            field="group_by",
        )
    for key in group_by:
        _validate_path(key, field="group_by", code="invalid_group_by")
    return list(group_by)


async def create_meter(
    session: AsyncSession,
    clock: Clock,
    principal: Principal,
    *,
    code: str,
    name: str | None,
    event_type: str,
    aggregation: str,
    field: str | None,
    filters: dict[str, list[str]] | None,
    group_by: list[str] | None,
) -> Meter:
    if len(code) > limits.meter_code_length_max or not _METER_CODE_RE.fullmatch(code):
        raise InvalidRequest(
            f"A meter code is 1 to {limits.meter_code_length_max} letters, digits, "
            '"_", "-" or ".", starting with a letter or digit.',
            code="invalid_meter_code",
            field="code",
        )
    if name is not None:
        name = name.strip()
        if not name or not _printable(name):
            raise InvalidRequest(
                "A name has printable characters.", code="invalid_name", field="name"
            )
    _validate_event_type(event_type, field="event_type")
    if aggregation not in AGGREGATIONS:
        raise InvalidRequest(
            f"aggregation is one of {', '.join(AGGREGATIONS)}.",
            code="invalid_aggregation",
            field="aggregation",
        )
    if aggregation == "count":
        if field is not None:
            raise InvalidRequest(
                "A count meter counts events; it reads no field.",
                code="invalid_field",
                field="field",
            )
    elif field is None:
        raise InvalidRequest(
            f"A {aggregation} meter needs the field it reads.",
            code="invalid_field",
            field="field",
        )
    else:
        _validate_path(field, field="field", code="invalid_field")
    meter = Meter(
        id=new_id("mtr"),
        organization_id=principal.organization_id,
        code=code,
        name=name,
        event_type=event_type,
        aggregation=aggregation,
        field=field,
        filters=_validate_filters(filters),
        group_by=_validate_group_by(group_by),
        created_at=clock.now(),
    )
    repository = MeterRepository(session, principal.organization_id)
    if await repository.count() >= limits.meters_per_organization_max:
        raise LimitExceeded(
            f"An organization may have at most {limits.meters_per_organization_max} meters.",
            code="meter_limit_reached",
        )
    if not await repository.insert_if_absent(meter):
        raise Conflict(
            f"This organization already has a meter {code}.",
            code="meter_code_taken",
            field="code",
        )
    await rollups.build(session, meter)
    return meter


async def get_meter(session: AsyncSession, principal: Principal, code: str) -> Meter:
    """The organization's meter with this code; another organization's is not found."""
    meter = None
    if len(code) <= limits.meter_code_length_max and _METER_CODE_RE.fullmatch(code):
        meter = await MeterRepository(session, principal.organization_id).get_by_code(code)
    if meter is None:
        raise NotFound.of("meter", field="code")
    return meter


async def list_meters(
    session: AsyncSession, principal: Principal, limit: int, starting_after: str | None
) -> list[Meter]:
    return await MeterRepository(session, principal.organization_id).list_page(
        limit, starting_after
    )


# --- usage -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class UsageRow:
    start: datetime
    end: datetime
    group: dict[str, str | None]
    value: str | None


@dataclass(frozen=True, slots=True)
class Usage:
    meter: Meter
    customer_id: str | None
    start: datetime
    end: datetime
    granularity: str | None
    group_by: list[str]
    rows: list[UsageRow]


def _floor(instant: datetime, granularity: str) -> datetime:
    instant = instant.replace(minute=0, second=0, microsecond=0)
    if granularity == "hour":
        return instant
    instant = instant.replace(hour=0)
    return instant if granularity == "day" else instant.replace(day=1)


def _next(bucket: datetime, granularity: str) -> datetime | None:
    """The start of the bucket after `bucket`, or None past the calendar's end."""
    try:
        if granularity == "hour":
            return bucket + timedelta(hours=1)
        if granularity == "day":
            return bucket + timedelta(days=1)
        if bucket.month == 12:
            return bucket.replace(year=bucket.year + 1, month=1)
        return bucket.replace(month=bucket.month + 1)
    except (OverflowError, ValueError):
        return None


def _bucket_count(start: datetime, end: datetime, granularity: str) -> int:
    first = _floor(start, granularity)
    if granularity == "month":
        return (end.year - first.year) * 12 + end.month - first.month + 1
    step = timedelta(hours=1) if granularity == "hour" else timedelta(days=1)
    return -(-(end - first) // step)


def buckets(
    start: datetime, end: datetime, granularity: str | None
) -> list[tuple[datetime, datetime]]:
    """[start, end) cut at UTC calendar boundaries; the first and last bucket
    are clipped to the range. One bucket when there is no granularity."""
    assert start < end
    if granularity is None:
        return [(start, end)]
    if _bucket_count(start, end, granularity) > limits.usage_buckets_max:
        raise LimitExceeded(
            f"A usage query answers at most {limits.usage_buckets_max} buckets; "
            "use a coarser granularity or a shorter range.",
            code="too_many_buckets",
            field="granularity",
        )
    out = []
    bucket: datetime | None = _floor(start, granularity)
    while bucket is not None and bucket < end:
        following = _next(bucket, granularity)
        out.append((max(bucket, start), end if following is None else min(following, end)))
        bucket = following
    return out


async def usage(
    session: AsyncSession,
    clock: Clock,
    principal: Principal,
    code: str,
    *,
    customer_ref: str | None,
    start_text: str | None,
    end_text: str | None,
    granularity: str | None,
    group_by: Sequence[str],
    backfill_window_s: int,
) -> Usage:
    """A meter's value per UTC bucket and group over [from, to).

    `to` defaults to the server clock plus the 5 minutes events may run ahead,
    so every event accepted so far is inside; `from` defaults to the backfill
    window before `to`. Without a granularity the whole range is one bucket.
    Ungrouped answers list every bucket (count, sum and unique_count read "0"
    where nothing happened; max, min and latest null); grouped answers list
    only the groups that have events in a bucket.
    """
    meter = await get_meter(session, principal, code)
    customer_id = None
    if customer_ref is not None:
        if not values.storable(customer_ref):
            raise NotFound.of("customer", field="customer_id")
        customer = await resolve_customer(session, principal.organization_id, customer_ref)
        customer_id = customer.id
    end = (
        clock.now() + timedelta(seconds=limits.event_future_skew_max_s)
        if end_text is None
        else parse_instant(end_text, field="to")
    )
    start = (
        end - timedelta(seconds=backfill_window_s)
        if start_text is None
        else parse_instant(start_text, field="from")
    )
    if not start < end:
        raise InvalidRequest("from must be before to.", code="invalid_range", field="to")
    if granularity is not None and granularity not in GRANULARITIES:
        raise InvalidRequest(
            f"granularity is one of {', '.join(GRANULARITIES)}.",
            code="invalid_granularity",
            field="granularity",
        )
    keys = list(dict.fromkeys(key for item in group_by for key in item.split(",") if key))
    unknown = [key for key in keys if key not in meter.group_by]
    if unknown:
        raise InvalidRequest(
            f"{unknown[0]} is not one of this meter's group_by keys "
            f"({', '.join(meter.group_by) or 'none'}).",
            code="invalid_group_by",
            field="group_by",
        )
    ranges = buckets(start, end, granularity)
    query = UsageQuery(
        event_type=meter.event_type,
        aggregation=meter.aggregation,
        field=None if meter.field is None else _path(meter.field),
        filters={_path(key): allowed for key, allowed in meter.filters.items()},
        customer_id=customer_id,
        start=start,
        end=end,
        granularity=granularity,
        group_by=tuple(_path(key) for key in keys),
        ranges=tuple(ranges),
    )
    try:
        if meter.aggregation in rollups.ROLLED_UP:
            cells = await rollups.aggregate(session, meter, query)
        else:
            cells = await UsageRepository(session, principal.organization_id).aggregate(query)
    except TooManyRows:
        raise LimitExceeded(
            f"This query answers more than {limits.usage_rows_max} rows; narrow the range, "
            "use a coarser granularity or fewer group_by keys.",
            code="usage_too_large",
        ) from None

    def key(instant: datetime | None) -> datetime | None:
        # Cells name their bucket by any instant in it; buckets by calendar start.
        return None if instant is None or granularity is None else _floor(instant, granularity)

    index = {key(lo): position for position, (lo, _) in enumerate(ranges)}
    empty = None if meter.aggregation in ("max", "min", "latest") else "0"
    rows: list[tuple[int, tuple[Any, ...], UsageRow]] = []
    seen: set[int] = set()
    for cell in cells:
        position = index[key(cell.bucket)]
        lo, hi = ranges[position]
        seen.add(position)
        value = empty if cell.value is None else values.decimal_text(cell.value)
        rows.append(
            (
                position,
                tuple((item is not None, item or "") for item in cell.group),
                UsageRow(lo, hi, dict(zip(keys, cell.group, strict=True)), value),
            )
        )
    if not keys:
        for position, (lo, hi) in enumerate(ranges):
            if position not in seen:
                rows.append((position, (), UsageRow(lo, hi, {}, empty)))
    rows.sort(key=lambda row: (row[0], row[1]))
    return Usage(
        meter=meter,
        customer_id=customer_id,
        start=start,
        end=end,
        granularity=granularity,
        group_by=keys,
        rows=[row for _, _, row in rows],
    )
