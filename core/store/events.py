"""Events: storing them (finding each one's customer), the engine's queue of unhandled ones,
and a customer's history."""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from boomerang.clock import parse_time, to_iso
from boomerang.model import Event, ProfileUpdate
from boomerang.profiles import as_of
from boomerang.store import rows
from boomerang.store.customers import Customers


class Events(Customers):
    """The `events` table."""

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
                event.customer_id, refused = resolve(event.profile, now, as_of(event, now))
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

    def events_of(self, customer_id: str, limit: int = 1000) -> list[dict[str, Any]]:
        """A customer's events, oldest first."""
        found = self._select(
            "SELECT id, type, at, data, source FROM events WHERE customer_id = ? ORDER BY at, id LIMIT ?",
            [customer_id, limit],
        )
        return self._events(found)

    def events_of_types(
        self, customer_id: str, types: Iterable[str], since: datetime | None = None
    ) -> list[dict]:
        """A customer's events of the given types since a moment, oldest first."""
        types = list(types)
        marks = ", ".join("?" for _ in types)
        found = self._select(
            f"SELECT id, type, at, data FROM events WHERE customer_id = ? AND type IN ({marks}) AND at >= ?"
            " ORDER BY at, id",
            [customer_id, *types, to_iso(since) if since else ""],
        )
        return self._events(found)

    def _events(self, found: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Event rows as dicts, `at` and `data` checked and decoded; unreadable ones set aside."""
        events = (
            self._read_row(
                "events",
                row["id"],
                lambda row=row: {
                    **row,
                    "at": rows.stamp(row["at"]),
                    "data": rows.json_value(row["data"], dict),
                },
            )
            for row in found
        )
        return [event for event in events if event is not None]

    def unhandled_events(self, limit: int = 100) -> list[Event]:
        """Stored events the engine has not acted on yet, in arrival order (unreadable ones set aside)."""
        while True:
            set_aside = self.rows_set_aside
            found = self._select(
                "SELECT id, type, at, customer_id, data, source FROM events WHERE handled = 0"
                " ORDER BY received_at, rowid LIMIT ?",
                [limit],
            )
            events = [
                self._read_row(
                    "events",
                    row["id"],
                    lambda row=row: Event(
                        id=row["id"],
                        type=row["type"],
                        at=parse_time(row["at"]),
                        profile=ProfileUpdate(),
                        data=rows.json_value(row["data"], dict),
                        customer_id=row["customer_id"],
                        source=row["source"],
                    ),
                )
                for row in found
            ]
            readable = [event for event in events if event is not None]
            # A page of nothing but set-aside rows is not the end of the queue: those rows now
            # count as handled, so the next page holds others (if they could be marked).
            if readable or self.rows_set_aside == set_aside:
                return readable

    def mark_handled(self, event_id: str) -> None:
        """Record that the engine has acted on an event."""
        self.db.execute("UPDATE events SET handled = 1 WHERE id = ?", [event_id])
