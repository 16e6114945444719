"""Products: the catalogue kept from events, order lines and carts, and the recommendations
read from them, for a whole batch of customers at once (the rules: core/recommendations.py)."""

from __future__ import annotations

import json
from collections.abc import Collection, Iterable, Mapping
from datetime import datetime
from typing import Any

from boomerang.clock import to_iso
from boomerang.recommendations import BUILTIN, catalogue_rows, since
from boomerang.store import rows
from boomerang.store.migrations import item_id
from boomerang.store.quarantine import Quarantine

PARTNERS = 50  # of each product a customer has, the products bought with it most often that count


# What a product (the column named) sold in the window, by the index on (product_id, at, qty).
_SOLD = "(SELECT sum(o.qty) FROM order_items o WHERE o.product_id = {} AND o.at >= :since)"

# The customers asked about, what each has bought or has in the cart (never recommended), and
# the categories of those products.
_COMMON = """
    asked(customer_id) AS (SELECT DISTINCT value FROM json_each(:customers)),
    owned(customer_id, product_id) AS MATERIALIZED (
        SELECT o.customer_id, o.product_id
        FROM asked a CROSS JOIN order_items o ON o.customer_id = a.customer_id
        UNION
        SELECT k.customer_id, k.product_id
        FROM asked a CROSS JOIN cart_items k ON k.customer_id = a.customer_id
    ),
    mine(customer_id, category) AS MATERIALIZED (
        SELECT DISTINCT w.customer_id, p.category FROM owned w CROSS JOIN products p ON p.id = w.product_id
        WHERE p.category IS NOT NULL
    )"""

# Each strategy: `picks(customer_id, product_id, rank)`, the products in the order they are
# recommended, what the customer owns left out. A product's sales are summed only for the
# products of the categories that matter (`_SOLD`); the whole shop's only for a customer of no
# known category, and then only the first `limit + owned` can be picked. CROSS JOIN keeps
# SQLite's join order as written: the few customers first, never the whole catalogue.
_PICKS = {
    "viewed": f"""
    views(customer_id, product_id, at) AS (
        SELECT e.customer_id, {item_id("json_extract(e.data, '$.product')")}, max(e.at)
        FROM asked a CROSS JOIN events e ON e.customer_id = a.customer_id AND e.at >= :since
        WHERE e.type = 'product.viewed' GROUP BY 1, 2
    ),
    picks AS (
        SELECT v.customer_id, v.product_id,
            row_number() OVER (PARTITION BY v.customer_id ORDER BY v.at DESC, v.product_id) AS rank
        FROM views v
        WHERE v.product_id IS NOT NULL AND NOT EXISTS (
            SELECT 1 FROM owned w WHERE w.customer_id = v.customer_id AND w.product_id = v.product_id)
    )""",
    "bestsellers": f"""
    in_categories(customer_id, product_id, sold) AS (
        SELECT m.customer_id, p.id, {_SOLD.format("p.id")}
        FROM mine m CROSS JOIN products p ON p.category = m.category
    ),
    unknown(customer_id, n) AS (
        SELECT a.customer_id, (SELECT count(*) FROM owned w WHERE w.customer_id = a.customer_id)
        FROM asked a WHERE NOT EXISTS (SELECT 1 FROM mine m WHERE m.customer_id = a.customer_id)
    ),
    shop(product_id, sold, place) AS (
        SELECT product_id, sold, row_number() OVER (ORDER BY sold DESC, product_id) FROM (
            SELECT product_id, sum(qty) AS sold FROM order_items INDEXED BY order_items_at
            WHERE at >= :since GROUP BY product_id) AS sales
    ),
    candidates(customer_id, product_id, sold) AS (
        SELECT customer_id, product_id, sold FROM in_categories WHERE sold IS NOT NULL
        UNION ALL
        SELECT u.customer_id, s.product_id, s.sold FROM unknown u CROSS JOIN shop s ON s.place <= :limit + u.n
    ),
    picks AS (
        SELECT d.customer_id, d.product_id,
            row_number() OVER (PARTITION BY d.customer_id ORDER BY d.sold DESC, d.product_id) AS rank
        FROM candidates d
        WHERE NOT EXISTS (
            SELECT 1 FROM owned w WHERE w.customer_id = d.customer_id AND w.product_id = d.product_id)
    )""",
    "cross_sell": f"""
    rules(bought, suggested) AS (
        SELECT json_extract(value, '$[0]'), json_extract(value, '$[1]') FROM json_each(:rules)
    ),
    targets(customer_id, category) AS (
        SELECT DISTINCT m.customer_id, r.suggested FROM mine m JOIN rules r ON r.bought = m.category
    ),
    candidates(customer_id, product_id, sold, seen_at) AS (
        SELECT t.customer_id, p.id, coalesce({_SOLD.format("p.id")}, 0), p.seen_at
        FROM targets t CROSS JOIN products p ON p.category = t.category
        WHERE NOT EXISTS (SELECT 1 FROM owned w WHERE w.customer_id = t.customer_id AND w.product_id = p.id)
    ),
    picks AS (
        SELECT customer_id, product_id,
            row_number() OVER (PARTITION BY customer_id ORDER BY sold DESC, seen_at DESC, product_id) AS rank
        FROM candidates
    )""",
    # How many customers bought both one of the customer's products (bought or in the cart) and
    # another product (`co_purchases`, counted as order lines are stored), summed over theirs:
    # of each of their products, only the `PARTNERS` bought with it most often (and ties), read
    # from the index in that order, so that a best seller bought with everything costs no more.
    "also_bought": f"""
    together(customer_id, product_id, n) AS (
        SELECT w.customer_id, c.other_id, sum(c.customers)
        FROM owned w CROSS JOIN co_purchases c INDEXED BY co_purchases_top
            ON c.product_id = w.product_id AND c.customers >= coalesce((
                SELECT x.customers FROM co_purchases x INDEXED BY co_purchases_top
                WHERE x.product_id = w.product_id ORDER BY x.customers DESC LIMIT 1 OFFSET {PARTNERS - 1}
            ), 0)
        GROUP BY 1, 2
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
                " name = coalesce(excluded.name, products.name), url = coalesce(excluded.url, products.url),"
                " image = coalesce(excluded.image, products.image),"
                " price = coalesce(excluded.price, products.price),"
                " currency = coalesce(excluded.currency, products.currency),"
                " category = coalesce(excluded.category, products.category), seen_at = excluded.seen_at"
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
            latest: dict[str, str] = {}
            for start in range(0, len(carts), 400):
                chunk = [customer for customer, _ in carts[start : start + 400]]
                marks = ", ".join("?" for _ in chunk)
                latest.update(
                    self.db.execute(
                        f"SELECT customer_id, max(at) FROM cart_items WHERE customer_id IN ({marks})"
                        " GROUP BY customer_id",
                        chunk,
                    ).fetchall()
                )
            kept = [(customer, at) for customer, at in carts if not latest.get(customer, "") > at]
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
