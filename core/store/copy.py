"""`boomerang migrate --to`: a project's SQLite database copied into an empty PostgreSQL one.

All in one PostgreSQL transaction, so a failure leaves the target as it was: the target is
migrated to the latest schema, found empty, filled table by table with COPY (the triggers that
keep running totals disabled, so the totals are copied rather than counted again; the indexes
that keep no constraint built once afterwards), its identity sequences set past the copied ids,
then every table's count compared with SQLite's. SQLite is loosely typed: a value of another
type than its PostgreSQL column's is cast by SQLite's own CAST, and text that is no valid UTF-8,
or holds a NUL, which PostgreSQL's text cannot, is repaired.
"""

from __future__ import annotations

import functools
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from boomerang.database_lock import lock_database
from boomerang.store.connection import Connection, StoreError
from boomerang.store.migrations_postgresql import TOTALS_TRIGGERS, migrate_postgresql

# Rows read from SQLite and written to COPY at a time (and between two progress reports).
BATCH = 5000
# How SQLite casts a value for a PostgreSQL column of each type.
_CASTS = {"text": "TEXT", "bigint": "INTEGER", "double precision": "REAL"}
# The type of value each PostgreSQL column type takes without a cast (SQLite's typeof).
_TYPEOF = {"text": "text", "bigint": "integer", "double precision": "real"}

Progress = Callable[[str, int, int], None]
"""Told (table, rows copied so far, rows in all) as a table's rows are copied."""


class CopyError(StoreError):
    """The copy was not made (the target is not empty or not reachable, the counts differ...);
    nothing was written to the target."""


@dataclass
class Copied:
    """One table copied: its rows in SQLite and in PostgreSQL, and the values cast or repaired
    to fit their PostgreSQL column."""

    table: str
    sqlite: int
    postgresql: int
    cast: int = 0


def postgresql_url(text: str) -> str:
    """`text` if it is a PostgreSQL URL (`postgresql://` or `postgres://`, as libpq reads
    them); raises ValueError saying what is wrong otherwise."""
    import psycopg
    from psycopg.conninfo import conninfo_to_dict

    scheme = text.split("://", 1)[0] if "://" in text else ""
    if scheme not in ("postgresql", "postgres"):
        raise ValueError(
            f"'{shown_url(text)}' is not a PostgreSQL URL: write postgresql://user@host:port/database"
        )
    try:
        conninfo_to_dict(text)
    except psycopg.ProgrammingError as exc:
        raise ValueError(f"'{shown_url(text)}' is not a PostgreSQL URL libpq reads: {exc}") from None
    return text


def shown_url(url: str) -> str:
    """`url` without its password, for messages."""
    try:
        parts = urlsplit(url)
        if parts.password is None:
            return url
        host = parts.netloc.rsplit("@", 1)[1]
        return urlunsplit(parts._replace(netloc=f"{parts.username}:***@{host}"))
    except ValueError:
        return url


def copy_to_postgresql(database: Path, url: str, progress: Progress) -> list[Copied]:
    """Copy the SQLite `database` into the empty PostgreSQL database at `url` (see the module's
    docstring), holding the database's lock file as the daemon does; returns each table's
    counts, in the order copied. Raises `DatabaseLocked` while the daemon runs, `StoreError`
    for a SQLite database of another schema, `CopyError` for anything that stopped the copy."""
    import psycopg

    with lock_database(database):
        Connection(database, read_only=True).close()  # refuses a schema other than this Boomerang's
        source = _open_source(database)
        try:
            target = psycopg.connect(url, connect_timeout=10)
        except psycopg.Error as exc:
            source.close()
            raise CopyError(f"cannot connect to {shown_url(url)}: {str(exc).strip()}") from None
        try:
            with target.transaction():
                return _copy(source, target, progress)
        except psycopg.Error as exc:
            raise CopyError(f"PostgreSQL refused the copy, nothing was written: {str(exc).strip()}") from None
        except sqlite3.Error as exc:
            raise CopyError(f"cannot read {database} ({exc}); nothing was written") from None
        finally:
            target.close()
            source.close()


class _Text:
    """SQLite's text as Python's, counting the values repaired: bytes that are no UTF-8 are
    replaced (sqlite3 would raise), NULs too (PostgreSQL's text has none)."""

    def __init__(self) -> None:
        self.repaired = 0

    def __call__(self, data: bytes) -> str:
        try:
            text = data.decode()
        except UnicodeDecodeError:
            self.repaired += 1
            return data.decode(errors="replace").replace("\x00", "\ufffd")
        if "\x00" in text:
            self.repaired += 1
            return text.replace("\x00", "\ufffd")
        return text


def _open_source(database: Path) -> sqlite3.Connection:
    """The SQLite database in one transaction that holds its write lock until the copy ends:
    one snapshot for the counts and every row, and no write beside it, so that a `forget` run
    meanwhile waits (then says to try again) rather than erasing what was already copied. The
    connection writes nothing: closing it rolls the transaction back."""
    source = sqlite3.connect(database, isolation_level=None, timeout=10)
    try:
        source.execute("BEGIN IMMEDIATE")
    except sqlite3.OperationalError as exc:  # a write under way past the busy timeout
        source.close()
        raise CopyError(f"cannot lock {database} for the copy ({exc}); try again") from None
    return source


def _copy(source: sqlite3.Connection, target: Any, progress: Progress) -> list[Copied]:
    migrate_postgresql(target)
    tables = _tables(source, target)
    held = {
        table: n for table in tables if (n := target.execute(f"SELECT count(*) FROM {table}").fetchone()[0])
    }
    if held:
        rows = ", ".join(f"{table}: {n}" for table, n in held.items())
        raise CopyError(
            f"the PostgreSQL database is not empty ({rows}): copy into a new, empty database or schema"
        )
    for table, triggers in TOTALS_TRIGGERS.items():
        for trigger in triggers:
            target.execute(f"ALTER TABLE {table} DISABLE TRIGGER {trigger}")
    # Indexes are built faster once than row by row: those that keep no constraint are dropped
    # for the copy and made again after it.
    indexes = target.execute(
        "SELECT i.indexname, i.indexdef FROM pg_indexes i WHERE i.schemaname = current_schema()"
        " AND NOT EXISTS (SELECT FROM pg_constraint c"
        " WHERE c.conindid = format('%I.%I', i.schemaname, i.indexname)::regclass)"
    ).fetchall()
    for name, _ in indexes:
        target.execute(f'DROP INDEX "{name}"')
    copied = [_copy_table(source, target, table, columns, progress) for table, columns in tables.items()]
    for _, definition in indexes:
        target.execute(definition)
    _set_sequences(source, target)
    for table, triggers in TOTALS_TRIGGERS.items():
        for trigger in triggers:
            target.execute(f"ALTER TABLE {table} ENABLE TRIGGER {trigger}")
    for table in copied:
        table.postgresql = target.execute(f"SELECT count(*) FROM {table.table}").fetchone()[0]
    wrong = [table for table in copied if table.postgresql != table.sqlite]
    if wrong:
        counts = "; ".join(
            f"{table.table}: {table.sqlite} in SQLite, {table.postgresql} in PostgreSQL" for table in wrong
        )
        raise CopyError(f"the counts differ after the copy ({counts}); nothing was written")
    return copied


def _tables(source: sqlite3.Connection, target: Any) -> dict[str, list[tuple[str, str]]]:
    """The tables to copy, in the order the migrations made them (each after those it names),
    with their PostgreSQL columns and types; raises `CopyError` if the two schemas differ."""
    names = [
        row[0]
        for row in source.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY rowid"
        )
    ]
    columns: dict[str, list[tuple[str, str]]] = {}
    for table, column, kind in target.execute(
        "SELECT table_name, column_name, data_type FROM information_schema.columns"
        " WHERE table_schema = current_schema() AND table_name != 'boomerang_schema'"
        " ORDER BY table_name, ordinal_position"
    ):
        columns.setdefault(table, []).append((column, kind))
    if set(names) != set(columns):
        raise CopyError(
            f"the PostgreSQL schema has other tables than SQLite's: {sorted(set(names) ^ set(columns))}"
        )
    return {table: columns[table] for table in names}


def _copy_table(
    source: sqlite3.Connection, target: Any, table: str, columns: list[tuple[str, str]], progress: Progress
) -> Copied:
    """COPY one table's rows, the values not of their column's type cast by SQLite's CAST.

    Text is read as sqlite3 reads it, fast; a value that is no UTF-8 (which sqlite3 refuses) or
    holds a NUL (which psycopg refuses) stops that and the table is copied again from its start,
    its savepoint rolled back, with `_Text` reading every text value and repairing those."""
    import psycopg

    total, cast, odd = _survey(source, table, columns)
    selected = ", ".join(
        f'CAST("{column}" AS {_CASTS[kind]})'
        if column in odd
        else column
        if column == "rowid"
        else f'"{column}"'
        for column, kind in columns
    )
    read = functools.partial(_copy_rows, source, target, table, columns, selected, progress, total)
    try:
        with target.transaction():
            repaired = read(None)
    except (sqlite3.OperationalError, psycopg.DataError):
        with target.transaction():
            repaired = read(_Text())
    return Copied(table, total, 0, cast + repaired)


def _survey(
    source: sqlite3.Connection, table: str, columns: list[tuple[str, str]]
) -> tuple[int, int, set[str]]:
    """A table's rows, its values not of their PostgreSQL column's type, and the columns
    holding such values."""
    kept = [(column, kind) for column, kind in columns if column != "rowid"]
    other = ", ".join(
        f"sum(typeof(\"{column}\") NOT IN ('null', '{_TYPEOF[kind]}'))" for column, kind in kept
    )
    total, *found = source.execute(f"SELECT count(*), {other} FROM {table}").fetchone()
    by_column = {column: n for (column, _), n in zip(kept, found, strict=True) if n}
    return total, sum(by_column.values()), set(by_column)


def _copy_rows(
    source: sqlite3.Connection,
    target: Any,
    table: str,
    columns: list[tuple[str, str]],
    selected: str,
    progress: Progress,
    total: int,
    text: _Text | None,
) -> int:
    """COPY the rows of `SELECT selected FROM table`, text read by `text` if given; returns
    the text values repaired."""
    source.text_factory = text or str
    rows = source.execute(f"SELECT {selected} FROM {table}")
    done = 0
    progress(table, done, total)
    names = ", ".join(f'"{column}"' for column, _ in columns)
    with target.cursor().copy(f"COPY {table} ({names}) FROM STDIN") as copy:
        while batch := rows.fetchmany(BATCH):
            for row in batch:
                copy.write_row(row)
            done += len(batch)
            progress(table, done, total)
    return text.repaired if text else 0


def _set_sequences(source: sqlite3.Connection, target: Any) -> None:
    """Set each identity column's sequence past the ids copied, and past the highest id SQLite's
    AUTOINCREMENT ever gave (`sqlite_sequence`), so that no id is given twice."""
    given = dict(source.execute("SELECT name, seq FROM sqlite_sequence").fetchall())
    for table, column in target.execute(
        "SELECT table_name, column_name FROM information_schema.columns"
        " WHERE table_schema = current_schema() AND is_identity = 'YES'"
    ).fetchall():
        highest = target.execute(f'SELECT max("{column}") FROM {table}').fetchone()[0]
        last = max(highest or 0, given.get(table, 0) if column != "rowid" else 0)
        if last:
            target.execute("SELECT setval(pg_get_serial_sequence(%s, %s), %s)", [table, column, last])
