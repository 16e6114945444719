"""Products: the catalogue kept from events, order lines and carts, and the recommendations
read from them, for a whole batch of customers at once (the rules: core/recommendations.py)."""

from __future__ import annotations

import json
from collections.abc import Collection, Iterable, Mapping
from datetime import datetime
from typing import Any

from boomerang.clock import to_iso
from boomerang.recommendations import BUILTIN, ID_KEYS, TEXT_LIMIT, catalogue_rows, since
from boomerang.store import rows
from boomerang.store.quarantine import Quarantine


def _viewed_id(column: str) -> str:
    """SQL for the catalogue id of the product of a `product.viewed` event's data, as
    `recommendations.product_id` reads it: the first of its id keys set to a text or a number."""
    cases = []
    for key in ID_KEYS:
        path = f"'$.product.{key}'"
        cases.append(
            f"CASE WHEN json_type({column}, {path}) IN ('integer', 'text')"
            f" AND json_extract({column}, {path}) != ''"
            f" THEN substr(CAST(json_extract({column}, {path}) AS TEXT), 1, {TEXT_LIMIT}) END"
        )
    return f"coalesce({', '.join(cases)})"


# The customers asked about, and what each has bought or has in the cart: never recommended.
_COMMON = """
    asked(customer_id) AS (SELECT DISTINCT value FROM json_each(:customers)),
    owned(customer_id, product_id) AS (
        SELECT o.customer_id, o.product_id FROM asked a JOIN order_items o ON o.customer_id = a.customer_id
        UNION
        SELECT k.customer_id, k.product_id FROM asked a JOIN cart_items k ON k.customer_id = a.customer_id
    ),
    owned_count(customer_id, n) AS (
        SELECT a.customer_id, count(w.product_id) FROM asked a
        LEFT JOIN owned w ON w.customer_id = a.customer_id GROUP BY a.customer_id
    ),
    mine(customer_id, category) AS (
        SELECT DISTINCT w.customer_id, p.category FROM owned w JOIN products p ON p.id = w.product_id
        WHERE p.category IS NOT NULL
    ),
    sales(product_id, sold) AS (
        SELECT product_id, sum(qty) FROM order_items WHERE at >= :since GROUP BY product_id
    )"""

# Each strategy: `picks(customer_id, product_id, rank)`, the products in the order they are
# recommended, what the customer owns left out.
_PICKS = {
    "viewed": f"""
    views(customer_id, product_id, at) AS (
        SELECT e.customer_id, {_viewed_id("e.data")}, max(e.at)
        FROM asked a JOIN events e ON e.customer_id = a.customer_id AND e.at >= :since
        WHERE e.type = 'product.viewed' GROUP BY 1, 2
    ),
    picks AS (
        SELECT v.customer_id, v.product_id,
            row_number() OVER (PARTITION BY v.customer_id ORDER BY v.at DESC, v.product_id) AS rank
        FROM views v
        WHERE v.product_id IS NOT NULL AND NOT EXISTS (
            SELECT 1 FROM owned w WHERE w.customer_id = v.customer_id AND w.product_id = v.product_id)
    )""",
    # Only the first `limit + owned` of a category (or of the shop) can be picked for a
    # customer, whose owned products are at most that many of them: the rest is never ranked.
    "bestsellers": """
    ranked_sales AS (
        SELECT s.product_id, s.sold, p.category,
            row_number() OVER (ORDER BY s.sold DESC, s.product_id) AS overall,
            row_number() OVER (PARTITION BY p.category ORDER BY s.sold DESC, s.product_id) AS within
        FROM sales s JOIN products p ON p.id = s.product_id
    ),
    candidates(customer_id, product_id, sold) AS (
        SELECT m.customer_id, r.product_id, r.sold
        FROM mine m JOIN owned_count c ON c.customer_id = m.customer_id
        JOIN ranked_sales r ON r.category = m.category AND r.within <= :limit + c.n
        UNION ALL
        SELECT c.customer_id, r.product_id, r.sold
        FROM owned_count c JOIN ranked_sales r ON r.overall <= :limit + c.n
        WHERE NOT EXISTS (SELECT 1 FROM mine m WHERE m.customer_id = c.customer_id)
    ),
    picks AS (
        SELECT d.customer_id, d.product_id,
            row_number() OVER (PARTITION BY d.customer_id ORDER BY d.sold DESC, d.product_id) AS rank
        FROM candidates d
        WHERE NOT EXISTS (
            SELECT 1 FROM owned w WHERE w.customer_id = d.customer_id AND w.product_id = d.product_id)
    )""",
    "cross_sell": """
    rules(bought, suggested) AS (
        SELECT json_extract(value, '$[0]'), json_extract(value, '$[1]') FROM json_each(:rules)
    ),
    targets(customer_id, category) AS (
        SELECT DISTINCT m.customer_id, r.suggested FROM mine m JOIN rules r ON r.bought = m.category
    ),
    picks AS (
        SELECT t.customer_id, p.id AS product_id,
            row_number() OVER (PARTITION BY t.customer_id
                ORDER BY coalesce(s.sold, 0) DESC, p.seen_at DESC, p.id) AS rank
        FROM targets t JOIN products p ON p.category = t.category
        LEFT JOIN sales s ON s.product_id = p.id
        WHERE NOT EXISTS (SELECT 1 FROM owned w WHERE w.customer_id = t.customer_id AND w.product_id = p.id)
    )""",
    # Customers who bought one of the customer's products (bought or in the cart), and how many
    # of them bought each other product: the co-purchase count, highest first.
    "also_bought": """
    peers(customer_id, peer) AS (
        SELECT DISTINCT w.customer_id, o.customer_id FROM owned w
        JOIN order_items o ON o.product_id = w.product_id AND o.customer_id != w.customer_id
    ),
    together(customer_id, product_id, n) AS (
        SELECT p.customer_id, o.product_id, count(DISTINCT p.peer)
        FROM peers p JOIN order_items o ON o.customer_id = p.peer GROUP BY 1, 2
    ),
    picks AS (
        SELECT t.customer_id, t.product_id,
            row_number() OVER (PARTITION BY t.customer_id ORDER BY t.n DESC, t.product_id) AS rank
        FROM together t
        WHERE NOT EXISTS (
            SELECT 1 FROM owned w WHERE w.customer_id = t.customer_id AND w.product_id = t.product_id)
    )""",
}
assert set(_PICKS) == set(BUILTIN)

_SELECT = """
SELECT k.customer_id, p.id, p.name, p.url, p.image, p.price, p.currency, p.category
FROM picks k JOIN products p ON p.id = k.product_id
WHERE k.rank <= :limit ORDER BY k.customer_id, k.rank"""


class Products(Quarantine):
    """The `products`, `order_items` and `cart_items` tables."""

    def _record_catalogue(self, events: Iterable[Any]) -> None:
        """Keep what a batch of stored events says about products, in the batch's transaction:
        the catalogue (the latest seen wins, a field it leaves out is kept), order lines, and
        each customer's cart as its latest cart event (or order, which empties it) left it."""
        found = catalogue_rows(
            (event.type, to_iso(event.at), event.customer_id, event.data) for event in events
        )
        if found.products:
            self.db.conn.executemany(
                "INSERT INTO products (id, name, url, image, price, currency, category, seen_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO UPDATE SET"
                " name = coalesce(excluded.name, name), url = coalesce(excluded.url, url),"
                " image = coalesce(excluded.image, image), price = coalesce(excluded.price, price),"
                " currency = coalesce(excluded.currency, currency),"
                " category = coalesce(excluded.category, category), seen_at = excluded.seen_at"
                " WHERE excluded.seen_at >= products.seen_at",
                sorted(found.products, key=lambda row: row[-1]),
            )
        if found.order_lines:
            self.db.conn.executemany(
                "INSERT OR IGNORE INTO order_items (order_id, product_id, customer_id, at, qty)"
                " VALUES (?, ?, ?, ?, ?)",
                found.order_lines,
            )
        if found.carts:
            # A cart older than the one kept (an import of the past) changes nothing.
            carts = [(customer, at) for customer, (at, _) in found.carts.items()]
            newer = {
                row[0]
                for start in range(0, len(carts), 400)
                for row in self.db.execute(
                    "SELECT DISTINCT k.customer_id FROM json_each(?) j JOIN cart_items k"
                    " ON k.customer_id = json_extract(j.value, '$[0]')"
                    " AND k.at > json_extract(j.value, '$[1]')",
                    [json.dumps(carts[start : start + 400])],
                )
            }
            kept = [(customer, at) for customer, at in carts if customer not in newer]
            self.db.conn.executemany("DELETE FROM cart_items WHERE customer_id = ?", [(c,) for c, _ in kept])
            self.db.conn.executemany(
                "INSERT INTO cart_items (customer_id, product_id, at) VALUES (?, ?, ?)",
                [
                    (customer, product, at)
                    for customer, at in kept
                    for product in dict.fromkeys(found.carts[customer][1])
                ],
            )

    def _forget_products(self, customer_id: str, events: list[tuple[str, str]]) -> None:
        """Before a customer is erased: the catalogue's products their events (`(type, data)`,
        as stored) name, deleted unless another customer bought them or has them in the cart (a
        product's name may say who looked at it). A product seen again comes back."""
        named = set()
        for event_type, text in events:
            try:
                data = json.loads(text)
            except ValueError:
                continue
            if isinstance(data, dict):
                found = catalogue_rows([(event_type, "", customer_id, data)])
                named.update(row[0] for row in found.products)
        self.db.execute(
            "DELETE FROM products WHERE id IN (SELECT value FROM json_each(:named))"
            " AND NOT EXISTS (SELECT 1 FROM order_items o"
            "  WHERE o.product_id = products.id AND o.customer_id != :customer)"
            " AND NOT EXISTS (SELECT 1 FROM cart_items k"
            "  WHERE k.product_id = products.id AND k.customer_id != :customer)",
            {"named": json.dumps(sorted(named)), "customer": customer_id},
        )

    def recommend(
        self,
        strategy: str,
        customer_ids: Collection[str],
        limit: int,
        now: datetime,
        cross_sell: Mapping[str, list[str]] | None = None,
    ) -> dict[str, list[dict[str, Any]]]:
        """Up to `limit` products of a built-in strategy for each customer, best first (one
        query for them all); every customer asked has a list, maybe empty. `cross_sell` is the
        config's rules, for that strategy. An unreadable catalogue row is set aside and skipped."""
        lists: dict[str, list[dict[str, Any]]] = {customer: [] for customer in customer_ids}
        if not lists:
            return lists
        rules = [[bought, to] for bought, targets in (cross_sell or {}).items() for to in targets]
        if strategy == "cross_sell" and not rules:
            return lists
        found = self._select(
            f"WITH {_COMMON},{_PICKS[strategy]}{_SELECT}",
            {
                "customers": json.dumps(list(lists)),
                "since": to_iso(since(now)),
                "limit": limit,
                "rules": json.dumps(rules),
            },
        )
        for row in found:
            product = self._read_row("products", row["id"], lambda row=row: rows.product(row))
            if product is not None:
                lists[row["customer_id"]].append(product)
        return lists
