"""The scheduler: runs due jobs from the persistent priority queue (`store.JobQueue`).

Jobs live in the database, ordered by (due_at, -priority, id) through an index. The scheduler
keeps only a bounded window of the jobs due within the next `horizon` seconds in an in-memory
heap, refills it from the index, and sleeps until the earliest one: a wait of three months is
just a row, and memory does not grow with the number of waiting journeys. A job is claimed
under a lease, so the jobs of a process that died come back once their lease runs out; the
lease is renewed while the job runs, so a job that takes longer (a provider that says "wait",
a slow plugin hook) is never claimed a second time by a process that is still running it.
Due jobs are claimed many at once; those of a kind the engine runs in batches (`batches`:
sends, and waits ending) are handed over together, the others one by one. Each batched kind
has a lane of its own (at most `BATCHES_AT_ONCE` batches of it at once), and the other kinds
share one (`concurrency` jobs at once), so that due work of one kind never waits for a free
slot behind a burst of another: the steps of waits ending go on while a burst of sends is
under way. The scheduler knows the queue only through the `JobQueue` interface.
"""

from __future__ import annotations

import asyncio
import functools
import heapq
import logging
from collections.abc import Awaitable, Callable

from boomerang.engine_protocols import Clock
from boomerang.model import Job
from boomerang.retry import RETRY
from boomerang.store import JobQueue, lost_race

log = logging.getLogger(__name__)

# Read when used, so a test can shorten it; renewed four times per lease, so a store that
# is slow to answer one renewal does not let the lease run out.
LEASE_SECONDS = 120.0
BATCH = 200  # the most a batch of a batched kind holds (a claim takes a batch per free slot)
# Kinds whose batches hold more: waits ending together cost little each once read set-wise,
# and each batch commits once (waiting for the disk), so a burst of them goes in a few large
# transactions rather than many small ones. Sends keep `BATCH`: each batch is rendered and
# sent while the next is planned.
BATCH_OF = {"advance": 1000}
# Batches of one kind running at once: the next batch of sends is planned while one is sent,
# and more would only queue on the store's thread, ahead of the other kinds' due work.
BATCHES_AT_ONCE = 2


class Scheduler:
    """Claims due jobs and hands them to `run_job`, on the clock it is given."""

    def __init__(
        self,
        queue: JobQueue,
        clock: Clock,
        run_job: Callable[[Job], Awaitable[None]],
        *,
        batches: dict[str, Callable[[list[Job]], Awaitable[None]]] | None = None,
        horizon: float = 60.0,
        window: int = 1000,
        concurrency: int = 8,
    ):
        self.queue = queue
        self.clock = clock
        self.run_job = run_job
        self.batches = batches or {}
        self.horizon = horizon
        self.window = window
        self.concurrency = concurrency
        self._heap: list[tuple[float, int, int, str]] = []
        self._refill_at = 0.0
        self._window_full = False
        self._wake = asyncio.Event()
        self._running: set[asyncio.Task] = set()
        self._in_flight: dict[str, int] = {}  # batches (or single jobs) running, by lane
        self.done = 0

    def wake(self) -> None:
        """Something was queued: look at the queue again before sleeping."""
        self._wake.set()

    @property
    def held(self) -> int:
        """How many job ids the in-memory window holds."""
        return len(self._heap)

    async def _refill(self, now: float) -> None:
        until = now + self.horizon
        self._heap = await self.queue.run_first(self.queue.upcoming_jobs, until, self.window, now)
        heapq.heapify(self._heap)
        # A full window may have left due jobs in the store: look again as soon as it is empty.
        self._window_full = len(self._heap) >= self.window
        self._refill_at = now + self.horizon
        if self.queue.shared:
            # Another daemon's leased jobs are left out of the window; one that died leaves
            # them to be taken when their lease runs out, which may come before the horizon.
            # (On SQLite every lease is this daemon's: a start takes back a dead one's.)
            lease_end = await self.queue.run_first(self.queue.lease_ending_after, now)
            if lease_end is not None:
                self._refill_at = min(self._refill_at, lease_end)

    def _lane(self, kind: str) -> str:
        """A batched kind's own lane, or the lane the other kinds share ("")."""
        return kind if kind in self.batches else ""

    def _room(self, lane: str) -> int:
        """How many due jobs of a lane to claim now: a batch for each batch that may start, or
        a job for each single job that may."""
        if lane:
            return max(0, BATCHES_AT_ONCE - self._in_flight.get(lane, 0)) * BATCH_OF.get(lane, BATCH)
        return self.concurrency - self._in_flight.get(lane, 0)

    def _pop_due(self, now: float) -> list[int]:
        """Due job ids, earliest first, as many of each lane as it has room for; the jobs of a
        full lane stay in the window for later."""
        ids: list[int] = []
        kept = []
        taken: dict[str, int] = {}
        while self._heap and self._heap[0][0] <= now:
            entry = heapq.heappop(self._heap)
            lane = self._lane(entry[3])
            if taken.get(lane, 0) < self._room(lane):
                ids.append(entry[2])
                taken[lane] = taken.get(lane, 0) + 1
            else:
                kept.append(entry)
        for entry in kept:
            heapq.heappush(self._heap, entry)
        return ids

    def _next_wake(self, now: float) -> float:
        """When to look again with nothing to claim: the next job due later, or the next refill
        (a job of a full lane is due already: the end of one of its batches wakes the loop)."""
        later = [entry[0] for entry in self._heap if entry[0] > now]
        return min([*later, self._refill_at])

    async def run_due(self) -> int:
        """Claim and run every job due now, a claim at a time, each batch after the one before it
        (the virtual clock's way); returns how many."""
        count = 0
        # Without batches, one job per claim: a job then always sees what the one before it queued.
        limit = BATCH if self.batches else 1
        while True:
            now = self.clock.now().timestamp()
            jobs = await self.queue.run(self.queue.claim_due, now, LEASE_SECONDS, limit)
            if not jobs:
                return count
            for batch in self._batched(jobs):
                await self._run(batch)
            count += len(jobs)

    def _batched(self, jobs: list[Job]) -> list[list[Job]]:
        """Claimed jobs in the order claimed, consecutive jobs of a batched kind together (the
        virtual clock's way: each batch runs after the one before it)."""
        batches: list[list[Job]] = []
        for job in jobs:
            if batches and job.kind in self.batches and batches[-1][0].kind == job.kind:
                batches[-1].append(job)
            else:
                batches.append([job])
        return batches

    async def _run(self, jobs: list[Job]) -> None:
        """Run a batch (jobs of one kind), or a single job; a bug retries or gives up each of them."""
        try:
            if jobs[0].kind in self.batches:
                await self.batches[jobs[0].kind](jobs)
            else:
                [job] = jobs
                await self.run_job(job)
        except Exception as exc:  # noqa: BLE001 - a bug, not a provider's answer: retried, then given up
            now = self.clock.now().timestamp()
            for job in jobs:
                if lost_race(exc):
                    # PostgreSQL rolled the batch back for another daemon's: no failure, run it again.
                    await self.queue.run(self.queue.postpone_job, job.id, now)
                else:
                    await self.queue.run(RETRY.settle_failure, self.queue, job, now, exc)
        self.done += len(jobs)

    async def serve(self, stopping: asyncio.Event) -> None:
        """Run jobs as they fall due until `stopping` is set (the wall clock's way)."""
        while not stopping.is_set():
            now = self.clock.now().timestamp()
            if self._wake.is_set() or now >= self._refill_at or (self._window_full and not self._heap):
                self._wake.clear()
                await self._refill(now)
            due = self._pop_due(now)
            if due:
                claimed = await self.queue.run_first(self.queue.claim_jobs, due, now, LEASE_SECONDS)
                for batch in self._by_lane(claimed):
                    lane = self._lane(batch[0].kind)
                    self._in_flight[lane] = self._in_flight.get(lane, 0) + 1
                    task = asyncio.create_task(self._run_leased(batch))
                    self._running.add(task)
                    task.add_done_callback(functools.partial(self._finished, lane))
                continue
            await self._sleep(max(0.0, self._next_wake(now) - now), stopping)

    def _by_lane(self, jobs: list[Job]) -> list[list[Job]]:
        """Claimed jobs as they run side by side: those of a batched kind in batches of up to
        `BATCH` (`BATCH_OF` its kind, in the order claimed), every other job alone."""
        of_kind: dict[str, list[Job]] = {}
        alone = []
        for job in jobs:
            if job.kind in self.batches:
                of_kind.setdefault(job.kind, []).append(job)
            else:
                alone.append([job])
        batches = [
            group[start : start + size]
            for kind, group in of_kind.items()
            for size in [BATCH_OF.get(kind, BATCH)]
            for start in range(0, len(group), size)
        ]
        return [*batches, *alone]

    async def _run_leased(self, jobs: list[Job]) -> None:
        """Run a batch or a job, renewing the leases until it is done."""
        renewing = asyncio.create_task(self._renew_leases([job.id for job in jobs]))
        try:
            await self._run(jobs)
        finally:
            renewing.cancel()

    async def _renew_leases(self, job_ids: list[int]) -> None:
        while True:
            await asyncio.sleep(LEASE_SECONDS / 4)
            until = self.clock.now().timestamp() + LEASE_SECONDS
            await self.queue.run_first(self.queue.renew_leases, job_ids, until)

    def _finished(self, lane: str, task: asyncio.Task) -> None:
        self._running.discard(task)
        self._in_flight[lane] -= 1
        self.wake()  # a job often queues the next one (a send after a wait): pick it up now

    async def _sleep(self, seconds: float, stopping: asyncio.Event) -> None:
        waiters = [asyncio.ensure_future(self._wake.wait()), asyncio.ensure_future(stopping.wait())]
        try:
            await asyncio.wait(waiters, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waiters:
                waiter.cancel()

    async def drain(self, timeout: float) -> int:
        """Wait up to `timeout` for jobs in flight; returns how many were left unfinished."""
        if self._running:
            await asyncio.wait(self._running, timeout=timeout)
        left = [task for task in self._running if not task.done()]
        for task in left:
            task.cancel()
        # Their leases run out and they come back; nothing is lost.
        return len(left)
