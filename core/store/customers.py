"""Customers and identities: finding or creating a customer from an event's identities, merging
two customers into one, and writing what the profile rules (core/profiles.py) decide."""

from __future__ import annotations

import json
import secrets
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from boomerang.audiences import Condition
from boomerang.clock import to_iso
from boomerang.model import Customer, Event, ProfileUpdate
from boomerang.plugin_manager import installed_address_fields
from boomerang.profiles import (
    ADDRESS_JSON,
    IDENTITY_FIELDS,
    PROFILE_FIELDS,
    identity_candidates,
    merged,
    updated,
)
from boomerang.store import rows
from boomerang.store.audiences import audience_where
from boomerang.store.quarantine import UNREADABLE, Quarantine

# Tables whose rows belong to a customer; merging two customers re-points them all.
CUSTOMER_TABLES = (
    "events",
    "identities",
    "journeys",
    "messages",
    "journal",
    "promo_codes",
    "order_items",
    "cart_items",
)


class WorkingSet:
    """What storing one group of events has read and written of identities and customers, so
    that a customer's many events in the group cost one read and one write.

    `owners` maps (kind, value) to the customer the identity belongs to (None: nobody);
    `rows` holds customer rows as they are now, `dirty` the columns not yet written of each.
    Anything that writes around it (a merge, a rename, a moved chat or browser) settles it
    first: `Customers._settle` writes what is dirty and forgets the rest. Each request's batch
    ends with `Customers._flush`, inside its savepoint.
    """

    def __init__(self) -> None:
        self.owners: dict[tuple[str, str], str | None] = {}
        self.rows: dict[str, dict[str, Any]] = {}
        self.dirty: dict[str, dict[str, Any]] = {}


@dataclass(frozen=True)
class ScheduleZones:
    """Whose clock a schedule's tick is for: customers whose profile names one of `names`, and
    with `plan` those who live by the plan's timezone (no timezone, or a name that is none:
    not one of `known`, the valid names profiles hold)."""

    names: list[str]
    plan: bool
    known: list[str]

    @property
    def where(self) -> str:
        """The SQL condition on `customers`."""
        own = "timezone IN (SELECT value FROM json_each(:zones_names))"
        if not self.plan:
            return f"({own})"
        by_plan = "(timezone IS NULL OR timezone NOT IN (SELECT value FROM json_each(:zones_known)))"
        return f"({own} OR {by_plan})"

    @property
    def params(self) -> dict[str, str]:
        """The named parameters of `where`."""
        return {"zones_names": json.dumps(self.names), "zones_known": json.dumps(self.known)}


@dataclass(frozen=True)
class AudienceQuery:
    """Which customers the next page of a schedule's audience holds (`Customers.audience_page`):
    up to `limit` in id order after `after` whom `scenario`'s reentry rule lets in. Left out: a
    customer with a journey in it still active, or one entered after `entered_since` (a stored
    timestamp; "" for any journey at all, None for none), or one entered on `entry_key` already
    (a page entered before a crash); with `audience` (a translated audience expression and the
    moment it is evaluated at) one the expression does not let in, and with `zones` one whose
    clock the tick is not for."""

    scenario: str
    after: str
    limit: int
    entered_since: str | None
    audience: tuple[Condition, datetime] | None = None
    zones: ScheduleZones | None = None
    entry_key: str | None = None


class Customers(Quarantine):
    """The `customers` and `identities` tables."""

    # Set while `Events.ingest_group` stores a group of events; None otherwise.
    _working: WorkingSet | None = None

    # The profile fields each channel's address is made from (`plugin_manager.address_fields`
    # of the registry's channel kinds), so that a new address lifts "known bad": set by whoever
    # builds the registry (the daemon at start and on reload, simulate). Unset, those of the
    # channels the installed plugins declare.
    address_fields: Mapping[str, tuple[str, ...]] | None = None

    def _owner(self, kind: str, value: str) -> str | None:
        working = self._working
        if working is not None and (kind, value) in working.owners:
            return working.owners[kind, value]
        row = self.db.execute(
            "SELECT customer_id FROM identities WHERE kind = ? AND value = ?", [kind, value]
        ).fetchone()
        owner = row[0] if row else None
        if working is not None:
            working.owners[kind, value] = owner
        return owner

    def _know_owners(self, identities: set[tuple[str, str]]) -> None:
        """Read the owners of many identities at once into the working set (set-based lookup)."""
        working = self._working
        assert working is not None
        wanted = [identity for identity in identities if identity not in working.owners]
        for start in range(0, len(wanted), 400):
            chunk = wanted[start : start + 400]
            working.owners.update(dict.fromkeys(chunk))
            pairs = " OR ".join("(kind = ? AND value = ?)" for _ in chunk)
            found = self.db.execute(
                f"SELECT kind, value, customer_id FROM identities WHERE {pairs}",
                [part for identity in chunk for part in identity],
            )
            working.owners.update(((kind, value), owner) for kind, value, owner in found)

    def _know_rows(self, customer_ids: set[str]) -> None:
        """Read many customers' rows at once into the working set; unreadable ones are left out
        (reading them again sets them aside, as `customer_row` does)."""
        working = self._working
        assert working is not None
        wanted = [customer_id for customer_id in customer_ids if customer_id not in working.rows]
        for start in range(0, len(wanted), 500):
            chunk = wanted[start : start + 500]
            marks = ", ".join("?" for _ in chunk)
            for row in self._select(f"SELECT * FROM customers WHERE id IN ({marks})", chunk):
                readable = self._read_row("customers", row["id"], lambda row=row: rows.customer_values(row))
                if readable is not None:
                    working.rows[row["id"]] = row

    def _flush(self) -> None:
        """Write the working set's pending profile columns (what it read stays true)."""
        working = self._working
        if working is None:
            return
        self._update_many("customers", working.dirty)
        working.dirty.clear()

    def _settle(self) -> None:
        """Write the working set's pending profile columns and forget what it read: something
        is about to write around it."""
        working = self._working
        if working is None:
            return
        self._flush()
        working.rows.clear()
        working.owners.clear()

    def _create_customer(self, customer_id: str | None, now: str, at: str) -> str:
        customer_id = customer_id or f"anon-{secrets.token_hex(8)}"
        cursor = self.db.execute(
            "INSERT INTO customers (id, created_at, updated_at) VALUES (?, ?, ?) RETURNING *",
            [customer_id, now, at],
        )
        keys = [column[0] for column in cursor.description]
        row = dict(zip(keys, cursor.fetchone(), strict=True))
        if self._working is not None:  # a row just made of the defaults: nothing to check
            self._working.rows[customer_id] = row
        self._add_identity("id", customer_id, customer_id)
        return customer_id

    def _resolve_customer(self, profile: ProfileUpdate, now: str, at: str) -> tuple[str, set[str]]:
        """A verified event's customer: every customer its identities point to, merged into one."""
        found: list[str] = []
        identities = profile.identities()
        for kind, value in identities:
            owner = self._owner(kind, value)
            if owner and owner not in found:
                found.append(owner)
        if len(found) > 1:  # a customer known by the shop's own id survives over an anonymous one
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
        for kind, value in identities:
            self._add_identity(kind, value, customer_id)
        return customer_id, set()

    def _resolve_claim(self, profile: ProfileUpdate, now: str, at: str) -> tuple[str, set[str]]:
        """An unverified event's customer, and the profile fields it may not set: never a merge
        of two people.

        The customer is the one the claim's anchor names: the id a signed token gave, else the
        browser (`visitor`) the claim came from, else its first identity. A chat the event
        names moves to that customer (the Bot API itself says the chat sent the token), and so
        does a browser, bringing along the anonymous profile it had if that profile holds
        nothing but browsers (its views and cart become the customer's). An email or phone is
        taken only when nobody has it and the customer has none yet: a claim never takes an
        address from someone else nor replaces one.
        """
        identities = profile.identities()
        anchor = next(
            (pair for kind in ("id", "visitor") for pair in identities if pair[0] == kind), identities[0]
        )
        customer_id = self._owner(*anchor) or self._create_customer(profile.id, now, at)
        self._add_identity(*anchor, customer_id)
        refused: set[str] = set()
        for kind, value in identities:
            if (kind, value) == anchor:
                continue
            owner = self._owner(kind, value)
            if kind == "visitor":
                if owner not in (None, customer_id) and self._only_browsers(owner):
                    self._merge(owner, into=customer_id)
            elif kind == "telegram":
                if owner not in (None, customer_id):
                    self._settle()  # the other customer's row changes under the working set
                    self.db.execute(
                        "UPDATE customers SET telegram_chat_id = NULL WHERE id = ? AND telegram_chat_id = ?",
                        [owner, value],
                    )
            elif owner != customer_id and (owner is not None or self._has_field(customer_id, kind)):
                refused.add(IDENTITY_FIELDS[kind])
                continue
            self._add_identity(kind, value, customer_id)
        return customer_id, refused

    def _only_browsers(self, customer_id: str) -> bool:
        """Whether a customer is an anonymous visitor: made here, known by nothing but browsers."""
        if not customer_id.startswith("anon-"):
            return False
        row = self.db.execute(
            "SELECT 1 FROM identities WHERE customer_id = ? AND kind NOT IN ('id', 'visitor') LIMIT 1",
            [customer_id],
        ).fetchone()
        return row is None

    def _has_field(self, customer_id: str, kind: str) -> bool:
        """Whether the customer has a value for the profile field of identity `kind` already."""
        working = self._working
        row = working.rows.get(customer_id) if working is not None else None
        row = row or self.customer_row(customer_id)
        return row is not None and bool(row[IDENTITY_FIELDS[kind]])

    def _add_identity(self, kind: str, value: str, customer_id: str) -> None:
        working = self._working
        if working is not None and working.owners.get((kind, value)) == customer_id:
            return  # already so
        self.db.execute(
            "INSERT INTO identities (kind, value, customer_id) VALUES (?, ?, ?)"
            " ON CONFLICT (kind, value) DO UPDATE SET customer_id = excluded.customer_id",
            [kind, value, customer_id],
        )
        if working is not None:
            working.owners[kind, value] = customer_id

    def _repoint(self, old: str, new: str) -> None:
        # Both customers may be in the same scenario with the same entry: the survivor's
        # journey stays, the other is ended and kept under a distinct entry key. Its jobs go
        # in the same transaction (the jobs live in this database, beside the journeys).
        self.db.execute(
            "UPDATE journeys SET customer_id = ? WHERE customer_id = ? AND NOT EXISTS (SELECT 1 FROM"
            " journeys AS kept WHERE kept.customer_id = ? AND kept.scenario = journeys.scenario"
            " AND kept.entry_key = journeys.entry_key)",
            [new, old, new],
        )
        for row in self._select("SELECT id FROM journeys WHERE customer_id = ?", [old]):
            self.db.execute("DELETE FROM jobs WHERE journey_id = ?", [row["id"]])
        self.db.execute(
            "UPDATE journeys SET customer_id = ?, entry_key = entry_key || ':merged:' || ?, cursor = NULL,"
            " status = CASE status WHEN 'active' THEN 'exited' ELSE status END WHERE customer_id = ?",
            [new, old, old],
        )
        for table in CUSTOMER_TABLES:
            if table != "journeys":
                self.db.execute(f"UPDATE {table} SET customer_id = ? WHERE customer_id = ?", [new, old])

    def _rename(self, old: str, new: str) -> None:
        self._settle()
        self.db.execute("UPDATE customers SET id = ? WHERE id = ?", [new, old])
        self._repoint(old, new)

    def _merge(self, loser: str, into: str) -> None:
        """Fold one customer into another (the rules: `profiles.merged`)."""
        self._settle()
        survivor, other = self.customer_row(into), self.customer_row(loser)
        if survivor is None or other is None:
            return
        self._update("customers", into, merged(survivor, other))
        self.db.execute("DELETE FROM customers WHERE id = ?", [loser])
        self._repoint(loser, into)

    def _update_profile(self, customer_id: str, event: Event, now: str, refused: set[str]) -> None:
        """Apply what the event says about the customer (the rules: `profiles.updated`).

        Storing a group of events, only the columns that change are kept in the working set,
        written once per customer when it settles."""
        if event.profile.push_subscriptions:
            self._take_push_subscriptions(customer_id, event.profile.push_subscriptions)
        working = self._working
        row = working.rows.get(customer_id) if working is not None else None
        if row is None:
            row = self.customer_row(customer_id)
            if row is None:  # unreadable, set aside: the event is kept, the profile left alone
                return
            if working is not None:
                working.rows[customer_id] = row
        fields = self.address_fields if self.address_fields is not None else installed_address_fields()
        changes = {
            name: value
            for name, value in updated(row, event, now, refused, fields).items()
            if row[name] != value
        }
        if not changes:
            return
        if working is None:
            self._update("customers", customer_id, changes)
            return
        row.update(changes)
        working.dirty.setdefault(customer_id, {}).update(changes)

    def _take_push_subscriptions(self, customer_id: str, subscriptions: list[dict]) -> None:
        """A browser's subscription belongs to one customer: whoever subscribed it last."""
        self._settle()  # other customers' rows are read and written here
        for subscription in subscriptions:
            endpoint = subscription.get("endpoint")
            if not isinstance(endpoint, str):
                continue
            # instr() narrows the scan to the rows that mention the endpoint at all
            holders = self._select(
                "SELECT id, push_subscriptions FROM customers WHERE id != ? AND instr(push_subscriptions, ?)",
                [customer_id, json.dumps(endpoint)],
            )
            for row in holders:
                kept = [
                    sub for sub in json.loads(row["push_subscriptions"]) if sub.get("endpoint") != endpoint
                ]
                self._update("customers", row["id"], {"push_subscriptions": json.dumps(kept)})

    def customer_row(self, customer_id: str) -> dict[str, Any] | None:
        """The raw stored row of a customer, by canonical id; None if it cannot be read back."""
        row = self._customer_columns(customer_id)
        if row is None or self._read_row("customers", customer_id, lambda: rows.customer(row)) is None:
            return None
        return row

    def _customer_columns(self, customer_id: str) -> dict[str, Any] | None:
        found = self._select("SELECT * FROM customers WHERE id = ?", [customer_id])
        return found[0] if found else None

    def find_customer(self, identity: str) -> Customer | None:
        """A customer by any identity: their id (or a merged-away id), email or phone."""
        row = self.db.execute(
            "SELECT customer_id FROM identities WHERE value IN (?, ?, ?) ORDER BY kind = 'id' DESC LIMIT 1",
            identity_candidates(identity),
        ).fetchone()
        if row is None:
            return None
        return self.customer(row[0])

    def customer(self, customer_id: str) -> Customer | None:
        """A customer by canonical id; None if there is none or the row cannot be read back."""
        row = self._customer_columns(customer_id)
        if row is None:
            return None
        return self._read_row("customers", customer_id, lambda: rows.customer(row))

    def customers(self, customer_ids: Collection[str]) -> dict[str, Customer]:
        """Many customers by canonical id in one read per 500; those there are not, or that
        cannot be read back (set aside as `customer` does), are left out."""
        found: dict[str, Customer] = {}
        wanted = list(customer_ids)
        for start in range(0, len(wanted), 500):
            chunk = wanted[start : start + 500]
            marks = ", ".join("?" for _ in chunk)
            for row in self._select(f"SELECT * FROM customers WHERE id IN ({marks})", chunk):
                customer = self._read_row("customers", row["id"], lambda row=row: rows.customer(row))
                if customer is not None:
                    found[row["id"]] = customer
        return found

    def set_attributes(self, customer_id: str, attributes: dict[str, Any]) -> None:
        """Merge values into a customer's free-form attributes."""
        row = self.customer_row(customer_id)
        if row is None:
            return
        combined = {**json.loads(row["attributes"]), **attributes}
        self._update("customers", customer_id, {"attributes": json.dumps(combined, ensure_ascii=False)})

    def audience_page(self, query: AudienceQuery) -> tuple[list[Customer], str | None]:
        """A page of an audience (see `AudienceQuery`), and the id the next page starts after
        (None: no more). A row that cannot be read back is set aside and left out."""
        found = self._audience_rows("*", query)
        customers = (
            self._read_row("customers", row["id"], lambda row=row: rows.customer(row)) for row in found
        )
        following = found[-1]["id"] if len(found) == query.limit else None
        return [customer for customer in customers if customer is not None], following

    def audience_members(self, query: AudienceQuery) -> tuple[list[tuple[str, str | None]], str | None]:
        """`audience_page` with each customer as (id, timezone), for journeys started without
        the rest of the profile (`Journeys._start_waiting`). Each row is still checked to read
        back, by SQLite where it can vouch for it (`rows.CUSTOMER_READS_BACK`) and by decoding
        the few it cannot: a row that does not read back is set aside and left out, as there."""
        found = self._audience_rows(f"id, timezone, {rows.CUSTOMER_READS_BACK} AS plain", query)
        known = {zone for zone in {row["timezone"] for row in found} if _zone_reads_back(zone)}
        plain = [row["plain"] and row["timezone"] in known for row in found]
        doubtful = [row["id"] for row, vouched in zip(found, plain, strict=True) if not vouched]
        decoded = self.customers(doubtful)
        members = [
            (row["id"], row["timezone"])
            for row, vouched in zip(found, plain, strict=True)
            if vouched or row["id"] in decoded
        ]
        return members, found[-1]["id"] if len(found) == query.limit else None

    def _audience_rows(self, columns: str, query: AudienceQuery) -> list[dict[str, Any]]:
        """The `columns` of an audience page's rows (`audience_page`), none decoded."""
        where, params = audience_where(*query.audience) if query.audience is not None else ("TRUE", {})
        if query.zones is not None:
            where = f"{where} AND {query.zones.where}"
            params = {**params, **query.zones.params}
        return self._select(
            f"SELECT {columns} FROM customers WHERE id > :after AND NOT EXISTS (SELECT 1 FROM journeys"
            " WHERE scenario = :scenario AND customer_id = customers.id"
            " AND (status = 'active' OR entered_at > :since OR entry_key = :entry_key))"
            f" AND {where} ORDER BY id LIMIT :limit",
            {
                **params,
                "after": query.after,
                "scenario": query.scenario,
                "since": query.entered_since,
                "entry_key": query.entry_key,
                "limit": query.limit,
            },
        )

    def customers_with_date(self, field: str, month_days: list[str]) -> list[Customer]:
        """Customers whose date field (`birthday` or `attributes.x`) falls on one of `MM-DD`."""
        column = (
            "birthday" if field == "birthday" else f"json_extract(attributes, '$.{field.split('.', 1)[1]}')"
        )
        marks = ", ".join("?" for _ in month_days)
        ids = [
            row["id"]
            for row in self._select(
                f"SELECT id FROM customers WHERE substr({column}, -5) IN ({marks})", month_days
            )
        ]
        return [customer for customer in map(self.customer, ids) if customer is not None]

    def timezones(self) -> set[str]:
        """The timezones customers' profiles name (a date trigger's day comes in each of them)."""
        return {
            row["timezone"]
            for row in self._select("SELECT DISTINCT timezone FROM customers")
            if row["timezone"]
        }

    def opt_out(self, customer_id: str, channels: list[str] | tuple[str, ...], now: datetime) -> None:
        """The customer said no on these channels (`all` for every channel)."""
        row = self.customer_row(customer_id)
        if row is None:
            return
        opt_outs = json.loads(row["opt_outs"])
        opt_outs.update({channel: to_iso(now) for channel in channels})
        self._update("customers", customer_id, {"opt_outs": json.dumps(opt_outs)})

    def mark_unreachable(self, customer_id: str, channel: str, reason: str) -> None:
        """The customer's address on a channel is known bad (hard bounce, blocked bot...)."""
        row = self.customer_row(customer_id)
        if row is None:
            return
        unreachable = {**json.loads(row["unreachable"]), channel: reason or "address invalid"}
        self._update("customers", customer_id, {"unreachable": json.dumps(unreachable)})

    def set_profile(self, customer_id: str, fields: dict[str, Any]) -> None:
        """Store the address fields a channel's `forget()` gave (the map and lists as data)."""
        updates = {
            key: json.dumps(value, ensure_ascii=False) if key in ADDRESS_JSON else value
            for key, value in fields.items()
            if key in PROFILE_FIELDS or key in ADDRESS_JSON  # never a count, a stamp or an opt-out
        }
        if updates:
            self._update("customers", customer_id, updates)


def _zone_reads_back(zone: Any) -> bool:
    """Whether a stored timezone reads back (`rows.zone_name`)."""
    try:
        rows.zone_name(zone)
    except UNREADABLE:
        return False
    return True
