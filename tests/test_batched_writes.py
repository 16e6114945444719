"""`BatchedWrites.undone_on_error`: a block that raises lets go of exactly what it held, and
nothing held before it, whatever it did (held new rows, cancelled held jobs and messages)."""

from __future__ import annotations

from pathlib import Path

import pytest

from boomerang.batched_writes import BatchedWrites
from boomerang.model import JournalEntry, Journey
from boomerang.store import Store
from conftest import t

NOW = t("2026-03-02 10:00")


def journey(journey_id: str, cursor: str) -> Journey:
    return Journey(journey_id, "s", "c-1", journey_id, "active", False, cursor, 0, {}, NOW)


def fill(writes: BatchedWrites, journey_id: str) -> None:
    writes.add_job("send", NOW.timestamp(), 0, {"n": journey_id}, journey_id=journey_id)
    writes.add_journal(JournalEntry(NOW, "enter", "c-1", "entered", "s", journey_id))
    writes.insert_message({"id": f"m-{journey_id}", "journey_id": journey_id, "status": "pending"})


def held(writes: BatchedWrites) -> tuple[object, ...]:
    return (dict(writes.journeys), list(writes.journal), list(writes.jobs), list(writes.messages))


def test_a_block_that_raises_leaves_what_was_held_before_it(database: Path | str) -> None:
    store = Store(database)
    try:
        writes = BatchedWrites(store)
        writes.insert_journey(journey("j-1", "0"), NOW)
        fill(writes, "j-1")
        with writes.undone_on_error():  # a block that ends well keeps what it held
            writes.insert_journey(journey("j-2", "0"), NOW)
            fill(writes, "j-2")
        before = held(writes)
        with pytest.raises(RuntimeError), writes.undone_on_error():
            writes.save_journey(journey("j-1", "1"), NOW)  # a held row changed
            writes.insert_journey(journey("j-3", "0"), NOW)  # a new one
            fill(writes, "j-3")
            writes.delete_jobs_of("j-2")  # held jobs cancelled, held messages marked cancelled
            fill(writes, "j-2")
            raise RuntimeError("a bug in one journey")
        assert held(writes) == before
        assert [row[3] for row in writes.jobs] == ["j-1", "j-2"]
        assert [values["status"] for values in writes.messages] == ["pending", "pending"]
    finally:
        store.close()


def test_a_stored_journey_is_written_at_flush_as_its_last_block_that_ended_well_left_it(
    database: Path | str,
) -> None:
    store = Store(database)
    try:
        store.insert_journey(journey("j-1", "0"), NOW)
        writes = BatchedWrites(store)
        with writes.undone_on_error():
            writes.save_journey(journey("j-1", "1"), NOW)
        with pytest.raises(RuntimeError), writes.undone_on_error():
            writes.save_journey(journey("j-1", "2"), NOW)
            raise RuntimeError("a bug in the journey's next step")
        stored = store.journey("j-1")
        assert stored is not None and stored.cursor == "0"  # held until the flush
        writes.flush()
        stored = store.journey("j-1")
        assert stored is not None and stored.cursor == "1"
    finally:
        store.close()
