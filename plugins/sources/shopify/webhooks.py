"""`POST /hooks/shopify`: Shopify's signed webhooks as events, the privacy webhooks, the
webhook subscriptions (`boomerang sources setup shopify`) and order records of an export."""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from boomerang.kinds import Ingest, Route, SetupError, Source
from boomerang.plugin_api import BodyError, Event, EventError, IngestWindow, parse_event, read_json
from boomerang.plugins.sources.shopify.admin_api import AdminApi, AdminApiError
from boomerang.plugins.sources.shopify.payloads import TOPICS, events_for, order_events
from boomerang.plugins.sources.shopify.settings import ShopifySettings

if TYPE_CHECKING:
    from aiohttp import web

log = logging.getLogger(__name__)

WEBHOOK_PATH = "/hooks/shopify"
SIGNATURE_HEADER = "X-Shopify-Hmac-Sha256"
# The privacy webhooks every Shopify app must answer; set in the app's configuration (they
# cannot be subscribed through the API).
PRIVACY_TOPICS = ("customers/data_request", "customers/redact", "shop/redact")


class ShopifySource(Source):
    """A Shopify shop's webhooks: checkouts, orders, fulfillments, customers, privacy requests."""

    name = "shopify"
    verified = True  # every delivery is signed with the app's secret: the shop's own word

    def __init__(self, settings: ShopifySettings, api: AdminApi, window: IngestWindow | None = None):
        self.settings = settings
        self.api = api
        self.window = window or IngestWindow()
        self._unknown_topics: set[str] = set()  # logged once each

    def routes(self) -> list[Route]:
        """`POST /hooks/shopify`."""
        return [Route("POST", WEBHOOK_PATH, self.webhook)]

    def signed(self, body: bytes, signature: str | None) -> bool:
        """Whether `signature` is the base64 HMAC-SHA256 of the raw body with the app's secret
        (compared in constant time)."""
        if not signature or not signature.isascii():
            return False
        expected = base64.b64encode(hmac.new(self.settings.secret.encode(), body, hashlib.sha256).digest())
        return hmac.compare_digest(expected, signature.strip().encode())

    async def webhook(self, request: web.Request, ingest: Ingest) -> web.Response:
        """One delivery: verified, then turned into events and committed before the answer."""
        from aiohttp import web

        # The raw bytes are what Shopify signed: read (bounded by the app's 1 MiB), checked,
        # and only then parsed.
        body = await request.read()
        if not self.signed(body, request.headers.get(SIGNATURE_HEADER)):
            return web.json_response({"error": f"missing or wrong {SIGNATURE_HEADER}"}, status=401)
        shop = request.headers.get("X-Shopify-Shop-Domain", "").strip().lower()
        if shop and shop != self.settings.shop:
            return web.json_response({"error": f"this endpoint serves {self.settings.shop} only"}, status=401)
        topic = request.headers.get("X-Shopify-Topic", "").strip()
        if not topic:
            return web.json_response({"error": "missing X-Shopify-Topic"}, status=400)
        try:
            payload = await read_json(request)
        except BodyError as exc:
            return web.json_response({"error": str(exc)}, status=exc.status)
        if not isinstance(payload, dict):
            return web.json_response({"error": "a Shopify webhook body is a JSON object"}, status=400)
        if topic in PRIVACY_TOPICS:
            return web.json_response(await self.privacy(topic, payload, ingest))
        delivery = _delivery_id(request.headers, topic, body)
        raw = events_for(topic, payload, delivery, datetime.now(UTC))
        if raw is None:
            self._unknown(topic)
            return web.json_response({"ignored": "topic not mapped to events"})
        try:
            events = [parse_event(item, f"{topic} delivery", self.window) for item in raw]
        except EventError as exc:
            return web.json_response({"error": str(exc)}, status=400)
        if not events:
            return web.json_response({"accepted": 0, "duplicates": 0, "ignored": "names no customer"})
        result = await ingest(events, self.name)
        return web.json_response({"accepted": result.accepted, "duplicates": result.duplicates})

    async def privacy(self, topic: str, payload: dict[str, Any], ingest: Ingest) -> dict[str, Any]:
        """The mandatory privacy webhooks: `customers/redact` erases the customer as `boomerang
        forget` does; a data request and `shop/redact` are acknowledged and logged."""
        person = payload.get("customer") if isinstance(payload.get("customer"), dict) else {}
        if topic == "customers/redact":
            identities = [
                f"shopify:{person['id']}" if isinstance(person.get("id"), int | str) else None,
                person.get("email"),
                person.get("phone"),
            ]
            erased = []
            for identity in identities:
                if isinstance(identity, str) and identity.strip():
                    gone = await ingest.forget(identity.strip()[:320])
                    if gone is not None:
                        erased.append(gone)
            log.info("shopify: customers/redact: %d customers erased", len(erased))
            return {"erased": len(erased)}
        if topic == "customers/data_request":
            request = payload.get("data_request")
            request_id = request.get("id") if isinstance(request, dict) else None
            log.info(
                "shopify: customers/data_request %s received: `boomerang explain shopify:<customer id>` "
                "shows what Boomerang holds about the customer Shopify names",
                request_id if isinstance(request_id, int) else "(no id)",
            )
            return {"received": topic}
        log.warning(
            "shopify: shop/redact received: the shop removed the app 48 hours ago. Boomerang erases "
            "nothing by itself (the database is the shop's own): use `boomerang forget`, or delete it"
        )
        return {"received": topic}

    def _unknown(self, topic: str) -> None:
        if topic not in self._unknown_topics and len(self._unknown_topics) < 100:
            self._unknown_topics.add(topic)
            log.info("shopify: topic %r is not mapped to events: ignored (logged once)", topic[:100])

    async def setup(self) -> list[str]:
        """Subscribe the shop's webhooks of every mapped topic to this daemon's public URL,
        creating only those missing; one line per topic, and the privacy webhooks' address."""
        address = f"{self.settings.public_url}{WEBHOOK_PATH}"
        try:
            answer = await self.api.call("GET", "webhooks.json?limit=250")
            existing = {
                (hook.get("topic"), hook.get("address"))
                for hook in answer.get("webhooks") or []
                if isinstance(hook, dict)
            }
            done = []
            for topic in TOPICS:
                if (topic, address) in existing:
                    done.append(f"exists: {topic} -> {address}")
                    continue
                subscription = {"topic": topic, "address": address, "format": "json"}
                await self.api.call("POST", "webhooks.json", {"webhook": subscription})
                done.append(f"created: {topic} -> {address}")
        except AdminApiError as exc:
            raise SetupError(str(exc)) from None
        done.append(
            f"note: the privacy webhooks ({', '.join(PRIVACY_TOPICS)}) are set in the app's configuration, "
            f"not through the API: give them {address}"
        )
        return done

    def read_export(self, record: dict[str, Any]) -> list[Event]:
        """The events of one order record of an export (the Admin API's orders, the shape of an
        `orders/create` body), with the ids the live webhooks give, so the two never double.

        :raise EventError: when the record is not an order that names a customer.
        """
        if not isinstance(record, dict) or not isinstance(record.get("id"), int | str):
            raise EventError("a Shopify order record is a JSON object with the order's id")
        raw = order_events(record, datetime.now(UTC))
        if not raw:
            raise EventError("the order names no customer (no customer id, email or phone)")
        return [parse_event(item, f"order {record.get('name') or record.get('id')}") for item in raw]

    async def close(self) -> None:
        """Close the Admin API session."""
        await self.api.close()


def _delivery_id(headers: Any, topic: str, body: bytes) -> str:
    """What makes one delivery: Shopify's event id (the same on every retry and for every
    subscription to the event), else its webhook id, else a digest of the topic and body."""
    for name in ("X-Shopify-Event-Id", "X-Shopify-Webhook-Id"):
        value = headers.get(name, "").strip()
        if value and value.isascii() and value.isprintable() and len(value) <= 100:
            return value
    return hashlib.sha256(topic.encode("utf-8", "replace") + b"\n" + body).hexdigest()[:32]
