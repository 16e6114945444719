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


class Journeys(Quarantine):
    """The `journeys` and `journal` tables."""

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
        found = self._journeys("WHERE id = ?", [journey_id])
        return found[0] if found else None

    def journeys(self, journey_ids: Collection[str]) -> dict[str, Journey]:
        """Journeys by id, in one query; unknown ids, and rows that cannot be read back (each
        set aside alone, as `journey` does), are left out."""
        wanted = json.dumps(list(journey_ids))
        found = self._journeys("WHERE id IN (SELECT value FROM json_each(?))", [wanted])
        return {journey.id: journey for journey in found}

    def journeys_of(self, customer_id: str, status: str | None = None) -> list[Journey]:
        """A customer's journeys (optionally only those with a status), oldest first."""
        if status:
            return self._journeys(
                "WHERE customer_id = ? AND status = ? ORDER BY entered_at", [customer_id, status]
            )
        return self._journeys("WHERE customer_id = ? ORDER BY entered_at", [customer_id])

    def last_journey(self, scenario: str, customer_id: str) -> Journey | None:
        """The customer's most recent journey in a scenario."""
        found = self._journeys(
            "WHERE scenario = ? AND customer_id = ? ORDER BY entered_at DESC LIMIT 1", [scenario, customer_id]
        )
        return found[0] if found else None

    def _journeys(self, where: str, params: list[Any]) -> list[Journey]:
        found = self._select(
            "SELECT id, scenario, customer_id, entry_key, status, holdout, cursor, waiting_for, version,"
            f" context, entered_at, ended_at FROM journeys {where}",
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
