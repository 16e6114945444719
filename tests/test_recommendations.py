"""Recommendations on a real store (a SQLite file, a PostgreSQL schema): the catalogue kept from
events, each strategy over hand-built histories (what is in the cart or bought left out,
categories, the 30-day window, co-purchase ordering)."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from boomerang.clock import to_iso
from boomerang.recommendations import RecommendationError, catalogue_rows, check_call, fetched, product_id
from boomerang.store import MIGRATIONS, Store
from conftest import incoming, t

NOW = t("2026-03-31 12:00")
SHOP = "https://shop.example/p/"
CATALOGUE = {
    "B1": ("Trail bicycle", "bicycles", 799.0),
    "B2": ("City bicycle", "bicycles", 499.0),
    "B3": ("Kids bicycle", "bicycles", 199.0),
    "T1": ("Tyre kit", "tyres", 39.9),
    "T2": ("Winter tyres", "tyres", 59.9),
    "H1": ("Helmet", "helmets", 49.9),
    "L1": ("Lock", "locks", 19.9),
}


def item(sku: str, **extra: Any) -> dict[str, Any]:
    name, category, price = CATALOGUE[sku]
    return {"sku": sku, "name": name, "category": category, "price": price, "url": SHOP + sku, **extra}


class History:
    """Events of hand-built customers, stored through the real ingest."""

    def __init__(self, store: Store):
        self.store = store
        self.count = 0

    def add(self, customer: str, type_: str, days_ago: float, data: dict[str, Any]) -> None:
        self.count += 1
        at = NOW - timedelta(days=days_ago)
        self.store.ingest([incoming(f"e-{self.count}", type_, at, {"id": customer}, data)], at)

    def view(self, customer: str, sku: str, days_ago: float) -> None:
        self.add(customer, "product.viewed", days_ago, {"product": item(sku)})

    def order(self, customer: str, skus: list[str], days_ago: float) -> None:
        order = {"id": f"o-{self.count + 1}", "currency": "EUR", "items": [item(sku) for sku in skus]}
        self.add(customer, "order.placed", days_ago, {"order": order})

    def cart(self, customer: str, skus: list[str], days_ago: float) -> None:
        self.add(
            customer,
            "cart.updated",
            days_ago,
            {"cart": {"currency": "EUR", "items": [item(s) for s in skus]}},
        )


@pytest.fixture
def store(database: Path | str) -> Iterator[Store]:
    store = Store(database)
    yield store
    store.close()


@pytest.fixture
def history(store: Store) -> History:
    return History(store)


def ids(store: Store, strategy: str, customer: str, limit: int = 4, **kwargs: Any) -> list[str]:
    return [p["id"] for p in store.recommend(strategy, [customer], limit, NOW, **kwargs)[customer]]


def test_the_catalogue_keeps_the_latest_of_each_product_and_fields_it_left_out(
    store: Store, history: History
):
    history.view("anna", "B1", 3)
    history.add(
        "anna", "product.viewed", 1, {"product": {"sku": "B1", "price": 749, "image": "https://i/b1.jpg"}}
    )
    history.add("anna", "product.viewed", 2, {"product": {"sku": "B1", "price": 1}})  # older: ignored
    row = store.db.execute("SELECT name, price, image, category FROM products WHERE id = 'B1'").fetchone()
    assert row == ("Trail bicycle", 749.0, "https://i/b1.jpg", "bicycles")


def test_an_order_empties_the_cart_and_an_older_cart_changes_nothing(store: Store, history: History):
    history.cart("anna", ["B1", "T1"], 2)
    assert sorted(r[0] for r in store.db.execute("SELECT product_id FROM cart_items")) == ["B1", "T1"]
    history.cart("anna", ["H1"], 3)  # an import of an older cart
    assert [r[0] for r in store.db.execute("SELECT product_id FROM cart_items")] == ["B1", "T1"]
    history.order("anna", ["B1"], 1)
    assert store.db.execute("SELECT count(*) FROM cart_items").fetchone()[0] == 0
    lines = store.db.execute("SELECT product_id, customer_id, qty FROM order_items").fetchall()
    assert lines == [("B1", "anna", 1)]


def test_viewed_is_the_latest_views_of_the_window_without_what_was_bought_or_is_in_the_cart(
    store: Store, history: History
):
    for sku, days in (("L1", 5), ("B1", 3), ("B2", 2), ("T1", 1), ("H1", 40), ("B1", 0.5)):
        history.view("anna", sku, days)
    history.order("anna", ["B2"], 1.5)
    history.cart("anna", ["T1"], 0.9)
    assert ids(store, "viewed", "anna") == ["B1", "L1"]
    assert ids(store, "viewed", "anna", limit=1) == ["B1"]
    products = store.recommend("viewed", ["anna", "nobody"], 4, NOW)
    assert products["nobody"] == []
    assert products["anna"][0] == {
        "id": "B1",
        "name": "Trail bicycle",
        "url": SHOP + "B1",
        "image": None,
        "price": 799.0,
        "currency": None,
        "category": "bicycles",
    }


@pytest.fixture
def shop(history: History) -> History:
    """Orders of the last month (and an old one): H1 sold 5 times, T1 3, T2 2, B1 1, B2 1;
    L1 sold 10 times two months ago."""
    for number in range(5):
        history.order(f"h{number}", ["H1"], 10)
    for number in range(3):
        history.order(f"t{number}", ["T1"], 5)
    history.order("carol", ["B2", "T2"], 20)
    history.order("dave", ["B1", "T2", "H1"], 20)  # H1 sold 6 times in all
    for number in range(10):
        history.order(f"l{number}", ["L1"], 60)
    return history


def test_bestsellers_of_the_month_across_the_shop_for_a_customer_of_no_known_category(
    store: Store, shop: History
):
    assert ids(store, "bestsellers", "newcomer", limit=5) == ["H1", "T1", "T2", "B1", "B2"]


def test_bestsellers_in_the_customer_s_categories_without_what_they_own(store: Store, shop: History):
    shop.order("bob", ["B2"], 40)  # bicycles: bought before the window, still his category
    assert ids(store, "bestsellers", "bob") == ["B1"]
    shop.cart("bob", ["T2"], 1)  # tyres too now, but not T2 itself
    assert ids(store, "bestsellers", "bob") == ["T1", "B1"]


def test_cross_sell_suggests_the_categories_the_rules_map_to(store: Store, shop: History):
    rules = {"bicycles": ["tyres", "helmets"], "locks": ["bicycles"]}
    shop.order("bob", ["B3"], 3)
    assert ids(store, "cross_sell", "bob", cross_sell=rules) == ["H1", "T1", "T2"]
    shop.cart("bob", ["T1"], 1)
    assert ids(store, "cross_sell", "bob", cross_sell=rules) == ["H1", "T2"]
    assert ids(store, "cross_sell", "bob", cross_sell={}) == []
    assert ids(store, "cross_sell", "newcomer", cross_sell=rules) == []


def test_also_bought_orders_by_how_many_customers_bought_both(store: Store, shop: History):
    shop.order("erin", ["B2", "H1"], 2)
    shop.order("bob", ["B2"], 1)
    # who else bought B2: carol (B2, T2), erin (B2, H1) and dave? no: dave bought B1
    assert ids(store, "also_bought", "bob") == ["H1", "T2"]
    shop.order("frank", ["B2", "T2", "L1"], 1)
    assert ids(store, "also_bought", "bob") == ["T2", "H1", "L1"]
    shop.cart("bob", ["T2"], 0.5)  # in his cart: left out, and its buyers count too
    # H1: erin (with B2) and dave (with T2); L1: frank with B2 and with T2; B1: dave with T2
    assert ids(store, "also_bought", "bob") == ["H1", "L1", "B1"]


def test_many_customers_are_answered_by_one_query_each_with_their_own_list(store: Store, shop: History):
    shop.order("bob", ["B2"], 1)
    lists = store.recommend("bestsellers", ["bob", "newcomer", "carol"], 2, NOW)
    assert [p["id"] for p in lists["bob"]] == ["B1"]  # B3, a bicycle, never sold
    assert [p["id"] for p in lists["newcomer"]] == ["H1", "T1"]
    assert [p["id"] for p in lists["carol"]] == ["T1", "B1"]


def test_merging_customers_carries_their_orders_and_cart(store: Store, history: History):
    history.add("anna", "cart.updated", 2, {"cart": {"items": [item("T1")]}})
    history.store.ingest(
        [
            incoming(
                "e-order",
                "order.placed",
                NOW - timedelta(days=1),
                {"id": "c-9", "email": "a@example.com"},
                {"order": {"id": "o-9", "items": [item("B1")]}},
            )
        ],
        NOW,
    )
    history.store.ingest(
        [incoming("e-merge", "customer.updated", NOW, {"id": "anna", "email": "a@example.com"}, {})], NOW
    )
    owners = {
        r[0]
        for r in store.db.execute(
            "SELECT customer_id FROM order_items UNION SELECT customer_id FROM cart_items"
        )
    }
    assert len(owners) == 1


@pytest.mark.sqlite_only  # a blob where text belongs: PostgreSQL's typed columns refuse it
def test_an_unreadable_catalogue_row_is_set_aside_and_skipped(store: Store, history: History):
    history.view("anna", "B1", 2)
    history.view("anna", "B2", 1)
    store.db.execute("UPDATE products SET name = x'00ff' WHERE id = 'B2'")
    assert ids(store, "viewed", "anna") == ["B1"]
    assert store.db.execute("SELECT row_id FROM quarantine WHERE table_name = 'products'").fetchall() == [
        ("B2",)
    ]


def test_items_are_known_by_id_then_sku_then_product_id_then_url():
    assert product_id({"id": 7, "sku": "S"}) == "7"
    assert product_id({"id": "", "sku": "S"}) == "S"
    assert product_id({"product_id": 12.0}) == "12"
    assert product_id({"url": "https://x/p"}) == "https://x/p"
    assert product_id({"id": True, "name": "n"}) is None
    rows = catalogue_rows(
        [("order.placed", "2026-03-01T00:00:00Z", "c", {"order": {"items": [{"sku": "A"}]}})]
    )
    assert rows.order_lines == []  # an order without an id has no lines to keep
    assert [row[0] for row in rows.products] == ["A"]


def test_a_call_names_a_known_strategy_and_a_limit_in_range():
    with pytest.raises(
        RecommendationError, match=r"unknown strategy 'bestseller' \(did you mean 'bestsellers'\?\)"
    ):
        check_call("bestseller", 4, ["viewed", "bestsellers"])
    with pytest.raises(RecommendationError, match="limit must be a whole number from 1 to 20"):
        check_call("viewed", 0, ["viewed"])
    recommend = fetched({"viewed": [{"id": "a"}, {"id": "b"}]}, ["viewed", "bestsellers"])
    assert recommend("viewed", 1) == [{"id": "a"}]
    assert recommend("bestsellers", 3) == []


def test_forgetting_a_customer_keeps_their_order_lines_anonymously_and_what_only_they_named_goes(
    store: Store, history: History
):
    history.view("anna", "L1", 3)
    history.order("anna", ["B1", "H1"], 2)
    history.order("bob", ["H1"], 2)
    history.cart("anna", ["T1"], 1)
    gone = store.forget("anna", NOW)
    assert gone is not None
    assert sorted(r[0] for r in store.db.execute("SELECT id FROM products")) == ["H1"]  # bob bought it too
    lines = store.db.execute("SELECT customer_id, product_id FROM order_items ORDER BY 1, 2").fetchall()
    assert lines == [("bob", "H1"), (gone.anonymous_id, "B1"), (gone.anonymous_id, "H1")]
    assert store.db.execute("SELECT count(*) FROM cart_items").fetchone() == (0,)


@pytest.mark.sqlite_only
def test_the_upgrade_fills_the_catalogue_and_order_lines_from_the_events_stored_before(tmp_path: Path):
    path = tmp_path / "old.db"
    connection = sqlite3.connect(path)
    for number, _name, sql in MIGRATIONS:
        if number < 10:  # as a database written before migration 10 brought the catalogue
            connection.executescript(sql)
            connection.execute(f"PRAGMA user_version = {number}")
    stored = [
        (
            "product.viewed",
            "anna",
            5,
            {"product": {"url": "https://shop.example/p/l1", "name": " Lock ", "price": 19.9}},
        ),
        (
            "cart.updated",
            "anna",
            4,
            {"cart": {"currency": "eur", "items": [{"sku": "T1", "name": "Tyre kit"}]}},
        ),
        (
            "order.placed",
            "bob",
            3,
            {
                "order": {
                    "id": 7,
                    "currency": "EUR",
                    "items": [
                        {"sku": "B1", "name": "Trail bicycle", "category": "bicycles", "qty": 2},
                        {"id": 12.0, "sku": "X", "name": "Helmet", "category": "helmets", "price": "49.9"},
                        {"sku": "B1", "qty": 1},
                    ],
                }
            },
        ),
        (
            "order.placed",
            "carol",
            2,
            {"order": {"id": "8", "items": [{"sku": "B1"}, {"sku": "T1", "category": "tyres"}]}},
        ),
        ("order.placed", "dave", 1, {"order": {"items": [{"sku": "B1"}]}}),  # no id: no lines
    ]
    connection.executemany(
        "INSERT INTO events (id, type, at, customer_id, data, source, received_at)"
        " VALUES (?, ?, ?, ?, ?, 'api', ?)",
        [
            (f"e-{n}", kind, to_iso(NOW - timedelta(days=days)), who, json.dumps(data), to_iso(NOW))
            for n, (kind, who, days, data) in enumerate(stored)
        ],
    )
    connection.commit()
    connection.close()
    store = Store(path)
    try:
        products = store.db.execute(
            "SELECT id, name, price, currency, category FROM products ORDER BY id"
        ).fetchall()
        assert products == [
            ("12", "Helmet", None, "EUR", "helmets"),  # a price given as text is no price
            ("B1", "Trail bicycle", None, "EUR", "bicycles"),
            ("T1", "Tyre kit", None, "EUR", "tyres"),  # its cart's currency, upper case
            ("https://shop.example/p/l1", "Lock", 19.9, None, None),
        ]
        lines = store.db.execute(
            "SELECT order_id, product_id, customer_id, qty FROM order_items ORDER BY 1, 2"
        ).fetchall()
        assert lines == [
            ("7", "12", "bob", 1),
            ("7", "B1", "bob", 3),
            ("8", "B1", "carol", 1),
            ("8", "T1", "carol", 1),
        ]
        # the co-purchases were counted as the lines went in: carol bought B1 with T1, bob with 12
        assert [p["id"] for p in store.recommend("also_bought", ["erin"], 4, NOW)["erin"]] == []
        store.ingest(
            [incoming("e-9", "cart.updated", NOW, {"id": "erin"}, {"cart": {"items": [item("B1")]}})], NOW
        )
        assert ids(store, "also_bought", "erin") == ["12", "T1"]
        # the same ids as the ingest gives them
        rows = catalogue_rows([(kind, "", who, data) for kind, who, _, data in stored])
        assert sorted({row[0] for row in rows.products}) == [p[0] for p in products]
    finally:
        store.close()
