"""Recommendations, pure: the strategies, the product catalogue rows that events carry, and the
product lists that templates get.

The catalogue is kept from events as they are stored (`store/products.py` writes what
`catalogue_rows` reads out of a group of events): every product seen in a `product.viewed`, a
cart or an order (the latest seen wins), the lines of each `order.placed`, and each customer's
current cart. A template asks with `recommendations(limit=4, strategy="viewed")`; the sandbox
never reaches the store: whoever renders gives the evaluation's `Scope` a `recommend(strategy,
limit)` that returns plain product dicts, fetched beforehand for a whole batch of messages
(`Dispatch._plan_sends`) or read on the store's thread (`with:` values, preview).

The strategies (what is in the customer's cart or was bought by them is always left out):

- `viewed`: products the customer viewed in the last `WINDOW`, latest view first;
- `cross_sell`: products of the categories the config's `recommendations.cross_sell` maps the
  categories bought or in the cart to, best sellers of the `WINDOW` first;
- `bestsellers`: the best sellers of the last `WINDOW`, in the categories the customer bought
  or has in the cart when there are any, across the shop otherwise;
- `also_bought`: for each product the customer bought or has in the cart, how many customers
  bought both it and another product (the co-purchase counts, kept as order lines are stored),
  summed over the customer's products; the highest total first.

A plugin adds a strategy with `register_recommenders` (`kinds.Recommender`), named as its
`name`: it is asked in templates, once per message, before the message renders.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from boomerang.problems import did_you_mean

BUILTIN = ("viewed", "cross_sell", "bestsellers", "also_bought")
DEFAULT_LIMIT = 4
MAX_LIMIT = 20
WINDOW = timedelta(days=30)
# What a recommended product holds, as templates see it.
PRODUCT_FIELDS = ("id", "name", "url", "image", "price", "currency", "category")
# The keys an item may be known by, in the order they are tried: the first that is set is its id.
ID_KEYS = ("id", "sku", "product_id", "url")
# Events whose `cart` is the customer's cart as it is now (an order empties it).
CART_EVENTS = ("cart.updated", "checkout.started")
TEXT_LIMIT = 2048  # a longer name, url or category is cut: the catalogue is no archive

# (strategy, limit) → the products for the customer being rendered, plain dicts.
Recommend = Callable[[str, int], list[dict[str, Any]]]


class RecommendationError(ValueError):
    """A `recommendations()` call that cannot be answered: an unknown strategy, a bad limit."""


def product_id(item: Any) -> str | None:
    """The id a product or an item is known by in the catalogue: the first of `id`, `sku`,
    `product_id` and `url` that is set (a number is written as its digits); None if none is."""
    if not isinstance(item, Mapping):
        return None
    for key in ID_KEYS:
        value = item.get(key)
        if isinstance(value, bool) or value is None or value == "":
            continue
        if isinstance(value, int | str):
            return str(value)[:TEXT_LIMIT]
        if isinstance(value, float) and value.is_integer():
            return str(int(value))
    return None


def _text(value: Any) -> str | None:
    if isinstance(value, str) and value.strip():
        return value.strip()[:TEXT_LIMIT]
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    return None


def _price(value: Any) -> float | None:
    """A price as a number; text is no price (a shop's own words, such as "from 10")."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def product_row(item: Mapping[str, Any], currency: Any, seen_at: str) -> tuple[Any, ...] | None:
    """A catalogue row `(id, name, url, image, price, currency, category, seen_at)` for an item
    (its own currency, else its cart's or order's); None for one without an id."""
    identifier = product_id(item)
    if identifier is None:
        return None
    code = _text(item.get("currency")) or _text(currency)
    return (
        identifier,
        _text(item.get("name") or item.get("title")),
        _text(item.get("url")),
        _text(item.get("image") or item.get("image_url")),
        _price(item.get("price")),
        code.upper()[:3] if code else None,
        _text(item.get("category")),
        seen_at,
    )


def _quantity(item: Mapping[str, Any]) -> int:
    qty = item.get("qty", item.get("quantity", 1))
    return qty if isinstance(qty, int) and not isinstance(qty, bool) and 0 < qty < 1_000_000 else 1


@dataclass
class CatalogueRows:
    """What a group of events adds to the catalogue, as rows for `executemany`."""

    products: list[tuple[Any, ...]] = field(default_factory=list)
    # (order id, product id, customer id, at, qty)
    order_lines: list[tuple[str, str, str, str, int]] = field(default_factory=list)
    # customer id → (at, the product ids in the cart): the latest cart of each customer
    carts: dict[str, tuple[str, list[str]]] = field(default_factory=dict)


def _items(holder: Any) -> list[Mapping[str, Any]]:
    items = holder.get("items") if isinstance(holder, Mapping) else None
    return [item for item in items if isinstance(item, Mapping)] if isinstance(items, list) else []


def catalogue_rows(events: Iterable[tuple[str, str, str, Mapping[str, Any]]]) -> CatalogueRows:
    """The catalogue rows a group of stored events carries, given as `(type, at, customer id,
    data)` with `at` in ISO form: products of `product.viewed`, of carts and of orders; the
    lines of each `order.placed`; the latest cart of each customer (an order empties it)."""
    found = CatalogueRows()
    for event_type, at, customer_id, data in events:
        product = data.get("product")
        if event_type == "product.viewed" and isinstance(product, Mapping):
            row = product_row(product, None, at)
            if row is not None:
                found.products.append(row)
        cart, order = data.get("cart"), data.get("order")
        for holder in (cart, order):
            currency = holder.get("currency") if isinstance(holder, Mapping) else None
            found.products.extend(
                row for item in _items(holder) if (row := product_row(item, currency, at)) is not None
            )
        if event_type == "order.placed" and isinstance(order, Mapping) and _text(order.get("id")):
            order_id = str(_text(order.get("id")))
            lines = {}
            for item in _items(order):
                identifier = product_id(item)
                if identifier is not None:
                    lines[identifier] = lines.get(identifier, 0) + _quantity(item)
            found.order_lines.extend(
                (order_id, identifier, customer_id, at, qty) for identifier, qty in lines.items()
            )
        if event_type in CART_EVENTS or event_type == "order.placed":
            kept = found.carts.get(customer_id)
            if kept is None or kept[0] <= at:
                ids = (
                    []
                    if event_type == "order.placed"
                    else [identifier for item in _items(cart) if (identifier := product_id(item)) is not None]
                )
                found.carts[customer_id] = (at, ids)
    return found


def strategies(plugins: Iterable[str]) -> list[str]:
    """The strategies there are: the built-in ones, then those of the plugins' recommenders."""
    return [*BUILTIN, *plugins]


def valid_limit(limit: Any) -> bool:
    """Whether a `recommendations()` limit is a whole number from 1 to `MAX_LIMIT`."""
    return not isinstance(limit, bool) and isinstance(limit, int) and 1 <= limit <= MAX_LIMIT


def check_call(strategy: Any, limit: Any, known: Iterable[str]) -> tuple[str, int]:
    """A `recommendations()` call's strategy and limit, checked; `RecommendationError` says what
    is wrong (with the strategy meant, when a known one is near)."""
    names = list(known)
    if not isinstance(strategy, str) or strategy not in names:
        raise RecommendationError(
            f"recommendations(): unknown strategy {strategy!r}{did_you_mean(str(strategy), names)};"
            f" the strategies are {', '.join(names)}"
        )
    if not valid_limit(limit):
        raise RecommendationError(f"recommendations(): limit must be a whole number from 1 to {MAX_LIMIT}")
    return strategy, limit


def product_view(product: Any) -> dict[str, Any] | None:
    """A product as templates get it (the `PRODUCT_FIELDS`, plain), from a plugin's answer or
    a catalogue row; None for something that is no product (no name and no url)."""
    if not isinstance(product, Mapping):
        return None
    view = {
        "id": product_id(product),
        "name": _text(product.get("name")),
        "url": _text(product.get("url")),
        "image": _text(product.get("image")),
        "price": _price(product.get("price")),
        "currency": _text(product.get("currency")),
        "category": _text(product.get("category")),
    }
    return view if view["name"] or view["url"] else None


def fetched(lists: Mapping[str, list[dict[str, Any]]], known: Iterable[str]) -> Recommend:
    """A `recommend` over lists fetched before rendering (by strategy, as long as the largest
    limit asked): a call gets the first `limit` of its strategy's list, as fresh copies."""
    names = tuple(known)

    def recommend(strategy: str, limit: int) -> list[dict[str, Any]]:
        strategy, limit = check_call(strategy, limit, names)
        return [dict(product) for product in lists.get(strategy, [])[:limit]]

    return recommend


def products_of(answer: Any, limit: int) -> list[dict[str, Any]]:
    """A plugin recommender's answer as templates get it: up to `limit` products, plain; what
    is no product is left out."""
    views = (product_view(item) for item in (answer if isinstance(answer, list) else []))
    return [view for view in views if view is not None][:limit]


# (strategy, customer ids, limit, now, cross-sell rules) → each customer's products: the store's
# `recommend`, called on the store's thread.
StoreRecommend = Callable[..., dict[str, list[dict[str, Any]]]]


def read_on_store(
    store_recommend: StoreRecommend,
    customer_id: str,
    now: datetime,
    cross_sell: Mapping[str, list[str]],
    known: Iterable[str],
) -> Recommend:
    """A `recommend` for an evaluation on the store's thread (`with:` values, preview, explain):
    a built-in strategy read from the store when asked. A plugin's strategy is asked only before
    a message renders (it may take its time, which the store's thread has not got)."""
    names = tuple(known)

    def recommend(strategy: str, limit: int) -> list[dict[str, Any]]:
        strategy, limit = check_call(strategy, limit, names)
        if strategy not in BUILTIN:
            raise RecommendationError(
                f"recommendations(): strategy '{strategy}' is a plugin's, asked for message templates only"
            )
        return store_recommend(strategy, [customer_id], limit, now, cross_sell)[customer_id]

    return recommend


def since(now: datetime) -> datetime:
    """The start of the window of `viewed` and `bestsellers` at `now`."""
    return now - WINDOW
