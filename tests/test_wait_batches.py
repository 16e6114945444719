"""Waits that end together run as one batch: the `advance` jobs falling due at the same moment
are handed over at once and walk on in one transaction, each in its own savepoint, so one
journey's trouble stays its own."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

from boomerang.clock import VirtualClock
from boomerang.engine import Engine
from boomerang.ingest import Ingestor
from boomerang.model import Event, Job
from boomerang.project import open_project
from boomerang.retry import RETRY
from boomerang.scheduler import Scheduler
from boomerang.store import Store
from conftest import incoming, t

START = "2026-03-02 10:00"
SCENARIO = """scenario: nudge
category: promo
trigger: {event: cart.updated}
steps:
  - wait: 1h
  - set: {nudged: "{{ customer.name }}"}
  - wait: 1h
  - send: nudge
"""
CUSTOMERS = [f"c-{n}" for n in range(12)]


def everyone_carts() -> list[Event]:
    """Every customer puts something in the cart at the same moment."""
    return [
        incoming(f"e-{who}", "cart.updated", START, id=who, email=f"{who}@example.com", name=who)
        for who in CUSTOMERS
    ]


class Shop:
    """The engine on a virtual clock over the `init` project with the nudge scenario; its
    scheduler runs waits in batches when `batched`."""

    def __init__(self, project: Path, batched: bool, database: Path | str):
        for reference in (project / "scenarios").glob("*.yaml"):
            reference.unlink()
        (project / "scenarios" / "nudge.yaml").write_text(SCENARIO, encoding="utf-8")
        (project / "templates" / "nudge").mkdir(exist_ok=True)
        (project / "templates" / "nudge" / "email.en.html").write_text(
            "---\nsubject: Still there?\n---\n<p>Hi {{ customer.name }}</p>\n", encoding="utf-8"
        )
        self.project, plugins = open_project(project / "boomerang.yaml")
        self.clock = VirtualClock(t(START))
        self.store = Store(database)
        self.engine = Engine(self.store, self.clock, plugins, self.project)
        self.batches: list[int] = []

        async def advance(jobs: list[Job]) -> None:
            self.batches.append(len(jobs))
            await self.engine.batches["advance"](jobs)

        batches = {"advance": advance, "send": self.engine.batches["send"]} if batched else None
        self.scheduler = Scheduler(self.store, self.clock, self.engine.run_job, batches=batches)

        async def nothing(_: list[Event]) -> None:
            return None

        self.ingest = Ingestor(self.store, self.clock, nothing)

    async def run(self) -> None:
        """Every customer puts something in the cart at once; then two hours pass."""
        carts = everyone_carts()
        await self.ingest(carts, "test")
        while await self.store.run(self.engine.handle_pending_events):
            pass
        for hours in (1, 2):
            self.clock.advance_to(t(START) + timedelta(hours=hours))
            await self.scheduler.run_due()

    def outcome(self) -> list[tuple[Any, ...]]:
        """The timeline and where every journey stands, without the ids that differ by database."""
        journal = [(e.at, e.kind, e.customer_id, e.step, e.reason) for e in self.store.journal()]
        journeys = [
            (j.customer_id, j.status, j.cursor) for who in CUSTOMERS for j in self.store.journeys_of(who)
        ]
        return [*journal, *journeys, *self.nudged().items()]

    def nudged(self) -> dict[str, Any]:
        """The attribute the `set:` step gives each customer."""
        return {who: self.store.customer(who).attributes.get("nudged") for who in CUSTOMERS}


async def test_waits_ending_together_walk_on_as_one_batch_as_they_would_one_at_a_time(
    project: Path, database: Path | str, other_database: Path | str
) -> None:
    single = Shop(project, batched=False, database=database)
    await single.run()
    expected = single.outcome()
    single.store.close()
    batched = Shop(project, batched=True, database=other_database)
    await batched.run()
    assert batched.batches == [len(CUSTOMERS), len(CUSTOMERS)]
    assert batched.outcome() == expected
    assert sum(1 for row in expected if row[1] == "send") == len(CUSTOMERS)
    batched.store.close()


async def test_a_journey_that_fails_in_a_batch_is_retried_alone(project: Path, database: Path | str) -> None:
    shop = Shop(project, batched=True, database=database)
    resume = shop.engine._resume
    broken: str | None = None  # c-3's journey, once the carts below started it

    def fault_for_one(job: Job, now: Any) -> None:
        if job.journey_id == broken:
            raise RuntimeError("a bug in one journey")
        resume(job, now)

    shop.engine._resume = fault_for_one  # type: ignore[method-assign] - the injected fault
    carts = everyone_carts()
    await shop.ingest(carts, "test")
    while await shop.store.run(shop.engine.handle_pending_events):
        pass
    broken = shop.store.journeys_of("c-3")[0].id
    shop.clock.advance_to(t(START) + timedelta(hours=1))
    await shop.scheduler.run_due()

    assert shop.nudged() == {who: None if who == "c-3" else who for who in CUSTOMERS}
    later = t("2026-03-03 10:00").timestamp()
    [job] = [job for job in shop.store.claim_due(later, 60, 100) if job.journey_id == broken]
    assert job.kind == "advance" and job.attempts == 1
    assert job.due_at == (t(START) + timedelta(hours=1)).timestamp() + RETRY.backoff(0)
    shop.store.close()
