"""A shop's month of events, generated reproducibly (seeded), for `boomerang simulate`.

    python -m bench.shop_month 100000 > events.jsonl     # 100 000 customers, ~185 000 events
    python -m bench.shop_month 2000 --seed 7 > small.jsonl

Each customer has one visit somewhere in March 2026 that follows one of a few paths (viewing
products, adding to the cart, checking out, ordering, then shipping and delivery), so that the
reference scenarios `boomerang init` copies all have work: browse abandonment, abandoned cart,
delivery status, review request, cross-sell after a bicycle, recommendations. Some customers
carry a timezone, a locale, a phone or a withdrawn consent. On average a customer brings about
1.85 events. The lines come out in time order, as `simulate` requires.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from datetime import UTC, datetime, timedelta
from typing import Any, TextIO

START = datetime(2026, 3, 1, tzinfo=UTC)
DAYS = 30
SEED = 11

CATALOGUE = [
    ("B-1", "Trek FX 2", 790, "bicycles"),
    ("B-2", "Cube Nature", 650, "bicycles"),
    ("H-7", "Giro Register", 49, "helmets"),
    ("H-8", "Bell Nomad", 39, "helmets"),
    ("T-3", "Schwalbe Marathon kit", 65, "tyres"),
    ("L-1", "Lezyne light set", 35, "lights"),
    ("K-1", "Kettle", 25, "kitchen"),
    ("K-2", "Toaster", 30, "kitchen"),
    ("G-1", "Gloves", 15, "clothing"),
    ("P-9", "Pump", 22, "tools"),
]
LOCALES = [("en", 60), ("ru", 25), ("uk", 15)]
TIMEZONES = ["Europe/Moscow", "Europe/Kyiv", "Europe/Berlin", "Asia/Vladivostok", "America/New_York"]
NAMES = ["Anna", "Boris", "Vera", "Gleb", "Mila", "Uma", "Oleg", "Iryna", "Tom", "Sara"]

# (path, weight): what a visit does; the weights give about 1.85 events per customer.
PATHS = [
    (("view",), 45),
    (("view", "view"), 13),
    (("view", "cart"), 17),
    (("cart",), 5),
    (("view", "cart", "checkout"), 5),
    (("view", "cart", "checkout", "order"), 6),
    (("cart", "order", "shipped", "delivered"), 6),
    (("view", "cart", "order", "shipped"), 3),
]


def _item(rng: random.Random) -> dict[str, Any]:
    sku, name, price, category = rng.choice(CATALOGUE)
    return {
        "sku": sku,
        "name": name,
        "price": price,
        "qty": 1,
        "category": category,
        "url": f"https://shop.example/p/{sku.lower()}",
    }


def _customer(rng: random.Random, number: int) -> dict[str, Any]:
    customer: dict[str, Any] = {"id": f"c-{number}"}
    if rng.random() < 0.9:
        customer["email"] = f"customer{number}@example.com"
    if rng.random() < 0.4:
        customer["phone"] = f"+7999{number:07d}"
    if rng.random() < 0.8:
        customer["name"] = rng.choice(NAMES)
    customer["locale"] = rng.choices([code for code, _ in LOCALES], [weight for _, weight in LOCALES])[0]
    if rng.random() < 0.3:
        customer["timezone"] = rng.choice(TIMEZONES)
    if rng.random() < 0.05:
        customer["consents"] = {"email": False}
    if rng.random() < 0.1:
        customer["birthday"] = f"--{rng.randrange(1, 13):02d}-{rng.randrange(1, 29):02d}"
    return customer


def _visit(rng: random.Random, number: int) -> list[tuple[datetime, dict[str, Any]]]:
    """One customer's events: a visit at a random moment of the month, following one path."""
    customer = _customer(rng, number)
    path = rng.choices([steps for steps, _ in PATHS], [weight for _, weight in PATHS])[0]
    at = START + timedelta(seconds=rng.randrange(DAYS * 86400 - 6 * 3600))
    items = [_item(rng)]
    events = []
    for index, step in enumerate(path):
        if step == "view":
            data: dict[str, Any] = {"product": items[-1]}
            kind = "product.viewed"
            if index > 0:
                items.append(_item(rng))
                data = {"product": items[-1]}
        elif step == "cart":
            kind = "cart.updated"
            data = {"cart": _cart(items, number)}
        elif step == "checkout":
            kind = "checkout.started"
            data = {"cart": _cart(items, number)}
        elif step == "order":
            kind = "order.placed"
            data = {"order": _order(items, number)}
        elif step == "shipped":
            at += timedelta(hours=rng.randrange(12, 48))
            kind = "order.shipped"
            data = {"order": {**_order(items, number), "tracking_url": f"https://track.example/{number}"}}
        else:
            at += timedelta(days=rng.randrange(1, 4))
            kind = "order.delivered"
            data = {"order": {**_order(items, number), "courier_phone": "+79990000000"}}
        events.append((at, {"id": f"e-{number}-{index}", "type": kind, "customer": customer, "data": data}))
        at += timedelta(minutes=rng.randrange(1, 15))
    return events


def _cart(items: list[dict[str, Any]], number: int) -> dict[str, Any]:
    return {
        "url": f"https://shop.example/cart/{number}",
        "total": sum(item["price"] for item in items),
        "currency": "EUR",
        "items": items,
    }


def _order(items: list[dict[str, Any]], number: int) -> dict[str, Any]:
    return {
        "id": f"o-{number}",
        "total": sum(item["price"] for item in items),
        "currency": "EUR",
        "items": items,
    }


def write_month(customers: int, out: TextIO, seed: int = SEED) -> int:
    """Write the month's events of `customers` customers as JSON lines in time order; returns how many."""
    rng = random.Random(seed)
    lines: list[tuple[datetime, int, str]] = []
    for number in range(1, customers + 1):
        for at, event in _visit(rng, number):
            # Kept as text: a tuple per event, not the nested dicts, bounds the generator's memory.
            event = {"id": event["id"], "type": event["type"], "at": at.strftime("%Y-%m-%dT%H:%M:%SZ"),
                     "customer": event["customer"], "data": event["data"]}
            lines.append((at, len(lines), json.dumps(event, ensure_ascii=False)))
    lines.sort()
    for _, _, line in lines:
        out.write(line + "\n")
    return len(lines)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.shop_month", description=__doc__.split("\n")[0])
    parser.add_argument("customers", type=int)
    parser.add_argument("--seed", type=int, default=SEED)
    arguments = parser.parse_args(argv)
    count = write_month(arguments.customers, sys.stdout, arguments.seed)
    print(f"{count} events of {arguments.customers} customers", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
