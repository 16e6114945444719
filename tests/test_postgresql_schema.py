"""The PostgreSQL migrations: the same numbered migrations as SQLite's, giving the same tables,
columns and indexes; applied once, also by daemons starting at once; and the running totals
their triggers keep (and their backfills fill in) are the ones SQLite's give."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from boomerang.store import MIGRATIONS, Store, StoreError
from boomerang.store.migrations_postgresql import (
    POSTGRESQL_MIGRATIONS,
    migrate_postgresql,
    postgresql_schema_version,
)

LATEST = MIGRATIONS[-1][0]
# SQLite's declared types and the PostgreSQL types they become (an untyped column holds text).
TYPES = {"TEXT": "text", "INTEGER": "bigint", "REAL": "double precision", "": "text"}
# The tables whose SQLite queries order by rowid: PostgreSQL gives them a rowid column.
WITH_ROWID = {"events", "journeys", "quarantine"}


@pytest.fixture
def pg(postgresql_url: str) -> Iterator[psycopg.Connection]:
    with psycopg.connect(postgresql_url, autocommit=True) as conn:
        yield conn


@pytest.fixture
def migrated(pg: psycopg.Connection) -> psycopg.Connection:
    migrate_postgresql(pg)
    return pg


def test_the_migrations_have_the_numbers_and_names_of_sqlites() -> None:
    assert [(n, name) for n, name, _ in POSTGRESQL_MIGRATIONS] == [(n, name) for n, name, _ in MIGRATIONS]
    assert [n for n, _, _ in MIGRATIONS] == list(range(1, 14))
    assert MIGRATIONS[12][1] == "provider rate buckets"


def sqlite_tables(path: Path) -> dict[str, dict[str, tuple[str, bool, bool]]]:
    """Each table's columns: (type as PostgreSQL names it, NOT NULL, in the primary key)."""
    conn = sqlite3.connect(path)
    try:
        names = [row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        tables = {}
        for name in names:
            if name.startswith("sqlite_"):
                continue
            columns = conn.execute(f"PRAGMA table_info({name})").fetchall()
            tables[name] = {
                column: (TYPES[kind.upper()], bool(notnull) or pk > 0, pk > 0)
                for _, column, kind, notnull, _, pk in columns
            }
            # SQLite's INTEGER PRIMARY KEY may hold NULL in its declaration, never in fact
        return tables
    finally:
        conn.close()


def sqlite_indexes(path: Path) -> set[str]:
    """The indexes made by name (not those SQLite makes for a primary key or UNIQUE)."""
    conn = sqlite3.connect(path)
    try:
        return {
            row[0]
            for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL")
        }
    finally:
        conn.close()


def postgresql_tables(pg: psycopg.Connection) -> dict[str, dict[str, tuple[str, bool, bool]]]:
    keys = {
        (table, column)
        for table, column in pg.execute(
            "SELECT k.table_name, k.column_name FROM information_schema.table_constraints c"
            " JOIN information_schema.key_column_usage k USING (constraint_schema, constraint_name)"
            " WHERE c.constraint_type = 'PRIMARY KEY' AND c.table_schema = current_schema()"
        )
    }
    tables: dict[str, dict[str, tuple[str, bool, bool]]] = {}
    for table, column, kind, nullable in pg.execute(
        "SELECT table_name, column_name, data_type, is_nullable FROM information_schema.columns"
        " WHERE table_schema = current_schema() ORDER BY table_name, ordinal_position"
    ):
        tables.setdefault(table, {})[column] = (kind, nullable == "NO", (table, column) in keys)
    return tables


def postgresql_indexes(pg: psycopg.Connection) -> set[str]:
    """The indexes made by name (not those of a primary key or UNIQUE constraint)."""
    rows = pg.execute(
        "SELECT i.indexname FROM pg_indexes i WHERE i.schemaname = current_schema() AND NOT EXISTS"
        " (SELECT FROM pg_constraint c"
        " WHERE c.conindid = format('%I.%I', i.schemaname, i.indexname)::regclass)"
    )
    return {row[0] for row in rows}


def test_the_schema_is_sqlites(migrated: psycopg.Connection, tmp_path: Path) -> None:
    Store(tmp_path / "boomerang.db").close()
    expected = sqlite_tables(tmp_path / "boomerang.db")
    found = postgresql_tables(migrated)

    assert found.pop("boomerang_schema") == {"version": ("integer", True, False)}
    for table in WITH_ROWID:
        assert found[table].pop("rowid") == ("bigint", True, False)
        identity = migrated.execute(
            "SELECT identity_generation FROM information_schema.columns"
            " WHERE table_schema = current_schema() AND table_name = %s AND column_name = 'rowid'",
            [table],
        ).fetchone()
        assert identity == ("ALWAYS",)
    assert found == expected
    for table in ("jobs", "journal"):  # INTEGER PRIMARY KEY: numbered unless given
        assert migrated.execute(
            "SELECT identity_generation FROM information_schema.columns"
            " WHERE table_schema = current_schema() AND table_name = %s AND column_name = 'id'",
            [table],
        ).fetchone() == ("BY DEFAULT",)
    assert postgresql_indexes(migrated) == sqlite_indexes(tmp_path / "boomerang.db")
    assert "messages_customer" not in postgresql_indexes(migrated)  # dropped by 12, as in SQLite


def test_migrating_again_does_nothing(pg: psycopg.Connection) -> None:
    assert postgresql_schema_version(pg) == 0
    assert migrate_postgresql(pg) == list(range(1, LATEST + 1))
    assert postgresql_schema_version(pg) == LATEST
    assert pg.execute("SELECT count(*) FROM boomerang_schema").fetchone() == (1,)
    assert migrate_postgresql(pg) == []
    assert postgresql_schema_version(pg) == LATEST


def test_daemons_starting_at_once_migrate_once(postgresql_url: str) -> None:
    start = threading.Barrier(3)
    applied: list[list[int]] = []
    failures: list[BaseException] = []

    def daemon() -> None:
        try:
            with psycopg.connect(postgresql_url, autocommit=True) as conn:
                start.wait()
                applied.append(migrate_postgresql(conn))
        except BaseException as exc:  # noqa: BLE001 - reported by the test below
            failures.append(exc)

    threads = [threading.Thread(target=daemon) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []
    assert sorted(n for numbers in applied for n in numbers) == list(range(1, LATEST + 1))
    with psycopg.connect(postgresql_url) as conn:
        assert conn.execute("SELECT version FROM boomerang_schema").fetchall() == [(LATEST,)]


def test_a_database_of_a_newer_boomerang_is_refused(migrated: psycopg.Connection) -> None:
    migrated.execute("UPDATE boomerang_schema SET version = %s", [LATEST + 1])
    with pytest.raises(StoreError, match=f"schema {LATEST + 1}, newer than this Boomerang knows"):
        migrate_postgresql(migrated)
    assert postgresql_schema_version(migrated) == LATEST + 1


def test_promo_codes_are_one_whatever_their_case(migrated: psycopg.Connection) -> None:
    insert = (
        "INSERT INTO promo_codes (code, provider, customer_id, message_id, issued_at)"
        " VALUES (%s, 'local', 'c-1', %s, '2026-03-02T10:00:00.000000Z') ON CONFLICT DO NOTHING"
    )
    migrated.execute(insert, ["BMR-7KQ4", "m-1"])
    migrated.execute(insert, ["bmr-7kq4", "m-2"])
    assert migrated.execute("SELECT code FROM promo_codes").fetchall() == [("BMR-7KQ4",)]
    assert migrated.execute(
        "SELECT message_id FROM promo_codes WHERE code = %s", ["Bmr-7kq4"]
    ).fetchall() == [("m-1",)]


# The running totals, checked as tests/test_report_totals.py and tests/test_engagement.py check
# SQLite's: the same changes made in both databases, then every total compared with a fresh
# GROUP BY and with SQLite's.

STATUSES = ["pending", "sending", "sent", "delivered", "failed", "dropped", "unknown"]
DAYS = ["2026-03-02T10:00:00.000000Z", "2026-03-03T23:59:59.999999Z"]
STAMPS = [None, "2026-03-04T10:00:00.000000Z"]
CONTEXTS = [
    "{}",
    '{"variants": {"3": "a"}}',
    '{"variants": {"3": "b"}, "cart": {"total": 12}}',
    '{"variants": {"3": "a", "5.b": "c"}}',
    '{"variants": {"3": 2}}',
    '{"variants": {"3": true}}',
    '{"variants": ["a"]}',
    '{"variants": {"3": null}}',
    "not json",
]

# (name, SQL for the totals kept, SQL for them counted afresh, in PostgreSQL)
TOTALS = [
    (
        "report_days",
        "SELECT day, scenario, step, channel, messages, sent, failed, delivered, opened, clicked"
        " FROM report_days WHERE messages != 0",
        "SELECT substr(created_at, 1, 10), coalesce(scenario, ''), coalesce(step, ''), coalesce(channel, ''),"
        " count(*), count(*) FILTER (WHERE status IN ('sent', 'delivered', 'unknown')),"
        " count(*) FILTER (WHERE status = 'failed'), count(delivered_at), count(opened_at), count(clicked_at)"
        " FROM messages GROUP BY 1, 2, 3, 4",
    ),
    (
        "report_entrants",
        "SELECT day, scenario, holdout, entrants FROM report_entrants WHERE entrants != 0",
        "SELECT substr(entered_at, 1, 10), scenario, holdout, count(*) FROM journeys GROUP BY 1, 2, 3",
    ),
    (
        "report_variants",
        "SELECT day, scenario, split, variant, entrants FROM report_variants WHERE entrants != 0",
        "SELECT substr(j.entered_at, 1, 10), j.scenario, v.key, CASE jsonb_typeof(v.value)"
        " WHEN 'boolean' THEN (v.value::text::boolean)::int::text ELSE v.value #>> '{}' END, count(*)"
        " FROM journeys j, jsonb_each(CASE WHEN j.context LIKE '{%'"
        " AND jsonb_typeof(j.context::jsonb -> 'variants') = 'object'"
        " THEN j.context::jsonb -> 'variants' END) v"
        " WHERE j.holdout = 0 AND jsonb_typeof(v.value) != 'null' GROUP BY 1, 2, 3, 4",
    ),
    (
        "report_plan",
        "SELECT day, scenario, kind, reason, lines FROM report_plan WHERE lines != 0",
        "SELECT substr(at, 1, 10), scenario, kind, reason, count(*) FROM journal"
        " WHERE kind IN ('defer', 'drop') AND scenario IS NOT NULL GROUP BY 1, 2, 3, 4",
    ),
    (
        "engagement",
        "SELECT channel, points, messages FROM engagement WHERE messages != 0",
        "SELECT channel, sum(CASE WHEN status = 'failed' THEN 0 WHEN clicked_at IS NOT NULL THEN 10"
        " WHEN opened_at IS NOT NULL THEN 6 WHEN delivered_at IS NOT NULL THEN 3 ELSE 1 END), count(*)"
        " FROM messages WHERE status IN ('sent', 'delivered', 'failed') AND channel IS NOT NULL"
        " GROUP BY channel",
    ),
    (
        "co_purchases",
        "SELECT product_id, other_id, customers FROM co_purchases",
        "SELECT a.product_id, b.product_id, count(DISTINCT a.customer_id) FROM order_items a"
        " JOIN order_items b ON b.customer_id = a.customer_id AND b.product_id != a.product_id GROUP BY 1, 2",
    ),
]


def rows_of(cursor: Any) -> set[tuple]:
    """Rows as comparable tuples: SQLite's untyped variant column holds a number where
    PostgreSQL's text holds its digits, and a true as 1."""
    return {tuple(str(value) if isinstance(value, str | int) else value for value in row) for row in cursor}


class Both:
    """The same statements, run on a SQLite store and on PostgreSQL (`?` placeholders)."""

    def __init__(self, sqlite: sqlite3.Connection, pg: psycopg.Connection):
        self.sqlite, self.pg = sqlite, pg

    def run(self, sql: str, params: Sequence[Any] = ()) -> None:
        self.sqlite.execute(sql, params)
        self.pg.execute(sql.replace("?", "%s"), params)


changes = st.lists(
    st.one_of(
        st.tuples(
            st.just("message"),
            st.sampled_from(["insert", "update", "delete"]),
            st.integers(0, 4),
            st.sampled_from(STATUSES),
            st.sampled_from([None, "email", "sms"]),
            st.sampled_from([None, "cart", "browse"]),
            st.sampled_from(DAYS),
            st.tuples(*[st.sampled_from(STAMPS)] * 3),
        ),
        st.tuples(
            st.just("journey"),
            st.sampled_from(["insert", "update", "delete"]),
            st.integers(0, 4),
            st.sampled_from(["cart", "browse"]),
            st.sampled_from(DAYS),
            st.booleans(),
            st.sampled_from(CONTEXTS),
        ),
        st.tuples(
            st.just("journal"),
            st.sampled_from(["insert", "update", "delete"]),
            st.integers(1, 5),
            st.sampled_from(["defer", "drop", "send"]),
            st.sampled_from([None, "cart"]),
            st.sampled_from(["quiet hours", "cap reached"]),
            st.sampled_from(DAYS),
        ),
        # an order's lines, stored in one statement: (order, product, customer) each
        st.tuples(
            st.just("order"),
            st.lists(
                st.tuples(st.integers(1, 4), st.sampled_from("ABCD"), st.sampled_from(["c-1", "c-2"])),
                min_size=1,
                max_size=4,
            ),
        ),
    ),
    max_size=25,
)


def apply(both: Both, change: tuple) -> None:
    kind, *values = change
    if kind == "message":
        action, n, status, channel, scenario, day, (delivered, opened, clicked) = values
        if action == "insert":
            both.run(
                "INSERT INTO messages (id, customer_id, template, category, scenario, step, channel, status,"
                " created_at, delivered_at, opened_at, clicked_at)"
                " VALUES (?, 'c-1', 't', 'promo', ?, '1', ?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO NOTHING",
                [f"m-{n}", scenario, channel, status, day, delivered, opened, clicked],
            )
        elif action == "update":
            both.run(
                "UPDATE messages SET status = ?, channel = ?, created_at = ?, delivered_at = ?,"
                " opened_at = ?, clicked_at = ? WHERE id = ?",
                [status, channel, day, delivered, opened, clicked, f"m-{n}"],
            )
        else:
            both.run("DELETE FROM messages WHERE id = ?", [f"m-{n}"])
    elif kind == "journey":
        action, n, scenario, day, holdout, context = values
        if action == "insert":
            both.run(
                "INSERT INTO journeys (id, scenario, customer_id, entry_key, status, holdout, context,"
                " entered_at, updated_at) VALUES (?, ?, 'c-1', ?, 'active', ?, ?, ?, ?)"
                " ON CONFLICT DO NOTHING",
                [f"j-{n}", scenario, f"j-{n}", int(holdout), context, day, day],
            )
        elif action == "update":
            # as the engine saves a journey at each step: its context, drawn variants and all
            both.run("UPDATE journeys SET context = ? WHERE id = ?", [context, f"j-{n}"])
            both.run(
                "UPDATE journeys SET holdout = ?, entered_at = ?, scenario = ? WHERE id = ?",
                [int(holdout), day, scenario, f"j-{n}"],
            )
        else:
            both.run("DELETE FROM journeys WHERE id = ?", [f"j-{n}"])
    elif kind == "journal":
        action, n, kind_, scenario, reason, day = values
        if action == "insert":
            both.run(
                "INSERT INTO journal (id, at, kind, customer_id, scenario, reason)"
                " VALUES (?, ?, ?, 'c-1', ?, ?) ON CONFLICT (id) DO NOTHING",
                [n, day, kind_, scenario, reason],
            )
        elif action == "update":
            both.run(
                "UPDATE journal SET at = ?, kind = ?, scenario = ?, reason = ? WHERE id = ?",
                [day, kind_, scenario, reason, n],
            )
        else:
            both.run("DELETE FROM journal WHERE id = ?", [n])
    else:
        (lines,) = values
        marks = ", ".join("(?, ?, ?, ?, 1)" for _ in lines)
        both.run(
            f"INSERT INTO order_items (order_id, product_id, customer_id, at, qty) VALUES {marks}"
            " ON CONFLICT DO NOTHING",
            [
                value
                for order, product, customer in lines
                for value in (f"o-{order}", product, customer, DAYS[0])
            ],
        )


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(changes=changes)
def test_the_triggers_keep_the_totals_sqlites_keep(
    migrated: psycopg.Connection, tmp_path: Path, changes: list
) -> None:
    store = Store(tmp_path / "boomerang.db", durable=False)
    both = Both(store.db.conn, migrated)
    try:
        for table in ("messages", "journeys", "journal", "order_items", "co_purchases"):
            both.run(f"DELETE FROM {table}")
        for change in changes:
            apply(both, change)
        for name, kept, fresh in TOTALS:
            found = rows_of(migrated.execute(kept))
            assert found == rows_of(migrated.execute(fresh)), name
            assert found == rows_of(store.db.conn.execute(kept)), name
    finally:
        store.close()


# The backfills: a database from before the running totals and the catalogue (migration 7)
# fills them in as SQLite's does from the same rows.

EVENTS = [
    (
        "product.viewed",
        "anna",
        {"product": {"url": "https://shop.example/p/l1", "name": " Lock ", "price": 19.9}},
    ),
    (
        "product.viewed",
        "anna",
        {"product": {"id": 5.0, "title": "Pump", "image_url": "https://i.example/p.png"}},
    ),
    ("cart.updated", "anna", {"cart": {"currency": "eur", "items": [{"sku": "T1", "name": "Tyre kit"}, 3]}}),
    (
        "order.placed",
        "bob",
        {
            "order": {
                "id": 7,
                "currency": "EUR",
                "items": [
                    {"sku": "T1", "qty": 2, "price": 12},
                    {"id": 5, "quantity": 3, "currency": "usdollars"},
                    {"sku": "T1", "qty": 2.5},
                    {"id": "H1", "qty": 0, "category": "helmets"},
                ],
            }
        },
    ),
    ("order.placed", "anna", {"order": {"id": " A1 ", "items": [{"id": "H1"}, {"id": 5, "name": "Pump 2"}]}}),
    ("order.placed", "anna", {"order": {"id": 7.5, "items": [{"id": "X1"}]}}),
    ("order.placed", "carl", {"order": {"id": "B2", "items": {"id": "H1"}}}),
    ("order.placed", "carl", {"order": {"id": "B3", "items": [{"id": "T1"}, {"id": "H1"}, {"id": "L9"}]}}),
    ("product.viewed", "carl", {"product": {"id": "H1", "name": "Helmet", "price": "12"}}),
]


def older(both: Both, until: int) -> None:
    """Both databases as a Boomerang with the migrations up to `until` left them."""
    for number, _name, sql in MIGRATIONS:
        if number <= until:
            both.sqlite.executescript(sql)
            both.sqlite.execute(f"PRAGMA user_version = {number}")
    both.pg.execute("CREATE TABLE boomerang_schema (version integer NOT NULL)")
    for number, _name, sql in POSTGRESQL_MIGRATIONS:
        if number <= until:
            both.pg.execute(sql)
    both.pg.execute("INSERT INTO boomerang_schema VALUES (%s)", [until])


def test_the_backfills_give_what_sqlites_give(pg: psycopg.Connection, tmp_path: Path) -> None:
    import json

    sqlite = sqlite3.connect(tmp_path / "boomerang.db", isolation_level=None)
    both = Both(sqlite, pg)
    older(both, 7)
    for n, (kind, customer, data) in enumerate(EVENTS):
        at = f"2026-03-0{n + 1}T10:00:00.000000Z"
        both.run(
            "INSERT INTO events (id, type, at, customer_id, data, source, received_at)"
            " VALUES (?, ?, ?, ?, ?, 'x', ?)",
            [f"e-{n}", kind, at, customer, json.dumps(data), at],
        )
    for n, (status, channel, opened) in enumerate(
        [
            ("sent", "email", STAMPS[1]),
            ("failed", "email", None),
            ("delivered", "sms", None),
            ("pending", None, None),
        ]
    ):
        both.run(
            "INSERT INTO messages (id, customer_id, template, category, scenario, step, channel, status,"
            " created_at, opened_at) VALUES (?, 'c-1', 't', 'promo', 'cart', '1', ?, ?, ?, ?)",
            [f"m-{n}", channel, status, DAYS[n % 2], opened],
        )
    for n, context in enumerate(CONTEXTS):
        both.run(
            "INSERT INTO journeys (id, scenario, customer_id, entry_key, status, holdout, context,"
            " entered_at, updated_at) VALUES (?, 'cart', 'c-1', ?, 'active', ?, ?, ?, ?)",
            [f"j-{n}", f"j-{n}", int(n == 2), context, DAYS[n % 2], DAYS[0]],
        )
    for kind, scenario in [
        ("defer", "cart"),
        ("defer", "cart"),
        ("drop", "cart"),
        ("drop", None),
        ("send", "cart"),
    ]:
        both.run(
            "INSERT INTO journal (at, kind, customer_id, scenario, reason)"
            " VALUES (?, ?, 'c-1', ?, 'quiet hours')",
            [DAYS[0], kind, scenario],
        )
    sqlite.close()
    Store(tmp_path / "boomerang.db").close()  # migrates the SQLite database to the latest
    assert migrate_postgresql(pg) == list(range(8, LATEST + 1))

    sqlite = sqlite3.connect(tmp_path / "boomerang.db")
    try:
        for table in (
            "products",
            "order_items",
            "co_purchases",
            "engagement",
            "report_days",
            "report_entrants",
            "report_variants",
            "report_plan",
        ):
            found = rows_of(pg.execute(f"SELECT * FROM {table}"))
            assert found == rows_of(sqlite.execute(f"SELECT * FROM {table}")), table
            assert found, table  # each backfill had something to fill in
    finally:
        sqlite.close()
