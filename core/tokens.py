"""Signed tokens for links in messages: unsubscribe, open pixel, click redirect, linking.

A token is `<value>.<signature>`: the value is an opaque id (a message id, a customer id,
a link index), never an email or phone; the signature is an HMAC-SHA256 of the purpose and
the value with the installation's `secret`, compared in constant time, so a token made for
one message or purpose cannot be turned into another.
"""

from __future__ import annotations

import base64
import hashlib
import hmac

PURPOSES = ("unsubscribe", "open", "click", "push", "telegram")


def _encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _signature(secret: str, purpose: str, value: str) -> str:
    digest = hmac.new(secret.encode(), f"{purpose}\0{value}".encode(), hashlib.sha256).digest()
    return _encode(digest[:18])


def sign(secret: str, purpose: str, value: str) -> str:
    """A token carrying `value` for `purpose` (one of PURPOSES)."""
    if purpose not in PURPOSES:
        raise ValueError(f"unknown token purpose {purpose!r}")
    return f"{_encode(value.encode())}.{_signature(secret, purpose, value)}"


def verify(secret: str, purpose: str, token: str) -> str | None:
    """The value of a genuine token for `purpose`, or None for anything else."""
    encoded, _, signature = token.partition(".")
    try:
        value = _decode(encoded).decode()
    except (ValueError, UnicodeDecodeError):
        return None
    expected = _signature(secret, purpose, value)
    return value if hmac.compare_digest(signature.encode(), expected.encode()) else None
