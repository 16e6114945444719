"""`boomerang report` on a year of data: 10,000,000 messages to 1,000,000 customers, beside a
bare `SELECT count(*) FROM messages` on the same database in the same run.

The database is written with set-based SQL (a recursive CTE, no Python loop) in the real
schema, every migration applied, as the daemon would have written it over a year: 5,000,000
journeys of 8 scenarios (a tenth of them held out, the rest split a/b), two messages each on
email, SMS or push, spread evenly over 365 days, with receipts (90%), opens (30%) and clicks
(8%); 5% of the journeys convert (an `order.placed` event and the journal's `goal` line), a
message in 500 brings an unsubscribe, one in 20 a deferral and one in 50 a drop by a cap.
The journal's other lines (enter, send) and the customers table are not written: the report
reads neither, and they would only lengthen the build. It is built once in a temporary
directory.

Measured, each the best of three runs on a warm cache, through `boomerang.report.gather` on the
read-only connection `boomerang report` uses:

- **year**: the whole report over the year (`--since 365d`);
- **month**: the report of the last 30 days (the command's default);
- **baseline**: `SELECT count(*) FROM messages` (SQLite's fastest walk of the table).

`BENCH_REPORT_MESSAGES` (default 10,000,000) sizes the database, customers a tenth of it.
For development only, `BENCH_REPORT_KEEP=DIR` builds the database in DIR once and reuses it on
the next runs (migrating it to the current schema, the report's `now` being the build's), so
that profiling a query does not wait for a new build each time; the default builds afresh.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

from bench.figures import Figure
from boomerang.plugin_manager import load_plugins
from boomerang.project import load_project
from boomerang.report import Settings, gather
from boomerang.scaffold import create_project
from boomerang.store import Store
from boomerang.store.report import Reports

GOAL = "a year's report (10M messages, 1M customers) in seconds: < 5 s"
MESSAGES = int(os.environ.get("BENCH_REPORT_MESSAGES", 10_000_000))
SCENARIOS = 8
ISO = "'%Y-%m-%dT%H:%M:%fZ'"  # strftime's format of the store's fixed-width times
SPLIT = """
scenario: bench-{n}
category: trigger
trigger: {{event: cart.updated}}
goal: order.placed
holdout: 10%
steps:
  - send: cart_reminder
    channels: [email, sms, push]
  - wait: 1d
  - split:
      a: {{weight: 50%, steps: [{{send: cart_reminder_2, channels: [email]}}]}}
      b: {{weight: 50%, steps: [{{send: cart_reminder, channels: [sms]}}]}}
"""


def build(directory: Path, messages: int, now: datetime) -> tuple[Path, Path]:
    """A project and its database holding a year of `messages` messages."""
    project = directory / "project"
    create_project(project)
    for n in range(SCENARIOS):
        (project / "scenarios" / f"bench_{n}.yaml").write_text(SPLIT.format(n=n))
    database = project / "boomerang.db"
    Store(database).close()  # the real schema, every migration applied
    customers, journeys = max(1, messages // 10), max(1, messages // 2)
    start = now - timedelta(days=365)
    step_seconds = 365 * 86400 / journeys  # journeys enter evenly over the year
    db = sqlite3.connect(database, isolation_level=None)
    db.execute("PRAGMA synchronous = OFF")
    db.execute("PRAGMA cache_size = -1000000")
    started = time.perf_counter()
    db.execute("BEGIN")
    # Each journey j: its customer, scenario, group and the moment it entered.
    db.execute(
        "CREATE TEMP TABLE j AS"
        " WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i + 1 < ?)"
        " SELECT i, printf('j-%08d', i) AS id, printf('c-%07d', (i * 7919) % ?) AS cid,"
        " 'bench-' || (i % ?) AS scenario, (i % 10 = 0) AS holdout, CASE WHEN i % 2 THEN 'a' ELSE 'b' END"
        f" AS variant, strftime({ISO}, ?, '+' || (i * ?) || ' seconds') AS at FROM n",
        [journeys, customers, SCENARIOS, start.strftime("%Y-%m-%d %H:%M:%S"), step_seconds],
    )
    db.execute(
        "INSERT INTO journeys (id, scenario, customer_id, entry_key, status, holdout, cursor, context,"
        " entered_at, updated_at)"
        " SELECT id, scenario, cid, id, 'ended', holdout, NULL,"
        " CASE WHEN holdout THEN '{}' ELSE json_object('variants', json_object('3', variant)) END,"
        " at, at FROM j"
    )
    # Two messages a journey, the second a day later; the channel by a hash of the journey.
    db.execute(
        "INSERT INTO messages (id, journey_id, customer_id, scenario, step, template, category, channel,"
        " status, created_at, sent_at, delivered_at, opened_at, clicked_at)"
        " SELECT printf('m-%08d-%d', i, s), id, cid, scenario, CASE s WHEN 0 THEN '1' ELSE '3' END,"
        " 'cart_reminder', 'trigger',"
        " CASE (i * 31 + s) % 3 WHEN 0 THEN 'email' WHEN 1 THEN 'sms' ELSE 'push' END,"
        " 'delivered', sent, sent,"
        f" CASE WHEN (i + s) % 10 THEN strftime({ISO}, sent, '+1 minutes') END,"
        f" CASE WHEN (i + s) % 10 < 3 THEN strftime({ISO}, sent, '+1 hours') END,"
        f" CASE WHEN (i * 13 + s) % 25 < 2 THEN strftime({ISO}, sent, '+2 hours') END"
        f" FROM (SELECT j.*, s.s, strftime({ISO}, j.at, '+' || (s.s * 86400 + 1200) || ' seconds')"
        " AS sent FROM j, (SELECT 0 AS s UNION ALL SELECT 1) s ORDER BY j.i, s.s)"
    )
    # 5% convert, three hours after the second message.
    db.execute(
        "INSERT INTO events (id, type, at, customer_id, data, source, received_at, handled)"
        f" SELECT printf('o-%08d', i), 'order.placed', strftime({ISO}, at, '+1 days', '+4 hours'),"
        " cid, json_object('order', json_object('id', printf('%08d', i), 'total', 20 + (i % 131))), 'api',"
        " at, 1 FROM j WHERE i % 20 = 3"
    )
    db.execute(
        "INSERT INTO journal (at, kind, customer_id, scenario, journey_id, reason, value, variant)"
        f" SELECT strftime({ISO}, at, '+1 days', '+4 hours'), 'goal', cid, scenario, id,"
        " 'order.placed (treated)', 20 + (i % 131), CASE WHEN holdout THEN NULL ELSE variant END FROM j"
        " WHERE i % 20 = 3"
    )
    db.execute(
        "INSERT INTO events (id, type, at, customer_id, data, source, received_at, handled)"
        " SELECT printf('u-%08d', i), 'message.unsubscribed', at, cid, json_object('message', json_object("
        " 'id', printf('m-%08d-0', i), 'scenario', scenario, 'step', '1', 'channel', 'email')),"
        " 'email', at, 1"
        " FROM j WHERE i % 250 = 7"
    )
    db.execute(
        "INSERT INTO journal (at, kind, customer_id, scenario, journey_id, step, reason)"
        " SELECT at, 'defer', cid, scenario, id, '1', 'quiet hours: waits until 08:00'"
        " FROM j WHERE i % 10 = 1"
        " UNION ALL SELECT at, 'drop', cid, scenario, id, '3', 'cap 2 per 1d (trigger) reached: waits until"
        " 08:00; dropped: that is past its expiry' FROM j WHERE i % 25 = 2"
    )
    db.execute("COMMIT")
    db.execute("ANALYZE")
    db.close()
    print(
        f"  built {messages:,} messages, {journeys:,} journeys, {customers:,} customers"
        f" in {time.perf_counter() - started:.0f} s ({database.stat().st_size / 1e9:.1f} GB)",
        flush=True,
    )
    return project, database


def best_of(runs: int, work: Callable[[], object]) -> float:
    """The fastest of `runs` runs of `work`, in seconds."""
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        work()
        times.append(time.perf_counter() - started)
    return min(times)


def kept(directory: Path, messages: int) -> tuple[Path, Path, datetime]:
    """The project and database built in `directory` by an earlier run (migrated to the current
    schema) and the moment they were built, else a new build kept there (`BENCH_REPORT_KEEP`)."""
    built_at = directory / "built_at"
    if built_at.exists():
        now = datetime.fromisoformat(built_at.read_text().strip())
        project = directory / "project"
        database = project / "boomerang.db"
        Store(database).close()  # any migration added since the build
        return project, database, now
    now = datetime.now(UTC)
    directory.mkdir(parents=True, exist_ok=True)
    project, database = build(directory, messages, now)
    built_at.write_text(now.isoformat())
    return project, database, now


def run() -> list[Figure]:
    keep = os.environ.get("BENCH_REPORT_KEEP")
    with contextlib.ExitStack() as stack:
        if keep:
            project, database, now = kept(Path(keep), MESSAGES)
        else:
            now = datetime.now(UTC)
            directory = stack.enter_context(tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_TMP")))
            project, database = build(Path(directory), MESSAGES, now)
        settings = Settings.of(load_project(project / "boomerang.yaml", load_plugins([])))
        reports = Reports.open(database)
        try:
            until = now + timedelta(seconds=1)
            count = reports.db.execute("SELECT count(*) FROM messages").fetchone()[0]
            baseline = best_of(3, lambda: reports.db.execute("SELECT count(*) FROM messages").fetchone())
            year = best_of(3, lambda: gather(reports, settings, now - timedelta(days=365), until))
            month = best_of(3, lambda: gather(reports, settings, now - timedelta(days=30), until))
            found = gather(reports, settings, now - timedelta(days=365), until)
        finally:
            reports.close()
    sent = sum(s["total"]["sent"] for s in found["scenarios"])
    converted = sum(s["total"]["converted"] for s in found["scenarios"])
    print(f"  baseline: SELECT count(*) FROM messages ({count:,})   {baseline:7.2f} s")
    print(f"  report of the year ({sent:,} sent, {converted:,} converted)   {year:7.2f} s")
    print(f"  report of the last 30 days                             {month:7.2f} s")
    size = f"{MESSAGES / 1e6:g}M messages, {MESSAGES / 1e7:g}M customers"
    return [
        Figure(
            "report",
            round(year, 2),
            "s",
            round(baseline, 2),
            GOAL,
            year < 5,
            f"{size}: the year's report; baseline: SELECT count(*) FROM messages",
        ),
        Figure(
            "report",
            round(month, 2),
            "s",
            round(baseline, 2),
            GOAL,
            month < 5,
            f"{size}: the last 30 days' report; baseline: SELECT count(*) FROM messages",
        ),
    ]
