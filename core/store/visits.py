"""Visits: a browser's activity on the shop's site, and the `site.left` it ends with.

A visit is one `visit` job per browser (keyed `visit:<visitor>`), due when the browser has
been quiet for its source's idle time: every sign of activity moves it later and bumps its
`version`, so a visit lives in the database, not in a timer, and survives a restart or a
`kill -9`. When the job falls due the daemon stores one `site.left` event for the visit (its id
names the visitor and the last activity, so a re-run after a crash stores nothing twice).
A wait with `until_idle` does not end while its customer has a visit open
(`open_visit_until`).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

from boomerang.clock import parse_time, to_iso
from boomerang.model import Event, Job, ProfileUpdate
from boomerang.profiles import not_after
from boomerang.store.events import Events

VISIT_KEY = "visit:"


class Visits(Events):
    """Open visits, kept as `visit` jobs of the `jobs` table."""

    def visit(self, source: str, visitor: str, idle: timedelta, now: datetime) -> str:
        """The browser `visitor` is active on the site at `now`: its customer was last seen
        now, and its visit ends `idle` from now (a new visit if none is open). Returns the
        customer's id (a new anonymous one for a browser never seen)."""
        stamp = to_iso(now)
        with self.db.atomic():
            customer_id, _ = self._resolve_claim(ProfileUpdate(visitor=visitor), stamp, stamp)
            row = self.customer_row(customer_id)
            if row is not None and (not_after(row["last_seen_at"], stamp) or "") < stamp:
                self._update("customers", customer_id, {"last_seen_at": stamp})
            payload = json.dumps({"source": source, "visitor": visitor, "last_seen_at": stamp})
            self.db.execute(
                "INSERT INTO jobs (kind, due_at, priority, version, key, payload)"
                " VALUES ('visit', ?, 0, 0, ?, ?)"
                " ON CONFLICT (key) DO UPDATE SET due_at = excluded.due_at, payload = excluded.payload,"
                " version = coalesce(jobs.version, 0) + 1, lease_until = NULL, attempts = 0",
                [(now + idle).timestamp(), VISIT_KEY + visitor, payload],
            )
        return customer_id

    def visit_left(self, job: Job) -> Event | None:
        """The `site.left` event that ends the visit of a `visit` job, or None if the browser
        was active again since the job was claimed (its visit goes on)."""
        if not self._current(job):
            return None
        payload = job.payload
        last_seen = parse_time(payload["last_seen_at"])
        left_at = datetime.fromtimestamp(job.due_at, UTC)
        return Event(
            id=f"site.left:{payload['visitor']}:{int(last_seen.timestamp())}",
            type="site.left",
            at=left_at,
            profile=ProfileUpdate(visitor=payload["visitor"]),
            data={"last_seen_at": payload["last_seen_at"], "idle": int(job.due_at - last_seen.timestamp())},
        )

    def end_visit(self, job: Job) -> None:
        """Remove the job of a visit whose `site.left` is stored, unless the browser was active
        again meanwhile (then the job, moved later, is its next visit's)."""
        self.db.execute("DELETE FROM jobs WHERE id = ? AND version IS ?", [job.id, job.version])

    def _current(self, job: Job) -> bool:
        found = self.db.execute("SELECT version FROM jobs WHERE id = ?", [job.id]).fetchone()
        return found is not None and found[0] == job.version

    def open_visit_until(self, customer_id: str) -> float | None:
        """When the latest open visit of the customer's browsers ends if they stay quiet (unix
        seconds), or None if none is open."""
        found = self.db.execute(
            "SELECT max(jobs.due_at) FROM identities JOIN jobs ON jobs.key = ? || identities.value"
            " WHERE identities.customer_id = ? AND identities.kind = 'visitor'",
            [VISIT_KEY, customer_id],
        ).fetchone()
        return found[0] if found else None
