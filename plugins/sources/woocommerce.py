"""The WooCommerce source: its webhooks on `POST /hooks/woocommerce`, and their set-up.

Configured under `sources.woocommerce`:

```yaml
sources:
  woocommerce:
    secret: ${WC_WEBHOOK_SECRET}        # the webhooks' secret: signs every delivery
    url: https://shop.example           # the WordPress site, for `boomerang sources setup`
    consumer_key: ${WC_CONSUMER_KEY}    # a REST API key with Read/Write permissions
    consumer_secret: ${WC_CONSUMER_SECRET}
    statuses: {completed: order.delivered, shipped: order.shipped}   # merged with the defaults
```

A delivery carries `X-WC-Webhook-Signature`, the base64 HMAC-SHA256 of the raw body with the
webhook's secret; it is checked (in constant time) before the body is parsed, and a request
without it is refused with 401. The only unsigned request answered 200 is the ping WooCommerce
sends when a webhook is created (a form body `webhook_id=N`); nothing is stored for it.

What a topic (`X-WC-Webhook-Topic`) becomes, with the order as `data.order`:
- `order.created`, `order.updated`: the order's state, not the topic, decides. Every order is
  `order.placed` (draft checkouts excepted), a `date_paid` makes it `order.paid`, and its status
  adds the events of `statuses` (by default processing → order.paid, completed →
  order.shipped, cancelled, refunded → order.cancelled; pending, on-hold and failed add nothing).
  Each event's id is the order's id and the event type, so it is stored once per order however
  many deliveries carry it: WooCommerce builds a delivery's body when it sends it, so several
  updates may arrive as one showing only the last status (a pending order marked completed
  brings placed, paid and shipped at once), the same state may arrive twice with new delivery
  ids, and an update that changes no status (a note) adds nothing.
- `customer.created` → `customer.created`; `customer.updated` → `customer.updated` (once per
  `date_modified`).
- Any other topic is acknowledged and ignored (logged once).
The customer is the billing email and phone, and `wc-<customer_id>` for a registered customer
(`id_prefix` changes `wc-`); the source is verified, so these merge profiles.
"""

from __future__ import annotations

import base64
import logging
import re
from typing import TYPE_CHECKING, Any

from boomerang import hookimpl
from boomerang.kinds import Ingest, Route, SetupError, Source
from boomerang.plugin_api import BodyError, Config, Event, EventError, SettingsCheck, read_json
from boomerang.plugins.sources.signed_hooks import (
    Unheard,
    bad_request,
    base64_signature_matches,
    customer,
    event,
    moment,
    number,
    order_event_mapping,
    refused,
    stored,
)

if TYPE_CHECKING:
    from aiohttp import web

log = logging.getLogger(__name__)

SETTINGS = ("secret", "url", "consumer_key", "consumer_secret", "statuses", "id_prefix")
# What each WooCommerce status adds besides order.placed (and order.paid for a paid order).
# `completed` means "fulfilled, nothing left to do": most shops mark an order so when they
# ship it; one with a delivery-tracking plugin maps its own statuses (shipped, delivered).
DEFAULT_STATUSES: dict[str, tuple[str, ...]] = {
    "pending": (),
    "processing": ("order.paid",),
    "on-hold": (),
    "completed": ("order.shipped",),
    "cancelled": ("order.cancelled",),
    "refunded": ("order.cancelled",),
    "failed": (),
}
# Statuses that are no order yet: the block checkout's draft (a cart), and the bin.
NOT_ORDERS = ("checkout-draft", "trash", "auto-draft")
TOPICS = ("order.created", "order.updated", "customer.created")  # what `setup` subscribes to
HEARD = (*TOPICS, "customer.updated")  # what a delivery may bring; any other topic is ignored
HOOK_PATH = "/hooks/woocommerce"
PING = re.compile(rb"webhook_id=\d{1,20}")
PING_MAX = 64  # bytes: a ping's body is `webhook_id=N`; an unsigned request longer is not read
API_TIMEOUT = 30  # seconds for each REST API call of the set-up


class WooCommerceSource(Source):
    """Orders and customers from a WooCommerce shop's webhooks."""

    name = "woocommerce"
    verified = True  # every delivery is signed with the shop's secret

    def __init__(
        self,
        secret: str,
        public_url: str,
        url: str | None = None,
        consumer_key: str | None = None,
        consumer_secret: str | None = None,
        statuses: dict[str, tuple[str, ...]] | None = None,
        id_prefix: str = "wc-",
    ):
        self.secret = secret
        self.delivery_url = public_url.rstrip("/") + HOOK_PATH
        self.url = url.rstrip("/") if url else None
        self.consumer_key = consumer_key
        self.consumer_secret = consumer_secret
        self.statuses = statuses if statuses is not None else dict(DEFAULT_STATUSES)
        self.id_prefix = id_prefix
        self.unheard = Unheard(self.name)

    def routes(self) -> list[Route]:
        """`POST /hooks/woocommerce`."""
        return [Route("POST", HOOK_PATH, self.post_hook)]

    async def post_hook(self, request: web.Request, ingest: Ingest) -> web.Response:
        """Check the signature, turn the delivery into events, answer once they are committed."""
        signature = request.headers.get("X-WC-Webhook-Signature")
        if signature is None:
            length = request.content_length
            if length is not None and length <= PING_MAX and PING.fullmatch(await request.read()):
                return stored(None, ping=True)
            return refused(
                "missing X-WC-Webhook-Signature: set the webhook's secret to sources.woocommerce.secret"
            )
        body = await request.read()
        if not base64_signature_matches(self.secret, body, signature):
            return refused(
                "wrong X-WC-Webhook-Signature: the webhook's secret is not sources.woocommerce.secret"
            )
        if PING.fullmatch(body):
            return stored(None, ping=True)
        topic = request.headers.get("X-WC-Webhook-Topic", "")
        if topic not in HEARD:
            self.unheard.note(topic)
            return stored(None, ignored=topic[:80])
        try:
            payload = await read_json(request)  # the body read above, parsed with its nesting bounded
            events = self.events_of(topic, payload)
        except (BodyError, EventError) as exc:
            return bad_request(f"{topic}: {exc}")
        return stored(await ingest(events, self.name) if events else None)

    def events_of(self, topic: str, payload: Any) -> list[Event]:
        """The events one delivery of `topic` means; raises `EventError` for a body that is not
        a WooCommerce order or customer."""
        if not isinstance(payload, dict):
            raise EventError("the body must be a JSON object")
        if topic.startswith("order."):
            return self.order_events(payload)
        return self.customer_events(payload, topic.removeprefix("customer."))

    def read_export(self, record: dict) -> list[Event]:
        """The events one order of an export means (REST API v3 order JSON), as if delivered."""
        return self.order_events(record)

    def order_events(self, order: dict[str, Any]) -> list[Event]:
        """placed, paid and the status's events of one order (each once per order by its id)."""
        order_id = _record_id(order, "order")
        status = order.get("status")
        if not isinstance(status, str) or status in NOT_ORDERS:
            return []
        billing = order.get("billing") if isinstance(order.get("billing"), dict) else {}
        profile = customer(
            id=self._customer_id(order.get("customer_id")),
            email=billing.get("email"),
            phone=billing.get("phone"),
            name=_full_name(billing),
        )
        if profile is None:
            log.info(
                "woocommerce: order %s names no customer (no email, phone or account): ignored", order_id
            )
            return []
        data = {"order": _order_view(order, order_id)}
        modified = moment(order.get("date_modified_gmt"))
        completed = moment(order.get("date_completed_gmt")) if status == "completed" else None
        happened = {"order.placed": moment(order.get("date_created_gmt")) or modified}
        if order.get("date_paid_gmt"):
            happened["order.paid"] = moment(order.get("date_paid_gmt")) or modified
        for type_ in self.statuses.get(status, ()):
            happened.setdefault(type_, completed or modified)
        return [
            event(f"woocommerce:order:{order_id}:{type_}", type_, at, profile, data)
            for type_, at in happened.items()
        ]

    def customer_events(self, record: dict[str, Any], what: str) -> list[Event]:
        """`customer.created` or `customer.updated` for a WooCommerce customer."""
        customer_id = _record_id(record, "customer")
        billing = record.get("billing") if isinstance(record.get("billing"), dict) else {}
        profile = customer(
            id=self._customer_id(customer_id),
            email=record.get("email") or billing.get("email"),
            phone=billing.get("phone"),
            name=_full_name(record) or _full_name(billing),
        )
        if profile is None:
            return []
        if what == "created":
            at = moment(record.get("date_created_gmt"))
            event_id = f"woocommerce:customer:{customer_id}:created"
        else:
            at = moment(record.get("date_modified_gmt"))
            event_id = f"woocommerce:customer:{customer_id}:updated:{at or ''}"
        return [event(event_id, f"customer.{what}", at, profile, {})]

    def _customer_id(self, value: Any) -> str | None:
        """`wc-<id>` for a registered customer; None for a guest (WooCommerce's 0)."""
        if isinstance(value, bool) or not isinstance(value, int | str) or str(value) in ("", "0"):
            return None
        return f"{self.id_prefix}{value}"

    async def setup(self) -> list[str]:
        """Create the webhooks of TOPICS through the REST API, only those missing; re-activate
        one WooCommerce disabled after failed deliveries."""
        import aiohttp

        if not (self.url and self.consumer_key and self.consumer_secret):
            raise SetupError(
                "set sources.woocommerce.url, consumer_key and consumer_secret (WooCommerce → Settings → "
                "Advanced → REST API, a key with Read/Write permissions)"
            )
        api = f"{self.url}/wp-json/wc/v3/webhooks"
        # HTTP basic auth with the key and secret, as WooCommerce takes them over https.
        credentials = base64.b64encode(f"{self.consumer_key}:{self.consumer_secret}".encode()).decode()
        done: list[str] = []
        async with aiohttp.ClientSession(
            headers={"Authorization": f"Basic {credentials}"},
            timeout=aiohttp.ClientTimeout(total=API_TIMEOUT),
        ) as session:
            existing = await _all_webhooks(session, api)
            for topic in TOPICS:
                ours = [
                    w
                    for w in existing
                    if w.get("topic") == topic and w.get("delivery_url") == self.delivery_url
                ]
                if any(w.get("status") == "active" for w in ours):
                    done.append(f"{topic}: already delivered to {self.delivery_url}")
                elif ours:
                    await _call(session, "PUT", f"{api}/{ours[0].get('id')}", {"status": "active"})
                    done.append(
                        f"{topic}: re-activated webhook {ours[0].get('id')} ({ours[0].get('status')})"
                    )
                else:
                    created = await _call(
                        session,
                        "POST",
                        api,
                        {
                            "name": f"Boomerang {topic}",
                            "topic": topic,
                            "delivery_url": self.delivery_url,
                            "secret": self.secret,
                            "status": "active",
                        },
                    )
                    done.append(f"{topic}: created webhook {created.get('id')} → {self.delivery_url}")
        return done


async def _all_webhooks(session: Any, api: str) -> list[dict[str, Any]]:
    """Every webhook of the shop, page after page."""
    found: list[dict[str, Any]] = []
    for page in range(1, 100):
        batch = await _call(session, "GET", f"{api}?per_page=100&page={page}")
        if not isinstance(batch, list):
            raise SetupError(f"GET {api} answered something that is not a list of webhooks")
        found += [w for w in batch if isinstance(w, dict)]
        if len(batch) < 100:
            break
    return found


async def _call(session: Any, method: str, url: str, body: dict | None = None) -> Any:
    """One REST API call; `SetupError` says what WooCommerce refused, or that it cannot be reached."""
    import aiohttp

    try:
        async with session.request(method, url, json=body) as response:
            try:
                answer = await response.json(content_type=None)
            except ValueError:
                answer = None
            if response.status >= 400:
                detail = answer.get("message") if isinstance(answer, dict) else None
                hint = (
                    ": check consumer_key and consumer_secret, and that the key has Read/Write permissions"
                    if response.status in (401, 403)
                    else ""
                )
                raise SetupError(
                    f"{method} {url} was refused ({response.status} {detail or response.reason}){hint}"
                )
            return answer
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise SetupError(f"cannot reach {url}: {exc or type(exc).__name__}") from None


def _record_id(record: dict[str, Any], what: str) -> str:
    value = record.get("id")
    if (
        isinstance(value, bool)
        or not isinstance(value, int | str)
        or not re.fullmatch(r"\d{1,20}", str(value))
    ):
        raise EventError(f"a WooCommerce {what} needs its numeric 'id'")
    return str(value)


def _full_name(address: dict[str, Any]) -> str | None:
    parts = [str(address.get(key) or "").strip() for key in ("first_name", "last_name")]
    return " ".join(part for part in parts if part) or None


def _coupon_codes(lines: Any) -> list[str]:
    """The codes of an order's `coupon_lines`."""
    if not isinstance(lines, list):
        return []
    return [line["code"] for line in lines if isinstance(line, dict) and isinstance(line.get("code"), str)]


def _order_view(order: dict[str, Any], order_id: str) -> dict[str, Any]:
    """The order as scenarios see it (`order.total`, `order.items`, `order.discount_codes`), with
    WooCommerce's status."""
    items = []
    lines = order.get("line_items")
    for line in lines if isinstance(lines, list) else []:
        if not isinstance(line, dict):
            continue
        item = {
            "sku": str(line.get("sku") or line.get("product_id") or ""),
            "name": str(line.get("name") or ""),
            "product_id": line.get("product_id"),
            "qty": line.get("quantity"),
            "price": number(line.get("price")),
            "total": number(line.get("total")),
        }
        items.append({key: value for key, value in item.items() if value is not None})
    view = {
        "id": order_id,
        "number": str(order.get("number") or order_id),
        "status": order.get("status"),
        "total": number(order.get("total")),
        "currency": order.get("currency") if isinstance(order.get("currency"), str) else None,
        "payment_method": order.get("payment_method_title") or order.get("payment_method"),
        "items": items,
        # the coupons used, as Shopify's orders carry them: a personal code redeems here
        "discount_codes": _coupon_codes(order.get("coupon_lines")) or None,
    }
    return {key: value for key, value in view.items() if value is not None}


def read_settings(config: Config) -> WooCommerceSource:
    """Validate `sources.woocommerce`; raises `ProblemError` pointing at every wrong setting."""
    check = SettingsCheck(config, "sources", "woocommerce", SETTINGS)
    text = check.text

    secret = text("secret")
    if secret is None:
        check.problem(
            "secret",
            "'secret' is required: the secret of the shop's webhooks "
            "(WooCommerce → Settings → Advanced → Webhooks)",
        )
    url = text("url")
    if url is not None and not re.match(
        r"^https://[^/\s]+|^http://(127\.0\.0\.1|localhost|\[::1\])(:\d+)?(/|$)", url
    ):
        check.problem(
            "url", f"'url': '{url}' must be the shop's https:// address (the API keys go in its requests)"
        )
    keys = [text("consumer_key"), text("consumer_secret")]
    if any(keys) and not all(keys):
        check.problem(
            "consumer_key" if keys[0] else "consumer_secret",
            "'consumer_key' and 'consumer_secret' go together",
        )
    given = order_event_mapping(check, "statuses", "{completed: order.delivered}")
    statuses = {**DEFAULT_STATUSES, **{status.removeprefix("wc-"): types for status, types in given.items()}}
    prefix = text("id_prefix")
    check.done()
    assert secret is not None
    return WooCommerceSource(
        secret,
        config.public_url,
        url=url,
        consumer_key=keys[0],
        consumer_secret=keys[1],
        statuses=statuses,
        id_prefix="wc-" if prefix is None else prefix,
    )


@hookimpl
def register_sources(config: Config) -> list[Source]:
    """The WooCommerce source, when `sources.woocommerce` is configured."""
    if "woocommerce" not in config.sources:
        return []
    return [read_settings(config)]
