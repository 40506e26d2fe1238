"""Standard Webhooks signatures: `v1,<base64 HMAC-SHA256 of "id.timestamp.body">`."""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets

SECRET_PREFIX = "whsec_"  # noqa: S105 - the prefix of every secret, not a secret


def new_secret(size_bytes: int) -> str:
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(size_bytes)).decode()


def _key(secret: str) -> bytes:
    assert secret.startswith(SECRET_PREFIX)
    return base64.b64decode(secret[len(SECRET_PREFIX) :])


def sign(secret: str, message_id: str, timestamp_s: int, body: bytes) -> str:
    signed = f"{message_id}.{timestamp_s}.".encode() + body
    digest = hmac.new(_key(secret), signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def signature_header(
    secrets_in_use: list[str], message_id: str, timestamp_s: int, body: bytes
) -> str:
    """All signatures, space-separated, so receivers on either secret of a rotation verify."""
    assert secrets_in_use
    return " ".join(sign(secret, message_id, timestamp_s, body) for secret in secrets_in_use)
