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
from datetime import datetime, timedelta
from typing import Any

from boomerang.clock import to_iso
from boomerang.context import journey_view
from boomerang.engine_base import EngineBase
from boomerang.expressions import evaluating, render
from boomerang.model import Customer, Event, Job, Journey
from boomerang.scenarios import Scenario, Step
from boomerang.store import unavailable

log = logging.getLogger(__name__)


def _fraction(*parts: str) -> float:
    """A stable number in [0, 1) from the given strings: the same customer always lands the same."""
    digest = hashlib.sha256(":".join(parts).encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def stable_id(prefix: str, *parts: Any) -> str:
    """An id derived from its parts: the same step of the same journey always gets the same one."""
    return prefix + hashlib.sha256(":".join(map(str, parts)).encode()).hexdigest()[:20]


def journey_id(scenario: Scenario, customer_id: str, entry_key: str) -> str:
    """The id of the journey a customer starts in a scenario on an entry: one per entry."""
    return stable_id("j-", scenario.id, customer_id, entry_key)


class Journeys(EngineBase):
    """Entering, walking and ending journeys; every method runs on the store's thread."""

    def handle_pending_events(self, limit: int = 200) -> int:
        """Act on stored events not yet handled, up to `limit` of them in ONE transaction (one
        commit for the batch), each in a savepoint of its own. Returns how many.

        A bug acting on one event rolls back that event's savepoint alone and marks it handled,
        loudly, so that it cannot wedge the queue. A database that cannot take the write (disk
        full, locked) rolls back the whole batch, which stays queued: that is raised.
        """
        events = self.store.unhandled_events(limit)
        with self.store.transaction():
            for event in events:
                try:
                    with self.store.transaction():
                        self.on_event(event, self.clock.now())
                        self.store.mark_handled(event.id)
                except Exception as exc:
                    if unavailable(exc):
                        raise
                    log.exception("acting on event %s (%s) failed; it is skipped", event.id, event.type)
                    self.store.mark_handled(event.id)
        return len(events)

    def on_event(self, event: Event, now: datetime) -> None:
        """Goals, exits, awaited events, restarts and new entries caused by one event."""
        customer = self.store.customer(event.customer_id)
        if customer is None:
            return
        event_view = {"id": event.id, "type": event.type, "at": to_iso(event.at), "data": event.data}
        self._record_goals(customer, event, now)
        for journey in self.store.journeys_of(customer.id, "active"):
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
        for scenario in self.scenarios.values():
            trigger = scenario.trigger
            if trigger.kind != "event" or event.type not in trigger.events:
                continue
            if trigger.condition and not trigger.condition.test(
                self.context(customer, None, now, event_view), self.scope(customer.id, now)
            ):
                continue
            active = [j for j in self.store.journeys_of(customer.id, "active") if j.scenario == scenario.id]
            if active:
                if scenario.restart:
                    self._restart(active[0], scenario, customer, event_view, now)
                continue
            self.enter(scenario, customer, event.id, event_view, now)

    def _record_goals(self, customer: Customer, event: Event, now: datetime) -> None:
        for journey in self.store.journeys_of(customer.id):
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
        holdout = scenario.holdout > 0 and _fraction(scenario.id, customer.id, "holdout") < scenario.holdout
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
        self._journal(now, "enter", journey, None, f"entered on {event.get('type')}")
        if holdout:
            self._journal(
                now, "holdout", journey, None, f"control group ({scenario.holdout:.0%}): sent nothing"
            )
        self._advance(journey, scenario, customer, now, completing=False)
        return True

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
                self._schedule_resume(journey, scenario, now + (step.duration or timedelta(0)))
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

    def _resume(self, job: Job, now: datetime) -> None:
        """An `advance` job: a wait is over (or an awaited event did not come); walk on."""
        with self.store.transaction():
            self.store.complete_job(job.id)
            journey = self.store.journey(job.journey_id) if job.journey_id else None
            if journey is None or journey.status != "active" or journey.version != job.version:
                return  # the journey moved on (restart, exit, awaited event): this timer is stale
            scenario = self.scenarios.get(journey.scenario)
            customer = self.store.customer(journey.customer_id)
            if customer is None:
                return
            if scenario is None:
                self._end(journey, "exited", "the scenario no longer exists", now)
                return
            step = scenario.index.get(journey.cursor or "")
            # A visit stamped beyond `now` (an event dated in the future, stored before the store
            # took such events as of their arrival) says nothing about being on the site now.
            seen = customer.last_seen_at
            if step is not None and step.kind == "wait" and step.until_idle and seen and seen <= now:
                quiet_from = seen + step.until_idle
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


def _promo_record(promo: dict[str, Any] | None) -> dict[str, Any] | None:
    """A step's promo as stored with the message (durations in seconds)."""
    if not promo:
        return None
    return {
        key: value.total_seconds() if isinstance(value, timedelta) else value for key, value in promo.items()
    }
