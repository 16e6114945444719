"""Everyone's engagement per channel, kept as running totals by triggers on `messages`: always
the figure a fresh reading of every message gives, whatever was inserted, changed or deleted."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from boomerang.store import MIGRATIONS, Store

STATUSES = ["pending", "sending", "sent", "delivered", "failed", "dropped"]
CHANNELS = [None, "email", "sms"]
STAMPS = [None, "2026-03-02T10:00:00.000000Z"]


def fresh_reading(store: Store) -> dict[str, tuple[float, int]]:
    """`engagement()` the slow way: every counted message read again."""
    found = store.db.execute(
        "SELECT channel, sum(CASE WHEN status = 'failed' THEN 0 WHEN clicked_at IS NOT NULL THEN 10"
        " WHEN opened_at IS NOT NULL THEN 6 WHEN delivered_at IS NOT NULL THEN 3 ELSE 1 END), count(*)"
        " FROM messages WHERE status IN ('sent', 'delivered', 'failed') AND channel IS NOT NULL"
        " GROUP BY channel"
    ).fetchall()
    return {channel: (points / (10.0 * n), n) for channel, points, n in found}


@pytest.fixture(scope="module")
def store(module_database: Path | str) -> Store:
    store = Store(module_database, durable=False)
    yield store
    store.close()


changes = st.lists(
    st.tuples(
        st.sampled_from(["insert", "update", "delete"]),
        st.integers(0, 5),
        st.sampled_from(STATUSES),
        st.sampled_from(CHANNELS),
        st.tuples(*[st.sampled_from(STAMPS)] * 3),
    ),
    max_size=30,
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(changes=changes)
def test_the_running_totals_are_what_a_fresh_reading_gives(store: Store, changes: list) -> None:
    store.db.execute("DELETE FROM messages")
    for action, n, status, channel, (delivered, opened, clicked) in changes:
        values = {"status": status, "channel": channel, "delivered_at": delivered, "opened_at": opened,
                  "clicked_at": clicked}
        if action == "insert":
            store.insert_message({"id": f"m-{n}", "customer_id": "c-1", "template": "t", "category": "promo",
                                  "created_at": "2026-03-02T09:00:00.000000Z", **values})
        elif action == "update":
            store.update_message(f"m-{n}", **values)
        else:
            store.db.execute("DELETE FROM messages WHERE id = ?", [f"m-{n}"])
        assert store.engagement() == fresh_reading(store)


@pytest.mark.sqlite_only
def test_a_database_from_before_the_totals_starts_with_them_filled_in(tmp_path: Path) -> None:
    # as a database written before migration 8: the migrations up to 7 only
    connection = sqlite3.connect(tmp_path / "boomerang.db")
    for number, _name, sql in MIGRATIONS:
        if number <= 7:
            connection.executescript(sql)
            connection.execute(f"PRAGMA user_version = {number}")
    connection.executemany(
        "INSERT INTO messages (id, customer_id, template, category, created_at, status, channel, clicked_at)"
        " VALUES (?, 'c-1', 't', 'promo', '2026-03-02T09:00:00.000000Z', ?, 'email', ?)",
        [(f"m-{n}", status, clicked)
         for n, (status, clicked) in enumerate([("sent", None), ("delivered", STAMPS[1]), ("failed", None)])],
    )
    connection.commit()
    connection.close()

    store = Store(tmp_path / "boomerang.db")
    assert store.engagement() == fresh_reading(store) == {"email": (11 / 30, 3)}
    store.close()
