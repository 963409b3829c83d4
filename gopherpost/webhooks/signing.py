# -*- test-case-name: tests.test_webhook_signing -*-
"""
Standard Webhooks signatures (U{https://www.standardwebhooks.com/}).

A secret is written C{whsec_<base64 of the key>}.  Each request carries
C{webhook-id} (stable across retries: receivers deduplicate on it),
C{webhook-timestamp} (seconds since the epoch, when the request is sent)
and C{webhook-signature: v1,<base64 HMAC-SHA256(key, id.timestamp.body)>}.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac

__all__ = ["SECRET_PREFIX", "MIN_KEY_BYTES", "parseSecret", "signature", "signedHeaders"]

#: How a Standard Webhooks secret starts.
SECRET_PREFIX = "whsec_"
#: The shortest key accepted (the specification recommends 24 to 64 bytes).
MIN_KEY_BYTES = 24


def parseSecret(secret: str) -> bytes:
    """
    The key in a C{whsec_<base64>} secret (missing base64 padding is
    tolerated, as the reference library does).

    @raise ValueError: with a one-line reason, if C{secret} is not one.
    """
    if not secret.startswith(SECRET_PREFIX):
        raise ValueError(
            f"must be {SECRET_PREFIX}<base64 of at least {MIN_KEY_BYTES} random bytes>"
            f" (e.g. python3 -c 'import base64, secrets;"
            f' print("{SECRET_PREFIX}" + base64.b64encode(secrets.token_bytes(32)).decode())\')'
        )
    encoded = secret[len(SECRET_PREFIX) :]
    encoded += "=" * (-len(encoded) % 4)
    try:
        key = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError(f"the part after {SECRET_PREFIX} is not base64") from None
    if len(key) < MIN_KEY_BYTES:
        raise ValueError(f"the key is {len(key)} bytes; use at least {MIN_KEY_BYTES} random bytes")
    return key


def signature(key: bytes, webhookId: str, timestamp: int, body: bytes) -> str:
    """
    The C{webhook-signature} value: C{v1,<base64 HMAC-SHA256>} of
    C{id.timestamp.body}.
    """
    signed = b"%s.%d.%s" % (webhookId.encode("utf-8"), timestamp, body)
    digest = hmac.new(key, signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode("ascii")


def signedHeaders(key: bytes, webhookId: str, timestamp: int, body: bytes) -> dict[str, str]:
    """
    The three Standard Webhooks headers of one request.
    """
    return {
        "webhook-id": webhookId,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": signature(key, webhookId, timestamp, body),
    }
