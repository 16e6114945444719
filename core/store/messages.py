"""Messages: what is to be sent and what became of it, what the contact plan counts, and the
feedback events about them (their rules: core/feedback.py)."""

from __future__ import annotations

import json
from collections.abc import Collection, Sequence
from datetime import datetime
from typing import Any

from boomerang.clock import parse_time, to_iso
from boomerang.erasure import ANONYMOUS_PREFIX
from boomerang.feedback import effect
from boomerang.model import Event, ProfileUpdate, Sent
from boomerang.store import rows
from boomerang.store.events import Events

# A message's engagement, from its best receipt, averaged; and the messages that have one. In
# whole tenths, as the running totals of `engagement` (migration 8) add them up: the same
# figure whichever is read.
_ENGAGEMENT = (
    "sum(CASE WHEN status = 'failed' THEN 0 WHEN clicked_at IS NOT NULL THEN 10"
    " WHEN opened_at IS NOT NULL THEN 6 WHEN delivered_at IS NOT NULL THEN 3 ELSE 1 END)"
    " / (10.0 * count(*))"
    " AS mean, count(*) AS n"
)
_ENGAGED = "FROM messages WHERE status IN ('sent', 'delivered', 'failed') AND channel IS NOT NULL"
# The columns of `message_states`: what `MessageRecord` needs and a feedback event names.
_STATE_COLUMNS = "id, customer_id, journey_id, scenario, step, template, category, channel, status"


# One encoder for every message's JSON columns: `json.dumps` with options builds a new one per call.
_encode_value = json.JSONEncoder(ensure_ascii=False, default=str).encode


def message_values(fields: dict[str, Any]) -> dict[str, Any]:
    """A message's columns as they are stored: its dicts, lists and tuples as JSON."""
    return {
        key: _encode_value(value) if isinstance(value, dict | list | tuple) else value
        for key, value in fields.items()
    }


class Messages(Events):
    """The `messages` table."""

    def insert_message(self, fields: dict[str, Any]) -> None:
        """Store a message to be sent; its id is its idempotency key (one stored already is left
        as it is). One statement: sqlite-utils' `insert` reads the table's schema first."""
        self.insert_messages([message_values(fields)])

    def insert_messages(self, messages: list[dict[str, Any]]) -> None:
        """Store many messages, each as `message_values` gives it, in one statement per set of
        columns; one whose id is stored already is left as it is."""
        by_columns: dict[tuple[str, ...], list[list[Any]]] = {}
        for values in messages:
            by_columns.setdefault(tuple(values), []).append(list(values.values()))
        for columns, rows_of_values in by_columns.items():  # the engine's own keys, never input
            self._insert_all("messages", columns, rows_of_values, or_ignore=True)

    def message(self, message_id: str) -> dict[str, Any] | None:
        """A stored message as a dict (JSON columns decoded)."""
        found = self._select("SELECT * FROM messages WHERE id = ?", [message_id])
        if not found:
            return None
        return self._read_row("messages", message_id, lambda: rows.message(found[0]))

    def messages_sending(self) -> list[dict[str, Any]]:
        """Messages marked `sending`: at start, those a process that died was in the middle of."""
        ids = [row["id"] for row in self._select("SELECT id FROM messages WHERE status = 'sending'")]
        return [record for record in map(self.message, ids) if record is not None]

    def update_message(self, message_id: str, **fields: Any) -> None:
        """Change a message's status, channel, detail..."""
        self._update("messages", message_id, fields)

    def update_messages(self, changes: Sequence[tuple[str, dict[str, Any]]]) -> None:
        """`update_message` for many messages, in their order: one statement per set of columns."""
        by_columns: dict[tuple[str, ...], list[list[Any]]] = {}
        for message_id, fields in changes:
            by_columns.setdefault(tuple(fields), []).append([*message_values(fields).values(), message_id])
        for columns, rows_of_values in by_columns.items():
            assigned = ", ".join(f'"{name}" = ?' for name in columns)  # the engine's own keys, never input
            self.db.conn.executemany(f"UPDATE messages SET {assigned} WHERE id = ?", rows_of_values)

    def messages(self, message_ids: Collection[str]) -> dict[str, dict[str, Any]]:
        """Stored messages by id, in one query (JSON columns decoded); unknown ids are left out."""
        found = self._select(
            "SELECT * FROM messages WHERE id IN (SELECT value FROM json_each(?))",
            [json.dumps(list(message_ids))],
        )
        read = (
            (row["id"], self._read_row("messages", row["id"], lambda row=row: rows.message(row)))
            for row in found
        )
        return {message_id: record for message_id, record in read if record is not None}

    def message_states(self, message_ids: Collection[str]) -> dict[str, dict[str, Any]]:
        """What the send path checks of stored messages, by id, in one query: their plain columns
        (status, channel, journey, template...), none of the JSON ones, so that nothing is decoded."""
        found = self._select(
            f"SELECT {_STATE_COLUMNS} FROM messages WHERE id IN (SELECT value FROM json_each(?))",
            [json.dumps(list(message_ids))],
        )
        return {row["id"]: row for row in found}

    def sent_messages(self, customer_ids: Collection[str], since: datetime) -> dict[str, list[Sent]]:
        """Messages that went (or are going) to each of the customers since a moment, oldest first:
        what caps and the gap count. One query for all of them; a customer with none maps to []."""
        found = self._select(
            "SELECT id, customer_id, sent_at, channel, category FROM messages"
            " WHERE customer_id IN (SELECT value FROM json_each(?)) AND sent_at >= ?"
            # `unknown`: cut off mid-send by a crash, so it may well have arrived
            " AND status IN ('sending', 'sent', 'delivered', 'unknown') ORDER BY sent_at",
            [json.dumps(list(customer_ids)), to_iso(since)],
        )
        sent: dict[str, list[Sent]] = {customer_id: [] for customer_id in customer_ids}
        for row in found:
            item = self._read_row(
                "messages",
                row["id"],
                lambda row=row: Sent(parse_time(row["sent_at"]), row["channel"], row["category"]),
            )
            if item is not None:
                sent[row["customer_id"]].append(item)
        return sent

    def engagement(self) -> dict[str, tuple[float, int]]:
        """Per channel: the mean engagement of everyone's messages (clicked 1, opened .6,
        delivered .3, sent .1, failed 0) and how many messages that is.

        Read from the running totals that triggers keep as messages change, rather than from
        every message: the contact plan asks every few minutes."""
        found = self._select(
            "SELECT channel, points / (10.0 * messages) AS mean, messages AS n"
            " FROM engagement WHERE messages > 0"
        )
        return {row["channel"]: (float(row["mean"]), int(row["n"])) for row in found}

    def engagement_of(self, customer_ids: Collection[str]) -> dict[str, dict[str, tuple[float, int]]]:
        """`engagement()` for each of the customers, over their own messages, in one query."""
        found = self._select(
            f"SELECT customer_id, channel, {_ENGAGEMENT} {_ENGAGED}"
            " AND customer_id IN (SELECT value FROM json_each(?)) GROUP BY customer_id, channel",
            [json.dumps(list(customer_ids))],
        )
        figures: dict[str, dict[str, tuple[float, int]]] = {customer_id: {} for customer_id in customer_ids}
        for row in found:
            figures[row["customer_id"]][row["channel"]] = (float(row["mean"]), int(row["n"]))
        return figures

    def chain_delivered(self, first_id: str) -> bool:
        """Whether a message or one of its fallbacks was delivered (so no further fallback goes)."""
        row = self.db.execute(
            "SELECT 1 FROM messages WHERE (id = ? OR fallback_of = ?) AND status = 'delivered' LIMIT 1",
            [first_id, first_id],
        ).fetchone()
        return row is not None

    def message_by_provider_id(self, provider_id: str) -> dict[str, Any] | None:
        """A message by the id its provider gave it (a Twilio SID...)."""
        row = self.db.execute("SELECT id FROM messages WHERE provider_id = ?", [provider_id]).fetchone()
        return self.message(row[0]) if row else None

    def record_sent(
        self, message_ids: Sequence[str], now: datetime, states: dict[str, dict[str, Any]] | None = None
    ) -> None:
        """Store the `message.sent` feedback of many messages at once, in their order: what
        `record_feedback` stores for each, with one read and one ingest for all of them (the
        send itself wrote the message, so the event changes nothing else). Unknown ids are
        skipped; a message sent twice (a retry after a crash) is one event. `states` are the
        messages' `message_states` if the caller read them in this transaction already: what
        an event names of its message (its customer, channel, step) stays as it is."""
        found = states if states is not None else self.message_states(message_ids)
        events = [
            _feedback_event(found[message_id], "message.sent", {}, None, now)
            for message_id in message_ids
            if message_id in found
        ]
        if events:
            self.ingest(events, now)

    def record_feedback(
        self, message_id: str, event_type: str, data: dict[str, Any], key: str | None, now: datetime
    ) -> tuple[bool, Event | None]:
        """Store a feedback event about a message and apply it; (message known?, new event or None).

        The event id is derived from the message, the type and `key`, so a receipt that
        arrives twice (providers retry) is stored and applied once. What it changes is
        `feedback.effect`'s to say; this is the only place it is applied.
        """
        record = self.message(message_id)
        if record is None:
            return False, None
        customer_id = record["customer_id"]
        if customer_id.startswith(ANONYMOUS_PREFIX):
            return True, None  # its customer was erased: nobody to record it for
        event = _feedback_event(record, event_type, data, key, now)
        with self.db.atomic():
            if not self.ingest([event], now):
                return True, None
            change = effect(event_type, data, record["channel"])
            columns, params = [], []
            if change.status:
                columns.append("status = ?")
                params.append(change.status)
            if change.detail is not None:
                columns.append("detail = ?")
                params.append(change.detail)
            if change.stamp:
                columns.append(f"{change.stamp} = coalesce({change.stamp}, ?)")
                params.append(to_iso(now))
            if columns:
                marks = ", ".join("?" for _ in change.only_from)
                self.db.execute(
                    f"UPDATE messages SET {', '.join(columns)} WHERE id = ?"
                    + (f" AND status IN ({marks})" if change.only_from else ""),
                    [*params, message_id, *change.only_from],
                )
            if change.unreachable is not None and record["channel"]:
                self.mark_unreachable(customer_id, record["channel"], change.unreachable)
            if change.opt_out:
                self.opt_out(customer_id, change.opt_out, now)
        return True, event


def _feedback_event(
    record: dict[str, Any], event_type: str, data: dict[str, Any], key: str | None, now: datetime
) -> Event:
    """The feedback event of `event_type` about a stored message; its id is derived from the
    message, the type and `key`, so that the same feedback twice is one event."""
    return Event(
        id=f"{event_type}:{record['id']}" + (f":{key}" if key else ""),
        type=event_type,
        at=now,
        profile=ProfileUpdate(id=record["customer_id"]),
        data={
            "message": {field: record[field] for field in ("id", "channel", "template", "scenario", "step")},
            **data,
        },
        source=record["channel"] or "feedback",
    )
