"""Metering: usage events (idempotent by the client's id), meters, usage queries.

Real-time billing hooks in at `metering.realtime.on_events_accepted`.
"""

from billfold.metering.models import Event, Meter
from billfold.metering.realtime import AcceptedEvent, on_events_accepted

__all__ = ["AcceptedEvent", "Event", "Meter", "on_events_accepted"]
