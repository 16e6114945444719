"""Shopify's webhook bodies to events in Boomerang's format, pure: no HTTP, no store.

`events_for(topic, body, delivery, received_at)` gives the raw events (dicts as `POST /events`
takes them) a delivery means; the webhook validates them with `parse_event`. Ids say what
happened, so that one thing reported twice is one event:

- an order is placed once, `shopify:order:<key>:placed`, whether a completed checkout or the
  order itself says so first (the key is the checkout token both carry, else the order id);
- paid, shipped, delivered and cancelled once per order, `shopify:order:<id>:<what>`, whichever
  topic tells (`orders/fulfilled` and `fulfillments/create` both mean shipped);
- a cart or a profile change once per delivery, `shopify:<event id>:<what>`.

The customer is `shopify:<customer id>` when Shopify names one, with the email and phone given:
a verified source, so a guest's email that later becomes an account merges into it.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable
from datetime import datetime
from typing import Any

from boomerang.plugin_api import EventError, normalise_email, normalise_phone, to_iso

# What each consent state of `email_marketing_consent`/`sms_marketing_consent` says; the
# others (`not_subscribed`, `pending`, `invalid`...) say nothing about a consent given.
CONSENT_STATES = {"subscribed": True, "unsubscribed": False, "redacted": False}
_LANGUAGE = re.compile(r"^([A-Za-z]{2,3})(?:[-_][A-Za-z0-9]+)*$")

Raw = dict[str, Any]


def events_for(topic: str, body: Raw, delivery: str, received_at: datetime) -> list[Raw] | None:
    """The events a delivery of `topic` means (none if it names no customer); None for a topic
    this source does not map."""
    mapping = TOPICS.get(topic)
    if mapping is None:
        return None
    customer = profile(body)
    if customer is None:
        return []
    return _events(mapping(topic, body, delivery), customer, body, received_at)


def order_events(order: Raw, received_at: datetime) -> list[Raw]:
    """The events an order record (an `orders/create` body, an Admin API export) holds: placed,
    and paid, shipped, cancelled when it says so; ids as the live topics give them."""
    customer = profile(order)
    if customer is None:
        return []
    found = list(_placed("orders/create", order, ""))
    if order.get("financial_status") in ("paid", "partially_refunded", "refunded"):
        found += _paid("orders/paid", order, "")
    if order.get("fulfillments"):
        found += _fulfilled("orders/fulfilled", order, "")
    if order.get("cancelled_at"):
        found += _cancelled("orders/cancelled", order, "")
    return _events(found, customer, order, received_at)


# One mapping per topic: (topic, body, delivery) → [(event id, type, data, `at` fields)].
Found = list[tuple[str, str, Raw, tuple[str, ...]]]


def _events(found: Found, customer: Raw, body: Raw, received_at: datetime) -> list[Raw]:
    return [
        {"id": id_, "type": kind, "at": _at(body, received_at, stamps), "customer": customer, "data": data}
        for id_, kind, data, stamps in found
    ]


def _checkout(topic: str, body: Raw, delivery: str) -> Found:
    if body.get("completed_at"):
        # Completed: no longer abandoned. The order it became is placed (its `orders/create`
        # carries the same checkout token, so whichever comes first is the one event).
        return _placed(topic, body, delivery)
    url = _text(body.get("abandoned_checkout_url"))
    cart = {
        "url": url,
        "token": _text(body.get("token")),
        # Line items carry no product link: each leads back to the checkout that holds it.
        "items": [{**item, "url": url} for item in _items(body.get("line_items"))],
        "total": _money(body.get("total_price")),
        "currency": _text(body.get("presentment_currency") or body.get("currency")),
        "discount_codes": _discount_codes(body),
    }
    stamps = ("updated_at", "created_at")
    found: Found = [(f"shopify:{delivery}:cart", "cart.updated", {"cart": cart}, stamps)]
    if topic == "checkouts/create":
        found.append(
            (f"shopify:{delivery}:checkout", "checkout.started", {"cart": cart}, ("created_at", "updated_at"))
        )
    return found


def _placed(topic: str, body: Raw, delivery: str) -> Found:
    from_checkout = topic.startswith("checkouts/")
    checkout = body.get("token") if from_checkout else body.get("checkout_token")
    key = f"checkout-{checkout}" if _text(checkout) else f"order-{_order_ref(body.get('id'), delivery)}"
    order = {
        **_order_names(body),
        "items": _items(body.get("line_items")),
        "total": _money(body.get("total_price")),
        "currency": _text(body.get("presentment_currency") or body.get("currency")),
        "discount_codes": _discount_codes(body),
        "url": _text(body.get("order_status_url")),
    }
    stamps = ("completed_at", "updated_at") if from_checkout else ("created_at", "processed_at")
    return [(f"shopify:order:{key}:placed", "order.placed", {"order": order}, stamps)]


def _paid(topic: str, body: Raw, delivery: str) -> Found:
    order = {
        **_order_names(body),
        "total": _money(body.get("total_price")),
        "currency": _text(body.get("presentment_currency") or body.get("currency")),
    }
    event_id = f"shopify:order:{_order_ref(body.get('id'), delivery)}:paid"
    return [(event_id, "order.paid", {"order": order}, ("updated_at",))]


def _fulfilled(topic: str, body: Raw, delivery: str) -> Found:
    given = body.get("fulfillments")
    fulfillments = [f for f in given if isinstance(f, dict)] if isinstance(given, list) else []
    order = {**_order_names(body), **_tracking(fulfillments[-1] if fulfillments else {})}
    event_id = f"shopify:order:{_order_ref(body.get('id'), delivery)}:shipped"
    return [(event_id, "order.shipped", {"order": order}, ("updated_at",))]


def _fulfillment(topic: str, body: Raw, delivery: str) -> Found:
    order_id = _order_ref(body.get("order_id"), delivery)
    name = _text(body.get("name"))
    order = {
        "id": name.rsplit(".", 1)[0] if name else order_id,  # "#1001.1" is #1001's first fulfillment
        "shopify_id": order_id,
        **_tracking(body),
    }
    shipped = ("created_at", "updated_at")
    found: Found = [(f"shopify:order:{order_id}:shipped", "order.shipped", {"order": order}, shipped)]
    if body.get("shipment_status") == "delivered":
        delivered = ("updated_at", "created_at")
        found.append((f"shopify:order:{order_id}:delivered", "order.delivered", {"order": order}, delivered))
    return found


def _cancelled(topic: str, body: Raw, delivery: str) -> Found:
    order = {
        **_order_names(body),
        "reason": _text(body.get("cancel_reason")),
        "total": _money(body.get("total_price")),
        "currency": _text(body.get("presentment_currency") or body.get("currency")),
    }
    event_id = f"shopify:order:{_order_ref(body.get('id'), delivery)}:cancelled"
    return [(event_id, "order.cancelled", {"order": order}, ("cancelled_at", "updated_at"))]


def _customer(topic: str, body: Raw, delivery: str) -> Found:
    kind = "customer.created" if topic == "customers/create" else "customer.updated"
    return [(f"shopify:{delivery}:customer", kind, {}, ("updated_at", "created_at"))]


TOPICS: dict[str, Callable[[str, Raw, str], Found]] = {
    "checkouts/create": _checkout,
    "checkouts/update": _checkout,
    "orders/create": _placed,
    "orders/paid": _paid,
    "orders/fulfilled": _fulfilled,
    "orders/cancelled": _cancelled,
    "fulfillments/create": _fulfillment,
    "fulfillments/update": _fulfillment,
    "customers/create": _customer,
    "customers/update": _customer,
}


def profile(body: Raw) -> Raw | None:
    """The event's `customer` from a body: the customer object itself (`customers/*`) or the one
    a checkout or order embeds, with the body's own email and phone; None if it names nobody.

    A malformed email or phone is left out rather than refusing the delivery: Shopify keeps
    what shops type, and the other identities still name the customer."""
    is_customer = "email_marketing_consent" in body or "orders_count" in body or "accepts_marketing" in body
    embedded = body.get("customer")
    person: Raw = body if is_customer else embedded if isinstance(embedded, dict) else {}
    destination = body.get("destination") if isinstance(body.get("destination"), dict) else {}
    found: Raw = {}
    if _id(person.get("id")):
        found["id"] = f"shopify:{_id(person.get('id'))}"
    for name, check, candidates in (
        ("email", normalise_email, (person.get("email"), body.get("email"), body.get("contact_email"))),
        ("phone", normalise_phone, (person.get("phone"), body.get("phone"), destination.get("phone"))),
    ):
        for value in candidates:
            if isinstance(value, str) and value.strip():
                with contextlib.suppress(EventError):
                    found[name] = check(value.strip(), name)
                    break
    if not found:
        return None
    full_name = " ".join(
        part.strip() for part in (person.get("first_name"), person.get("last_name")) if isinstance(part, str)
    ).strip()
    if full_name:
        found["name"] = full_name[:200]
    language = _LANGUAGE.match(str(person.get("locale") or body.get("customer_locale") or ""))
    if language:
        found["locale"] = language.group(1).lower()
    consents = {
        channel: CONSENT_STATES[state]
        for channel, key in (("email", "email_marketing_consent"), ("sms", "sms_marketing_consent"))
        if isinstance(person.get(key), dict)
        and isinstance(state := person[key].get("state"), str)
        and state in CONSENT_STATES
    }
    if consents:
        found["consents"] = consents
    tags = person.get("tags")
    if isinstance(tags, str):
        found["attributes"] = {"shopify_tags": [tag.strip() for tag in tags.split(",") if tag.strip()]}
    return found


def _order_names(body: Raw) -> Raw:
    """An order's `id` as the customer knows it (`#1001`) and Shopify's own `shopify_id`."""
    shopify_id = _id(body.get("id"))
    return {"id": _text(body.get("name")) or shopify_id, "shopify_id": shopify_id}


def _tracking(fulfillment: Raw) -> Raw:
    return {
        "tracking_number": _text(fulfillment.get("tracking_number")),
        "tracking_url": _text(fulfillment.get("tracking_url")),
        "carrier": _text(fulfillment.get("tracking_company")),
        "shipment_status": _text(fulfillment.get("shipment_status")),
    }


def _items(lines: Any) -> list[Raw]:
    if not isinstance(lines, list):
        return []
    return [
        {
            "sku": _text(line.get("sku")),
            "name": _text(line.get("title") or line.get("name")),
            "variant": _text(line.get("variant_title")),
            "price": _money(line.get("price")),
            "qty": line.get("quantity") if isinstance(line.get("quantity"), int) else 1,
            "product_id": _id(line.get("product_id")),
            "variant_id": _id(line.get("variant_id")),
        }
        for line in lines
        if isinstance(line, dict)
    ]


def _discount_codes(body: Raw) -> list[str]:
    codes = body.get("discount_codes")
    if not isinstance(codes, list):
        return []
    return [code["code"] for code in codes if isinstance(code, dict) and isinstance(code.get("code"), str)]


def _at(body: Raw, received_at: datetime, fields: tuple[str, ...]) -> str:
    """The first of `fields` that is a time with an offset; else when the delivery arrived."""
    for name in fields:
        value = body.get(name)
        if isinstance(value, str):
            with contextlib.suppress(ValueError, OverflowError):  # not a time; beyond year 1 or 9999
                moment = datetime.fromisoformat(value)
                if moment.tzinfo is not None:
                    return to_iso(moment)
    return to_iso(received_at)


def _money(value: Any) -> float | None:
    """Shopify's amounts are decimal strings ("199.00")."""
    if isinstance(value, bool):
        return None
    with contextlib.suppress(TypeError, ValueError, OverflowError):
        amount = float(value)
        if amount == amount and abs(amount) < 1e15:  # not NaN, not absurd
            return round(amount, 2)
    return None


def _order_ref(value: Any, delivery: str) -> str:
    """An order's id in event ids; for a body without one (Shopify always sends it), the
    delivery's, so that nothing else is taken for the same order."""
    return _id(value) or f"delivery-{delivery}"


def _id(value: Any) -> str | None:
    """A Shopify id (a number, sometimes as text) as text; None for anything else."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int) and value >= 0:
        return str(value)
    if isinstance(value, str) and value.isascii() and value.isdigit() and len(value) <= 20:
        return value
    return None


def _text(value: Any) -> str | None:
    return value.strip()[:2000] or None if isinstance(value, str) else None
