"""Journeys survive `kill -9`: the real daemon is killed at arbitrary moments and restarted;
every journey finishes, no step is lost, and nothing is done twice in the store.

Mail goes to a real aiosmtpd server. The scenario is marketing (trigger), sent at most once:
a send a kill cut off is settled as `unknown` on restart and not sent again, so no message
arrives twice (tests/security/test_sent_once.py widens that window on purpose).
"""

from __future__ import annotations

import json
import os
import signal
import time
import urllib.request
from collections import Counter
from email import message_from_bytes
from pathlib import Path

import pytest
from aiosmtpd.controller import Controller

from conftest import API_TOKEN, free_port, project_database, start_daemon, wait_until, wait_until_serving

SCENARIO = """
scenario: drip
category: trigger
trigger: {event: signup.completed}
steps:
  - wait: 2s
  - send: hello
  - wait: 3s
  - send: hello
    channels: [email]
  - wait: 2s
  - send: hello
"""
TEMPLATE = (
    "---\nsubject: Hello {{ customer.name }}\n---\n<p>Hi {{ customer.name }}, step {{ journey.id }}</p>\n"
)


class Inbox:
    """An aiosmtpd handler that keeps every message it receives."""

    def __init__(self) -> None:
        self.messages: list = []

    async def handle_DATA(self, server, session, envelope) -> str:
        self.messages.append(message_from_bytes(envelope.content))
        return "250 OK"


@pytest.fixture
def inbox():
    handler = Inbox()
    controller = Controller(handler, hostname="127.0.0.1", port=free_port())
    controller.start()
    yield handler, controller.port
    controller.stop()


def make_project(project: Path, smtp_port: int) -> None:
    config = project / "boomerang.yaml"
    text = config.read_text()
    text = text.replace("outbox: ./outbox\n", "")
    text = text.replace("port: 25,", f"port: {smtp_port},")
    config.write_text(text)
    for old in (project / "scenarios").glob("*.yaml"):
        old.unlink()
    (project / "scenarios" / "drip.yaml").write_text(SCENARIO)
    (project / "templates" / "hello").mkdir()
    (project / "templates" / "hello" / "email.en.html").write_text(TEMPLATE)


def post(port: int, events: list[dict]) -> dict:
    body = "\n".join(json.dumps(e) for e in events).encode()
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/events", data=body, headers={"Authorization": f"Bearer {API_TOKEN}"}
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


@pytest.mark.slow
def test_kill_minus_nine_at_any_moment_loses_nothing(project: Path, inbox, tmp_path: Path) -> None:
    handler, smtp_port = inbox
    make_project(project, smtp_port)
    port = int(os.environ["BOOMERANG_PORT"])
    log = tmp_path / "daemon.log"
    customers = [f"c-{n}" for n in range(12)]
    events = [
        {
            "id": f"signup-{c}",
            "type": "signup.completed",
            "at": "2026-03-02T10:00:00Z",
            "customer": {"id": c, "email": f"{c}@example.com", "name": c.upper()},
        }
        for c in customers
    ]
    process = start_daemon(project, log)
    try:
        wait_until_serving(port)
        assert post(port, events) == {"accepted": 12, "duplicates": 0}
        # Kill at moments spread over the journeys' life: during waits, around sends.
        for pause in (0.3, 2.2, 1.1, 2.6, 0.7):
            time.sleep(pause)  # a sleep on purpose: the journeys move on until the kill
            process.send_signal(signal.SIGKILL)
            process.wait()
            process = start_daemon(project, log)
            wait_until_serving(port)

        def done() -> bool:
            with project_database(project) as db:
                active = db.execute("SELECT count(*) FROM journeys WHERE status = 'active'").fetchone()[0]
                jobs = db.execute("SELECT count(*) FROM jobs WHERE kind != 'tick'").fetchone()[0]
            return active == 0 and jobs == 0

        # generous for a busy machine; normally a few seconds
        wait_until(done, 90, "every journey to finish")
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=15) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()

    with project_database(project) as db:
        statuses = Counter(row[0] for row in db.execute("SELECT status FROM journeys"))
        # `unknown`: a kill cut its send off; it may or may not have arrived, and is not sent again
        sent = db.execute(
            "SELECT customer_id, step FROM messages WHERE status IN ('sent', 'unknown')"
        ).fetchall()
        statuses_of = dict(db.execute("SELECT id, status FROM messages"))
        journal_sends = db.execute(
            "SELECT message_id FROM journal WHERE kind IN ('send', 'unknown')"
        ).fetchall()
        entries = db.execute("SELECT customer_id FROM journal WHERE kind = 'enter'").fetchall()
    assert statuses == {"completed": 12}, log.read_text()
    # Exactly three steps sent (or cut off by a kill) per customer, each recorded once.
    assert Counter(customer for customer, _ in sent) == {c: 3 for c in customers}
    assert sorted(step for c, step in sent if c == "c-0") == ["1", "3", "5"]
    assert len(journal_sends) == len(set(journal_sends)) == 36
    assert sorted(c for (c,) in entries) == sorted(customers)  # nobody entered twice
    # Every message recorded as sent arrived, and no message arrived twice.
    received = Counter(message["X-Boomerang-Message-Id"] for message in handler.messages)
    assert {id_ for id_, status in statuses_of.items() if status == "sent"} <= set(received)
    assert {statuses_of.get(id_) for id_ in received} <= {"sent", "unknown"}
    assert set(received.values()) == {1}
    assert all(message["Message-ID"] for message in handler.messages)
