"""Shared fixtures and helpers: a project folder made by `boomerang init`, free ports, the venv's
command, events and moments, and waits on a condition instead of fixed sleeps.

Every test that touches a store (through the `database`, `demo` or `project` fixtures, which
all stand on `store_kind`, or through `module_database`, one store for a module's tests) runs
on both stores: once on a SQLite file and once on a PostgreSQL schema of its own
(`postgresql_url`), its id ending in `[sqlite]` or `[postgresql]` (`other_database` gives a
test that compares two a second one on the same store). Where PostgreSQL does not answer, the
second run is left out and the summary says so.
`--store=sqlite` or `--store=postgresql` (or `BOOMERANG_TEST_STORE`) runs one of them only. The
tests marked `sqlite_only` (they read or damage the SQLite file itself) run on SQLite alone."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import os
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.request
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import postgresql_schema
import pytest
from aiosmtpd.controller import Controller
from postgresql_schema import postgresql_url  # noqa: F401 - a fixture for the tests that use it

from boomerang.config import load_config
from boomerang.daemon import Daemon
from boomerang.database_url import is_postgresql
from boomerang.ingest import parse_event
from boomerang.model import Event
from boomerang.scaffold import create_project
from boomerang.store import Store
from boomerang.store.postgresql import PostgresDatabase
from boomerang.systemd import Notifier
from fakes.smtp_server import Mailbox

API_TOKEN = "test-token-0123456789abcdef"
SECRET = "test-secret-0123456789abcdef0123456789"
BOOMERANG = str(Path(sys.executable).parent / "boomerang")


STORES = ("sqlite", "postgresql")


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--store",
        choices=(*STORES, "both"),
        default=os.environ.get("BOOMERANG_TEST_STORE", "both"),
        help="the stores the store-touching tests run on (default: $BOOMERANG_TEST_STORE, else both;"
        " PostgreSQL only where it answers)",
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "sqlite_only: reads or damages the SQLite file itself")
    config.addinivalue_line(
        "markers", "no_store: opens no database a project names (check; simulate's own file): runs once"
    )


def stores(config: pytest.Config) -> tuple[str, ...]:
    """The stores this run's store-touching tests run on: as `--store` asks, PostgreSQL only where
    it answers (asked for alone, its tests are run and skip with the reason)."""
    wanted = config.getoption("--store")
    if wanted == "both":
        return STORES if postgresql_schema.unavailable() is None else ("sqlite",)
    return (wanted,)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """A test standing on `store_kind` runs once per store of the run (a `no_store` one once, a
    `sqlite_only` one on SQLite alone, skipped when the run is PostgreSQL's); one standing on
    `module_database`, once per store with the other tests of its module on that store."""
    kinds = stores(metafunc.config)
    if "module_database" in metafunc.fixturenames:
        metafunc.parametrize("module_database", kinds, indirect=True, scope="module")
    if "store_kind" not in metafunc.fixturenames:
        return
    if metafunc.definition.get_closest_marker("no_store"):
        kinds = kinds[:1]
    elif metafunc.definition.get_closest_marker("sqlite_only"):
        skip = pytest.mark.skip(reason="sqlite_only: reads or writes the SQLite file itself")
        kinds = [kind if kind == "sqlite" else pytest.param(kind, marks=skip) for kind in kinds[:1]]
    metafunc.parametrize("store_kind", kinds, indirect=True)


def pytest_report_header(config: pytest.Config) -> str:
    return store_summary(config)


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    terminalreporter.write_line(store_summary(config))


def store_summary(config: pytest.Config) -> str:
    """One line on the stores the run covers, and why PostgreSQL is not among them when it is not."""
    reason = postgresql_schema.unavailable()
    wanted = config.getoption("--store")
    if wanted == "sqlite":
        return "stores: SQLite only (--store=sqlite)"
    if reason:
        return f"stores: SQLite only; the PostgreSQL runs are left out: {reason}"
    both = "SQLite and PostgreSQL" if wanted == "both" else "PostgreSQL only (--store=postgresql)"
    return f"stores: {both} ({postgresql_schema.SERVER}, a schema per test)"


@pytest.fixture
def store_kind(request: pytest.FixtureRequest) -> str:
    """The store this test runs on, `sqlite` or `postgresql` (its parameter; see the module's doc)."""
    return getattr(request, "param", "sqlite")


def on_postgresql(request: pytest.FixtureRequest) -> bool:
    """Whether this test runs on PostgreSQL."""
    return request.getfixturevalue("store_kind") == "postgresql"


@pytest.fixture
def database(request: pytest.FixtureRequest, store_kind: str, tmp_path: Path) -> Path | str:
    """What a `database:` setting names in this run: a new SQLite file's path, or the URL of a
    PostgreSQL schema of the test's own."""
    if store_kind == "postgresql":
        return request.getfixturevalue("postgresql_url")
    return tmp_path / "data" / "boomerang.db"


@pytest.fixture
def other_database(store_kind: str, tmp_path: Path) -> Iterator[Path | str]:
    """A second new database on the test's store, beside `database` (for a test that compares
    two): a file of its own, or a PostgreSQL schema of its own, dropped after the test."""
    with new_database(store_kind, tmp_path / "other" / "boomerang.db") as database:
        yield database


@pytest.fixture(scope="module")
def module_database(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Path | str]:
    """`database` shared by the tests of a module (a store they open once, for many examples):
    a new SQLite file, or the URL of a PostgreSQL schema of the module's own, dropped after it."""
    file = tmp_path_factory.mktemp("database") / "boomerang.db"
    with new_database(request.param, file) as database:
        yield database


@contextlib.contextmanager
def new_database(store_kind: str, file: Path) -> Iterator[Path | str]:
    """A new database on `store_kind`: the SQLite `file`, or the URL of a new PostgreSQL schema,
    dropped on leaving (the test is skipped, saying why, where PostgreSQL does not answer)."""
    if store_kind == "sqlite":
        yield file
        return
    reason = postgresql_schema.unavailable()
    if reason:
        pytest.skip(reason)
    schema = postgresql_schema.create_schema()
    try:
        yield postgresql_schema.in_schema(schema)
    finally:
        postgresql_schema.drop_schema(schema)


def project_store(directory: Path) -> Store:
    """A `Store` on the database of the project in `directory` (its file, or its PostgreSQL schema)."""
    return Store(load_config(directory / "boomerang.yaml").database)


def project_database(directory: Path) -> contextlib.AbstractContextManager[Any]:
    """The database of the project in `directory`, for a test to read or change beside the
    store (`database_connection`)."""
    return database_connection(load_config(directory / "boomerang.yaml").database)


@contextlib.contextmanager
def database_connection(database: Path | str) -> Iterator[Any]:
    """A connection of the test's own to `database` (a file's path or a URL, as `database`
    gives), to read or change it beside the store: a sqlite3 connection to the file, or on
    PostgreSQL the store's own translating one (so the same SQL reads both); committed and
    closed on leaving."""
    if is_postgresql(database):
        connection: Any = PostgresDatabase(str(database))
    else:
        connection = sqlite3.connect(database)
    try:
        yield connection
        if not is_postgresql(database):
            connection.commit()
    finally:
        connection.close()


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def demo(
    request: pytest.FixtureRequest, store_kind: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Path:
    """A fresh project from `boomerang init` as it is, every channel configured in outbox mode,
    on a free port, with known tokens in the environment (and with `--store=postgresql` its
    database a PostgreSQL schema of the test's own)."""
    directory = tmp_path / "project"
    create_project(directory)
    if store_kind == "postgresql":
        config = directory / "boomerang.yaml"
        url = request.getfixturevalue("postgresql_url")
        config.write_text(config.read_text().replace("database: ./boomerang.db", f"database: {url}", 1))
    monkeypatch.setenv("BOOMERANG_API_TOKEN", API_TOKEN)
    monkeypatch.setenv("BOOMERANG_SECRET", SECRET)
    monkeypatch.setenv("BOOMERANG_PORT", str(free_port()))
    monkeypatch.delenv("BOOMERANG_CONFIG", raising=False)
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    monkeypatch.delenv("WATCHDOG_USEC", raising=False)
    return directory


@pytest.fixture
def project(demo: Path) -> Path:
    """The `init` project with email its only channel: a test configures the channels it
    exercises, and the reference timelines pass over the others as not configured."""
    only_email(demo)
    return demo


def only_email(directory: Path) -> None:
    """Take the demo's channels but email (and the push key) out of an `init` project."""
    config = directory / "boomerang.yaml"
    demo_channel = r"^  (sms|whatsapp|push|telegram): .*\n(    +.*\n)*"  # with its continued lines
    config.write_text(re.sub(demo_channel, "", config.read_text(), flags=re.MULTILINE))
    (directory / "vapid.pem").unlink()


def t(text: str) -> datetime:
    """A moment written `2026-03-02 10:00` or in ISO 8601: in UTC unless the text has an offset."""
    moment = datetime.fromisoformat(text)
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def event(
    event_id: str,
    type_: str = "cart.updated",
    at: str | datetime = "2026-03-02 10:00",
    customer: dict[str, Any] | None = None,
    data: dict[str, Any] | None = None,
    **fields: Any,
) -> dict[str, Any]:
    """A generic event in the product's format, as `POST /events` takes it: at `at` (a moment, or
    text for `t()`), for `customer` (else a customer of these `fields`, else `c-42`), with `data`."""
    moment = at if isinstance(at, datetime) else t(at)
    return {
        "id": event_id,
        "type": type_,
        "at": moment.isoformat().replace("+00:00", "Z"),
        "customer": customer or fields or {"id": "c-42"},
        "data": data or {},
    }


def incoming(*args: Any, **kwargs: Any) -> Event:
    """`event(...)` as the ingest reads it: what `simulate` and the engine take."""
    return parse_event(event(*args, **kwargs))


@contextlib.asynccontextmanager
async def running(directory: Path) -> AsyncIterator[Daemon]:
    """The daemon started in-process on the project's config, stopped on exit."""
    daemon = Daemon(directory / "boomerang.yaml", notifier=Notifier(None))
    await daemon.start()
    try:
        yield daemon
    finally:
        await daemon.stop()


def url(daemon: Daemon, path: str) -> str:
    """An absolute URL on a running in-process daemon."""
    return f"http://127.0.0.1:{daemon.port}{path}"


def bearer(token: str) -> dict[str, str]:
    """The `Authorization` header that carries `token`, as every endpoint with a credential takes it."""
    return {"Authorization": f"Bearer {token}"}


AUTH = bearer(API_TOKEN)


# `boomerang run` with the job lease (scheduler.LEASE_SECONDS, 120 s) shrunk to its first
# argument: on PostgreSQL a killed daemon's jobs wait out their lease before another takes them.
RUN_WITH_LEASE = (
    "import sys, boomerang.scheduler as s; s.LEASE_SECONDS = float(sys.argv.pop(1));"
    " from boomerang.cli import main; main()"
)


def killed_daemons_lease(request: pytest.FixtureRequest) -> float | None:
    """The job lease for the daemons a test kills: on PostgreSQL a killed daemon's jobs wait out
    their lease (120 s) before the next daemon takes them, so it is shrunk there to 5 s."""
    return 5.0 if on_postgresql(request) else None


def start_daemon(project: Path, log: Path, lease: float | None = None, **env: str) -> subprocess.Popen:
    """The real `boomerang run` on the project, its stderr appended to `log` (with `lease`, its
    jobs' lease shrunk to that many seconds)."""
    environment = {k: v for k, v in os.environ.items() if k != "NOTIFY_SOCKET"}
    command = [BOOMERANG] if lease is None else [sys.executable, "-c", RUN_WITH_LEASE, str(lease)]
    return subprocess.Popen(
        [*command, "run", "--config", str(project / "boomerang.yaml")],
        stdout=subprocess.DEVNULL,
        stderr=log.open("ab"),
        env={**environment, **env},
        cwd=project.parent,
    )


# How often a wait looks at its condition again.
POLL = 0.05


async def wait_for(condition: Callable[[], Any], seconds: float = 10, what: str = "the condition") -> Any:
    """Look at `condition()` (a plain or an async function) until it is truthy and return its value;
    fail after `seconds`. For tests on the event loop."""
    deadline = time.monotonic() + seconds
    while True:
        value = condition()
        if inspect.isawaitable(value):
            value = await value
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(POLL)


def wait_until(condition: Callable[[], Any], seconds: float = 10, what: str = "the condition") -> Any:
    """`wait_for` for synchronous tests, which drive the real daemon process from this thread."""
    deadline = time.monotonic() + seconds
    while not (value := condition()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(POLL)
    return value


def serving(port: int) -> bool:
    """Whether a daemon answers /healthz on `port`."""
    try:
        urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1).read()
    except OSError:
        return False
    return True


def wait_until_serving(port: int, timeout: float = 40) -> None:
    """Poll /healthz until the daemon answers; generous for a busy machine."""
    wait_until(lambda: serving(port), timeout, "the daemon to start serving")


@contextlib.asynccontextmanager
async def daemon_process(project: Path, log: Path) -> AsyncIterator[subprocess.Popen]:
    """The real daemon, serving, for async tests whose fake servers run on the test's own loop
    (so nothing here blocks it). On leaving, SIGTERM must end the daemon with exit code 0."""
    process = start_daemon(project, log)
    try:
        await asyncio.to_thread(wait_until_serving, int(os.environ["BOOMERANG_PORT"]))
        yield process
        process.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(process.wait, 15) == 0, log.read_text()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


@pytest.fixture
def smtp() -> Iterator[tuple[Mailbox, int]]:
    """A real SMTP server (aiosmtpd) on a free port of 127.0.0.1: its mailbox and its port."""
    mailbox = Mailbox()
    controller = Controller(mailbox, hostname="127.0.0.1", port=free_port())
    controller.start()
    yield mailbox, controller.port
    controller.stop()
