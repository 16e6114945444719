"""Shopify webhook bodies as Shopify sends them, for tests, and the signature it computes.

The shapes (and most values) follow the examples of Shopify's webhook reference and REST
Admin API reference (Checkout/abandoned checkout, Order, Customer, Fulfillment resources,
API version 2025-01): ids are integers, amounts decimal strings, times ISO 8601 with the shop's
offset, consents objects with `state`, `opt_in_level` and `consent_updated_at`. Each builder
takes the few values a test varies.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import hmac
import json
from typing import Any

SHOP = "jsmith.myshopify.com"
SHOPIFY_SECRET = "shpss_0123456789abcdef0123456789ab"


def signature(body: bytes, secret: str = SHOPIFY_SECRET) -> str:
    """`X-Shopify-Hmac-Sha256` as Shopify computes it: base64 of HMAC-SHA256 of the raw body."""
    return base64.b64encode(hmac.new(secret.encode(), body, hashlib.sha256).digest()).decode()


def headers(topic: str, body: bytes, event_id: str, secret: str = SHOPIFY_SECRET) -> dict[str, str]:
    """The headers of one delivery, as Shopify sends them."""
    return {
        "Content-Type": "application/json",
        "X-Shopify-Topic": topic,
        "X-Shopify-Hmac-Sha256": signature(body, secret),
        "X-Shopify-Shop-Domain": SHOP,
        "X-Shopify-API-Version": "2025-01",
        "X-Shopify-Webhook-Id": f"b54557e4-bdd9-4b37-8a5f-bf7d70bcd043-{event_id}",
        "X-Shopify-Event-Id": event_id,
        "X-Shopify-Triggered-At": "2026-03-02T15:00:00.000000Z",
    }


def encode(payload: dict[str, Any]) -> bytes:
    """The body bytes, as Shopify serialises them (compact JSON)."""
    return json.dumps(payload, separators=(",", ":")).encode()


def _consent(state: str) -> dict[str, Any]:
    return {"state": state, "opt_in_level": "single_opt_in", "consent_updated_at": "2026-03-01T09:00:00Z"}


def _customer(customer_id: int, email: str | None, phone: str | None = None) -> dict[str, Any]:
    return {
        "id": customer_id,
        "email": email,
        "created_at": "2026-02-20T10:00:00-05:00",
        "updated_at": "2026-03-02T10:00:00-05:00",
        "first_name": "Bob",
        "last_name": "Norman",
        "state": "disabled",
        "note": None,
        "verified_email": True,
        "multipass_identifier": None,
        "tax_exempt": False,
        "phone": phone,
        "email_marketing_consent": _consent("subscribed"),
        "sms_marketing_consent": None,
        "tags": "vip, newsletter",
        "currency": "USD",
        "tax_exemptions": [],
        "admin_graphql_api_id": f"gid://shopify/Customer/{customer_id}",
        "default_address": {
            "id": 207119551,
            "customer_id": customer_id,
            "first_name": "Bob",
            "last_name": "Norman",
            "address1": "Chestnut Street 92",
            "city": "Louisville",
            "province": "Kentucky",
            "country": "United States",
            "zip": "40202",
            "phone": "555-625-1199",
            "default": True,
        },
    }


LINE_ITEMS = [
    {
        "id": 866550311766439020,
        "key": "866550311766439020",
        "product_id": 632910392,
        "variant_id": 808950810,
        "sku": "IPOD2008PINK",
        "title": "IPod Nano - 8GB",
        "variant_title": "Pink",
        "vendor": "Apple",
        "quantity": 1,
        "price": "199.00",
        "line_price": "199.00",
        "grams": 567,
        "requires_shipping": True,
        "taxable": True,
        "gift_card": False,
        "properties": [],
        "applied_discounts": [],
    }
]


def checkout(
    token: str = "0123456789abcdef0456456789abcdef",
    customer_id: int | None = 207119551,
    email: str | None = "bob.norman@mail.example.com",
    completed: bool = False,
) -> dict[str, Any]:
    """A `checkouts/create` / `checkouts/update` body (the abandoned checkout resource)."""
    return {
        "id": 450789469,
        "token": token,
        "cart_token": "68778783ad298f1c80c3bafcddeea02f",
        "email": email,
        "gateway": None,
        "buyer_accepts_marketing": False,
        "created_at": "2026-03-02T10:00:00-05:00",
        "updated_at": "2026-03-02T10:05:00-05:00",
        "landing_site": None,
        "note": None,
        "note_attributes": [],
        "referring_site": None,
        "shipping_lines": [],
        "taxes_included": False,
        "total_weight": 567,
        "currency": "USD",
        "completed_at": "2026-03-02T10:30:00-05:00" if completed else None,
        "closed_at": None,
        "user_id": None,
        "location_id": None,
        "source_identifier": None,
        "source_url": None,
        "device_id": None,
        "phone": None,
        "customer_locale": "en-CA",
        "line_items": copy.deepcopy(LINE_ITEMS),
        "name": "#450789469",
        "source": None,
        "abandoned_checkout_url": f"https://checkout.local/548380009/checkouts/{token}/recover?key=6dacd6065bb80268",
        "discount_codes": [],
        "tax_lines": [{"price": "11.94", "rate": 0.06, "title": "State Tax"}],
        "source_name": "web",
        "presentment_currency": "USD",
        "buyer_accepts_sms": False,
        "sms_marketing_phone": None,
        "total_discounts": "0.00",
        "total_line_items_price": "199.00",
        "total_price": "210.94",
        "total_tax": "11.94",
        "subtotal_price": "199.00",
        "total_duties": None,
        "billing_address": {"first_name": "Bob", "last_name": "Norman", "address1": "Chestnut Street 92"},
        "shipping_address": {"first_name": "Bob", "last_name": "Norman", "address1": "Chestnut Street 92"},
        "customer": None if customer_id is None else _customer(customer_id, email),
    }


def order(
    order_id: int = 450789469,
    checkout_token: str | None = "0123456789abcdef0456456789abcdef",
    customer_id: int = 207119551,
    email: str = "bob.norman@mail.example.com",
) -> dict[str, Any]:
    """An `orders/create` body (and `orders/paid`, `orders/cancelled`, `orders/fulfilled`)."""
    return {
        "id": order_id,
        "admin_graphql_api_id": f"gid://shopify/Order/{order_id}",
        "app_id": None,
        "browser_ip": "0.0.0.0",
        "buyer_accepts_marketing": False,
        "cancel_reason": None,
        "cancelled_at": None,
        "cart_token": "68778783ad298f1c80c3bafcddeea02f",
        "checkout_id": 901414060,
        "checkout_token": checkout_token,
        "confirmed": True,
        "contact_email": email,
        "created_at": "2026-03-02T10:30:00-05:00",
        "currency": "USD",
        "customer_locale": "en",
        "discount_codes": [{"code": "TENOFF", "amount": "10.00", "type": "fixed_amount"}],
        "email": email,
        "financial_status": "paid",
        "fulfillment_status": None,
        "name": "#1001",
        "number": 1,
        "order_number": 1001,
        "order_status_url": f"https://jsmith.myshopify.com/548380009/orders/{order_id}/authenticate?key=abc",
        "phone": "+557734881234",
        "presentment_currency": "USD",
        "processed_at": "2026-03-02T10:30:00-05:00",
        "source_name": "web",
        "subtotal_price": "199.00",
        "tags": "",
        "total_discounts": "10.00",
        "total_line_items_price": "199.00",
        "total_price": "200.94",
        "total_tax": "11.94",
        "updated_at": "2026-03-02T10:31:00-05:00",
        "billing_address": {"first_name": "Bob", "address1": "Chestnut Street 92", "phone": "555-625-1199"},
        "customer": _customer(customer_id, email),
        "fulfillments": [],
        "line_items": copy.deepcopy(LINE_ITEMS),
        "refunds": [],
        "shipping_address": {"first_name": "Bob", "address1": "Chestnut Street 92", "phone": "555-625-1199"},
        "shipping_lines": [],
    }


def fulfillment(order_id: int = 450789469, shipment_status: str | None = None) -> dict[str, Any]:
    """A `fulfillments/create` / `fulfillments/update` body."""
    return {
        "id": 255858046,
        "order_id": order_id,
        "status": "success",
        "created_at": "2026-03-03T09:00:00-05:00",
        "service": "manual",
        "updated_at": "2026-03-04T09:00:00-05:00",
        "tracking_company": "UPS",
        "shipment_status": shipment_status,
        "location_id": 24826418,
        "origin_address": None,
        "email": "bob.norman@mail.example.com",
        "destination": {
            "first_name": "Bob",
            "address1": "Chestnut Street 92",
            "phone": "555-625-1199",
            "city": "Louisville",
            "zip": "40202",
            "country": "United States",
            "last_name": "Norman",
        },
        "line_items": copy.deepcopy(LINE_ITEMS),
        "tracking_number": "1Z2345",
        "tracking_numbers": ["1Z2345"],
        "tracking_url": "https://www.ups.com/WebTracking?loc=en_US&requester=ST&trackNums=1Z2345",
        "tracking_urls": ["https://www.ups.com/WebTracking?loc=en_US&requester=ST&trackNums=1Z2345"],
        "receipt": {},
        "name": "#1001.1",
        "admin_graphql_api_id": "gid://shopify/Fulfillment/255858046",
    }


def customer(
    customer_id: int = 207119551,
    email: str | None = "bob.norman@mail.example.com",
    phone: str | None = "+16136120707",
    email_state: str = "subscribed",
    sms_state: str = "unsubscribed",
) -> dict[str, Any]:
    """A `customers/create` / `customers/update` body."""
    body = _customer(customer_id, email, phone)
    body["email_marketing_consent"] = _consent(email_state)
    body["sms_marketing_consent"] = {**_consent(sms_state), "consent_collected_from": "SHOPIFY"}
    body["locale"] = "fr-CA"
    return body


def redact(customer_id: int = 207119551, email: str = "bob.norman@mail.example.com") -> dict[str, Any]:
    """A `customers/redact` body."""
    return {
        "shop_id": 954889,
        "shop_domain": SHOP,
        "customer": {"id": customer_id, "email": email, "phone": "555-625-1199"},
        "orders_to_redact": [299938, 280263, 220458],
    }


def data_request(customer_id: int = 207119551, email: str = "bob.norman@mail.example.com") -> dict[str, Any]:
    """A `customers/data_request` body."""
    return {
        "shop_id": 954889,
        "shop_domain": SHOP,
        "orders_requested": [299938, 280263, 220458],
        "customer": {"id": customer_id, "email": email, "phone": "555-625-1199"},
        "data_request": {"id": 9999},
    }
