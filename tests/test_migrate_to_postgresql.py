"""`boomerang migrate --to`: a project's SQLite database, after real use, copied into PostgreSQL
row for row, in one transaction; the refusals (a daemon running, a target not empty, a bad URL,
counts that differ) say why and write nothing."""

from __future__ import annotations

import json
import os
import pty
import re
import sqlite3
import subprocess
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import psycopg
import pytest
from click.testing import CliRunner

from boomerang.cli import cli
from boomerang.store import Store
from boomerang.store.copy import copy_to_postgresql
from boomerang.store.migrations_postgresql import (
    POSTGRESQL_MIGRATIONS,
    migrate_postgresql,
    postgresql_schema_version,
)
from conftest import AUTH, BOOMERANG, event, incoming, running, url, wait_for

pytestmark = pytest.mark.sqlite_only  # the copy's source is the project's SQLite file

WELCOME = (
    "scenario: welcome\ntrigger: {event: signup.completed}\nsteps:\n  - split: {a: 50%, b: 50%}\n"
    "  - send: welcome\n"
)
# The rows put in SQLite by hand, of types SQLite takes and PostgreSQL's columns do not: each
# (table, id column, id) is checked on its own, not in the table-by-table comparison.
ODD = [("customers", "id", "odd-1"), ("journeys", "id", "odd-journey"), ("events", "id", "odd-event")]


def migrate(project: Path, target: str) -> Any:
    return CliRunner().invoke(cli, ["migrate", "--config", str(project / "boomerang.yaml"), "--to", target])


async def post(daemon: Any, events: list[dict]) -> None:
    async with (
        aiohttp.ClientSession() as session,
        session.post(url(daemon, "/events"), data=json.dumps(events), headers=AUTH) as response,
    ):
        assert response.status == 200, await response.text()


async def use(project: Path) -> None:
    """Run the daemon on the project and post events through HTTP: signups (a split, then a
    message sent at once), carts and views (journeys waiting, their jobs), orders (order lines,
    the catalogue, co-purchases)."""
    (project / "scenarios" / "welcome.yaml").write_text(WELCOME)
    (project / "templates" / "welcome").mkdir()
    (project / "templates" / "welcome" / "email.en.html").write_text(
        "---\nsubject: Welcome, {{ customer.name }}\n---\n<p>Hello {{ customer.name }}!</p>\n"
    )
    customers = [{"id": f"c-{n}", "email": f"c{n}@shop.example", "name": f"C{n}"} for n in range(6)]
    items = [{"id": "H1", "name": "Helmet", "price": 30}, {"sku": "T1", "name": "Tyre", "price": 12}]
    events = []
    for n, customer in enumerate(customers):
        events.append(event(f"s-{n}", "signup.completed", customer=customer))
        events.append(event(f"v-{n}", "product.viewed", customer=customer, data={"product": items[n % 2]}))
        events.append(event(f"k-{n}", "cart.updated", customer=customer, data={"cart": {"items": items}}))
        if n % 2:
            order = {"order": {"id": f"o-{n}", "total": 42, "items": items[: 1 + n % 3]}}
            events.append(event(f"o-{n}", "order.placed", customer=customer, data=order))
    async with running(project) as daemon:
        await post(daemon, events)
        await wait_for(
            lambda: len(list((project / "outbox").glob("*-email-*.eml"))) >= len(customers),
            seconds=30,
            what="the welcome messages",
        )


def add_odd_rows(database: Path) -> None:
    """Rows whose values SQLite keeps though the column's type says otherwise, with JSON that is
    no JSON, text that is no UTF-8 and a NUL."""
    conn = sqlite3.connect(database)
    conn.execute(
        "INSERT INTO customers (id, name, orders_count, revenue, consents, created_at, updated_at)"
        " VALUES ('odd-1', 'a' || char(0) || 'b', 'many', 12, 'not json', '2026-03-02T10:00:00.000000Z', 7)"
    )
    conn.execute(
        "INSERT INTO journeys (id, scenario, customer_id, entry_key, status, holdout, context, entered_at,"
        " updated_at) VALUES ('odd-journey', 'welcome', 'odd-1', 'x', 'active', 2.5, '{\"variants\": ',"
        " '2026-03-02T10:00:00.000000Z', '2026-03-02T10:00:00.000000Z')"
    )
    conn.execute(
        "INSERT INTO events (id, type, at, customer_id, data, source, received_at)"
        " VALUES ('odd-event', 'x', '2026-03-02T10:00:00.000000Z', 'odd-1', CAST(x'7b80ff7d' AS TEXT),"
        " 'x', '2026-03-02T10:00:00.000000Z')"
    )
    conn.commit()
    conn.close()


def as_column(value: Any, kind: str) -> Any:
    """A value SQLite gave, as PostgreSQL's column of `kind` holds it."""
    if value is None:
        return None
    return {"text": str, "bigint": int, "double precision": float}[kind](value)


def rows(database: Path, pg: psycopg.Connection) -> dict[str, tuple[list, list]]:
    """Every table's rows (the odd ones left out) in SQLite and in PostgreSQL, sorted."""
    odd = {table: (column, value) for table, column, value in ODD}
    sqlite = sqlite3.connect(database)
    tables: dict[str, list[tuple[str, str]]] = {}
    for table, column, kind in pg.execute(
        "SELECT table_name, column_name, data_type FROM information_schema.columns"
        " WHERE table_schema = current_schema() AND table_name != 'boomerang_schema'"
        " ORDER BY table_name, ordinal_position"
    ):
        tables.setdefault(table, []).append((column, kind))
    found = {}
    for table, columns in tables.items():
        names = ", ".join(f'"{column}"' for column, _ in columns)
        selected = ", ".join(column if column == "rowid" else f'"{column}"' for column, _ in columns)
        where = f"WHERE {odd[table][0]} != '{odd[table][1]}'" if table in odd else ""
        mine = [
            tuple(as_column(value, kind) for value, (_, kind) in zip(row, columns, strict=True))
            for row in sqlite.execute(f"SELECT {selected} FROM {table} {where}")
        ]
        theirs = pg.execute(f"SELECT {names} FROM {table} {where}").fetchall()
        found[table] = (sorted(mine, key=repr), sorted(theirs, key=repr))
    sqlite.close()
    return found


@pytest.fixture
def pg(postgresql_url: str) -> psycopg.Connection:
    with psycopg.connect(postgresql_url, autocommit=True) as conn:
        yield conn


async def test_a_used_database_is_copied_row_for_row(project: Path, postgresql_url: str, pg) -> None:
    await use(project)
    database = project / "boomerang.db"
    add_odd_rows(database)

    result = migrate(project, postgresql_url)

    assert result.exit_code == 0, result.output
    copied = rows(database, pg)
    for table in (
        "customers",
        "events",
        "journeys",
        "jobs",
        "messages",
        "journal",
        "products",
        "order_items",
        "co_purchases",
        "engagement",
        "report_days",
        "report_entrants",
        "report_variants",
    ):
        assert copied[table][0], f"the use left no rows in {table}"
    for table, (mine, theirs) in copied.items():
        assert theirs == mine, table
    # the counts printed, per table, as the last lines say
    assert "customers                   7           7" in result.stdout
    # cast: 'many', the holdout 2.5 and its report_entrants total; repaired: the two texts
    assert "every count checked; 5 values cast or repaired to fit their column" in result.stdout

    # the odd rows: cast by SQLite's rules (a text that is no number is 0, 2.5 is 2), text repaired
    customer = "SELECT name, orders_count, consents, updated_at FROM customers WHERE id = 'odd-1'"
    assert pg.execute(customer).fetchone() == ("a\ufffdb", 0, "not json", "7")
    journey = "SELECT holdout, context FROM journeys WHERE id = 'odd-journey'"
    assert pg.execute(journey).fetchone() == (2, '{"variants": ')
    assert pg.execute("SELECT data FROM events WHERE id = 'odd-event'").fetchone() == ("{\ufffd\ufffd}",)

    # the database goes on from there: new ids after the copied ones, the totals kept again
    assert postgresql_schema_version(pg) == POSTGRESQL_MIGRATIONS[-1][0]
    for table, column in (("jobs", "id"), ("journal", "id"), ("events", "rowid"), ("journeys", "rowid")):
        highest = pg.execute(f"SELECT max({column}) FROM {table}").fetchone()[0]
        following = pg.execute(f"SELECT nextval(pg_get_serial_sequence('{table}', '{column}'))").fetchone()[0]
        assert following > highest, table
    before = pg.execute("SELECT sum(messages) FROM report_days").fetchone()[0]
    pg.execute(
        "INSERT INTO messages (id, customer_id, template, category, status, created_at)"
        " VALUES ('m-new', 'c-1', 'welcome', 'promo', 'sent', '2026-03-02T10:00:00.000000Z')"
    )
    assert pg.execute("SELECT sum(messages) FROM report_days").fetchone()[0] == before + 1


async def test_the_progress_is_told_on_stderr_table_by_table(project: Path, postgresql_url: str) -> None:
    await use(project)

    result = migrate(project, postgresql_url)

    assert result.exit_code == 0, result.output
    lines = result.stderr.splitlines()
    assert lines[:2] == ["customers: 0/6 rows", "customers: 6/6 rows"]
    tables = [line.split(":")[0] for line in lines]
    assert tables.index("identities") < tables.index("events") < tables.index("report_plan")
    assert all(line.endswith(" rows") for line in lines)


async def test_a_terminal_gets_a_bar_per_table(project: Path, postgresql_url: str) -> None:
    await use(project)
    terminal, stderr = pty.openpty()
    process = subprocess.Popen(
        [BOOMERANG, "migrate", "--config", str(project / "boomerang.yaml"), "--to", postgresql_url],
        stdout=subprocess.PIPE,
        stderr=stderr,
        env={**os.environ, "TERM": "xterm"},
    )
    os.close(stderr)
    shown = bytearray()
    while True:  # read as it comes: a terminal holds only so much unread
        try:
            chunk = os.read(terminal, 4096)
        except OSError:  # the process closed its end
            break
        if not chunk:
            break
        shown += chunk
    assert process.wait(timeout=60) == 0
    os.close(terminal)
    text = shown.decode()
    assert re.search(r"customers +\[#+\]  6/6", text)
    assert re.search(r"report_plan +no rows", text)
    assert "customers: 6/6 rows" not in text  # the plain lines are for logs


def empty(pg: psycopg.Connection) -> bool:
    """Whether the schema has no table at all."""
    return pg.execute(
        "SELECT count(*) FROM information_schema.tables WHERE table_schema = current_schema()"
    ).fetchone() == (0,)


async def test_the_copy_waits_for_the_daemon_to_stop(project: Path, postgresql_url: str, pg) -> None:
    async with running(project):
        result = migrate(project, postgresql_url)
    assert result.exit_code == 1
    assert "the daemon is running on" in result.stderr and "stop it, then run" in result.stderr
    assert "Traceback" not in result.output
    assert empty(pg)


async def test_a_target_with_data_is_refused(project: Path, postgresql_url: str, pg) -> None:
    await use(project)
    migrate_postgresql(pg)
    pg.execute(
        "INSERT INTO customers (id, created_at, updated_at)"
        " VALUES ('someone', '2026-03-02T10:00:00.000000Z', '2026-03-02T10:00:00.000000Z')"
    )

    result = migrate(project, postgresql_url)

    assert result.exit_code == 1
    assert "the PostgreSQL database is not empty (customers: 1)" in result.stderr
    assert pg.execute("SELECT id FROM customers").fetchall() == [("someone",)]
    assert pg.execute("SELECT count(*) FROM events").fetchone() == (0,)


async def test_counts_that_differ_leave_the_target_as_it_was(project: Path, postgresql_url: str, pg) -> None:
    await use(project)
    migrate_postgresql(pg)
    # Something on the server that loses rows: a trigger of someone else's, which the copy leaves on.
    pg.execute(
        "CREATE FUNCTION lose() RETURNS trigger LANGUAGE plpgsql AS"
        " $$ BEGIN DELETE FROM identities WHERE kind = NEW.kind AND value = NEW.value; RETURN NULL; END $$;"
        " CREATE TRIGGER lose AFTER INSERT ON identities FOR EACH ROW EXECUTE FUNCTION lose()"
    )

    result = migrate(project, postgresql_url)

    assert result.exit_code == 1
    assert "the counts differ after the copy (identities: " in result.stderr
    assert "in SQLite, 0 in PostgreSQL); nothing was written" in result.stderr
    assert pg.execute("SELECT count(*) FROM customers").fetchone() == (0,)


@pytest.mark.parametrize(
    ("target", "exit_code", "said"),
    [
        ("mysql://shop@db/shop", 2, "'mysql://shop@db/shop' is not a PostgreSQL URL"),
        ("./boomerang.db", 2, "is not a PostgreSQL URL: write postgresql://user@host:port/database"),
        (
            "postgresql://shop:secret@127.0.0.1:1/shop",
            1,
            "cannot connect to postgresql://shop:***@127.0.0.1:1/shop",
        ),
    ],
)
def test_a_bad_url_is_refused(project: Path, target: str, exit_code: int, said: str) -> None:
    Store(project / "boomerang.db").close()
    result = migrate(project, target)
    assert result.exit_code == exit_code, result.output
    assert said in result.stderr and "secret" not in result.output
    assert "Traceback" not in result.output


def test_no_write_goes_beside_the_copy_so_forget_cannot_erase_what_was_copied(
    tmp_path: Path, postgresql_url: str
) -> None:
    """`forget` runs beside the daemon, so the lock file does not hold it off: the copy holds
    SQLite's write lock instead, and a write tried while it reads waits, then is refused."""
    database = tmp_path / "boomerang.db"
    store = Store(database)
    store.ingest([incoming("e-1", customer={"id": "c-1", "email": "ann@example.com"})], datetime.now(UTC))
    store.close()
    refused: list[str] = []

    def progress(table: str, done: int, total: int) -> None:
        writer = sqlite3.connect(database, timeout=0.1)
        try:
            writer.execute("UPDATE customers SET name = 'Ann'")
            writer.commit()
        except sqlite3.OperationalError as exc:
            refused.append(str(exc))
        finally:
            writer.close()

    copied = copy_to_postgresql(database, postgresql_url, progress)
    assert refused and set(refused) == {"database is locked"}
    assert {table.table: table.postgresql for table in copied}["customers"] == 1
    with sqlite3.connect(database) as after:  # the lock is gone with the copy
        after.execute("UPDATE customers SET name = 'Ann'")
