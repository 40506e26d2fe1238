"""Billed model calls: `billfold.llm.wrap(client, customer=..., tags=...)`.

Works with the official `openai` and `anthropic` clients (install
`billfold[llm]`), sync and async, streamed or not.
"""

from billfold.llm._billing import AuthorizationDeclined
from billfold.llm._estimate import OUTPUT_TOKENS_DEFAULT, OUTPUT_TOKENS_MAX, Estimate
from billfold.llm._wrap import NotBilled, wrap

__all__ = [
    "OUTPUT_TOKENS_DEFAULT",
    "OUTPUT_TOKENS_MAX",
    "AuthorizationDeclined",
    "Estimate",
    "NotBilled",
    "wrap",
]
