"""The store on PostgreSQL: the same `Connection` surface over one psycopg 3 connection.

`database: postgresql://...` opens every `Connection` subclass (the `Store`, `Reports`) as its
PostgreSQL variant (`on_postgresql`): the table families and their SQL are the same classes, and
the differences live in two places, the statements' dialect (`postgresql_sql.translate`) and
this module's `PostgresDatabase`, which gives the families what sqlite-utils' `Database` gives
them on SQLite (`execute`, `conn.executemany`, `atomic`, `conn.in_transaction`, ...).

Why one synchronous connection on the store's thread, not an async pool: the engine makes its
decisions inside the store's calls (a journey's step, its message and its next job in one
transaction, on the `StoreThread`), and it relies on those calls running one at a time in the
order queued (`run_first` claims ahead of long batches). psycopg's synchronous connection on that
thread keeps exactly that shape while the event loop stays free; the concurrency PostgreSQL adds
is between daemons, each with its own writer, coordinated by the database's row locks
(`FOR UPDATE SKIP LOCKED` claims) and advisory locks (a customer's caps), not between
connections of one daemon. Readers beside the writer (metrics, the report) open a connection of
their own, read-only, as on SQLite.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import threading
import zlib
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from decimal import Decimal
from typing import Any

import psycopg
from psycopg.adapt import Dumper, Loader
from psycopg.pq import TransactionStatus

from boomerang.database_url import shown
from boomerang.store.connection import Connection, DatabaseUnreachable, NoDatabase, StoreThread
from boomerang.store.postgresql_sql import translate

log = logging.getLogger("boomerang.store")

# SQLSTATE classes of a statement that failed for want of the server, not of the data: the
# connection is lost (08), the server is short of disk or memory (53), shut down or restarting
# (57), out of its own resources (58), or the transaction lost a race to another daemon's
# (40: serialization failure, deadlock). A retry may well succeed.
_UNAVAILABLE_CLASSES = {"08", "40", "53", "57", "58"}


def postgresql_unavailable(exc: BaseException) -> bool:
    """Whether a psycopg error says the database cannot take a write now (see `StoreUnavailable`)."""
    if not isinstance(exc, psycopg.Error):
        return False
    state = exc.sqlstate
    if state is None:  # no answer from the server at all: the connection is gone
        return isinstance(exc, psycopg.OperationalError | psycopg.InterfaceError)
    return state[:2] in _UNAVAILABLE_CLASSES


# The channel on which a daemon that queued a job tells the others' schedulers; the payload
# names the schema, since a channel is the whole database's and installations may share one.
JOBS_CHANNEL = "boomerang_jobs"
_NOTIFY = f"SELECT pg_notify('{JOBS_CHANNEL}', current_schema())"
LISTEN_RETRY_SECONDS = 5.0  # how soon a listener whose connection was lost connects again
# The kinds of advisory locks (the first of `pg_advisory_xact_lock`'s two keys), and how many
# stripes each has (the second): see `PostgresConnection._advisory_locks`.
CUSTOMERS, ARRIVALS, TURNS = 1, 2, 3
STRIPES = 512


class _IntegerBool(Dumper):
    """Python's booleans sent as the 0 and 1 SQLite stores (the schema's flags are integers)."""

    oid = psycopg.postgres.types["int8"].oid

    def dump(self, obj: bool) -> bytes:
        return b"1" if obj else b"0"


class _SqliteNumber(Loader):
    """PostgreSQL's `numeric` (a sum of integers, an average) read as SQLite gives the same
    figure: a whole number as an int, any other as a float, never a Decimal."""

    def load(self, data: Any) -> int | float:
        number = Decimal(bytes(data).decode())
        return int(number) if number == number.to_integral_value() else float(number)


class PostgresDatabase:
    """One psycopg connection with what the table families use of sqlite-utils' `Database`:
    statements are translated (`translate`) and run; `conn` is this object itself, so that
    `db.conn.executemany` and `db.conn.in_transaction` read as on SQLite."""

    def __init__(self, url: str, *, read_only: bool = False):
        self.url = url
        self.read_only = read_only
        self.total_changes = 0  # rows written since opening, as sqlite3's `total_changes`
        self._depth = 0  # atomic() blocks open
        self._queued = False  # the transaction under way queued a job: NOTIFY at its commit
        self.pg = self._connect()

    @property
    def conn(self) -> PostgresDatabase:
        return self

    def _connect(self) -> psycopg.Connection[Any]:
        try:
            pg = psycopg.connect(self.url, autocommit=True, connect_timeout=10)
        except psycopg.Error as exc:
            reason = str(exc).strip()
            raise DatabaseUnreachable(f"cannot connect to PostgreSQL at {shown(self.url)}: {reason}") from exc
        pg.adapters.register_dumper(bool, _IntegerBool)
        pg.adapters.register_loader("numeric", _SqliteNumber)
        if self.read_only:
            pg.execute("SET default_transaction_read_only = on")
        return pg

    def _live(self) -> psycopg.Connection[Any]:
        """The connection, opened again if it was lost between transactions (a restarted
        server): ingest recovers by itself, as it does on SQLite once the disk has room."""
        if self.pg.closed or self.pg.broken:
            if self._depth:
                raise psycopg.OperationalError("the connection to PostgreSQL was lost mid-transaction")
            log.warning("the connection to PostgreSQL was lost; connecting again")
            try:
                self.pg = self._connect()
            except DatabaseUnreachable as exc:
                raise psycopg.OperationalError(str(exc)) from exc
        return self.pg

    @property
    def in_transaction(self) -> bool:
        return not self.pg.closed and self.pg.info.transaction_status != TransactionStatus.IDLE

    def execute(self, sql: str, params: Sequence[Any] | Mapping[str, Any] = ()) -> psycopg.Cursor[Any]:
        """Run one statement (SQLite's SQL, translated); its cursor, as sqlite3's."""
        statement = translate(sql)
        cursor = self._live().execute(statement.text, statement.params(params))
        if statement.writes and cursor.rowcount > 0:
            self.total_changes += cursor.rowcount
            if statement.queues:
                self._tell_schedulers()
        return cursor

    def executemany(self, sql: str, rows: Iterable[Sequence[Any] | Mapping[str, Any]]) -> None:
        """Run one statement for each row of parameters (psycopg pipelines them)."""
        statement = translate(sql)
        batch = [statement.params(row) for row in rows]
        if not batch:
            return
        with self._live().cursor() as cursor:
            cursor.executemany(statement.text, batch)
            if statement.writes and cursor.rowcount > 0:
                self.total_changes += cursor.rowcount
                if statement.queues:
                    self._tell_schedulers()

    def _tell_schedulers(self) -> None:
        """A job was queued or moved: the daemons listening (`PostgresConnection.listen_for_jobs`)
        look at the queue again once it is committed (a NOTIFY is delivered at the commit)."""
        if self._depth == 0:
            self.pg.execute(_NOTIFY)
        else:
            self._queued = True

    @contextlib.contextmanager
    def atomic(self) -> Iterator[None]:
        """A transaction (BEGIN ... COMMIT), or inside one a savepoint: all or nothing."""
        pg = self._live()
        if self._depth == 0:
            pg.execute("BEGIN")
            self._depth = 1
            try:
                yield
            except BaseException:
                self._depth = 0
                self._queued = False
                self._quietly("ROLLBACK")
                raise
            self._depth = 0
            if self._queued:
                self._queued = False
                pg.execute(_NOTIFY)
            pg.execute("COMMIT")
            return
        name = f"boomerang_{self._depth}"
        pg.execute(f"SAVEPOINT {name}")
        self._depth += 1
        try:
            yield
        except BaseException:
            self._depth -= 1
            self._quietly(f"ROLLBACK TO SAVEPOINT {name}")
            self._quietly(f"RELEASE SAVEPOINT {name}")
            raise
        self._depth -= 1
        pg.execute(f"RELEASE SAVEPOINT {name}")

    def _quietly(self, sql: str) -> None:
        """End a failed transaction or savepoint; a connection already lost has ended it."""
        if self.pg.closed or self.pg.broken:
            return
        with contextlib.suppress(psycopg.OperationalError):
            self.pg.execute(sql)

    def rollback(self) -> None:
        """Roll back the transaction under way."""
        self._depth = 0
        self._queued = False
        self._quietly("ROLLBACK")

    def close(self) -> None:
        self.pg.close()


class PostgresConnection(Connection):
    """`Connection` on PostgreSQL: the same calls, over `PostgresDatabase`. Not made directly:
    `Connection(url)` of any subclass opens that subclass's `on_postgresql` variant."""

    errors: tuple[type[BaseException], ...] = (psycopg.Error,)
    shared = True
    skip_locked = " FOR UPDATE SKIP LOCKED"
    answers_audiences = False

    def __init__(self, path: Any, *, read_only: bool = False, durable: bool = True):
        self.url = str(path)
        self.path = None
        self.db = PostgresDatabase(self.url, read_only=read_only)  # type: ignore[assignment]
        self._executor = StoreThread()
        self._inline = False
        self._durable = not read_only
        self.rows_set_aside = 0
        if read_only:
            self._refuse_other_schema()
            return
        self.migrate()

    def _refuse_other_schema(self) -> None:
        if self.schema_version() == 0:  # a database no daemon has started on: what a missing file is
            self.close()
            raise NoDatabase(f"no database at {shown(self.url)} yet (no Boomerang schema there)")
        super()._refuse_other_schema()

    def close(self) -> None:
        """Finish pending calls and close the connection."""
        self._executor.shutdown(wait=True)
        self.db.close()

    @contextlib.contextmanager
    def write_transaction(self) -> Iterator[None]:
        """`transaction()`: PostgreSQL's rows are locked as they are written, so there is no
        database-wide write lock to take first as on SQLite."""
        with self.db.atomic():
            yield

    @contextlib.contextmanager
    def unsynced(self) -> Iterator[Any]:
        """A transaction whose commit does not wait for the disk (`synchronous_commit = off`
        for it alone), for what may be lost to a crash of the server: a job's lease, which
        expires anyway. Inside another transaction, a part of that one."""
        outermost = not self.db.conn.in_transaction
        with self.db.atomic():
            if outermost and self._durable:
                self.db.execute("SET LOCAL synchronous_commit = off")
            yield self

    def listen_for_jobs(self, wake: Callable[[], None]) -> Callable[[], None]:
        """Call `wake` (on a thread of its own) whenever another daemon commits a job it queued
        or moved, so that a job queued for soon by one is seen by all at once, not at their next
        refill; returns what stops listening. A lost connection is opened again after a pause
        (meanwhile the schedulers' refills still find every job). Returns once it listens (or
        after 10 s of trying), so that a job queued after the call is never missed."""
        stopping, listening = threading.Event(), threading.Event()

        def listen() -> None:
            while not stopping.is_set():
                try:
                    with psycopg.connect(self.url, autocommit=True, connect_timeout=10) as listener:
                        listener.execute(f"LISTEN {JOBS_CHANNEL}")
                        schema = listener.execute("SELECT current_schema()").fetchone()[0]  # type: ignore[index]
                        listening.set()
                        while not stopping.is_set():
                            own = self.db.pg.info.backend_pid  # our own NOTIFYs need no wake
                            notes = listener.notifies(timeout=1.0)
                            if any(note.pid != own and note.payload == schema for note in notes):
                                wake()
                except psycopg.Error as exc:
                    log.warning(
                        "listening for other daemons' jobs failed (%s); again in %.0f s",
                        exc,
                        LISTEN_RETRY_SECONDS,
                    )
                    stopping.wait(LISTEN_RETRY_SECONDS)

        thread = threading.Thread(target=listen, name="jobs-listener", daemon=True)
        thread.start()
        listening.wait(10)

        def stop() -> None:
            stopping.set()
            thread.join()

        return stop

    def _insert_all(
        self,
        table: str,
        columns: Sequence[str],
        rows: Iterable[Sequence[Any]],
        *,
        same: Mapping[str, Any] | None = None,
        or_ignore: bool = False,
    ) -> None:
        """`executemany`: SQLite's one statement reads the rows back from a JSON array with
        `json_each`, a cost PostgreSQL's triggers do not ask to save (psycopg sends the rows in
        one pipeline)."""
        self._insert_each(table, columns, rows, same=same or {}, or_ignore=or_ignore)

    def _update_all(self, table: str, columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
        """`executemany`, as `_insert_all` here."""
        self._update_each(table, columns, rows)

    def lock_customers(self, customer_ids: list[str]) -> None:
        """Take these customers' advisory locks for the transaction under way (`pg_advisory_xact_lock`,
        released at its end), so that no other daemon decides their sends meanwhile."""
        self._advisory_locks(CUSTOMERS, [f"customer:{customer_id}" for customer_id in customer_ids])

    def lock_arrivals(self, event_ids: Iterable[str], identities: Iterable[tuple[str, str]]) -> None:
        """Take the advisory locks of these events and identities: two daemons given the same
        new person, or a platform's retry of one event, at once would otherwise both find
        nobody and both insert, and one of them fail."""
        names = [f"event:{event_id}" for event_id in event_ids]
        names += [f"identity:{kind}:{value}" for kind, value in identities]
        self._advisory_locks(ARRIVALS, names)

    def take_turn(self, work: str) -> None:
        """Wait for `work`'s advisory lock, held until the transaction under way ends."""
        self._advisory_locks(TURNS, [f"work:{work}"])

    def _advisory_locks(self, kind: int, names: list[str]) -> None:
        """Lock the stripes of `kind` these names fall in, in one order for every daemon (so
        that two never wait on each other). Names share `STRIPES` locks a kind: a send batch
        of a thousand customers holds at most that many, within the server's lock table
        (`max_locks_per_transaction`, 64 per connection by default), at the price of a rare
        wait for a stranger who shares a stripe."""
        stripes = sorted({zlib.crc32(name.encode()) % STRIPES for name in names})
        self.db.execute(
            "SELECT pg_advisory_xact_lock(?, stripe) FROM unnest(?::integer[]) AS stripe ORDER BY stripe",
            [kind, stripes],
        )

    def schema_version(self) -> int:
        """The number of the last migration applied (0 for an empty database)."""
        from boomerang.store.migrations_postgresql import postgresql_schema_version

        return postgresql_schema_version(self.db.pg)

    def migrate(self) -> list[int]:
        """Apply the migrations this database has not had yet; returns their numbers (daemons
        starting together take turns: `migrate_postgresql`)."""
        from boomerang.store.migrations_postgresql import migrate_postgresql

        return migrate_postgresql(self.db.pg)


@functools.cache
def on_postgresql(cls: type[Connection]) -> type[Connection]:
    """`cls` (a `Connection` subclass: `Store`, `Reports`) on PostgreSQL: the same table
    families, with `PostgresConnection` under them in place of SQLite's `Connection`."""
    if issubclass(cls, PostgresConnection):
        return cls
    return type(f"PostgreSQL{cls.__name__}", (cls, PostgresConnection), {"__module__": cls.__module__})
