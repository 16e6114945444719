"""Journeys: start on triggers, advance on timers and events, exit on goals and exit events.

Everything here runs on the store's thread, inside one transaction per decision: a journey's
move from one state to the next, the jobs it schedules and the messages it queues commit
together, so a crash at any moment leaves every journey exactly where it was. A step that
talks to the outside (a send, an action) only queues a job; `Dispatch` runs it.

Expressions (`if:`, audiences, segments) and `with:`/`set:` values are evaluated here, inside
the journey's transaction, with the expressions' shorter budget.
"""

from __future__ import annotations

import hashlib
import logging
from datetime import UTC, datetime, timedelta
from typing import Any

from boomerang.clock import to_iso
from boomerang.context import journey_view
from boomerang.engine_base import EngineBase
from boomerang.engine_protocols import EngineStore
from boomerang.expressions import evaluating, render
from boomerang.ingest import imported
from boomerang.local_time import next_local_time, zone_named
from boomerang.model import Customer, Event, Job, Journey
from boomerang.project import Project
from boomerang.retry import RETRY
from boomerang.scenarios import Scenario, Step
from boomerang.store import unavailable

log = logging.getLogger(__name__)
# How much later a wait `until_idle` looks again when its customer's visit is due to end now:
# the `visit` job storing their `site.left` is running.
VISIT_SETTLING = timedelta(seconds=1)


def _fraction(*parts: str) -> float:
    """A stable number in [0, 1) from the given strings: the same customer always lands the same."""
    digest = hashlib.sha256(":".join(parts).encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def stable_id(prefix: str, *parts: Any) -> str:
    """An id derived from its parts: the same step of the same journey always gets the same one."""
    return prefix + hashlib.sha256(":".join(map(str, parts)).encode()).hexdigest()[:20]


def first_step_due(scenario: Scenario, event: Event) -> datetime:
    """When the first step of a journey `event` starts in `scenario` comes due: at the event,
    or when a first `wait` (its duration, or the timeout of a `wait: {for:}`) ends."""
    first = scenario.steps[0] if scenario.steps else None
    lead = first.duration if first is not None and first.kind in ("wait", "wait_for") else None
    return event.at + (lead or timedelta(0))


def journey_id(scenario: Scenario, customer_id: str, entry_key: str) -> str:
    """The id of the journey a customer starts in a scenario on an entry: one per entry."""
    return stable_id("j-", scenario.id, customer_id, entry_key)


def tick_journey_ids(scenario: Scenario, tick_at: datetime, first: int, count: int) -> list[str]:
    """The ids of the `first`th to the `first + count - 1`th journeys a schedule's tick at
    `tick_at` starts at once (`Journeys._start_waiting`). Numbered rather than hashed: a tick's
    journeys, and their jobs, go one after another at the end of the indexes on their ids (a
    `journey_id` starts with a hexadecimal digit, `t` sorts after them all), rather than each on
    a page of its own anywhere in them. The fixed-width number ends it, so no two scenarios'
    ids meet."""
    prefix = f"j-t{tick_at.astimezone(UTC):%Y%m%dT%H%M%S}-{scenario.id}-"
    return [f"{prefix}{number:09d}" for number in range(first, first + count)]


def held_out(scenario: Scenario, customer_id: str) -> bool:
    """Whether the customer is in the scenario's control group: the same answer every time."""
    return scenario.holdout > 0 and _fraction(scenario.id, customer_id, "holdout") < scenario.holdout


class Journeys(EngineBase):
    """Entering, walking and ending journeys; every method runs on the store's thread."""

    # What `handle_pending_events` read for the batch under way; None between batches.
    _batch: _BatchReads | None = None
    # What `_resume_all` read for the waits under way; None between batches.
    _waits: _WaitReads | None = None

    def use(self, project: Project) -> None:
        """Switch to a newly loaded project; also index its scenarios by the events they act on."""
        super().use(project)
        # Which scenarios an event type starts, and which types are some scenario's goal: an
        # event of another type skips those loops (and the reads they need) altogether.
        self._started_by: dict[str, list[Scenario]] = {}
        for scenario in self.scenarios.values():
            if scenario.trigger.kind == "event":
                for event_type in dict.fromkeys(scenario.trigger.events):  # each type once
                    self._started_by.setdefault(event_type, []).append(scenario)
        self._goal_types = {scenario.goal.event for scenario in self.scenarios.values() if scenario.goal}
        # Every type some scenario acts on; an event of another type changes nothing, unless a
        # journey begun under an earlier version of the project still waits for it.
        self._acted_on = set(self._started_by) | self._goal_types
        for scenario in self.scenarios.values():
            self._acted_on.update(scenario.exit_on)
            self._acted_on.update(step.until_event for step in scenario.index.values() if step.until_event)

    def handle_pending_events(self, limit: int = 200) -> int:
        """Act on stored events not yet handled, up to `limit` of them in ONE transaction (one
        commit for the batch), each in a savepoint of its own. Returns how many.

        The batch's customers and their journeys are read at its start, in one query each; an
        event that writes anything makes its customer read afresh for that customer's next event.
        An event no scenario acts on (and no journey waits for) costs no read at all.

        A bug acting on one event rolls back that event's savepoint alone and marks it handled,
        loudly, so that it cannot wedge the queue. A database that cannot take the write (disk
        full, locked) rolls back the whole batch, which stays queued: that is raised.
        """
        with self.store.transaction():
            # Daemons sharing the database act on events one at a time, in arrival order, so
            # that a customer's events are never acted on by two of them at once.
            self.store.take_turn("events")
            events = self.store.unhandled_events(limit)
            customer_ids = {event.customer_id for event in events if event.customer_id}
            batch = self._batch = _BatchReads.of(self.store, customer_ids, events, self._acted_on)
            try:
                for event in events:
                    if not self._acts_on(event.type) and not batch.awaits(event):
                        continue  # nothing acts on it (the `message.sent` of a batch of sends): no savepoint
                    try:
                        with self.store.savepoint():
                            written = self.store.changes()
                            self.on_event(event, self.clock.now())
                            if self.store.changes() != written:
                                batch.forget(event.customer_id)
                    except Exception as exc:
                        # What this event changed in memory is not what its rolled-back savepoint left.
                        batch.forget(event.customer_id)
                        if unavailable(exc):
                            raise
                        log.exception("acting on event %s (%s) failed; it is skipped", event.id, event.type)
            finally:
                self._batch = None
            # Acted on or skipped, every event of the batch is handled when the batch commits.
            self.store.mark_handled([event.id for event in events])
        return len(events)

    def _acts_on(self, event_type: str) -> bool:
        """Whether some part of the engine acts on every event of this type (a scenario's trigger,
        goal, exit or wait here; a part that acts on one in its own `on_event` says so too)."""
        return event_type in self._acted_on

    def on_event(self, event: Event, now: datetime) -> None:
        """Goals, exits, awaited events, restarts and new entries caused by one event."""
        if event.type not in self._acted_on and (self._batch is None or not self._batch.awaits(event)):
            return  # no scenario acts on it, and no journey of this customer waits for it
        customer, journeys = self._customer_and_journeys(event.customer_id)
        if customer is None:
            return
        # History (`boomerang ingest`) speaks of the past: it acts only on the journeys that had
        # begun by then, and starts one only while the scenario's first step is still ahead.
        past = imported(event)
        concerned = [j for j in journeys if j.entered_at <= event.at] if past else journeys
        if event.type in self._goal_types:
            self._record_goals(customer, concerned, event, now)
        event_view = {"id": event.id, "type": event.type, "at": to_iso(event.at), "data": event.data}
        for journey in [journey for journey in concerned if journey.status == "active"]:
            scenario = self.scenarios.get(journey.scenario)
            if scenario is None:
                continue
            if event.type in scenario.exit_on:
                self._end(journey, "exited", f"{event.type} arrived", now)
            elif journey.waiting_for == event.type:
                journey.context["waited"] = {"event": event.type, "at": event_view["at"], "data": event.data}
                journey.waiting_for = None
                # The timeout timer of this wait is now stale: a new version makes it so.
                self.writes.delete_jobs_of(journey.id, "advance")
                journey.version += 1
                self._advance(journey, scenario, customer, now, completing=True)
        for scenario in self._started_by.get(event.type, ()):
            if past and first_step_due(scenario, event) <= now:
                continue
            trigger = scenario.trigger
            if trigger.condition and not trigger.condition.test(
                self.context(customer, None, now, event_view), self.scope(customer.id, now)
            ):
                continue
            # The journeys above are the stored ones: every change to them was saved as it was made.
            here = [j for j in journeys if j.scenario == scenario.id]
            active = [j for j in here if j.status == "active"]
            if active:
                if scenario.restart:
                    self._restart(active[0], scenario, customer, event_view, now)
                continue
            if here:
                self.enter(scenario, customer, event.id, event_view, now)
            else:  # never in this scenario: the reentry rule has nothing to refuse
                self._start(scenario, customer, event.id, event_view, now)

    def _customer_and_journeys(self, customer_id: str | None) -> tuple[Customer | None, list[Journey]]:
        """An event's customer and all their journeys (oldest first): what the batch read, or read now."""
        if customer_id is None:
            return None, []
        known = self._batch.get(customer_id) if self._batch is not None else None
        if known is None:
            customer = self.store.customer(customer_id)
            known = customer, self.store.journeys_of(customer_id) if customer is not None else []
            if self._batch is not None:
                self._batch.remember(customer_id, known)
        return known

    def _record_goals(self, customer: Customer, journeys: list[Journey], event: Event, now: datetime) -> None:
        for journey in journeys:
            scenario = self.scenarios.get(journey.scenario)
            if scenario is None or scenario.goal is None or scenario.goal.event != event.type:
                continue
            if journey.context.get("converted"):
                continue
            open_for_goal = journey.status == "active" or (
                journey.ended_at is not None and now - journey.ended_at <= scenario.goal.within
            )
            if not open_for_goal:
                continue
            order = event.data.get("order") if isinstance(event.data.get("order"), dict) else {}
            value = order.get("total") if isinstance(order.get("total"), int | float) else None
            journey.context["converted"] = True
            self.writes.save_journey(journey, now)
            group = "holdout" if journey.holdout else "treated"
            self._journal(now, "goal", journey, None, f"{event.type} ({group})", value=value)

    def enter(
        self, scenario: Scenario, customer: Customer, entry_key: str, event: dict, now: datetime
    ) -> bool:
        """Start a journey if the reentry rule allows; returns whether one started."""
        last = self.store.last_journey(scenario.id, customer.id)
        if last is not None:
            if last.status == "active" or scenario.reentry == "once":
                return False
            if isinstance(scenario.reentry, timedelta) and now - last.entered_at < scenario.reentry:
                return False
        return self._start(scenario, customer, entry_key, event, now)

    def _start(
        self, scenario: Scenario, customer: Customer, entry_key: str, event: dict, now: datetime
    ) -> bool:
        """Start a journey the reentry rule allows; False if this entry exists already."""
        holdout = held_out(scenario, customer.id)
        journey = Journey(
            id=journey_id(scenario, customer.id, entry_key),
            scenario=scenario.id,
            customer_id=customer.id,
            entry_key=entry_key,
            status="active",
            holdout=holdout,
            cursor=scenario.first,
            version=0,
            context={"event": event},
            entered_at=now,
        )
        if not self.writes.insert_journey(journey, now):
            return False
        self._journal(now, "enter", journey, None, _entered_on(event))
        if holdout:
            self._journal(now, "holdout", journey, None, _held_out_line(scenario))
        self._advance(journey, scenario, customer, now, completing=False)
        return True

    def _start_waiting(
        self,
        scenario: Scenario,
        customers: list[tuple[str, str | None]],
        entry_key: str,
        event: dict,
        now: datetime,
        ids: list[str],
    ) -> None:
        """Start journeys for many customers, each (id, timezone), at once in a scenario whose
        first step is a `wait` (`first_waits`), with the given ids: what `_start` would leave
        for each, its row, timeline and wait's job, written with one statement per table. The
        customers must be ones the reentry rule lets in, not entered on `entry_key` yet.

        Nothing of a journey needs working out but its id, its control group and, for a wait
        until a time of day, when that comes on the customer's clock: the rest is the same for
        every customer, its JSON encoded once."""
        step = scenario.index[scenario.first or ""]
        entered, held_line = _entered_on(event), _held_out_line(scenario)
        # A wait until a time of day ends when that comes on each customer's clock: worked out
        # once per timezone the page's profiles name.
        ends: dict[str | None, float] = {}
        journeys, journal, jobs = [], [], []
        for (customer_id, timezone), journey_id_ in zip(customers, ids, strict=True):
            holdout = held_out(scenario, customer_id)
            journeys.append((journey_id_, customer_id, int(holdout)))
            journal.append(("enter", customer_id, journey_id_, entered))
            if holdout:
                journal.append(("holdout", customer_id, journey_id_, held_line))
            zone = timezone if step.at is not None else None
            due = ends.get(zone)
            if due is None:
                due = ends[zone] = self._wait_ends(step, zone, now).timestamp()
            jobs.append((due, journey_id_))
        self.store.start_journeys(scenario.id, entry_key, step.path, {"event": event}, now, journeys)
        self.store.add_journal_lines(now, scenario.id, journal)
        priority = self.plan.priority(scenario.category)
        self.store.add_journey_jobs("advance", priority, {"resume": step.path}, 0, jobs)

    def _restart(
        self, journey: Journey, scenario: Scenario, customer: Customer, event: dict, now: datetime
    ) -> None:
        self.writes.delete_jobs_of(journey.id)
        journey.version += 1
        journey.context = {**journey.context, "event": event, "waited": None}
        journey.waiting_for = None
        journey.cursor = scenario.first
        self._journal(now, "enter", journey, None, f"restarted by {event.get('type')}: waiting again")
        self._advance(journey, scenario, customer, now, completing=False)

    def _end(self, journey: Journey, status: str, reason: str, now: datetime) -> None:
        # An exit cancels everything still pending; a journey that simply reached its end
        # keeps the sends and actions its last steps queued.
        self.writes.delete_jobs_of(journey.id, None if status == "exited" else "advance")
        journey.status = status
        journey.cursor = None
        journey.waiting_for = None
        journey.ended_at = now
        journey.version += 1
        self.writes.save_journey(journey, now)
        self._journal(now, "exit", journey, None, reason)

    def _advance(
        self, journey: Journey, scenario: Scenario, customer: Customer, now: datetime, completing: bool
    ) -> None:
        """Run instant steps from the cursor until a wait, a stop or the end."""
        cursor = scenario.next_of.get(journey.cursor) if completing and journey.cursor else journey.cursor
        if completing and journey.cursor not in scenario.index:
            cursor = None
        while True:
            if cursor is None:
                self._end(journey, "completed", "reached the last step", now)
                return
            step = scenario.index.get(cursor)
            if step is None:
                self._end(journey, "exited", f"step {cursor} no longer exists in the scenario", now)
                return
            journey.cursor = cursor
            if step.kind == "wait":
                self._schedule_resume(journey, scenario, self._wait_ends(step, customer.timezone, now))
                self.writes.save_journey(journey, now)
                return
            if step.kind == "wait_for":
                journey.waiting_for = step.until_event
                self._schedule_resume(journey, scenario, now + (step.duration or timedelta(0)))
                self.writes.save_journey(journey, now)
                return
            if step.kind == "stop":
                self._end(journey, "completed", f"stopped at step {step.path}", now)
                return
            cursor = self._instant(step, journey, scenario, customer, now)

    def _instant(
        self, step: Step, journey: Journey, scenario: Scenario, customer: Customer, now: datetime
    ) -> str | None:
        """Do one step that takes no time; returns the path of the next step."""
        following = scenario.next_of[step.path]
        if step.kind == "if":
            assert step.condition is not None
            context = self.context(customer, journey, now)
            chosen = step.condition.test(context, self.scope(customer.id, now))
            branch = step.then if chosen else step.otherwise
            return branch[0].path if branch else following
        if step.kind == "split":
            point = _fraction(scenario.id, step.path, customer.id)
            chosen = step.variants[-1]
            for variant in step.variants:
                if point < variant.weight:
                    chosen = variant
                    break
                point -= variant.weight
            journey.context.setdefault("variants", {})[step.path] = chosen.name
            return chosen.steps[0].path if chosen.steps else following
        if step.kind == "send":
            self._queue_message(step, journey, scenario, customer, now)
        elif step.kind == "action":
            self._queue_action(step, journey, scenario, customer, now)
        elif step.kind == "set" and not journey.holdout:
            values = self._render_or_report(step, step.assignments, journey, customer, now)
            if values is not None:
                self.store.set_attributes(customer.id, values)
                customer.attributes.update(values)
        return following

    def _render_or_report(
        self, step: Step, values: Any, journey: Journey, customer: Customer, now: datetime
    ) -> Any:
        """Render a step's values; a failure is journaled and the journey goes on without them."""
        try:
            with evaluating(self.scope(customer.id, now)):
                return self._render_values(values, self.context(customer, journey, now))
        except Exception as exc:  # noqa: BLE001 - Jinja raises many kinds; one bad value must not stop the journey
            self._journal(
                now, "drop", journey, step, f"{step.kind} not done: cannot render its values: {exc}"
            )
            return None

    def _wait_ends(self, step: Step, timezone: str | None, now: datetime) -> datetime:
        """When a `wait` step begun now ends: after its duration, then at its time of day on the
        clock of the customer whose profile names `timezone` (else the plan's:
        `ContactPlan.zone_of`), as the quiet hours read it."""
        due = now + (step.duration or timedelta(0))
        if step.at is None:
            return due
        return next_local_time(due, step.at, zone_named(timezone, self.plan.zone), step.weekdays)

    def _schedule_resume(self, journey: Journey, scenario: Scenario, due: datetime) -> None:
        self.writes.add_job(
            "advance",
            due.timestamp(),
            self.plan.priority(scenario.category),
            {"resume": journey.cursor},
            journey_id=journey.id,
            version=journey.version,
        )

    def _render_values(self, values: Any, context: dict) -> Any:
        if isinstance(values, str) and ("{{" in values or "{%" in values):
            template = self._value_templates.get(values)
            if template is None:
                template = self._value_templates[values] = self.project.environment.from_string(values)
            return render(template, context)
        if isinstance(values, dict):
            return {key: self._render_values(value, context) for key, value in values.items()}
        if isinstance(values, list):
            return [self._render_values(value, context) for value in values]
        return values

    def _queue_message(
        self, step: Step, journey: Journey, scenario: Scenario, customer: Customer, now: datetime
    ) -> None:
        variant = journey_view(journey)["variant"]
        if journey.holdout:
            self._journal(
                now, "drop", journey, step, "control group (holdout): not sent", template=step.template
            )
            return
        message_id = stable_id("m-", journey.id, journey.version, step.path)
        expires = now + step.expires if step.expires else None
        self.writes.insert_message(
            {
                "id": message_id,
                "journey_id": journey.id,
                "customer_id": customer.id,
                "scenario": scenario.id,
                "step": step.path,
                "template": step.template,
                "category": scenario.category,
                "candidates": list(step.channels) if step.channels else None,
                "status": "pending",
                "promo": _promo_record(step.promo),
                "expires_at": to_iso(expires) if expires else None,
                "variant": variant,
                "context": journey.context,
                "created_at": to_iso(now),
            }
        )
        self._queue_send(message_id, scenario.category, journey.id, now)

    def _queue_action(
        self, step: Step, journey: Journey, scenario: Scenario, customer: Customer, now: datetime
    ) -> None:
        if journey.holdout:
            self._journal(now, "drop", journey, step, f"control group (holdout): {step.action} not run")
            return
        arguments = self._render_or_report(step, step.arguments, journey, customer, now)
        if arguments is None:
            return
        self.writes.add_job(
            "action",
            now.timestamp(),
            self.plan.priority(scenario.category),
            {"action": step.action, "arguments": arguments, "step": step.path},
            journey_id=journey.id,
            key=stable_id("action:", journey.id, journey.version, step.path),
        )

    def _resume_all(self, jobs: list[Job], now: datetime) -> None:
        """`advance` jobs falling due together (a burst of waits ending at once) in one
        transaction, one commit for all: each in its own savepoint, so one that raises is rolled
        back alone and settled by `RETRY` while the others go on.

        Their journeys and customers are read at the start, one query each (`_WaitReads`), and
        what their steps write (the journeys' new states too) is gathered and written at the end,
        one statement per table (`batched_writes`), as is the completion of the jobs done.
        """
        with self.store.transaction():
            reads = self._waits = _WaitReads.of(self.store, jobs)
            done: list[int] = []
            try:
                with self.batched_writes() as writes:
                    for job in jobs:
                        try:
                            with writes.undone_on_error():
                                self._resume(job, now)  # in a savepoint of its own
                            done.append(job.id)
                        except Exception as exc:  # one journey's bug must not hold up the rest
                            if unavailable(exc):
                                raise  # the database cannot take the batch: all of it is retried
                            reads.forget(job)  # what was read of it may hold what the savepoint undid
                            # Read again, it must show what the steps before it wrote, held so far.
                            writes.flush()
                            RETRY.settle_failure(self.store, job, now.timestamp(), exc)
                self.store.complete_jobs(done)
            finally:
                self._waits = None

    def _resume(self, job: Job, now: datetime) -> None:
        """An `advance` job: a wait is over (or an awaited event did not come); walk on.
        In a batch (`_resume_all`), in a savepoint of its own inside the batch's transaction,
        and the batch completes the job."""
        # The store's plain savepoint in a batch: sqlite-utils' nested one costs four times more.
        if self._waits is not None:
            with self.store.savepoint():
                self._resume_in(job, now)
            return
        with self.store.transaction():
            self.store.complete_job(job.id)
            self._resume_in(job, now)

    def _resume_in(self, job: Job, now: datetime) -> None:
        """`_resume` inside its transaction or savepoint, the job completed (or to be)."""
        reads = self._waits or _WaitReads(self.store, {}, {})
        journey = reads.journey(job.journey_id) if job.journey_id else None
        if journey is None or journey.status != "active" or journey.version != job.version:
            return  # the journey moved on (restart, exit, awaited event): this timer is stale
        scenario = self.scenarios.get(journey.scenario)
        customer = reads.customer(journey.customer_id)
        if customer is None:
            return
        if scenario is None:
            self._end(journey, "exited", "the scenario no longer exists", now)
            return
        step = scenario.index.get(journey.cursor or "")
        if step is not None and step.kind == "wait" and step.until_idle:
            quiet_from = self._quiet_from(customer, step.until_idle, now)
            if quiet_from > now:  # still browsing (seed S18): remind only once they are idle
                self.writes.add_job(
                    "advance",
                    quiet_from.timestamp(),
                    job.priority,
                    job.payload,
                    journey_id=journey.id,
                    version=journey.version,
                )
                return
        if journey.waiting_for:
            journey.context["waited"] = {"event": None, "at": to_iso(now), "data": {}}
            journey.waiting_for = None
        self._advance(journey, scenario, customer, now, completing=True)

    def _quiet_from(self, customer: Customer, idle: timedelta, now: datetime) -> datetime:
        """When the customer will have been quiet on the site for `idle`: `idle` after they were
        last seen, and not before the visit of a browser the site tracks has ended (`site.left`
        is stored); `now` if both are past."""
        quiet_from = now
        # A visit stamped beyond `now` (an event dated in the future, stored before the store
        # took such events as of their arrival) says nothing about being on the site now.
        seen = customer.last_seen_at
        if seen and seen <= now:
            quiet_from = max(quiet_from, seen + idle)
        visit_ends = self.store.open_visit_until(customer.id)
        if visit_ends is not None:
            # Its `site.left` is stored when the visit job runs: a due one is being run now.
            ends = datetime.fromtimestamp(visit_ends, UTC)
            quiet_from = max(quiet_from, ends if ends > now else now + VISIT_SETTLING)
        return quiet_from


class _BatchReads:
    """The customers of a batch of events and all their journeys, read at once at its start.

    A customer's entry holds what the store holds only until one of their events writes
    something: `forget` then drops it, and their next event reads them afresh (and `remember`s
    that). `awaited` holds what the active journeys waited for at the start: during the batch
    a journey only stops waiting, or starts waiting for an event the project's scenarios act on.
    """

    def __init__(
        self, known: dict[str, tuple[Customer | None, list[Journey]]], awaited: set[tuple[str, str]]
    ):
        self._known = known
        self._awaited = awaited

    @classmethod
    def of(
        cls, store: EngineStore, customer_ids: set[str], events: list[Event], acted_on: set[str]
    ) -> _BatchReads:
        """Read what the batch's events can concern: which journeys wait for what, in one query
        that decodes nothing, then the customers and journeys of those with an event that a
        scenario acts on or a journey waits for, one query each (per 500 customers). A batch of
        events nothing acts on (the `message.sent` of a batch of sends) costs one light query."""
        awaited = store.awaiting(customer_ids) if customer_ids else set()
        wanted = {
            event.customer_id
            for event in events
            if event.customer_id and (event.type in acted_on or (event.customer_id, event.type) in awaited)
        }
        customers = store.customers(wanted) if wanted else {}
        journeys = store.journeys_of_customers(customers) if customers else {}
        known = {
            customer_id: (customers.get(customer_id), journeys.get(customer_id, [])) for customer_id in wanted
        }
        return cls(known, awaited)

    def awaits(self, event: Event) -> bool:
        """Whether an active journey of the event's customer waited for its type at the start."""
        return (event.customer_id, event.type) in self._awaited

    def get(self, customer_id: str) -> tuple[Customer | None, list[Journey]] | None:
        """The customer (None: there is none) and their journeys; None if not known (any more)."""
        return self._known.get(customer_id)

    def remember(self, customer_id: str, known: tuple[Customer | None, list[Journey]]) -> None:
        """Keep what was just read of a customer for their next event."""
        self._known[customer_id] = known

    def forget(self, customer_id: str | None) -> None:
        """Drop what was read of a customer: something was written since."""
        if customer_id is not None:
            self._known.pop(customer_id, None)


class _WaitReads:
    """The journeys of a batch of `advance` jobs and their customers, read at once at its start.

    Every id asked for is kept, None for one not stored (or that cannot be read back); an id
    not asked for, or forgotten, is read from the store when wanted. A journey's steps keep the
    objects read here up to date as they write (its row, its customer's attributes), so a
    second job of the same journey or customer in the batch sees what the first one did.
    """

    def __init__(
        self, store: EngineStore, journeys: dict[str, Journey | None], customers: dict[str, Customer | None]
    ):
        self.store = store
        self._journeys = journeys
        self._customers = customers

    @classmethod
    def of(cls, store: EngineStore, jobs: list[Job]) -> _WaitReads:
        """Read the jobs' journeys and their customers: one query each."""
        journey_ids = {job.journey_id for job in jobs if job.journey_id}
        journeys = store.journeys(journey_ids)
        customer_ids = {journey.customer_id for journey in journeys.values()}
        customers = store.customers(customer_ids)
        return cls(
            store,
            {key: journeys.get(key) for key in journey_ids},
            {key: customers.get(key) for key in customer_ids},
        )

    def journey(self, journey_id: str) -> Journey | None:
        """A journey of the batch, as read (or read now)."""
        if journey_id not in self._journeys:
            return self.store.journey(journey_id)
        return self._journeys[journey_id]

    def customer(self, customer_id: str) -> Customer | None:
        """A customer of the batch, as read (or read now)."""
        if customer_id not in self._customers:
            return self.store.customer(customer_id)
        return self._customers[customer_id]

    def forget(self, job: Job) -> None:
        """Drop what was read for a job whose savepoint rolled back: it may hold undone changes."""
        journey = self._journeys.pop(job.journey_id, None) if job.journey_id else None
        if journey is not None:
            self._customers.pop(journey.customer_id, None)


def first_waits(scenario: Scenario) -> bool:
    """Whether a journey of the scenario starts by waiting (its first step a `wait`): then
    starting one writes the same for every customer but its id, group and wait's end, and a
    schedule starts its audience a page at a time (`Journeys._start_waiting`)."""
    first = scenario.index.get(scenario.first or "")
    return first is not None and first.kind == "wait"


def _entered_on(event: dict) -> str:
    return f"entered on {event.get('type')}"


def _held_out_line(scenario: Scenario) -> str:
    return f"control group ({scenario.holdout:.0%}): sent nothing"


def _promo_record(promo: dict[str, Any] | None) -> dict[str, Any] | None:
    """A step's promo as stored with the message (durations in seconds)."""
    if not promo:
        return None
    return {
        key: value.total_seconds() if isinstance(value, timedelta) else value for key, value in promo.items()
    }
