from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field

from billfold import limits
from billfold.api.schemas import RequestSchema

Amount = Field(
    max_length=40, description="Decimal string in major units of the asset", examples=["12.50"]
)


class Payment(RequestSchema):
    asset: str = Field(max_length=20)
    amount: str = Amount


class GrantCreate(RequestSchema):
    asset: str = Field(max_length=20, examples=["USD", "TOKENS"])
    amount: str | None = Field(default=None, max_length=40, examples=["100.00"])
    paid: Payment | None = Field(
        default=None,
        description="Fund the grant with a payment in another asset, at the current rate.",
    )
    purpose: Literal["paid", "promotional", "bundled"]
    priority: int = Field(
        default=0, ge=0, le=limits.grant_priority_max, description="Lower is consumed first"
    )
    effective_at: datetime | None = None
    expires_at: datetime | None = None


class GrantOut(BaseModel):
    id: str
    object: Literal["grant"] = "grant"
    customer_id: str
    asset: str
    purpose: str
    priority: int
    amount: str = Field(description="What the grant was funded with")
    remaining: str = Field(description="Posted balance left, including what is held")
    held: str
    available: str = Field(description="What can still be spent from it now")
    effective_at: datetime
    expires_at: datetime | None
    status: str
    funding: dict[str, Any]
    created_at: datetime


class AdjustmentCreate(RequestSchema):
    asset: str = Field(max_length=20)
    amount: str = Field(
        max_length=41, description="Signed: positive credits, negative debits", examples=["-5.00"]
    )
    reason: Literal["external_topup", "refund", "correction", "gift"]
    description: str | None = Field(
        default=None, max_length=limits.adjustment_description_length_max
    )


class AdjustmentOut(BaseModel):
    id: str
    object: Literal["adjustment"] = "adjustment"
    customer_id: str
    asset: str
    amount: str
    reason: str
    description: str | None
    created_at: datetime


class BalanceSettings(RequestSchema):
    credit_limit: str | None = Field(default=None, max_length=40)
    low_balance_threshold: str | None = Field(
        default=None, max_length=40, description='Send "" to remove the threshold.'
    )


class BalanceOut(BaseModel):
    asset: str
    available: str = Field(description="Spendable now: posted less held, plus the credit limit")
    held: str
    posted: str
    credit_limit: str
    debt: str = Field(
        description="Usage beyond the funds and credit limit, unpaid; the next paid "
        "top-up repays it first"
    )
    low_balance_threshold: str | None
    grants: list[GrantOut]


class WalletOut(BaseModel):
    customer_id: str
    balances: list[BalanceOut]
