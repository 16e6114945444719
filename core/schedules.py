"""Schedules: the cron and date triggers, as `tick` jobs that enter every matching customer.

Each schedule or date scenario has its next tick queued as a job (`ensure_ticks`); a tick
enters the scenario's audience page by page and queues the following one. Every method runs
on the store's thread.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from croniter import croniter

from boomerang.clock import to_iso
from boomerang.journeys import Journeys
from boomerang.model import Job
from boomerang.scenarios import Scenario


class Schedules(Journeys):
    """Cron and date ticks; every method runs on the store's thread."""

    def ensure_ticks(self, now: datetime) -> None:
        """Make sure every schedule and date scenario has its next tick queued."""
        with self.store.transaction():
            for scenario in self.scenarios.values():
                due = self._next_tick(scenario, now)
                if due is not None:
                    self.store.add_job(
                        "tick",
                        due.timestamp(),
                        self.plan.priority(scenario.category),
                        {"scenario": scenario.id, "signature": self._tick_signature(scenario)},
                        key=f"tick:{scenario.id}:{to_iso(due)}",
                    )

    def _tick_signature(self, scenario: Scenario) -> str:
        trigger = scenario.trigger
        return f"{trigger.kind}:{trigger.cron}:{trigger.date_field}:{trigger.offset}:{trigger.time_of_day}"

    def _next_tick(self, scenario: Scenario, now: datetime) -> datetime | None:
        trigger = scenario.trigger
        local = now.astimezone(self.zone)
        if trigger.kind == "schedule" and trigger.cron:
            return croniter(trigger.cron, local).get_next(datetime)
        if trigger.kind == "date":
            hour, minute = trigger.time_of_day
            today = local.replace(hour=hour, minute=minute, second=0, microsecond=0)
            return today if today > local else (today + timedelta(days=1)).replace(hour=hour, minute=minute)
        return None

    def _tick(self, job: Job, now: datetime) -> None:
        """A `tick` job: enter the schedule's audience (or the date's customers), queue the next tick."""
        scenario = self.scenarios.get(job.payload.get("scenario", ""))
        if scenario is None or job.payload.get("signature") != self._tick_signature(scenario):
            with self.store.transaction():
                self.store.complete_job(job.id)  # the scenario changed or went away
            return
        tick_at = datetime.fromtimestamp(job.due_at, self.zone)
        entry_key = f"tick:{to_iso(tick_at)}"
        event = {"type": scenario.trigger.kind, "at": to_iso(now), "data": {}}
        if scenario.trigger.kind == "schedule":
            after = ""
            while True:  # a crash part-way re-runs the tick; entry keys keep entries single
                page = self.store.customers_page(after)
                if not page:
                    break
                with self.store.transaction():
                    for customer in page:
                        audience = scenario.trigger.audience
                        context = self.context(customer, None, now, event)
                        if audience is not None and audience.test(context, self.scope(customer.id, now)):
                            self.enter(scenario, customer, entry_key, event, now)
                after = page[-1].id
        else:
            day = tick_at.date() - scenario.trigger.offset
            entry_key = f"date:{tick_at.date().isoformat()}"
            month_days = [day.strftime("%m-%d")]
            if month_days == ["02-28"] and not _is_leap(day.year):
                month_days.append("02-29")
            with self.store.transaction():
                for customer in self.store.customers_with_date(
                    scenario.trigger.date_field or "birthday", month_days
                ):
                    self.enter(scenario, customer, entry_key, event, now)
        with self.store.transaction():
            self.store.complete_job(job.id)
        self.ensure_ticks(now)


def _is_leap(year: int) -> bool:
    return year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)
