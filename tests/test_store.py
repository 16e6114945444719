"""The SQLite store on a real file: idempotent ingestion, identity resolution, merges, migrations."""

from __future__ import annotations

import inspect
import json
import math
import sqlite3
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from boomerang.feedback import Effect, effect
from boomerang.ingest import parse_event
from boomerang.model import JournalEntry, Journey
from boomerang.plugin_manager import installed_address_fields
from boomerang.profiles import PROFILE_FIELDS, merged, renewed_channels
from boomerang.store import MIGRATIONS, JobQueue, Store, StoreError
from conftest import incoming, t

RECEIVED = datetime(2026, 3, 5, 12, 0, tzinfo=UTC)
PHONE = "+79990001122"


def subscription(endpoint: str, auth: str) -> dict[str, Any]:
    return {"endpoint": endpoint, "expirationTime": None, "keys": {"p256dh": "BNcRd-key", "auth": auth}}


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "data" / "boomerang.db"


@pytest.fixture
def store(database: Path | str) -> Iterator[Store]:
    store = Store(database)
    yield store
    store.close()


def identity_owners(store: Store) -> dict[tuple[str, str], str]:
    rows = store.db.execute("SELECT kind, value, customer_id FROM identities").fetchall()
    return {(kind, value): owner for kind, value, owner in rows}


# idempotency


def test_same_event_id_twice_in_one_batch_is_stored_once(store: Store) -> None:
    first = incoming("e-1", id="c-1")
    again = incoming("e-1", id="c-2", email="other@example.com")
    stored = store.ingest([first, again], RECEIVED)
    assert stored == [first]
    assert store.counts() == {"customers": 1, "events": 1}
    assert store.find_customer("other@example.com") is None  # the duplicate was not acted on


def test_same_event_id_across_batches_is_stored_once(store: Store) -> None:
    assert [e.id for e in store.ingest([incoming("e-1", id="c-1")], RECEIVED)] == ["e-1"]
    assert store.ingest([incoming("e-1", id="c-1")], RECEIVED) == []
    mixed = store.ingest([incoming("e-1", id="c-1"), incoming("e-2", id="c-1")], RECEIVED)
    assert [e.id for e in mixed] == ["e-2"]
    assert store.counts() == {"customers": 1, "events": 2}
    assert [e["id"] for e in store.events_of("c-1")] == ["e-1", "e-2"]


def test_stored_event_keeps_its_fields(store: Store) -> None:
    event = incoming("e-1", "wishlist.added", "2026-03-02T13:00:00+03:00", data={"sku": "B-1"}, id="c-1")
    event.source = "shopify"
    [stored] = store.ingest([event], RECEIVED)
    assert stored.customer_id == "c-1"
    assert store.events_of("c-1") == [
        {
            "id": "e-1",
            "type": "wishlist.added",
            "at": "2026-03-02T10:00:00.000000Z",
            "data": {"sku": "B-1"},
            "source": "shopify",
        }
    ]


# identity resolution


def test_anonymous_customer_takes_the_shop_id_when_it_arrives(store: Store) -> None:
    [first] = store.ingest([incoming("e-1", email="Anna@Example.com")], RECEIVED)
    anon_id = first.customer_id
    assert anon_id is not None and anon_id.startswith("anon-")

    [second] = store.ingest([incoming("e-2", "order.placed", id="c-42", email="anna@example.com")], RECEIVED)
    assert second.customer_id == "c-42"
    assert store.counts() == {"customers": 1, "events": 2}
    assert store.customer(anon_id) is None
    customer = store.customer("c-42")
    assert customer is not None
    assert (customer.id, customer.email, customer.orders_count) == ("c-42", "anna@example.com", 1)
    assert [e["id"] for e in store.events_of("c-42")] == ["e-1", "e-2"]
    assert store.events_of(anon_id) == []
    assert set(identity_owners(store).values()) == {"c-42"}


def test_find_customer_by_email_old_anonymous_id_and_phone(store: Store) -> None:
    [first] = store.ingest([incoming("e-1", email="anna@example.com")], RECEIVED)
    anon_id = first.customer_id
    assert anon_id is not None
    store.ingest([incoming("e-2", id="c-42", email="anna@example.com", phone="+7 (999) 000-11-22")], RECEIVED)
    for identity in ("c-42", anon_id, "anna@example.com", " ANNA@example.COM ", PHONE):
        found = store.find_customer(identity)
        assert found is not None, identity
        assert found.id == "c-42", identity
    assert store.find_customer("nobody@example.com") is None
    assert store.find_customer("+70000000000") is None


def test_customer_by_telegram_chat_id_only(store: Store) -> None:
    [event] = store.ingest([incoming("e-1", telegram_chat_id="123456789")], RECEIVED)
    again = store.ingest([incoming("e-2", telegram_chat_id="123456789", name="Anna")], RECEIVED)
    assert again[0].customer_id == event.customer_id
    assert store.counts()["customers"] == 1
    customer = store.find_customer("123456789")
    assert customer is not None
    assert (customer.telegram_chat_id, customer.name) == ("123456789", "Anna")


def test_event_with_both_identities_merges_two_customers(store: Store) -> None:
    store.ingest(
        [
            incoming(
                "e-1",
                "order.placed",
                "2026-03-01T10:00:00Z",
                data={"order": {"id": "o-1", "total": 100}},
                id="c-1",
                email="anna@example.com",
                consents={"email": True},
                attributes={"tier": "gold"},
                push_subscriptions=[subscription("https://push.example/a", "auth-a")],
            )
        ],
        RECEIVED,
    )
    [by_phone] = store.ingest(
        [
            incoming(
                "e-2",
                "order.placed",
                "2026-03-02T09:00:00Z",
                data={"order": {"id": "o-2", "total": 50.5}},
                phone=PHONE,
                name="Anna",
                consents={"sms": True},
                attributes={"tier": "silver", "city": "Moscow"},
                push_subscriptions=[subscription("https://push.example/b", "auth-b")],
            )
        ],
        RECEIVED,
    )
    anon_id = by_phone.customer_id
    assert anon_id is not None and anon_id != "c-1"
    assert store.counts() == {"customers": 2, "events": 2}
    created_first = store.customer("c-1").created_at  # type: ignore[union-attr]

    [both] = store.ingest(
        [incoming("e-3", "product.viewed", "2026-03-03T08:00:00Z", id="c-1", phone=PHONE)],
        datetime(2026, 3, 6, tzinfo=UTC),
    )
    assert both.customer_id == "c-1"
    assert store.counts() == {"customers": 1, "events": 3}
    assert store.customer(anon_id) is None
    assert [e["id"] for e in store.events_of("c-1")] == ["e-1", "e-2", "e-3"]
    assert store.events_of(anon_id) == []
    assert set(identity_owners(store).values()) == {"c-1"}

    merged = store.customer("c-1")
    assert merged is not None
    assert (merged.email, merged.phone, merged.name) == ("anna@example.com", PHONE, "Anna")
    assert merged.consents == {"email": True, "sms": True}
    assert merged.attributes == {"tier": "silver", "city": "Moscow"}  # the later value wins
    assert sorted(s["endpoint"] for s in merged.push_subscriptions) == [
        "https://push.example/a",
        "https://push.example/b",
    ]
    assert merged.orders_count == 2
    assert merged.revenue == pytest.approx(150.5)
    assert merged.last_order_at == t("2026-03-02T09:00:00")
    assert merged.last_seen_at == t("2026-03-03T08:00:00")
    assert merged.created_at == created_first
    for identity in (anon_id, PHONE, "anna@example.com"):
        assert store.find_customer(identity).id == "c-1"  # type: ignore[union-attr]


def test_merge_keeps_a_later_opt_out(store: Store) -> None:
    store.ingest([incoming("e-1", at="2026-03-01T10:00:00Z", id="c-1", consents={"email": True})], RECEIVED)
    store.ingest(
        [incoming("e-2", at="2026-03-02T10:00:00Z", email="anna@example.com", consents={"email": False})],
        RECEIVED,
    )
    store.ingest([incoming("e-3", at="2026-03-03T10:00:00Z", id="c-1", email="anna@example.com")], RECEIVED)
    merged = store.customer("c-1")
    assert merged is not None
    assert merged.consents == {"email": False}


def test_two_anonymous_customers_merge_and_take_the_shop_id(store: Store) -> None:
    [a] = store.ingest([incoming("e-1", email="anna@example.com")], RECEIVED)
    [b] = store.ingest([incoming("e-2", phone=PHONE)], RECEIVED)
    assert a.customer_id != b.customer_id
    [c] = store.ingest([incoming("e-3", id="c-7", email="anna@example.com", phone=PHONE)], RECEIVED)
    assert c.customer_id == "c-7"
    assert store.counts() == {"customers": 1, "events": 3}
    for identity in (a.customer_id, b.customer_id, "anna@example.com", PHONE):
        assert store.find_customer(identity).id == "c-7"  # type: ignore[arg-type, union-attr]


# profile updates


def test_order_placed_updates_order_summary(store: Store) -> None:
    store.ingest(
        [
            incoming("o-2", "order.placed", "2026-03-04T10:00:00Z", data={"order": {"total": 20}}, id="c-1"),
            # an older order that arrives late must not move last_order_at back
            incoming(
                "o-1", "order.placed", "2026-03-01T10:00:00Z", data={"order": {"total": 79.9}}, id="c-1"
            ),
            incoming(
                "o-3", "order.placed", "2026-03-02T10:00:00Z", data={"order": {"total": "n/a"}}, id="c-1"
            ),
        ],
        RECEIVED,
    )
    customer = store.customer("c-1")
    assert customer is not None
    assert customer.orders_count == 3
    assert customer.revenue == pytest.approx(99.9)
    assert customer.last_order_at == t("2026-03-04T10:00:00")
    assert customer.last_seen_at is None  # an order is not site activity


def test_product_viewed_updates_last_seen(store: Store) -> None:
    store.ingest([incoming("v-2", "product.viewed", "2026-03-03T10:00:00Z", id="c-1")], RECEIVED)
    store.ingest([incoming("v-1", "product.viewed", "2026-03-01T10:00:00Z", id="c-1")], RECEIVED)
    store.ingest([incoming("x-1", "review.submitted", "2026-03-09T10:00:00Z", id="c-1")], RECEIVED)
    customer = store.customer("c-1")
    assert customer is not None
    assert customer.last_seen_at == t("2026-03-03T10:00:00")
    assert (customer.orders_count, customer.last_order_at) == (0, None)


def test_later_profile_values_update_the_profile(store: Store) -> None:
    store.ingest(
        [incoming("e-1", id="c-1", name="Anna", locale="ru", consents={"email": True, "sms": True})],
        RECEIVED,
    )
    store.ingest(
        [incoming("e-2", id="c-1", name="Anna K.", attributes={"vip": True}, consents={"sms": False})],
        RECEIVED,
    )
    customer = store.customer("c-1")
    assert customer is not None
    assert (customer.name, customer.locale) == ("Anna K.", "ru")
    assert customer.consents == {"email": True, "sms": False}
    assert customer.attributes == {"vip": True}


def test_push_subscriptions_are_deduplicated_by_endpoint(store: Store) -> None:
    store.ingest(
        [
            incoming(
                "e-1",
                id="c-1",
                push_subscriptions=[
                    subscription("https://push.example/a", "old"),
                    subscription("https://push.example/a", "old"),
                ],
            )
        ],
        RECEIVED,
    )
    customer = store.customer("c-1")
    assert customer is not None
    assert customer.push_subscriptions == [subscription("https://push.example/a", "old")]

    store.ingest(
        [
            incoming(
                "e-2",
                id="c-1",
                push_subscriptions=[
                    subscription("https://push.example/a", "new"),
                    subscription("https://push.example/b", "b"),
                ],
            )
        ],
        RECEIVED,
    )
    customer = store.customer("c-1")
    assert customer is not None
    assert customer.push_subscriptions == [
        subscription("https://push.example/a", "new"),
        subscription("https://push.example/b", "b"),
    ]


# migrations and the file


@pytest.mark.sqlite_only
def test_new_file_is_migrated_to_the_latest_schema(store: Store, db_path: Path) -> None:
    latest = MIGRATIONS[-1][0]
    assert store.schema_version() == latest
    assert store.migrate() == []
    with sqlite3.connect(db_path) as raw:
        assert raw.execute("PRAGMA user_version").fetchone()[0] == latest
        tables = {row[0] for row in raw.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert {"customers", "identities", "events"} <= tables


def test_reopening_applies_no_migration(database: Path | str) -> None:
    Store(database).close()
    reopened = Store(database)
    try:
        assert reopened.schema_version() == MIGRATIONS[-1][0]
        assert reopened.migrate() == []
    finally:
        reopened.close()


@pytest.mark.sqlite_only
def test_journal_mode_is_wal(store: Store, db_path: Path) -> None:
    assert store.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    raw = sqlite3.connect(db_path)  # WAL is a property of the file, seen by every connection
    try:
        assert raw.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    finally:
        raw.close()


@pytest.mark.sqlite_only
def test_the_checkpoints_thread_copies_the_wal_into_the_file_and_a_commit_does_not(
    store: Store, db_path: Path
) -> None:
    assert store.db.execute("PRAGMA wal_autocheckpoint").fetchone()[0] == 0
    before = db_path.stat().st_size
    lines = [JournalEntry(RECEIVED, "drop", f"c-{n}", "x" * 2000, "s") for n in range(2000)]
    with store.transaction():
        store.add_journal_entries(lines)
    deadline = time.monotonic() + 60  # a generous bound: the thread looks twice a second
    while db_path.stat().st_size == before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert db_path.stat().st_size > before


@pytest.mark.sqlite_only
def test_closing_the_store_leaves_no_wal_behind(db_path: Path) -> None:
    store = Store(db_path)
    with store.transaction():
        store.add_journal_entries([JournalEntry(RECEIVED, "drop", "c-1", "why", "s")])
    store.close()
    assert not Path(f"{db_path}-wal").exists()
    again = Store(db_path)
    try:
        assert [entry.reason for entry in again.journal()] == ["why"]
    finally:
        again.close()


@pytest.mark.sqlite_only
def test_database_from_a_newer_boomerang_is_refused(db_path: Path) -> None:
    newer = MIGRATIONS[-1][0] + 1
    db_path.parent.mkdir(parents=True)
    raw = sqlite3.connect(db_path)
    raw.execute(f"PRAGMA user_version = {newer}")
    raw.close()
    with pytest.raises(StoreError) as excinfo:
        Store(db_path)
    message = str(excinfo.value)
    assert f"the database is at schema {newer}, newer than this Boomerang knows ({newer - 1})" in message
    assert "upgrade Boomerang or restore a backup" in message
    raw = sqlite3.connect(db_path)
    try:  # left untouched
        assert raw.execute("PRAGMA user_version").fetchone()[0] == newer
        assert raw.execute("SELECT count(*) FROM sqlite_master WHERE type = 'table'").fetchone()[0] == 0
    finally:
        raw.close()


def test_data_survives_close_and_reopen(database: Path | str) -> None:
    store = Store(database)
    [anon] = store.ingest([incoming("e-1", email="anna@example.com")], RECEIVED)
    store.ingest(
        [incoming("e-2", "order.placed", data={"order": {"total": 42}}, id="c-42", email="anna@example.com")],
        RECEIVED,
    )
    store.close()

    reopened = Store(database)
    try:
        assert reopened.counts() == {"customers": 1, "events": 2}
        customer = reopened.find_customer(anon.customer_id)  # type: ignore[arg-type]
        assert customer is not None
        assert (customer.id, customer.email, customer.orders_count, customer.revenue) == (
            "c-42",
            "anna@example.com",
            1,
            42,
        )
        assert [e["id"] for e in reopened.events_of("c-42")] == ["e-1", "e-2"]
        assert reopened.ingest([incoming("e-2", id="c-42")], RECEIVED) == []  # still a duplicate
    finally:
        reopened.close()


async def test_run_calls_the_store_on_its_own_thread(store: Store) -> None:
    stored = await store.run(store.ingest, [incoming("e-1", id="c-1")], RECEIVED)
    assert [e.customer_id for e in stored] == ["c-1"]
    assert await store.run(store.counts) == {"customers": 1, "events": 1}


def test_a_new_address_undoes_known_bad_for_that_channel(store: Store) -> None:
    store.ingest([incoming("e-1", id="c-1", email="old@example.com", phone=PHONE)], RECEIVED)
    store.mark_unreachable("c-1", "email", "550 no such user")
    store.mark_unreachable("c-1", "sms", "21211")
    store.ingest([incoming("e-2", at="2026-03-03T10:00:00Z", id="c-1", email="new@example.com")], RECEIVED)
    customer = store.customer("c-1")
    assert customer is not None and customer.unreachable == {"sms": "21211"}


def test_an_explicit_subscribe_lifts_an_opt_out_and_known_bad_on_that_channel(store: Store) -> None:
    store.ingest([incoming("e-1", id="c-1", telegram_chat_id="555")], RECEIVED)
    store.mark_unreachable("c-1", "telegram", "403 blocked")
    store.opt_out("c-1", ["telegram", "email"], RECEIVED)
    again = parse_event(
        {
            "id": "e-2",
            "type": "customer.updated",
            "at": "2026-03-04T10:00:00Z",
            "customer": {"id": "c-1", "telegram_chat_id": "555"},
            "data": {"subscribed": ["telegram"]},
        }
    )
    store.ingest([again], RECEIVED)
    customer = store.customer("c-1")
    assert customer is not None
    assert customer.unreachable == {} and list(customer.opt_outs) == ["email"]


# the rules above the store, and the job-queue seam


@pytest.mark.parametrize(
    ("event_type", "data", "expected"),
    [
        ("message.delivered", {}, Effect("delivered", ("sending", "sent", "unknown"), "delivered_at")),
        ("message.failed", {"reason": "failed", "detail": "x"}, Effect("failed", detail="x")),
        (
            "message.failed",
            {"reason": "address_invalid", "detail": "550"},
            Effect("failed", detail="550", unreachable="550"),
        ),
        (
            "message.failed",
            {"reason": "address_invalid"},
            Effect("failed", detail="", unreachable="address invalid"),
        ),
        (
            "message.failed",
            {"reason": "opted_out", "detail": "21610"},
            Effect("failed", detail="21610", opt_out=("sms",)),
        ),
        ("message.opened", {}, Effect(stamp="opened_at")),
        ("message.clicked", {}, Effect(stamp="clicked_at")),
        ("message.unsubscribed", {}, Effect(opt_out=("sms",))),
        ("message.unsubscribed", {"channels": ["all", None]}, Effect(opt_out=("all",))),
        ("message.sent", {}, Effect()),
    ],
)
def test_what_each_feedback_event_changes(event_type: str, data: dict[str, Any], expected: Effect) -> None:
    assert effect(event_type, data, "sms") == expected


def test_a_failure_because_of_stop_opts_out_once_recorded(store: Store) -> None:
    store.ingest([incoming("e-1", id="c-1", phone=PHONE)], RECEIVED)
    store.insert_message(
        {
            "id": "m-1",
            "customer_id": "c-1",
            "template": "t",
            "category": "trigger",
            "channel": "sms",
            "status": "sent",
            "created_at": "2026-03-05T12:00:00Z",
            "sent_at": "2026-03-05T12:00:00Z",
        }
    )
    known, event = store.record_feedback(
        "m-1", "message.failed", {"reason": "opted_out", "detail": "21610"}, None, RECEIVED
    )
    assert known and event is not None
    customer = store.customer("c-1")
    assert customer is not None and list(customer.opt_outs) == ["sms"] and customer.unreachable == {}
    record = store.message("m-1")
    assert record is not None and (record["status"], record["detail"]) == ("failed", "21610")
    # the provider retries its callback: stored and applied once
    assert store.record_feedback("m-1", "message.failed", {"reason": "opted_out"}, None, RECEIVED) == (
        True,
        None,
    )


def test_the_store_is_a_job_queue_with_the_same_signatures() -> None:
    for name, member in vars(JobQueue).items():
        if callable(member) and not name.startswith("_"):
            assert inspect.signature(getattr(Store, name)) == inspect.signature(member), name


def test_merging_profiles_is_a_plain_function() -> None:
    def row(updated_at: str, **values: Any) -> dict[str, Any]:
        base = {name: None for name in PROFILE_FIELDS} | {
            "consents": "{}",
            "attributes": "{}",
            "push_subscriptions": "[]",
            "addresses": "{}",
            "opt_outs": "{}",
            "unreachable": "{}",
            "orders_count": 0,
            "revenue": 0.0,
            "last_order_at": None,
            "last_seen_at": None,
            "created_at": "2026-01-01T00:00:00Z",
        }
        return base | {"updated_at": updated_at} | values

    older = row("2026-03-01T00:00:00Z", email="a@example.com", consents='{"email": true}', orders_count=1)
    newer = row(
        "2026-03-02T00:00:00Z", phone=PHONE, opt_outs='{"email": "2026-03-02T00:00:00Z"}', orders_count=2
    )
    merged_ = merged(older, newer)
    assert (merged_["email"], merged_["phone"], merged_["orders_count"]) == ("a@example.com", PHONE, 3)
    assert json.loads(merged_["opt_outs"]) == {"email": "2026-03-02T00:00:00Z"}
    assert merged_["updated_at"] == "2026-03-02T00:00:00Z" and merged(newer, older) == merged_


def test_the_address_renewal_table_follows_the_channels_declared_fields() -> None:
    fields = installed_address_fields()
    assert fields["whatsapp"] == ("whatsapp", "phone") and fields["sms"] == ("phone",)
    stored = {name: None for name in PROFILE_FIELDS} | {"phone": PHONE, "addresses": "{}"}

    def renewed(refused: frozenset[str] = frozenset(), **profile: Any) -> set[str]:
        table = renewed_channels(stored, incoming("e-1", id="c-1", **profile), set(refused), fields)
        return {name for name, new in table.items() if new}

    # The WhatsApp address is the WhatsApp number, else the phone: the stored phone given as
    # a WhatsApp number is no new address; a new phone is one for SMS and WhatsApp alike.
    assert renewed(whatsapp=PHONE) == set()
    assert renewed(phone="+79990003344") == {"sms", "whatsapp"}
    assert renewed(whatsapp="+79990003344", email="a@example.com") == {"whatsapp", "email"}
    # A phone the store refuses (another customer's, in a claim) is not written, so it renews
    # nothing; before the channels declared their fields WhatsApp counted it as new.
    assert renewed(frozenset({"phone"}), phone="+79990003344") == set()
    assert renewed(addresses={"pigeon": "coop-7"}) == {"pigeon"}  # no fields: the address map


def test_customers_and_journeys_are_read_by_the_batch_and_a_damaged_row_is_set_aside_alone(
    store: Store,
) -> None:
    store.ingest([incoming(f"e-{n}", id=f"c-{n}", email=f"c{n}@example.com") for n in range(3)], RECEIVED)
    for n in range(3):
        journey = Journey(f"j-{n}", "welcome", f"c-{n}", "", "active", False, "0", 1, {"n": n}, RECEIVED)
        store.insert_journey(journey, RECEIVED)
    store.db.execute("UPDATE customers SET attributes = '{\"vip\": tru' WHERE id = 'c-1'")
    store.db.execute("UPDATE journeys SET context = 'not json' WHERE id = 'j-2'")

    customers = store.customers(["c-0", "c-1", "c-2", "c-nobody"])
    journeys = store.journeys(["j-0", "j-1", "j-2", "j-nowhere"])

    assert {key: customer.email for key, customer in customers.items()} == {
        "c-0": "c0@example.com",
        "c-2": "c2@example.com",
    }
    assert customers["c-0"] == store.customer("c-0")
    assert {key: journey.context for key, journey in journeys.items()} == {"j-0": {"n": 0}, "j-1": {"n": 1}}
    assert journeys["j-1"] == store.journey("j-1")
    quarantined = set(store.db.execute("SELECT table_name, row_id FROM quarantine").fetchall())
    assert quarantined == {("customers", "c-1"), ("journeys", "j-2")}


def test_a_batch_of_sends_stores_each_message_sent_event_once_in_order(store: Store) -> None:
    store.ingest([incoming("e-1", id="c-1", email="c1@example.com")], RECEIVED)
    for n in range(3):
        store.insert_message(
            {
                "id": f"m-{n}",
                "customer_id": "c-1",
                "template": "t",
                "category": "trigger",
                "channel": "email",
                "status": "sent",
                "created_at": "2026-03-05T12:00:00Z",
                "sent_at": "2026-03-05T12:00:00Z",
            }
        )
    store.record_sent(["m-2", "m-0", "m-unknown"], RECEIVED)
    store.record_sent(["m-0", "m-1"], RECEIVED)  # m-0 again: a retry after a crash

    stored = store.db.execute(
        "SELECT id, customer_id, data FROM events WHERE type = 'message.sent' ORDER BY rowid"
    )
    found = [(event_id, customer, json.loads(data)["message"]["id"]) for event_id, customer, data in stored]
    assert found == [
        ("message.sent:m-2", "c-1", "m-2"),
        ("message.sent:m-0", "c-1", "m-0"),
        ("message.sent:m-1", "c-1", "m-1"),
    ]
    assert [row["status"] for row in store.messages(["m-0", "m-1", "m-2"]).values()] == ["sent"] * 3


@pytest.mark.sqlite_only  # SQLite's one statement over a JSON array; PostgreSQL's is executemany
@pytest.mark.parametrize("values", [[0.1 + 0.2, 1e-300, 123456789.12345678, -0.0, 7, None], [2.5, math.inf]])
def test_lines_written_at_once_read_back_as_one_at_a_time_would(store: Store, values: list[Any]) -> None:
    """`add_journal_entries` sends its rows as one JSON array: text and every digit of a float
    come back as bound one at a time; an infinite float, which JSON cannot hold, falls back."""
    reasons = ['"quoted" and \\ back', "new\nline\ttab", "ünïcode ✓ 🙂", "\u2028 and \x01"]

    def entries(scenario: str) -> list[JournalEntry]:
        return [
            JournalEntry(RECEIVED, "goal", "c-1", reason, scenario=scenario, value=value, variant=None)
            for reason in reasons
            for value in values
        ]

    store.add_journal_entries(entries("at-once"))
    for entry in entries("one-by-one"):
        store.add_journal(entry)
    read = (
        "SELECT at, kind, customer_id, reason, value, typeof(value), variant FROM journal"
        " WHERE scenario = ? ORDER BY id"
    )
    at_once = store.db.execute(read, ["at-once"]).fetchall()
    assert at_once == store.db.execute(read, ["one-by-one"]).fetchall()
    assert [row[3] for row in at_once] == [reason for reason in reasons for _ in values]
