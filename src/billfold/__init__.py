"""Billfold: a real-time billing engine for AI and API products."""

__version__ = "0.1.0"

# The SDK only (httpx): importing `billfold` must not load the server stack.
from billfold.sdk import (
    APIConnectionError,
    APIStatusError,
    APITimeoutError,
    AsyncBillfold,
    Billfold,
    BillfoldError,
)

__all__ = [
    "APIConnectionError",
    "APIStatusError",
    "APITimeoutError",
    "AsyncBillfold",
    "Billfold",
    "BillfoldError",
    "__version__",
]
