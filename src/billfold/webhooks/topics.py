"""Every webhook topic Billfold emits. Endpoints subscribe to these, to a
`prefix.*` family, or to `*`."""

from __future__ import annotations

import re

WEBHOOK_TEST = "webhook.test"

WALLET_BALANCE_LOW = "wallet.balance_low"
WALLET_BALANCE_RECOVERED = "wallet.balance_recovered"
#: Usage took a wallet past its funds and credit limit: the rest is debt.
WALLET_OVERDRAWN = "wallet.overdrawn"

KNOWN: frozenset[str] = frozenset(
    {WEBHOOK_TEST, WALLET_BALANCE_LOW, WALLET_BALANCE_RECOVERED, WALLET_OVERDRAWN}
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
