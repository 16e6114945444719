"""The database: schema, numbered migrations, and every query. No other module speaks SQL.

One SQLite file in WAL mode, reached through sqlite-utils. SQLite is synchronous, so the
daemon funnels every call through one worker thread (`Store.run`), the way datasette funnels
its writes, and the event loop never waits on the disk.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import secrets
import sqlite3
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sqlite_utils import Database

from boomerang.bodies import MAX_VALUE_DEPTH, nesting
from boomerang.clock import parse_time, to_iso
from boomerang.contact_plan import Sent
from boomerang.ingest import EventError, normalise_email, normalise_phone
from boomerang.model import MAX_PUSH_SUBSCRIPTIONS, Customer, Event, Job, JournalEntry, Journey, ProfileUpdate
from boomerang.private_files import create_private

T = TypeVar("T")
log = logging.getLogger(__name__)

# Each migration runs once, in order, inside a transaction; PRAGMA user_version records the
# last one applied. Never edit a published migration: add the next number.
MIGRATIONS: list[tuple[int, str, str]] = [
    (
        1,
        "customers, identities and events",
        """
        CREATE TABLE customers (
            id TEXT PRIMARY KEY,
            email TEXT, phone TEXT, name TEXT, locale TEXT, timezone TEXT,
            birthday TEXT, gender TEXT, telegram_chat_id TEXT, whatsapp TEXT,
            consents TEXT NOT NULL DEFAULT '{}',
            attributes TEXT NOT NULL DEFAULT '{}',
            push_subscriptions TEXT NOT NULL DEFAULT '[]',
            orders_count INTEGER NOT NULL DEFAULT 0,
            revenue REAL NOT NULL DEFAULT 0,
            last_order_at TEXT, last_seen_at TEXT,
            created_at TEXT NOT NULL, updated_at TEXT NOT NULL
        );
        CREATE TABLE identities (
            kind TEXT NOT NULL, value TEXT NOT NULL, customer_id TEXT NOT NULL,
            PRIMARY KEY (kind, value)
        );
        CREATE INDEX identities_customer ON identities (customer_id);
        CREATE TABLE events (
            id TEXT PRIMARY KEY,
            type TEXT NOT NULL,
            at TEXT NOT NULL,
            customer_id TEXT NOT NULL,
            data TEXT NOT NULL,
            source TEXT NOT NULL,
            received_at TEXT NOT NULL,
            handled INTEGER NOT NULL DEFAULT 0
        );
        CREATE INDEX events_customer_at ON events (customer_id, at);
        CREATE INDEX events_unhandled ON events (received_at) WHERE handled = 0;
        """,
    ),
    (
        2,
        "journeys, jobs, messages and the journal",
        """
        CREATE TABLE journeys (
            id TEXT PRIMARY KEY,
            scenario TEXT NOT NULL,
            customer_id TEXT NOT NULL,
            entry_key TEXT NOT NULL,
            status TEXT NOT NULL,
            holdout INTEGER NOT NULL DEFAULT 0,
            cursor TEXT,
            waiting_for TEXT,
            version INTEGER NOT NULL DEFAULT 0,
            context TEXT NOT NULL DEFAULT '{}',
            entered_at TEXT NOT NULL,
            updated_at TEXT NOT NULL,
            ended_at TEXT,
            UNIQUE (scenario, customer_id, entry_key)
        );
        CREATE INDEX journeys_customer ON journeys (customer_id, status);
        CREATE INDEX journeys_scenario ON journeys (scenario, status);
        CREATE TABLE jobs (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            kind TEXT NOT NULL,
            due_at REAL NOT NULL,
            priority INTEGER NOT NULL DEFAULT 0,
            journey_id TEXT,
            version INTEGER,
            key TEXT UNIQUE,
            payload TEXT NOT NULL DEFAULT '{}',
            lease_until REAL,
            attempts INTEGER NOT NULL DEFAULT 0
        );
        CREATE INDEX jobs_due ON jobs (due_at, priority DESC);
        CREATE INDEX jobs_journey ON jobs (journey_id);
        CREATE INDEX jobs_leased ON jobs (lease_until) WHERE lease_until IS NOT NULL;
        CREATE TABLE messages (
            id TEXT PRIMARY KEY,
            journey_id TEXT,
            customer_id TEXT NOT NULL,
            scenario TEXT,
            step TEXT,
            template TEXT NOT NULL,
            category TEXT NOT NULL,
            candidates TEXT,
            channel TEXT,
            status TEXT NOT NULL,
            promo TEXT,
            expires_at TEXT,
            variant TEXT,
            context TEXT NOT NULL DEFAULT '{}',
            detail TEXT,
            created_at TEXT NOT NULL,
            sent_at TEXT
        );
        CREATE INDEX messages_customer ON messages (customer_id, created_at);
        CREATE TABLE journal (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            at TEXT NOT NULL,
            kind TEXT NOT NULL,
            customer_id TEXT NOT NULL,
            scenario TEXT,
            journey_id TEXT,
            step TEXT,
            template TEXT,
            channel TEXT,
            message_id TEXT,
            reason TEXT NOT NULL,
            value REAL,
            variant TEXT
        );
        CREATE INDEX journal_customer ON journal (customer_id, at);
        CREATE INDEX journal_scenario ON journal (scenario, kind, at);
        """,
    ),
    (
        3,
        "delivery receipts, tracked links, opt-outs and known bad addresses",
        """
        ALTER TABLE messages ADD COLUMN links TEXT;
        ALTER TABLE messages ADD COLUMN provider_id TEXT;
        ALTER TABLE messages ADD COLUMN delivered_at TEXT;
        ALTER TABLE messages ADD COLUMN opened_at TEXT;
        ALTER TABLE messages ADD COLUMN clicked_at TEXT;
        CREATE INDEX messages_provider ON messages (provider_id) WHERE provider_id IS NOT NULL;
        ALTER TABLE customers ADD COLUMN opt_outs TEXT NOT NULL DEFAULT '{}';
        ALTER TABLE customers ADD COLUMN unreachable TEXT NOT NULL DEFAULT '{}';
        """,
    ),
    (
        4,
        "fallback messages and the plan's view of sent messages",
        """
        ALTER TABLE messages ADD COLUMN fallback_of TEXT;
        ALTER TABLE messages ADD COLUMN tried TEXT;
        CREATE INDEX messages_sent ON messages (customer_id, sent_at) WHERE sent_at IS NOT NULL;
        CREATE INDEX messages_journey_step ON messages (journey_id, step);
        """,
    ),
    (
        5,
        "rows that cannot be read back, set aside",
        """
        CREATE TABLE quarantine (
            table_name TEXT NOT NULL,
            row_id TEXT NOT NULL,
            reason TEXT NOT NULL,
            found_at TEXT NOT NULL,
            content TEXT,
            PRIMARY KEY (table_name, row_id)
        );
        """,
    ),
    (
        6,
        "addresses on channels that plugins add, keyed by channel",
        """
        ALTER TABLE customers ADD COLUMN addresses TEXT NOT NULL DEFAULT '{}';
        """,
    ),
]

# What decoding a damaged row raises: ValueError for a timestamp, JSON, number or timezone that
# does not read back (the decoders below turn every such finding into one), and what `json.loads`
# raises on absurd input. Anything else is a bug and stays loud.
UNREADABLE = (ValueError, OverflowError, RecursionError)

# How a row that cannot be read back is taken out of the work that met it, so that it is not
# met again: an event counts as handled, a journey and a message stop, a job leaves the queue
# (its content is kept in `quarantine`). A customer stays: reads of it keep skipping it.
SET_ASIDE = {
    "events": "UPDATE events SET handled = 1 WHERE id = ?",
    "journeys": "UPDATE journeys SET status = 'quarantined' WHERE id = ?",
    "messages": "UPDATE messages SET status = 'quarantined' WHERE id = ?",
    "jobs": "DELETE FROM jobs WHERE id = ?",
}

# Tables whose rows belong to a customer; merging two customers re-points them all.
CUSTOMER_TABLES = ("events", "identities", "journeys", "messages", "journal")

# Event types that mean the customer is on the site right now.
SITE_ACTIVITY = {"product.viewed", "category.viewed", "cart.updated", "checkout.started"}
PROFILE_FIELDS = (
    "email",
    "phone",
    "name",
    "locale",
    "timezone",
    "birthday",
    "gender",
    "telegram_chat_id",
    "whatsapp",
)

# The JSON profile columns that hold addresses: the channel-keyed map, push subscriptions.
ADDRESS_JSON = ("addresses", "push_subscriptions")

# The profile field of each identity kind but `id`.
IDENTITY_FIELDS = {"email": "email", "phone": "phone", "telegram": "telegram_chat_id"}


class StoreError(Exception):
    """The database cannot be used as it is (e.g. made by a newer Boomerang)."""


class Store:
    """The one SQLite database of an installation."""

    def __init__(self, path: Path | str, *, read_only: bool = False):
        """Open (and migrate) the database; `read_only` opens an existing one for reading only,
        as commands that may run beside the daemon do, and refuses one that needs migrating."""
        self.path = Path(path) if str(path) != ":memory:" else None
        if read_only:
            if self.path is None or not self.path.exists():
                raise StoreError(f"no database at {path}")
            conn = sqlite3.connect(
                f"{self.path.resolve().as_uri()}?mode=ro", uri=True, check_same_thread=False, timeout=10
            )
        else:
            if self.path:
                create_private(self.path)
            conn = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None, timeout=10)
        self.db = Database(conn)
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="store")
        self.rows_set_aside = 0  # times a row was found unreadable and set aside since opening
        if read_only:
            self._refuse_other_schema()
            return
        self.db.execute("PRAGMA journal_mode = WAL")
        # FULL: a commit acknowledged to a webhook survives a power cut, not only a crash.
        self.db.execute("PRAGMA synchronous = FULL")
        self.db.execute("PRAGMA foreign_keys = ON")
        self.migrate()

    # plumbing
    async def run(self, function: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run a store method on the store's own thread, so the event loop never blocks."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, functools.partial(function, *args, **kwargs))

    def close(self) -> None:
        """Finish pending calls and close the database."""
        self._executor.shutdown(wait=True)
        self.db.conn.close()

    def schema_version(self) -> int:
        """The number of the last migration applied."""
        return self.db.execute("PRAGMA user_version").fetchone()[0]

    def _refuse_other_schema(self) -> None:
        current, latest = self.schema_version(), MIGRATIONS[-1][0]
        if current != latest:
            self.close()
            newer = "newer" if current > latest else "older"
            raise StoreError(
                f"the database is at schema {current}, {newer} than this Boomerang's ({latest}); "
                + ("upgrade Boomerang" if current > latest else "start the daemon once to migrate it")
            )

    def _read_row(self, table: str, row_id: Any, build: Callable[[], T], content: Any = None) -> T | None:
        """`build()` a model object from a stored row, or None if the row cannot be read back.

        Such a row is set aside: recorded in `quarantine`, logged once with its id, and taken
        out of the work queues, so that one damaged row fails itself, never the loop or the
        start that met it.
        """
        try:
            return build()
        except UNREADABLE as exc:
            self._set_aside(table, str(row_id), f"{type(exc).__name__}: {exc}"[:300], content)
            return None

    def _set_aside(self, table: str, row_id: str, reason: str, content: Any) -> None:
        try:
            with self.db.atomic():
                new = self.db.execute(
                    "INSERT OR IGNORE INTO quarantine (table_name, row_id, reason, found_at, content)"
                    " VALUES (?, ?, ?, ?, ?)",
                    [table, row_id, reason, to_iso(datetime.now(UTC)), _dump_row(content)],
                ).rowcount
                if table in SET_ASIDE:
                    self.db.execute(SET_ASIDE[table], [row_id])
        except sqlite3.Error as exc:  # a read-only store (explain) still skips the row
            log.error(
                "cannot read back %s row %s (%s); skipped, not set aside: %s", table, row_id, reason, exc
            )
            return
        self.rows_set_aside += 1
        if new:
            log.error(
                "cannot read back %s row %s (%s); it is set aside in the quarantine table and skipped",
                table,
                row_id,
                reason,
            )

    def set_aside(self, customer_id: str) -> list[dict[str, Any]]:
        """A customer's rows that were set aside because they could not be read back."""
        owned = " OR ".join(
            f"(table_name = '{table}' AND row_id IN (SELECT id FROM {table} WHERE customer_id = ?))"
            for table in ("events", "journeys", "messages")
        )
        cursor = self.db.execute(
            "SELECT table_name, row_id, reason, found_at FROM quarantine"
            f" WHERE (table_name = 'customers' AND row_id = ?) OR {owned} ORDER BY found_at, rowid",
            [customer_id] * 4,
        )
        return [dict(zip(("table", "row_id", "reason", "found_at"), row, strict=True)) for row in cursor]

    def migrate(self) -> list[int]:
        """Apply the migrations this database has not had yet; returns their numbers."""
        current = self.schema_version()
        latest = MIGRATIONS[-1][0]
        if current > latest:
            self.close()
            raise StoreError(
                f"the database is at schema {current}, newer than this Boomerang knows ({latest}); "
                "upgrade Boomerang or restore a backup made before the upgrade"
            )
        applied = []
        for number, _name, sql in MIGRATIONS:
            if number <= current:
                continue
            with self.db.atomic():
                for statement in filter(str.strip, sql.split(";")):
                    self.db.execute(statement)
                self.db.execute(f"PRAGMA user_version = {number}")
            applied.append(number)
        return applied

    # events and customers
    def ingest(self, events: Iterable[Event], received_at: datetime, verified: bool = True) -> list[Event]:
        """Store events in one transaction; returns those that were new (duplicates skipped).

        Each new event's customer is found or created from its identities and updated with the
        event's profile data. The events of a verified source merge every other customer those
        identities point to; the others only claim (the merge policy, core/ingest.py): their
        customer is the one their first identity names, and a Telegram chat they name moves to
        it, while an email or phone another customer has stays with that customer.
        """
        stored = []
        now = to_iso(received_at)
        with self.db.atomic():
            for event in events:
                seen = self.db.execute("SELECT 1 FROM events WHERE id = ?", [event.id]).fetchone()
                if seen:
                    continue
                resolve = self._resolve_customer if verified else self._resolve_claim
                event.customer_id, refused = resolve(event.profile, now, _as_of(event, now))
                self._update_profile(event.customer_id, event, now, refused)
                self.db.execute(
                    "INSERT INTO events (id, type, at, customer_id, data, source, received_at)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?)",
                    [
                        event.id,
                        event.type,
                        to_iso(event.at),
                        event.customer_id,
                        json.dumps(event.data, ensure_ascii=False),
                        event.source,
                        now,
                    ],
                )
                stored.append(event)
        return stored

    def _owner(self, kind: str, value: str) -> str | None:
        row = self.db.execute(
            "SELECT customer_id FROM identities WHERE kind = ? AND value = ?", [kind, value]
        ).fetchone()
        return row[0] if row else None

    def _create_customer(self, customer_id: str | None, now: str, at: str) -> str:
        customer_id = customer_id or f"anon-{secrets.token_hex(8)}"
        self.db.execute(
            "INSERT INTO customers (id, created_at, updated_at) VALUES (?, ?, ?)", [customer_id, now, at]
        )
        self._add_identity("id", customer_id, customer_id)
        return customer_id

    def _resolve_customer(self, profile: ProfileUpdate, now: str, at: str) -> tuple[str, set[str]]:
        """A verified event's customer: every customer its identities point to, merged into one."""
        found: list[str] = []
        for kind, value in profile.identities():
            owner = self._owner(kind, value)
            if owner and owner not in found:
                found.append(owner)
        # A customer known by the shop's own id survives over an anonymous one.
        found.sort(key=lambda cid: cid.startswith("anon-"))
        if not found:
            customer_id = self._create_customer(profile.id, now, at)
        else:
            customer_id = found[0]
            for other in found[1:]:
                self._merge(other, into=customer_id)
            if profile.id and customer_id.startswith("anon-") and profile.id != customer_id:
                # An anonymous visitor has just told us who they are: take the shop's id.
                self._rename(customer_id, profile.id)
                customer_id = profile.id
        for kind, value in profile.identities():
            self._add_identity(kind, value, customer_id)
        return customer_id, set()

    def _resolve_claim(self, profile: ProfileUpdate, now: str, at: str) -> tuple[str, set[str]]:
        """An unverified event's customer, and the profile fields it may not set: never a merge.

        The customer is the one the first (strongest) identity names: the id a signed token
        gave. A chat the event names moves to that customer (the Bot API itself says the chat
        sent the token); any other identity that belongs to someone else stays there.
        """
        (kind, value), *others = profile.identities()
        customer_id = self._owner(kind, value) or self._create_customer(profile.id, now, at)
        self._add_identity(kind, value, customer_id)
        refused: set[str] = set()
        for kind, value in others:
            owner = self._owner(kind, value)
            if owner not in (None, customer_id):
                if kind != "telegram":
                    refused.add(IDENTITY_FIELDS[kind])
                    continue
                self.db.execute(
                    "UPDATE customers SET telegram_chat_id = NULL WHERE id = ? AND telegram_chat_id = ?",
                    [owner, value],
                )
            self._add_identity(kind, value, customer_id)
        return customer_id, refused

    def _add_identity(self, kind: str, value: str, customer_id: str) -> None:
        self.db.execute(
            "INSERT INTO identities (kind, value, customer_id) VALUES (?, ?, ?)"
            " ON CONFLICT (kind, value) DO UPDATE SET customer_id = excluded.customer_id",
            [kind, value, customer_id],
        )

    def _repoint(self, old: str, new: str) -> None:
        # Both customers may be in the same scenario with the same entry: the survivor's
        # journey stays, the other is ended and kept under a distinct entry key.
        self.db.execute("UPDATE OR IGNORE journeys SET customer_id = ? WHERE customer_id = ?", [new, old])
        clashing = [row[0] for row in self.db.execute("SELECT id FROM journeys WHERE customer_id = ?", [old])]
        for journey_id in clashing:
            self.db.execute("DELETE FROM jobs WHERE journey_id = ?", [journey_id])
        self.db.execute(
            "UPDATE journeys SET customer_id = ?, entry_key = entry_key || ':merged:' || ?, cursor = NULL,"
            " status = CASE status WHEN 'active' THEN 'exited' ELSE status END WHERE customer_id = ?",
            [new, old, old],
        )
        for table in CUSTOMER_TABLES:
            if table != "journeys":
                self.db.execute(f"UPDATE {table} SET customer_id = ? WHERE customer_id = ?", [new, old])

    def _rename(self, old: str, new: str) -> None:
        self.db.execute("UPDATE customers SET id = ? WHERE id = ?", [new, old])
        self._repoint(old, new)

    def _merge(self, loser: str, into: str) -> None:
        """Fold one customer into another: the later-updated profile's values win, lists join."""
        survivor, other = self.customer_row(into), self.customer_row(loser)
        if survivor is None or other is None:
            return
        # What was said last is true now: an opt-out given to the other profile yesterday
        # must not be undone by an older consent on the survivor.
        a, b = (survivor, other) if survivor["updated_at"] >= other["updated_at"] else (other, survivor)
        updates: dict[str, Any] = {
            name: a[name] if a[name] is not None else b[name] for name in PROFILE_FIELDS
        }
        updates["consents"] = json.dumps({**json.loads(b["consents"]), **json.loads(a["consents"])})
        updates["attributes"] = json.dumps(
            {**json.loads(b["attributes"]), **json.loads(a["attributes"])}, ensure_ascii=False
        )
        updates["push_subscriptions"] = json.dumps(
            _join_subscriptions(json.loads(b["push_subscriptions"]), json.loads(a["push_subscriptions"]))
        )
        updates["addresses"] = json.dumps(
            {**json.loads(b["addresses"]), **json.loads(a["addresses"])}, ensure_ascii=False
        )
        for key in ("opt_outs", "unreachable"):  # what either profile learnt stays true
            updates[key] = json.dumps({**json.loads(b[key]), **json.loads(a[key])})
        updates["orders_count"] = a["orders_count"] + b["orders_count"]
        updates["revenue"] = a["revenue"] + b["revenue"]
        updates["last_order_at"] = max(filter(None, [a["last_order_at"], b["last_order_at"]]), default=None)
        updates["last_seen_at"] = max(filter(None, [a["last_seen_at"], b["last_seen_at"]]), default=None)
        updates["created_at"] = min(a["created_at"], b["created_at"])
        updates["updated_at"] = a["updated_at"]
        self.db["customers"].update(into, updates)
        self.db.execute("DELETE FROM customers WHERE id = ?", [loser])
        self._repoint(loser, into)

    def _update_profile(self, customer_id: str, event: Event, now: str, refused: set[str]) -> None:
        """Apply what the event says about the customer, but for the `refused` fields; an older
        event only fills gaps.

        `updated_at` is the time of the latest event that spoke about the profile, so events
        that arrive out of order cannot overwrite newer values with older ones. An event dated
        in the future counts as of its arrival (`now`), and so do stamps stored beyond `now`
        before that rule: one wrong clock must not make every later event look older. A
        consent withdrawn applies whatever the order.
        """
        row = self.customer_row(customer_id)
        if row is None:  # unreadable, set aside: the event is kept, the profile left alone
            return
        profile = event.profile
        at = _as_of(event, now)
        updated_at = min(row["updated_at"], now)
        newer = at >= updated_at
        updates: dict[str, Any] = {"updated_at": max(at, updated_at)}
        for name in PROFILE_FIELDS:
            value = getattr(profile, name)
            if value is not None and name not in refused and (newer or row[name] is None):
                updates[name] = value

        def joined(stored: str, given: dict) -> dict:
            old = json.loads(stored)
            return {**old, **given} if newer else {**given, **old}

        if profile.consents:
            # A withdrawal applies whatever the order of `at`: an older "no" is still a no.
            withdrawn = {channel: False for channel, given in profile.consents.items() if not given}
            updates["consents"] = json.dumps({**joined(row["consents"], profile.consents), **withdrawn})
        if profile.attributes:
            updates["attributes"] = json.dumps(
                joined(row["attributes"], profile.attributes), ensure_ascii=False
            )
        if profile.addresses:
            updates["addresses"] = json.dumps(joined(row["addresses"], profile.addresses), ensure_ascii=False)
        if profile.push_subscriptions:
            self._take_push_subscriptions(customer_id, profile.push_subscriptions)
            updates["push_subscriptions"] = json.dumps(
                _join_subscriptions(json.loads(row["push_subscriptions"]), profile.push_subscriptions)
            )
        # A new address on a channel undoes "known bad" for it: the old address was the bad one.
        renewed = {
            "push": bool(profile.push_subscriptions),
            "email": bool(profile.email and "email" not in refused and profile.email != row["email"]),
            "sms": bool(profile.phone and "phone" not in refused and profile.phone != row["phone"]),
            "whatsapp": bool(
                (profile.whatsapp or profile.phone)
                and (profile.whatsapp or profile.phone) not in (row["whatsapp"], row["phone"])
            ),
            "telegram": bool(
                profile.telegram_chat_id and profile.telegram_chat_id != row["telegram_chat_id"]
            ),
        }
        stored_addresses = json.loads(row["addresses"])
        renewed.update(
            {name: True for name, value in profile.addresses.items() if stored_addresses.get(name) != value}
        )
        # `subscribed` is the customer's own explicit "yes" on channels (pressing Start on a
        # bot, allowing push): it lifts an earlier opt-out and "known bad" for them.
        subscribed = event.data.get("subscribed")
        subscribed = [c for c in subscribed if isinstance(c, str)] if isinstance(subscribed, list) else []
        renewed.update(dict.fromkeys(subscribed, True))
        unreachable = json.loads(row["unreachable"])
        if any(renewed.get(channel) for channel in unreachable):
            updates["unreachable"] = json.dumps({k: v for k, v in unreachable.items() if not renewed.get(k)})
        opt_outs = json.loads(row["opt_outs"])
        if any(channel in opt_outs for channel in subscribed):
            updates["opt_outs"] = json.dumps({k: v for k, v in opt_outs.items() if k not in subscribed})
        if event.type == "order.placed":
            order = event.data.get("order") if isinstance(event.data.get("order"), dict) else {}
            total = order.get("total", 0)
            updates["orders_count"] = row["orders_count"] + 1
            updates["revenue"] = row["revenue"] + (total if isinstance(total, int | float) else 0)
            updates["last_order_at"] = max(filter(None, [_not_after(row["last_order_at"], now), at]))
        if event.type in SITE_ACTIVITY:
            updates["last_seen_at"] = max(filter(None, [_not_after(row["last_seen_at"], now), at]))
        self.db["customers"].update(customer_id, updates)

    def _take_push_subscriptions(self, customer_id: str, subscriptions: list[dict]) -> None:
        """A browser's subscription belongs to one customer: whoever subscribed it last."""
        for subscription in subscriptions:
            endpoint = subscription.get("endpoint")
            if not isinstance(endpoint, str):
                continue
            # instr() narrows the scan to the rows that mention the endpoint at all
            rows = self.db.execute(
                "SELECT id, push_subscriptions FROM customers WHERE id != ? AND instr(push_subscriptions, ?)",
                [customer_id, json.dumps(endpoint)],
            ).fetchall()
            for other, stored in rows:
                kept = [sub for sub in json.loads(stored) if sub.get("endpoint") != endpoint]
                self.db["customers"].update(other, {"push_subscriptions": json.dumps(kept)})

    def customer_row(self, customer_id: str) -> dict[str, Any] | None:
        """The raw stored row of a customer, by canonical id; None if it cannot be read back."""
        row = self._customer_columns(customer_id)
        if row is None or self._read_row("customers", customer_id, lambda: _customer(row)) is None:
            return None
        return row

    def _customer_columns(self, customer_id: str) -> dict[str, Any] | None:
        cursor = self.db.execute("SELECT * FROM customers WHERE id = ?", [customer_id])
        row = cursor.fetchone()
        if row is None:
            return None
        return dict(zip([c[0] for c in cursor.description], row, strict=True))

    def find_customer(self, identity: str) -> Customer | None:
        """A customer by any identity: their id (or a merged-away id), email or phone."""
        candidates = [identity.strip(), identity.strip()]
        with contextlib.suppress(EventError):
            candidates[1] = normalise_email(identity.strip(), "email")
        with contextlib.suppress(EventError):
            candidates.append(normalise_phone(identity, "phone"))
        row = self.db.execute(
            "SELECT customer_id FROM identities WHERE value IN (?, ?, ?) ORDER BY kind = 'id' DESC LIMIT 1",
            [*candidates, *candidates[:1]][:3],
        ).fetchone()
        if row is None:
            return None
        return self.customer(row[0])

    def customer(self, customer_id: str) -> Customer | None:
        """A customer by canonical id; None if there is none or the row cannot be read back."""
        row = self._customer_columns(customer_id)
        if row is None:
            return None
        return self._read_row("customers", customer_id, lambda: _customer(row))

    def events_of(self, customer_id: str, limit: int = 1000) -> list[dict[str, Any]]:
        """A customer's events, oldest first."""
        rows = self.db.execute(
            "SELECT id, type, at, data, source FROM events WHERE customer_id = ? ORDER BY at, id LIMIT ?",
            [customer_id, limit],
        ).fetchall()
        events = (
            self._read_row(
                "events",
                r[0],
                lambda r=r: {
                    "id": r[0],
                    "type": r[1],
                    "at": _stamp(r[2]),
                    "data": _json(r[3], dict),
                    "source": r[4],
                },
            )
            for r in rows
        )
        return [event for event in events if event is not None]

    # transactions
    def transaction(self) -> Any:
        """A context manager: everything inside commits together or not at all."""
        return self.db.atomic()

    # events, for the engine
    def unhandled_events(self, limit: int = 100) -> list[Event]:
        """Stored events the engine has not acted on yet, in arrival order (unreadable ones set aside)."""
        while True:
            set_aside = self.rows_set_aside
            rows = self.db.execute(
                "SELECT id, type, at, customer_id, data, source FROM events WHERE handled = 0"
                " ORDER BY received_at, rowid LIMIT ?",
                [limit],
            ).fetchall()
            events = [
                self._read_row(
                    "events",
                    r[0],
                    lambda r=r: Event(
                        id=r[0],
                        type=r[1],
                        at=parse_time(r[2]),
                        profile=ProfileUpdate(),
                        data=_json(r[4], dict),
                        customer_id=r[3],
                        source=r[5],
                    ),
                )
                for r in rows
            ]
            readable = [event for event in events if event is not None]
            # A page of nothing but set-aside rows is not the end of the queue: those rows now
            # count as handled, so the next page holds others (if they could be marked).
            if readable or self.rows_set_aside == set_aside:
                return readable

    def mark_handled(self, event_id: str) -> None:
        """Record that the engine has acted on an event."""
        self.db.execute("UPDATE events SET handled = 1 WHERE id = ?", [event_id])

    def events_of_types(
        self, customer_id: str, types: Iterable[str], since: datetime | None = None
    ) -> list[dict]:
        """A customer's events of the given types since a moment, oldest first."""
        types = list(types)
        marks = ", ".join("?" for _ in types)
        rows = self.db.execute(
            f"SELECT id, type, at, data FROM events WHERE customer_id = ? AND type IN ({marks}) AND at >= ?"
            " ORDER BY at, id",
            [customer_id, *types, to_iso(since) if since else ""],
        ).fetchall()
        events = (
            self._read_row(
                "events",
                r[0],
                lambda r=r: {"id": r[0], "type": r[1], "at": _stamp(r[2]), "data": _json(r[3], dict)},
            )
            for r in rows
        )
        return [event for event in events if event is not None]

    def set_attributes(self, customer_id: str, attributes: dict[str, Any]) -> None:
        """Merge values into a customer's free-form attributes."""
        row = self.customer_row(customer_id)
        if row is None:
            return
        merged = {**json.loads(row["attributes"]), **attributes}
        self.db["customers"].update(customer_id, {"attributes": json.dumps(merged, ensure_ascii=False)})

    def customers_page(self, after: str, limit: int = 500) -> list[Customer]:
        """Customers in id order after `after`, for walking an audience in batches."""
        ids = [
            r[0]
            for r in self.db.execute(
                "SELECT id FROM customers WHERE id > ? ORDER BY id LIMIT ?", [after, limit]
            )
        ]
        return [customer for customer in map(self.customer, ids) if customer is not None]

    def customers_with_date(self, field: str, month_days: list[str]) -> list[Customer]:
        """Customers whose date field (`birthday` or `attributes.x`) falls on one of `MM-DD`."""
        column = (
            "birthday" if field == "birthday" else f"json_extract(attributes, '$.{field.split('.', 1)[1]}')"
        )
        marks = ", ".join("?" for _ in month_days)
        rows = self.db.execute(
            f"SELECT id FROM customers WHERE substr({column}, -5) IN ({marks})", month_days
        ).fetchall()
        return [customer for customer in (self.customer(r[0]) for r in rows) if customer is not None]

    # journeys
    def insert_journey(self, journey: Journey, now: datetime) -> bool:
        """Store a new journey; False if that entry already exists (a re-run of the same trigger)."""
        cursor = self.db.execute(
            "INSERT OR IGNORE INTO journeys (id, scenario, customer_id, entry_key, status, holdout, cursor,"
            " waiting_for, version, context, entered_at, updated_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [
                journey.id,
                journey.scenario,
                journey.customer_id,
                journey.entry_key,
                journey.status,
                int(journey.holdout),
                journey.cursor,
                journey.waiting_for,
                journey.version,
                json.dumps(journey.context, ensure_ascii=False, default=str),
                to_iso(journey.entered_at),
                to_iso(now),
            ],
        )
        return cursor.rowcount == 1

    def save_journey(self, journey: Journey, now: datetime) -> None:
        """Write a journey's state."""
        self.db.execute(
            "UPDATE journeys SET status = ?, cursor = ?, waiting_for = ?, version = ?, context = ?,"
            " updated_at = ?, ended_at = ? WHERE id = ?",
            [
                journey.status,
                journey.cursor,
                journey.waiting_for,
                journey.version,
                json.dumps(journey.context, ensure_ascii=False, default=str),
                to_iso(now),
                to_iso(journey.ended_at) if journey.ended_at else None,
                journey.id,
            ],
        )

    def journey(self, journey_id: str) -> Journey | None:
        """A journey by id."""
        rows = self._journeys("WHERE id = ?", [journey_id])
        return rows[0] if rows else None

    def journeys_of(self, customer_id: str, status: str | None = None) -> list[Journey]:
        """A customer's journeys (optionally only those with a status), oldest first."""
        if status:
            return self._journeys(
                "WHERE customer_id = ? AND status = ? ORDER BY entered_at", [customer_id, status]
            )
        return self._journeys("WHERE customer_id = ? ORDER BY entered_at", [customer_id])

    def last_journey(self, scenario: str, customer_id: str) -> Journey | None:
        """The customer's most recent journey in a scenario."""
        rows = self._journeys(
            "WHERE scenario = ? AND customer_id = ? ORDER BY entered_at DESC LIMIT 1", [scenario, customer_id]
        )
        return rows[0] if rows else None

    def _journeys(self, where: str, params: list[Any]) -> list[Journey]:
        rows = self.db.execute(
            "SELECT id, scenario, customer_id, entry_key, status, holdout, cursor, waiting_for, version,"
            f" context, entered_at, ended_at FROM journeys {where}",
            params,
        ).fetchall()
        journeys = (
            self._read_row(
                "journeys",
                r[0],
                lambda r=r: Journey(
                    id=r[0],
                    scenario=r[1],
                    customer_id=r[2],
                    entry_key=r[3],
                    status=r[4],
                    holdout=bool(r[5]),
                    cursor=r[6],
                    waiting_for=r[7],
                    version=_integer(r[8]),
                    context=_json(r[9], dict),
                    entered_at=parse_time(r[10]),
                    ended_at=parse_time(r[11]) if r[11] else None,
                ),
            )
            for r in rows
        )
        return [journey for journey in journeys if journey is not None]

    # jobs: the persistent priority queue
    def add_job(
        self,
        kind: str,
        due_at: float,
        priority: int,
        payload: dict[str, Any],
        *,
        journey_id: str | None = None,
        version: int | None = None,
        key: str | None = None,
    ) -> int | None:
        """Queue a job; with a `key` already queued, nothing is added and None is returned."""
        cursor = self.db.execute(
            "INSERT OR IGNORE INTO jobs (kind, due_at, priority, journey_id, version, key, payload)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)",
            [kind, due_at, priority, journey_id, version, key, json.dumps(payload, default=str)],
        )
        return cursor.lastrowid if cursor.rowcount == 1 else None

    def delete_jobs_of(self, journey_id: str, kind: str | None = None) -> None:
        """Cancel a journey's pending jobs (of one kind, or all) and the messages not yet sent."""
        if kind:
            self.db.execute("DELETE FROM jobs WHERE journey_id = ? AND kind = ?", [journey_id, kind])
            return
        self.db.execute("DELETE FROM jobs WHERE journey_id = ?", [journey_id])
        self.db.execute(
            "UPDATE messages SET status = 'cancelled' WHERE journey_id = ? AND status = 'pending'",
            [journey_id],
        )

    def claim_due(self, now: float, lease: float, limit: int) -> list[Job]:
        """Lease up to `limit` due jobs, earliest first and higher priority first at the same time."""
        ids = [
            r[0]
            for r in self.db.execute(
                "SELECT id FROM jobs WHERE due_at <= ? AND (lease_until IS NULL OR lease_until < ?)"
                " ORDER BY due_at, priority DESC, id LIMIT ?",
                [now, now, limit],
            )
        ]
        return self.claim_jobs(ids, now, lease)

    def claim_jobs(self, ids: list[int], now: float, lease: float) -> list[Job]:
        """Lease the given jobs if they are due and not leased by someone else."""
        claimed = []
        with self.db.atomic():
            for job_id in ids:
                updated = self.db.execute(
                    "UPDATE jobs SET lease_until = ? WHERE id = ? AND due_at <= ?"
                    " AND (lease_until IS NULL OR lease_until < ?)",
                    [now + lease, job_id, now, now],
                ).rowcount
                if updated:
                    claimed.append(job_id)
        if not claimed:
            return []
        marks = ", ".join("?" for _ in claimed)
        rows = self.db.execute(
            "SELECT id, kind, due_at, priority, payload, journey_id, version, key, attempts FROM jobs"
            f" WHERE id IN ({marks}) ORDER BY due_at, priority DESC, id",
            claimed,
        ).fetchall()
        jobs = (
            self._read_row(
                "jobs",
                r[0],
                lambda r=r: Job(
                    r[0],
                    r[1],
                    _number(r[2]),
                    _integer(r[3]),
                    _json(r[4], dict),
                    r[5],
                    r[6],
                    r[7],
                    _integer(r[8]),
                ),
                content=r,
            )
            for r in rows
        )
        return [job for job in jobs if job is not None]

    def upcoming_jobs(
        self, until: float, limit: int, now: float | None = None
    ) -> list[tuple[float, int, int]]:
        """(due_at, -priority, id) of claimable jobs due before `until`, through the due index."""
        # `-priority` in SQL: a damaged priority becomes 0 here and is set aside when claimed.
        return [
            (r[0], r[1], r[2])
            for r in self.db.execute(
                "SELECT due_at, -priority, id FROM jobs WHERE due_at <= ?"
                " AND (lease_until IS NULL OR lease_until < ?) ORDER BY due_at, priority DESC LIMIT ?",
                [until, time.time() if now is None else now, limit],
            )
        ]

    def next_due_at(self) -> float | None:
        """When the next job falls due (or a lease runs out), without scanning the queue."""
        unleased = self.db.execute(
            "SELECT due_at FROM jobs WHERE lease_until IS NULL ORDER BY due_at LIMIT 1"
        ).fetchone()
        leased = self.db.execute("SELECT min(lease_until) FROM jobs WHERE lease_until IS NOT NULL").fetchone()
        moments = [value for value in (unleased and unleased[0], leased and leased[0]) if value is not None]
        return min(moments) if moments else None

    def complete_job(self, job_id: int) -> None:
        """Remove a job whose effect is done."""
        self.db.execute("DELETE FROM jobs WHERE id = ?", [job_id])

    def retry_job(self, job_id: int, due_at: float) -> None:
        """Release a job to run again at `due_at`."""
        self.db.execute(
            "UPDATE jobs SET due_at = ?, lease_until = NULL, attempts = attempts + 1 WHERE id = ?",
            [due_at, job_id],
        )

    def renew_lease(self, job_id: int, until: float) -> None:
        """Extend the lease of a job still running; one completed or released meanwhile is left alone."""
        self.db.execute(
            "UPDATE jobs SET lease_until = ? WHERE id = ? AND lease_until IS NOT NULL", [until, job_id]
        )

    def release_all_leases(self) -> int:
        """Take back every lease: at start, the jobs of a process that died run again at once."""
        return self.db.execute("UPDATE jobs SET lease_until = NULL WHERE lease_until IS NOT NULL").rowcount

    def release_job(self, job_id: int) -> None:
        """Give a claimed job back untouched (on shutdown)."""
        self.db.execute("UPDATE jobs SET lease_until = NULL WHERE id = ?", [job_id])

    def job_count(self) -> int:
        """Jobs waiting in the queue."""
        return self.db.execute("SELECT count(*) FROM jobs").fetchone()[0]

    # messages
    def insert_message(self, fields: dict[str, Any]) -> None:
        """Store a message to be sent; its id is its idempotency key."""
        values = {
            key: json.dumps(v, ensure_ascii=False, default=str) if isinstance(v, dict | list) else v
            for key, v in fields.items()
        }
        self.db["messages"].insert(values, ignore=True)

    def message(self, message_id: str) -> dict[str, Any] | None:
        """A stored message as a dict (JSON columns decoded)."""
        cursor = self.db.execute("SELECT * FROM messages WHERE id = ?", [message_id])
        row = cursor.fetchone()
        if row is None:
            return None
        record = dict(zip([c[0] for c in cursor.description], row, strict=True))
        return self._read_row("messages", message_id, lambda: _message(record))

    def messages_sending(self) -> list[dict[str, Any]]:
        """Messages marked `sending`: at start, those a process that died was in the middle of."""
        ids = [r[0] for r in self.db.execute("SELECT id FROM messages WHERE status = 'sending'")]
        return [record for record in map(self.message, ids) if record is not None]

    def update_message(self, message_id: str, **fields: Any) -> None:
        """Change a message's status, channel, detail..."""
        self.db["messages"].update(message_id, fields)

    def sent_messages(self, customer_id: str, since: datetime) -> list[Sent]:
        """Messages that went (or are going) to a customer since a moment: what caps count."""
        rows = self.db.execute(
            "SELECT id, sent_at, channel, category FROM messages WHERE customer_id = ? AND sent_at >= ?"
            # `unknown`: cut off mid-send by a crash, so it may well have arrived
            " AND status IN ('sending', 'sent', 'delivered', 'unknown') ORDER BY sent_at",
            [customer_id, to_iso(since)],
        ).fetchall()
        sent = (
            self._read_row("messages", r[0], lambda r=r: Sent(parse_time(r[1]), r[2], r[3])) for r in rows
        )
        return [item for item in sent if item is not None]

    def engagement(self, customer_id: str | None = None) -> dict[str, tuple[float, int]]:
        """Per channel: the mean engagement of messages (clicked 1, opened .6, delivered .3, sent .1,
        failed 0) and how many messages that is, for one customer or for everyone."""
        where, params = ("AND customer_id = ?", [customer_id]) if customer_id else ("", [])
        rows = self.db.execute(
            "SELECT channel, avg(CASE WHEN status = 'failed' THEN 0.0 WHEN clicked_at IS NOT NULL THEN 1.0"
            " WHEN opened_at IS NOT NULL THEN 0.6 WHEN delivered_at IS NOT NULL THEN 0.3 ELSE 0.1 END),"
            " count(*) FROM messages WHERE status IN ('sent', 'delivered', 'failed')"
            f" AND channel IS NOT NULL {where} GROUP BY channel",
            params,
        ).fetchall()
        return {r[0]: (float(r[1]), int(r[2])) for r in rows}

    def chain_delivered(self, first_id: str) -> bool:
        """Whether a message or one of its fallbacks was delivered (so no further fallback goes)."""
        row = self.db.execute(
            "SELECT 1 FROM messages WHERE (id = ? OR fallback_of = ?) AND status = 'delivered' LIMIT 1",
            [first_id, first_id],
        ).fetchone()
        return row is not None

    def postpone_job(self, job_id: int, due_at: float) -> None:
        """Release a job to run again at `due_at`, without counting a failed attempt."""
        self.db.execute("UPDATE jobs SET due_at = ?, lease_until = NULL WHERE id = ?", [due_at, job_id])

    # the journal
    def add_journal(self, entry: JournalEntry) -> None:
        """Append one line to a customer's timeline."""
        self.db.execute(
            "INSERT INTO journal (at, kind, customer_id, scenario, journey_id, step, template, channel,"
            " message_id, reason, value, variant) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [
                to_iso(entry.at),
                entry.kind,
                entry.customer_id,
                entry.scenario,
                entry.journey_id,
                entry.step,
                entry.template,
                entry.channel,
                entry.message_id,
                entry.reason,
                entry.value,
                entry.variant,
            ],
        )

    def journal(self, customer_id: str | None = None) -> list[JournalEntry]:
        """Timeline lines (of one customer, or all), in time order."""
        where, params = ("WHERE customer_id = ?", [customer_id]) if customer_id else ("", [])
        rows = self.db.execute(
            "SELECT id, at, kind, customer_id, reason, scenario, journey_id, step, template, channel,"
            f" message_id, value, variant FROM journal {where} ORDER BY at, id",
            params,
        ).fetchall()
        entries = (
            self._read_row("journal", r[0], lambda r=r: JournalEntry(parse_time(r[1]), *r[2:])) for r in rows
        )
        return [entry for entry in entries if entry is not None]

    # feedback: receipts, opens, clicks, unsubscribes
    def record_feedback(
        self, message_id: str, event_type: str, data: dict[str, Any], key: str | None, now: datetime
    ) -> tuple[bool, Event | None]:
        """Store a feedback event about a message and apply it; (message known?, new event or None).

        The event id is derived from the message, the type and `key`, so a receipt that
        arrives twice (providers retry) is stored and applied once.
        """
        record = self.message(message_id)
        if record is None:
            return False, None
        customer_id = record["customer_id"]
        payload = {
            "message": {key_: record[key_] for key_ in ("id", "channel", "template", "scenario", "step")},
            **data,
        }
        event = Event(
            id=f"{event_type}:{message_id}" + (f":{key}" if key else ""),
            type=event_type,
            at=now,
            profile=ProfileUpdate(id=customer_id),
            data=payload,
            source=record["channel"] or "feedback",
        )
        with self.db.atomic():
            if not self.ingest([event], now):
                return True, None
            at = to_iso(now)
            if event_type == "message.delivered":
                self.db.execute(
                    # a fast receipt may beat the commit of the send itself ('sending'), and
                    # one for a send a crash cut off ('unknown') settles that it arrived
                    "UPDATE messages SET status = 'delivered', delivered_at = ?"
                    " WHERE id = ? AND status IN ('sending', 'sent', 'unknown')",
                    [at, message_id],
                )
            elif event_type == "message.failed":
                self.update_message(message_id, status="failed", detail=str(data.get("detail", "")))
                if data.get("reason") == "address_invalid" and record["channel"]:
                    self.mark_unreachable(customer_id, record["channel"], str(data.get("detail", "")))
                elif data.get("reason") == "opted_out" and record["channel"]:
                    self.opt_out(customer_id, [record["channel"]], now)
            elif event_type in ("message.opened", "message.clicked"):
                column = "opened_at" if event_type == "message.opened" else "clicked_at"
                self.db.execute(
                    f"UPDATE messages SET {column} = coalesce({column}, ?) WHERE id = ?", [at, message_id]
                )
            elif event_type == "message.unsubscribed":
                channels = data.get("channels") or [record["channel"]]
                self.opt_out(customer_id, [c for c in channels if c], now)
        return True, event

    def opt_out(self, customer_id: str, channels: list[str], now: datetime) -> None:
        """The customer said no on these channels (`all` for every channel)."""
        row = self.customer_row(customer_id)
        if row is None:
            return
        opt_outs = json.loads(row["opt_outs"])
        opt_outs.update({channel: to_iso(now) for channel in channels})
        self.db["customers"].update(customer_id, {"opt_outs": json.dumps(opt_outs)})

    def mark_unreachable(self, customer_id: str, channel: str, reason: str) -> None:
        """The customer's address on a channel is known bad (hard bounce, blocked bot...)."""
        row = self.customer_row(customer_id)
        if row is None:
            return
        unreachable = {**json.loads(row["unreachable"]), channel: reason or "address invalid"}
        self.db["customers"].update(customer_id, {"unreachable": json.dumps(unreachable)})

    def message_by_provider_id(self, provider_id: str) -> dict[str, Any] | None:
        """A message by the id its provider gave it (a Twilio SID...)."""
        row = self.db.execute("SELECT id FROM messages WHERE provider_id = ?", [provider_id]).fetchone()
        return self.message(row[0]) if row else None

    def set_profile(self, customer_id: str, fields: dict[str, Any]) -> None:
        """Store the address fields a channel's `forget()` gave (the map and lists as data)."""
        updates = {
            key: json.dumps(value, ensure_ascii=False) if key in ADDRESS_JSON else value
            for key, value in fields.items()
            if key in PROFILE_FIELDS or key in ADDRESS_JSON  # never a count, a stamp or an opt-out
        }
        if updates:
            self.db["customers"].update(customer_id, updates)

    def counts(self) -> dict[str, int]:
        """Row counts for the status line and metrics."""
        return {
            table: self.db.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
            for table in ("customers", "events")
        }


def _join_subscriptions(first: list[dict], second: list[dict]) -> list[dict]:
    """Push subscriptions of both lists, one per endpoint, the later one winning; only the
    latest MAX_PUSH_SUBSCRIPTIONS are kept, so every send knocks on a bounded number of doors."""
    by_endpoint: dict[Any, dict] = {}
    for sub in [*first, *second]:
        by_endpoint.pop(sub.get("endpoint"), None)  # subscribed again: the newest now
        by_endpoint[sub.get("endpoint")] = sub
    return list(by_endpoint.values())[-MAX_PUSH_SUBSCRIPTIONS:]


def _as_of(event: Event, received_at: str) -> str:
    """When an event counts for ordering: its `at`, or its arrival if `at` lies in the future."""
    return min(to_iso(event.at), received_at)


def _not_after(stamp: str | None, now: str) -> str | None:
    """A stored stamp, unless it lies beyond `now` (written from a future-dated event)."""
    return stamp if stamp is not None and stamp <= now else None


def _json(text: Any, kind: type) -> Any:
    """A stored JSON column, decoded and checked to be a `kind` (dict or list)."""
    if not isinstance(text, str):
        raise ValueError(f"JSON text was expected, not {type(text).__name__}")
    value = json.loads(text)
    if not isinstance(value, kind):
        raise ValueError(f"a JSON {kind.__name__} was expected, not {type(value).__name__}")
    return value


def _stamp(text: Any) -> str:
    """A stored timestamp, checked to read back."""
    parse_time(text)
    return text


def _integer(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"a whole number was expected, not {value!r}"[:100])
    return value


def _number(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"a number was expected, not {value!r}"[:100])
    return float(value)


_CUSTOMER_JSON = {
    "consents": dict,
    "attributes": dict,
    "push_subscriptions": list,
    "addresses": dict,
    "opt_outs": dict,
    "unreachable": dict,
}
_CUSTOMER_TIMES = ("last_order_at", "last_seen_at", "created_at", "updated_at")


def _customer(row: dict[str, Any]) -> Customer:
    """A customer row decoded, every column checked: what reads back here cannot fail a send later."""
    values = {key: row[key] for key in row if key not in _CUSTOMER_TIMES}
    for key, kind in _CUSTOMER_JSON.items():
        values[key] = _json(values[key], kind)
    if not all(isinstance(subscription, dict) for subscription in values["push_subscriptions"]):
        raise ValueError("push_subscriptions must hold JSON objects")
    if not all(isinstance(address, str) for address in values["addresses"].values()):
        raise ValueError("addresses must map channels to text")
    if nesting(values["attributes"]) > MAX_VALUE_DEPTH:
        raise ValueError(f"attributes are nested more than {MAX_VALUE_DEPTH} levels deep")
    if values["timezone"]:
        try:
            ZoneInfo(str(values["timezone"]))
        except (ZoneInfoNotFoundError, OSError):  # OSError: a name too long for a file
            raise ValueError("timezone: not an IANA timezone") from None
    _integer(values["orders_count"])
    _number(values["revenue"])
    for key in _CUSTOMER_TIMES:
        values[key] = parse_time(row[key]) if row[key] else None
    return Customer(**values)


_MESSAGE_JSON = {"candidates": list, "promo": dict, "context": dict, "links": list, "tried": list}
_MESSAGE_TIMES = ("created_at", "sent_at", "expires_at", "delivered_at", "opened_at", "clicked_at")


def _message(record: dict[str, Any]) -> dict[str, Any]:
    """A message row with its JSON columns decoded and its timestamps checked."""
    for key, kind in _MESSAGE_JSON.items():
        record[key] = _json(record[key], kind) if record[key] else None
    for key in _MESSAGE_TIMES:
        if record[key]:
            parse_time(record[key])
    return record


def _dump_row(content: Any) -> str | None:
    """A raw row as text for the quarantine table, whatever its values are."""
    return None if content is None else json.dumps(list(content), default=repr, ensure_ascii=False)
