"""Subscriptions (minimal: a customer on a product version) and entitlements.

Billing intervals, periods, invoices and proration come with invoicing.
"""

from billfold.subscriptions.models import Subscription

__all__ = ["Subscription"]
