"""The report's running totals per day (`report_days` on messages, `report_entrants` on
journeys, migration 11's; `report_variants` on journeys' split variants and `report_plan` on the
journal's deferred and dropped lines, migration 12's), kept by triggers: always what a fresh
GROUP BY over the rows gives, whatever was inserted, changed or deleted; and filled in for a
database from before them."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from boomerang.store import Store

STATUSES = ["pending", "sending", "sent", "delivered", "failed", "dropped", "unknown"]
DAYS = ["2026-03-02T10:00:00.000000Z", "2026-03-03T23:59:59.999999Z"]
STAMP = [None, "2026-03-04T10:00:00.000000Z"]
# Journeys' contexts: no split yet, one or two splits drawn, a variant that is not text, and
# what the counts leave out (variants that are no object, a null variant, text that is no JSON).
CONTEXTS = [
    "{}",
    '{"variants": {"3": "a"}}',
    '{"variants": {"3": "b"}, "cart": {"total": 12}}',
    '{"variants": {"3": "a", "5.b": "c"}}',
    '{"variants": {"3": 2}}',
    '{"variants": ["a"]}',
    '{"variants": {"3": null}}',
    "not json",
]


def fresh_days(store: Store) -> dict[tuple, tuple]:
    """`report_days` the slow way."""
    rows = store.db.execute(
        "SELECT substr(created_at, 1, 10), coalesce(scenario, ''), coalesce(step, ''), coalesce(channel, ''),"
        " count(*), sum(CASE WHEN status IN ('sent', 'delivered', 'unknown') THEN 1 ELSE 0 END),"
        " sum(CASE WHEN status = 'failed' THEN 1 ELSE 0 END),"
        " count(delivered_at), count(opened_at), count(clicked_at) FROM messages GROUP BY 1, 2, 3, 4"
    ).fetchall()
    return {tuple(row[:4]): tuple(row[4:]) for row in rows}


def kept_days(store: Store) -> dict[tuple, tuple]:
    rows = store.db.execute(
        "SELECT day, scenario, step, channel, messages, sent, failed, delivered, opened, clicked"
        " FROM report_days WHERE messages != 0"
    ).fetchall()
    return {tuple(row[:4]): tuple(row[4:]) for row in rows}


def fresh_entrants(store: Store) -> dict[tuple, int]:
    rows = store.db.execute(
        "SELECT substr(entered_at, 1, 10), scenario, holdout, count(*) FROM journeys GROUP BY 1, 2, 3"
    ).fetchall()
    return {tuple(row[:3]): row[3] for row in rows}


def fresh_variants(store: Store) -> dict[tuple, int]:
    """`report_variants` the slow way, read here from every journey: the variants drawn (text,
    numbers, booleans as 1 or 0) of an object `variants` in the context of those not held out."""
    counted: Counter[tuple] = Counter()
    journeys = store.db.execute("SELECT entered_at, scenario, holdout, context FROM journeys").fetchall()
    for entered_at, scenario, holdout, context in journeys:
        try:
            variants = json.loads(context).get("variants") if not holdout else None
        except (ValueError, AttributeError):  # no JSON, or JSON that is no object
            continue
        for split, variant in variants.items() if isinstance(variants, dict) else ():
            if isinstance(variant, str | int | float):  # a bool is an int: counted as 1 or 0
                atom = int(variant) if isinstance(variant, bool) else variant
                counted[(entered_at[:10], scenario, split, str(atom))] += 1
    return dict(counted)


def kept_variants(store: Store) -> dict[tuple, int]:
    rows = store.db.execute(
        "SELECT day, scenario, split, variant, entrants FROM report_variants WHERE entrants != 0"
    ).fetchall()
    # a variant as text: SQLite keeps a number drawn as the number, PostgreSQL as its text
    return {(day, scenario, split, str(variant)): count for day, scenario, split, variant, count in rows}


def kept_entrants(store: Store) -> dict[tuple, int]:
    rows = store.db.execute(
        "SELECT day, scenario, holdout, entrants FROM report_entrants WHERE entrants != 0"
    ).fetchall()
    return {tuple(row[:3]): row[3] for row in rows}


@pytest.fixture(scope="module")
def store(module_database: Path | str) -> Store:
    store = Store(module_database, durable=False)
    yield store
    store.close()


changes = st.lists(
    st.tuples(
        st.sampled_from(["insert", "update", "delete"]),
        st.integers(0, 4),
        st.sampled_from(STATUSES),
        st.sampled_from([None, "email", "sms"]),
        st.sampled_from([None, "cart", "browse"]),
        st.sampled_from(DAYS),
        st.tuples(*[st.sampled_from(STAMP)] * 3),
        st.booleans(),
        st.sampled_from(CONTEXTS),
    ),
    max_size=30,
)


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(changes=changes)
def test_the_totals_are_always_a_fresh_count(store: Store, changes: list) -> None:
    store.db.execute("DELETE FROM messages")
    store.db.execute("DELETE FROM journeys")
    for action, n, status, channel, scenario, day, (delivered, opened, clicked), holdout, context in changes:
        stamps = {"delivered_at": delivered, "opened_at": opened, "clicked_at": clicked}
        if action == "insert":
            store.insert_message(
                {
                    "id": f"m-{n}",
                    "customer_id": "c-1",
                    "template": "t",
                    "category": "promo",
                    "scenario": scenario,
                    "step": "1",
                    "channel": channel,
                    "status": status,
                    "created_at": day,
                    **stamps,
                }
            )
            store.db.execute(
                "INSERT OR IGNORE INTO journeys (id, scenario, customer_id, entry_key, status, holdout,"
                " context, entered_at, updated_at) VALUES (?, ?, 'c-1', ?, 'active', ?, ?, ?, ?)",
                [f"j-{n}", scenario or "cart", f"j-{n}", int(holdout), context, day, day],
            )
        elif action == "update":
            store.update_message(f"m-{n}", status=status, channel=channel, created_at=day, **stamps)
            store.db.execute(
                "UPDATE journeys SET holdout = ?, status = 'ended' WHERE id = ?", [int(holdout), f"j-{n}"]
            )
            # as the engine saves a journey at each step: its context, drawn variants and all
            store.db.execute("UPDATE journeys SET context = ? WHERE id = ?", [context, f"j-{n}"])
            store.db.execute(
                "UPDATE journeys SET entered_at = ?, scenario = ? WHERE id = ? AND ? = 'sent'",
                [day, scenario or "cart", f"j-{n}", status],
            )
        else:
            store.db.execute("DELETE FROM messages WHERE id = ?", [f"m-{n}"])
            store.db.execute("DELETE FROM journeys WHERE id = ?", [f"j-{n}"])
        assert kept_days(store) == fresh_days(store)
        assert kept_entrants(store) == fresh_entrants(store)
        assert kept_variants(store) == fresh_variants(store)


@pytest.mark.sqlite_only
def test_a_database_from_before_the_totals_starts_with_them_filled_in(tmp_path: Path) -> None:
    store = Store(tmp_path / "boomerang.db")
    for trigger in (
        "days_insert",
        "days_delete",
        "days_update",
        "entrants_insert",
        "entrants_delete",
        "entrants_update",
    ):
        store.db.execute(f"DROP TRIGGER report_{trigger}")
    store.db.execute("DROP TABLE report_days")
    store.db.execute("DROP TABLE report_entrants")
    store.db.execute("PRAGMA user_version = 10")  # as a database written before migration 11
    for n, status in enumerate(["sent", "delivered", "failed"]):
        store.insert_message(
            {
                "id": f"m-{n}",
                "customer_id": "c-1",
                "template": "t",
                "category": "promo",
                "scenario": "cart",
                "step": "1",
                "created_at": DAYS[0],
                "status": status,
                "channel": "email",
                "opened_at": STAMP[1],
            }
        )
    store.db.execute(
        "INSERT INTO journeys (id, scenario, customer_id, entry_key, status, entered_at, updated_at)"
        " VALUES ('j-1', 'cart', 'c-1', 'j-1', 'active', ?, ?)",
        [DAYS[0], DAYS[0]],
    )
    store.close()

    store = Store(tmp_path / "boomerang.db")
    assert kept_days(store) == fresh_days(store) == {("2026-03-02", "cart", "1", "email"): (3, 2, 1, 0, 3, 0)}
    assert kept_entrants(store) == {("2026-03-02", "cart", 0): 1}
    store.close()


@pytest.mark.sqlite_only
def test_a_database_from_before_the_variant_totals_starts_with_them_filled_in(tmp_path: Path) -> None:
    store = Store(tmp_path / "boomerang.db")
    for trigger in ("insert", "delete", "update"):
        store.db.execute(f"DROP TRIGGER report_variants_{trigger}")
    store.db.execute("DROP TABLE report_variants")
    store.db.execute("DROP INDEX messages_customer_engaged")
    store.db.execute("CREATE INDEX messages_customer ON messages (customer_id, created_at)")
    store.db.execute("PRAGMA user_version = 11")  # as a database written before migration 12
    for n, (context, holdout) in enumerate(
        [(CONTEXTS[1], 0), (CONTEXTS[1], 0), (CONTEXTS[3], 0), (CONTEXTS[1], 1), (CONTEXTS[7], 0)]
    ):
        store.db.execute(
            "INSERT INTO journeys (id, scenario, customer_id, entry_key, status, holdout, context,"
            " entered_at, updated_at) VALUES (?, 'cart', 'c-1', ?, 'active', ?, ?, ?, ?)",
            [f"j-{n}", f"j-{n}", holdout, context, DAYS[0], DAYS[0]],
        )
    store.close()

    store = Store(tmp_path / "boomerang.db")
    assert kept_variants(store) == fresh_variants(store) == {
        ("2026-03-02", "cart", "3", "a"): 3,
        ("2026-03-02", "cart", "5.b", "c"): 1,
    }
    indexes = {row[0] for row in store.db.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}
    assert "messages_customer_engaged" in indexes and "messages_customer" not in indexes
    store.close()


def fresh_plan(store: Store) -> dict[tuple, int]:
    """`report_plan` the slow way: what the report counted from the journal before it."""
    rows = store.db.execute(
        "SELECT substr(at, 1, 10), scenario, kind, reason, count(*) FROM journal"
        " WHERE kind IN ('defer', 'drop') AND scenario IS NOT NULL GROUP BY 1, 2, 3, 4"
    ).fetchall()
    return {tuple(row[:4]): row[4] for row in rows}


def kept_plan(store: Store) -> dict[tuple, int]:
    rows = store.db.execute(
        "SELECT day, scenario, kind, reason, lines FROM report_plan WHERE lines != 0"
    ).fetchall()
    return {tuple(row[:4]): row[4] for row in rows}


lines = st.lists(
    st.tuples(
        st.sampled_from(["insert", "update", "delete"]),
        st.integers(1, 5),
        st.sampled_from(["defer", "drop", "send", "goal"]),
        st.sampled_from([None, "cart", "browse"]),
        st.sampled_from(["quiet hours: waits until 08:00", "cap 2 per 1d (trigger) reached", "sent"]),
        st.sampled_from(DAYS),
    ),
    max_size=30,
)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(lines=lines)
def test_the_plan_lines_are_always_a_fresh_count(store: Store, lines: list) -> None:
    store.db.execute("DELETE FROM journal")
    for action, n, kind, scenario, reason, day in lines:
        if action == "insert":
            store.db.execute(
                "INSERT INTO journal (id, at, kind, customer_id, scenario, reason)"
                " VALUES (?, ?, ?, 'c-1', ?, ?) ON CONFLICT (id) DO NOTHING",
                [n, day, kind, scenario, reason],
            )
        elif action == "update":
            store.db.execute(
                "UPDATE journal SET at = ?, kind = ?, scenario = ?, reason = ? WHERE id = ?",
                [day, kind, scenario, reason, n],
            )
        else:
            store.db.execute("DELETE FROM journal WHERE id = ?", [n])
        assert kept_plan(store) == fresh_plan(store)


@pytest.mark.sqlite_only
def test_a_database_from_before_the_plan_totals_starts_with_them_filled_in(tmp_path: Path) -> None:
    store = Store(tmp_path / "boomerang.db")
    for trigger in ("insert", "delete", "update"):
        store.db.execute(f"DROP TRIGGER report_plan_{trigger}")
    store.db.execute("DROP TABLE report_plan")
    store.db.execute("PRAGMA user_version = 11")  # as a database written before migration 12
    written = [("defer", "cart"), ("defer", "cart"), ("drop", "cart"), ("drop", None), ("send", "cart")]
    for kind, scenario in written:
        store.db.execute(
            "INSERT INTO journal (at, kind, customer_id, scenario, reason)"
            " VALUES (?, ?, 'c-1', ?, 'quiet hours')",
            [DAYS[0], kind, scenario],
        )
    store.close()

    store = Store(tmp_path / "boomerang.db")
    assert kept_plan(store) == fresh_plan(store) == {
        ("2026-03-02", "cart", "defer", "quiet hours"): 2,
        ("2026-03-02", "cart", "drop", "quiet hours"): 1,
    }
    store.close()
