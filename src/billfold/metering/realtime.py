"""The seam between ingest and real-time billing.

`POST /v1/events` calls `on_events_accepted` exactly once per request, inside
the transaction that inserted the events, after the inserts and before the
boundary commits. Today it does nothing. Real-time rating plugs in here.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from billfold.clock import Clock


@dataclass(frozen=True, slots=True)
class AcceptedEvent:
    """An event this request stored for the first time.

    Numbers in `data` and `costs` are `int` or `Decimal`, never float.
    """

    id: str
    customer_id: str
    type: str
    timestamp: datetime
    data: dict[str, Any]
    costs: list[Any] | None
    authorization_id: str | None
    received_at: datetime


async def on_events_accepted(
    session: AsyncSession,
    clock: Clock,
    organization_id: str,
    events: Sequence[AcceptedEvent],
) -> dict[str, dict[str, Any]]:
    """Act on the events one ingest request accepted: bill them in real time.

    Each event is rated under the customer's `billing: real_time` prices and
    debited from the wallet through the ledger (or settles the hold named by
    `authorization_id`); see `billfold.realtime.service`. Its vendor costs
    (`costs`, `data.llm`) are recorded; see `billfold.costs.service`. Returns
    what each accepted event's answer adds (`fees`, `costs`), keyed by event id.

    What a caller guarantees:

    - It is called once per request, even with no events, and only with
      events inserted by this transaction. Duplicates and rejected events
      never appear, so an event can never be billed twice.
    - Events come in request order. Their customers exist in `organization_id`,
      and a named `authorization_id` is one of that customer's holds.
    - `session` holds the transaction that inserted them. The boundary commits
      it after this returns, so debits and events commit or vanish together.

    What an implementation must respect:

    - Never commit or roll back.
    - Never refuse an event (usage has already happened). A shortfall becomes
      debt on the wallet, not an exception.
    - Raise only for our own bugs. That rolls back the whole batch, and the
      client's retry replays it.
    """
    assert all(event.received_at.tzinfo is not None for event in events)
    # Imported here: real-time billing reaches wallets and the catalog, which
    # import metering themselves.
    from billfold.costs.service import record_event_costs
    from billfold.realtime.service import bill_events

    # Costs first: they lock nothing, and billing locks the customers'
    # wallets, which concurrent holds wait on until this transaction ends.
    costs = await record_event_costs(session, clock, organization_id, events)
    fees = await bill_events(session, clock, organization_id, events)
    extras: dict[str, dict[str, Any]] = {}
    for event in events:
        extra: dict[str, Any] = {"fees": fees.get(event.id, [])}
        if event.id in costs:
            extra["costs"] = costs[event.id]
        extras[event.id] = extra
    return extras
