"""Tokens: signed ones for links in messages, sealed ones for linking a chat or a browser.

A signed token is `<value>.<signature>`: the value is an opaque id (a message id, a link
index), never an email or phone; the signature is an HMAC-SHA256 of the purpose and the value
with the installation's `secret`, compared in constant time, so a token made for one message or
purpose cannot be turned into another. Signed tokens do not expire: an unsubscribe link must
work for as long as the email is kept.

A sealed token names a customer, for the public endpoints where whoever holds it may attach
something to that customer: a Telegram chat (`/start <token>`) or a browser's push subscription
(`POST /push/subscribe`). Its purpose is the name of the channel that uses it, any channel a
plugin registers. It reveals nothing (the customer id is encrypted), it cannot be
forged or altered (96-bit tag), it is only good for its purpose, and it expires
(`TOKEN_LIFETIME`, 7 days, unless the caller asks for less). It is URL-safe base64 without
padding, so it fits Telegram's 64-character `start` parameter for ids up to 31 bytes or a UUID.

The construction is SIV (deterministic authenticated encryption) on HMAC-SHA256 alone, so a
shop's server in any language can make one. With the secret's UTF-8 bytes as the key, `k_mac`
is the HMAC-SHA256 of `boomerang sealed token\\0<purpose>\\0mac` and `k_enc` that of
`...\\0enc` (`\\0` a zero byte), and

    plaintext = issued-at (4 bytes, unix seconds, big-endian) + kind (1 byte) + id
    tag       = HMAC-SHA256(k_mac, plaintext)[:12]
    keystream = HMAC-SHA256(k_enc, tag + 00000000) + HMAC-SHA256(k_enc, tag + 00000001) + ...
    token     = base64url(tag + (plaintext XOR keystream)), without padding

where kind 0 means the id as UTF-8 and kind 1 a lowercase UUID as its 16 bytes, and the
counters are 4 bytes big-endian. A token is good from 5 minutes before `issued-at` (clocks
differ) until 7 days after it.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
import time
import uuid
from datetime import datetime, timedelta

PURPOSES = ("unsubscribe", "open", "click")
# A sealed token's purpose is a channel's name (`push`, `telegram`, a plugin's): the purpose is
# part of both keys, so a token made for one channel is worthless to another.
_SEALED_PURPOSE = re.compile(r"^[a-z][a-z0-9_]{0,31}$")
TOKEN_LIFETIME = timedelta(days=7)
CLOCK_SKEW = 300  # seconds a token may seem to come from the future (the shop's clock may run ahead)
TAG = 12  # bytes of the sealed token's tag: 96 bits
SEALED_OVERHEAD = TAG + 5  # bytes a sealed token adds to the id: the tag, issued-at and kind
_TEXT, _UUID = 0, 1
_UUID_TEXT = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
_BASE64URL = re.compile(r"^[A-Za-z0-9_-]+$")


def b64url(data: bytes) -> str:
    """URL-safe base64 without padding (RFC 4648 section 5), as tokens and Web Push keys use it."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64url_decode(text: str) -> bytes:
    """Decode URL-safe base64 with or without padding; raises ValueError if it is not that."""
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _signature(secret: str, purpose: str, value: str) -> str:
    digest = hmac.new(secret.encode(), f"{purpose}\0{value}".encode(), hashlib.sha256).digest()
    return b64url(digest[:18])


def sign(secret: str, purpose: str, value: str) -> str:
    """A token carrying `value` for `purpose` (one of PURPOSES)."""
    if purpose not in PURPOSES:
        hint = f"; {purpose} tokens are made by seal()" if is_sealed_purpose(purpose) else ""
        raise ValueError(f"unknown token purpose {purpose!r}{hint}")
    return f"{b64url(value.encode())}.{_signature(secret, purpose, value)}"


def verify(secret: str, purpose: str, token: str) -> str | None:
    """The value of a genuine token for `purpose`, or None for anything else."""
    if not token.isascii():  # ours are; a request's byte that is not UTF-8 arrives as a surrogate
        return None
    encoded, _, signature = token.partition(".")
    try:
        value = b64url_decode(encoded).decode()
    except (ValueError, UnicodeDecodeError):
        return None
    expected = _signature(secret, purpose, value)
    return value if hmac.compare_digest(signature.encode(), expected.encode()) else None


def bearer(authorization: str) -> str | None:
    """The token of an `Authorization: Bearer <token>` header's value, or None if it carries none.

    Endpoints take their credential from this header, not from the body, so that they can refuse
    a caller without one before reading (or parsing) anything the caller sent. A token is ASCII
    (RFC 6750); anything else is no token, so that no endpoint compares undecodable text.
    """
    scheme, _, token = authorization.partition(" ")
    token = token.strip()
    return token if scheme.lower() == "bearer" and token and token.isascii() else None


# sealed tokens
def is_sealed_purpose(purpose: str) -> bool:
    """Whether `purpose` names a sealed token's use: a channel's name, not a signed purpose."""
    return purpose not in PURPOSES and bool(_SEALED_PURPOSE.match(purpose))


def _key(secret: str, purpose: str, use: str) -> bytes:
    label = f"boomerang sealed token\0{purpose}\0{use}".encode()
    return hmac.new(secret.encode(), label, hashlib.sha256).digest()


def _keystream_xor(key: bytes, tag: bytes, data: bytes) -> bytes:
    """`data` XOR the HMAC-SHA256 counter-mode keystream for `tag` (its own inverse)."""
    stream = b"".join(
        hmac.new(key, tag + block.to_bytes(4, "big"), hashlib.sha256).digest()
        for block in range((len(data) + 31) // 32)
    )
    return bytes(a ^ b for a, b in zip(data, stream, strict=False))


def seal(secret: str, purpose: str, customer_id: str, *, now: datetime | None = None) -> str:
    """A sealed token for `purpose` (a channel's name) naming `customer_id`, made `now`."""
    if not is_sealed_purpose(purpose):
        raise ValueError(f"unknown sealed token purpose {purpose!r}")
    if not customer_id:
        raise ValueError("a sealed token needs a customer id")
    issued = int(now.timestamp() if now is not None else time.time())
    if _UUID_TEXT.match(customer_id):
        body = bytes([_UUID]) + uuid.UUID(customer_id).bytes
    else:
        body = bytes([_TEXT]) + customer_id.encode()
    plaintext = issued.to_bytes(4, "big") + body
    tag = hmac.new(_key(secret, purpose, "mac"), plaintext, hashlib.sha256).digest()[:TAG]
    return b64url(tag + _keystream_xor(_key(secret, purpose, "enc"), tag, plaintext))


def unseal(
    secret: str,
    purpose: str,
    token: str,
    *,
    max_age: timedelta = TOKEN_LIFETIME,
    now: datetime | None = None,
) -> str | None:
    """The customer id of a genuine sealed token for `purpose` made within `max_age`, else None."""
    if not is_sealed_purpose(purpose) or not _BASE64URL.match(token) or len(token) > 4096:
        return None
    try:
        raw = b64url_decode(token)
    except (ValueError, binascii.Error):
        return None
    if len(raw) < SEALED_OVERHEAD:
        return None
    tag, ciphertext = raw[:TAG], raw[TAG:]
    plaintext = _keystream_xor(_key(secret, purpose, "enc"), tag, ciphertext)
    expected = hmac.new(_key(secret, purpose, "mac"), plaintext, hashlib.sha256).digest()[:TAG]
    if not hmac.compare_digest(tag, expected):
        return None
    issued = int.from_bytes(plaintext[:4], "big")
    moment = now.timestamp() if now is not None else time.time()
    if not -CLOCK_SKEW <= moment - issued <= max_age.total_seconds():
        return None
    kind, body = plaintext[4], plaintext[5:]
    if kind == _UUID and len(body) == 16:
        return str(uuid.UUID(bytes=body))
    if kind == _TEXT and body:
        try:
            return body.decode()
        except UnicodeDecodeError:
            return None
    return None
