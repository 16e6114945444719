"""A schedule's audience asked of the store (`boomerang.audiences`, `boomerang.store.audiences`)
selects exactly the customers the sandbox lets in, customer by customer: missing values,
None, type mismatches, day boundaries to the microsecond, and `and`/`or` stopping early.

On SQLite only: the translation is SQLite's SQL (its JSON functions), and the PostgreSQL store
takes none (`answers_audiences` is false there: the sandbox evaluates every audience)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from boomerang.audiences import translate
from boomerang.clock import to_iso
from boomerang.context import context
from boomerang.expressions import Budget, Scope, compile_expression, make_environment
from boomerang.plugins.conditions.builtin import register_conditions
from boomerang.store import Store
from boomerang.store.customers import AudienceQuery

CONDITIONS = register_conditions()
ENVIRONMENT = make_environment(CONDITIONS)
NOW = datetime(2026, 3, 31, 10, 0, 0, 250_000, tzinfo=UTC)
EVENT = {"type": "schedule", "at": to_iso(NOW), "data": {}}

FIELDS = ["orders_count", "revenue", "email", "locale", "last_order_at", "last_seen_at", "created_at"]
ATTRIBUTES = ["plan", "score", "items"]  # `items` is a dict method's name: still a key here
MOMENTS = ["last_order_at", "last_seen_at", "created_at"]
OPS = ["==", "!=", "<", "<=", ">", ">="]

constants = st.one_of(
    st.integers(-3, 120).map(str),
    st.integers(-(2**63), 2**63 - 1).map(str),
    st.floats(-200, 200, allow_nan=False).map(lambda x: str(round(x, 1))),
    st.sampled_from(["90", "90.0", "89.5", "91", "89", "-1", "0", "1", "0.5"]),
    st.sampled_from(["'pro'", "''", "'1'", "'a'", "'b'", "'a@example.com'"]),
    st.sampled_from(["true", "false", "none"]),
)
values = st.one_of(
    st.sampled_from(FIELDS).map(lambda name: f"customer.{name}"),
    st.sampled_from(ATTRIBUTES).map(lambda key: f"customer.attributes.{key}"),
    st.sampled_from(MOMENTS).map(lambda name: f"days_since(customer.{name})"),
)


def comparison(parts: tuple[str, str, str, bool]) -> str:
    value, op, constant, flipped = parts
    return f"{constant} {op} {value}" if flipped else f"{value} {op} {constant}"


leaves = st.one_of(
    st.tuples(values, st.sampled_from(OPS), constants, st.booleans()).map(comparison),
    values,
    st.sampled_from(["true", "false"]),
)
expressions = st.recursive(
    leaves,
    lambda inner: st.one_of(
        inner.map(lambda e: f"not ({e})"),
        st.tuples(inner, inner).map(lambda pair: f"({pair[0]}) and ({pair[1]})"),
        st.tuples(inner, inner).map(lambda pair: f"({pair[0]}) or ({pair[1]})"),
    ),
    max_leaves=4,
)

# Moments on and around the day boundaries `days_since` counts across.
moments = st.one_of(
    st.none(),
    st.tuples(
        st.one_of(*[st.sampled_from([-1, 0, 1, 89, 90, 91])] * 2, st.integers(-2, 120)),
        st.sampled_from([-1, 0, 1, 3600 * 10**6]),
    ).map(
        lambda offset: NOW - timedelta(days=offset[0], microseconds=offset[1])
    ),
)
json_values = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-5, 5),
    st.integers(-(2**62), 2**62),
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from(["pro", "", "1", "a", "b"]),
    st.lists(st.integers(0, 2), max_size=2),
    st.dictionaries(st.sampled_from(["x"]), st.integers(0, 2), max_size=1),
)
customers = st.fixed_dictionaries(
    {
        "orders_count": st.integers(0, 3),
        "revenue": st.sampled_from([0.0, 0.5, 90.0, 1e300]),
        "email": st.sampled_from([None, "", "a@example.com"]),
        "locale": st.sampled_from([None, "pro", "1", "a"]),
        "last_order_at": moments,
        "last_seen_at": moments,
        "created_at": moments.map(lambda moment: moment or NOW - timedelta(days=400)),
        "attributes": st.dictionaries(st.sampled_from(ATTRIBUTES), json_values),
    }
)


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Any:
    store = Store(Path(tmp_path_factory.mktemp("audiences")) / "boomerang.db", durable=False)
    yield store
    store.close()


def store_customers(store: Store, people: list[dict[str, Any]]) -> None:
    store.db.execute("DELETE FROM customers")
    for n, person in enumerate(people):
        row = {
            key: to_iso(value) if isinstance(value, datetime) else value
            for key, value in {**person, "updated_at": NOW}.items()
        }
        row["attributes"] = json.dumps(person["attributes"])
        store.db["customers"].insert({"id": f"c-{n:03}", **row})


def in_sandbox(store: Store, source: str) -> list[str]:
    expression = compile_expression(source, ENVIRONMENT)
    ids = [row[0] for row in store.db.execute("SELECT id FROM customers ORDER BY id")]
    return [
        customer_id
        for customer_id in ids
        # a budget no busy machine runs out of: the answer, not the speed, is compared
        if expression.test(context(store.customer(customer_id), None, NOW, EVENT), Scope(Budget(60)))
    ]


def in_store(store: Store, source: str) -> list[str]:
    condition = translate(source, CONDITIONS)
    assume(condition is not None)  # a moment ordered against a constant is left to the sandbox
    assert condition is not None
    page, following = store.audience_page(AudienceQuery("everyone", "", 1000, None, (condition, NOW)))
    assert following is None
    # The same page as ids and timezones (journeys that first wait start from those).
    members, _ = store.audience_members(AudienceQuery("everyone", "", 1000, None, (condition, NOW)))
    assert members == [(customer.id, customer.timezone) for customer in page]
    return [customer.id for customer in page]


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(source=expressions, people=st.lists(customers, min_size=1, max_size=8))
def test_the_store_selects_exactly_whom_the_sandbox_lets_in(
    store: Store, source: str, people: list[dict[str, Any]]
) -> None:
    store_customers(store, people)
    assert in_store(store, source) == in_sandbox(store, source), source


# Narrower: every comparison of days since a moment, or of an attribute, against the constants
# where the answers change.
day_counts = st.sampled_from(["-1", "0", "0.5", "1", "89", "89.5", "90", "90.0", "91", "true", "'a'", "none"])
day_comparisons = st.tuples(
    st.sampled_from(MOMENTS).map(lambda name: f"days_since(customer.{name})"),
    st.sampled_from(OPS),
    day_counts,
    st.booleans(),
).map(comparison)
attribute_comparisons = st.tuples(
    st.sampled_from(ATTRIBUTES).map(lambda key: f"customer.attributes.{key}"),
    st.sampled_from(OPS),
    st.sampled_from(["0", "1", "1.0", "-1", "0.5", "true", "false", "none", "''", "'pro'", "'1'", "'b'"]),
    st.booleans(),
).map(comparison)
attribute_values = st.dictionaries(
    st.sampled_from(ATTRIBUTES),
    st.sampled_from([None, True, False, 0, 1, -1, 1.0, 0.5, "", "pro", "1", "b", [], [0], {}, {"x": 1}]),
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    source=st.one_of(
        day_comparisons,
        attribute_comparisons,
        st.sampled_from([f"days_since(customer.{name})" for name in MOMENTS]),
        st.sampled_from([f"customer.attributes.{key}" for key in ATTRIBUTES]),
    ),
    people=st.lists(customers, min_size=4, max_size=8),
    attributes=st.lists(attribute_values, min_size=8, max_size=8),
)
def test_the_store_agrees_on_every_boundary(
    store: Store, source: str, people: list[dict[str, Any]], attributes: list[dict[str, Any]]
) -> None:
    people = [{**person, "attributes": extra} for person, extra in zip(people, attributes, strict=False)]
    store_customers(store, people)
    assert in_store(store, source) == in_sandbox(store, source), source


@pytest.mark.parametrize(
    "source",
    [
        "customer.orders_count > 0 and days_since(customer.last_order_at) >= 90",  # reactivation
        "days_since(customer.last_order_at) > 89.5 or customer.attributes.plan == 'pro'",
        "not customer.attributes.score < 3",  # a missing score fails the whole expression
        "90 <= days_since(customer.last_seen_at)",
    ],
)
def test_the_common_shapes_are_translated(source: str) -> None:
    assert translate(source, CONDITIONS) is not None


@pytest.mark.parametrize(
    "source",
    [
        "customer.attributes.plan in ['pro', 'vip']",  # `in`
        "0 < customer.orders_count < 3",  # a chain
        "customer.revenue > customer.orders_count",  # two columns
        "in_segment('vip')",  # a function without a translation
        "days_since(customer.email) > 3",  # not a moment
        "customer.last_order_at > '2026-01-01'",  # a moment ordered
        "customer.attributes['a-b'] == 1",  # a key the store's path would have to quote
        "customer.orders_count > 2 ** 70",  # beyond 64 bits
        "customer.orders_count + 1 > 3",  # arithmetic
    ],
)
def test_other_shapes_are_left_to_the_sandbox(source: str) -> None:
    assert translate(source, CONDITIONS) is None


def test_a_function_without_a_translation_is_not_taken_for_one_with() -> None:
    functions = {**CONDITIONS, "days_since": lambda moment: 0}  # a plugin's own days_since
    assert translate("days_since(customer.last_order_at) > 3", functions) is None
