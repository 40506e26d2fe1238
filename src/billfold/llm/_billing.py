"""Reserve, call, settle: the billing half of a wrapped model call.

Both wrappers and the gateway bill through the same three steps and the same
bodies: an authorization holding the rated price of the call's worst case
(`estimate` of a usage event), then one usage event naming that hold, which
settles it with the event's rated fees. A provider error releases the hold
(or, by policy, charges the input bound).
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from billfold.llm._estimate import Estimate
from billfold.llm._usage import RESERVED_DATA_KEYS, Tracker, estimate_data, event_data
from billfold.sdk import AsyncBillfold, Billfold, BillfoldError

logger = logging.getLogger("billfold.llm")

OnProviderError = Literal["release", "charge_input"]
EVENT_TYPE_DEFAULT = "llm.usage"
#: Long enough for a long generation; the settling event normally ends it sooner.
HOLD_TTL_DEFAULT_S = 900


class AuthorizationDeclined(BillfoldError):
    """The customer's wallet cannot cover this call's worst case. Raised before
    any provider call; `code` is the decline code (`insufficient_funds` …)."""

    def __init__(self, code: str, request_id: str | None, answer: Mapping[str, Any]) -> None:
        super().__init__(
            f"Billfold declined the call: {code}", code=code, status=402, request_id=request_id
        )
        self.answer = dict(answer)


@dataclass(frozen=True, slots=True)
class Options:
    customer: str
    tags: Mapping[str, Any] = field(default_factory=dict)
    event_type: str = EVENT_TYPE_DEFAULT
    #: Hold this plain amount of `asset` instead of the rated estimate.
    hold_amount: str | None = None
    asset: str = "USD"
    ttl_s: int = HOLD_TTL_DEFAULT_S
    on_provider_error: OnProviderError = "release"

    def __post_init__(self) -> None:
        clash = RESERVED_DATA_KEYS & set(self.tags)
        if clash:
            raise ValueError(f"tags may not use the names the usage event sets: {sorted(clash)}")
        if self.on_provider_error not in ("release", "charge_input"):
            raise ValueError("on_provider_error is 'release' or 'charge_input'")


@dataclass(slots=True)
class Opened:
    """One logical call under one hold."""

    call_id: str
    authorization_id: str
    tracker: Tracker
    done: bool = False
    #: The gateway's claim on the client's Idempotency-Key for this call
    #: (`LocalBilling.claim_call`), ended with the call.
    claimed_key: str | None = None


def new_call_id() -> str:
    return f"llm_{uuid.uuid4().hex}"


def authorization_body(options: Options, estimate: Estimate, call_id: str) -> dict[str, Any]:
    body: dict[str, Any] = {
        "customer_id": options.customer,
        "ttl_s": options.ttl_s,
        "metadata": {"call_id": call_id, "model": estimate.model[:200], "api": estimate.api},
    }
    if options.hold_amount is not None:
        body |= {"asset": options.asset, "amount": options.hold_amount}
    else:
        body["estimate"] = {
            "event_type": options.event_type,
            "data": estimate_data(estimate, options.tags),
        }
    return body


def usage_event(
    options: Options, opened: Opened, data: Mapping[str, Any], now: datetime | None = None
) -> dict[str, Any]:
    at = (now or datetime.now(UTC)).isoformat().replace("+00:00", "Z")
    return {
        # The call's own id: a resent event is a duplicate, never a second charge.
        "id": opened.call_id,
        "customer_id": options.customer,
        "type": options.event_type,
        "timestamp": at,
        "data": dict(data),
        "authorization_id": opened.authorization_id,
    }


def settled_data(options: Options, tracker: Tracker) -> dict[str, Any]:
    counts, source = tracker.settled_counts()
    return event_data(
        tracker.estimate,
        model=tracker.model,
        usage=tracker.usage,
        counts=counts,
        usage_source=source,
        tags=options.tags,
    )


def charged_input_data(options: Options, tracker: Tracker) -> dict[str, Any]:
    return event_data(
        tracker.estimate,
        model=tracker.model,
        usage=None,
        counts=tracker.input_only_counts(),
        usage_source="estimated",
        tags=options.tags,
    )


def _opened(answer: Mapping[str, Any], call_id: str, estimate: Estimate) -> Opened:
    if answer.get("status") != "authorized" or not isinstance(answer.get("id"), str):
        code = answer.get("decline_code")
        raise AuthorizationDeclined(code if isinstance(code, str) else "declined", None, answer)
    return Opened(call_id, answer["id"], Tracker(estimate))


def _check_event(answer: Mapping[str, Any], opened: Opened) -> None:
    results = answer.get("results") or []
    result = results[0] if results else {}
    if result.get("status") == "rejected":
        logger.error(
            "the usage event of %s was rejected: %s %s",
            opened.call_id,
            result.get("code"),
            result.get("detail"),
        )


class SyncMeter:
    """Billing steps over the sync SDK."""

    def __init__(self, billfold: Billfold, options: Options) -> None:
        self.billfold = billfold
        self.options = options

    def open(self, estimate: Estimate) -> Opened:
        call_id = new_call_id()
        answer = self.billfold.authorizations.create(
            **authorization_body(self.options, estimate, call_id),
            idempotency_key=f"{call_id}:hold",
        )
        return _opened(answer, call_id, estimate)

    def settle(self, opened: Opened) -> None:
        if opened.done:
            return
        opened.done = True
        self._send(opened, settled_data(self.options, opened.tracker))

    def fail(self, opened: Opened, *, dispatched: bool = False) -> None:
        """The call failed: release the hold, or charge the input bound when
        the policy says so or the request may have run (a timeout)."""
        if opened.done:
            return
        opened.done = True
        if dispatched or self.options.on_provider_error == "charge_input":
            self._send(opened, charged_input_data(self.options, opened.tracker))
            return
        try:
            self.billfold.authorizations.release(
                opened.authorization_id, idempotency_key=f"{opened.call_id}:release"
            )
        except BillfoldError:
            # The hold expires by itself at its TTL; the provider's error matters more.
            logger.exception("could not release the hold of %s", opened.call_id)

    def _send(self, opened: Opened, data: Mapping[str, Any]) -> None:
        try:
            answer = self.billfold.events.ingest(
                [usage_event(self.options, opened, data)],
                idempotency_key=f"{opened.call_id}:event",
            )
        except BillfoldError:
            # The model call has run and its answer is the caller's: a billing
            # failure after the fact is logged, not raised into their code.
            logger.exception("could not settle %s", opened.call_id)
            return
        _check_event(answer, opened)


class AsyncMeter:
    """Billing steps over the async SDK."""

    def __init__(self, billfold: AsyncBillfold, options: Options) -> None:
        self.billfold = billfold
        self.options = options

    async def open(self, estimate: Estimate) -> Opened:
        call_id = new_call_id()
        answer = await self.billfold.authorizations.create(
            **authorization_body(self.options, estimate, call_id),
            idempotency_key=f"{call_id}:hold",
        )
        return _opened(answer, call_id, estimate)

    async def settle(self, opened: Opened) -> None:
        if opened.done:
            return
        opened.done = True
        await self._send(opened, settled_data(self.options, opened.tracker))

    async def fail(self, opened: Opened, *, dispatched: bool = False) -> None:
        if opened.done:
            return
        opened.done = True
        if dispatched or self.options.on_provider_error == "charge_input":
            await self._send(opened, charged_input_data(self.options, opened.tracker))
            return
        try:
            await self.billfold.authorizations.release(
                opened.authorization_id, idempotency_key=f"{opened.call_id}:release"
            )
        except BillfoldError:
            logger.exception("could not release the hold of %s", opened.call_id)

    async def _send(self, opened: Opened, data: Mapping[str, Any]) -> None:
        try:
            answer = await self.billfold.events.ingest(
                [usage_event(self.options, opened, data)],
                idempotency_key=f"{opened.call_id}:event",
            )
        except BillfoldError:
            logger.exception("could not settle %s", opened.call_id)
            return
        _check_event(answer, opened)
