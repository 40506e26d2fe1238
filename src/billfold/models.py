"""Imports every domain's tables so the metadata is complete (Alembic, tests)."""

from billfold.assets.models import Asset, ExchangeRate
from billfold.authorizations.models import Authorization, AuthorizationSplit
from billfold.customers.models import Customer
from billfold.db.base import Base
from billfold.idempotency.models import IdempotencyKey
from billfold.ledger.models import JournalEntry, LedgerAccount, Posting
from billfold.organizations.models import ApiKey, Organization
from billfold.wallets.models import Adjustment, Grant, Wallet
from billfold.webhooks.models import WebhookAttempt, WebhookDelivery, WebhookEndpoint, WebhookEvent

__all__ = [
    "Adjustment",
    "ApiKey",
    "Asset",
    "Authorization",
    "AuthorizationSplit",
    "Base",
    "Customer",
    "ExchangeRate",
    "Grant",
    "IdempotencyKey",
    "JournalEntry",
    "LedgerAccount",
    "Organization",
    "Posting",
    "Wallet",
    "WebhookAttempt",
    "WebhookDelivery",
    "WebhookEndpoint",
    "WebhookEvent",
]
