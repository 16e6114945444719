"""Journeys: start on triggers, advance on timers and events, exit on goals and exit events.

The engine's decisions run on the store's thread, each inside one transaction: a journey's
move from one state to the next, the jobs it schedules and the messages it queues commit
together, so a crash at any moment leaves every journey exactly where it was. Sends and
actions, which talk to the outside, are jobs of their own; they run on the event loop and
record their outcome in a second transaction.

A send is planned on the store's thread (the contact plan's decision; nothing is written
unless the message waits or is dropped), rendered on a render thread within the message's
time and size budget, so that a slow template never holds up the store, and recorded on the
store's thread, where the decision is made again: if another message took the slot in the
meantime, it is planned afresh. A crash before the record leaves the message pending.

Expressions (`if:`, audiences, segments) and `with:`/`set:` values are evaluated on the
store's thread, inside the journey's transaction, with the expressions' shorter budget.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import hashlib
import json
import logging
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from croniter import croniter
from jinja2 import Template
from jinja2.exceptions import SecurityError

from boomerang.clock import parse_time, to_iso
from boomerang.contact_plan import DEFAULT_RATE, Decision, load_plan
from boomerang.expressions import (
    EXPRESSION_SECONDS,
    MESSAGE_SECONDS,
    Budget,
    Expression,
    RenderLimitExceeded,
    Scope,
    evaluating,
    render,
)
from boomerang.history import History
from boomerang.model import Customer, Delivery, DeliveryStatus, Event, Job, JournalEntry, Journey, Message
from boomerang.plugin_manager import Plugins
from boomerang.project import Project
from boomerang.scenarios import Scenario, Step
from boomerang.sending import send_message
from boomerang.templates import MessageTemplate, Rendered
from boomerang.tracking import Tracking

log = logging.getLogger(__name__)

MAX_ATTEMPTS = 6
POPULATION_REFRESH = timedelta(minutes=10)  # how long channel-wide engagement figures are reused
RESERVED_NAMES = ("customer", "event", "journey", "now", "waited", "data", "history", "segments", "promo")
REPLANS = 3  # a send whose decision changed while it rendered is planned again this many times
# Messages render here, never on the store's thread or the event loop. Two threads: rendering
# is CPU-bound under the GIL, so more would not be faster, and a thread per message would not scale.
RENDERING = ThreadPoolExecutor(max_workers=2, thread_name_prefix="render")


@dataclasses.dataclass
class SendPlan:
    """What the store's thread decided for one message, for a render thread to render."""

    record: dict[str, Any]
    customer: Customer
    template: MessageTemplate
    decision: Decision
    context: dict[str, Any]
    locales: list[str | None]
    segments: dict[str, Expression]
    now: datetime


def _fraction(*parts: str) -> float:
    """A stable number in [0, 1) from the given strings: the same customer always lands the same."""
    digest = hashlib.sha256(":".join(parts).encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def _stable_id(prefix: str, *parts: Any) -> str:
    return prefix + hashlib.sha256(":".join(map(str, parts)).encode()).hexdigest()[:20]


class Engine:
    """Runs the project's scenarios against the store, on whichever clock it is given."""

    def __init__(self, store: Any, clock: Any, plugins: Plugins, project: Project, *, dry_run: bool = False):
        self.store = store
        self.clock = clock
        self.plugins = plugins
        self.dry_run = dry_run  # simulate: actions are recorded, not run
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

    # contexts for expressions and templates
    def context(
        self, customer: Customer, journey: Journey | None, now: datetime, event: dict | None = None
    ) -> dict:
        """The names an expression or template sees: plain data only, never an object."""
        journey_context = journey.context if journey else {}
        event = event if event is not None else journey_context.get("event") or {}
        data = event.get("data") or {}
        names: dict[str, Any] = {key: value for key, value in data.items() if key not in RESERVED_NAMES}
        names.update(
            data=data,
            event=event,
            customer=dataclasses.asdict(customer),
            journey=self._journey_view(journey),
            now=now,
            waited=journey_context.get("waited") or {},
        )
        return names

    def scope(self, customer_id: str, now: datetime, seconds: float = EXPRESSION_SECONDS) -> Scope:
        """An evaluation on the store's thread: the customer's history is read from the store directly."""
        history = History(functools.partial(self.store.events_of_types, customer_id), now)
        return Scope(Budget(seconds), history, self.project.segments)

    @staticmethod
    def _journey_view(journey: Journey | None) -> dict[str, Any]:
        if journey is None:
            return {}
        variants = journey.context.get("variants") or {}
        return {
            "id": journey.id,
            "scenario": journey.scenario,
            "entered_at": journey.entered_at,
            "holdout": journey.holdout,
            "variants": variants,
            "variant": list(variants.values())[-1] if variants else None,
        }

    # events (store thread)
    def handle_pending_events(self, limit: int = 200) -> int:
        """Act on stored events not yet handled; each in its own transaction. Returns how many."""
        events = self.store.unhandled_events(limit)
        for event in events:
            try:
                with self.store.transaction():
                    self.on_event(event, self.clock.now())
                    self.store.mark_handled(event.id)
            except Exception:
                # A bug must not wedge the queue behind one event: skip it, loudly.
                log.exception("acting on event %s (%s) failed; it is skipped", event.id, event.type)
                with self.store.transaction():
                    self.store.mark_handled(event.id)
        return len(events)

    def on_event(self, event: Event, now: datetime) -> None:
        """Goals, exits, awaited events, restarts and new entries caused by one event."""
        customer = self.store.customer(event.customer_id)
        if customer is None:
            return
        event_view = {"id": event.id, "type": event.type, "at": to_iso(event.at), "data": event.data}
        if event.type == "message.failed" and not event.data.get("at_send"):
            # A receipt after the send (Twilio's undelivered...): a failed send fell back already.
            reason = str(event.data.get("reason", "failed"))
            message = event.data.get("message") or {}
            if ("undelivered" if reason == "undelivered" else "failed") in self.plan.fallback_when:
                self._fall_back(str(message.get("id")), f"{message.get('channel')} reported {reason}", now)
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
                self.store.delete_jobs_of(journey.id, "advance")
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
            self.store.save_journey(journey, now)
            group = "holdout" if journey.holdout else "treated"
            self._journal(now, "goal", journey, None, f"{event.type} ({group})", value=value)

    # entering, restarting, ending
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
        holdout = scenario.holdout > 0 and _fraction(scenario.id, customer.id, "holdout") < scenario.holdout
        journey = Journey(
            id=_stable_id("j-", scenario.id, customer.id, entry_key),
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
        if not self.store.insert_journey(journey, now):
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
        self.store.delete_jobs_of(journey.id)
        journey.version += 1
        journey.context = {**journey.context, "event": event, "waited": None}
        journey.waiting_for = None
        journey.cursor = scenario.first
        self._journal(now, "enter", journey, None, f"restarted by {event.get('type')}: waiting again")
        self._advance(journey, scenario, customer, now, completing=False)

    def _end(self, journey: Journey, status: str, reason: str, now: datetime) -> None:
        # An exit cancels everything still pending; a journey that simply reached its end
        # keeps the sends and actions its last steps queued.
        self.store.delete_jobs_of(journey.id, None if status == "exited" else "advance")
        journey.status = status
        journey.cursor = None
        journey.waiting_for = None
        journey.ended_at = now
        journey.version += 1
        self.store.save_journey(journey, now)
        self._journal(now, "exit", journey, None, reason)

    # walking the steps (store thread, inside the caller's transaction)
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
                self.store.save_journey(journey, now)
                return
            if step.kind == "wait_for":
                journey.waiting_for = step.until_event
                self._schedule_resume(journey, scenario, now + (step.duration or timedelta(0)))
                self.store.save_journey(journey, now)
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
        self.store.add_job(
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
        variant = self._journey_view(journey)["variant"]
        if journey.holdout:
            self._journal(
                now, "drop", journey, step, "control group (holdout): not sent", template=step.template
            )
            return
        message_id = _stable_id("m-", journey.id, journey.version, step.path)
        expires = now + step.expires if step.expires else None
        self.store.insert_message(
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
        self.store.add_job(
            "send",
            now.timestamp(),
            self.plan.priority(scenario.category),
            {"message": message_id},
            journey_id=journey.id,
            key=f"send:{message_id}",
        )

    def _queue_action(
        self, step: Step, journey: Journey, scenario: Scenario, customer: Customer, now: datetime
    ) -> None:
        if journey.holdout:
            self._journal(now, "drop", journey, step, f"control group (holdout): {step.action} not run")
            return
        arguments = self._render_or_report(step, step.arguments, journey, customer, now)
        if arguments is None:
            return
        self.store.add_job(
            "action",
            now.timestamp(),
            self.plan.priority(scenario.category),
            {"action": step.action, "arguments": arguments, "step": step.path},
            journey_id=journey.id,
            key=_stable_id("action:", journey.id, journey.version, step.path),
        )

    def _journal(
        self, now: datetime, kind: str, journey: Journey, step: Step | str | None, reason: str, **fields: Any
    ) -> None:
        variants = journey.context.get("variants") or {}
        self.store.add_journal(
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

    def _engagement(self, customer_id: str, now: datetime) -> dict[str, tuple[float, float, float]]:
        """(the customer's engagement, their message count, everyone's engagement) per channel."""
        if self._population is None or now - self._population[0] > POPULATION_REFRESH:
            self._population = (now, self.store.engagement())
        population = self._population[1]
        own = self.store.engagement(customer_id)
        return {
            name: (*own.get(name, (0.0, 0)), population.get(name, (DEFAULT_RATE, 0))[0])
            for name in self.plan.channels
        }

    # jobs
    async def run_job(self, job: Job) -> None:
        """Do one claimed job and complete it (or give it back for a retry)."""
        if job.kind == "send":
            await self._send(job)
        elif job.kind == "action":
            await self._act(job)
        elif job.kind == "advance":
            await self.store.run(self._resume, job, self.clock.now())
        elif job.kind == "tick":
            await self.store.run(self._tick, job, self.clock.now())
        elif job.kind == "fallback":
            await self.store.run(self._no_receipt, job, self.clock.now())
        else:
            log.error("unknown job kind %r; dropping job %s", job.kind, job.id)
            await self.store.run(self.store.complete_job, job.id)

    def _resume(self, job: Job, now: datetime) -> None:
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
                    self.store.add_job(
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

    async def _send(self, job: Job) -> None:
        loop = asyncio.get_running_loop()
        for _ in range(REPLANS):
            plan = await self.store.run(self._plan_send, job, self.clock.now())
            if plan is None:
                return
            # Only now that the plan says it goes: a deferred or dropped message costs no code.
            await self._issue_promo_code(plan)
            try:
                rendered: Rendered | Exception = await loop.run_in_executor(
                    RENDERING, self._render, plan, loop
                )
            except Exception as exc:  # noqa: BLE001 - a broken template fails this message, not the daemon
                rendered = exc
            prepared = await self.store.run(self._commit_send, job, plan, rendered, self.clock.now())
            if prepared is not None:
                break
        else:
            # The decision kept changing under it (a burst for one customer): try again shortly.
            await self.store.run(self.store.postpone_job, job.id, self.clock.now().timestamp() + 1)
            return
        if not prepared:
            return
        message, reason = prepared
        delivery = await send_message(self.plugins, self.project.registry, message)
        await self.store.run(self._record_delivery, job, message, reason, delivery, self.clock.now())
        # The feedback events just stored (message.sent, message.failed) may matter to journeys.
        await self.store.run(self.handle_pending_events)

    async def _issue_promo_code(self, plan: SendPlan) -> None:
        """Give a planned message the personal code of its step's promo provider, once per message.

        The code is stored with the message before it is rendered, so a new plan (the decision
        changed while it rendered), a retry or a restart after a crash reuses it, and a fallback
        inherits it (`_fall_back` copies the promo). A message deferred after the code was issued
        (by a new plan) keeps it for when it goes.
        """
        promo = plan.record["promo"] or {}
        name = promo.get("provider")
        provider = self.project.registry.promo_providers.get(name) if name else None
        if provider is None or promo.get("code"):
            return  # no provider step, a code already kept, or one `check` reports as unknown
        code = f"<code from {name}>" if self.dry_run else await provider.issue(plan.customer, promo)
        await self.store.run(
            self.store.update_message, plan.record["id"], promo=json.dumps({**promo, "code": code})
        )
        plan.context["promo"]["code"] = code

    def _decide(
        self, record: dict[str, Any], customer: Customer, template: MessageTemplate, now: datetime
    ) -> Decision:
        """The contact plan's decision for a message now, among the channels its template has."""
        versions = template.channels()
        candidates = [name for name in (record["candidates"] or self.plan.order) if name in versions]
        if record["status"] == "sending" and record["channel"]:
            # A send cut off by a crash goes again to the same provider, whose idempotency
            # key (and the email Message-ID) then makes it recognisably the same message.
            candidates = [record["channel"]]
        decision = self.plan.decide(
            customer,
            candidates,
            record["category"],
            now,
            self.store.sent_messages(customer.id, now - self.plan.window),
            self._engagement(customer.id, now),
            tuple(record["tried"] or ()),
        )
        if decision.channel is not None and record["fallback_of"]:
            decision.reason = f"fallback after {', '.join(record['tried'])}: {decision.reason}"
        return decision

    def _plan_send(self, job: Job, now: datetime) -> SendPlan | None:
        """Decide whether, when and where a message goes; None if it waits, is dropped or is done."""
        with self.store.transaction():
            record = self.store.message(job.payload["message"])
            if record is None or record["status"] not in ("pending", "sending"):
                self.store.complete_job(job.id)
                return None
            if record["status"] == "sending" and record["category"] != "transactional":
                # An earlier attempt of this job handed it to the channel and then failed before
                # recording the answer (a crash is settled at start; this is anything else).
                self._settle_unknown(record, "recording the previous attempt failed", now)
                self.store.complete_job(job.id)
                return None
            journey = self.store.journey(record["journey_id"]) if record["journey_id"] else None
            customer = self.store.customer(record["customer_id"])
            if customer is None or journey is None:
                self.store.complete_job(job.id)
                return None
            step = record["step"]
            step_fields = {"template": record["template"], "message_id": record["id"]}
            if record["expires_at"] and parse_time(record["expires_at"]) < now:
                reason = f"expired at {record['expires_at']} before it could go"
                self.store.update_message(record["id"], status="dropped", detail=reason)
                self._journal(now, "drop", journey, step, reason, **step_fields)
                self.store.complete_job(job.id)
                return None
            template = self.project.templates.get(record["template"])
            if template is None:  # removed by a reload after the message was queued
                reason = f"template '{record['template']}' does not exist"
                self.store.update_message(record["id"], status="dropped", detail=reason)
                self._journal(now, "drop", journey, step, reason, **step_fields)
                self.store.complete_job(job.id)
                return None
            # Only channels the template has a version for can carry the message.
            decision = self._decide(record, customer, template, now)
            if decision.channel is None:
                expires = parse_time(record["expires_at"]) if record["expires_at"] else None
                if decision.defer_until is not None and (expires is None or decision.defer_until <= expires):
                    self.store.update_message(record["id"], status="pending", detail=decision.explain())
                    self._journal(now, "defer", journey, step, decision.explain(), **step_fields)
                    self.store.postpone_job(job.id, decision.defer_until.timestamp())
                    return None
                reason = decision.explain()
                if decision.defer_until is not None:
                    reason += f"; dropped: that is past its expiry at {record['expires_at']}"
                self.store.update_message(record["id"], status="dropped", detail=reason)
                self._journal(now, "drop", journey, step, reason, **step_fields)
                self.store.complete_job(job.id)
                return None
            journey.context = record["context"] or journey.context
            context = self.context(customer, journey, now)
            zone = ZoneInfo(customer.timezone) if customer.timezone else self.zone
            context["promo"] = _promo_view(record["promo"], now.astimezone(zone))
            locales = [customer.locale, self.project.config.default_locale, "en"]
            segments = self.project.segments
            return SendPlan(record, customer, template, decision, context, locales, segments, now)

    def _render(self, plan: SendPlan, loop: asyncio.AbstractEventLoop) -> Rendered:
        """Render a planned message, on a render thread, within the message's budget."""

        def read_events(types: list[str], since: datetime | None) -> list[dict[str, Any]]:
            # The store is read on its own thread only; this one waits for the answer.
            query = self.store.run(self.store.events_of_types, plan.customer.id, types, since)
            return asyncio.run_coroutine_threadsafe(query, loop).result(MESSAGE_SECONDS)

        within = Scope(Budget(MESSAGE_SECONDS), History(read_events, plan.now), plan.segments)
        with evaluating(within):
            assert plan.decision.channel is not None
            return plan.template.render(plan.decision.channel, plan.locales, plan.context)

    def _commit_send(
        self, job: Job, plan: SendPlan, rendered: Rendered | Exception, now: datetime
    ) -> tuple[Message, str] | tuple[()] | None:
        """Mark a rendered message as sending; () if it is done with, None if it must be planned again."""
        with self.store.transaction():
            record = self.store.message(plan.record["id"])
            customer = self.store.customer(plan.record["customer_id"])
            journey = self.store.journey(plan.record["journey_id"])
            settled = record is None or record["status"] not in ("pending", "sending")
            if settled or customer is None or journey is None:
                self.store.complete_job(job.id)  # settled while it rendered
                return ()
            decision = self._decide(record, customer, plan.template, now)
            if decision.channel != plan.decision.channel:
                # Another message took the slot, or a channel closed, while it rendered.
                log.debug("message %s: the decision changed while it rendered; planning again", record["id"])
                return None
            assert decision.channel is not None
            step = record["step"]
            fields = {"template": record["template"], "message_id": record["id"], "channel": decision.channel}
            if isinstance(rendered, Exception):
                reason = f"{decision.channel}: cannot render: {rendered}"
                if isinstance(rendered, RenderLimitExceeded | SecurityError):
                    # Worded by the sandbox, without customer data: the operator should hear of it.
                    log.warning("message %s: cannot render: %s", record["id"], rendered)
                self.store.update_message(record["id"], status="dropped", detail=reason)
                self._journal(now, "drop", journey, step, reason, **fields)
                self.store.complete_job(job.id)
                return ()
            channel = self.project.registry.channels[decision.channel]
            message = Message(
                id=record["id"],
                customer_id=customer.id,
                channel=decision.channel,
                to=channel.address(customer) or "",
                template=record["template"],
                body=rendered.body,
                subject=rendered.subject,
                html=rendered.html,
                locale=rendered.locale,
                category=record["category"],
                scenario=record["scenario"],
                step=record["step"],
                extra=rendered.extra,
            )
            links = self.tracking.apply(message) if self.tracking else []
            self.store.update_message(
                record["id"],
                status="sending",
                channel=decision.channel,
                links=json.dumps(links),
                sent_at=to_iso(now),
            )
            return message, decision.explain()

    def _record_delivery(
        self, job: Job, message: Message, reason: str, delivery: Delivery, now: datetime
    ) -> None:
        with self.store.transaction():
            record = self.store.message(message.id)
            journey = self.store.journey(record["journey_id"]) if record and record["journey_id"] else None
            step = message.step
            fields = {"template": message.template, "channel": message.channel, "message_id": message.id}
            sender = self.project.registry.channels.get(message.channel)
            for address in delivery.gone if sender is not None else ():
                customer = self.store.customer(message.customer_id)
                if customer is not None:  # the channel says how its address is forgotten
                    self.store.set_profile(message.customer_id, sender.forget(customer, address))
            if delivery.status is DeliveryStatus.SENT:
                # A receipt may already have marked it delivered: keep that, add what we know.
                status = "delivered" if record and record["status"] == "delivered" else "sent"
                self.store.update_message(
                    message.id, status=status, detail=delivery.detail, provider_id=delivery.provider_id
                )
                self.store.record_feedback(message.id, "message.sent", {}, None, now)
                if journey:
                    self._journal(now, "send", journey, step, reason, **fields)
                self.store.complete_job(job.id)
                channel = self.project.registry.channels.get(message.channel)
                if self.plan.fallback_after and channel is not None and channel.receipts:
                    self.store.add_job(
                        "fallback",
                        (now + self.plan.fallback_after).timestamp(),
                        job.priority,
                        {"message": message.id},
                        journey_id=record["journey_id"] if record else None,
                        key=f"fallback:{message.id}",
                    )
            elif delivery.status is DeliveryStatus.RETRY and job.attempts + 1 < MAX_ATTEMPTS:
                wait = delivery.retry_after or 30 * 2**job.attempts
                self.store.update_message(message.id, status="pending", detail=delivery.detail, sent_at=None)
                if journey:
                    self._journal(
                        now,
                        "defer",
                        journey,
                        step,
                        f"{message.channel}: retry in {wait:.0f}s: {delivery.detail}",
                        **fields,
                    )
                self.store.retry_job(job.id, now.timestamp() + wait)
            else:
                self.store.record_feedback(
                    message.id,
                    "message.failed",
                    {"reason": delivery.status.value, "detail": delivery.detail, "at_send": True},
                    None,
                    now,
                )
                if "failed" in self.plan.fallback_when:
                    self._fall_back(message.id, f"{message.channel} {delivery.status.value}", now)
                if journey:
                    self._journal(
                        now,
                        "drop",
                        journey,
                        step,
                        f"{message.channel}: {delivery.status.value}: {delivery.detail}",
                        **fields,
                    )
                self.store.complete_job(job.id)

    def settle_interrupted_sends(self, now: datetime) -> int:
        """Settle the messages a process that died left `sending`; returns how many became `unknown`.

        The provider may or may not have taken such a message before the crash. Marketing
        (trigger, promo) goes at most once: it is marked `unknown` and not sent again (its send
        job then finds nothing to do). A transactional message is sent again by its job,
        through the same channel and with the same idempotency key (see `_decide`).
        """
        settled = 0
        with self.store.transaction():
            for record in self.store.messages_sending():
                if record["category"] != "transactional":
                    self._settle_unknown(record, "the daemon stopped during the send", now)
                    settled += 1
        return settled

    def _settle_unknown(self, record: dict[str, Any], why: str, now: datetime) -> None:
        """Mark a marketing message whose send was cut off `unknown`: it is not sent again."""
        reason = (
            f"{record['channel']}: {why}, so it may or may not have gone; "
            "marketing is sent at most once: not sent again"
        )
        self.store.update_message(record["id"], status="unknown", detail=reason)
        journey = self.store.journey(record["journey_id"]) if record["journey_id"] else None
        if journey:
            fields = {"template": record["template"], "channel": record["channel"]}
            self._journal(now, "unknown", journey, record["step"], reason, message_id=record["id"], **fields)

    def _fall_back(self, message_id: str, why: str, now: datetime) -> None:
        """Queue the same step again on the next best channel, unless the step already arrived."""
        record = self.store.message(message_id)
        if record is None or not record["journey_id"] or not record["channel"]:
            return
        first = record["fallback_of"] or record["id"]
        if self.store.chain_delivered(first):
            return  # never the same step twice through two channels that both delivered
        tried = [*(record["tried"] or []), record["channel"]]
        fallback_id = _stable_id("m-", first, "fallback", len(tried))
        fields = {
            key: record[key]
            for key in (
                "journey_id",
                "customer_id",
                "scenario",
                "step",
                "template",
                "category",
                "candidates",
                "promo",
                "expires_at",
                "variant",
                "context",
            )
        }
        self.store.insert_message(
            {
                **fields,
                "id": fallback_id,
                "status": "pending",
                "fallback_of": first,
                "tried": tried,
                "created_at": to_iso(now),
                "detail": f"fallback: {why}",
            }
        )
        self.store.add_job(
            "send",
            now.timestamp(),
            self.plan.priority(record["category"]),
            {"message": fallback_id},
            journey_id=record["journey_id"],
            key=f"send:{fallback_id}",
        )

    def _no_receipt(self, job: Job, now: datetime) -> None:
        with self.store.transaction():
            self.store.complete_job(job.id)
            record = self.store.message(job.payload["message"])
            if record is not None and record["status"] == "sent":
                hours = self.plan.fallback_after.total_seconds() / 3600 if self.plan.fallback_after else 0
                self._fall_back(
                    record["id"], f"no delivery receipt from {record['channel']} in {hours:g}h", now
                )

    async def _act(self, job: Job) -> None:
        name = job.payload["action"]
        action = self.project.registry.actions.get(name)
        outcome, retry = "", False
        if self.dry_run:
            outcome = f"{name}: simulated, not run"
        elif action is None:
            outcome = f"{name}: no such action is registered"
        else:
            try:
                result = await action.run(**job.payload["arguments"])
                outcome = f"{name}: done" + (f" ({result})" if result else "")
            except Exception as exc:  # noqa: BLE001 - an action's failure is retried, then recorded
                log.warning("action %s failed: %s", name, exc)
                outcome, retry = f"{name}: failed: {exc}", job.attempts + 1 < MAX_ATTEMPTS
        await self.store.run(self._record_action, job, outcome, retry, self.clock.now())

    def _record_action(self, job: Job, outcome: str, retry: bool, now: datetime) -> None:
        with self.store.transaction():
            journey = self.store.journey(job.journey_id) if job.journey_id else None
            if retry:
                self.store.retry_job(job.id, now.timestamp() + 30 * 2**job.attempts)
                kind = "defer"
            else:
                self.store.complete_job(job.id)
                kind = "action"
            if journey:
                self._journal(now, kind, journey, job.payload.get("step"), outcome)

    # schedules and dates
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


def _promo_record(promo: dict[str, Any] | None) -> dict[str, Any] | None:
    """A step's promo as stored with the message (durations in seconds)."""
    if not promo:
        return None
    return {
        key: value.total_seconds() if isinstance(value, timedelta) else value for key, value in promo.items()
    }


def _promo_view(promo: dict[str, Any] | None, now: datetime) -> dict[str, Any]:
    """The promo as templates see it: percent, amount, code, expires_at, expires_hours."""
    view = dict(promo or {})
    seconds = view.pop("expires", None)
    if isinstance(seconds, int | float):
        view["expires_at"] = now + timedelta(seconds=seconds)
        view["expires_hours"] = round(seconds / 3600)
    return view
