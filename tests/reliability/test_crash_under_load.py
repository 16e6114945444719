"""`kill -9` under a steady event load: tests/test_durability.py's test, longer and busier.

While a thread posts sign-ups at a steady pace (each starting the three-step marketing drip of
tests/test_durability.py, with shorter waits), the real daemon is killed with SIGKILL at seeded
random moments and restarted: 2 kills in `make test`, 24 under `make soak`. Events the daemon
did not acknowledge are posted again afterwards, as a platform retries. Then every acknowledged
event is stored once, every customer entered the drip once and got its three steps (each sent,
or `unknown` if a kill cut its send off), and no message arrived twice: marketing goes at most
once.
"""

from __future__ import annotations

import json
import os
import random
import signal
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from pathlib import Path

import pytest
from test_durability import make_project  # the durability test's drip scenario and its setup

from conftest import (
    API_TOKEN,
    killed_daemons_lease,
    project_database,
    start_daemon,
    wait_until,
    wait_until_serving,
)
from reliability.soak import scaled

PACE = 0.1  # seconds between two sign-ups of the load
# tests/test_durability.py's drip with shorter waits: the same moments to kill at, sooner done.
DRIP = """
scenario: drip
category: trigger
trigger: {event: signup.completed}
steps:
  - wait: 1s
  - send: hello
  - wait: 2s
  - send: hello
    channels: [email]
  - wait: 1s
  - send: hello
"""


class Load(threading.Thread):
    """Posts one sign-up at a time, each for a new customer, and keeps what was acknowledged."""

    def __init__(self, port: int):
        super().__init__(daemon=True)
        self.port = port
        self.stop = threading.Event()
        self.sent: list[dict] = []
        self.acknowledged: set[str] = set()

    def run(self) -> None:
        while not self.stop.is_set():
            customer = f"c-{len(self.sent)}"
            event = signup(customer)
            self.sent.append(event)
            if post(self.port, event) is not None:
                self.acknowledged.add(event["id"])
            self.stop.wait(PACE)


def signup(customer: str) -> dict:
    return {
        "id": f"signup-{customer}",
        "type": "signup.completed",
        "at": "2026-03-02T10:00:00Z",
        "customer": {"id": customer, "email": f"{customer}@example.com", "name": customer.upper()},
    }


def post(port: int, event: dict) -> dict | None:
    """POST one event; its answer, or None when the daemon did not answer (down, or killed mid-way)."""
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/events",
        data=json.dumps(event).encode(),
        headers={"Authorization": f"Bearer {API_TOKEN}"},
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.loads(response.read())
    except (OSError, urllib.error.HTTPError, json.JSONDecodeError):
        return None


@pytest.mark.slow
def test_kill_minus_nine_under_a_steady_load_loses_nothing(
    project: Path, smtp, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    mailbox, smtp_port = smtp
    make_project(project, smtp_port)
    (project / "scenarios" / "drip.yaml").write_text(DRIP)
    port = int(os.environ["BOOMERANG_PORT"])
    log = tmp_path / "daemon.log"
    lease = killed_daemons_lease(request)
    pauses = random.Random(20261202)
    process = start_daemon(project, log, lease)
    load = Load(port)
    try:
        wait_until_serving(port)
        load.start()
        for _ in range(scaled(2, 24)):
            # A kill at any moment: in a request, a commit, a wait, a send.
            time.sleep(
                pauses.uniform(0.2, scaled(1.2, 2.5))
            )  # a sleep on purpose: the load runs until the kill
            process.send_signal(signal.SIGKILL)
            process.wait()
            process = start_daemon(project, log, lease)
            wait_until_serving(port)
        time.sleep(1.5)  # a sleep on purpose: some load on the last process too
        load.stop.set()
        load.join()
        # The platform retries what was not acknowledged: stored now, or already if a kill came
        # between the commit and the answer (then it is a duplicate).
        for event in load.sent:
            if event["id"] not in load.acknowledged:
                answer = post(port, event)
                assert answer is not None and answer["accepted"] + answer["duplicates"] == 1

        def done() -> bool:
            with project_database(project) as db:
                active = db.execute("SELECT count(*) FROM journeys WHERE status = 'active'").fetchone()[0]
                jobs = db.execute("SELECT count(*) FROM jobs WHERE kind != 'tick'").fetchone()[0]
            return active == 0 and jobs == 0

        wait_until(done, scaled(90, 300), "every journey to finish")  # generous for a busy machine
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=15) == 0
    finally:
        load.stop.set()
        if process.poll() is None:
            process.kill()
            process.wait()

    customers = [event["customer"]["id"] for event in load.sent]
    assert len(customers) > 10 and len(load.acknowledged) > 10, "the load hardly ran"
    with project_database(project) as db:
        events = Counter(
            row[0] for row in db.execute("SELECT id FROM events WHERE type = 'signup.completed'")
        )
        statuses = Counter(row[0] for row in db.execute("SELECT status FROM journeys"))
        entries = Counter(
            row[0] for row in db.execute("SELECT customer_id FROM journal WHERE kind = 'enter'")
        )
        sent = db.execute("SELECT customer_id FROM messages WHERE status IN ('sent', 'unknown')").fetchall()
        statuses_of = dict(db.execute("SELECT id, status FROM messages"))
        journal_sends = [row[0] for row in db.execute("SELECT message_id FROM journal WHERE kind = 'send'")]
    # Every event, acknowledged during the kills or on the retry after, is stored once.
    assert all(events[event["id"]] == 1 for event in load.sent) and len(events) == len(customers)
    assert statuses == {"completed": len(customers)}, log.read_text()[-3000:]
    assert entries == dict.fromkeys(customers, 1)  # nobody entered twice
    # Every due message went (or was cut off by a kill, then settled `unknown`), once.
    assert Counter(customer for (customer,) in sent) == dict.fromkeys(customers, 3)
    assert len(journal_sends) == len(set(journal_sends))
    received = Counter(message["X-Boomerang-Message-Id"] for message in mailbox.messages)
    assert {id_ for id_, status in statuses_of.items() if status == "sent"} <= set(received)
    assert {statuses_of.get(id_) for id_ in received} <= {"sent", "unknown"}
    assert set(received.values()) == {1}  # marketing: at most once
