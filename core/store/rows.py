"""Decoding stored rows: every column checked, so that what reads back here cannot fail later.

A decoder raises ValueError (one of `quarantine.UNREADABLE`) for a value that does not read
back; the table families then set the row aside.
"""

from __future__ import annotations

import json
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from boomerang.bodies import MAX_VALUE_DEPTH, nesting
from boomerang.clock import parse_time
from boomerang.model import Customer

_EMPTY = {dict: "{}", list: "[]"}  # the JSON of an empty map or list, as columns default to


def json_value(text: Any, kind: type) -> Any:
    """A stored JSON column, decoded and checked to be a `kind` (dict or list)."""
    if not isinstance(text, str):
        raise ValueError(f"JSON text was expected, not {type(text).__name__}")
    if text == _EMPTY.get(kind):  # most profile columns: no parser needed
        return kind()
    value = json.loads(text)
    if not isinstance(value, kind):
        raise ValueError(f"a JSON {kind.__name__} was expected, not {type(value).__name__}")
    return value


def stamp(text: Any) -> str:
    """A stored timestamp, checked to read back."""
    parse_time(text)
    return text


def integer(value: Any) -> int:
    """A stored whole number, checked (a bool is not one)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"a whole number was expected, not {value!r}"[:100])
    return value


def number(value: Any) -> float:
    """A stored number, checked and made a float."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"a number was expected, not {value!r}"[:100])
    return float(value)


_CUSTOMER_JSON = {
    "consents": dict,
    "attributes": dict,
    "push_subscriptions": list,
    "addresses": dict,
    "opt_outs": dict,
    "unreachable": dict,
}
_CUSTOMER_TIMES = ("last_order_at", "last_seen_at", "created_at", "updated_at")


def customer(row: dict[str, Any]) -> Customer:
    """A customer row decoded, every column checked: what reads back here cannot fail a send later."""
    return Customer(**customer_values(row))


def customer_values(row: dict[str, Any]) -> dict[str, Any]:
    """A customer row's values decoded and checked, as `customer` takes them (ValueError if one
    does not read back); what a caller that only checks the row calls."""
    values = dict(row)
    for key, kind in _CUSTOMER_JSON.items():
        values[key] = json_value(values[key], kind)
    if values["push_subscriptions"] and not all(
        isinstance(subscription, dict) for subscription in values["push_subscriptions"]
    ):
        raise ValueError("push_subscriptions must hold JSON objects")
    if values["addresses"] and not all(isinstance(address, str) for address in values["addresses"].values()):
        raise ValueError("addresses must map channels to text")
    if values["attributes"] and nesting(values["attributes"]) > MAX_VALUE_DEPTH:
        raise ValueError(f"attributes are nested more than {MAX_VALUE_DEPTH} levels deep")
    zone_name(values["timezone"])
    integer(values["orders_count"])
    number(values["revenue"])
    for key in _CUSTOMER_TIMES:
        values[key] = parse_time(row[key]) if row[key] else None
    return values


def zone_name(value: Any) -> Any:
    """A stored timezone (none, or an IANA name), checked to read back."""
    if value:
        try:
            ZoneInfo(str(value))
        except (ZoneInfoNotFoundError, OSError):  # OSError: a name too long for a file
            raise ValueError("timezone: not an IANA timezone") from None
    return value


def _object_reads_back(column: str, values: str = "") -> str:
    """SQL: a JSON column `json_value(..., dict)` certainly reads back; `values`, a condition on
    each of its values (`json_each`), that none may break. Short enough that no parser's depth
    limit (Python's is its recursion limit) can be in the way. JSON functions raise on text that
    is not JSON, and SQLite may evaluate both sides of an AND: only a CASE keeps them off it."""
    valid = f"CASE WHEN json_valid({column}) THEN {column} END"
    each = f" AND NOT EXISTS (SELECT 1 FROM json_each({valid}) WHERE NOT ({values}))" if values else ""
    return (
        f"(typeof({column}) = 'text' AND ({column} = '{{}}' OR (length({column}) <= 1000"
        f" AND json_type({valid}) = 'object'{each})))"
    )


def _moment_reads_back(column: str) -> str:
    """SQL: a time column is empty or `to_iso`'s text of a real moment, which `parse_time`
    reads back (a day that does not exist, e.g. 30 February, is another one once `date()` has
    counted with it: `+0 days`)."""
    digits = "[0-9][0-9]"
    shape = f"{digits}{digits}-{digits}-{digits}T{digits}:{digits}:{digits}.{digits}{digits}{digits}Z"
    return (
        f"({column} IS NULL OR {column} = '' OR (typeof({column}) = 'text' AND {column} GLOB '{shape}'"
        f" AND substr({column}, 1, 4) != '0000'"
        f" AND date(substr({column}, 1, 10), '+0 days') = substr({column}, 1, 10)"
        f" AND substr({column}, 12, 2) < '24' AND substr({column}, 15, 2) < '60'"
        f" AND substr({column}, 18, 2) < '60'))"
    )


# An SQL condition on a `customers` row that holds only if `customer_values` reads the row back
# (its timezone apart, `zone_name`): the common shapes of every other column, checked by SQLite
# without the row going to Python. A row it does not vouch for may still read back: decoding
# it tells. Attributes must be flat (one level deep: within `MAX_VALUE_DEPTH`), push
# subscriptions none, addresses text.
CUSTOMER_READS_BACK = "coalesce({}, 0)".format(
    " AND ".join(
        [
            *(_object_reads_back(column) for column in ("consents", "opt_outs", "unreachable")),
            _object_reads_back("attributes", "type NOT IN ('object', 'array')"),
            _object_reads_back("addresses", "type = 'text'"),
            "push_subscriptions = '[]'",
            "typeof(orders_count) = 'integer'",
            "typeof(revenue) IN ('integer', 'real')",
            *(_moment_reads_back(column) for column in _CUSTOMER_TIMES),
        ]
    )
)


_MESSAGE_JSON = {"candidates": list, "promo": dict, "context": dict, "links": list, "tried": list}
_MESSAGE_TIMES = ("created_at", "sent_at", "expires_at", "delivered_at", "opened_at", "clicked_at")


def message(record: dict[str, Any]) -> dict[str, Any]:
    """A message row with its JSON columns decoded and its timestamps checked."""
    for key, kind in _MESSAGE_JSON.items():
        record[key] = json_value(record[key], kind) if record[key] else None
    for key in _MESSAGE_TIMES:
        if record[key]:
            parse_time(record[key])
    return record


def promo_code(row: dict[str, Any]) -> dict[str, Any]:
    """A `promo_codes` row, its times checked to read back."""
    for column in ("expires_at", "issued_at", "redeemed_at"):
        if row[column] is not None or column == "issued_at":
            stamp(row[column])
    return row


_PRODUCT_TEXTS = ("id", "name", "url", "image", "currency", "category")


def product(row: dict[str, Any]) -> dict[str, Any]:
    """A catalogue row as templates get a product: texts checked to be text (or nothing), the
    price a number (or nothing)."""
    view: dict[str, Any] = {}
    for name in _PRODUCT_TEXTS:
        value = row[name]
        if value is not None and not isinstance(value, str):
            raise ValueError(f"product {name} should be text, not {type(value).__name__}")
        view[name] = value
    view["price"] = None if row["price"] is None else number(row["price"])
    return {name: view[name] for name in ("id", "name", "url", "image", "price", "currency", "category")}
