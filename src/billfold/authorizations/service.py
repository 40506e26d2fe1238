"""Authorizations: hold before the work, capture or release after, once.

The decisions are made by the wallet writer (writer.py) against a wallet
opened under its lock; this module holds the rules for one request and the
shape of the answer. Declines are answers (200, `status: "declined"`), not
errors; resolving a hold a second time is an error with its own code.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from billfold.assets.amounts import AssetInfo, format_amount
from billfold.authorizations.models import Authorization
from billfold.errors import BillfoldError, Conflict, InvalidRequest
from billfold.ids import new_id
from billfold.wallets.service import OpenWallet
from billfold.wallets.state import Split

if TYPE_CHECKING:
    from billfold.realtime.service import PlannedEstimate


@dataclass(frozen=True, slots=True)
class IdempotencyRef:
    key: str
    fingerprint: str
    method: str
    path: str


@dataclass(frozen=True, slots=True)
class AuthorizeRequest:
    organization_id: str
    #: As the caller named it (`cus_…` or `ext:<external_id>`): the writer
    #: resolves every request's customer of a batch with one query.
    customer_ref: str
    asset: AssetInfo
    amount_minor: int
    ttl_s: int
    metadata: dict[str, str]
    idempotency: IdempotencyRef | None
    request_id: str | None = None
    #: `customer_ref` is a `cus_…` id the caller already found in the
    #: organization, in the database (a gateway key names it): not looked up again.
    customer_known: bool = False
    #: Hold this event's fee in `asset` instead of `amount_minor`: the writer
    #: rates it against the running totals it reads under the wallet's lock.
    estimate: PlannedEstimate | None = None


@dataclass(frozen=True, slots=True)
class ResolveRequest:
    """capture, release, or refresh (apply expiry, then report)."""

    organization_id: str
    customer_id: str
    asset: AssetInfo
    authorization_id: str
    action: str
    amount_minor: int | None
    idempotency: IdempotencyRef | None
    request_id: str | None = None


WalletRequest = AuthorizeRequest | ResolveRequest


@dataclass(frozen=True, slots=True)
class Answer:
    status: int
    body: bytes
    content_type: str = "application/json"
    replayed: bool = False


def render(authorization: Authorization, asset: AssetInfo) -> dict[str, Any]:
    def when(value: datetime | None) -> str | None:
        return None if value is None else value.isoformat().replace("+00:00", "Z")

    return {
        "id": authorization.id,
        "object": "authorization",
        "status": authorization.status,
        "decline_code": authorization.decline_code,
        "customer_id": authorization.customer_id,
        "asset": authorization.asset_code,
        "amount": format_amount(asset, authorization.amount_minor),
        "captured_amount": format_amount(asset, authorization.captured_minor),
        "released_amount": format_amount(asset, authorization.released_minor),
        "expires_at": when(authorization.expires_at),
        "created_at": when(authorization.created_at),
        "resolved_at": when(authorization.resolved_at),
        "metadata": authorization.details.get("metadata", {}),
    }


def answer(status: int, body: dict[str, Any]) -> Answer:
    return Answer(status=status, body=json.dumps(body, separators=(",", ":")).encode())


def problem_answer(error: BillfoldError, request_id: str | None) -> Answer:
    body: dict[str, Any] = {
        "type": "https://billfold.dev/problems/" + error.code,
        "title": error.title,
        "status": error.status,
        "detail": error.detail,
        "code": error.code,
    }
    if error.field is not None:
        body["field"] = error.field
    if request_id is not None:
        body["request_id"] = request_id
    return Answer(
        status=error.status,
        body=json.dumps(body, separators=(",", ":")).encode(),
        content_type="application/problem+json",
    )


def declined_without_wallet(
    asset_code: str | None, amount: str, metadata: dict[str, str], decline_code: str
) -> Answer:
    """The decline of a request that names no wallet (an unknown customer or
    asset): nothing was held, so there is no authorization to name."""
    return answer(
        200,
        {
            "id": None,
            "object": "authorization",
            "status": "declined",
            "decline_code": decline_code,
            "customer_id": None,
            "asset": asset_code,
            "amount": amount,
            "captured_amount": "0",
            "released_amount": "0",
            "expires_at": None,
            "created_at": None,
            "resolved_at": None,
            "metadata": metadata,
        },
    )


def authorize(
    opened: OpenWallet | None, request: AuthorizeRequest, customer_id: str, now: datetime
) -> tuple[Authorization, list[Split]]:
    """Hold the amount if the wallet can cover it; decline otherwise. Nothing partial."""
    authorization_id = new_id("auth")
    splits = None
    if opened is not None:
        splits = opened.state.hold(authorization_id, request.amount_minor, now)
    authorized = splits is not None
    expires_at = now + timedelta(seconds=request.ttl_s)
    if authorized and opened is not None:
        opened.new_expiries.append(expires_at)
    authorization = Authorization(
        id=authorization_id,
        organization_id=request.organization_id,
        customer_id=customer_id,
        asset_code=request.asset.code,
        amount_minor=request.amount_minor,
        status="authorized" if authorized else "declined",
        decline_code=None if authorized else "insufficient_funds",
        captured_minor=0,
        released_minor=0,
        expires_at=expires_at,
        created_at=now,
        resolved_at=None if authorized else now,
        details={"metadata": request.metadata},
    )
    return authorization, splits or []


_RESOLVED = {
    "captured": ("already_captured", "This authorization was already captured."),
    "released": ("already_released", "This authorization was already released."),
    "expired": ("expired", "This authorization expired; its funds were released."),
    "declined": (
        "authorization_declined",
        "This authorization was declined; there is nothing to resolve.",
    ),
}


def check_resolvable(authorization: Authorization, request: ResolveRequest) -> None:
    if authorization.status == "authorized":
        if request.amount_minor is not None and request.amount_minor > authorization.amount_minor:
            raise InvalidRequest(
                "A capture may not exceed the authorized amount.",
                code="exceeds_authorized_amount",
                field="amount",
                status=422,
            )
        return
    code, detail = _RESOLVED[authorization.status]
    raise Conflict(detail, code=code, field="id")


def resolve(
    opened: OpenWallet,
    authorization: Authorization,
    splits: list[Split],
    request: ResolveRequest,
    now: datetime,
) -> tuple[str, int, int]:
    """Settle the hold; returns (status, captured_minor, released_minor)."""
    if request.action == "capture":
        amount = (
            authorization.amount_minor if request.amount_minor is None else request.amount_minor
        )
        settlement = opened.state.settle(authorization.id, splits, amount, "capture", now)
        return "captured", settlement.captured_minor, settlement.released_minor
    settlement = opened.state.settle(authorization.id, splits, 0, "release", now)
    return "released", 0, settlement.released_minor
