"""Catalog: products with immutable versions holding prices and features.

`definitions` validates and canonicalises a version's prices and features;
`simulate` rates events under a version's usage prices without writing.
"""

from billfold.catalog.models import Product, ProductVersion

__all__ = ["Product", "ProductVersion"]
