"""The database: the only package that speaks SQL.

One SQLite file in WAL mode, reached through sqlite-utils 4 (`db.atomic()` for transactions,
rows read as dicts keyed by column).
`Store` is the facade every caller uses; it is made of one class per table family, each in
its own module, on top of the connection and the quarantine of unreadable rows:

- connection.py: opening (read-write, read-only, private file), the store thread, transactions, migrating
- migrations.py: the numbered migrations (never edit a published one)
- migrations_postgresql.py: the same migrations written for PostgreSQL, and applying them
- quarantine.py: reading rows back safely; unreadable rows set aside
- rows.py: decoding stored rows, every column checked
- customers.py: customers and identities: resolve, merge, profile writes
- events.py: storing events, the engine's queue of unhandled ones, a customer's history
- journeys.py: journeys and the journal
- messages.py: messages, what caps count, feedback events
- erasure.py: forgetting a customer (`forget`), their rows kept anonymously
- jobs.py: the `JobQueue` interface and its SQLite queue
- visits.py: a browser's open visit (a `visit` job) and the `site.left` that ends it
- promo_codes.py: the personal codes issued, one per message, and their redemption
- copy.py: `boomerang migrate --to`, the SQLite file copied into an empty PostgreSQL database
- report.py: `Reports`, the report's read-only connection and aggregate queries (not in `Store`)
- rate_buckets.py: `SharedRateLimits`, the providers' rate limits in PostgreSQL (not in `Store`)

The rules the store applies are pure modules above it: core/profiles.py (profile updates,
merging, address renewal), core/feedback.py (what feedback changes), core/promo_codes.py
(codes and their redemption) and core/erasure.py (what an erased customer's rows keep).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, TypeVar

from boomerang.store.connection import (
    Connection,
    DatabaseUnreachable,
    StoreError,
    StoreUnavailable,
    lost_race,
    unavailable,
)
from boomerang.store.erasure import Erasure
from boomerang.store.jobs import JobQueue, Jobs
from boomerang.store.journeys import Journeys
from boomerang.store.migrations import MIGRATIONS
from boomerang.store.promo_codes import PromoCodes
from boomerang.store.visits import Visits

if TYPE_CHECKING:
    from boomerang.config import Config

__all__ = [
    "MIGRATIONS",
    "JobQueue",
    "Store",
    "StoreError",
    "StoreUnavailable",
    "lost_race",
    "open_store",
    "unavailable",
]

C = TypeVar("C", bound=Connection)


class Store(Erasure, Visits, Journeys, PromoCodes, Jobs):
    """The one database of an installation: a SQLite file, or a PostgreSQL database that
    several daemons may share (`Store(url)` opens `postgresql.on_postgresql(Store)`)."""


def open_store(config: Config, kind: type[C] = Store, **options: Any) -> C:  # type: ignore[assignment]
    """The store (or another `Connection`: `Reports`) of the database `config` names; a server
    that does not answer is a `StoreError` that says where the setting is."""
    try:
        return kind(config.database, **options)
    except DatabaseUnreachable as exc:
        file, line, col = config.where("database")
        raise DatabaseUnreachable(f"{file}:{line}:{col}: database: {exc}") from exc
