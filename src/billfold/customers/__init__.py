"""Customers, and `resolve_customer` for every domain that takes a customer reference."""

from billfold.customers.models import Customer
from billfold.customers.service import resolve_customer

__all__ = ["Customer", "resolve_customer"]
