"""The connection: opening (read-write or read-only), the store thread, transactions, migrating.

One SQLite file in WAL mode, reached through sqlite-utils. SQLite is synchronous, so the
daemon funnels every call through one worker thread (`Connection.run`), the way datasette
funnels its writes, and the event loop never waits on the disk.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import json
import logging
import queue
import sqlite3
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Executor, Future
from pathlib import Path
from typing import Any, TypeVar

from sqlite_utils import Database
from sqlite_utils.db import jsonify_if_needed

from boomerang.database_url import is_postgresql
from boomerang.private_files import create_private
from boomerang.store.migrations import MIGRATIONS

T = TypeVar("T")
log = logging.getLogger(__name__)
# Prepared statements kept per connection (sqlite3's default is 128): the store's statements
# with their IN lists of one length or another are several hundred, and a statement prepared
# again costs about as much as a small one run.
STATEMENT_CACHE = 1024

# The rows of `Connection._insert_all`, as one JSON array of arrays (text as it is, not escaped).
_encode_rows = json.JSONEncoder(ensure_ascii=False, check_circular=False, allow_nan=False).encode


class StoreError(Exception):
    """The database cannot be used as it is (e.g. made by a newer Boomerang)."""


class StoreUnavailable(StoreError):
    """The database cannot take a write right now: the disk is full, another process held it
    locked past the busy timeout, or the disk reported an I/O error. Nothing of the write was
    kept, and the same write may well succeed later."""


class NoDatabase(StoreError):
    """No daemon has made the database yet (an empty PostgreSQL schema; on SQLite, no file)."""


class DatabaseUnreachable(StoreError):
    """The database server does not answer (or refuses the connection): PostgreSQL only."""


# SQLite's primary result codes of a write that failed for want of the disk, not of the data:
# BUSY, LOCKED (database is locked), IOERR, FULL, CANTOPEN.
_UNAVAILABLE_CODES = {5, 6, 10, 13, 14}


def unavailable(exc: BaseException) -> bool:
    """Whether an exception says the database cannot take a write now (see `StoreUnavailable`)."""
    if isinstance(exc, StoreUnavailable):
        return True
    if isinstance(exc, sqlite3.Error):
        code = getattr(exc, "sqlite_errorcode", None)
        return code is not None and code & 0xFF in _UNAVAILABLE_CODES
    if type(exc).__module__.startswith("psycopg"):  # only a PostgreSQL store raises these
        from boomerang.store.postgresql import postgresql_unavailable

        return postgresql_unavailable(exc)
    return False


def lost_race(exc: BaseException) -> bool:
    """Whether a PostgreSQL transaction was rolled back whole for a race with another daemon's
    (SQLSTATE class 40: a deadlock, a serialization failure): run again, it may well go through."""
    return type(exc).__module__.startswith("psycopg") and (getattr(exc, "sqlstate", None) or "")[:2] == "40"


class _Savepoint:
    """A savepoint in the transaction under way (`Connection.savepoint`): released when its
    block ends, rolled back to and released if it raises, as sqlite-utils' nested `atomic()`."""

    __slots__ = ("_conn",)

    def __init__(self, conn: sqlite3.Connection):
        self._conn = conn

    def __enter__(self) -> None:
        if not self._conn.in_transaction:
            raise StoreError("a savepoint belongs inside a transaction")
        self._conn.execute("SAVEPOINT boomerang_step")

    def __exit__(self, kind: type[BaseException] | None, *_: Any) -> None:
        if kind is None:
            self._conn.execute("RELEASE SAVEPOINT boomerang_step")
        elif self._conn.in_transaction:  # an error such as a full disk may have ended it all
            self._conn.execute("ROLLBACK TO SAVEPOINT boomerang_step")
            self._conn.execute("RELEASE SAVEPOINT boomerang_step")


_Call = tuple[int, int, "Future[Any] | None", Callable[[], Any]]

# How often `Checkpoints` copies what was committed to the WAL into the database file.
CHECKPOINT_SECONDS = 0.5
WAL_SIZE_LIMIT = 64 * 1024 * 1024  # bytes of WAL file kept when the WAL starts over


class Checkpoints:
    """The WAL's checkpoints, on a thread and a connection of their own.

    By default the connection whose commit takes the WAL past a thousand pages copies them into
    the database file (and syncs it) before its commit returns: on the store's thread, a
    checkpoint now and then as long as a transaction, in the middle of a burst of due steps. The
    store's connection does none (`wal_autocheckpoint = 0`); this thread runs SQLite's PASSIVE
    checkpoint every `CHECKPOINT_SECONDS`, which waits for no lock and holds up no writer or
    reader: the store writes on meanwhile, and its next transaction after a complete one starts
    the WAL over from its beginning, as after its own checkpoints. What is durable does not
    change: a commit is durable in the WAL (synced at commit), whoever copies it later.
    """

    def __init__(self, path: Path):
        # No busy timeout: a PASSIVE checkpoint never waits, and the next one comes soon.
        self._conn = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None, timeout=0)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="checkpoints", daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.wait(CHECKPOINT_SECONDS):
            try:
                # Another process's checkpoint under way (`boomerang forget` beside the daemon)
                # makes this one return at once, having done nothing: the next one will.
                self._conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
            except sqlite3.Error as exc:  # a full disk, say: the WAL keeps every commit meanwhile
                log.warning("checkpointing the WAL failed: %s", exc)

    def close(self) -> None:
        """Stop checkpointing and close the connection (the store's own close checkpoints last)."""
        self._stop.set()
        self._thread.join()
        self._conn.close()


class StoreThread(Executor):
    """The store's one thread: runs calls in the order submitted, those of `submit_first`
    ahead of the others waiting, and those of `submit_ahead` after those but ahead of the rest."""

    def __init__(self) -> None:
        # (rank, order, future, call): rank 0 first (claims), then 1 (due steps), then 2, then 3
        # (the stop); in order within a rank.
        self._calls: queue.PriorityQueue[_Call] = queue.PriorityQueue()
        self._order = itertools.count()
        self._closed = False
        self._thread = threading.Thread(target=self._serve, name="store", daemon=True)
        self._thread.start()

    def submit(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> Future[T]:
        """Queue a call behind those waiting."""
        return self._queue(2, functools.partial(fn, *args, **kwargs))

    def submit_first(self, fn: Callable[..., T], /, *args: Any) -> Future[T]:
        """Queue a call ahead of those waiting (behind other such calls)."""
        return self._queue(0, functools.partial(fn, *args))

    def submit_ahead(self, fn: Callable[..., T], /, *args: Any) -> Future[T]:
        """Queue a call behind those of `submit_first` but ahead of the others waiting."""
        return self._queue(1, functools.partial(fn, *args))

    def _queue(self, rank: int, call: Callable[[], T]) -> Future[T]:
        if self._closed:
            raise RuntimeError("the store is closed")
        future: Future[T] = Future()
        self._calls.put((rank, next(self._order), future, call))
        return future

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Run the calls waiting, then stop the thread."""
        if not self._closed:
            self._closed = True
            self._calls.put((3, next(self._order), None, lambda: None))
        if wait:
            self._thread.join()

    def _serve(self) -> None:
        while True:
            _, _, future, call = self._calls.get()
            if future is None:
                return
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(call())
            except BaseException as exc:  # noqa: BLE001 - handed to whoever awaits the call
                future.set_exception(exc)


class Connection:
    """An open database; the table families build on it."""

    # What the database's driver raises (`except self.errors`): sqlite3's, or psycopg's.
    errors: tuple[type[BaseException], ...] = (sqlite3.Error,)
    # Whether other processes write this database at the same time (several daemons on one
    # PostgreSQL database); a SQLite file has one daemon, its lock file says so.
    shared = False
    # What a claim adds to the SELECT of the rows it takes: nothing on SQLite, where one
    # writer holds the whole database; PostgreSQL's skips the rows another daemon is claiming.
    skip_locked = ""
    # Whether `audience_page` takes a translated audience (`store/audiences.py` writes SQLite's
    # JSON functions; on PostgreSQL the sandbox evaluates every audience, customer by customer).
    answers_audiences = True
    # The WAL's checkpointer: a durable SQLite file's, opened with it (not read-only ones').
    _checkpoints: Checkpoints | None = None

    def __new__(cls, path: Path | str = ":memory:", *args: Any, **kwargs: Any) -> Connection:
        """A PostgreSQL URL opens this class's PostgreSQL variant (`postgresql.on_postgresql`)."""
        if is_postgresql(path):
            from boomerang.store.postgresql import on_postgresql

            return super().__new__(on_postgresql(cls))
        return super().__new__(cls)

    def __init__(self, path: Path | str, *, read_only: bool = False, durable: bool = True):
        """Open (and migrate) the database; `read_only` opens an existing one for reading only,
        as commands that may run beside the daemon do, and refuses one that needs migrating.

        `durable=False` is for a database thrown away afterwards by a process that serves
        nobody while it works (`simulate`'s): no fsync, the rollback journal in memory, a larger
        page cache, and `run` calls on the caller's thread instead of the store thread, since
        no event loop there has anyone else to answer. A crash may corrupt such a file, which
        does not matter for a file nobody keeps; the daemon's is always durable."""
        self.path = Path(path) if str(path) != ":memory:" else None
        if read_only:
            if self.path is None or not self.path.exists():
                raise StoreError(f"no database at {path}")
            conn = sqlite3.connect(
                f"{self.path.resolve().as_uri()}?mode=ro", uri=True, check_same_thread=False, timeout=10
            )
        else:
            if self.path:
                create_private(self.path)
            conn = sqlite3.connect(
                str(path),
                check_same_thread=False,
                isolation_level=None,
                timeout=10,
                cached_statements=STATEMENT_CACHE,
            )
        self.db = Database(conn)
        self._executor = StoreThread()
        self._inline = not durable
        self._durable = durable and not read_only
        self.rows_set_aside = 0  # times a row was found unreadable and set aside since opening
        if read_only:
            self._refuse_other_schema()
            return
        if durable:
            self.db.execute("PRAGMA journal_mode = WAL")
            # FULL: a commit acknowledged to a webhook survives a power cut, not only a crash.
            self.db.execute("PRAGMA synchronous = FULL")
        else:
            # MEMORY, not OFF: rollbacks (of a failed step, a savepoint) must still work.
            self.db.execute("PRAGMA journal_mode = MEMORY")
            self.db.execute("PRAGMA synchronous = OFF")
            self.db.execute("PRAGMA cache_size = -65536")  # KiB: 64 MiB
            self.db.execute("PRAGMA temp_store = MEMORY")
        self.db.execute("PRAGMA foreign_keys = ON")
        self.migrate()
        if durable and self.path is not None:
            # After the migrations, which may still have checkpointed on their own.
            self.db.execute("PRAGMA wal_autocheckpoint = 0")
            # Between two checkpoints the WAL holds what half a second wrote (a burst's: hundreds
            # of MB); started over, its file is cut back to this rather than kept at that size.
            self.db.execute(f"PRAGMA journal_size_limit = {WAL_SIZE_LIMIT}")
            self._checkpoints = Checkpoints(self.path)

    async def run(self, function: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run a store method on the store's own thread, so the event loop never blocks (a store
        that is not durable runs it at once: see `__init__`)."""
        if self._inline:
            return function(*args, **kwargs)
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, functools.partial(function, *args, **kwargs))

    async def run_first(self, function: Callable[..., T], *args: Any) -> T:
        """`run`, ahead of the calls waiting for the store's thread: for short calls that others
        wait on (the scheduler's claims), which should not queue behind a burst's long ones."""
        if self._inline:
            return function(*args)
        return await asyncio.wrap_future(self._executor.submit_first(function, *args))

    async def run_ahead(self, function: Callable[..., T], *args: Any) -> T:
        """`run`, behind the claims (`run_first`) but ahead of the other calls waiting: for the
        steps of waits that fell due, which queue the sends, so that a burst of sends planned,
        marked and recorded on the store's thread does not make the steps late."""
        if self._inline:
            return function(*args)
        return await asyncio.wrap_future(self._executor.submit_ahead(function, *args))

    def close(self) -> None:
        """Finish pending calls and close the database (the last connection to close it
        checkpoints the WAL whole and removes it: the store's, after the checkpoints')."""
        self._executor.shutdown(wait=True)
        if self._checkpoints is not None:
            self._checkpoints.close()
        self.db.conn.close()

    def transaction(self) -> Any:
        """A context manager: everything inside commits together or not at all (nested: a savepoint,
        the light one of `savepoint`)."""
        if self.db.conn.in_transaction:
            return self.savepoint()
        return self.db.atomic()

    def savepoint(self) -> _Savepoint:
        """`transaction()` inside a transaction under way: a savepoint, rolled back alone if its
        block raises. For one per event of a batch: sqlite-utils' nested `atomic()` names each
        savepoint with a random token through a generator, four times the cost of the two
        statements themselves."""
        return _Savepoint(self.db.conn)

    @contextlib.contextmanager
    def write_transaction(self) -> Iterator[None]:
        """`transaction()` that takes the write lock at its start (BEGIN IMMEDIATE), for a process
        writing beside the daemon: it waits up to the busy timeout for the lock, where a
        transaction that read first would fail at its first write once the daemon had written
        since (SQLITE_BUSY_SNAPSHOT). Inside a transaction already, a savepoint as usual."""
        if self.db.conn.in_transaction:
            with self.db.atomic():
                yield
            return
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield
            self.db.execute("COMMIT")
        except BaseException:
            self.db.rollback()
            raise

    @contextlib.contextmanager
    def unsynced(self) -> Iterator[Any]:
        """A transaction whose commit does not wait for the disk (`synchronous = NORMAL`), for
        what may be lost to a power cut: a job's lease, which a start takes back anyway. The WAL
        is written in order, so the next commit that does wait makes this one durable too;
        nothing durable can come to depend on one that was lost. Inside another transaction,
        it is simply a part of that one."""
        if not self._durable or self.db.conn.in_transaction:
            with self.db.atomic():
                yield self
            return
        self.db.execute("PRAGMA synchronous = NORMAL")
        try:
            with self.db.atomic():
                yield self
        finally:
            self.db.execute("PRAGMA synchronous = FULL")

    def lock_customers(self, customer_ids: list[str]) -> None:
        """Hold these customers' locks until the transaction under way ends, so that no other
        process decides their sends meanwhile. Nothing to do on SQLite: the transaction holds
        the whole file."""

    def lock_arrivals(self, event_ids: Iterable[str], identities: Iterable[tuple[str, str]]) -> None:
        """Hold the locks of these events' ids and of the identities they name until the
        transaction under way ends, so that no other process stores the same event or makes
        the same person meanwhile. Nothing to do on SQLite: the transaction holds the whole file."""

    def listen_for_jobs(self, wake: Callable[[], None]) -> Callable[[], None] | None:
        """Have `wake` called when another process queues a job; returns what stops that, or
        None: nobody else queues jobs in a SQLite file."""
        return None

    def take_turn(self, work: str) -> None:
        """Wait until no other process does `work` (e.g. `events`), and hold it until the
        transaction under way ends. Nothing to do on SQLite: one daemon per file."""

    def drop_report_totals(self) -> None:
        """Stop keeping the report's running totals (the `report_*` triggers of migrations 11
        and 12): for a throwaway database whose report nobody reads (`simulate`'s), so that
        a message, a journey or a line of the timeline written costs only its own rows."""
        triggers = self.db.execute(
            "SELECT name FROM sqlite_master WHERE type = 'trigger' AND name LIKE 'report\\_%' ESCAPE '\\'"
        ).fetchall()
        for (name,) in triggers:
            self.db.execute(f"DROP TRIGGER [{name}]")

    def changes(self) -> int:
        """Rows written since the database was opened: a caller compares two readings to learn
        whether anything between them wrote."""
        return self.db.conn.total_changes

    def _select(self, sql: str, params: Sequence[Any] | Mapping[str, Any] = ()) -> list[dict[str, Any]]:
        """The rows of one of the store's own SELECTs, as dicts keyed by column name.

        The dicts of sqlite-utils' `db.query()`, without the savepoint it wraps around every
        statement in case one writes: these only read, and on the ingest and claim paths those
        two more statements per read cost a measurable share (about 5 microseconds a read).
        """
        cursor = self.db.execute(sql, params)
        keys = [column[0] for column in cursor.description]
        return [dict(zip(keys, row, strict=True)) for row in cursor]

    def _insert_all(
        self,
        table: str,
        columns: Sequence[str],
        rows: Iterable[Sequence[Any]],
        *,
        same: Mapping[str, Any] | None = None,
        or_ignore: bool = False,
    ) -> None:
        """Insert rows (text, numbers, None) into one of the store's own tables with one
        statement, in the order given: `columns` are the rows' own values, `same` the columns
        every row has the same value in. The rows go as one JSON array, read back by
        `json_each` exactly as they went in (a float's every digit, as `json.dumps` writes them).

        Not `executemany`: a table's triggers (the report's running totals) cost SQLite several
        times less for the rows of one statement than once for each statement run, as
        `executemany` runs one per row; and what every row shares is bound once, not read from
        each row (a journey's row: 10 microseconds against 40).
        """
        same = same or {}
        rows = list(rows)
        try:
            encoded = _encode_rows(rows)
        except ValueError:  # an infinite or NaN float, which JSON cannot hold: one row at a time
            self._insert_each(table, columns, rows, same=same, or_ignore=or_ignore)
            return
        values = ", ".join([*(f"value ->> {index}" for index in range(len(columns))), *("?" for _ in same)])
        insert = _insert_into(table, (*columns, *same), or_ignore)
        query = f"{insert} SELECT {values} FROM json_each(?) ORDER BY key"
        self.db.conn.execute(query, [*same.values(), encoded])

    def _insert_each(
        self,
        table: str,
        columns: Sequence[str],
        rows: Iterable[Sequence[Any]],
        *,
        same: Mapping[str, Any],
        or_ignore: bool,
    ) -> None:
        """`_insert_all` with `executemany`, one statement run per row."""
        marks = ", ".join("?" for _ in (*columns, *same))
        bound = [(*row, *same.values()) for row in rows]
        insert = _insert_into(table, (*columns, *same), or_ignore)
        self.db.conn.executemany(f"{insert} VALUES ({marks})", bound)

    def _update_all(self, table: str, columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
        """Set `columns` of many rows of one of the store's own tables (keyed by `id`, each id
        once) with one statement: a row is its columns' values (text, numbers, None) then its
        id, all of them read back from one JSON array as `_insert_all` reads its rows, so that
        the table's triggers run within one statement rather than once per row."""
        rows = list(rows)
        try:
            encoded = _encode_rows(rows)
        except ValueError:  # an infinite or NaN float, which JSON cannot hold: one row at a time
            self._update_each(table, columns, rows)
            return
        assigned = ", ".join(f"[{column}] = given.value ->> {index}" for index, column in enumerate(columns))
        matched = f"[{table}].id = given.value ->> {len(columns)}"
        update = f"UPDATE [{table}] SET {assigned} FROM json_each(?) AS given WHERE {matched}"
        self.db.conn.execute(update, [encoded])

    def _update_each(self, table: str, columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
        """`_update_all` with `executemany`, one statement run per row."""
        assigned = ", ".join(f"[{column}] = ?" for column in columns)
        self.db.conn.executemany(f"UPDATE [{table}] SET {assigned} WHERE id = ?", rows)

    def _update(self, table: str, row_id: str, values: Mapping[str, Any]) -> None:
        """Set columns of the row `row_id` of `table` (one of the store's own, keyed by `id`).

        sqlite-utils' `Table.update` in one statement: it also reads the row first, the table's
        schema and opens a savepoint, four statements for one on the send path. Dicts and lists
        are stored as JSON, as there.
        """
        columns = ", ".join(f'"{column}" = ?' for column in values)
        params = [jsonify_if_needed(value) for value in values.values()]
        self.db.execute(f'UPDATE "{table}" SET {columns} WHERE id = ?', [*params, row_id])

    def _update_many(self, table: str, changes: Mapping[str, Mapping[str, Any]]) -> None:
        """`_update` for many rows of `table` (row id → its new values), one `executemany` per
        set of columns changed rather than a statement each."""
        by_columns: dict[tuple[str, ...], list[list[Any]]] = {}
        for row_id, values in changes.items():
            params = [jsonify_if_needed(value) for value in values.values()]
            by_columns.setdefault(tuple(values), []).append([*params, row_id])
        for columns, rows_of_params in by_columns.items():
            assigned = ", ".join(f'"{column}" = ?' for column in columns)
            self.db.conn.executemany(f'UPDATE "{table}" SET {assigned} WHERE id = ?', rows_of_params)

    def schema_version(self) -> int:
        """The number of the last migration applied."""
        return self.db.execute("PRAGMA user_version").fetchone()[0]

    def _refuse_other_schema(self) -> None:
        current, latest = self.schema_version(), MIGRATIONS[-1][0]
        if current != latest:
            self.close()
            newer = "newer" if current > latest else "older"
            raise StoreError(
                f"the database is at schema {current}, {newer} than this Boomerang's ({latest}); "
                + ("upgrade Boomerang" if current > latest else "start the daemon once to migrate it")
            )

    def migrate(self) -> list[int]:
        """Apply the migrations this database has not had yet; returns their numbers."""
        current = self.schema_version()
        latest = MIGRATIONS[-1][0]
        if current > latest:
            self.close()
            raise StoreError(
                f"the database is at schema {current}, newer than this Boomerang knows ({latest}); "
                "upgrade Boomerang or restore a backup made before the upgrade"
            )
        applied = []
        for number, _name, sql in MIGRATIONS:
            if number <= current:
                continue
            with self.db.atomic():
                for statement in _statements(sql):
                    self.db.execute(statement)
                self.db.execute(f"PRAGMA user_version = {number}")
            applied.append(number)
        return applied

    def counts(self) -> dict[str, int]:
        """Row counts for the status line and metrics."""
        return {
            table: self.db.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
            for table in ("customers", "events")
        }


def _insert_into(table: str, columns: Sequence[str], or_ignore: bool) -> str:
    """`INSERT [OR IGNORE] INTO table (columns)`, of the store's own names, never input."""
    names = ", ".join(f"[{column}]" for column in columns)
    return f"INSERT {'OR IGNORE ' if or_ignore else ''}INTO {table} ({names})"


def _statements(script: str) -> list[str]:
    """The statements of a migration, split at the semicolons that end one (not those inside a
    trigger's body)."""
    statements, current = [], ""
    for piece in script.split(";"):
        current += piece + ";"
        if sqlite3.complete_statement(current):
            if current.strip(" \n;"):
                statements.append(current)
            current = ""
    return statements
