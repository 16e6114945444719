"""Jobs: the persistent priority queue, behind the `JobQueue` interface.

`JobQueue` is the seam where another queue (PostgreSQL, claiming with `FOR UPDATE SKIP
LOCKED`) plugs in; the scheduler (core/scheduler.py) talks to the queue through it alone.

How the engine reaches the queue: through the `Store` it already holds (`Store` is a
`JobQueue`), because the engine adds and cancels jobs *inside its own transactions* — a journey
advanced, its message stored and its next job queued commit together or not at all, which is
what makes a crash at any point safe. A queue in another database could not join those
transactions, so a PostgreSQL queue will come with the PostgreSQL store, on the same
connection. The customers family likewise drops the jobs of journeys ended by a merge, in the
merge's transaction.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Collection
from typing import Any, Protocol, TypeVar

from boomerang.model import Job
from boomerang.store import rows
from boomerang.store.quarantine import Quarantine

T = TypeVar("T")


class JobQueue(Protocol):
    """A persistent priority queue of jobs with leases: what the scheduler needs of one.

    Its calls block; the scheduler makes them through `run`, off the event loop.
    """

    # whether other processes hold leases in it too (several daemons on one PostgreSQL database)
    shared: bool

    async def run(self, function: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run one of the queue's calls where it may block (the store's own thread)."""
        ...

    async def run_first(self, function: Callable[..., T], *args: Any) -> T:
        """`run`, ahead of the calls waiting: for the scheduler's short claims."""
        ...

    async def run_ahead(self, function: Callable[..., T], *args: Any) -> T:
        """`run`, behind `run_first`'s calls but ahead of the others: for due steps."""
        ...

    def add_job(
        self,
        kind: str,
        due_at: float,
        priority: int,
        payload: dict[str, Any],
        *,
        journey_id: str | None = None,
        version: int | None = None,
        key: str | None = None,
    ) -> int | None:
        """Queue a job; with a `key` already queued, nothing is added and None is returned."""
        ...

    def claim_due(self, now: float, lease: float, limit: int) -> list[Job]:
        """Lease up to `limit` due jobs, earliest first and higher priority first at the same time."""
        ...

    def claim_jobs(self, ids: list[int], now: float, lease: float) -> list[Job]:
        """Lease the given jobs if they are due and not leased by someone else."""
        ...

    def upcoming_jobs(
        self, until: float, limit: int, now: float | None = None
    ) -> list[tuple[float, int, int, str]]:
        """(due_at, -priority, id, kind) of claimable jobs due before `until`: the scheduler's window."""
        ...

    def next_due_at(self) -> float | None:
        """When the next job falls due (or a lease runs out)."""
        ...

    def lease_ending_after(self, now: float) -> float | None:
        """When the first lease still running at `now` runs out (None if none does)."""
        ...

    def complete_job(self, job_id: int) -> None:
        """Remove a job whose effect is done."""
        ...

    def complete_jobs(self, job_ids: list[int]) -> None:
        """Remove many jobs whose effect is done."""
        ...

    def retry_job(self, job_id: int, due_at: float) -> None:
        """Release a job to run again at `due_at`, counting a failed attempt."""
        ...

    def postpone_job(self, job_id: int, due_at: float) -> None:
        """Release a job to run again at `due_at`, without counting a failed attempt."""
        ...

    def renew_leases(self, job_ids: list[int], until: float) -> None:
        """Extend the leases of jobs still running."""
        ...

    def release_job(self, job_id: int) -> None:
        """Give a claimed job back untouched."""
        ...

    def release_all_leases(self) -> int:
        """Take back every lease (at start); returns how many."""
        ...

    def delete_jobs_of(self, journey_id: str, kind: str | None = None) -> None:
        """Cancel a journey's pending jobs (of one kind, or all)."""
        ...

    def job_count(self) -> int:
        """Jobs waiting in the queue."""
        ...


# One encoder for every job's payload: `json.dumps` with options builds a new one per call.
_encode_payload = json.JSONEncoder(default=str).encode

_ADD_JOB = (
    "INSERT OR IGNORE INTO jobs (kind, due_at, priority, journey_id, version, key, payload)"
    " VALUES (?, ?, ?, ?, ?, ?, ?)"
)


def job_row(
    kind: str,
    due_at: float,
    priority: int,
    payload: dict[str, Any],
    journey_id: str | None = None,
    version: int | None = None,
    key: str | None = None,
) -> tuple[Any, ...]:
    """A job as it is queued: the values of `add_jobs`."""
    return (kind, due_at, priority, journey_id, version, key, _encode_payload(payload))


class Jobs(Quarantine):
    """The `jobs` table: the SQLite `JobQueue`."""

    def add_job(
        self,
        kind: str,
        due_at: float,
        priority: int,
        payload: dict[str, Any],
        *,
        journey_id: str | None = None,
        version: int | None = None,
        key: str | None = None,
    ) -> int | None:
        """Queue a job; with a `key` already queued, nothing is added and None is returned."""
        added = self.db.execute(
            _ADD_JOB + " RETURNING id", job_row(kind, due_at, priority, payload, journey_id, version, key)
        ).fetchone()
        return added[0] if added else None

    def add_jobs(self, job_rows: list[tuple[Any, ...]]) -> None:
        """Queue many jobs in one statement, as rows of `job_row`, in the order given; one whose
        `key` is queued already is left out."""
        self.db.conn.executemany(_ADD_JOB, job_rows)

    def add_journey_jobs(
        self, kind: str, priority: int, payload: dict[str, Any], version: int, jobs: list[tuple[float, str]]
    ) -> None:
        """Queue many jobs of one kind, priority, payload and journey version, each (due_at,
        journey id), in one statement, in the order given (none with a key): what they share
        is bound once, not read from each row (`_insert_all`)."""
        same = {"kind": kind, "priority": priority, "version": version, "payload": _encode_payload(payload)}
        self._insert_all("jobs", ("due_at", "journey_id"), jobs, same=same)

    def delete_jobs_of(self, journey_id: str, kind: str | None = None) -> None:
        """Cancel a journey's pending jobs (of one kind, or all) and the messages not yet sent."""
        if kind:
            self.db.execute("DELETE FROM jobs WHERE journey_id = ? AND kind = ?", [journey_id, kind])
            return
        self.db.execute("DELETE FROM jobs WHERE journey_id = ?", [journey_id])
        self.db.execute(
            "UPDATE messages SET status = 'cancelled' WHERE journey_id = ? AND status = 'pending'",
            [journey_id],
        )

    def claim_due(self, now: float, lease: float, limit: int) -> list[Job]:
        """Lease up to `limit` due jobs, earliest first and higher priority first at the same time.
        Daemons sharing the database each take other jobs: the rows one is claiming, the
        others skip (`skip_locked`), and the rows it has claimed carry its lease."""
        with self.unsynced():  # a lease lost to a power cut is one a start takes back anyway
            claimed = self.db.execute(
                "UPDATE jobs SET lease_until = ? WHERE id IN (SELECT id FROM jobs WHERE due_at <= ?"
                " AND (lease_until IS NULL OR lease_until < ?) ORDER BY due_at, priority DESC, id"
                f" LIMIT ?{self.skip_locked}) RETURNING id",
                [now + lease, now, now, limit],
            ).fetchall()
        return self._claimed([row[0] for row in claimed])

    def claim_jobs(self, ids: list[int], now: float, lease: float) -> list[Job]:
        """Lease the given jobs if they are due and not leased by someone else."""
        with self.unsynced():
            claimed = self.db.execute(
                "UPDATE jobs SET lease_until = ? WHERE id IN (SELECT id FROM jobs WHERE id IN"
                " (SELECT value FROM json_each(?)) AND due_at <= ? AND (lease_until IS NULL"
                f" OR lease_until < ?){self.skip_locked}) RETURNING id",
                [now + lease, json.dumps(ids), now, now],
            ).fetchall()
        return self._claimed([row[0] for row in claimed])

    def _claimed(self, ids: list[int]) -> list[Job]:
        """The jobs just leased, read whole, earliest first (unreadable ones set aside)."""
        if not ids:
            return []
        found = self._select(
            "SELECT id, kind, due_at, priority, payload, journey_id, version, key, attempts FROM jobs"
            " WHERE id IN (SELECT value FROM json_each(?)) ORDER BY due_at, priority DESC, id",
            [json.dumps(ids)],
        )
        jobs = (
            self._read_row(
                "jobs",
                row["id"],
                lambda row=row: Job(
                    **row
                    | {
                        "due_at": rows.number(row["due_at"]),
                        "priority": rows.integer(row["priority"]),
                        "payload": rows.json_value(row["payload"], dict),
                        "attempts": rows.integer(row["attempts"]),
                    }
                ),
                content=row,
            )
            for row in found
        )
        return [job for job in jobs if job is not None]

    def upcoming_jobs(
        self, until: float, limit: int, now: float | None = None
    ) -> list[tuple[float, int, int, str]]:
        """(due_at, -priority, id, kind) of claimable jobs due before `until`, through the due index."""
        # `-priority` in SQL: a damaged priority becomes 0 here and is set aside when claimed.
        # Tuples straight from the cursor: the window is rebuilt often and holds many entries.
        return self.db.execute(
            "SELECT due_at, -priority, id, kind FROM jobs WHERE due_at <= ?"
            " AND (lease_until IS NULL OR lease_until < ?) ORDER BY due_at, priority DESC LIMIT ?",
            [until, time.time() if now is None else now, limit],
        ).fetchall()

    def next_due_of(self, journey_ids: Collection[str]) -> dict[str, float]:
        """When each journey's next job falls due (a resume, a queued send), by journey id."""
        found = self.db.execute(
            "SELECT journey_id, min(due_at) FROM jobs WHERE journey_id IN (SELECT value FROM json_each(?))"
            " GROUP BY journey_id",
            [json.dumps(list(journey_ids))],
        ).fetchall()
        return {journey_id: due for journey_id, due in found}

    def next_due_at(self) -> float | None:
        """When the next job falls due (or a lease runs out), without scanning the queue."""
        # One statement: `simulate` asks before every moment it moves its clock to.
        return self.db.execute(
            "SELECT min(moment) FROM (SELECT * FROM (SELECT due_at AS moment FROM jobs"
            " WHERE lease_until IS NULL ORDER BY due_at LIMIT 1) AS next_due"
            " UNION ALL SELECT min(lease_until) FROM jobs WHERE lease_until IS NOT NULL) AS moments"
        ).fetchone()[0]

    def lease_ending_after(self, now: float) -> float | None:
        """When the first lease still running at `now` runs out (None if none does), through
        the index of leased jobs."""
        return self.db.execute("SELECT min(lease_until) FROM jobs WHERE lease_until > ?", [now]).fetchone()[0]

    def complete_job(self, job_id: int) -> None:
        """Remove a job whose effect is done."""
        self.db.execute("DELETE FROM jobs WHERE id = ?", [job_id])

    def complete_jobs(self, job_ids: list[int]) -> None:
        """Remove many jobs whose effect is done, in one statement."""
        self.db.execute(
            "DELETE FROM jobs WHERE id IN (SELECT value FROM json_each(?))",
            [json.dumps(job_ids)],
        )

    def save_job_payload(self, job_id: int, payload: dict[str, Any]) -> None:
        """Record a running job's progress in its payload, so that a re-run resumes there."""
        self.db.execute(
            "UPDATE jobs SET payload = ? WHERE id = ?", [_encode_payload(payload), job_id]
        )

    def retry_job(self, job_id: int, due_at: float) -> None:
        """Release a job to run again at `due_at`."""
        self.db.execute(
            "UPDATE jobs SET due_at = ?, lease_until = NULL, attempts = attempts + 1 WHERE id = ?",
            [due_at, job_id],
        )

    def postpone_job(self, job_id: int, due_at: float) -> None:
        """Release a job to run again at `due_at`, without counting a failed attempt."""
        self.db.execute("UPDATE jobs SET due_at = ?, lease_until = NULL WHERE id = ?", [due_at, job_id])

    def renew_leases(self, job_ids: list[int], until: float) -> None:
        """Extend the leases of jobs still running, in one statement; a job completed or released
        meanwhile is left alone."""
        with self.unsynced():
            self.db.execute(
                "UPDATE jobs SET lease_until = ? WHERE id IN (SELECT value FROM json_each(?))"
                " AND lease_until IS NOT NULL",
                [until, json.dumps(job_ids)],
            )

    def release_all_leases(self) -> int:
        """Take back every lease: at start, the jobs of a process that died run again at once."""
        return self.db.execute("UPDATE jobs SET lease_until = NULL WHERE lease_until IS NOT NULL").rowcount

    def release_job(self, job_id: int) -> None:
        """Give a claimed job back untouched (on shutdown)."""
        self.db.execute("UPDATE jobs SET lease_until = NULL WHERE id = ?", [job_id])

    def due_jobs(self, now: float) -> dict[str, tuple[int, float]]:
        """Jobs due at `now` that no one holds a lease on, by kind: how many, and when the
        earliest of them fell due. Reads the due end of the `due_at` index only."""
        found = self.db.execute(
            "SELECT kind, count(*), min(due_at) FROM jobs WHERE due_at <= ?"
            " AND (lease_until IS NULL OR lease_until < ?) GROUP BY kind",
            [now, now],
        )
        return {kind: (count, since) for kind, count, since in found.fetchall()}

    def job_count(self) -> int:
        """Jobs waiting in the queue."""
        return self.db.execute("SELECT count(*) FROM jobs").fetchone()[0]
