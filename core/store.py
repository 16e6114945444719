"""The database: schema, numbered migrations, and every query. No other module speaks SQL.

One SQLite file in WAL mode, reached through sqlite-utils. SQLite is synchronous, so the
daemon funnels every call through one worker thread (`Store.run`), the way datasette funnels
its writes, and the event loop never waits on the disk.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import sqlite3
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

from sqlite_utils import Database

from boomerang.clock import parse_time, to_iso
from boomerang.model import Customer, Event, ProfileUpdate

T = TypeVar("T")

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
]

# Tables whose rows belong to a customer; merging two customers re-points them all.
CUSTOMER_TABLES = ("events", "identities")

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


class StoreError(Exception):
    """The database cannot be used as it is (e.g. made by a newer Boomerang)."""


class Store:
    """The one SQLite database of an installation."""

    def __init__(self, path: Path | str):
        self.path = Path(path) if str(path) != ":memory:" else None
        if self.path:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None, timeout=10)
        self.db = Database(conn)
        self.db.execute("PRAGMA journal_mode = WAL")
        # FULL: a commit acknowledged to a webhook survives a power cut, not only a crash.
        self.db.execute("PRAGMA synchronous = FULL")
        self.db.execute("PRAGMA foreign_keys = ON")
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="store")
        self.migrate()

    # plumbing
    async def run(self, function: Callable[..., T], *args: Any) -> T:
        """Run a store method on the store's own thread, so the event loop never blocks."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, function, *args)

    def close(self) -> None:
        """Finish pending calls and close the database."""
        self._executor.shutdown(wait=True)
        self.db.conn.close()

    def schema_version(self) -> int:
        """The number of the last migration applied."""
        return self.db.execute("PRAGMA user_version").fetchone()[0]

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
    def ingest(self, events: Iterable[Event], received_at: datetime) -> list[Event]:
        """Store events in one transaction; returns those that were new (duplicates skipped).

        Each new event's customer is found or created from its identities, merged with any
        other customer those identities point to, and updated with the event's profile data.
        """
        stored = []
        now = to_iso(received_at)
        with self.db.atomic():
            for event in events:
                seen = self.db.execute("SELECT 1 FROM events WHERE id = ?", [event.id]).fetchone()
                if seen:
                    continue
                event.customer_id = self._resolve_customer(event.profile, now, to_iso(event.at))
                self._update_profile(event.customer_id, event, now)
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

    def _resolve_customer(self, profile: ProfileUpdate, now: str, at: str) -> str:
        found: list[str] = []
        for kind, value in profile.identities():
            row = self.db.execute(
                "SELECT customer_id FROM identities WHERE kind = ? AND value = ?", [kind, value]
            ).fetchone()
            if row and row[0] not in found:
                found.append(row[0])
        # A customer known by the shop's own id survives over an anonymous one.
        found.sort(key=lambda cid: cid.startswith("anon-"))
        if not found:
            customer_id = profile.id or f"anon-{secrets.token_hex(8)}"
            self.db.execute(
                "INSERT INTO customers (id, created_at, updated_at) VALUES (?, ?, ?)",
                [customer_id, now, at],
            )
            self._add_identity("id", customer_id, customer_id)
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
        return customer_id

    def _add_identity(self, kind: str, value: str, customer_id: str) -> None:
        self.db.execute(
            "INSERT INTO identities (kind, value, customer_id) VALUES (?, ?, ?)"
            " ON CONFLICT (kind, value) DO UPDATE SET customer_id = excluded.customer_id",
            [kind, value, customer_id],
        )

    def _repoint(self, old: str, new: str) -> None:
        for table in CUSTOMER_TABLES:
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
        updates["orders_count"] = a["orders_count"] + b["orders_count"]
        updates["revenue"] = a["revenue"] + b["revenue"]
        updates["last_order_at"] = max(filter(None, [a["last_order_at"], b["last_order_at"]]), default=None)
        updates["last_seen_at"] = max(filter(None, [a["last_seen_at"], b["last_seen_at"]]), default=None)
        updates["created_at"] = min(a["created_at"], b["created_at"])
        updates["updated_at"] = a["updated_at"]
        self.db["customers"].update(into, updates)
        self.db.execute("DELETE FROM customers WHERE id = ?", [loser])
        self._repoint(loser, into)

    def _update_profile(self, customer_id: str, event: Event, now: str) -> None:
        """Apply what the event says about the customer; an older event only fills gaps.

        `updated_at` is the time of the latest event that spoke about the profile, so events
        that arrive out of order cannot overwrite newer values with older ones.
        """
        row = self.customer_row(customer_id)
        assert row is not None
        profile = event.profile
        at = to_iso(event.at)
        newer = at >= row["updated_at"]
        updates: dict[str, Any] = {"updated_at": max(at, row["updated_at"])}
        for name in PROFILE_FIELDS:
            value = getattr(profile, name)
            if value is not None and (newer or row[name] is None):
                updates[name] = value

        def joined(stored: str, given: dict) -> str:
            old = json.loads(stored)
            return json.dumps({**old, **given} if newer else {**given, **old}, ensure_ascii=False)

        if profile.consents:
            updates["consents"] = joined(row["consents"], profile.consents)
        if profile.attributes:
            updates["attributes"] = joined(row["attributes"], profile.attributes)
        if profile.push_subscriptions:
            updates["push_subscriptions"] = json.dumps(
                _join_subscriptions(json.loads(row["push_subscriptions"]), profile.push_subscriptions)
            )
        if event.type == "order.placed":
            order = event.data.get("order") if isinstance(event.data.get("order"), dict) else {}
            total = order.get("total", 0)
            updates["orders_count"] = row["orders_count"] + 1
            updates["revenue"] = row["revenue"] + (total if isinstance(total, int | float) else 0)
            updates["last_order_at"] = max(filter(None, [row["last_order_at"], at]))
        if event.type in SITE_ACTIVITY:
            updates["last_seen_at"] = max(filter(None, [row["last_seen_at"], at]))
        self.db["customers"].update(customer_id, updates)

    def customer_row(self, customer_id: str) -> dict[str, Any] | None:
        """The raw stored row of a customer, by canonical id."""
        cursor = self.db.execute("SELECT * FROM customers WHERE id = ?", [customer_id])
        row = cursor.fetchone()
        if row is None:
            return None
        return dict(zip([c[0] for c in cursor.description], row, strict=True))

    def find_customer(self, identity: str) -> Customer | None:
        """A customer by any identity: their id (or a merged-away id), email or phone."""
        row = self.db.execute(
            "SELECT customer_id FROM identities WHERE value = ? ORDER BY kind = 'id' DESC LIMIT 1",
            [identity.strip().lower() if "@" in identity else identity.strip()],
        ).fetchone()
        if row is None:
            return None
        return self.customer(row[0])

    def customer(self, customer_id: str) -> Customer | None:
        """A customer by canonical id."""
        row = self.customer_row(customer_id)
        if row is None:
            return None
        times = ("last_order_at", "last_seen_at", "created_at", "updated_at")
        values = {key: row[key] for key in row if key not in times}
        for key in ("consents", "attributes", "push_subscriptions"):
            values[key] = json.loads(values[key])
        for key in times:
            values[key] = parse_time(row[key]) if row[key] else None
        return Customer(**values)

    def events_of(self, customer_id: str, limit: int = 1000) -> list[dict[str, Any]]:
        """A customer's events, oldest first."""
        rows = self.db.execute(
            "SELECT id, type, at, data, source FROM events WHERE customer_id = ? ORDER BY at, id LIMIT ?",
            [customer_id, limit],
        ).fetchall()
        return [
            {"id": r[0], "type": r[1], "at": r[2], "data": json.loads(r[3]), "source": r[4]} for r in rows
        ]

    def counts(self) -> dict[str, int]:
        """Row counts for the status line and metrics."""
        return {
            table: self.db.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
            for table in ("customers", "events")
        }


def _join_subscriptions(first: list[dict], second: list[dict]) -> list[dict]:
    """Push subscriptions of both lists, one per endpoint, the later one winning."""
    by_endpoint = {sub.get("endpoint"): sub for sub in [*first, *second]}
    return list(by_endpoint.values())
