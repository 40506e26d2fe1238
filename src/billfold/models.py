"""Imports every domain's tables so the metadata is complete (Alembic, tests)."""

from billfold.assets.models import Asset, ExchangeRate
from billfold.authorizations.models import Authorization, AuthorizationSplit
from billfold.catalog.models import Product, ProductVersion
from billfold.costs.models import (
    CostAlertState,
    CostSettings,
    EventCost,
    LlmPriceOverride,
    LlmPriceTable,
    Vendor,
)
from billfold.customers.models import Customer
from billfold.db.base import Base
from billfold.gateway.models import GatewayKey, GatewaySettlement
from billfold.idempotency.models import IdempotencyKey
from billfold.invoicing.models import (
    Coupon,
    CouponRedemption,
    CreditNote,
    Invoice,
    InvoiceLine,
    InvoiceSequence,
    InvoiceSettings,
    TaxRate,
)
from billfold.ledger.models import JournalEntry, LedgerAccount, Posting
from billfold.metering.models import Event, Meter, UsageRollup, UsageRollupDelta
from billfold.organizations.models import ApiKey, Organization
from billfold.realtime.models import EventFee, PeriodTotal
from billfold.subscriptions.models import Subscription
from billfold.wallets.models import Adjustment, Grant, Wallet
from billfold.webhooks.models import WebhookAttempt, WebhookDelivery, WebhookEndpoint, WebhookEvent

__all__ = [
    "Adjustment",
    "ApiKey",
    "Asset",
    "Authorization",
    "AuthorizationSplit",
    "Base",
    "CostAlertState",
    "CostSettings",
    "Coupon",
    "CouponRedemption",
    "CreditNote",
    "Customer",
    "Event",
    "EventCost",
    "EventFee",
    "ExchangeRate",
    "GatewayKey",
    "GatewaySettlement",
    "Grant",
    "IdempotencyKey",
    "Invoice",
    "InvoiceLine",
    "InvoiceSequence",
    "InvoiceSettings",
    "JournalEntry",
    "LedgerAccount",
    "LlmPriceOverride",
    "LlmPriceTable",
    "Meter",
    "Organization",
    "PeriodTotal",
    "Posting",
    "Product",
    "ProductVersion",
    "Subscription",
    "TaxRate",
    "UsageRollup",
    "UsageRollupDelta",
    "Vendor",
    "Wallet",
    "WebhookAttempt",
    "WebhookDelivery",
    "WebhookEndpoint",
    "WebhookEvent",
]
