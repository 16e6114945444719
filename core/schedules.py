"""Schedules: the cron and date triggers, as `tick` jobs that enter every matching customer.

Each schedule or date scenario has its next tick queued as a job (`ensure_ticks`); a tick
enters the scenario's audience and queues the following one. A schedule's audience may be
every customer: it is read in pages of `AUDIENCE_BATCH` customers (`WAITING_BATCH` when they
start at once), in id order, that the reentry rule already lets in (one query each), and each
page is entered in one transaction that also records how far the tick got in its job; the
page's journeys, timeline lines and jobs are written with one statement per table
(`BatchedWrites`, or for journeys that first wait `Journeys._start_waiting`, which works out
nothing per customer but its id, group and wait's end). Between pages the store's thread is
free for ingest and sends, memory holds one page, and a tick cut off by a crash resumes after
the last page it committed (entry keys keep a re-run from entering anyone twice). `_tick` runs
on the event loop and hands each page to the store's thread; every other method runs there.
"""

from __future__ import annotations

import contextlib
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import croniter

from boomerang.audiences import Condition, translate
from boomerang.clock import to_iso
from boomerang.journeys import Journeys, first_waits, tick_journey_ids
from boomerang.local_time import moment_of, next_local_time
from boomerang.model import Customer, Job
from boomerang.scenarios import Scenario, Trigger
from boomerang.store.customers import AudienceQuery, ScheduleZones

# Customers entered per transaction: large enough that a commit's cost is shared by many,
# small enough that the store's thread is free again within a fraction of a second.
AUDIENCE_BATCH = 1000
# The same when the store chose the audience and the journeys first wait, so that a page starts
# at once (`Journeys._start_waiting`): a customer costs a few times less there, and a commit
# (its fsync, the WAL's checkpoint) as much.
WAITING_BATCH = 5000


class Schedules(Journeys):
    """Cron and date ticks; every method runs on the store's thread."""

    def ensure_ticks(self, now: datetime) -> None:
        """Make sure every schedule and date scenario has its next tick queued."""
        with self.store.transaction():
            zones: dict[str, ZoneInfo] | None = None  # read once, and only if a scenario ticks
            for scenario in self.scenarios.values():
                if scenario.trigger.kind not in ("schedule", "date"):
                    continue
                zones = self._zones() if zones is None else zones
                due = self._next_tick(scenario, now, zones)
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

    def _next_tick(self, scenario: Scenario, now: datetime, zones: dict[str, ZoneInfo]) -> datetime | None:
        """When a schedule or date scenario next ticks, in the timezones `zones` (`_zones()`)."""
        trigger = scenario.trigger
        if trigger.kind == "schedule" and trigger.cron:
            # The schedule's time comes on each customer's own clock: a tick at the next moment
            # it comes in the plan's timezone or in one a customer's profile names.
            return min(
                croniter(trigger.cron, now.astimezone(zone)).get_next(datetime)
                for zone in zones.values()
            )
        if trigger.kind == "date":
            return self._next_date_tick(trigger, now, zones)
        return None

    def _next_date_tick(self, trigger: Trigger, now: datetime, zones: dict[str, ZoneInfo]) -> datetime:
        """The next moment after `now` when it is the trigger's time of day in the plan's
        timezone or in one a customer's profile names: each such moment is a tick."""
        at = time(*trigger.time_of_day)
        # Strictly after `now`: the tick that has just run was due at `now`.
        return min(next_local_time(now + timedelta(seconds=1), at, zone) for zone in zones.values())

    def _zones(self) -> dict[str, ZoneInfo]:
        """The plan's timezone (under "") and every timezone customers' profiles name, by
        name; a name that is no timezone is left out: such a customer lives by the plan's
        (`ContactPlan.zone_of`)."""
        zones = {"": self.zone}
        for name in self.store.timezones():
            with contextlib.suppress(ZoneInfoNotFoundError, ValueError, OSError):
                zones[name] = ZoneInfo(name)
        return zones

    def _schedule_zones(self, cron: str, tick_at: datetime) -> ScheduleZones:
        """Whose clock a schedule's tick at `tick_at` is for: the timezones (by name) in which
        the cron expression comes at that very moment."""
        zones = self._zones()
        before = tick_at - timedelta(seconds=1)
        due = {
            name
            for name, zone in zones.items()
            if croniter(cron, before.astimezone(zone)).get_next(datetime) == tick_at
        }
        return ScheduleZones(sorted(due - {""}), "" in due, sorted(set(zones) - {""}))

    async def _tick(self, job: Job) -> None:
        """A `tick` job: enter the schedule's audience (or the date's customers), queue the next tick."""
        now = self.clock.now()
        scenario = self.scenarios.get(job.payload.get("scenario", ""))
        if scenario is not None and job.payload.get("signature") == self._tick_signature(scenario):
            if scenario.trigger.kind == "schedule":
                tick_at = datetime.fromtimestamp(job.due_at, UTC)
                zones = await self.store.run(self._schedule_zones, scenario.trigger.cron, tick_at)
                while await self.store.run(self._enter_audience_page, job, scenario, now, zones):
                    pass
            else:
                await self.store.run(self._enter_dated, job, scenario, now)
        # else the scenario changed or went away: the tick is done with
        await self.store.run(self._finish_tick, job, now)

    def _enter_audience_page(
        self, job: Job, scenario: Scenario, now: datetime, zones: ScheduleZones | None = None
    ) -> bool:
        """Enter the next page of a schedule's audience, of the customers whose clock the tick is
        for (`zones`, else found here); False once the whole audience was read."""
        tick_at = datetime.fromtimestamp(job.due_at, self.zone)
        if zones is None:
            zones = self._schedule_zones(scenario.trigger.cron or "", tick_at)
        event = {"type": "schedule", "at": to_iso(now), "data": {}}
        audience = scenario.trigger.audience
        entry_key = f"tick:{to_iso(tick_at)}"
        translated = self._translated(audience.source) if audience is not None else None
        at_once = translated is not None and first_waits(scenario)
        query = AudienceQuery(
            scenario.id,
            job.payload.get("after", ""),
            WAITING_BATCH if at_once else AUDIENCE_BATCH,
            self._entered_since(scenario, now),
            (translated, now) if translated is not None else None,
            zones,
            entry_key,
        )
        with self.store.transaction():
            # A page holds only customers the reentry rule lets in, not entered by this tick
            # yet, so they start at once.
            if at_once:
                # The store chose them, as the sandbox would have; each journey's first step is
                # a wait, so they are started together, numbered on from the tick's last page,
                # with nothing of their profiles but their timezones read.
                members, following = self.store.audience_members(query)
                entered = job.payload.get("entered", 0)
                ids = tick_journey_ids(scenario, tick_at, entered, len(members))
                self._start_waiting(scenario, members, entry_key, event, now, ids)
                job.payload["entered"] = entered + len(members)
            else:
                page, following = self.store.audience_page(query)
                entering = page if translated is not None else [
                    customer
                    for customer in page
                    if audience is not None
                    and audience.test(self.context(customer, None, now, event), self.scope(customer.id, now))
                ]
                # Their journeys, timeline, jobs and messages are written together, one
                # statement per table.
                with self.batched_writes():
                    for customer in entering:
                        self._start(scenario, customer, entry_key, event, now)
            if following is not None:
                job.payload["after"] = following
                self.store.save_job_payload(job.id, job.payload)
        return following is not None

    def _translated(self, source: str) -> Condition | None:
        """An audience expression as the store's condition (`boomerang.audiences`), once per
        expression; None if it must be evaluated in the sandbox."""
        if not self.store.answers_audiences:
            return None
        if source not in self._audiences:
            self._audiences[source] = translate(source, self.project.registry.conditions)
        return self._audiences[source]

    def _entered_since(self, scenario: Scenario, now: datetime) -> str | None:
        """The reentry rule as `AudienceQuery.entered_since`: entries after this moment keep one out."""
        if scenario.reentry == "once":
            return ""
        if isinstance(scenario.reentry, timedelta):
            return to_iso(now - scenario.reentry)
        return None

    def _enter_dated(self, job: Job, scenario: Scenario, now: datetime) -> None:
        """Enter the customers whose date (with the trigger's offset) is today on their own
        clock and whose time of day has come by the tick (their timezone, else the plan's).

        A tick falls due at the time of day of some timezone; a customer of a timezone no
        profile named when the tick was queued is entered by the next tick of their day. The
        entry key is their own day, so no later tick of that day enters them again.
        """
        trigger = scenario.trigger
        tick_at = datetime.fromtimestamp(job.due_at, UTC)
        at = time(*trigger.time_of_day)
        event: dict[str, Any] = {"type": trigger.kind, "at": to_iso(now), "data": {}}
        field = trigger.date_field or "birthday"
        # Somewhere it is already tomorrow, somewhere still yesterday.
        near = [tick_at.date() + timedelta(days=days) for days in (-1, 0, 1)]
        month_days = sorted({month_day for day in near for month_day in _month_days(day - trigger.offset)})
        with self.store.transaction():
            for customer in self.store.customers_with_date(field, month_days):
                zone = self.plan.zone_of(customer)
                day = tick_at.astimezone(zone).date()
                if moment_of(day, at, zone) > tick_at:
                    continue  # not yet their time today
                if str(_date_of(customer, field))[-5:] not in _month_days(day - trigger.offset):
                    continue  # their date is another day's
                self.enter(scenario, customer, f"date:{day.isoformat()}", event, now)

    def _finish_tick(self, job: Job, now: datetime) -> None:
        with self.store.transaction():
            self.store.complete_job(job.id)
        self.ensure_ticks(now)


def _month_days(day: date) -> list[str]:
    """The `MM-DD` of dates kept on `day`: 29 February is kept on the 28th in other years."""
    month_days = [day.strftime("%m-%d")]
    if month_days == ["02-28"] and not _is_leap(day.year):
        month_days.append("02-29")
    return month_days


def _date_of(customer: Customer, field: str) -> Any:
    """A customer's date field: `birthday` or `attributes.<name>`."""
    if field == "birthday":
        return customer.birthday
    return customer.attributes.get(field.split(".", 1)[1])


def _is_leap(year: int) -> bool:
    return year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)
