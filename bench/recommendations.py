"""Recommendations on a year of orders: `Store.recommend` for each built-in strategy, beside a
plain indexed lookup (a customer's last order line) measured in the same run on the same data.

The database is the real schema (`Store` migrates it), filled with set-based inserts as ingest
would have left it: 5,000 products in 50 categories, 100,000 customers, 300,000 orders over
the last year (one to five lines each, products drawn with a long tail: a few sell often, most
rarely), five `product.viewed` events per customer in the last 60 days, and a cart for one
customer in ten. Each strategy is timed for 200 customers who ordered, one call per customer
(as a `with:` value asks), and for the same customers in batches of 64 (as a batch of sends
fetches them), per customer.

`BENCH_RECOMMENDATIONS_SCALE` (default 1.0) scales customers, orders and views, for a quick try.
"""

from __future__ import annotations

import json
import os
import random
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

from bench.figures import Figure
from boomerang.clock import to_iso
from boomerang.recommendations import BUILTIN
from boomerang.store import Store

GOAL = "a year of orders (100k customers, 300k orders, 5k products): each strategy < 50 ms a customer"
PRODUCTS, CATEGORIES = 5_000, 50
CUSTOMERS, ORDERS, VIEWS_EACH = 100_000, 300_000, 5
ASKED, BATCH = 200, 64
NOW = datetime(2026, 12, 1, 12, tzinfo=UTC)
RULES = {
    f"cat-{n}": [f"cat-{(n + 1) % CATEGORIES}", f"cat-{(n + 2) % CATEGORIES}"] for n in range(CATEGORIES)
}


def build(store: Store, scale: float, rng: random.Random) -> list[str]:
    """Fill the store; returns the customers to ask about (who ordered)."""
    customers = max(1000, int(CUSTOMERS * scale))
    orders = max(3000, int(ORDERS * scale))
    ids = [f"P{n:05}" for n in range(PRODUCTS)]
    # A long tail: the n-th most popular product sells about 1/(n+1)^0.9 as often as the first.
    weights, total = [], 0.0
    for n in range(PRODUCTS):
        total += 1 / (n + 1) ** 0.9
        weights.append(total)
    popular = rng.sample(ids, PRODUCTS)  # popularity does not follow the ids
    seen = to_iso(NOW - timedelta(days=400))
    db = store.db.conn
    with store.transaction():
        db.executemany(
            "INSERT INTO products (id, name, url, image, price, currency, category, seen_at)"
            " VALUES (?, ?, ?, ?, ?, 'EUR', ?, ?)",
            [
                (
                    pid,
                    f"Product {pid}",
                    f"https://shop.example/p/{pid}",
                    None,
                    5 + n % 200,
                    f"cat-{n % CATEGORIES}",
                    seen,
                )
                for n, pid in enumerate(ids)
            ],
        )
        lines = []
        buyers = set()
        for number in range(orders):
            customer = f"c-{rng.randrange(customers)}"
            buyers.add(customer)
            at = to_iso(NOW - timedelta(seconds=rng.randrange(365 * 86400)))
            products = set(rng.choices(popular, cum_weights=weights, k=rng.randint(1, 5)))
            lines += [(str(number), pid, customer, at, 1) for pid in products]
        db.executemany(
            "INSERT INTO order_items (order_id, product_id, customer_id, at, qty) VALUES (?, ?, ?, ?, ?)",
            lines,
        )
        views = []
        for n in range(customers):
            for k in range(VIEWS_EACH):
                pid = rng.choices(popular, cum_weights=weights)[0]
                at = to_iso(NOW - timedelta(seconds=rng.randrange(60 * 86400)))
                data = json.dumps({"product": {"id": pid, "name": f"Product {pid}"}})
                views.append((f"v-{n}-{k}", at, f"c-{n}", data, at))
        db.executemany(
            "INSERT INTO events (id, type, at, customer_id, data, source, received_at, handled)"
            " VALUES (?, 'product.viewed', ?, ?, ?, 'api', ?, 1)",
            views,
        )
        carts = [
            (f"c-{n}", pid, to_iso(NOW - timedelta(hours=1)))
            for n in range(0, customers, 10)
            for pid in set(rng.choices(popular, cum_weights=weights, k=2))
        ]
        db.executemany("INSERT INTO cart_items (customer_id, product_id, at) VALUES (?, ?, ?)", carts)
    store.db.execute("ANALYZE")
    print(
        f"built: {customers:,} customers, {orders:,} orders ({len(lines):,} lines), "
        f"{len(views):,} views, {len(carts):,} cart lines, {PRODUCTS:,} products",
        flush=True,
    )
    return rng.sample(sorted(buyers), ASKED)


def per_call(call: Callable[[list[str]], object], customers: list[str], size: int) -> float:
    """Milliseconds per customer, asking for them `size` at a time (after one warm-up call)."""
    call(customers[:size])
    started = time.perf_counter()
    for start in range(0, len(customers), size):
        call(customers[start : start + size])
    return (time.perf_counter() - started) * 1000 / len(customers)


def run() -> list[Figure]:
    scale = float(os.environ.get("BENCH_RECOMMENDATIONS_SCALE", "1.0"))
    rng = random.Random(14)
    with tempfile.TemporaryDirectory() as directory:
        store = Store(Path(directory) / "boomerang.db")
        try:
            asked = build(store, scale, rng)

            def last_order(customers: list[str]) -> object:
                return [
                    store._select(
                        "SELECT order_id, at FROM order_items WHERE customer_id = ? ORDER BY at DESC LIMIT 1",
                        [customer],
                    )
                    for customer in customers
                ]

            baseline = per_call(last_order, asked, 1)
            print(
                f"baseline: a customer's last order line, one indexed lookup  {baseline:8.3f} ms", flush=True
            )
            figures = []
            for strategy in BUILTIN:

                def recommend(customers: list[str], strategy: str = strategy) -> object:
                    return store.recommend(strategy, customers, 4, NOW, RULES)

                alone = per_call(recommend, asked, 1)
                batched = per_call(recommend, asked, BATCH)
                print(
                    f"{strategy:<12} one customer a call {alone:8.2f} ms   in batches of {BATCH} "
                    f"{batched:8.2f} ms a customer",
                    flush=True,
                )
                figures.append(
                    Figure(
                        "recommend",
                        round(alone, 2),
                        "ms/customer",
                        round(baseline, 4),
                        GOAL,
                        alone < 50,
                        f"{strategy}, one customer a call; batches of {BATCH}: {batched:.2f} ms a customer",
                    )
                )
            return figures
        finally:
            store.close()
