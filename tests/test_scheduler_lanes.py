"""Fairness under a burst: each batched kind has a lane of its own, so due waits go on while
sends are stuck, and the scheduler's claims go to the store's thread ahead of the calls
waiting there."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

from boomerang.clock import WallClock
from boomerang.model import Job
from boomerang.scheduler import BATCH, BATCH_OF, Scheduler
from boomerang.store import Store
from boomerang.store.jobs import job_row


async def test_a_wait_ends_while_every_batch_of_sends_is_stuck(database: Path | str) -> None:
    store = Store(database)
    now = WallClock().now().timestamp()
    # More send batches than the scheduler has slots, all due before the wait's step.
    store.add_jobs([job_row("send", now - 60, 0, {"n": n}) for n in range(9 * BATCH)])
    store.add_job("advance", now - 1, 0, {"resume": "1"})
    released, advanced = asyncio.Event(), asyncio.Event()
    sends_running = 0

    async def send(jobs: list[Job]) -> None:  # a provider that hangs until released
        nonlocal sends_running
        sends_running += 1
        await released.wait()
        await store.run(store.complete_jobs, [job.id for job in jobs])

    async def advance(jobs: list[Job]) -> None:
        await store.run(store.complete_jobs, [job.id for job in jobs])
        advanced.set()

    async def alone(job: Job) -> None:
        raise AssertionError(f"{job.kind} runs in batches here")

    # A window that holds every due job: what is measured is the slots, not the window's size.
    batches = {"send": send, "advance": advance}
    scheduler = Scheduler(store, WallClock(), alone, batches=batches, window=10 * BATCH)
    stopping = asyncio.Event()
    serving = asyncio.create_task(scheduler.serve(stopping))
    try:
        await asyncio.wait_for(advanced.wait(), 30)  # a guard against a hang, not a timing
        assert sends_running > 0  # the sends were under way, and stuck, when the wait ended
        released.set()
        while await store.run(store.job_count):
            await asyncio.sleep(0.05)
    finally:
        released.set()
        stopping.set()
        scheduler.wake()
        await serving
        await scheduler.drain(5)
        store.close()


async def test_a_claim_goes_ahead_of_the_calls_waiting_for_the_store(database: Path | str) -> None:
    store = Store(database)
    order: list[object] = []
    gate = threading.Event()
    try:
        busy = asyncio.ensure_future(store.run(gate.wait, 30))  # holds the store's thread
        waiting = [asyncio.ensure_future(store.run(order.append, n)) for n in range(3)]
        ahead = asyncio.ensure_future(store.run_first(order.append, "claim"))
        await asyncio.sleep(0.1)  # every call handed to the store's thread
        gate.set()
        await asyncio.gather(busy, *waiting, ahead)
        assert order == ["claim", 0, 1, 2]
    finally:
        gate.set()
        store.close()


async def test_a_due_step_goes_behind_the_claims_but_ahead_of_the_other_calls(database: Path | str) -> None:
    store = Store(database)
    order: list[object] = []
    gate = threading.Event()
    try:
        busy = asyncio.ensure_future(store.run(gate.wait, 30))  # holds the store's thread
        waiting = [asyncio.ensure_future(store.run(order.append, n)) for n in range(2)]
        step = asyncio.ensure_future(store.run_ahead(order.append, "step"))
        claim = asyncio.ensure_future(store.run_first(order.append, "claim"))
        await asyncio.sleep(0.1)  # every call handed to the store's thread
        gate.set()
        await asyncio.gather(busy, *waiting, step, claim)
        assert order == ["claim", "step", 0, 1]
    finally:
        gate.set()
        store.close()


async def test_a_batch_of_waits_ending_is_handed_over_in_large_batches(database: Path | str) -> None:
    store = Store(database)
    now = WallClock().now().timestamp()
    size = BATCH_OF["advance"]
    store.add_jobs([job_row("advance", now - 1, 0, {"resume": "1"}) for _ in range(size + 1)])
    sizes: list[int] = []

    async def advance(jobs: list[Job]) -> None:
        sizes.append(len(jobs))
        await store.run(store.complete_jobs, [job.id for job in jobs])

    async def alone(job: Job) -> None:
        raise AssertionError(f"{job.kind} runs in batches here")

    scheduler = Scheduler(store, WallClock(), alone, batches={"advance": advance}, window=2 * size)
    stopping = asyncio.Event()
    serving = asyncio.create_task(scheduler.serve(stopping))
    try:
        while await store.run(store.job_count):
            await asyncio.sleep(0.05)
        assert sorted(sizes) == [1, size] and size > BATCH
    finally:
        stopping.set()
        scheduler.wake()
        await serving
        await scheduler.drain(5)
        store.close()
