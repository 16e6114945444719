"""What condition functions may ask about a customer's past, read lazily from the store.

An expression's context carries a `history` object; condition plugins reach it through
Jinja's `pass_context` (`context["history"]`).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any


class History:
    """A customer's orders and views, queried only when an expression asks."""

    def __init__(self, store: Any, customer_id: str, now: datetime):
        self.store = store
        self.customer_id = customer_id
        self.now = now

    def orders(self) -> list[dict[str, Any]]:
        """The customer's `order.placed` events' orders, oldest first."""
        events = self.store.events_of_types(self.customer_id, ["order.placed"])
        return [event["data"].get("order") or {} for event in events]

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
        events = self.store.events_of_types(self.customer_id, ["product.viewed"], self.now - since)
        products: dict[str, dict[str, Any]] = {}
        for event in reversed(events):
            product = event["data"].get("product")
            if isinstance(product, dict):
                key = str(product.get("sku") or product.get("url") or product.get("name"))
                products.setdefault(key, product)
        return list(products.values())
