"""A local Web Push service for tests: what a browser vendor's push server does, over TLS.

It accepts `POST /push/<id>` as RFC 8030 describes, checks the VAPID `Authorization: vapid
t=<JWT>, k=<key>` header (RFC 8292: the ES256 signature against `k`, `aud` = this service's
origin, `exp` in the future and at most a day away, `sub` the expected contact), reads `TTL` and
`Urgency`, and decrypts the aes128gcm body (RFC 8188 with the keys of RFC 8291) on its own with
`cryptography`, using the subscription's private key and auth secret, which it made itself.
Every push is recorded with its cleartext. An endpoint can be told to answer 404, 410, 429 or
500 instead of 201, and `faults` (tests/fakes/faults.py) makes pushes that pass the checks
fail at random, recorded by the message id in their payload.
"""

from __future__ import annotations

import asyncio
import base64
import datetime
import ipaddress
import json
import os
import re
import ssl
import struct
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web
from cryptography import x509
from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.x509.oid import NameOID

from conftest import wait_for
from fakes.faults import Faults, http_fault

MAX_BODY = 4096


def b64url(data: bytes) -> str:
    """URL-safe base64 without padding."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unb64url(text: str) -> bytes:
    """Decode URL-safe base64 with or without padding."""
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def make_certificate(directory: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 (and its key), valid for a day: (cert, key)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "push-service.crt", directory / "push-service.key"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return cert_path, key_path


@dataclass
class Browser:
    """One subscription's receiving side: the keys a browser keeps for it."""

    id: str
    private_key: ec.EllipticCurvePrivateKey
    auth: bytes

    @property
    def public_bytes(self) -> bytes:
        """The p256dh key: the uncompressed point."""
        return self.private_key.public_key().public_bytes(
            serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
        )


@dataclass
class Push:
    """One push the service accepted (or refused), as it arrived."""

    id: str
    status: int
    headers: Mapping[str, str]  # case-insensitive, as they arrived
    claims: dict[str, Any] | None = None
    vapid_key: str | None = None
    cleartext: bytes | None = None
    error: str | None = None
    peer: Any = None  # the client's (host, port): the same port twice means a reused connection

    @property
    def payload(self) -> Any:
        """The decrypted body as JSON."""
        assert self.cleartext is not None, self.error
        return json.loads(self.cleartext)


@dataclass
class PushService:
    """The service: subscriptions it made, how each should answer, and what it received."""

    subject: str | None = None  # the VAPID `sub` it insists on, if given
    browsers: dict[str, Browser] = field(default_factory=dict)
    answers: dict[str, tuple[int, dict[str, str]]] = field(default_factory=dict)
    pushes: list[Push] = field(default_factory=list)
    port: int = 0
    origin: str = ""
    cert_file: Path | None = None
    delay: float = 0.0  # seconds before each answer: a slow push service
    faults: Faults | None = None
    _runner: web.AppRunner | None = None

    def subscribe(self) -> dict[str, Any]:
        """A new subscription, exactly as the browser's `PushSubscription.toJSON()` gives it."""
        browser = Browser(os.urandom(9).hex(), ec.generate_private_key(ec.SECP256R1()), os.urandom(16))
        self.browsers[browser.id] = browser
        return {
            "endpoint": f"{self.origin}/push/{browser.id}",
            "expirationTime": None,
            "keys": {"p256dh": b64url(browser.public_bytes), "auth": b64url(browser.auth)},
        }

    def answer(self, subscription: dict[str, Any], status: int, **headers: str) -> None:
        """Make the endpoint of `subscription` answer `status` (with headers) from now on."""
        self.answers[subscription["endpoint"].rsplit("/", 1)[1]] = (status, headers)

    def received(self, subscription: dict[str, Any]) -> list[Push]:
        """The pushes that arrived for one subscription."""
        key = subscription["endpoint"].rsplit("/", 1)[1]
        return [push for push in self.pushes if push.id == key]

    async def wait_for(self, count: int, timeout: float = 10) -> list[Push]:
        """Wait until `count` pushes have arrived in all; returns them."""
        await wait_for(lambda: len(self.pushes) >= count, timeout, f"{count} pushes")
        return self.pushes

    async def start(self, directory: Path) -> None:
        """Serve over TLS on a free port of 127.0.0.1, with a certificate written to `directory`."""
        self.cert_file, key_file = make_certificate(directory)
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(self.cert_file, key_file)
        app = web.Application(client_max_size=64 * 1024)
        app.router.add_post("/push/{id}", self.handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0, ssl_context=context)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.origin = f"https://127.0.0.1:{self.port}"

    async def stop(self) -> None:
        """Stop serving."""
        if self._runner is not None:
            await self._runner.cleanup()

    # the push endpoint
    async def handle(self, request: web.Request) -> web.Response:
        """`POST /push/<id>`: check, decrypt, record, answer."""
        key = request.match_info["id"]
        body = await request.read()
        push = Push(
            key,
            201,
            request.headers.copy(),
            peer=request.transport and request.transport.get_extra_info("peername"),
        )
        try:
            status, headers = self._check(request, key, body, push)
        except PushRefused as exc:
            status, headers = exc.status, {}
            push.error = str(exc)
        push.status = status
        self.pushes.append(push)
        if status == 201 and self.faults is not None:
            kind, wait = self.faults.decide(push.payload.get("id", key))
            if kind is not None:
                push.status = {"refused": 400, "rate_limited": 429}.get(kind, 503)
                return await http_fault(request, kind, wait, self.faults.hang, _fault_answer)
        await asyncio.sleep(self.delay)  # a sleep on purpose: a slow provider when a test asks for one
        if status == 201:
            headers = {"Location": f"{self.origin}/message/{len(self.pushes)}", **headers}
        return web.Response(status=status, headers=headers)

    def _check(self, request: web.Request, key: str, body: bytes, push: Push) -> tuple[int, dict[str, str]]:
        browser = self.browsers.get(key)
        if browser is None:
            raise PushRefused(404, "no such subscription")
        push.claims, push.vapid_key = self._vapid(request.headers.get("Authorization", ""))
        ttl = request.headers.get("TTL")
        if ttl is None or not ttl.isdigit():
            raise PushRefused(400, "TTL header missing")
        urgency = request.headers.get("Urgency", "normal")
        if urgency not in ("very-low", "low", "normal", "high"):
            raise PushRefused(400, f"bad Urgency {urgency!r}")
        if len(body) > MAX_BODY:
            raise PushRefused(413, f"body of {len(body)} bytes")
        if request.headers.get("Content-Encoding") != "aes128gcm":
            raise PushRefused(415, "not aes128gcm")
        push.cleartext = decrypt(body, browser.private_key, browser.auth)
        return self.answers.get(key, (201, {}))

    def _vapid(self, header: str) -> tuple[dict[str, Any], str]:
        """Verify a `vapid t=<JWT>, k=<key>` header (RFC 8292); returns the claims and the key."""
        match = re.fullmatch(r"vapid\s+(.*)", header.strip(), re.IGNORECASE)
        if not match:
            raise PushRefused(401, "no vapid Authorization header")
        params = dict(part.strip().split("=", 1) for part in match.group(1).split(",") if "=" in part)
        token, public = params.get("t", ""), params.get("k", "")
        try:
            head, claims_part, signature_part = token.split(".")
            header_json = json.loads(unb64url(head))
            claims = json.loads(unb64url(claims_part))
            signature = unb64url(signature_part)
            point = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), unb64url(public))
        except ValueError as exc:
            raise PushRefused(401, f"malformed VAPID token: {exc}") from None
        if header_json.get("alg") != "ES256" or len(signature) != 64:
            raise PushRefused(401, "the VAPID token is not ES256")
        der = encode_dss_signature(
            int.from_bytes(signature[:32], "big"), int.from_bytes(signature[32:], "big")
        )
        try:
            point.verify(der, f"{head}.{claims_part}".encode(), ec.ECDSA(hashes.SHA256()))
        except InvalidSignature:
            raise PushRefused(403, "the VAPID signature does not verify") from None
        if claims.get("aud") != self.origin:
            raise PushRefused(403, f"aud {claims.get('aud')!r} is not {self.origin}")
        exp = claims.get("exp")
        if not isinstance(exp, int) or not time.time() < exp <= time.time() + 86400:
            raise PushRefused(403, f"exp {exp!r} is not within the next 24 hours")
        if self.subject is not None and claims.get("sub") != self.subject:
            raise PushRefused(403, f"sub {claims.get('sub')!r} is not {self.subject!r}")
        return claims, public


def _fault_answer(status: int, retry_after: int | None) -> web.Response:
    """A push service's answer to a fault (RFC 8030 says no more than the status and Retry-After)."""
    return web.Response(status=status, headers={"Retry-After": str(retry_after)} if retry_after else {})


class PushRefused(Exception):
    """The push service refuses a push with this status."""

    def __init__(self, status: int, text: str):
        super().__init__(text)
        self.status = status


def _hkdf(salt: bytes, ikm: bytes, info: bytes, length: int) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=length, salt=salt, info=info).derive(ikm)


def decrypt(body: bytes, receiver: ec.EllipticCurvePrivateKey, auth: bytes) -> bytes:
    """Decrypt an aes128gcm Web Push message (RFC 8188 framing, RFC 8291 keys)."""
    if len(body) < 21:
        raise PushRefused(400, "body too short for an aes128gcm header")
    salt, record_size, id_length = body[:16], struct.unpack("!L", body[16:20])[0], body[20]
    sender_public = body[21 : 21 + id_length]
    content = body[21 + id_length :]
    if id_length != 65 or record_size < 18:
        raise PushRefused(400, "bad aes128gcm header")
    sender = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), sender_public)
    receiver_public = receiver.public_key().public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )
    shared = receiver.exchange(ec.ECDH(), sender)
    ikm = _hkdf(auth, shared, b"WebPush: info\x00" + receiver_public + sender_public, 32)
    key = _hkdf(salt, ikm, b"Content-Encoding: aes128gcm\x00", 16)
    nonce = _hkdf(salt, ikm, b"Content-Encoding: nonce\x00", 12)
    cleartext = b""
    records = [content[i : i + record_size] for i in range(0, len(content), record_size)]
    for index, record in enumerate(records):
        iv = (int.from_bytes(nonce, "big") ^ index).to_bytes(12, "big")
        try:
            plain = AESGCM(key).decrypt(iv, record, None)
        except InvalidTag:
            raise PushRefused(400, f"record {index} does not decrypt") from None
        plain = plain.rstrip(b"\x00")
        last = index == len(records) - 1
        if not plain or plain[-1:] != (b"\x02" if last else b"\x01"):
            raise PushRefused(400, f"record {index} has a bad padding delimiter")
        cleartext += plain[:-1]
    return cleartext
