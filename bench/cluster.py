"""Several `boomerang run` daemons on one PostgreSQL database, beside one daemon on SQLite.

Four set-ups in one run, each a project made by `boomerang init` (the reference scenarios, the
outbox channel writing `.eml` files) on a database of its own: SQLite with one daemon, then a
fresh PostgreSQL schema (dropped afterwards) with 1, 2 and 3 daemons on it, each on a port of
its own. The load is spread over the daemons as a balancer would spread it:

- sends: CUSTOMERS customers' `order.shipped` events (as in `bench/sends.py`: each enters
  `delivery-status`, whose first step sends at once) posted in batches of 500, the batches
  dealt round-robin to the daemons, each daemon's share posted concurrently; timed from the
  first post until every message is recorded sent, so storing the events, the engine acting on
  them and the sends are all in the figure. Every message must be recorded sent: as many
  `sent` rows and outbox files as customers (a file is named by its message, so a message
  sent twice would rewrite its file: exactly once is the SIGKILL test's, counted at an SMTP
  server).
- events: wrk on every daemon at once (`bench/ingest.py`'s script), batches of 500
  `product.viewed` for 30 s, 6 connections shared out among the daemons; the events/s of all of
  them added up. Fewer connections than `bench/ingest.py`'s 32, and a longer run: a daemon's
  group commit takes every request waiting, and on PostgreSQL 32 requests of 500 events make
  one transaction longer than wrk's 10 s timeout, so that none would be counted.

The server is `BOOMERANG_BENCH_POSTGRESQL` (default `postgresql://127.0.0.1:5432/test`); where it
does not answer, the benchmark says so and measures nothing. The server's settings are used as
they are and printed with the figures (`synchronous_commit` and `fsync` weigh on every commit).
On one machine the daemons and the server share its cores: the figures show what coordination
costs, not how a cluster of machines scales.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import quote

from bench.figures import Figure
from bench.ingest import BATCH, BOOMERANG, TOKEN, free_port, stop, wait_serving, wrk
from bench.sends import order_shipped
from boomerang.database_url import shown
from boomerang.scaffold import create_project
from boomerang.store.report import Reports

GOAL = "measured beside SQLite with one daemon: no failed request, every message recorded sent"
SERVER = os.environ.get("BOOMERANG_BENCH_POSTGRESQL", "postgresql://127.0.0.1:5432/test")
CUSTOMERS = int(os.environ.get("BENCH_CLUSTER_CUSTOMERS", "2000"))
DAEMONS = (1, 2, 3)
CONNECTIONS = 6  # in all, shared out among the daemons
SECONDS = 30
SENDS_TIMEOUT = 900  # seconds for every message to be sent before the run counts as failed
SETTINGS = ("synchronous_commit", "fsync", "shared_buffers", "max_connections")


@dataclass
class Measured:
    """One set-up's figures."""

    label: str
    daemons: int
    events_per_second: float | None  # None where wrk is not installed
    event_errors: int
    sends_per_second: float
    sends_posted_seconds: float  # until every order.shipped was answered
    sent: int  # `sent` rows in the database
    files: int  # files in the outbox


def server_unavailable() -> str | None:
    """Why the PostgreSQL server cannot be used, or None when it answers."""
    import psycopg

    try:
        with psycopg.connect(SERVER, connect_timeout=3) as conn:
            conn.execute("SELECT 1")
    except psycopg.Error as exc:
        return f"PostgreSQL does not answer at {shown(SERVER)} (BOOMERANG_BENCH_POSTGRESQL): {exc}".strip()
    return None


def server_settings() -> str:
    """The server's version and the settings that weigh on a commit, as one line."""
    import psycopg

    with psycopg.connect(SERVER) as conn:
        version = conn.execute("SHOW server_version").fetchone()[0]
        values = [f"{name}={conn.execute(f'SHOW {name}').fetchone()[0]}" for name in SETTINGS]
    return f"PostgreSQL {version}, " + ", ".join(values)


@contextmanager
def fresh_schema() -> Iterator[str]:
    """A `database:` URL naming a new, empty schema on the server, dropped with everything in it
    afterwards (the same shape as the tests' `postgresql_url`)."""
    import psycopg

    schema = f"boomerang_bench_{secrets.token_hex(6)}"
    with psycopg.connect(SERVER, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    separator = "&" if "?" in SERVER else "?"
    try:
        yield f"{SERVER}{separator}options={quote(f'-csearch_path={schema}')}"
    finally:
        with psycopg.connect(SERVER, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")


@contextmanager
def daemons(project: Path, n: int) -> Iterator[list[int]]:
    """`n` daemons of the project, each on a port of its own; their ports. The first starts (and
    migrates) alone, the others then together."""
    directory = project.parent
    env = {**os.environ, "BOOMERANG_API_TOKEN": TOKEN}
    env.pop("NOTIFY_SOCKET", None)
    started: list[tuple[int, subprocess.Popen, Path]] = []

    def start(index: int) -> None:
        port = free_port()
        log = directory / f"daemon-{n}-{index}.log"
        process = subprocess.Popen(
            [BOOMERANG, "run", "--config", str(project / "boomerang.yaml")],
            cwd=directory,
            env={**env, "BOOMERANG_PORT": str(port)},
            stdout=subprocess.DEVNULL,
            stderr=log.open("ab"),
        )
        started.append((port, process, log))

    def serving(entry: tuple[int, subprocess.Popen, Path]) -> None:
        port, process, log = entry
        try:
            wait_serving(port, process, seconds=60)
        except RuntimeError:
            print(f"{log}:\n" + "\n".join(log.read_text(errors="replace").splitlines()[-20:]))
            raise

    try:
        start(0)
        serving(started[0])
        for index in range(1, n):
            start(index)
        for entry in started[1:]:
            serving(entry)
        yield [port for port, _, _ in started]
    finally:
        for _, process, _ in started:
            stop(process)


def post(port: int, events: list[dict]) -> None:
    """One `POST /events` of a batch; raises unless all of it was accepted."""
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/events",
        data=json.dumps(events).encode(),
        headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=60) as response:
        answer = json.load(response)
    if answer.get("accepted") != len(events):
        raise RuntimeError(f"port {port} answered {answer} to a batch of {len(events)}")


def sends(ports: list[int], database: Path | str) -> tuple[float, float, int]:
    """CUSTOMERS immediate sends triggered through the daemons: the seconds until every
    order.shipped was answered, until every message is recorded sent, and the `sent` rows."""
    now = datetime.now(UTC)
    batches = [
        [order_shipped(n, now) for n in range(first, min(first + BATCH, CUSTOMERS))]
        for first in range(0, CUSTOMERS, BATCH)
    ]
    shares = {port: batches[index :: len(ports)] for index, port in enumerate(ports)}

    def post_share(port: int) -> None:
        for batch in shares[port]:
            post(port, batch)

    started = time.perf_counter()
    with ThreadPoolExecutor(len(ports)) as pool:
        list(pool.map(post_share, ports))
    posted = time.perf_counter() - started
    reader = Reports.open(database)  # read-only, beside the daemons
    try:
        while time.perf_counter() - started < SENDS_TIMEOUT:
            sent = reader.db.execute("SELECT count(*) FROM messages WHERE status = 'sent'").fetchone()[0]
            if sent >= CUSTOMERS:
                break
            time.sleep(0.2)
    finally:
        reader.close()
    return posted, time.perf_counter() - started, sent


def events(ports: list[int], label: str) -> tuple[float, int]:
    """wrk on every daemon at once, the connections shared out: the events/s of all, and the
    failed requests."""
    connections = CONNECTIONS // len(ports)
    with ThreadPoolExecutor(len(ports)) as pool:
        loads = list(
            pool.map(
                lambda item: wrk(
                    item[1], f"{label}-{item[0]}", batch=BATCH, connections=connections, seconds=SECONDS
                ),
                enumerate(ports),
            )
        )
    return sum(load.events_per_second for load in loads), sum(load.errors for load in loads)


def measure(directory: Path, label: str, database: Path | str | None, n: int) -> Measured:
    """One set-up: a new project on `database` (None: its SQLite file) served by `n` daemons."""
    project = directory / label
    create_project(project)
    if database is not None:
        config = project / "boomerang.yaml"
        text = config.read_text()
        config.write_text(text.replace("database: ./boomerang.db", f"database: {database}", 1))
    else:
        database = project / "boomerang.db"
    with daemons(project, n) as ports:
        posted, seconds, sent = sends(ports, database)
        if shutil.which("wrk"):
            rate, errors = events(ports, label)
        else:
            rate, errors = None, 0
    files = len(list((project / "outbox").iterdir()))
    return Measured(label, n, rate, errors, CUSTOMERS / seconds, posted, sent, files)


def run() -> list[Figure]:
    reason = server_unavailable()
    if reason:
        print(f"cluster not measured: {reason}")
        return []
    if shutil.which("wrk") is None:
        print("wrk is not installed (apt-get install wrk, or `make bench` as root): events/s not measured")
    settings = server_settings()
    print(settings)
    results = []
    with tempfile.TemporaryDirectory(prefix="bench-cluster-") as name:
        directory = Path(name)
        results.append(measure(directory, "sqlite-1", None, 1))
        for n in DAEMONS:
            with fresh_schema() as url:
                results.append(measure(directory, f"postgresql-{n}", url, n))
    print(f"{'':>14} {'events/s':>10} {'failed':>7} {'sends/s':>8} {'posted s':>9} {'sent':>6} {'files':>6}")
    for m in results:
        rate = f"{m.events_per_second:10,.0f}" if m.events_per_second is not None else f"{'-':>10}"
        print(
            f"{m.label:>14} {rate} {m.event_errors:7} {m.sends_per_second:8,.0f} "
            f"{m.sends_posted_seconds:9.1f} {m.sent:6} {m.files:6}"
        )
    return figures(results, settings)


def figures(results: list[Measured], settings: str) -> list[Figure]:
    """The events/s and sends/s of each set-up, PostgreSQL's against SQLite's one daemon."""
    sqlite = results[0]
    found = []
    for m in results:
        on = "SQLite, 1 daemon" if m is sqlite else f"PostgreSQL, {m.daemons} daemon(s) on one schema"
        where = on if m is sqlite else f"{on} ({settings})"
        if m.events_per_second is not None:
            found.append(
                Figure(
                    "cluster-events",
                    round(m.events_per_second),
                    "events/s",
                    None if m is sqlite else round(sqlite.events_per_second or 0) or None,
                    GOAL,
                    m.event_errors == 0,
                    f"{where}; batches of {BATCH}, wrk -c{CONNECTIONS // m.daemons} on each daemon "
                    f"for {SECONDS} s; {m.event_errors} failed requests",
                )
            )
        found.append(
            Figure(
                "cluster-sends",
                round(m.sends_per_second),
                "messages/s",
                None if m is sqlite else round(sqlite.sends_per_second),
                GOAL,
                m.sent == CUSTOMERS and m.files == CUSTOMERS,
                f"{where}; {CUSTOMERS:,} order.shipped in batches of {BATCH} round-robin to the daemons "
                f"(all answered after {m.sends_posted_seconds:.1f} s) until every message is sent "
                f"(outbox); {m.sent} sent, {m.files} outbox files",
            )
        )
    return found
