"""The scheduler at scale: the real `boomerang run` on a database of 1,000,000 waiting journeys
(1,000,000 customers, 3 scenarios), beside the same measurements on 1,000 journeys.

The database is written with set-based SQL in the real schema, as the daemon would have
written it: every customer entered a scenario on a `cart.updated` event, was sent its first
message 20 days ago and now waits 30 days for the second (an `advance` job far ahead). It is
built once per size in a temporary directory and reused by every measurement of that size.

What is measured, with the daemon's channels writing into the outbox:

- **start**: from launching the process to the first answer of `/healthz`;
- **RSS**: the process's peak resident memory (`VmHWM` in /proc/<pid>/status) over its start
  and the burst;
- **lateness**: 10,000 of the waits (all 1,000 in the baseline) end at the same moment, ten
  seconds after the launch.
  A due step's lateness is the moment its effect was recorded minus the moment it fell due:
  for the step, the `created_at` of the message the journey queued when its wait ended; for
  the send, the modification time of the message's file in the outbox (the message handed to
  its channel). The p99 of each is a figure, a step or send not done by the timeout counting
  as late as the timeout. Both depend on how fast the jobs of the sends path go. A step's
  `created_at` is the clock when its batch was handed to the store's thread, which commits it
  up to a batch's work later, so the step's **commit** is measured too: the database is read
  every 50 ms while the burst runs, and the p99 is the first reading that saw 99% of the
  steps committed;
- **schedule entry**: a fourth scenario, `schedule:` daily with an audience every customer
  matches, whose tick fell due before the daemon started: seconds from `/healthz` answering
  until the tick job is done and every customer has entered.

`BENCH_SCHEDULER_TIMEOUT` (seconds, default 300) bounds the burst and the entry each;
`BENCH_SCHEDULER_JOURNEYS` (default 1,000,000) sizes the large database, for a quick try.
"""

from __future__ import annotations

import hashlib
import os
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from bench.figures import Figure
from boomerang.clock import VirtualClock, to_iso
from boomerang.engine import Engine
from boomerang.plugin_manager import load_plugins
from boomerang.project import load_project
from boomerang.scaffold import create_project
from boomerang.store import Store

GOAL = "1M waiting journeys: start < 3 s, RSS < 300 MB, p99 lateness < 1 s in a 10,000 burst; 1M enter < 60 s"
BIG, SMALL = 1_000_000, 1_000
BURST = 10_000
SCENARIOS = ("waiting-a", "waiting-b", "waiting-c")
BOOMERANG = str(Path(sys.executable).parent / "boomerang")
WAITING = """
scenario: {name}
category: promo
trigger: {{event: cart.updated}}
reentry: once
steps:
  - send: reactivation_offer
    channels: [email]
    promo: {{percent: 15, code: COMEBACK15}}
  - wait: 30d
  - send: reactivation_offer
    channels: [email]
    promo: {{percent: 15, code: COMEBACK15}}
"""
SCHEDULED = """
scenario: everyone
category: promo
trigger:
  schedule: "0 10 * * *"
  audience: customer.orders_count > 0 and days_since(customer.last_order_at) >= 90
reentry: 90d
holdout: 10%
steps:
  - wait: 1d
  - send: reactivation_offer
    channels: [email]
    promo: {percent: 15, code: COMEBACK15}
"""


@dataclass
class Measured:
    """What one size gave."""

    journeys: int
    start: float = 0.0
    rss_mb: float = 0.0
    step_p99: float = float("inf")
    commit_p99: float = float("inf")
    send_p99: float = float("inf")
    steps_done: int = 0
    sends_done: int = 0
    entry: float = float("inf")
    entered: int = 0
    entry_rss_mb: float = 0.0
    notes: list[str] = field(default_factory=list)


def _stable_id(prefix: str, *parts: object) -> str:
    # The same derivation as `journeys.stable_id`, as an SQL function for the bulk inserts.
    return prefix + hashlib.sha256(":".join(map(str, parts)).encode()).hexdigest()[:20]


def build(directory: Path, customers: int) -> tuple[Path, Path]:
    """A project whose database holds `customers` customers each waiting in one of 3 scenarios."""
    project = directory / "project"
    create_project(project)
    for path in (project / "scenarios").glob("*.yaml"):
        path.unlink()
    for name in SCENARIOS:
        (project / "scenarios" / f"{name}.yaml").write_text(WAITING.format(name=name))
    config = project / "boomerang.yaml"
    config.write_text(config.read_text().replace("log_level: info", "log_level: warning"))
    database = project / "boomerang.db"
    Store(database).close()  # the real schema, every migration applied
    now = datetime.now(UTC)
    entered = now - timedelta(days=20)
    db = sqlite3.connect(database, isolation_level=None)
    db.create_function("stable_id", -1, _stable_id, deterministic=True)
    db.execute("PRAGMA synchronous = OFF")
    db.execute("PRAGMA cache_size = -400000")
    started = time.perf_counter()
    db.execute("BEGIN")
    db.execute(
        "CREATE TEMP TABLE n AS"
        " WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i + 1 < ?)"
        " SELECT i, printf('c-%07d', i) AS cid, printf('e-%07d', i) AS eid,"
        " 'waiting-' || char(97 + i % 3) AS scenario FROM n",
        [customers],
    )
    at, last_order = to_iso(entered), to_iso(now - timedelta(days=120))
    db.execute(
        "INSERT INTO customers (id, email, name, locale, orders_count, revenue, last_order_at,"
        " last_seen_at, created_at, updated_at)"
        " SELECT cid, cid || '@example.com', 'Customer ' || i, 'en', 1, 80.0, ?, ?, ?, ? FROM n",
        [last_order, at, at, at],
    )
    db.execute("INSERT INTO identities (kind, value, customer_id) SELECT 'id', cid, cid FROM n")
    db.execute(
        "INSERT INTO identities (kind, value, customer_id) SELECT 'email', cid || '@example.com', cid FROM n"
    )
    db.execute(
        "INSERT INTO events (id, type, at, customer_id, data, source, received_at, handled)"
        " SELECT eid, 'cart.updated', ?, cid, '{\"cart\": {\"total\": 80.0}}', 'api', ?, 1 FROM n",
        [at, at],
    )
    context = (
        "json_object('event', json_object('id', eid, 'type', 'cart.updated', 'at', ?, 'data', json('{}')))"
    )
    db.execute(
        "INSERT INTO journeys (id, scenario, customer_id, entry_key, status, holdout, cursor, version,"
        " context, entered_at, updated_at) SELECT stable_id('j-', scenario, cid, eid), scenario, cid, eid,"
        f" 'active', 0, '1', 0, {context}, ?, ? FROM n",
        [at, at, at],
    )
    db.execute(
        "INSERT INTO messages (id, journey_id, customer_id, scenario, step, template, category, candidates,"
        " channel, status, promo, context, created_at, sent_at, provider_id)"
        " SELECT stable_id('m-', j.id, 0, '0'), j.id, j.customer_id, j.scenario, '0', 'reactivation_offer',"
        " 'promo', '[\"email\"]', 'email', 'sent', '{\"percent\": 15, \"code\": \"COMEBACK15\"}', j.context,"
        " ?, ?, 'email-' || stable_id('m-', j.id, 0, '0') || '.eml' FROM journeys j",
        [at, at],
    )
    db.execute(
        "INSERT INTO journal (at, kind, customer_id, scenario, journey_id, reason)"
        " SELECT ?, 'enter', customer_id, scenario, id, 'entered on cart.updated' FROM journeys",
        [at],
    )
    db.execute(
        "INSERT INTO journal (at, kind, customer_id, scenario, journey_id, step, template, channel,"
        " message_id, reason) SELECT ?, 'send', customer_id, scenario, journey_id, '0', template, channel,"
        " id, 'email: the best expected value' FROM messages",
        [at],
    )
    # Each wait ends 30 days after its entry, spread over the coming ten days.
    due = (entered + timedelta(days=30)).timestamp()
    db.execute(
        "INSERT INTO jobs (kind, due_at, priority, journey_id, version, payload)"
        " SELECT 'advance', ? + (rowid % 864000), 10, id, 0, '{\"resume\": \"1\"}' FROM journeys",
        [due],
    )
    db.execute("COMMIT")
    db.close()
    elapsed = time.perf_counter() - started
    print(f"  built {customers:,} customers and journeys in {elapsed:.0f} s", flush=True)
    return project, database


def _port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _healthy(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1) as answer:
            return answer.status == 200
    except OSError:
        return False


def _memory(pid: int) -> float:
    """The process's peak resident memory in MB (VmHWM)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def _launch(project: Path, port: int, log: Path) -> tuple[subprocess.Popen, float]:
    """Start `boomerang run`; returns the process and the seconds until /healthz answered."""
    launched = time.perf_counter()
    process = subprocess.Popen(
        [BOOMERANG, "run", "--config", str(project / "boomerang.yaml")],
        stdout=subprocess.DEVNULL,
        stderr=log.open("ab"),
        env={**os.environ, "BOOMERANG_PORT": str(port)},
        cwd=project,
    )
    while not _healthy(port):
        if process.poll() is not None:
            raise SystemExit(f"boomerang run exited with {process.returncode}: {log.read_text()[-2000:]}")
        time.sleep(0.01)
    return process, time.perf_counter() - launched


def _stop(process: subprocess.Popen) -> None:
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(60)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def _p99(values: list[float]) -> float:
    return statistics.quantiles(values, n=100)[98] if len(values) >= 2 else (values[0] if values else 0.0)


def measure_burst(project: Path, database: Path, result: Measured, timeout: float) -> None:
    """Start the daemon with BURST waits ending a few seconds later; start, RSS, lateness."""
    outbox = project / "outbox"
    burst = min(BURST, result.journeys)
    lead = 10.0
    due = time.time() + lead
    with sqlite3.connect(database) as db:
        db.execute(
            "UPDATE jobs SET due_at = ?"
            " WHERE id IN (SELECT id FROM jobs WHERE kind = 'advance' ORDER BY id LIMIT ?)",
            [due, burst],
        )
    port, log = _port(), project / "daemon.log"
    process, result.start = _launch(project, port, log)
    committed = -1  # the first moment (seconds after due) that 99% of the steps were seen committed
    try:
        deadline = due + timeout
        with sqlite3.connect(f"{database.as_uri()}?mode=ro", uri=True) as reader:
            while time.time() < deadline:
                if committed < 0:
                    seen = time.time()
                    steps = reader.execute("SELECT count(*) FROM messages WHERE step = '2'").fetchone()[0]
                    if steps >= burst * 0.99:
                        committed = seen - due
                written = sum(1 for _ in os.scandir(outbox)) if outbox.exists() else 0
                if written >= burst:
                    break
                time.sleep(0.05 if committed < 0 else 0.5)
        result.rss_mb = _memory(process.pid)
    finally:
        _stop(process)
    with sqlite3.connect(f"{database.as_uri()}?mode=ro", uri=True) as db:
        created = [row[0] for row in db.execute("SELECT created_at FROM messages WHERE step = '2'")]
    steps = [datetime.fromisoformat(stamp).timestamp() - due for stamp in created]
    sends = [entry.stat().st_mtime - due for entry in os.scandir(outbox)] if outbox.exists() else []
    result.steps_done, result.sends_done = len(steps), len(sends)
    # A step or a send not done by the deadline counts as late as the deadline.
    result.step_p99 = _p99(steps + [timeout] * (burst - len(steps)))
    result.commit_p99 = committed if committed >= 0 else timeout
    result.send_p99 = _p99(sends + [timeout] * (burst - len(sends)))
    if len(sends) < burst:
        result.notes.append(f"{len(sends):,} of {burst:,} sent within {timeout:.0f} s")


def measure_schedule(project: Path, database: Path, result: Measured, timeout: float) -> None:
    """A schedule scenario whose tick is overdue at start: seconds until every customer entered."""
    (project / "scenarios" / "everyone.yaml").write_text(SCHEDULED)
    config = project / "boomerang.yaml"
    plugins = load_plugins()
    store = Store(database)
    yesterday = datetime.now(UTC) - timedelta(days=1)
    # Queued as the daemon queued it yesterday: the tick fell due before this start.
    Engine(store, VirtualClock(yesterday), plugins, load_project(config, plugins)).ensure_ticks(yesterday)
    store.close()
    port, log = _port(), project / "daemon.log"
    process, _ = _launch(project, port, log)
    ready = time.perf_counter()
    try:
        with sqlite3.connect(f"{database.as_uri()}?mode=ro", uri=True) as db:
            while time.perf_counter() - ready < timeout:
                overdue = db.execute(
                    "SELECT count(*) FROM jobs WHERE kind = 'tick' AND due_at <= ?", [time.time()]
                ).fetchone()[0]
                if not overdue:
                    result.entry = time.perf_counter() - ready
                    break
                time.sleep(0.25)
            result.entry_rss_mb = _memory(process.pid)
            entered = db.execute("SELECT count(*) FROM journeys WHERE scenario = 'everyone'").fetchone()
            result.entered = entered[0]
    finally:
        _stop(process)
    if result.entry == float("inf"):
        elapsed = time.perf_counter() - ready
        result.notes.append(f"schedule: {result.entered:,} entered in {elapsed:.0f} s, not done")


def measure(customers: int, timeout: float) -> Measured:
    """Every measurement on one database of `customers` waiting journeys."""
    result = Measured(customers)
    with tempfile.TemporaryDirectory() as directory:
        project, database = build(Path(directory), customers)
        measure_burst(project, database, result, timeout)
        measure_schedule(project, database, result, timeout)
    return result


def run() -> list[Figure]:
    timeout = float(os.environ.get("BENCH_SCHEDULER_TIMEOUT", "300"))
    customers = int(os.environ.get("BENCH_SCHEDULER_JOURNEYS", BIG))
    base = measure(SMALL, timeout)
    big = measure(customers, timeout)
    print(
        f"{'journeys':>10} {'start s':>8} {'RSS MB':>7} {'step p99 s':>10} {'committed':>10}"
        f" {'send p99 s':>10} {'entry s':>8} {'entered':>9} {'entry RSS MB':>12}"
    )
    for row in (base, big):
        print(
            f"{row.journeys:>10,} {row.start:8.2f} {row.rss_mb:7.0f} {row.step_p99:10.2f}"
            f" {row.commit_p99:10.2f} {row.send_p99:10.2f} {row.entry:8.1f} {row.entered:>9,}"
            f" {row.entry_rss_mb:12.0f}"
        )
    notes = "; ".join(big.notes)
    sized = f"{customers:,} waiting journeys; baseline: {SMALL:,}"
    return [
        Figure(
            "scheduler",
            round(big.start, 2),
            "s start",
            round(base.start, 2),
            "start < 3 s",
            big.start < 3,
            f"launch to /healthz, {sized}",
        ),
        Figure(
            "scheduler",
            round(big.rss_mb),
            "MB RSS",
            round(base.rss_mb),
            "RSS < 300 MB",
            big.rss_mb < 300,
            f"VmHWM over start and burst, {sized}",
        ),
        Figure(
            "scheduler",
            round(big.step_p99, 3),
            "s p99 step",
            round(base.step_p99, 3),
            "p99 lateness < 1 s",
            big.step_p99 < 1,
            f"{BURST:,} waits ending at once: due to the next message queued, {sized}",
        ),
        Figure(
            "scheduler",
            round(big.commit_p99, 3),
            "s p99 step committed",
            round(base.commit_p99, 3),
            "p99 lateness < 1 s",
            big.commit_p99 < 1,
            f"{BURST:,} waits ending at once: due to 99% of the steps seen committed"
            f" (read every 50 ms), {sized}",
        ),
        Figure(
            "scheduler",
            round(big.send_p99, 3),
            "s p99 send",
            round(base.send_p99, 3),
            "p99 lateness < 1 s",
            big.send_p99 < 1,
            f"{BURST:,} waits ending at once: due to the message in the outbox, {sized}; {notes}",
        ),
        Figure(
            "scheduler",
            round(big.entry, 1),
            "s entry",
            round(base.entry, 1),
            "schedule entry < 60 s",
            big.entry < 60,
            f"a schedule: tick entering {big.entered:,} customers, {sized}",
        ),
    ]
