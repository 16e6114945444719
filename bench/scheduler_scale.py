"""The scheduler with 1,000 and with 100,000 waiting jobs: time to run 1,000 due jobs, and
the memory it holds while doing so.

The baseline is the same measurement with 1,000 waiting jobs: with an indexed queue and a
bounded in-memory window, neither figure should grow with the number of waiting journeys.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
import tracemalloc
from datetime import UTC, datetime, timedelta
from pathlib import Path

from bench.figures import Figure
from boomerang.clock import VirtualClock
from boomerang.model import Job
from boomerang.scheduler import Scheduler
from boomerang.store import Store

GOAL = "claiming due jobs costs the same with 100x more journeys waiting; memory held stays bounded"
DUE = 1_000


async def measure(waiting: int) -> tuple[float, int, int]:
    """Seconds to run DUE due jobs, peak bytes allocated meanwhile, most job ids held in memory."""
    now = datetime(2026, 3, 2, 10, tzinfo=UTC)
    with tempfile.TemporaryDirectory() as directory:
        store = Store(Path(directory) / "bench.db")
        far = (now + timedelta(days=90)).timestamp()
        with store.transaction():
            for n in range(waiting):
                store.add_job("advance", far + n, 50, {"resume": "0"}, journey_id=f"j-{n}", version=0)
            for n in range(DUE):
                store.add_job("advance", now.timestamp() - n, 50, {"resume": "0"})
        clock = VirtualClock(now)
        stopping = asyncio.Event()
        most_held = 0

        async def run_job(job: Job) -> None:
            nonlocal most_held
            most_held = max(most_held, scheduler.held)
            await store.run(store.complete_job, job.id)
            if scheduler.done + 1 >= DUE:
                stopping.set()

        scheduler = Scheduler(store, clock, run_job, window=500)
        tracemalloc.start()
        started = time.perf_counter()
        await scheduler.serve(stopping)
        await scheduler.drain(5)
        elapsed = time.perf_counter() - started
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        store.close()
    return elapsed, peak, most_held


def run() -> list[Figure]:
    base = asyncio.run(measure(1_000))
    big = asyncio.run(measure(100_000))
    print(f"{'waiting jobs':>14} {'run 1,000 due':>14} {'peak memory':>12} {'ids held':>9}")
    for label, (elapsed, peak, held) in (("1,000 (base)", base), ("100,000", big)):
        print(f"{label:>14} {elapsed * 1000:11.0f} ms {peak / 1024:9.0f} KiB {held:9}")
    # Allow for noise on a busy machine; what must not happen is growth with the queue.
    met = big[0] < base[0] * 3 and big[1] < base[1] * 3 and big[2] <= 500
    detail = f"1,000 due jobs with 100,000 waiting; baseline: with 1,000 waiting; {big[2]} ids held"
    return [Figure("scheduler", round(big[0] * 1000), "ms", round(base[0] * 1000), GOAL, met, detail)]
