"""Erasure: a customer's personal data deleted, what reports count kept anonymously (the rules:
core/erasure.py)."""

from __future__ import annotations

import json
from datetime import datetime

from boomerang.clock import to_iso
from boomerang.erasure import Forgotten, anonymous_id, kept_data
from boomerang.profiles import identity_candidates
from boomerang.store.messages import Messages


class Erasure(Messages):
    """`forget`: one customer's profile, identities and personal data in their rows, erased."""

    def forget(self, identity: str, now: datetime) -> Forgotten | None:
        """Erase the customer with this id (or a merged-away id), email or phone, in one short
        transaction; None if there is no such customer.

        Deleted: the profile row (addresses, consents, push subscriptions, attributes), every
        identity pointing to it, and rows of theirs set aside in the quarantine. Their events,
        messages, journeys and journal lines stay for the counts under a new random id
        (`Forgotten.anonymous_id`) with the personal parts blanked: an event's data but for
        an order's or cart's total and currency, a message's context, links, promo code,
        provider id and detail, a journey's context. Their pending jobs and messages are
        cancelled and active journeys ended. A later event with the same email finds no one
        and starts a new customer.
        """
        with self.write_transaction():
            row = self.db.execute(
                "SELECT customer_id FROM identities WHERE value IN (?, ?, ?)"
                " ORDER BY kind = 'id' DESC LIMIT 1",
                identity_candidates(identity),
            ).fetchone()
            if row is None:
                return None
            customer_id = row[0]
            gone = Forgotten(customer_id, anonymous_id())
            stamp = to_iso(now)
            for journey in self._select("SELECT id FROM journeys WHERE customer_id = ?", [customer_id]):
                self.delete_jobs_of(journey["id"])
            gone.journeys = self.db.execute(
                "UPDATE journeys SET customer_id = ?, context = '{}', cursor = NULL, waiting_for = NULL,"
                " version = version + 1, ended_at = coalesce(ended_at, ?),"
                " status = CASE status WHEN 'active' THEN 'exited' ELSE status END WHERE customer_id = ?",
                [gone.anonymous_id, stamp, customer_id],
            ).rowcount
            messages = self._select(
                "SELECT id, channel FROM messages WHERE customer_id = ?", [customer_id]
            )
            gone.message_files = [(m["channel"], m["id"]) for m in messages if m["channel"]]
            gone.messages = self.db.execute(
                "UPDATE messages SET customer_id = ?, context = '{}', links = NULL, promo = NULL,"
                " provider_id = NULL, detail = NULL WHERE customer_id = ?",
                [gone.anonymous_id, customer_id],
            ).rowcount
            events = self._select("SELECT id, type, data FROM events WHERE customer_id = ?", [customer_id])
            self._forget_products(customer_id, [(event["type"], event["data"]) for event in events])
            self.db.conn.executemany(
                "UPDATE events SET customer_id = ?, data = ?, handled = 1 WHERE id = ?",
                [(gone.anonymous_id, _kept(event["data"]), event["id"]) for event in events],
            )
            gone.events = len(events)
            self.db.execute(
                "UPDATE journal SET customer_id = ? WHERE customer_id = ?", [gone.anonymous_id, customer_id]
            )
            # A code keeps counting as issued and redeemed, for nobody in particular.
            self.db.execute(
                "UPDATE promo_codes SET customer_id = ? WHERE customer_id = ?",
                [gone.anonymous_id, customer_id],
            )
            # What they bought still counts among the best sellers, under the anonymous id;
            # what they were about to buy is nobody's business any more.
            self.db.execute(
                "UPDATE order_items SET customer_id = ? WHERE customer_id = ?",
                [gone.anonymous_id, customer_id],
            )
            self.db.execute("DELETE FROM cart_items WHERE customer_id = ?", [customer_id])
            # An open visit would end in a `site.left` naming the browser, which would start a
            # profile for it again: the visit goes with the identities.
            self.db.execute(
                "DELETE FROM jobs WHERE key IN (SELECT 'visit:' || value FROM identities"
                " WHERE customer_id = ? AND kind = 'visitor')",
                [customer_id],
            )
            self.db.execute("DELETE FROM identities WHERE customer_id = ?", [customer_id])
            self.db.execute("DELETE FROM customers WHERE id = ?", [customer_id])
            self.db.execute(
                "DELETE FROM quarantine WHERE (table_name = 'customers' AND row_id = ?)"
                " OR (table_name IN ('events', 'messages', 'journeys') AND instr(content, ?))",
                [customer_id, json.dumps(customer_id)],
            )
        return gone


def _kept(data: str) -> str:
    """An event's stored data as an erased customer's event keeps it."""
    try:
        decoded = json.loads(data)
    except ValueError:
        return "{}"
    return json.dumps(kept_data(decoded) if isinstance(decoded, dict) else {})
