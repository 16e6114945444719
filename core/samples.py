"""Sample data to preview templates with (`boomerang preview` without `--customer` or
`--data`, and `preview --all`): a customer per locale (`SAMPLE_NAMES`; another locale gets the
English name), reachable on every channel, and an event of the type that triggers the first
scenario sending the template (none: `cart.updated`), whose data holds a sample `cart` (two
items, with URLs), `order` (its items, `tracking_url`, `courier_phone`) and `product`; and
sample products for `recommendations()` (`sample_recommend`)."""

from __future__ import annotations

import copy
from typing import Any

from boomerang.model import Customer
from boomerang.project import Project
from boomerang.recommendations import Recommend, fetched

SAMPLE_NAMES = {"en": "Anna", "ru": "Анна", "uk": "Ганна"}
SHOP = "https://shop.example"
_ITEMS = [
    {
        "sku": "BK-29",
        "name": "Trail bicycle 29",
        "category": "bicycles",
        "price": 799.0,
        "qty": 1,
        "currency": "EUR",
        "url": f"{SHOP}/p/bk-29",
    },
    {
        "sku": "HL-2",
        "name": "Helmet",
        "category": "helmets",
        "price": 59.9,
        "qty": 2,
        "currency": "EUR",
        "url": f"{SHOP}/p/hl-2",
    },
]
SAMPLE_DATA: dict[str, Any] = {
    "cart": {"id": "cart-1", "url": f"{SHOP}/cart/1", "total": 918.8, "currency": "EUR", "items": _ITEMS},
    "order": {
        "id": "1001",
        "total": 918.8,
        "currency": "EUR",
        "status": "shipped",
        "items": _ITEMS,
        "tracking_url": f"{SHOP}/track/1001",
        "courier_phone": "+49 30 1234567",
        "delivered": False,
    },
    "product": _ITEMS[0],
}
# What `recommendations()` gives in a preview with sample data, whatever the strategy.
SAMPLE_PRODUCTS: list[dict[str, Any]] = [
    {
        "id": sku,
        "name": name,
        "url": f"{SHOP}/p/{sku.lower()}",
        "image": f"{SHOP}/img/{sku.lower()}.jpg",
        "price": price,
        "currency": "EUR",
        "category": category,
    }
    for sku, name, category, price in (
        ("TY-29", "Tyre kit 29", "tyres", 39.9),
        ("LK-1", "Folding lock", "locks", 24.5),
        ("LT-3", "Front light", "lights", 19.9),
        ("BT-7", "Water bottle", "accessories", 9.9),
        ("GL-5", "Cycling gloves", "clothing", 29.0),
        ("PM-2", "Mini pump", "accessories", 15.0),
    )
]


def sample_recommend(known: list[str]) -> Recommend:
    """`recommendations()` in a preview with sample data: the sample products, for any strategy."""
    turns = {strategy: number % len(SAMPLE_PRODUCTS) for number, strategy in enumerate(known)}
    # each strategy starts at another product, so that two lists of one message differ
    lists = {strategy: SAMPLE_PRODUCTS[turn:] + SAMPLE_PRODUCTS[:turn] for strategy, turn in turns.items()}
    return fetched(lists, known)


def sample_customer(locale: str) -> Customer:
    """The sample customer of a locale, reachable on every channel."""
    return Customer(
        id=f"sample-{locale}",
        email=f"sample-{locale}@example.com",
        phone="+4915112345678",
        whatsapp="+4915112345678",
        telegram_chat_id="100200300",
        name=SAMPLE_NAMES.get(locale, SAMPLE_NAMES["en"]),
        locale=locale,
        push_subscriptions=[{"endpoint": "https://push.example/sample", "keys": {}}],
    )


def sample_event(project: Project, template_name: str) -> dict[str, Any]:
    """A sample event of the type that triggers the first scenario sending the template."""
    event_type = next(
        (
            scenario.trigger.events[0]
            for scenario in project.scenarios
            if scenario.trigger.events
            and any(step.kind == "send" and step.template == template_name for step in scenario.walk())
        ),
        "cart.updated",
    )
    return {"type": event_type, "data": copy.deepcopy(SAMPLE_DATA)}
