"""Prefixed, sortable identifiers (`cus_…`, `we_…`).

A ULID-like body: 48 bits of milliseconds then 80 random bits, Crockford
base32. Ids created later sort later, which keeps cursor pagination and
B-tree inserts cheap.
"""

from __future__ import annotations

import secrets
import time

_ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz"


def _encode(value: int, length: int) -> str:
    chars = []
    for _ in range(length):
        chars.append(_ALPHABET[value & 31])
        value >>= 5
    return "".join(reversed(chars))


def new_id(prefix: str) -> str:
    assert prefix.isalnum(), prefix
    assert prefix.islower(), prefix
    millis = time.time_ns() // 1_000_000
    body = (millis << 80) | secrets.randbits(80)
    return f"{prefix}_{_encode(body, 26)}"
