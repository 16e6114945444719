"""Events: storing them (finding each one's customer), the engine's queue of unhandled ones,
and a customer's history."""

from __future__ import annotations

import json
from collections.abc import Collection, Iterable, Sequence
from datetime import datetime
from typing import Any

from boomerang.clock import parse_time, to_iso
from boomerang.model import Event, ProfileUpdate
from boomerang.profiles import as_of
from boomerang.store import rows
from boomerang.store.connection import StoreUnavailable, unavailable
from boomerang.store.customers import Customers, WorkingSet
from boomerang.store.products import Products

# One encoder for every event's data: `json.dumps` with options builds a new one per call.
_encode_data = json.JSONEncoder(ensure_ascii=False).encode


def _first_of_each(events: Iterable[Event]) -> list[Event]:
    """The events with the first of each id only: a repeat within a batch is a duplicate."""
    firsts: dict[str, Event] = {}
    for event in events:
        firsts.setdefault(event.id, event)
    return list(firsts.values())


class Events(Products, Customers):
    """The `events` table (and, through `Products`, the catalogue its events feed)."""

    def ingest(self, events: Iterable[Event], received_at: datetime, verified: bool = True) -> list[Event]:
        """Store events in one transaction; returns those that were new (duplicates skipped).

        Each new event's customer is found or created from its identities and updated with the
        event's profile data. The events of a verified source merge every other customer those
        identities point to; the others only claim (the merge policy, core/ingest.py): their
        customer is the one their first identity names, and a Telegram chat they name moves to
        it, while an email or phone another customer has stays with that customer.
        """
        (outcome,) = self.ingest_group([(list(events), verified)], received_at)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    def ingest_group(
        self, batches: Sequence[tuple[Sequence[Event], bool]], received_at: datetime
    ) -> list[list[Event] | Exception]:
        """Store several requests' events, each a (events, verified) batch, in ONE transaction
        (group commit: one fsync for all of them); per batch, the events that were new, or the
        exception that made that batch alone roll back.

        Each batch is stored as `ingest` stores it, in order, inside a savepoint of its own: an
        event seen before, in the database or earlier in the group, is a duplicate. If the
        transaction itself fails (`StoreUnavailable`: disk full, database locked, I/O error),
        nothing of the group is stored and that is raised.
        """
        now = to_iso(received_at)
        outcomes: list[list[Event] | Exception] = []
        try:
            with self.db.atomic():
                self._working = WorkingSet()
                event_ids = [event.id for events, _ in batches for event in events]
                identities = {
                    identity
                    for events, _ in batches
                    for event in events
                    for identity in event.profile.identities()
                }
                self.lock_arrivals(event_ids, identities)
                seen = self._known_events(event_ids)
                working = self._working
                self._know_owners(identities)
                self._know_rows({owner for owner in working.owners.values() if owner is not None})
                for events, verified in batches:
                    fresh = [event for event in _first_of_each(events) if event.id not in seen]
                    try:
                        with self.savepoint():
                            self._store_batch(fresh, verified, now)
                    except Exception as exc:
                        if unavailable(exc):
                            raise
                        self._working = WorkingSet()  # what it held was rolled back
                        outcomes.append(exc)
                        continue
                    seen.update(event.id for event in fresh)
                    outcomes.append(fresh)
        except self.errors as exc:
            if unavailable(exc):
                raise StoreUnavailable(str(exc)) from exc
            raise
        finally:
            self._working = None
        return outcomes

    def _known_events(self, ids: list[str]) -> set[str]:
        """Which of these event ids are stored already."""
        known: set[str] = set()
        for start in range(0, len(ids), 500):
            chunk = ids[start : start + 500]
            marks = ", ".join("?" for _ in chunk)
            found = self.db.execute(f"SELECT id FROM events WHERE id IN ({marks})", chunk)
            known.update(row[0] for row in found)
        return known

    def _store_batch(self, events: list[Event], verified: bool, now: str) -> None:
        """Resolve each event's customer, update the profile, insert the events and what they
        say about products; profile columns are written once per customer, at the end."""
        resolve = self._resolve_customer if verified else self._resolve_claim
        for event in events:
            event.customer_id, refused = resolve(event.profile, now, as_of(event, now))
            self._update_profile(event.customer_id, event, now, refused)
        self._flush()
        self.db.conn.executemany(
            "INSERT INTO events (id, type, at, customer_id, data, source, received_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)",
            [
                (
                    event.id,
                    event.type,
                    to_iso(event.at),
                    event.customer_id,
                    _encode_data(event.data),
                    event.source,
                    now,
                )
                for event in events
            ],
        )
        self._record_catalogue(events)

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

    def mark_handled(self, event_ids: Collection[str]) -> None:
        """Record that the engine has acted on these events (one statement per 500)."""
        wanted = list(event_ids)
        for start in range(0, len(wanted), 500):
            chunk = wanted[start : start + 500]
            marks = ", ".join("?" for _ in chunk)
            self.db.execute(f"UPDATE events SET handled = 1 WHERE id IN ({marks})", chunk)
