"""What starting many journeys writes, gathered and written with one statement per table.

Starting a journey writes its row (inserted, then updated as its first steps run), a line or
two of timeline, its next job and maybe a message: four to six statements per customer. A
schedule's page of a thousand customers started through `BatchedWrites` instead writes each
table once, in the order the statements would have run: the rows, their ids and the timeline
come out as starting them one at a time would leave them.

Waits ending together (`Journeys._resume_all`) and a batch of sends recorded
(`Dispatch._record_delivery`) go through it too: the new states of journeys in the store are
held as well and written with one statement run for each (`Store.save_journeys`). Only the
writes a journey's steps make are gathered; cancelling a journey's jobs cancels what is held of
them as the store would have.
Everything runs inside the caller's transaction on the store's thread, and nothing reads what
is held before `flush`; `undone_on_error` lets go of what a block held when its savepoint
rolls back.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any

from boomerang.engine_protocols import EngineStore
from boomerang.model import JournalEntry, Journey
from boomerang.store.jobs import job_row
from boomerang.store.journeys import journey_row, saved_row
from boomerang.store.messages import message_values


class BatchedWrites:
    """The engine's journey writes (`JourneyWrites`), held back until `flush`.

    The journeys it is asked to start must not be in the store (a schedule's page leaves out
    the customers its entry started already, `AudienceQuery.entry_key`).
    """

    def __init__(self, store: EngineStore):
        self.store = store
        # A new journey's row as its last write left it, by id (a dict keeps insertion order).
        self.journeys: dict[str, tuple[Any, ...]] = {}
        # A stored journey's state as its last write left it (a `saved_row`), by id.
        self.saved: dict[str, tuple[Any, ...]] = {}
        self.journal: list[JournalEntry] = []
        self.jobs: list[tuple[Any, ...]] = []
        self.messages: list[dict[str, Any]] = []
        # The kinds of jobs, and the journeys of messages, that may be held (a superset): a
        # cancel that finds none of them held looks no further, so a batch costs no scans.
        self._job_kinds: dict[str | None, set[str]] = {}
        self._message_journeys: set[str | None] = set()
        # Inside `undone_on_error`: the held journeys' rows (new or stored, in `journeys` or
        # `saved`) as they were before the block changed them (None: not held), to put back if
        # it raises.
        self._journeys_before: dict[str, tuple[dict[str, tuple[Any, ...]], tuple[Any, ...] | None]] | None
        self._journeys_before = None

    def _hold_journey(self, held: dict[str, tuple[Any, ...]], journey_id: str, row: tuple[Any, ...]) -> None:
        if self._journeys_before is not None and journey_id not in self._journeys_before:
            self._journeys_before[journey_id] = (held, held.get(journey_id))
        held[journey_id] = row

    def insert_journey(self, journey: Journey, now: datetime) -> bool:
        """Hold a new journey; False if that entry is held already."""
        if journey.id in self.journeys:
            return False
        self._hold_journey(self.journeys, journey.id, journey_row(journey, now))
        return True

    def save_journey(self, journey: Journey, now: datetime) -> None:
        """Hold a journey's new state: a new journey's row becomes it, a stored journey's is
        written at `flush` (its last state only)."""
        if journey.id in self.journeys:
            self._hold_journey(self.journeys, journey.id, journey_row(journey, now))
        else:
            self._hold_journey(self.saved, journey.id, saved_row(journey, now))

    def add_journal(self, entry: JournalEntry) -> None:
        """Hold a line of the timeline."""
        self.journal.append(entry)

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
    ) -> None:
        """Hold a job (its id is not known until `flush`)."""
        self.jobs.append(job_row(kind, due_at, priority, payload, journey_id, version, key))
        self._job_kinds.setdefault(journey_id, set()).add(kind)

    def insert_message(self, fields: dict[str, Any]) -> None:
        """Hold a message to be sent."""
        self.messages.append(message_values(fields))
        self._message_journeys.add(fields.get("journey_id"))

    def delete_jobs_of(self, journey_id: str, kind: str | None = None) -> None:
        """Cancel a journey's jobs, held and stored; with them (no `kind`) its messages not yet
        sent, held (which will be written `cancelled`, as the store leaves them) and stored."""
        kinds = self._job_kinds.get(journey_id, set())
        if (kind is None and kinds) or kind in kinds:
            self.jobs = [row for row in self.jobs if not _cancelled(row, journey_id, kind)]
        if kind is None and journey_id in self._message_journeys:
            self.messages = [
                {**values, "status": "cancelled"}
                if values.get("journey_id") == journey_id and values.get("status") == "pending"
                else values
                for values in self.messages
            ]
        self.store.delete_jobs_of(journey_id, kind)

    @contextmanager
    def undone_on_error(self) -> Iterator[None]:
        """What is held from here on is let go if the block raises (as the savepoint around it
        rolls back what was written).

        It costs the same whatever is held already (a batch of a thousand waits ending takes a
        block per journey): the lists are only appended to, or replaced by new ones
        (`delete_jobs_of`) that leave the old ones as they were, so their lengths say what to
        keep; the journeys' rows changed in the block are remembered as they were."""
        journal, jobs, messages = self.journal, self.jobs, self.messages
        lengths = (len(journal), len(jobs), len(messages))
        self._journeys_before = {}
        try:
            yield
        except BaseException:
            for journey_id, (held, row) in self._journeys_before.items():
                if row is None:
                    del held[journey_id]
                else:
                    held[journey_id] = row
            del journal[lengths[0] :], jobs[lengths[1] :], messages[lengths[2] :]
            self.journal, self.jobs, self.messages = journal, jobs, messages
            raise
        finally:
            self._journeys_before = None

    def flush(self) -> None:
        """Write everything held, one statement per table."""
        if self.journeys:
            self.store.insert_journeys(list(self.journeys.values()))
        if self.saved:
            self.store.save_journeys(list(self.saved.values()))
        if self.messages:
            self.store.insert_messages(self.messages)
        if self.journal:
            self.store.add_journal_entries(self.journal)
        if self.jobs:
            self.store.add_jobs(self.jobs)
        self.journeys, self.saved, self.journal, self.jobs, self.messages = {}, {}, [], [], []


def _cancelled(row: tuple[Any, ...], journey_id: str, kind: str | None) -> bool:
    """Whether a held job (a `job_row`) is one of the journey's that `delete_jobs_of` cancels."""
    return row[3] == journey_id and (kind is None or row[0] == kind)
