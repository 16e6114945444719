"""`boomerang forget CUSTOMER`: a customer's personal data erased, their counts kept anonymously.

Against the real `boomerang run` process and its database (on each store): the command runs
beside the daemon (its own short write transaction), `explain` then finds nobody by the old email, no
trace of the email or phone is left anywhere in the database or the outbox, and a later event
with the same email starts a new customer.
"""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import subprocess
import threading
from datetime import UTC, datetime
from pathlib import Path

import aiohttp
import pytest

from boomerang.erasure import kept_data, remove_outbox_files
from boomerang.outbox import customer_token
from boomerang.store import Store
from conftest import AUTH, BOOMERANG, daemon_process, event, incoming, project_database, wait_for

EMAIL = "anna.forget@example.com"
PHONE = "+79990001122"
WELCOME = """
scenario: welcome
category: transactional
trigger: {event: signup.completed}
steps:
  - send: welcome
"""


def boomerang(project: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [BOOMERANG, *args, "--config", str(project / "boomerang.yaml")],
        capture_output=True,
        text=True,
        timeout=60,
    )


def dump(project: Path) -> str:
    """Everything the project's database holds, every row of every table, as text."""
    with project_database(project) as db:
        if isinstance(db, sqlite3.Connection):
            tables = "SELECT name FROM sqlite_master WHERE type = 'table'"
        else:
            tables = "SELECT table_name FROM information_schema.tables WHERE table_schema = current_schema()"
        names = [name for (name,) in db.execute(tables).fetchall()]
        return "\n".join(repr(row) for name in names for row in db.execute(f'SELECT * FROM "{name}"'))


def rows(project: Path, sql: str) -> list[tuple]:
    """The rows `sql` reads from the project's database, as tuples."""
    with project_database(project) as db:
        return [tuple(row) for row in db.execute(sql).fetchall()]


async def post(events: list[dict]) -> dict:
    port = os.environ["BOOMERANG_PORT"]
    async with (
        aiohttp.ClientSession() as session,
        session.post(f"http://127.0.0.1:{port}/events", json=events, headers=AUTH) as response,
    ):
        assert response.status == 200, await response.text()
        return await response.json()


async def test_forget_beside_the_running_daemon_leaves_only_anonymous_counts(project: Path, tmp_path) -> None:
    (project / "scenarios" / "welcome.yaml").write_text(WELCOME)
    (project / "templates" / "welcome").mkdir()
    (project / "templates" / "welcome" / "email.en.html").write_text(
        "---\nsubject: Welcome {{ customer.name }}\n---\n<p>Hi {{ customer.name }}, {{ customer.email }}</p>"
    )
    outbox = project / "outbox"
    anna = {
        "id": "c-42",
        "email": EMAIL,
        "phone": PHONE,
        "name": "Anna Forgetme",
        "attributes": {"city": "Tver"},
        "push_subscriptions": [
            {"endpoint": "https://fcm.googleapis.com/fcm/send/abc", "keys": {"p256dh": "k", "auth": "a"}}
        ],
    }
    cart = {"cart": {"url": "https://shop.example/cart/anna", "total": 79.9, "currency": "EUR",
                     "items": [{"sku": "B-1", "name": "Bicycle", "price": 79.9, "qty": 1}]}}
    order = {"order": {"id": "1001", "total": 120.5, "currency": "EUR", "address": "Tver, Lenina 1"}}
    async with daemon_process(project, tmp_path / "daemon.log"):
        await post(
            [
                event("s1", "signup.completed", "2026-03-02 09:00", anna),
                event("c1", "cart.updated", "2026-03-02 10:00", {"email": EMAIL}, cart),
                event("o1", "order.placed", "2026-03-02 11:00", {"phone": PHONE}, order),
            ]
        )
        await wait_for(lambda: list(outbox.glob("*-email-*.eml")), 20, "the welcome email in the outbox")
        # `ls` shows when, over which channel, to whom (the id, never the email) and which message
        [eml] = outbox.glob("*-email-*.eml")
        welcome = "SELECT id, created_at FROM messages WHERE template = 'welcome'"
        [(message_id, created)] = rows(project, welcome)
        stamp = datetime.fromisoformat(created).strftime("%Y%m%dT%H%M%SZ")
        assert eml.name == f"{stamp}-email-c_42-{message_id}.eml"
        await wait_for(
            lambda: rows(project, "SELECT count(*) FROM journeys WHERE status = 'active'")[0][0] >= 1,
            what="the abandoned-cart journey",
        )
        assert EMAIL in dump(project)

        done = await asyncio.to_thread(boomerang, project, "forget", EMAIL.upper())
        assert done.returncode == 0, done.stderr
        assert done.stdout.startswith("forgot customer c-42: profile and identities deleted; 4 events")
        assert EMAIL not in done.stdout + done.stderr

        text = dump(project)
        personal = (EMAIL, PHONE, "Forgetme", "Tver", "fcm.googleapis.com", "example/cart/anna", "Bicycle")
        assert [value for value in personal if value in text] == []
        assert rows(project, "SELECT count(*) FROM customers") == [(0,)]
        assert rows(project, "SELECT count(*) FROM identities") == [(0,)]
        anonymous = {cid for (cid,) in rows(project, "SELECT DISTINCT customer_id FROM events")}
        assert len(anonymous) == 1 and next(iter(anonymous)).startswith("forgotten-")
        # the counts stay: events by type, messages by template and status, the order's total
        assert sorted(rows(project, "SELECT type FROM events WHERE type NOT LIKE 'message.%'")) == [
            ("cart.updated",), ("order.placed",), ("signup.completed",)
        ]
        assert rows(project, "SELECT template, status FROM messages") == [("welcome", "sent")]
        assert rows(project, "SELECT data FROM events WHERE type = 'order.placed'") == [
            (json.dumps({"order": {"total": 120.5, "currency": "EUR"}}),)
        ]
        assert rows(project, "SELECT count(*) FROM journeys WHERE status = 'active'") == [(0,)]
        assert rows(project, "SELECT count(*) FROM jobs WHERE journey_id IS NOT NULL") == [(0,)]
        assert list(outbox.glob("*-email-*")) == []  # the message's body went with it

        explained = await asyncio.to_thread(boomerang, project, "explain", EMAIL)
        assert explained.returncode == 1 and "no customer" in explained.stderr

        # the daemon goes on, and the same email is a new customer now
        assert await post([event("c2", "cart.updated", "2026-03-03 10:00", {"email": EMAIL}, cart)]) == {
            "accepted": 1,
            "duplicates": 0,
        }
        [(new_id, orders)] = rows(project, "SELECT id, orders_count FROM customers")
        assert new_id.startswith("anon-") and orders == 0
    again = await asyncio.to_thread(boomerang, project, "forget", "nobody@example.com")
    assert again.returncode == 1 and "no customer 'nobody@example.com'" in again.stderr


def test_forget_finds_a_customer_by_phone_or_a_merged_away_id(database: Path | str) -> None:
    store = Store(database)
    now = datetime(2026, 3, 2, tzinfo=UTC)
    store.ingest([incoming("e1", customer={"id": "guest-1", "email": EMAIL})], now)
    store.ingest([incoming("e2", customer={"id": "c-7", "email": EMAIL, "phone": PHONE})], now)
    gone = store.forget("8 (999) 000-11-22".replace("8 ", "+7 "), now)  # the phone as a person types it
    assert gone is not None and gone.customer_id in ("c-7", "guest-1") and gone.events == 2
    assert store.find_customer("guest-1") is None and store.find_customer("c-7") is None
    assert store.forget(EMAIL, now) is None
    store.close()


def test_forget_ends_the_open_visits_of_the_customers_browsers(database: Path | str) -> None:
    from datetime import timedelta

    from boomerang.model import ProfileUpdate

    store = Store(database)
    now = datetime(2026, 3, 2, tzinfo=UTC)
    store.ingest([incoming("e1", customer={"id": "c-7", "email": EMAIL})], now)
    store.visit("site", "browser-1", timedelta(minutes=10), now)
    with store.db.atomic():  # the browser identified as c-7, as a signed identify does
        store._resolve_claim(ProfileUpdate(id="c-7", visitor="browser-1"), "2026-03-02T00:00:00Z", None)
    assert store.db.execute("SELECT count(*) FROM jobs WHERE kind = 'visit'").fetchone()[0] == 1
    store.forget(EMAIL, now)
    # No `site.left` will name that browser and start a profile for it again.
    assert store.db.execute("SELECT count(*) FROM jobs WHERE kind = 'visit'").fetchone()[0] == 0
    store.close()


def test_an_erased_event_keeps_only_totals_and_currencies() -> None:
    data = {
        "order": {"id": "1001", "total": 99.5, "currency": "EUR", "items": [{"name": "Bicycle"}]},
        "cart": {"url": "https://shop.example/c", "total": True, "currency": "X" * 40},
        "note": "call me at +79990001122",
    }
    assert kept_data(data) == {"order": {"total": 99.5, "currency": "EUR"}}


@pytest.mark.sqlite_only
def test_forget_waits_for_a_write_under_way_and_then_erases(tmp_path: Path) -> None:
    """Another process (the daemon) is writing: forget waits for its lock instead of failing on
    a snapshot the other write made stale (SQLITE_BUSY_SNAPSHOT)."""
    database = tmp_path / "b.db"
    store = Store(database)
    now = datetime(2026, 3, 2, tzinfo=UTC)
    store.ingest([incoming("e1", customer={"id": "c-1", "email": EMAIL})], now)
    store.ingest([incoming("e2", customer={"id": "c-2", "email": "other@example.com"})], now)
    writer = sqlite3.connect(database, isolation_level=None, check_same_thread=False)
    writer.execute("BEGIN IMMEDIATE")
    writer.execute("UPDATE customers SET name = 'Olga' WHERE id = 'c-2'")
    committed = threading.Timer(0.5, lambda: writer.execute("COMMIT"))
    committed.start()
    try:
        gone = store.forget(EMAIL, now)  # reaches the database while the write is under way
    finally:
        committed.join()
        writer.close()
    assert gone is not None and gone.customer_id == "c-1"
    with sqlite3.connect(database) as db:
        assert db.execute("SELECT id, name FROM customers").fetchall() == [("c-2", "Olga")]
    store.close()


def test_forget_removes_its_outbox_files_by_name_old_and_new_and_no_others(tmp_path: Path) -> None:
    names = [
        "20261207T101500Z-email-c42-m-1.eml",
        "20261207T101500Z-sms-c42-m-1.json",  # the same message id over another channel stays
        "20261207T101600Z-email-c43-x-m-1.eml",  # another message whose id ends like this one's
        "email-m-1.eml",  # written before names had a time and a customer
        "email-m-10.eml",
        "notes.txt",
        "20261207T101500Z-my-crm-c42-m-2.json",  # a plugin's channel with a `-` in its name
    ]
    for name in names:
        (tmp_path / name).write_text("x")
    assert remove_outbox_files(tmp_path, [("email", "m-1"), ("my-crm", "m-2")]) == 3
    assert sorted(path.name for path in tmp_path.iterdir()) == [
        "20261207T101500Z-sms-c42-m-1.json",
        "20261207T101600Z-email-c43-x-m-1.eml",
        "email-m-10.eml",
        "notes.txt",
    ]


def test_a_file_name_never_shows_an_email_address_or_a_phone() -> None:
    assert customer_token("c42") == "c42" and customer_token("c-42") == "c_42"
    for personal in (EMAIL, PHONE, "Anna Petrova", "x" * 40, "../etc"):
        token = customer_token(personal)
        assert len(token) == 11 and token.startswith("h") and token[1:].isalnum()
    assert customer_token(EMAIL) != customer_token(PHONE)
