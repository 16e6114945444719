"""What every part of the engine shares: the project, the store, the clock, the contact plan, the journal.

`EngineBase` holds the state that `Journeys`, `Dispatch` and `Schedules` (and `Engine`, which
composes them) work on. Its methods run on the store's thread: the store is only ever read
and written there (`store.run` hands work to it from the event loop).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from jinja2 import Template

from boomerang.audiences import Condition
from boomerang.batched_writes import BatchedWrites
from boomerang.contact_plan import load_plan
from boomerang.context import context, store_scope
from boomerang.engine_protocols import Clock, EngineStore, JourneyWrites
from boomerang.expressions import EXPRESSION_SECONDS, Scope
from boomerang.metrics import Metrics
from boomerang.model import Customer, JournalEntry, Journey
from boomerang.plugin_manager import Plugins
from boomerang.project import Project
from boomerang.recommendations import read_on_store, strategies
from boomerang.scenarios import Step
from boomerang.tracking import Tracking


class EngineBase:
    """The engine's shared state; the store-thread helpers every part uses."""

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
        self.store = store
        self.clock = clock
        self.plugins = plugins
        self.dry_run = dry_run  # simulate: actions are recorded, not run
        # The daemon's metrics; elsewhere (simulate, an import) figures nobody scrapes.
        self.metrics = metrics or Metrics()
        # Where journeys, their timeline, jobs and messages are written: the store, or while a
        # schedule starts a page of its audience, a `BatchedWrites` in front of it.
        self.writes: JourneyWrites = store
        # Where timeline lines go instead while a batch of sends holds them back (`Dispatch`).
        self._held_lines: list[JournalEntry] | None = None
        self.use(project)

    def use(self, project: Project) -> None:
        """Switch to a newly loaded project (on reload); journeys continue by step path."""
        self.project = project
        self.scenarios = {scenario.id: scenario for scenario in project.scenarios}
        self.plan = load_plan(project.config, project.registry.channels, project.registry.channel_kinds)
        self._population: tuple[datetime, dict[str, tuple[float, int]]] | None = None
        self.zone = ZoneInfo(project.config.default_timezone)
        config = project.config
        self.tracking = Tracking(config.public_url, config.secret) if config.secret else None
        self._value_templates: dict[str, Template] = {}
        self._audiences: dict[str, Condition | None] = {}  # audience expressions as the store's conditions

    @contextmanager
    def batched_writes(self) -> Iterator[BatchedWrites]:
        """Gather the journey writes made inside (`self.writes`) and write them at its end with
        one statement per table (`BatchedWrites`). Inside the caller's transaction, on the
        store's thread."""
        self.writes = writes = BatchedWrites(self.store)
        try:
            yield writes
            writes.flush()
        finally:
            self.writes = self.store

    def context(
        self, customer: Customer, journey: Journey | None, now: datetime, event: dict | None = None
    ) -> dict:
        """The names an expression or template sees: plain data only (see `boomerang.context`)."""
        return context(customer, journey, now, event)

    def scope(self, customer_id: str, now: datetime, seconds: float = EXPRESSION_SECONDS) -> Scope:
        """An evaluation on the store's thread: the customer's history is read from the store directly."""
        recommend = read_on_store(
            self.store.recommend,
            customer_id,
            now,
            self.project.config.cross_sell,
            strategies(self.project.registry.recommenders),
        )
        return store_scope(
            self.store.events_of_types, customer_id, now, self.project.segments, seconds, recommend
        )

    def _journal(
        self, now: datetime, kind: str, journey: Journey, step: Step | str | None, reason: str, **fields: Any
    ) -> None:
        variants = journey.context.get("variants") or {}
        (self.writes.add_journal if self._held_lines is None else self._held_lines.append)(
            JournalEntry(
                at=now,
                kind=kind,
                customer_id=journey.customer_id,
                reason=reason,
                scenario=journey.scenario,
                journey_id=journey.id,
                step=step.path if isinstance(step, Step) else step,
                variant=list(variants.values())[-1] if variants else None,
                **fields,
            )
        )

    def _queue_send(self, message_id: str, category: str, journey_id: str | None, now: datetime) -> None:
        """Queue the send job of a message just inserted, due now, once per message."""
        self.writes.add_job(
            "send",
            now.timestamp(),
            self.plan.priority(category),
            {"message": message_id},
            journey_id=journey_id,
            key=f"send:{message_id}",
        )
