"""Three daemons on one PostgreSQL database, one killed with SIGKILL every few seconds.

Issue 16's test of the cluster: three real `boomerang run` processes on one project (each on
its own port, the same PostgreSQL schema, the same real SMTP server) take a steady load of
events spread over them as a load balancer would; an event a daemon did not acknowledge (it
was just killed) is posted to the next one. Every few seconds one daemon, chosen at random, is
killed with SIGKILL and restarted. The load exercises three paths at once:

- sign-ups, each for a new customer, starting a drip that sends at once and again 1 s later;
- views by a few customers, each starting a promo send at once, far more than the contact
  plan's cap of `CAP` promo messages per customer lets go (two daemons must never both take
  the last slot);
- a schedule ticking every minute (`* * * * *`) for three customers: the kills go on until
  a tick has run, and more under `make soak`.

After the load stops and the survivors drain: every acknowledged event is stored once; every
message went once — each `sent` one arrived exactly once at the SMTP server (by its
Message-ID), each cut off by a kill is `unknown` and arrived at most once, as README's
delivery guarantee promises for marketing, and none has two outcomes in the journal; no
customer got more promo messages than the cap; and each tick entered its customers once.

A killed daemon's jobs come back when their lease runs out (120 s in production); here the
daemons run with a 5 s lease so that the survivors drain in seconds.
"""

from __future__ import annotations

import random
import re
import signal
import subprocess
import threading
import time
from collections import Counter
from datetime import UTC, datetime
from itertools import count
from pathlib import Path

import pytest
from security.test_sent_once import SLOW_HOOK
from test_durability import make_project  # the SMTP server wired in, a `hello` email template

from conftest import free_port, project_database, start_daemon, wait_until, wait_until_serving
from reliability.soak import scaled
from reliability.test_crash_under_load import post

DAEMONS = 3
CAP = 3  # promo messages per customer per 12 h
VIEWERS = [f"v-{n}" for n in range(4)]
TICKED = [f"t-{n}" for n in range(3)]
PACE = 0.05  # seconds between two rounds of the load
LEASE = 5.0  # seconds; the daemons' lease on a job (scheduler.LEASE_SECONDS), shrunk

SIGNUP = """
scenario: drip
category: trigger
trigger: {event: signup.completed}
steps:
  - send: hello
  - wait: 1s
  - send: hello
"""
VIEW = """
scenario: viewed
category: promo
trigger: {event: product.viewed}
steps:
  - send: hello
"""
MINUTELY = """
scenario: minutely
category: trigger
trigger: {schedule: "* * * * *", audience: "customer.id.startswith('t-')"}
steps:
  - send: hello
"""
PLAN = f"""
  caps:
    - {{categories: [promo], max: {CAP}, per: 12h}}
"""


def start(project: Path, log: Path, port: int) -> subprocess.Popen:
    """The real `boomerang run` on the project, on `port`, its stderr appended to `log`."""
    return start_daemon(project, log, LEASE, BOOMERANG_PORT=str(port))


def event(kind: str, event_id: str, customer: str) -> dict:
    return {
        "id": event_id,
        "type": kind,
        "at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "customer": {"id": customer, "email": f"{customer}@example.com", "name": customer.upper()},
    }


class Balancer:
    """Posts each event to the daemons in turn, as a load balancer would; one refused (its
    daemon down or killed mid-request) goes to the next. Keeps what was acknowledged."""

    def __init__(self, ports: list[int]):
        self.ports = ports
        self.turn = count()
        self.sent: list[dict] = []
        self.acknowledged: set[str] = set()

    def post(self, event: dict) -> None:
        self.sent.append(event)
        first = next(self.turn)
        for attempt in range(len(self.ports)):
            if post(self.ports[(first + attempt) % len(self.ports)], event) is not None:
                self.acknowledged.add(event["id"])
                return


class Load(threading.Thread):
    """Each round: a sign-up of a new customer and a view by one of `VIEWERS`."""

    def __init__(self, balancer: Balancer):
        super().__init__(daemon=True)
        self.balancer = balancer
        self.stop = threading.Event()

    def run(self) -> None:
        for n in count():
            if self.stop.is_set():
                return
            self.balancer.post(event("signup.completed", f"signup-c-{n}", f"c-{n}"))
            self.balancer.post(event("product.viewed", f"view-{n}", VIEWERS[n % len(VIEWERS)]))
            self.stop.wait(PACE)


def make_cluster_project(project: Path, smtp_port: int, database: str) -> None:
    make_project(project, smtp_port)
    config = project / "boomerang.yaml"
    text = re.sub(r"(?m)^database: .*$", f"database: {database}", config.read_text(), count=1)
    config.write_text(text.replace("contact_plan:\n", f"contact_plan:{PLAN}", 1))
    scenarios = project / "scenarios"
    (scenarios / "drip.yaml").unlink()
    for name, text in (("drip", SIGNUP), ("viewed", VIEW), ("minutely", MINUTELY)):
        (scenarios / f"{name}.yaml").write_text(text)


def minutes_between(start: float, end: float) -> list[str]:
    """The entry keys of the `* * * * *` ticks due after `start` and by `end`."""
    first = int(start // 60 + 1) * 60
    return [
        f"tick:{datetime.fromtimestamp(minute, UTC).strftime('%Y-%m-%dT%H:%M:%S.000000Z')}"
        for minute in range(first, int(end) + 1, 60)
    ]


@pytest.mark.slow
def test_three_daemons_one_killed_every_few_seconds_send_everything_once(
    project: Path, smtp, postgresql_url: str, tmp_path: Path
) -> None:
    mailbox, smtp_port = smtp
    make_cluster_project(project, smtp_port, postgresql_url)
    ports = [free_port() for _ in range(DAEMONS)]
    log = tmp_path / "daemons.log"
    chance = random.Random(20261207)
    balancer = Balancer(ports)
    load = Load(balancer)
    # The first migrates the schema; the others start beside it.
    processes = [start(project, log, port) for port in ports]

    def ticks_run() -> int:
        with project_database(project) as db:
            return db.execute("SELECT count(*) FROM journeys WHERE scenario = 'minutely'").fetchone()[0]

    try:
        for port in ports:
            wait_until_serving(port)
        for customer in TICKED:
            balancer.post(event("customer.seen", f"seen-{customer}", customer))
        started = time.time()
        load.start()
        kills = 0
        deadline = time.monotonic() + scaled(90, 600)
        while kills < scaled(4, 60) or not ticks_run():
            assert time.monotonic() < deadline, "no tick ran during the load"
            # A kill at any moment: in a request, a claim, a send, a tick.
            time.sleep(chance.uniform(1.0, 3.0))  # a sleep on purpose: the load runs until the kill
            victim = chance.randrange(DAEMONS)
            processes[victim].send_signal(signal.SIGKILL)
            processes[victim].wait()
            kills += 1
            processes[victim] = start(project, log, ports[victim])
            wait_until_serving(ports[victim])
        time.sleep(1.0)  # a sleep on purpose: some load on the last processes too
        load.stop.set()
        load.join()
        # The platform retries what no daemon acknowledged: stored now, or already if a kill
        # came between the commit and the answer.
        for sent in balancer.sent:
            if sent["id"] not in balancer.acknowledged:
                answer = post(ports[0], sent)
                assert answer is not None and answer["accepted"] + answer["duplicates"] == 1

        def drained() -> float | None:
            now = time.time()
            with project_database(project) as db:
                active = db.execute("SELECT count(*) FROM journeys WHERE status = 'active'").fetchone()[0]
                # Promo sends over the cap are held until it frees, in hours.
                jobs = db.execute("SELECT count(*) FROM jobs WHERE due_at <= ?", [now]).fetchone()[0]
            return now if active == 0 and jobs == 0 else None

        # A killed daemon's jobs wait for their lease to run out; generous for a busy machine.
        drained_at = wait_until(drained, scaled(90, 300), "the survivors to drain the queue")
        for process in processes:
            process.send_signal(signal.SIGTERM)
        assert [process.wait(timeout=15) for process in processes] == [0] * DAEMONS, log.read_text()[-3000:]
    finally:
        load.stop.set()
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.wait()

    signups = [sent for sent in balancer.sent if sent["type"] == "signup.completed"]
    assert len(signups) > 20 and kills >= scaled(4, 60), "the load hardly ran"
    with project_database(project) as db:
        events = Counter(row[0] for row in db.execute("SELECT id FROM events"))
        messages = {
            row[0]: (row[1], row[2], row[3])
            for row in db.execute(
                "SELECT m.id, m.customer_id, m.status, j.scenario FROM messages m"
                " JOIN journeys j ON j.id = m.journey_id"
            )
        }
        outcomes = Counter(
            row[0] for row in db.execute("SELECT message_id FROM journal WHERE kind IN ('send', 'unknown')")
        )
        ticks = Counter(
            (row[0], row[1])
            for row in db.execute("SELECT entry_key, customer_id FROM journeys WHERE scenario = 'minutely'")
        )
        entries = Counter(row[0] for row in db.execute("SELECT journey_id FROM journal WHERE kind = 'enter'"))
    log_tail = log.read_text()[-3000:]
    # Every event, acknowledged during the kills or on the retry after, is stored once.
    assert all(events[sent["id"]] == 1 for sent in balancer.sent), log_tail
    assert set(entries.values()) == {1}  # no journey entered twice
    # Each message went once: `sent` ones arrived once; one a kill cut off is `unknown`, may or
    # may not have arrived, and was not sent again; none has two outcomes in the journal.
    received = Counter(str(message["X-Boomerang-Message-Id"]) for message in mailbox.messages)
    assert set(received.values()) == {1}, [id_ for id_, n in received.items() if n > 1]
    assert set(received) <= set(messages)
    statuses = {id_: status for id_, (_, status, _) in messages.items()}
    assert {id_ for id_, status in statuses.items() if status == "sent"} <= set(received)
    assert {statuses[id_] for id_ in received} <= {"sent", "unknown"}
    assert set(outcomes.values()) == {1}, [id_ for id_, n in outcomes.items() if n > 1]
    assert set(outcomes) == {id_ for id_, status in statuses.items() if status in ("sent", "unknown")}
    # Every sign-up's drip sent (or cut off) both of its messages.
    drips = Counter(
        customer
        for customer, status, scenario in messages.values()
        if scenario == "drip" and status in ("sent", "unknown")
    )
    assert drips == {sent["customer"]["id"]: 2 for sent in signups}, log_tail
    # No viewer got more promo messages than the cap, counted at the SMTP server and in the
    # store, and the cap was reached: the load was over it.
    promos = Counter(messages[id_][0] for id_ in received if messages[id_][2] == "viewed")
    taken = Counter(
        customer
        for customer, status, scenario in messages.values()
        if scenario == "viewed" and status in ("sent", "unknown")
    )
    assert max(promos.values()) <= CAP and max(taken.values()) == CAP, (promos, taken)
    # Each tick due while the daemons ran entered each of its customers once.
    due = minutes_between(started, drained_at)
    keys = {key for key, _ in ticks}
    assert due and set(due) <= keys, (due, keys)
    assert ticks == {(key, customer): 1 for key in keys for customer in TICKED}


@pytest.mark.slow
def test_a_start_leaves_another_daemons_send_in_flight_alone(
    project: Path, smtp, postgresql_url: str, tmp_path: Path
) -> None:
    """A daemon starting on PostgreSQL does not settle as `unknown` the message another daemon
    is sending (the start-time settling is SQLite's, where the database has one daemon)."""
    mailbox, smtp_port = smtp
    make_cluster_project(project, smtp_port, postgresql_url)
    (project / "plugins" / "slow_hook.py").write_text(SLOW_HOOK)  # holds the first send in the window
    window = project / "in-the-window"
    ports = [free_port() for _ in range(2)]
    log = tmp_path / "daemons.log"
    processes = [start(project, log, ports[0])]
    try:
        wait_until_serving(ports[0])
        assert post(ports[0], event("product.viewed", "view-1", "v-1")) is not None
        wait_until(window.exists, 40, "the send to reach the window")
        assert len(mailbox.raw) == 1  # the SMTP server took it; the store still says `sending`
        processes.append(start(project, log, ports[1]))
        wait_until_serving(ports[1])
        with project_database(project) as db:
            statuses = db.execute("SELECT status FROM messages").fetchall()
            unknowns = db.execute("SELECT count(*) FROM journal WHERE kind = 'unknown'").fetchone()[0]
        assert ([tuple(row) for row in statuses], unknowns) == ([("sending",)], 0), log.read_text()[-3000:]
    finally:
        for process in processes:
            process.kill()
            process.wait()
