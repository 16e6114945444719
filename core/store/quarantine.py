"""The quarantine: rows that cannot be read back are recorded, logged once and set aside.

Every table family reads its rows through `Quarantine._read_row`, so that one damaged row
fails itself, never the loop or the start that met it.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, TypeVar

from boomerang.clock import to_iso
from boomerang.store.connection import Connection

T = TypeVar("T")
log = logging.getLogger("boomerang.store")

# What decoding a damaged row raises: ValueError for a timestamp, JSON, number or timezone that
# does not read back (the decoders in rows.py turn every such finding into one), and what
# `json.loads` raises on absurd input. Anything else is a bug and stays loud.
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


class Quarantine(Connection):
    """Reading rows back safely, and the rows set aside."""

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
        except self.errors as exc:  # a read-only store (explain) still skips the row
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
        return self._select(
            'SELECT table_name AS "table", row_id, reason, found_at FROM quarantine'
            f" WHERE (table_name = 'customers' AND row_id = ?) OR {owned} ORDER BY found_at, rowid",
            [customer_id] * 4,
        )


def _dump_row(content: Any) -> str | None:
    """A raw row as text for the quarantine table, whatever its values are."""
    if content is None:
        return None
    values = content.values() if isinstance(content, dict) else content
    return json.dumps(list(values), default=repr, ensure_ascii=False)
