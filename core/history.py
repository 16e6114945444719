"""What condition functions may ask about a customer's past, read lazily from the store.

A `History` is a capability, never part of an expression's context: condition functions reach
the one of the customer being evaluated through `boomerang.expressions.scope().history`. Its
methods return fresh lists and dicts, so nothing a function hands on leads back to the store.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

# (event types, since) → the customer's stored events of those types, oldest first, as dicts
# with `id`, `type`, `at` and `data`. The engine binds it to the customer and to the thread it
# may read the store from.
EventReader = Callable[[list[str], datetime | None], list[dict[str, Any]]]


class History:
    """A customer's orders and views, queried only when an expression asks."""

    def __init__(self, read_events: EventReader, now: datetime):
        self._read_events = read_events
        self.now = now

    def orders(self) -> list[dict[str, Any]]:
        """The customer's `order.placed` events' orders, oldest first."""
        return [event["data"].get("order") or {} for event in self._read_events(["order.placed"], None)]

    def categories_bought(self) -> set[str]:
        """Every category of every item the customer ordered."""
        return {
            str(item.get("category"))
            for order in self.orders()
            for item in order.get("items") or []
            if isinstance(item, dict) and item.get("category")
        }

    def viewed_products(self, since: timedelta) -> list[dict[str, Any]]:
        """Products viewed since `now - since`, latest view first, one entry per product."""
        events = self._read_events(["product.viewed"], self.now - since)
        products: dict[str, dict[str, Any]] = {}
        for event in reversed(events):
            product = event["data"].get("product")
            if isinstance(product, dict):
                key = str(product.get("sku") or product.get("url") or product.get("name"))
                products.setdefault(key, product)
        return list(products.values())
