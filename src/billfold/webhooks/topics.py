"""Every webhook topic Billfold emits. Endpoints subscribe to these, to a
`prefix.*` family, or to `*`."""

from __future__ import annotations

import re

WEBHOOK_TEST = "webhook.test"

WALLET_BALANCE_LOW = "wallet.balance_low"
WALLET_BALANCE_RECOVERED = "wallet.balance_recovered"

SUBSCRIPTION_CREATED = "subscription.created"
SUBSCRIPTION_UPDATED = "subscription.updated"
SUBSCRIPTION_CANCELED = "subscription.canceled"
INVOICE_CREATED = "invoice.created"
INVOICE_FINALIZED = "invoice.finalized"
INVOICE_PAID = "invoice.paid"
INVOICE_VOIDED = "invoice.voided"
CREDIT_NOTE_CREATED = "credit_note.created"
#: Usage took a wallet past its funds and credit limit: the rest is debt.
WALLET_OVERDRAWN = "wallet.overdrawn"
#: A customer's margin over the rolling window fell below the organization's threshold.
CUSTOMER_MARGIN_LOW = "customer.margin_low"
#: A customer entered the top 5 % of customers by cost over the rolling window.
CUSTOMER_COST_TOP_PERCENTILE = "customer.cost_top_percentile"

KNOWN: frozenset[str] = frozenset(
    {
        WEBHOOK_TEST,
        WALLET_BALANCE_LOW,
        WALLET_BALANCE_RECOVERED,
        WALLET_OVERDRAWN,
        SUBSCRIPTION_CREATED,
        SUBSCRIPTION_UPDATED,
        SUBSCRIPTION_CANCELED,
        INVOICE_CREATED,
        INVOICE_FINALIZED,
        INVOICE_PAID,
        INVOICE_VOIDED,
        CREDIT_NOTE_CREATED,
        CUSTOMER_MARGIN_LOW,
        CUSTOMER_COST_TOP_PERCENTILE,
    }
)

_FAMILY_RE = re.compile(r"^[a-z0-9_]+(\.[a-z0-9_]+)*\.\*$")


def is_valid_subscription(topic: str) -> bool:
    if topic == "*" or topic in KNOWN:
        return True
    if _FAMILY_RE.match(topic):
        prefix = topic[:-1]
        return any(known.startswith(prefix) for known in KNOWN)
    return False


def matches(subscriptions: list[str], topic: str) -> bool:
    for subscription in subscriptions:
        if subscription in ("*", topic):
            return True
        if subscription.endswith(".*") and topic.startswith(subscription[:-1]):
            return True
    return False
