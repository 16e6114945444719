"""Journeys (a customer's way through a scenario) and the journal (their timeline)."""

from __future__ import annotations

import json
from collections.abc import Collection
from datetime import datetime
from typing import Any

from boomerang.clock import parse_time, to_iso
from boomerang.model import JournalEntry, Journey
from boomerang.store import rows
from boomerang.store.quarantine import Quarantine

JOURNAL_FIELDS = (
    "kind",
    "customer_id",
    "reason",
    "scenario",
    "journey_id",
    "step",
    "template",
    "channel",
    "message_id",
    "value",
    "variant",
)

_JOURNEY_COLUMNS = (
    "id",
    "scenario",
    "customer_id",
    "entry_key",
    "status",
    "holdout",
    "cursor",
    "waiting_for",
    "version",
    "context",
    "entered_at",
    "updated_at",
    "ended_at",
)
_INSERT_JOURNEY = (
    f"INSERT OR IGNORE INTO journeys ({', '.join(_JOURNEY_COLUMNS)})"
    f" VALUES ({', '.join('?' for _ in _JOURNEY_COLUMNS)})"
)
_JOURNAL_COLUMNS = (
    "at",
    "kind",
    "customer_id",
    "scenario",
    "journey_id",
    "step",
    "template",
    "channel",
    "message_id",
    "reason",
    "value",
    "variant",
)
_ADD_JOURNAL = (
    f"INSERT INTO journal ({', '.join(_JOURNAL_COLUMNS)}) VALUES ({', '.join('?' for _ in _JOURNAL_COLUMNS)})"
)

# One encoder for every journey's context, written at each step: `json.dumps` with options
# builds a new one per call.
_encode_context = json.JSONEncoder(ensure_ascii=False, default=str).encode

# A journey's context reduced to its `variants`; text that is not JSON is left for the
# decoder to refuse, so that the row is set aside as a full read would set it aside.
_VARIANTS_ONLY = (
    "CASE WHEN json_valid(context) THEN json_object('variants', json(json_extract(context, '$.variants')))"
    " ELSE context END"
)


def journey_row(journey: Journey, now: datetime) -> tuple[Any, ...]:
    """A journey as it is stored at `now`: the values of `insert_journeys`."""
    return (
        journey.id,
        journey.scenario,
        journey.customer_id,
        journey.entry_key,
        journey.status,
        int(journey.holdout),
        journey.cursor,
        journey.waiting_for,
        journey.version,
        _encode_context(journey.context),
        to_iso(journey.entered_at),
        to_iso(now),
        to_iso(journey.ended_at) if journey.ended_at else None,
    )


# What a journey's step changes of its row: the columns of `saved_row`, before its id.
_SAVED_COLUMNS = ("status", "cursor", "waiting_for", "version", "context", "updated_at", "ended_at")
_SAVE_JOURNEY = f"UPDATE journeys SET {', '.join(f'{column} = ?' for column in _SAVED_COLUMNS)} WHERE id = ?"


def saved_row(journey: Journey, now: datetime) -> tuple[Any, ...]:
    """A stored journey's state as it is written at `now`: the values of `save_journeys` (the
    `_SAVED_COLUMNS`, then its id)."""
    return (
        journey.status,
        journey.cursor,
        journey.waiting_for,
        journey.version,
        _encode_context(journey.context),
        to_iso(now),
        to_iso(journey.ended_at) if journey.ended_at else None,
        journey.id,
    )


def journal_row(entry: JournalEntry) -> tuple[Any, ...]:
    """A timeline line as it is stored."""
    return (
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
    )


class Journeys(Quarantine):
    """The `journeys` and `journal` tables."""

    def insert_journey(self, journey: Journey, now: datetime) -> bool:
        """Store a new journey; False if that entry already exists (a re-run of the same trigger)."""
        return self.db.execute(_INSERT_JOURNEY, journey_row(journey, now)).rowcount == 1

    def insert_journeys(self, journey_rows: list[tuple[Any, ...]]) -> None:
        """Store many new journeys in one statement, as rows of `journey_row`; an entry that
        exists already is left as it is."""
        self._insert_all("journeys", _JOURNEY_COLUMNS, journey_rows, or_ignore=True)

    def start_journeys(
        self,
        scenario: str,
        entry_key: str,
        cursor: str,
        context: dict[str, Any],
        now: datetime,
        started: list[tuple[str, str, int]],
    ) -> None:
        """Store many new journeys entered together, each (id, customer id, 1 if in the holdout),
        all active at `cursor` (version 0) with the same `context`, in one statement. None of
        them may be stored already (that raises)."""
        at = to_iso(now)
        same = {"scenario": scenario, "entry_key": entry_key, "status": "active", "cursor": cursor}
        same.update({"version": 0, "context": _encode_context(context), "entered_at": at, "updated_at": at})
        self._insert_all("journeys", ("id", "customer_id", "holdout"), started, same=same)

    def save_journey(self, journey: Journey, now: datetime) -> None:
        """Write a journey's state."""
        self.db.execute(_SAVE_JOURNEY, saved_row(journey, now))

    def save_journeys(self, saved_rows: list[tuple[Any, ...]]) -> None:
        """Write many journeys' states, as rows of `saved_row` (each journey once), in one
        statement."""
        self._update_all("journeys", _SAVED_COLUMNS, saved_rows)

    def journey(self, journey_id: str) -> Journey | None:
        """A journey by id."""
        found = self._journeys("WHERE id = ?", [journey_id])
        return found[0] if found else None

    def journeys(self, journey_ids: Collection[str], *, variants_only: bool = False) -> dict[str, Journey]:
        """Journeys by id, in one query; unknown ids, and rows that cannot be read back (each
        set aside alone, as `journey` does), are left out. `variants_only`: each context holds
        only its `variants`, what a line of the timeline records, picked out by SQLite rather
        than decoded whole (a journey's context holds its trigger event, often large)."""
        wanted = json.dumps(list(journey_ids))
        found = self._journeys(
            "WHERE id IN (SELECT value FROM json_each(?))",
            [wanted],
            _VARIANTS_ONLY if variants_only else "context",
        )
        return {journey.id: journey for journey in found}

    def journeys_of(self, customer_id: str, status: str | None = None) -> list[Journey]:
        """A customer's journeys (optionally only those with a status), oldest first."""
        if status:
            return self._journeys(
                "WHERE customer_id = ? AND status = ? ORDER BY entered_at, rowid", [customer_id, status]
            )
        return self._journeys("WHERE customer_id = ? ORDER BY entered_at, rowid", [customer_id])

    def journeys_of_customers(self, customer_ids: Collection[str]) -> dict[str, list[Journey]]:
        """Every journey of many customers, in one read per 500 customers: by customer, each
        customer's oldest first, as `journeys_of` gives them (customers with none are left out)."""
        found: dict[str, list[Journey]] = {}
        wanted = list(customer_ids)
        for start in range(0, len(wanted), 500):
            chunk = wanted[start : start + 500]
            marks = ", ".join("?" for _ in chunk)
            for journey in self._journeys(
                f"WHERE customer_id IN ({marks}) ORDER BY customer_id, entered_at, rowid", chunk
            ):
                found.setdefault(journey.customer_id, []).append(journey)
        return found

    def awaiting(self, customer_ids: Collection[str]) -> set[tuple[str, str]]:
        """(customer, event type) for each active journey of these customers waiting for an
        event, in one query that decodes nothing: whether an event can concern a journey."""
        found = self.db.execute(
            "SELECT customer_id, waiting_for FROM journeys WHERE customer_id IN"
            " (SELECT value FROM json_each(?)) AND status = 'active' AND waiting_for IS NOT NULL",
            [json.dumps(list(customer_ids))],
        )
        return {(customer_id, event_type) for customer_id, event_type in found}

    def active_journeys(self, scenarios: Collection[str]) -> dict[str, int]:
        """How many journeys are under way in each of these scenarios (those with none are left
        out): one count per scenario on the `(scenario, status)` index, no row read."""
        found = self.db.execute(
            "SELECT scenario, count(*) FROM journeys WHERE scenario IN (SELECT value FROM json_each(?))"
            " AND status = 'active' GROUP BY scenario",
            [json.dumps(list(scenarios))],
        )
        return dict(found.fetchall())

    def last_journey(self, scenario: str, customer_id: str) -> Journey | None:
        """The customer's most recent journey in a scenario."""
        found = self._journeys(
            "WHERE scenario = ? AND customer_id = ? ORDER BY entered_at DESC LIMIT 1", [scenario, customer_id]
        )
        return found[0] if found else None

    def _journeys(self, where: str, params: list[Any], context: str = "context") -> list[Journey]:
        found = self._select(
            "SELECT id, scenario, customer_id, entry_key, status, holdout, cursor, waiting_for, version,"
            f" {context} AS context, entered_at, ended_at FROM journeys {where}",
            params,
        )
        journeys = (
            self._read_row(
                "journeys",
                row["id"],
                lambda row=row: Journey(
                    **row
                    | {
                        "holdout": bool(row["holdout"]),
                        "version": rows.integer(row["version"]),
                        "context": rows.json_value(row["context"], dict),
                        "entered_at": parse_time(row["entered_at"]),
                        "ended_at": parse_time(row["ended_at"]) if row["ended_at"] else None,
                    }
                ),
            )
            for row in found
        )
        return [journey for journey in journeys if journey is not None]

    def add_journal(self, entry: JournalEntry) -> None:
        """Append one line to a customer's timeline."""
        self.db.execute(_ADD_JOURNAL, journal_row(entry))

    def add_journal_lines(self, at: datetime, scenario: str, lines: list[tuple[str, str, str, str]]) -> None:
        """Append many lines of one moment and scenario to the timeline in one statement, in the
        order given, each (kind, customer id, journey id, reason)."""
        same = {"at": to_iso(at), "scenario": scenario}
        self._insert_all("journal", ("kind", "customer_id", "journey_id", "reason"), lines, same=same)

    def add_journal_entries(self, entries: list[JournalEntry]) -> None:
        """Append many lines to the timeline in one statement, in the order given."""
        self._insert_all("journal", _JOURNAL_COLUMNS, map(journal_row, entries))

    def journal(self, customer_id: str | None = None) -> list[JournalEntry]:
        """Timeline lines (of one customer, or all), in time order."""
        where, params = ("WHERE customer_id = ?", [customer_id]) if customer_id else ("", [])
        found = self._select(
            f"SELECT id, at, {', '.join(JOURNAL_FIELDS)} FROM journal {where} ORDER BY at, id", params
        )
        return [entry for _, entry in self._journal_entries(found)]

    def journal_page(self, after: int, limit: int) -> list[tuple[int, JournalEntry]]:
        """Up to `limit` timeline lines written after line `after`, as (line, entry), in the order
        they were written (time order on a clock that only moves forward, as `simulate`'s)."""
        found = self._select(
            f"SELECT id, at, {', '.join(JOURNAL_FIELDS)} FROM journal WHERE id > ? ORDER BY id LIMIT ?",
            [after, limit],
        )
        return self._journal_entries(found)

    def _journal_entries(self, found: list[dict[str, Any]]) -> list[tuple[int, JournalEntry]]:
        entries = (
            (
                row["id"],
                self._read_row(
                    "journal",
                    row["id"],
                    lambda row=row: JournalEntry(
                        parse_time(row["at"]), *(row[name] for name in JOURNAL_FIELDS)
                    ),
                ),
            )
            for row in found
        )
        return [(line, entry) for line, entry in entries if entry is not None]
