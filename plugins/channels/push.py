"""The web push channel: notifications to browsers through their push services (RFC 8030).

Configured under `channels.push`:

```yaml
channels:
  push: {vapid_private_key: ./vapid.pem, subject: "mailto:ops@shop.example", ttl: 86400, urgency: normal}
```

`vapid_private_key` is a P-256 private key in PEM (made by `boomerang webpush-keys`), relative
to the config file; `subject` is a `mailto:` or `https:` contact for the push services; `ttl`
(seconds or a duration such as `1d`) is how long a push service keeps a message for an
offline browser; `urgency` is `very-low`, `low`, `normal` or `high`. Optional: `timeout`
(seconds per request, default 10) and `ca_file` (extra CA certificates to trust, for staging).

Endpoints are only ever those of the known push services (`KNOWN_PUSH_HOSTS`: Google's FCM,
Mozilla, Apple, Microsoft) and of the hosts listed in `allowed_hosts` (names, or `"*.domain"`
for its subdomains); never an IP address, and never a name that resolves to a loopback, link-local
or private address. `allow_private_endpoints: true` lifts that last rule, for a staging push
service on a private network (and the tests' own on 127.0.0.1), whose host must still be
listed in `allowed_hosts`. A customer keeps the newest `MAX_PUSH_SUBSCRIPTIONS` (10).

A message goes to every subscription of the customer as an encrypted (aes128gcm) JSON payload
`{"title", "body", "url", "icon", "id", "click"}` under 4 KB, signed with VAPID (RFC 8292). A
subscription the push service calls gone (404, 410) is forgotten by the engine. Web push
(RFC 8030) has no idempotency key: a message sent again after a crash (transactional only) may
show twice (the payload's `id` is the same both times).

Routes: `GET /push/sw.js` (the service worker), `GET /push/key` (the public key the browser
subscribes with), `POST /push/subscribe` (`{"subscription": ...}` with `Authorization: Bearer
<token>`, the token sealed for a customer id with `boomerang.tokens.seal(secret, "push",
customer_id)`, good for 7 days) and `POST /push/click` (click reports, `Authorization: Bearer
<click token>` and no body). Both check the token in the header before they read the body, so
whoever has no token cannot make the daemon read, let alone parse, what they send. A
subscription moves to the customer its token names, away from whoever had that browser before;
it never merges two customers.
"""

from __future__ import annotations

import asyncio
import binascii
import hashlib
import importlib
import ipaddress
import json
import logging
import os
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import click
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from py_vapid import Vapid, VapidException

from boomerang import hookimpl
from boomerang.kinds import Channel, Ingest, Route, SendsInFlight
from boomerang.plugin_api import (
    MAX_PUSH_SUBSCRIPTIONS,
    BodyError,
    Config,
    Customer,
    Delivery,
    DeliveryStatus,
    EventError,
    Message,
    SettingsCheck,
    b64url,
    b64url_decode,
    bearer,
    did_you_mean,
    parse_duration,
    parse_event,
    read_json,
    retry_after,
    sign,
    to_iso,
    unseal,
    verify,
)

if TYPE_CHECKING:
    from types import ModuleType

    import aiohttp
    from aiohttp import web

log = logging.getLogger(__name__)

SETTINGS = {
    "vapid_private_key",
    "subject",
    "ttl",
    "urgency",
    "timeout",
    "ca_file",
    "allowed_hosts",
    "allow_private_endpoints",
}
# The hosts of the browsers' push services; `*.` stands for any subdomain.
KNOWN_PUSH_HOSTS = (
    "fcm.googleapis.com",  # Chrome, Opera, Samsung Internet and other Chromium browsers
    "*.push.services.mozilla.com",  # Firefox: updates.push.services.mozilla.com
    "*.push.apple.com",  # Safari: web.push.apple.com
    "*.notify.windows.com",  # Edge: wns2-*.notify.windows.com
)
URGENCIES = ("very-low", "low", "normal", "high")
MAX_TTL = 28 * 86400
# A push service takes at most 4096 bytes of body: 86 bytes of aes128gcm header, a 16-byte tag
# and the record's delimiter leave 3993 bytes for the JSON payload.
MAX_PAYLOAD = 4096 - 86 - 16 - 1
MAX_REQUEST = 16 * 1024
MAX_ENDPOINT = 2048
# A DNS name whose last label starts with a letter: no IP address in any spelling (127.1, 0x7f.1,
# 2130706433), no bare `localhost`.
_HOST_NAME = re.compile(r"^(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]([a-z0-9-]*[a-z0-9])?$")
_SUBJECT = re.compile(r"^(mailto:[^@\s]+@[^@\s]+|https://[^/\s:]+)$", re.IGNORECASE)
# The service worker, shipped beside this module as package data; `/push/sw.js` fills in the
# daemon's public URL and key.
SERVICE_WORKER = (resources.files(__package__) / "push_sw.js").read_text(encoding="utf-8")
CORS = {
    "Access-Control-Allow-Origin": "*",
    "Access-Control-Allow-Methods": "GET, POST, OPTIONS",
    "Access-Control-Allow-Headers": "Authorization, Content-Type",
    "Access-Control-Max-Age": "86400",
}


def public_key_of(private_key: ec.EllipticCurvePrivateKey) -> str:
    """The application server key the browser subscribes with: the uncompressed point, base64url."""
    point = private_key.public_key().public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )
    return b64url(point)


def load_private_key(path: Path) -> ec.EllipticCurvePrivateKey:
    """Read a P-256 private key from a PEM file; raises ValueError saying what is wrong."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ValueError(f"{path} does not exist; create a key pair with `boomerang webpush-keys`") from None
    except OSError as exc:
        raise ValueError(f"cannot read {path}: {exc.strerror}") from None
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"{path} is not an unencrypted PEM private key ({exc})") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey) or key.curve.name != "secp256r1":
        raise ValueError(f"{path} is not a P-256 (prime256v1) key, which VAPID needs")
    return key


def subscription_problem(value: Any) -> str | None:
    """What is wrong with a `PushSubscription.toJSON()` object, or None if it is usable."""
    if not isinstance(value, dict):
        return "the subscription must be a JSON object as PushSubscription.toJSON() gives it"
    endpoint = value.get("endpoint")
    if not isinstance(endpoint, str) or not endpoint.startswith("https://") or not urlsplit(endpoint).netloc:
        return "'endpoint' must be the push service's https:// URL"
    if len(endpoint) > MAX_ENDPOINT:
        return f"'endpoint' is longer than {MAX_ENDPOINT} characters"
    keys = value.get("keys")
    if not isinstance(keys, dict):
        return "'keys' with p256dh and auth is required"
    try:
        p256dh = b64url_decode(keys.get("p256dh") or "")
        auth = b64url_decode(keys.get("auth") or "")
    except (ValueError, TypeError, binascii.Error):
        return "'keys.p256dh' and 'keys.auth' must be URL-safe base64"
    try:
        ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), p256dh)
    except ValueError:
        return "'keys.p256dh' is not a P-256 public key (65 bytes, uncompressed)"
    if len(auth) != 16:
        return "'keys.auth' must be 16 bytes"
    return None


def _is_ip_address(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _host_matches(host: str, pattern: str) -> bool:
    return host.endswith(pattern[1:]) if pattern.startswith("*.") else host == pattern


def endpoint_problem(
    endpoint: str, allowed_hosts: tuple[str, ...], allow_private: bool = False
) -> str | None:
    """What makes an endpoint one Boomerang will not POST to, or None if it is a push service's."""
    split = urlsplit(endpoint)
    if split.username is not None or split.password is not None:
        return "'endpoint' must not carry a user name or password"
    try:
        split.port  # noqa: B018 - reading it checks it
    except ValueError:
        return "'endpoint' has a port that is not a number"
    host = (split.hostname or "").rstrip(".")
    if not allow_private and not _HOST_NAME.match(host):
        what = "an IP address" if _is_ip_address(host) or not re.search("[a-z]", host) else "not a host name"
        return f"'endpoint' host {host} is {what}; only the push services' own hosts are accepted"
    if not any(_host_matches(host, pattern) for pattern in (*KNOWN_PUSH_HOSTS, *allowed_hosts)):
        return (
            f"'endpoint' host {host} is not a known push service "
            "(add it to channels.push.allowed_hosts if you run it)"
        )
    return None


def clean_subscription(value: dict[str, Any]) -> dict[str, Any]:
    """Only the parts of a subscription that sending needs: endpoint, expirationTime, keys."""
    return {
        "endpoint": value["endpoint"],
        "expirationTime": value.get("expirationTime"),
        "keys": {"p256dh": value["keys"]["p256dh"], "auth": value["keys"]["auth"]},
    }


def build_payload(message: Message, click_token: str | None) -> bytes | None:
    """The notification as compact JSON, the body shortened to fit; None if it cannot fit."""
    extra = message.extra or {}
    fields: dict[str, Any] = {
        "title": str(extra.get("title") or ""),
        "body": message.body or "",
        "url": str(extra.get("url") or ""),
    }
    if extra.get("icon"):
        fields["icon"] = str(extra["icon"])
    fields["id"] = message.id
    if click_token:
        fields["click"] = click_token

    def encoded(body: str, title: str) -> bytes:
        text = json.dumps({**fields, "body": body, "title": title}, ensure_ascii=False, separators=(",", ":"))
        return text.encode()

    whole = encoded(fields["body"], fields["title"])
    if len(whole) <= MAX_PAYLOAD:
        return whole
    for name in ("body", "title"):
        text = fields[name]
        low, high = 0, len(text)  # the longest prefix that fits, found by halving
        while low < high:
            middle = (low + high + 1) // 2
            shortened = text[:middle].rstrip() + "…"
            trial = {**fields, name: shortened}
            if len(encoded(trial["body"], trial["title"])) <= MAX_PAYLOAD:
                low = middle
            else:
                high = middle - 1
        fields[name] = text[:low].rstrip() + "…" if low else ""
        result = encoded(fields["body"], fields["title"])
        if len(result) <= MAX_PAYLOAD:
            return result
    return None


@dataclass(frozen=True)
class Attempt:
    """What one push service said about one subscription."""

    endpoint: str
    outcome: str  # sent | gone | retry | failed
    detail: str
    retry_after: float | None = None
    location: str | None = None


def _host(endpoint: str) -> str:
    return urlsplit(endpoint).netloc or "?"


class PushChannel(Channel):
    """Sends each message to every push subscription of the customer."""

    name = "push"
    extensions = ("html", "txt")
    front_matter = MappingProxyType({"title": str, "url": str, "icon": str})
    address_fields = ("push_subscriptions",)

    def __init__(
        self,
        private_key: ec.EllipticCurvePrivateKey,
        subject: str,
        *,
        ttl: int = 86400,
        urgency: str = "normal",
        timeout: float = 10.0,
        ca_file: Path | None = None,
        secret: str | None = None,
        public_url: str = "",
        allowed_hosts: tuple[str, ...] = (),
        allow_private_endpoints: bool = False,
    ):
        self.vapid = Vapid(private_key=private_key)
        self.public_key = public_key_of(private_key)
        self.subject = subject
        self.ttl = ttl
        self.urgency = urgency
        self.timeout = timeout  # seconds per request
        self.ca_file = ca_file
        self.secret = secret
        self.public_url = public_url.rstrip("/")
        self.allowed_hosts = allowed_hosts  # besides KNOWN_PUSH_HOSTS
        self.allow_private_endpoints = allow_private_endpoints
        self._session: aiohttp.ClientSession | None = None
        self._sends = SendsInFlight()
        self._http: ModuleType | None = None

    def prepare(self) -> None:
        """Load aiohttp and pywebpush (which brings requests and urllib3 along) while the
        project loads, not on the event loop in the middle of the first send; `boomerang
        check`, which only constructs the channel, never loads them."""
        self.http()

    def http(self) -> ModuleType:
        """`boomerang.plugins.channels.push_http`, imported once."""
        if self._http is None:
            self._http = importlib.import_module("boomerang.plugins.channels.push_http")
        return self._http

    # the customer's address: their subscriptions
    def unusable(self, subscription: Any) -> str | None:
        """Why a subscription is never pushed to (malformed, or not at an allowed push service)."""
        problem = subscription_problem(subscription)
        if problem is None:
            problem = endpoint_problem(
                subscription["endpoint"], self.allowed_hosts, self.allow_private_endpoints
            )
        return problem

    def address(self, customer: Customer) -> str | None:
        """The customer's usable push subscriptions (the newest few) as a JSON list, or None."""
        subscriptions = [s for s in customer.push_subscriptions if self.unusable(s) is None]
        subscriptions = subscriptions[-MAX_PUSH_SUBSCRIPTIONS:]
        return json.dumps(subscriptions, separators=(",", ":")) if subscriptions else None

    def forget(self, customer: Customer, gone: str) -> dict[str, Any]:
        """The customer's push subscriptions without the one at endpoint `gone`."""
        kept = [s for s in customer.push_subscriptions if s.get("endpoint") != gone]
        return {"push_subscriptions": kept} if len(kept) < len(customer.push_subscriptions) else {}

    # sending
    def _client(self) -> aiohttp.ClientSession:
        """The one HTTP session every send shares; made on first use, inside the running loop."""
        if self._session is None or self._session.closed:
            self._session = self.http().make_session(self.ca_file, self.allow_private_endpoints, self.timeout)
        return self._session

    def click_token(self, message: Message) -> str | None:
        """The signed token the service worker posts to `/push/click`, when a secret is set."""
        return sign(self.secret, "click", f"{message.id}:push") if self.secret else None

    async def send(self, message: Message) -> Delivery:
        """Push to every subscription; gone ones are reported in `Delivery.gone` to be forgotten."""
        try:
            subscriptions = json.loads(message.to or "[]")
        except json.JSONDecodeError:
            subscriptions = None
        if not isinstance(subscriptions, list) or not subscriptions:
            return Delivery(DeliveryStatus.FAILED, detail="the message names no push subscription")
        payload = build_payload(message, self.click_token(message))
        if payload is None:
            return Delivery(DeliveryStatus.FAILED, detail="the title and url do not fit in a push payload")
        if self._sends.closed:  # a reload replaced this channel: the new one sends it later
            return Delivery(DeliveryStatus.RETRY, detail="the push channel was closed (a reload or shutdown)")
        with self._sends.track():
            session = self._client()
            attempts = await asyncio.gather(*(self._push(sub, payload, session) for sub in subscriptions))
        return self._summarise(list(attempts))

    async def _push(self, subscription: Any, payload: bytes, session: aiohttp.ClientSession) -> Attempt:
        endpoint = subscription.get("endpoint", "") if isinstance(subscription, dict) else ""
        problem = self.unusable(subscription)
        if problem:  # it can never receive anything (or must not): forget it like a gone one
            return Attempt(endpoint, "gone", f"unusable subscription: {problem}")
        http = self.http()
        try:
            response = await http.webpush_async(
                subscription_info=subscription,
                data=payload.decode(),
                vapid_private_key=self.vapid,
                vapid_claims={"sub": self.subject},  # a new dict each time: pywebpush adds aud and exp
                ttl=self.ttl,
                headers={"Urgency": self.urgency},
                timeout=http.client_timeout(self.timeout),  # type: ignore[arg-type] - handed to aiohttp as it is
                aiohttp_session=session,
            )
        except http.WebPushException as exc:
            status = exc.status_code
            if status is None:
                return Attempt(endpoint, "gone", f"unusable subscription: {exc.message}")
            host = _host(endpoint)
            if status in (404, 410):
                return Attempt(endpoint, "gone", f"{host}: {status}, subscription gone")
            if status == 429:
                after = retry_after(exc.retry_after)
                return Attempt(endpoint, "retry", f"{host}: 429, too many requests", retry_after=after)
            if status >= 500:
                after = retry_after(exc.retry_after)
                return Attempt(endpoint, "retry", f"{host}: {status}", retry_after=after)
            return Attempt(endpoint, "failed", f"{host}: {status} {exc.response.reason or ''}".rstrip())
        except http.CONNECTION_ERRORS as exc:
            return Attempt(endpoint, "retry", f"{_host(endpoint)}: {type(exc).__name__}: {exc}")
        except VapidException as exc:  # py_vapid cannot sign for this endpoint's origin
            return Attempt(endpoint, "failed", f"{_host(endpoint)}: cannot sign VAPID claims: {exc}")
        if isinstance(response, str):  # only with curl=True, which is never asked for
            return Attempt(endpoint, "failed", f"{_host(endpoint)}: no HTTP response")
        location = response.headers.get("Location")
        return Attempt(endpoint, "sent", f"{_host(endpoint)}: {response.status}", location=location)

    @staticmethod
    def _summarise(attempts: list[Attempt]) -> Delivery:
        """One answer for the message: sent if any browser got it, else retry, invalid or failed."""
        by_outcome: dict[str, list[Attempt]] = {}
        for attempt in attempts:
            by_outcome.setdefault(attempt.outcome, []).append(attempt)
        sent, retry = by_outcome.get("sent", []), by_outcome.get("retry", [])
        gone = tuple(dict.fromkeys(a.endpoint for a in by_outcome.get("gone", []) if a.endpoint))
        detail = f"{len(sent)} of {len(attempts)} subscriptions: " + "; ".join(a.detail for a in attempts)
        if sent:
            return Delivery(DeliveryStatus.SENT, detail=detail, provider_id=sent[0].location, gone=gone)
        if retry:
            waits = [a.retry_after for a in retry if a.retry_after is not None]
            return Delivery(
                DeliveryStatus.RETRY, detail=detail, retry_after=max(waits) if waits else None, gone=gone
            )
        if len(by_outcome.get("gone", [])) == len(attempts):
            return Delivery(DeliveryStatus.ADDRESS_INVALID, detail=detail, gone=gone)
        return Delivery(DeliveryStatus.FAILED, detail=detail, gone=gone)

    def outbox_file(self, message: Message) -> tuple[str, bytes]:
        """What would be pushed: the endpoints and the cleartext payload (keys left out)."""
        try:
            subscriptions = json.loads(message.to or "[]")
        except json.JSONDecodeError:
            subscriptions = []
        payload = build_payload(message, self.click_token(message))
        record = {
            "id": message.id,
            "customer": message.customer_id,
            "channel": self.name,
            "template": message.template,
            "endpoints": [s.get("endpoint") for s in subscriptions if isinstance(s, dict)],
            "ttl": self.ttl,
            "urgency": self.urgency,
            "payload": json.loads(payload) if payload else None,
        }
        return ".json", json.dumps(record, ensure_ascii=False, indent=2).encode()

    async def close(self) -> None:
        """Let the sends under way finish, then close the shared HTTP session."""
        await self._sends.close(self.timeout or 10.0)
        if self._session is not None:
            await self._session.close()
            self._session = None

    # routes
    def routes(self) -> list[Route]:
        """The service worker, the public key, subscribing, and click reports."""
        return [
            Route("GET", "/push/sw.js", self.service_worker),
            Route("GET", "/push/key", self.key),
            Route("POST", "/push/subscribe", self.subscribe),
            Route("OPTIONS", "/push/subscribe", self.preflight),
            Route("POST", "/push/click", self.clicked),
            Route("OPTIONS", "/push/click", self.preflight),
        ]

    async def service_worker(self, request: web.Request, ingest: Ingest) -> web.Response:
        """`GET /push/sw.js`: shows notifications and opens (and reports) their link on click."""
        from aiohttp import web  # here, not at the top: `boomerang check` loads plugins and must start fast

        script = SERVICE_WORKER.replace("__PUBLIC_URL__", json.dumps(self.public_url)).replace(
            "__PUBLIC_KEY__", json.dumps(self.public_key)
        )
        headers = {"Cache-Control": "no-cache", "Service-Worker-Allowed": "/", **CORS}
        return web.Response(text=script, content_type="text/javascript", charset="utf-8", headers=headers)

    async def key(self, request: web.Request, ingest: Ingest) -> web.Response:
        """`GET /push/key`: the application server key for `pushManager.subscribe`."""
        from aiohttp import web  # here, not at the top: `boomerang check` loads plugins and must start fast

        return web.json_response({"public_key": self.public_key}, headers=CORS)

    async def preflight(self, request: web.Request, ingest: Ingest) -> web.Response:
        """CORS preflight: the shop's pages post from their own origin."""
        from aiohttp import web  # here, not at the top: `boomerang check` loads plugins and must start fast

        return web.Response(status=204, headers=CORS)

    async def subscribe(self, request: web.Request, ingest: Ingest) -> web.Response:
        """`POST /push/subscribe`: add a browser's subscription to the customer the token names."""
        from aiohttp import web  # here, not at the top: `boomerang check` loads plugins and must start fast

        if not self.secret:
            return _error(503, "push subscriptions need 'secret' in boomerang.yaml to check tokens")
        # The credential first, from the header: without it the body is never read.
        token = bearer(request.headers.get("Authorization", ""))
        customer_id = unseal(self.secret, "push", token) if token else None
        if not customer_id:
            return _error(
                403,
                "the subscribe token is missing, not valid or older than 7 days: "
                "send it as Authorization: Bearer <token>",
            )
        try:
            data = await read_json(request, MAX_REQUEST)
        except BodyError as exc:
            return _error(exc.status, f'{exc}: send {{"subscription": {{...}}}}')
        if not isinstance(data, dict) or "subscription" not in data:
            return _error(400, 'the body must be {"subscription": <PushSubscription.toJSON()>}')
        problem = self.unusable(data["subscription"])
        if problem:
            return _error(400, problem)
        subscription = clean_subscription(data["subscription"])
        digest = hashlib.sha1(
            "\n".join([customer_id, subscription["endpoint"], *subscription["keys"].values()]).encode()
        ).hexdigest()
        raw = {
            "id": f"push.subscribe:{digest}",
            "type": "customer.updated",
            "at": to_iso(datetime.now(UTC)),
            "customer": {"id": customer_id, "push_subscriptions": [subscription]},
            # allowing notifications is the customer's own "yes" on push
            "data": {"push": {"subscribed": _host(subscription["endpoint"])}, "subscribed": ["push"]},
        }
        try:
            event = parse_event(raw)
        except EventError as exc:
            return _error(400, str(exc))
        result = await ingest([event], "push")
        log.info("push subscription for customer %s at %s", customer_id, _host(subscription["endpoint"]))
        return web.json_response({"subscribed": True, "new": result.accepted == 1}, headers=CORS)

    async def clicked(self, request: web.Request, ingest: Ingest) -> web.Response:
        """`POST /push/click` with `Authorization: Bearer <click token>`: the service worker saw a
        notification clicked. The token says everything, so the body is never read."""
        from aiohttp import web  # here, not at the top: `boomerang check` loads plugins and must start fast

        token = bearer(request.headers.get("Authorization", ""))
        if token is None:
            return _error(403, "send the notification's click token as Authorization: Bearer <token>")
        value = verify(self.secret, "click", token) if self.secret else None
        message_id, _, kind = (value or "").rpartition(":")
        if not message_id or kind != "push":
            return _error(404, "this click token is not valid")
        known = await ingest.feedback(message_id, "message.clicked", {"channel": "push"}, key="push")
        if not known:
            return _error(404, "no such message")
        return web.Response(status=204, headers=CORS)


def _error(status: int, text: str) -> web.Response:
    from aiohttp import web

    return web.json_response({"error": text}, status=status, headers=CORS)


# configuration
def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    try:
        return float(str(value))
    except ValueError:
        return None


def _signs(private_key: ec.EllipticCurvePrivateKey, subject: str) -> bool:
    """Whether py_vapid accepts the subject (its own check is stricter than the RFC's)."""
    try:
        Vapid(private_key=private_key).sign({"sub": subject, "aud": "https://push.example"})
    except VapidException:
        return False
    return True


def channel_from_config(config: Config) -> PushChannel:
    """The push channel for `channels.push`; raises `ProblemError` naming every wrong setting."""
    check = SettingsCheck(config, "channels", "push", SETTINGS)
    settings = check.settings
    problem = check.problem
    base = config.path.parent
    private_key = None
    if not settings.get("vapid_private_key"):
        problem(
            "vapid_private_key",
            "'vapid_private_key' is required: a PEM file made by `boomerang webpush-keys`",
        )
    else:
        try:
            private_key = load_private_key(base / Path(str(settings["vapid_private_key"])).expanduser())
        except ValueError as exc:
            problem("vapid_private_key", f"'vapid_private_key': {exc}")
    subject = str(settings.get("subject") or "")
    if not _SUBJECT.match(subject) or (private_key is not None and not _signs(private_key, subject)):
        problem(
            "subject",
            "'subject' must be a contact for the push services: mailto:ops@shop.example, "
            "or https://shop.example (no path)",
        )
    ttl = 86400
    if "ttl" in settings:
        value = settings["ttl"]
        number = _number(value)
        try:
            ttl = int(number) if number is not None else int(parse_duration(str(value)).total_seconds())
        except ValueError:
            ttl = -1
        if not 0 <= ttl <= MAX_TTL:
            problem("ttl", f"'ttl' must be seconds (or a duration such as 1d) from 0 to {MAX_TTL}")
    urgency = str(settings.get("urgency", "normal")).lower()
    if urgency not in URGENCIES:
        problem(
            "urgency", f"'urgency' must be one of {', '.join(URGENCIES)}{did_you_mean(urgency, URGENCIES)}"
        )
    timeout = _number(settings.get("timeout", 10))
    if timeout is None or timeout <= 0:
        problem("timeout", "'timeout' must be a number of seconds above 0")
    ca_file = None
    if settings.get("ca_file"):
        ca_file = base / Path(str(settings["ca_file"])).expanduser()
        if not ca_file.is_file():
            problem("ca_file", f"'ca_file': {ca_file} does not exist")
    allow_private = settings.get("allow_private_endpoints", False)
    if not isinstance(allow_private, bool):
        problem("allow_private_endpoints", "'allow_private_endpoints' must be true or false")
        allow_private = False
    allowed_hosts = _allowed_hosts(check, settings.get("allowed_hosts"), allow_private)
    check.done()
    assert private_key is not None and timeout is not None
    if not config.secret:
        log.warning("push: no secret is set, so POST /push/subscribe refuses every subscription")
    if allow_private:
        log.warning("push: allow_private_endpoints is on: endpoints at IP and private addresses are accepted")
    return PushChannel(
        private_key,
        subject,
        ttl=ttl,
        urgency=urgency,
        timeout=timeout,
        ca_file=ca_file,
        secret=config.secret,
        public_url=config.public_url,
        allowed_hosts=allowed_hosts,
        allow_private_endpoints=allow_private,
    )


def _allowed_hosts(check: SettingsCheck, value: Any, allow_private: bool) -> tuple[str, ...]:
    """`allowed_hosts`, each a host name or `*.domain`; IP addresses only with allow_private_endpoints."""
    if value is None:
        return ()
    if not isinstance(value, list):
        check.problem(
            "allowed_hosts",
            "'allowed_hosts' must be a list of push service hosts, such as [push.example.net]",
        )
        return ()
    hosts = []
    for index, entry in enumerate(value):
        host = str(entry).strip().lower().rstrip(".") if isinstance(entry, str) else ""
        name = host.removeprefix("*.")
        if _HOST_NAME.match(name) or (allow_private and (_is_ip_address(name) or name == "localhost")):
            hosts.append(host)
            continue
        if _is_ip_address(name) or name == "localhost":
            text = (
                f"'allowed_hosts': {entry} is not a public host name; push endpoints at IP addresses "
                "and localhost are refused unless allow_private_endpoints: true (for staging)"
            )
        else:
            text = f"'allowed_hosts': {entry!r} is not a host name such as push.example.net or *.example.net"
        check.problem(("allowed_hosts", index), text)
    return tuple(hosts)


@hookimpl
def register_channels(config: Config) -> list[Channel]:
    """The push channel, when `channels.push` is configured."""
    if "push" not in config.channels:
        return []
    return [channel_from_config(config)]


@hookimpl
def register_channel_kinds() -> list[type[Channel]]:
    """Push templates and front matter, known whether or not the channel is configured."""
    return [PushChannel]


def write_key_pair(directory: Path, name: str = "vapid.pem") -> tuple[Path, str]:
    """Write a new VAPID private key (PEM, mode 0600); returns its path and the public key."""
    path = directory / name
    if path.exists():
        raise FileExistsError(f"{path} already exists")
    directory.mkdir(parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP256R1())
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "wb") as file:
        file.write(pem)
    return path, public_key_of(key)


@hookimpl
def register_commands(cli: click.Group) -> None:
    """`boomerang webpush-keys [--out DIR]`: a new VAPID key pair for the push channel."""

    @cli.command(name="webpush-keys")
    @click.option(
        "--out",
        "directory",
        type=click.Path(file_okay=False, path_type=Path),
        default=".",
        show_default=True,
        help="The folder to write vapid.pem into.",
    )
    def webpush_keys(directory: Path) -> None:
        """Create a VAPID key pair: writes DIR/vapid.pem and prints the public key.

        The public key (on stdout) is the applicationServerKey that pages pass to
        pushManager.subscribe(); it is also served at GET /push/key.
        """
        try:
            path, public_key = write_key_pair(directory)
        except FileExistsError as exc:
            raise click.ClickException(
                f"{exc}; refusing to replace a key browsers are subscribed with"
            ) from None
        click.echo(f"wrote {path} (keep it secret and backed up); add to boomerang.yaml:", err=True)
        click.echo(
            f'  channels:\n    push: {{vapid_private_key: {path}, subject: "mailto:you@your.shop"}}', err=True
        )
        click.echo("public key (applicationServerKey):", err=True)
        click.echo(public_key)
