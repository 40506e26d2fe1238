"""Imports every domain's tables so the metadata is complete (Alembic, tests)."""

from billfold.db.base import Base
from billfold.idempotency.models import IdempotencyKey
from billfold.organizations.models import ApiKey, Organization
from billfold.webhooks.models import WebhookAttempt, WebhookDelivery, WebhookEndpoint, WebhookEvent

__all__ = [
    "ApiKey",
    "Base",
    "IdempotencyKey",
    "Organization",
    "WebhookAttempt",
    "WebhookDelivery",
    "WebhookEndpoint",
    "WebhookEvent",
]
