"""The engine: runs the project's scenarios against the store, on whichever clock it is given.

It is composed of parts named after what they hold (see each module):

- `boomerang.journeys`: entering, walking and ending journeys (store thread);
- `boomerang.dispatch`: plan → promo code → render → commit (with tracking) → send → record,
  a batch of sends at a time,
  fallbacks and actions (store thread, a render thread, and the event loop for the sends);
- `boomerang.schedules`: cron and date ticks (store thread);
- `boomerang.redemptions`: promo codes an order names, redeemed or rejected (store thread);
- `boomerang.context`: the plain data expressions and templates see;
- `boomerang.engine_base`: the state they share and the journal;
- `boomerang.engine_protocols`: what the engine needs of a store and a clock;
- `boomerang.retry`: the one retry policy of sends, actions and the scheduler.

`Engine.run_job`, on the event loop, hands each claimed job to its handler by kind, and
`Engine.batches` the jobs of a kind that run in batches (sends, and waits ending together) to the
batch's handler.
`simulate` and the daemon run this same engine, on a virtual clock and on the wall clock.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import TypeVar

from boomerang.dispatch import Dispatch
from boomerang.engine_protocols import Clock, EngineStore
from boomerang.metrics import Metrics
from boomerang.model import Job
from boomerang.plugin_manager import Plugins
from boomerang.project import Project
from boomerang.redemptions import Redemptions
from boomerang.schedules import Schedules

log = logging.getLogger(__name__)

W = TypeVar("W", Job, list[Job])  # what a store-thread handler takes: a job, or a batch of them


class Engine(Dispatch, Schedules, Redemptions):
    """Runs the project's scenarios against the store, on whichever clock it is given."""

    def __init__(
        self,
        store: EngineStore,
        clock: Clock,
        plugins: Plugins,
        project: Project,
        *,
        dry_run: bool = False,
        metrics: Metrics | None = None,
    ):
        super().__init__(store, clock, plugins, project, dry_run=dry_run, metrics=metrics)
        # The job kinds and what runs them (on the event loop; the store-thread ones through
        # `store.run`). A kind not here is a bug or a row from a newer version: dropped, loudly.
        self.handlers: dict[str, Callable[[Job], Awaitable[None]]] = {
            "send": lambda job: self._send([job]),
            "action": self._act,
            "advance": self._on_store_thread(self._resume),
            "tick": self._tick,
            "fallback": self._on_store_thread(self._no_receipt),
        }
        # The kinds whose jobs run best many at once, and what runs a batch of them: the
        # scheduler hands over every claimed job of such a kind together.
        self.batches: dict[str, Callable[[list[Job]], Awaitable[None]]] = {
            "send": self._send,
            # Ahead of the sends' calls waiting for the store's thread: a step is what queues
            # its send, and a burst of sends must not make the steps of waits ending late.
            "advance": self._on_store_thread(self._resume_all, ahead=True),
        }

    def _on_store_thread(
        self, handler: Callable[[W, datetime], None], *, ahead: bool = False
    ) -> Callable[[W], Awaitable[None]]:
        """A handler of a job (or a batch of jobs) that runs on the store's thread, at the clock's
        time when it is handed over; `ahead` of the calls waiting there (see `run_ahead`)."""

        submit = self.store.run_ahead if ahead else self.store.run

        async def run(work: W) -> None:
            await submit(handler, work, self.clock.now())

        return run

    async def run_job(self, job: Job) -> None:
        """Do one claimed job and complete it (or give it back for a retry); on the event loop."""
        handler = self.handlers.get(job.kind)
        if handler is None:
            log.error("unknown job kind %r; dropping job %s", job.kind, job.id)
            await self.store.run(self.store.complete_job, job.id)
            return
        await handler(job)
