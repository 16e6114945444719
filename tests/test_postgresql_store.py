"""The PostgreSQL store where it differs from SQLite's: several daemons on one database (each a
`Store` of its own, as two processes would have), and the dialect its SQL goes through. These
run whatever `--store` says, on a schema of their own; skipped only where PostgreSQL does not
answer."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path

import pytest

from boomerang.clock import VirtualClock, WallClock
from boomerang.config import load_config
from boomerang.dispatch import RENDERING
from boomerang.engine import Engine
from boomerang.model import Job
from boomerang.problems import ProblemError
from boomerang.project import open_project
from boomerang.scheduler import Scheduler
from boomerang.store import Store, StoreError, open_store
from boomerang.store.postgresql_sql import translate
from conftest import incoming, t

START = "2026-03-02 10:00"  # 13:00 in Moscow, the plan's timezone: no quiet hours


def test_two_daemons_claiming_the_same_due_jobs_never_get_the_same_one(postgresql_url: str) -> None:
    first, second = Store(postgresql_url), Store(postgresql_url)
    try:
        with first.transaction():
            first.add_jobs([("advance", 100.0 + n, 0, None, None, None, "{}") for n in range(300)])
        claimed: dict[str, list[int]] = {"first": [], "second": []}
        start = threading.Barrier(2)

        def claim_all(name: str, store: Store) -> None:
            start.wait()
            while jobs := store.claim_due(1000.0, 60.0, 7):
                claimed[name] += [job.id for job in jobs]

        threads = [
            threading.Thread(target=claim_all, args=item) for item in (("first", first), ("second", second))
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

        assert not set(claimed["first"]) & set(claimed["second"])
        assert len(claimed["first"]) + len(claimed["second"]) == 300
        assert claimed["first"] and claimed["second"]  # both took a share
        # A job leased by one daemon is not claimed by the other until its lease runs out.
        assert second.claim_jobs(claimed["first"][:5], 1000.0, 60.0) == []
        assert {job.id for job in second.claim_jobs(claimed["first"][:5], 1061.0, 60.0)} == set(
            claimed["first"][:5]
        )
    finally:
        first.close()
        second.close()


async def test_a_dead_daemons_job_runs_when_its_lease_runs_out_not_at_the_next_refill(
    postgresql_url: str,
) -> None:
    """A job leased by a daemon that died is left out of the others' windows; it runs when the
    lease runs out, not a horizon (here an hour) later."""
    dead, alive = Store(postgresql_url), Store(postgresql_url)
    try:
        now = WallClock().now().timestamp()
        job_id = dead.add_job("advance", now, 0, {})
        assert [job.id for job in dead.claim_due(now, 1.0, 10)] == [job_id]  # then it died
        ran = asyncio.Event()

        async def run(job: Job) -> None:
            await alive.run(alive.complete_job, job.id)
            ran.set()

        scheduler = Scheduler(alive, WallClock(), run, horizon=3600.0)
        stopping = asyncio.Event()
        serving = asyncio.create_task(scheduler.serve(stopping))
        try:
            await asyncio.wait_for(ran.wait(), 60)  # a guard against a hang, not a timing
        finally:
            stopping.set()
            scheduler.wake()
            await serving
            await scheduler.drain(5)
    finally:
        dead.close()
        alive.close()


def test_a_job_queued_by_one_daemon_wakes_the_others_scheduler(postgresql_url: str) -> None:
    first, second = Store(postgresql_url), Store(postgresql_url)
    woken = threading.Event()
    stop = first.listen_for_jobs(woken.set)
    assert stop is not None
    try:
        with second.transaction():
            second.add_job("advance", time.time() + 5, 0, {})
        assert woken.wait(30), "the other daemon's job did not wake the listener"
    finally:
        stop()
        first.close()
        second.close()


def promo(name: str) -> str:
    return f"scenario: {name}\ncategory: promo\ntrigger: {{event: cart.updated}}\nsteps:\n  - send: {name}\n"


def shop(project: Path, postgresql_url: str) -> Path:
    """The `init` project on PostgreSQL with two promo scenarios a cart starts, one promo a day."""
    for reference in (project / "scenarios").glob("*.yaml"):
        reference.unlink()
    for name in ("first", "second"):
        (project / "scenarios" / f"{name}.yaml").write_text(promo(name), encoding="utf-8")
        (project / "templates" / name).mkdir()
        (project / "templates" / name / "email.en.html").write_text(f"---\nsubject: {name}\n---\n{name}\n")
    config, _ = with_database(project, postgresql_url)
    caps = "  caps:\n    - {categories: [promo], max: 1, per: 1d}\n"
    config.write_text(config.read_text(encoding="utf-8") + caps, encoding="utf-8")
    return config


async def test_two_daemons_sending_to_one_customer_with_one_slot_left_send_one(
    project: Path, postgresql_url: str
) -> None:
    config = shop(project, postgresql_url)
    daemons = []
    for _ in range(2):
        loaded, plugins = open_project(config)
        clock = VirtualClock(t(START))
        store = Store(postgresql_url)
        daemons.append((Engine(store, clock, plugins, loaded), store, clock))
    (first, first_store, clock), (second, second_store, _) = daemons
    try:
        first_store.ingest(
            [incoming("e-1", "cart.updated", START, id="c-1", email="c1@example.com")], t(START)
        )
        while first.handle_pending_events():
            pass
        jobs = first_store.claim_due(clock.now().timestamp(), 60.0, 10)
        assert len(jobs) == 2  # one message of each scenario, for one customer
        now = clock.now()
        # Both daemons plan before either commits: each alone sees the slot free.
        plans = [first._plan_sends([jobs[0]], now), second._plan_sends([jobs[1]], now)]
        assert all(plan.goes for batch in plans for plan in batch)
        loop = asyncio.get_running_loop()
        rendered = [
            await loop.run_in_executor(RENDERING, engine._render, batch, loop)
            for engine, batch in zip((first, second), plans, strict=True)
        ]
        for engine, batch, results in zip((first, second), plans, rendered, strict=True):
            await engine._pace(batch, results)  # builds the messages (these channels are not paced)
        sendings = [
            engine._commit_sends(batch, results, {}, now)
            for engine, batch, results in zip((first, second), plans, rendered, strict=True)
        ]

        assert [len(batch) for batch in sendings] == [1, 0]
        [held] = [entry for entry in second_store.journal() if entry.kind == "defer"]
        assert "cap 1 per 1d (promo) reached" in held.reason
        states = second_store.db.execute("SELECT status FROM messages ORDER BY status").fetchall()
        assert [state for (state,) in states] == ["pending", "sending"]
    finally:
        first_store.close()
        second_store.close()


def with_database(project: Path, database: str) -> tuple[Path, int]:
    """The project's config with `database:` set to `database`, and that setting's line."""
    config_path = project / "boomerang.yaml"
    lines = config_path.read_text(encoding="utf-8").splitlines()
    line = next(number for number, text in enumerate(lines, 1) if text.startswith("database:"))
    lines[line - 1] = f"database: {database}"
    config_path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return config_path, line


def test_a_server_that_does_not_answer_is_an_error_at_the_setting(project: Path) -> None:
    config_path, line = with_database(project, "postgresql://nobody@127.0.0.1:1/none")
    config = load_config(config_path)
    with pytest.raises(StoreError) as raised:
        open_store(config)
    assert str(raised.value).startswith(f"{config_path}:{line}:11: database: cannot connect to PostgreSQL")


def test_a_malformed_url_is_a_problem_of_the_config(project: Path) -> None:
    config_path, _ = with_database(project, "postgresql://host:port/db")
    with pytest.raises(ProblemError) as raised:
        load_config(config_path)
    assert "'database': not a valid PostgreSQL URL" in str(raised.value)


@pytest.mark.parametrize(
    ("sqlite", "postgresql", "lists"),
    [
        (
            "SELECT a FROM t WHERE id IN (SELECT value FROM json_each(?)) AND b = ?",
            "SELECT a FROM t WHERE id = ANY(%s) AND b = %s",
            (0,),
        ),
        (
            "SELECT a FROM t WHERE x NOT IN (SELECT value FROM json_each(:known)) AND id > :after",
            "SELECT a FROM t WHERE x <> ALL(%(known)s) AND id > %(after)s",
            ("known",),
        ),
        (
            "INSERT OR IGNORE INTO jobs (kind) VALUES (?) RETURNING id",
            "INSERT INTO jobs (kind) VALUES (%s) ON CONFLICT DO NOTHING RETURNING id",
            (),
        ),
        (
            "SELECT 'a%?:b', x::jsonb FROM t WHERE instr(y, ?) AND v IS ?",
            "SELECT 'a%%?:b', x::jsonb FROM t WHERE (strpos(y, %s) > 0) AND v IS NOT DISTINCT FROM %s",
            (),
        ),
        (
            "SELECT substr(json_extract(attributes, '$.a.b'), -5) FROM customers",
            "SELECT right((attributes::jsonb #>> '{a,b}'), 5) FROM customers",
            (),
        ),
        (
            "UPDATE [messages] SET [to] = ? FROM a CROSS JOIN b INDEXED BY b_i ON b.x = a.x",
            'UPDATE "messages" SET "to" = %s FROM a JOIN b ON b.x = a.x',
            (),
        ),
    ],
)
def test_the_dialect_rewrites_sqlite_statements_once(sqlite: str, postgresql: str, lists: tuple) -> None:
    statement = translate(sqlite)
    assert (statement.text, statement.lists) == (postgresql, lists)
    assert translate(sqlite) is statement  # cached by text
    given = ["[1, 2]", "x"] if lists == (0,) else {"known": '["a"]', "after": "c"}
    if lists:
        assert statement.params(given) == ([[1, 2], "x"] if lists == (0,) else {"known": ["a"], "after": "c"})


def test_two_daemons_given_the_same_new_people_at_once_make_each_one_once(postgresql_url: str) -> None:
    # As a balancer spreads a platform's deliveries: the same new person (by id or by email
    # alone) and a retried event reach two daemons at the same moment.
    stores = [Store(postgresql_url), Store(postgresql_url)]
    failures: list[BaseException] = []
    start = threading.Barrier(2)

    def ingest(store: Store, daemon: int) -> None:
        start.wait()
        for n in range(40):
            events = [
                incoming(f"signup-{n}", "customer.created", id=f"c-{n}", email=f"c{n}@example.com"),
                incoming(f"view-{n}-{daemon}", "product.viewed", email=f"guest{n}@example.com"),
            ]
            try:
                store.ingest(events, t(START))
            except BaseException as exc:  # noqa: BLE001 - counted below, with its message
                failures.append(exc)

    try:
        threads = [threading.Thread(target=ingest, args=(store, n)) for n, store in enumerate(stores)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert not failures, failures[:3]
        rows = stores[0].db.execute(
            "SELECT count(*), count(DISTINCT customer_id) FROM events WHERE id LIKE 'signup-%'"
        ).fetchone()
        assert tuple(rows) == (40, 40)  # each signup stored once, for a customer of its own
        guests = stores[0].db.execute(
            "SELECT count(DISTINCT customer_id) FROM identities WHERE kind = 'email' AND value LIKE 'guest%'"
        ).fetchone()[0]
        assert guests == 40  # each guest one customer, though two daemons saw them first at once
    finally:
        for store in stores:
            store.close()
