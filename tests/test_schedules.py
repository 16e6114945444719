"""A schedule's audience entered in pages: each customer once, as entering one at a time would,
and a tick cut off part-way (by `kill -9` of the real daemon too) resumes without entering
anyone twice."""

from __future__ import annotations

import json
import os
import signal
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from boomerang import schedules
from boomerang.clock import VirtualClock, to_iso
from boomerang.config import load_config
from boomerang.engine import Engine
from boomerang.model import Job
from boomerang.plugin_manager import load_plugins
from boomerang.project import load_project
from boomerang.scenarios import Scenario
from boomerang.store import Store, rows
from boomerang.store.quarantine import UNREADABLE
from conftest import (
    incoming,
    killed_daemons_lease,
    project_database,
    start_daemon,
    wait_until,
    wait_until_serving,
)

SCENARIO = """\
scenario: weekly
category: promo
trigger: {schedule: "0 10 * * *", audience: "customer.attributes.plan == 'pro'"}
reentry: once
holdout: 30%
steps:
  - split: {a: 50%, b: 50%}
  - wait: 1d
  - send: reactivation_offer
    channels: [email]
    promo: {percent: 15, code: COMEBACK15}
"""
NOW = datetime(2026, 3, 2, 12, tzinfo=UTC)  # a tick fell due at 07:00 UTC (10:00 in Moscow)
# The same audience in a shape the store is asked about (`boomerang.audiences`) and in one it is
# not (`in` is left to the sandbox, customer by customer).
IN_SQL, IN_SANDBOX = "customer.attributes.plan == 'pro'", "customer.attributes.plan in ['pro']"
AUDIENCES = pytest.mark.parametrize("audience", [IN_SQL, IN_SANDBOX])


# Steps that take no time: a page's starts write customers, messages and send jobs, and
# each journey ends (cancelling its jobs) while the page is under way.
INSTANT = """\
scenario: weekly
category: promo
trigger: {schedule: "0 10 * * *", audience: "customer.attributes.plan == 'pro'"}
holdout: 30%
steps:
  - set: {seen: "{{ customer.attributes.plan }}-seen"}
  - if: customer.attributes.seen == 'pro-seen'
    then:
      - send: reactivation_offer
        channels: [email]
        promo: {percent: 15, code: COMEBACK15}
"""


# A first step that waits: a page's journeys are started together, numbered (`tick_journey_id`).
WAITING = """\
scenario: weekly
category: promo
trigger: {schedule: "0 10 * * *", audience: "customer.attributes.plan == 'pro'"}
reentry: once
holdout: 30%
steps:
  - wait: {for: 1d, at: "10:00"}
  - send: reactivation_offer
    channels: [email]
    promo: {percent: 15, code: COMEBACK15}
"""


def make_project(project: Path, scenario: str = SCENARIO, audience: str = IN_SQL) -> Path:
    for old in (project / "scenarios").glob("*.yaml"):
        old.unlink()
    (project / "scenarios" / "weekly.yaml").write_text(scenario.replace(IN_SQL, audience))
    return project / "boomerang.yaml"


def add_customers(store: Store, count: int) -> None:
    """`count` customers, every third on the free plan (outside the audience), by ingest."""
    events = [incoming(f"e-{n}", "customer.updated", "2026-03-01 10:00", customer(n)) for n in range(count)]
    store.ingest(events, NOW - timedelta(days=1))
    store.db.execute("UPDATE events SET handled = 1")  # nothing for the journeys to do with them


def customer(n: int) -> dict:
    plan = "free" if n % 3 else "pro"
    return {"id": f"c-{n:05}", "email": f"c-{n:05}@example.com", "attributes": {"plan": plan}}


def engine_on(database: Path | str, config: Path) -> Engine:
    plugins = load_plugins()
    return Engine(Store(database), VirtualClock(NOW), plugins, load_project(config, plugins))


def enter_one_by_one(engine: Engine, scenario: Scenario, tick: Job, event: dict) -> str:
    """The tick's entry made one customer at a time through `enter` (which checks the reentry
    rule itself), the audience `plan == 'pro'` tested here: what a tick's pages must match.
    Returns the tick's entry key."""
    entry_key = f"tick:{to_iso(datetime.fromtimestamp(tick.due_at, UTC))}"
    with engine.store.transaction():
        for row in engine.store.db.execute("SELECT id FROM customers ORDER BY id").fetchall():
            customer = engine.store.customer(row[0])
            if customer.attributes.get("plan") == "pro":
                engine.enter(scenario, customer, entry_key, event, NOW)
    return entry_key


def snapshot(store: Store) -> dict[str, list]:
    """What entering left: journeys, their timeline, their jobs and messages."""
    return {
        "journeys": store.db.execute(
            "SELECT id, customer_id, entry_key, status, holdout, cursor, version, context, entered_at"
            " FROM journeys WHERE scenario = 'weekly' ORDER BY id"
        ).fetchall(),
        "journal": store.db.execute(
            "SELECT at, kind, customer_id, journey_id, step, reason, variant FROM journal"
            " ORDER BY journey_id, id"
        ).fetchall(),
        "jobs": store.db.execute(
            "SELECT kind, due_at, priority, journey_id, version, payload FROM jobs"
            " WHERE journey_id IS NOT NULL ORDER BY journey_id"
        ).fetchall(),
    }


@AUDIENCES
async def test_the_audience_is_entered_page_by_page_as_one_at_a_time_would(
    project: Path,
    database: Path | str,
    other_database: Path | str,
    monkeypatch: pytest.MonkeyPatch,
    audience: str,
) -> None:
    config = make_project(project, audience=audience)
    monkeypatch.setattr(schedules, "AUDIENCE_BATCH", 7)
    paged, one_by_one = engine_on(database, config), engine_on(other_database, config)
    for engine in (paged, one_by_one):
        add_customers(engine.store, 60)
        engine.ensure_ticks(NOW - timedelta(days=1))
    # Already in the journey: not entered a second time by the tick.
    tick = paged.store.claim_due(NOW.timestamp(), 60, 1)[0]
    scenario = paged.scenarios["weekly"]
    event = {"type": "schedule", "at": to_iso(NOW), "data": {}}
    for engine in (paged, one_by_one):
        with engine.store.transaction():
            earlier = NOW - timedelta(hours=1)
            engine.enter(scenario, engine.store.customer("c-00003"), "earlier", event, earlier)

    await paged.run_job(tick)

    enter_one_by_one(one_by_one, scenario, tick, event)
    entered = snapshot(paged.store)
    assert entered == snapshot(one_by_one.store)
    customers = [journey[1] for journey in entered["journeys"]]
    assert sorted(customers) == [f"c-{n:05}" for n in range(0, 60, 3)]  # each pro customer once
    holdouts = {journey[1] for journey in entered["journeys"] if journey[4]}
    variants = {json.loads(journey[7]).get("variants", {}).get("0") for journey in entered["journeys"]}
    assert holdouts and len(holdouts) < 20 and variants == {"a", "b"}  # both outcomes occur
    assert paged.store.db.execute("SELECT count(*) FROM jobs WHERE kind = 'tick'").fetchone()[0] == 1
    for engine in (paged, one_by_one):
        engine.store.close()


async def test_steps_that_take_no_time_leave_what_one_at_a_time_would(
    project: Path, database: Path | str, other_database: Path | str, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = make_project(project, INSTANT)
    monkeypatch.setattr(schedules, "AUDIENCE_BATCH", 7)
    paged, one_by_one = engine_on(database, config), engine_on(other_database, config)
    for engine in (paged, one_by_one):
        add_customers(engine.store, 40)
        engine.ensure_ticks(NOW - timedelta(days=1))
    tick = paged.store.claim_due(NOW.timestamp(), 60, 1)[0]

    await paged.run_job(tick)

    scenario = one_by_one.scenarios["weekly"]
    event = {"type": "schedule", "at": to_iso(NOW), "data": {}}
    enter_one_by_one(one_by_one, scenario, tick, event)

    def left(store: Store) -> dict[str, list]:
        return {
            **snapshot(store),
            "ended": store.db.execute("SELECT id, status, ended_at FROM journeys ORDER BY id").fetchall(),
            "messages": store.db.execute(
                "SELECT id, journey_id, customer_id, status, promo, context FROM messages ORDER BY id"
            ).fetchall(),
            "sends": store.db.execute("SELECT id, key, payload FROM jobs WHERE kind = 'send'").fetchall(),
            "attributes": store.db.execute("SELECT id, attributes FROM customers ORDER BY id").fetchall(),
        }

    entered = left(paged.store)
    assert entered == left(one_by_one.store)
    assert {status for _, status, _ in entered["ended"]} == {"completed"}
    held_out = sum(1 for journey in entered["journeys"] if journey[4])
    assert 0 < held_out < 14 and len(entered["messages"]) == 14 - held_out  # 14 pro customers of 40
    for engine in (paged, one_by_one):
        engine.store.close()


def by_customer(entered: dict[str, list]) -> dict[str, list]:
    """A snapshot with each journey's id replaced by its customer's: one journey each."""
    customer_of = {journey[0]: journey[1] for journey in entered["journeys"]}
    return {
        "journeys": sorted((customer_of[row[0]], *row[1:]) for row in entered["journeys"]),
        "journal": sorted((*row[:3], customer_of[row[3]], *row[4:]) for row in entered["journal"]),
        "jobs": sorted((*row[:3], customer_of[row[3]], *row[4:]) for row in entered["jobs"]),
    }


async def test_journeys_that_first_wait_start_a_page_at_once_as_one_at_a_time_would(
    project: Path, database: Path | str, other_database: Path | str, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = make_project(project, WAITING)
    monkeypatch.setattr(schedules, "AUDIENCE_BATCH", 7)
    monkeypatch.setattr(schedules, "WAITING_BATCH", 7)
    paged, one_by_one = engine_on(database, config), engine_on(other_database, config)
    scenario = paged.scenarios["weekly"]
    event = {"type": "schedule", "at": to_iso(NOW), "data": {}}
    for engine in (paged, one_by_one):
        add_customers(engine.store, 60)
        engine.ensure_ticks(NOW - timedelta(days=1))
        with engine.store.transaction():  # already in the journey: not entered a second time
            earlier = NOW - timedelta(hours=1)
            engine.enter(scenario, engine.store.customer("c-00003"), "earlier", event, earlier)
    tick = paged.store.claim_due(NOW.timestamp(), 60, 1)[0]

    await paged.run_job(tick)

    entry_key = enter_one_by_one(one_by_one, scenario, tick, event)
    entered = snapshot(paged.store)
    assert by_customer(entered) == by_customer(snapshot(one_by_one.store))
    ticked = paged.store.db.execute(
        "SELECT id, customer_id FROM journeys WHERE entry_key = ? ORDER BY customer_id", [entry_key]
    ).fetchall()
    assert [customer for _, customer in ticked] == [f"c-{n:05}" for n in range(0, 60, 3) if n != 3]
    if paged.store.answers_audiences:  # the store chose the page (SQLite; PostgreSQL's sandbox did not)
        # Numbered in the order entered, on from page to page: the earlier entry kept its own id.
        stamp = datetime.fromtimestamp(tick.due_at, UTC).strftime("%Y%m%dT%H%M%S")
        assert [journey for journey, _ in ticked] == [f"j-t{stamp}-weekly-{n:09d}" for n in range(19)]
    holdouts = {journey[1] for journey in entered["journeys"] if journey[4]}
    assert holdouts and len(holdouts) < 20  # both groups occur
    dues = {job[1] for job in entered["jobs"]}
    assert dues == {datetime(2026, 3, 4, 7, tzinfo=UTC).timestamp()}  # the first 10:00 in Moscow a day on
    for engine in (paged, one_by_one):
        engine.store.close()


@pytest.mark.parametrize(
    ("steps", "audience", "after"),
    [(SCENARIO, IN_SQL, "c-00027"), (SCENARIO, IN_SANDBOX, "c-00009"), (WAITING, IN_SQL, "c-00027")],
)
async def test_a_tick_cut_off_resumes_after_the_last_page_it_committed(
    project: Path,
    database: Path | str,
    monkeypatch: pytest.MonkeyPatch,
    steps: str,
    audience: str,
    after: str,
) -> None:
    """Also with journeys started a page at once: the numbers go on from the last page
    committed (a number given twice would fail the insert)."""
    config = make_project(project, steps, audience)
    monkeypatch.setattr(schedules, "AUDIENCE_BATCH", 5)
    monkeypatch.setattr(schedules, "WAITING_BATCH", 5)
    engine = engine_on(database, config)
    add_customers(engine.store, 60)
    engine.ensure_ticks(NOW - timedelta(days=1))
    tick = engine.store.claim_due(NOW.timestamp(), 60, 1)[0]
    scenario = engine.scenarios["weekly"]
    # Two pages committed, then the process died.
    assert engine._enter_audience_page(tick, scenario, NOW)
    assert engine._enter_audience_page(tick, scenario, NOW)
    engine.store.close()

    engine = engine_on(database, config)
    engine.store.release_all_leases()
    again = engine.store.claim_due(NOW.timestamp(), 60, 1)[0]
    # The last of two pages of five: of the audience when the store chose it, else of everyone
    # (on PostgreSQL always: its store takes no audience, the sandbox evaluates it).
    last = after if engine.store.answers_audiences else "c-00009"
    assert again.id == tick.id and again.payload["after"] == last
    await engine.run_job(again)

    journeys = engine.store.db.execute(
        "SELECT customer_id, count(*) FROM journeys WHERE scenario = 'weekly' GROUP BY customer_id"
    ).fetchall()
    enters = engine.store.db.execute("SELECT count(*) FROM journal WHERE kind = 'enter'").fetchone()[0]
    assert sorted(journeys) == [(f"c-{n:05}", 1) for n in range(0, 60, 3)]
    assert enters == 20
    engine.store.close()


# The fifth customer of the first page: of the audience when the store chose it, else of everyone.
# Journeys that first wait start without their profiles decoded: the store checks each row
# itself (`rows.CUSTOMER_READS_BACK`), and decodes the ones it cannot vouch for.
@pytest.mark.parametrize(
    ("steps", "audience", "damage", "unreadable"),
    [
        (SCENARIO, IN_SQL, "timezone = 'Nowhere/Atlantis'", 12),
        (SCENARIO, IN_SANDBOX, "timezone = 'Nowhere/Atlantis'", 4),
        (WAITING, IN_SQL, "timezone = 'Nowhere/Atlantis'", 12),
        (WAITING, IN_SQL, "last_seen_at = '2026-02-30T10:00:00.000000Z'", 12),
        (WAITING, IN_SQL, "consents = '{\"email\": tru'", 12),
    ],
)
async def test_an_unreadable_customer_ending_a_page_does_not_end_the_audience(
    project: Path,
    database: Path | str,
    monkeypatch: pytest.MonkeyPatch,
    steps: str,
    audience: str,
    damage: str,
    unreadable: int,
) -> None:
    config = make_project(project, steps, audience)
    monkeypatch.setattr(schedules, "AUDIENCE_BATCH", 5)
    monkeypatch.setattr(schedules, "WAITING_BATCH", 5)
    engine = engine_on(database, config)
    add_customers(engine.store, 30)
    engine.store.db.execute(f"UPDATE customers SET {damage} WHERE id = ?", [f"c-{unreadable:05}"])
    engine.ensure_ticks(NOW - timedelta(days=1))
    await engine.run_job(engine.store.claim_due(NOW.timestamp(), 60, 1)[0])
    entered = engine.store.db.execute("SELECT customer_id FROM journeys ORDER BY customer_id").fetchall()
    expected = [f"c-{n:05}" for n in range(0, 30, 3) if n != unreadable]
    assert [customer for (customer,) in entered] == expected
    assert engine.store.db.execute("SELECT row_id FROM quarantine").fetchall() == [(f"c-{unreadable:05}",)]
    engine.store.close()


@pytest.mark.parametrize("steps", [SCENARIO, WAITING])
async def test_attributes_that_are_not_json_fail_neither_the_store_s_audience_nor_the_others(
    project: Path, database: Path | str, steps: str
) -> None:
    """SQLite's JSON functions raise on such text: the audience's query reads it as no
    attributes, so that customer is simply not in `plan == 'pro'`."""
    engine = engine_on(database, make_project(project, steps))
    add_customers(engine.store, 30)
    engine.store.db.execute("UPDATE customers SET attributes = '{\"plan\": \"pro\"' WHERE id = 'c-00012'")
    engine.ensure_ticks(NOW - timedelta(days=1))
    await engine.run_job(engine.store.claim_due(NOW.timestamp(), 60, 1)[0])
    entered = engine.store.db.execute("SELECT customer_id FROM journeys ORDER BY customer_id").fetchall()
    assert [customer for (customer,) in entered] == [f"c-{n:05}" for n in range(0, 30, 3) if n != 12]
    engine.store.close()


# Values of a customer's columns the decoder reads back (and the store should vouch for: the
# common shapes), then ones it reads back in shapes the store leaves to it, then damage.
PLAIN = {
    "consents": ['{"email": true}'],
    "attributes": ['{"plan": "pro", "orders": 3, "vip": null, "tags": ""}'],
    "addresses": ['{"pigeon": "coo-42"}'],
    "orders_count": [3],
    "revenue": [79.9, 80],
    "last_seen_at": [None, "2024-02-29T23:59:59.999999Z", "0001-01-01T00:00:00.000000Z"],
}
READ_BY_DECODING = {
    "attributes": ['{"address": {"city": "Riga"}}', '{"tags": ["a"]}'],
    "push_subscriptions": ['[{"endpoint": "https://push.example/1"}]'],
    "last_seen_at": ["2026-03-02T10:00:00Z", "2026-03-02T13:00:00+03:00"],
    "consents": ['{"a": "' + "x" * 1000 + '"}'],
}
DAMAGED = {
    "consents": ['{"email": tru', "[]", "5", '"text"', "null", 5, "{'a': 1}"],
    "opt_outs": ["[1]", ""],
    "unreachable": ["nope"],
    "attributes": ["[]", '{"a": ' * 40 + "1" + "}" * 40, '{"a": ' * 600 + "1" + "}" * 600],
    "addresses": ['{"pigeon": 5}', '{"pigeon": null}'],
    "push_subscriptions": ["[1]", '["x"]', "{}", ""],
    "orders_count": ["many", 2.5],
    "revenue": ["a lot"],
    "last_seen_at": [
        "2026-02-29T10:00:00.000000Z",
        "2026-13-01T10:00:00.000000Z",
        "2026-00-10T10:00:00.000000Z",
        "2026-03-00T10:00:00.000000Z",
        "0000-01-01T00:00:00.000000Z",
        "2026-03-02T24:00:00.000000Z",
        "2026-03-02T10:60:00.000000Z",
        "2026-03-02T10:00:60.000000Z",
        "2026-03-02T10:00:00.000000",
        "2026-03-02 10:00",
        20260302,
    ],
}


@pytest.mark.parametrize(
    ("column", "value", "expected"),
    [(column, value, "vouched") for column, values in PLAIN.items() for value in values]
    + [(column, value, "decoded") for column, values in READ_BY_DECODING.items() for value in values]
    + [(column, value, "unreadable") for column, values in DAMAGED.items() for value in values],
)
def test_the_store_vouches_only_for_customer_rows_that_read_back(
    tmp_path: Path, column: str, value: object, expected: str
) -> None:
    store = Store(tmp_path / "rows.db")
    add_customers(store, 1)
    store.db.execute(f"UPDATE customers SET [{column}] = ?", [value])
    row = store.db.query("SELECT * FROM customers").__next__()
    try:
        rows.customer_values(row)
        reads_back = True
    except UNREADABLE:
        reads_back = False
    vouched = store.db.execute(f"SELECT {rows.CUSTOMER_READS_BACK} FROM customers").fetchone()[0]
    assert (vouched, reads_back) == {"vouched": (1, True), "decoded": (0, True), "unreadable": (0, False)}[
        expected
    ]
    store.close()


@pytest.mark.slow
def test_kill_minus_nine_mid_entry_enters_everyone_once(
    project: Path, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    # The sandbox's audience: the store's own enters 2,000 customers too fast to be cut off.
    config = make_project(project, audience=IN_SANDBOX)
    database = load_config(config).database
    engine = engine_on(database, config)
    add_customers(engine.store, 6000)  # 2,000 in the audience: six pages of 1,000 customers
    # Queued as the daemon queued it yesterday: overdue as the daemon starts.
    engine.ensure_ticks(datetime.now(UTC) - timedelta(days=1))
    engine.store.close()
    log = tmp_path / "daemon.log"
    # On PostgreSQL the killed daemon's lease runs out before another takes its tick (other
    # daemons may hold leases there): shrunk to a few seconds for both runs.
    lease = killed_daemons_lease(request)

    def entered() -> int:
        with project_database(project) as db:
            return db.execute("SELECT count(*) FROM journeys WHERE scenario = 'weekly'").fetchone()[0]

    def overdue_ticks() -> list:
        with project_database(project) as db:
            now = datetime.now(UTC).timestamp()
            overdue = "SELECT payload FROM jobs WHERE kind = 'tick' AND due_at <= ?"
            return db.execute(overdue, [now]).fetchall()

    process = start_daemon(project, log, lease)
    try:
        wait_until(lambda: entered() > 0, 60, "the first page of the audience")
        process.send_signal(signal.SIGKILL)
        process.wait()
        cut_at = entered()
        (payload,) = overdue_ticks()
        assert 0 < cut_at < 2000, "the tick finished before the kill; the test saw nothing cut off"
        assert json.loads(payload[0])["after"]  # how far it got, committed with its last page
        process = start_daemon(project, log, lease)
        wait_until_serving(int(os.environ["BOOMERANG_PORT"]))
        wait_until(lambda: not overdue_ticks(), 90 + (lease or 0), "the tick to finish after the restart")
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=15) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    with project_database(project) as db:
        per_customer = db.execute(
            "SELECT count(DISTINCT customer_id), count(*) FROM journeys WHERE scenario = 'weekly'"
        ).fetchone()
        enters = db.execute("SELECT count(*) FROM journal WHERE kind = 'enter'").fetchone()[0]
    assert per_customer == (2000, 2000), log.read_text()
    assert enters == 2000


async def test_a_schedule_comes_at_its_time_on_each_customers_own_clock(
    project: Path, database: Path | str
) -> None:
    """`0 10 * * *` is 10:00 where each customer lives: their profile's timezone, else the
    plan's (Europe/Moscow here); a row whose timezone cannot be read is set aside alone."""
    start = datetime(2026, 3, 1, 20, tzinfo=UTC)
    config, plugins = make_project(project), load_plugins()
    engine = Engine(Store(database), VirtualClock(start), plugins, load_project(config, plugins))
    people = {"c-vl": "Asia/Vladivostok", "c-kg": "Europe/Kaliningrad", "c-none": None, "c-bad": None}
    events = [
        incoming(
            f"e-{name}",
            "customer.updated",
            "2026-03-01 10:00",
            {
                "id": name,
                "email": f"{name}@example.com",
                "attributes": {"plan": "pro"},
                **({"timezone": zone} if zone else {}),
            },
        )
        for name, zone in people.items()
    ]
    engine.store.ingest(events, start)
    engine.store.db.execute("UPDATE events SET handled = 1")
    engine.store.db.execute("UPDATE customers SET timezone = 'Europe' WHERE id = 'c-bad'")  # unreadable
    engine.ensure_ticks(start)
    ticks = []
    while True:
        due = engine.store.db.execute("SELECT min(due_at) FROM jobs WHERE kind = 'tick'").fetchone()[0]
        if due > datetime(2026, 3, 2, 12, tzinfo=UTC).timestamp():
            break
        engine.clock.advance_to(datetime.fromtimestamp(due, UTC))
        ticks.append(datetime.fromtimestamp(due, UTC).strftime("%H:%M"))
        [tick] = engine.store.claim_due(due, 60, 1)
        await engine.run_job(tick)
    entered = dict(engine.store.db.execute("SELECT customer_id, entered_at FROM journeys").fetchall())
    assert {name: at[11:16] for name, at in entered.items()} == {
        "c-vl": "00:00",  # 10:00 in Vladivostok (UTC+10)
        "c-none": "07:00",  # 10:00 in Moscow, the plan's
        "c-kg": "08:00",  # 10:00 in Kaliningrad (UTC+2)
    }
    assert ticks == ["00:00", "07:00", "08:00"]  # one tick per moment, each entering its own
    engine.store.close()
