"""Dispatch: queued messages planned, rendered, tracked, sent and recorded, a batch at a time;
actions run.

A batch of send jobs (a single send is a batch of one) is planned on the store's thread in
one transaction: what the contact plan counts (the messages that went to each customer
within its window, their engagement) is read for the whole batch with one query each, and
the decisions are made in the batch's order against it, so that two messages of one customer
see each other. The batch is rendered in one call on a render thread, within each message's
time and size budget, so that a slow template never holds up the store; paced (the tokens of
its providers' rate limits taken, and the messages whose turn is more than a moment away put
back: `pacing`); marked `sending` in one transaction; handed to the channels concurrently (a
slow provider holds up only its own messages), each once its turn has come; and the answers
are recorded in one transaction. One batch at a time is planned, rendered, paced and marked
`sending`, so a decision is never made against a history that another batch is about to
change. A crash before the mark leaves the messages pending; one after it
leaves them `sending`, which `settle_interrupted_sends` settles at the next start.

Which thread runs what is in each name: `async def` methods run on the event loop; `_render`
on a render thread; every other method on the store's thread (reached through `store.run`).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections import Counter as Tally
from collections.abc import Collection
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from typing import Any

from jinja2.exceptions import SecurityError

from boomerang import promo_codes
from boomerang.clock import parse_time, to_iso
from boomerang.contact_plan import DEFAULT_RATE, Decision
from boomerang.engine_protocols import EngineStore
from boomerang.expressions import MESSAGE_SECONDS, Budget, Expression, RenderLimitExceeded, Scope, evaluating
from boomerang.history import History
from boomerang.journeys import Journeys, stable_id
from boomerang.kinds import ActionFailed, Channel, PromoProvider
from boomerang.metrics import Metrics
from boomerang.model import (
    Customer,
    Delivery,
    DeliveryStatus,
    Event,
    Job,
    JournalEntry,
    Journey,
    Message,
    MessageRecord,
    Sent,
)
from boomerang.outbox import Outbox
from boomerang.pacing import Pace, Turns, take_turns
from boomerang.plugin_manager import Plugins, Registry, notify
from boomerang.recommendations import BUILTIN, fetched, products_of, strategies
from boomerang.retry import RETRY
from boomerang.store import lost_race
from boomerang.templates import MessageTemplate, Rendered, wanted_locales
from boomerang.tracking import page_links

log = logging.getLogger(__name__)

POPULATION_REFRESH = timedelta(minutes=10)  # how long channel-wide engagement figures are reused
# Codes in a row a provider may give that other messages have before the send is retried
# later: one such code is a one-in-a-trillion chance for `local`; more is a provider repeating itself.
ISSUE_ATTEMPTS = 5
SENDS_AT_ONCE = 64  # messages of a batch in the channels' hands at once
RECORD_ATTEMPTS = 5  # tries at recording a batch's answers that lose a race to another daemon
RECOMMENDER_SECONDS = 5.0  # what a plugin's recommender may take for one message
# Messages render here, never on the store's thread or the event loop. Two threads: rendering
# is CPU-bound under the GIL, so more would not be faster, and a thread per message would not scale.
RENDERING = ThreadPoolExecutor(max_workers=2, thread_name_prefix="render")


class PromoCodeTaken(Exception):
    """A promo provider keeps giving codes that other messages have."""


@dataclasses.dataclass
class SendPlan:
    """What the store's thread decided for one message of a batch: it goes now (then a render
    thread renders it with `context`), or it is held back (then that is recorded with the batch)."""

    job: Job
    record: MessageRecord
    journey: Journey
    customer: Customer
    template: MessageTemplate
    decision: Decision
    now: datetime
    context: dict[str, Any] = dataclasses.field(default_factory=dict)
    locales: list[str | None] = dataclasses.field(default_factory=list)
    segments: dict[str, Expression] = dataclasses.field(default_factory=dict)
    # strategy → the customer's products, fetched before the render (`recommendations()`)
    recommended: dict[str, list[dict[str, Any]]] = dataclasses.field(default_factory=dict)
    message: Message | None = None  # what goes to the channel, once rendered (`_pace`)

    @property
    def goes(self) -> bool:
        """Whether the plan sends it now."""
        return self.decision.channel is not None


@dataclasses.dataclass
class Sending:
    """A message marked `sending`, ready for its channel: its job and the plan's reason, and
    the timeline lines of the batch's messages held back after it (`lines_after`), written
    after its own so that the timeline keeps the plans' order."""

    job: Job
    message: Message
    reason: str
    lines_after: list[JournalEntry] = dataclasses.field(default_factory=list)


async def send_message(
    plugins: Plugins, registry: Registry, message: Message, metrics: Metrics | None = None
) -> Delivery:
    """Send through the message's channel; a channel that raises is treated as 'retry later'.
    `metrics` notes how long the channel took."""
    channel = registry.channels.get(message.channel)
    if channel is None:
        delivery = Delivery(DeliveryStatus.FAILED, detail=f"channel '{message.channel}' is not configured")
    else:
        started = time.perf_counter()
        try:
            delivery = await channel.send(message)
        except Exception as exc:
            log.exception("channel %s raised while sending message %s", message.channel, message.id)
            delivery = Delivery(DeliveryStatus.RETRY, detail=f"{type(exc).__name__}: {exc}")
        if metrics is not None:
            metrics.send_took(message.channel, time.perf_counter() - started)
    written = isinstance(channel, Outbox) and delivery.status is DeliveryStatus.SENT
    log.info(
        "message %s to customer %s via %s: %s",
        message.id,
        message.customer_id,
        message.channel,
        "written to the outbox" if written else delivery.status.value,
    )
    await notify(plugins, "message_finished", message=message, delivery=delivery)
    return delivery


class Dispatch(Journeys):
    """Sends, fallbacks and actions: the jobs that talk to the outside."""

    # Render on the event loop's own thread rather than a render thread: for `simulate`, whose
    # store answers on that thread too (`durable=False`) and which has no one else to serve,
    # so that a send does not cost two hops between threads.
    render_here = False

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # One batch at a time is planned, rendered and marked `sending`: a batch planned
        # meanwhile would not see the messages of this one take their customers' slots.
        self._deciding = asyncio.Lock()

    def _acts_on(self, event_type: str) -> bool:
        """A failure receipt may fall back (`on_event`)."""
        return event_type == "message.failed" or super()._acts_on(event_type)

    def on_event(self, event: Event, now: datetime) -> None:
        """A failure receipt after the send falls back to the next channel; then the journeys act."""
        if event.type == "message.failed" and not event.data.get("at_send"):
            # A receipt after the send (Twilio's undelivered...): a failed send fell back already.
            reason = str(event.data.get("reason", "failed"))
            message = event.data.get("message") or {}
            if ("undelivered" if reason == "undelivered" else "failed") in self.plan.fallback_when:
                self._fall_back(str(message.get("id")), f"{message.get('channel')} reported {reason}", now)
        super().on_event(event, now)

    def _message(self, message_id: str) -> MessageRecord | None:
        """A stored message as a record, or None; on the store's thread."""
        row = self.store.message(message_id)
        return MessageRecord.from_row(row) if row is not None else None

    async def _send(self, jobs: list[Job]) -> None:
        """Run a batch of send jobs, on the event loop: plan, render, mark sending, send, record.

        One read plans the batch, one render-thread call renders what goes, one transaction
        marks it `sending` and records what waits or is dropped, the channels take its messages
        concurrently, and one transaction records their answers. A single send is a batch of one.
        """
        loop = asyncio.get_running_loop()
        async with self._deciding:
            plans = await self.store.run(self._plan_sends, jobs, self.clock.now())
            if not plans:
                return
            going = [plan for plan in plans if plan.goes]
            # Only now that the plan says they go: a deferred or dropped message costs no code.
            await self._issue_promo_codes(going)
            await asyncio.gather(*(self._ask_recommenders(plan) for plan in going))
            if self.render_here:
                rendered = self._render(going, None)
            else:
                rendered = await loop.run_in_executor(RENDERING, self._render, going, loop)
            turns = await self._pace(going, rendered)
            now = self.clock.now()
            sendings = await self.store.run(self._commit_sends, plans, rendered, turns.later, now)
            # Before the next batch takes: the tokens of what was put back are its to take.
            await turns.give_back({sending.message.id for sending in sendings})
        if not sendings:
            return
        deliveries = await self._deliver(sendings, turns)
        # The messages went: their answers are recorded even if PostgreSQL rolls the first try
        # back for another daemon's transaction (left `sending`, they would become `unknown`).
        for attempt in range(RECORD_ATTEMPTS):
            try:
                await self.store.run(self._record_delivery, sendings, deliveries, self.clock.now())
                return
            except Exception as exc:
                if not lost_race(exc) or attempt + 1 == RECORD_ATTEMPTS:
                    raise

    async def _issue_promo_codes(self, plans: list[SendPlan]) -> None:
        """Give the planned messages whose step names a promo provider their personal codes,
        once per message.

        The providers are asked concurrently; the codes are kept (`promo_codes`, linked to
        their messages) and stored with the messages in one transaction before they are
        rendered, so a retry or a restart after a crash reuses them, and a fallback inherits
        its first message's (`_fall_back` copies the promo). A code another message has is
        refused by the database, and its provider asked for another. `simulate` (dry run)
        shows each provider's sample and keeps nothing.
        """
        wanting = []
        for plan in plans:
            promo = plan.record.promo or {}
            name = promo.get("provider")
            provider = self.project.registry.promo_providers.get(name) if name else None
            # no provider step, a code already kept, or a provider `check` reports as unknown
            if provider is not None and not promo.get("code"):
                wanting.append((plan, provider))
        if not wanting:
            return
        if self.dry_run:
            codes = {
                plan.record.id: provider.sample(plan.record.promo or {}, plan.record.id)
                or f"<code from {provider.name}>"
                for plan, provider in wanting
            }
            await self.store.run(self._store_codes, [plan for plan, _ in wanting], codes, {})
            return
        for _ in range(ISSUE_ATTEMPTS):
            issued = await asyncio.gather(
                *(provider.issue(plan.customer, plan.record.promo or {}) for plan, provider in wanting)
            )
            codes = await self.store.run(self._keep_codes, wanting, issued)
            wanting = [(plan, provider) for plan, provider in wanting if plan.record.id not in codes]
            if not wanting:
                return
        names = ", ".join(sorted({provider.name for _, provider in wanting}))
        raise PromoCodeTaken(
            f"promo provider {names} gave {ISSUE_ATTEMPTS} codes in a row that other messages have"
        )

    def _keep_codes(
        self, wanting: list[tuple[SendPlan, PromoProvider]], codes: list[str]
    ) -> dict[str, str]:
        """Keep the codes issued for planned messages and store each with its message, in one
        transaction; the code each message has now, by message id (the one it had already, if
        a crash lost only the message's copy). A message left out was given a code another
        message has."""
        rows = [
            promo_codes.issued(
                code,
                provider.name,
                {
                    "id": plan.record.id,
                    "customer_id": plan.record.customer_id,
                    "scenario": plan.record.scenario,
                    "step": plan.record.step,
                },
                plan.record.promo or {},
                plan.now,
            )
            for (plan, provider), code in zip(wanting, codes, strict=True)
        ]
        with self.store.transaction():
            kept = self.store.keep_promo_codes(rows)
            expiry = {row["message_id"]: row["expires_at"] for row in rows if row["expires_at"]}
            self._store_codes([plan for plan, _ in wanting if plan.record.id in kept], kept, expiry)
        return kept

    def _store_codes(self, plans: list[SendPlan], codes: dict[str, str], expiry: dict[str, str]) -> None:
        """Store each planned message's code (and its expiry) with its promo, one statement for
        all, and show it in the message's context."""
        changes = []
        for plan in plans:
            code = codes[plan.record.id]
            until = {"expires_at": expiry[plan.record.id]} if plan.record.id in expiry else {}
            changes.append((plan.record.id, {"promo": {**(plan.record.promo or {}), "code": code, **until}}))
            plan.context["promo"]["code"] = code
        self.store.update_messages(changes)

    async def _ask_recommenders(self, plan: SendPlan) -> None:
        """Ask the plugins' recommenders for the strategies a planned message's template names,
        on the event loop, before it renders; one that fails or takes too long gives nothing."""
        for strategy, limit in plan.template.recommendation_limits().items():
            recommender = self.project.registry.recommenders.get(strategy)
            if recommender is None:
                continue  # a built-in strategy, fetched with the batch, or one `check` reports
            try:
                answer = await asyncio.wait_for(
                    recommender.recommend(dataclasses.replace(plan.customer), limit), RECOMMENDER_SECONDS
                )
            except Exception as exc:  # noqa: BLE001 - a plugin's failure costs its list, not the message
                log.warning("recommender %s failed for message %s: %r", strategy, plan.record.id, exc)
                answer = []
            plan.recommended[strategy] = products_of(answer, limit)

    def _fetch_recommendations(self, plans: list[SendPlan], now: datetime) -> None:
        """The built-in strategies the templates of a batch's messages that go name, fetched
        for all their customers with one query per strategy, as long as the largest limit asked."""
        limits: dict[str, int] = {}
        asking: dict[str, list[SendPlan]] = {}
        for plan in plans:
            for strategy, limit in plan.template.recommendation_limits().items() if plan.goes else ():
                if strategy in BUILTIN:
                    limits[strategy] = max(limits.get(strategy, 0), limit)
                    asking.setdefault(strategy, []).append(plan)
        for strategy, group in asking.items():
            customers = {plan.customer.id for plan in group}
            rules = self.project.config.cross_sell
            lists = self.store.recommend(strategy, customers, limits[strategy], now, rules)
            for plan in group:
                plan.recommended[strategy] = lists[plan.customer.id]

    def _decide(
        self,
        record: MessageRecord,
        customer: Customer,
        template: MessageTemplate,
        now: datetime,
        sent: list[Sent],
        engagement: dict[str, tuple[float, float, float]],
    ) -> Decision:
        """The contact plan's decision for a message now, among the channels its template has,
        given what went to the customer (`sent`) and their engagement."""
        versions = template.channels()
        candidates = [name for name in (record.candidates or self.plan.order) if name in versions]
        if record.status == "sending" and record.channel:
            # A send cut off by a crash goes again to the same provider, whose idempotency
            # key (and the email Message-ID) then makes it recognisably the same message.
            candidates = [record.channel]
        decision = self.plan.decide(
            customer, candidates, record.category, now, sent, engagement, tuple(record.tried or ())
        )
        if decision.channel is not None and record.fallback_of:
            decision.reason = f"fallback after {', '.join(record.tried or ())}: {decision.reason}"
        return decision

    def _plan_sends(self, jobs: list[Job], now: datetime) -> list[SendPlan]:
        """Decide whether, when and where each message of a batch goes: a plan for each one
        still queued, whether it goes now or is held back (a message done with, settled,
        expired... is recorded so here, and has none).

        What the caps and the gap count is read for every customer of the batch at once and
        the decisions are made in the batch's order against it: a message that goes counts,
        in memory, for the next message of the same customer in the batch. What the plan
        decided is recorded by `_commit_sends`, in one transaction with the messages that go,
        so that a message is never seen held back by one that is not yet `sending`.
        """
        with self.store.transaction():
            rows = self.store.messages([job.payload["message"] for job in jobs])
            # A message carries its journey's context as it was queued: only a line of the
            # timeline needs the journey's own, and no more of it than its variants.
            journey_ids = {row["journey_id"] for row in rows.values()} - {None}
            journeys = self.store.journeys(journey_ids, variants_only=True)
            customers = self.store.customers({row["customer_id"] for row in rows.values()})
            ready = []
            for job in jobs:
                row = rows.get(job.payload["message"])
                record = MessageRecord.from_row(row) if row else None
                found = self._ready_to_send(job, record, journeys, customers, now)
                if found is None:
                    self.store.complete_job(job.id)
                else:
                    ready.append((job, *found))
            customer_ids = {customer.id for _, _, _, customer, _ in ready}
            sent = self.store.sent_messages(customer_ids, now - self.plan.window)
            engagement = self._engagement(customer_ids, now)
            plans = []
            for job, record, journey, customer, template in ready:
                history = sent[customer.id]
                decision = self._decide(record, customer, template, now, history, engagement[customer.id])
                plan = SendPlan(job, record, journey, customer, template, decision, now)
                plans.append(plan)
                if decision.channel is None:
                    continue
                history.append(Sent(now, decision.channel, record.category))
                journey.context = record.context or self._journey_context(journey)
                plan.context = self.context(customer, journey, now)
                zone = self.plan.zone_of(customer)
                plan.context["promo"] = promo_view(record.promo, now.astimezone(zone))
                links = page_links(
                    self.tracking, record.id, record.category, self.project.config.public_url, self.dry_run
                )
                plan.context.update(links)
                plan.locales = wanted_locales(customer.locale, self.project.config.default_locale)
                plan.segments = self.project.segments
            self._fetch_recommendations(plans, now)
        self.metrics.decisions(Tally((plan.decision.outcome, plan.decision.rule) for plan in plans))
        return plans

    def _journey_context(self, journey: Journey) -> dict[str, Any]:
        """A journey's whole context, read for a message queued without one (by an older version)."""
        stored = self.store.journey(journey.id)
        return stored.context if stored else journey.context

    def _ready_to_send(
        self,
        job: Job,
        record: MessageRecord | None,
        journeys: dict[str, Journey],
        customers: dict[str, Customer],
        now: datetime,
    ) -> tuple[MessageRecord, Journey, Customer, MessageTemplate] | None:
        """A queued message with its journey, customer and template (from those the batch read),
        or None if it is done with (settled, its journey or customer gone, expired, its template
        removed: recorded so)."""
        if record is None or record.status not in ("pending", "sending"):
            return None
        if record.status == "sending" and record.category != "transactional":
            # An earlier attempt of this job handed it to the channel and then failed before
            # recording the answer: a crash on PostgreSQL (on SQLite a start settles those),
            # or anything else.
            why = "the previous attempt stopped before its answer was recorded"
            self._settle_unknown(record, why, now)
            return None
        journey = journeys.get(record.journey_id) if record.journey_id else None
        customer = customers.get(record.customer_id)
        if customer is None or journey is None:
            return None
        # A copy each: planning sets the message's context on its journey, and two messages
        # of a batch may share one.
        journey = dataclasses.replace(journey)
        step_fields = {"template": record.template, "message_id": record.id}
        if record.expires_at and parse_time(record.expires_at) < now:
            reason = f"expired at {record.expires_at} before it could go"
            self.store.update_message(record.id, status="dropped", detail=reason)
            self._journal(now, "drop", journey, record.step, reason, **step_fields)
            self.metrics.message(None, "dropped")
            return None
        template = self.project.templates.get(record.template)
        if template is None:  # removed by a reload after the message was queued
            reason = f"template '{record.template}' does not exist"
            self.store.update_message(record.id, status="dropped", detail=reason)
            self._journal(now, "drop", journey, record.step, reason, **step_fields)
            self.metrics.message(None, "dropped")
            return None
        return record, journey, customer, template

    def _hold_back(self, plan: SendPlan, now: datetime) -> str:
        """A message the plan does not send now: it waits for `defer_until`, or is dropped;
        returns which (`deferred`, `dropped`)."""
        job, record, journey, decision = plan.job, plan.record, plan.journey, plan.decision
        step_fields = {"template": record.template, "message_id": record.id}
        expires = parse_time(record.expires_at) if record.expires_at else None
        if decision.defer_until is not None and (expires is None or decision.defer_until <= expires):
            self.store.update_message(record.id, status="pending", detail=decision.explain())
            self._journal(now, "defer", journey, record.step, decision.explain(), **step_fields)
            self.store.postpone_job(job.id, decision.defer_until.timestamp())
            return "deferred"
        reason = decision.explain()
        if decision.defer_until is not None:
            reason += f"; dropped: that is past its expiry at {record.expires_at}"
        self.store.update_message(record.id, status="dropped", detail=reason)
        self._journal(now, "drop", journey, record.step, reason, **step_fields)
        self.store.complete_job(job.id)
        return "dropped"

    def _render(
        self, plans: list[SendPlan], loop: asyncio.AbstractEventLoop | None
    ) -> list[Rendered | Exception]:
        """Render a batch's messages, on a render thread, each within its own budget; a message
        that cannot render gets its exception, and the others render all the same. Without a
        `loop` (`render_here`), on the thread the store answers on, which it then reads directly."""
        results: list[Rendered | Exception] = []
        known = strategies(self.project.registry.recommenders)
        for plan in plans:

            def read_events(
                types: list[str], since: datetime | None, plan: SendPlan = plan
            ) -> list[dict[str, Any]]:
                if loop is None:
                    return self.store.events_of_types(plan.customer.id, types, since)
                # The store is read on its own thread only; this one waits for the answer.
                query = self.store.run(self.store.events_of_types, plan.customer.id, types, since)
                return asyncio.run_coroutine_threadsafe(query, loop).result(MESSAGE_SECONDS)

            # simulate renders strictly: a name that is not defined is an error row, not nothing
            history = History(read_events, plan.now)
            budget = Budget(MESSAGE_SECONDS, yields=loop is not None)  # no thread to yield to here
            within = Scope(budget, history, plan.segments, strict=self.dry_run)
            within.zone = self.plan.zone_of(plan.customer)
            within.recommend = fetched(plan.recommended, known)
            try:
                with evaluating(within):
                    assert plan.decision.channel is not None
                    results.append(plan.template.render(plan.decision.channel, plan.locales, plan.context))
            except Exception as exc:  # noqa: BLE001 - a broken template fails its message, not the batch
                results.append(exc)
        return results

    async def _pace(self, going: list[SendPlan], rendered: list[Rendered | Exception]) -> Turns:
        """Build the messages that go to their channels (`SendPlan.message`) and take their
        turns under the providers' rate limits (`pacing`); a simulation is not paced (its
        clock is not the buckets')."""
        channels = self.project.registry.channels
        messages = []
        for plan, result in zip(going, rendered, strict=True):
            if isinstance(result, Rendered):
                plan.message = self._message_of(plan, result)
                messages.append(plan.message)
        paces = [None if self.dry_run else _pace_of(channels[m.channel], m) for m in messages]
        return await take_turns(self.project.rate_limits, messages, paces)

    def _message_of(self, plan: SendPlan, result: Rendered) -> Message:
        """The message a plan that goes hands to its channel, as rendered (without tracking yet)."""
        record, channel_name = plan.record, plan.decision.channel
        assert channel_name is not None
        return Message(
            id=record.id,
            customer_id=plan.customer.id,
            channel=channel_name,
            to=self.project.registry.channels[channel_name].address(plan.customer) or "",
            template=record.template,
            body=result.body,
            subject=result.subject,
            html=result.html,
            locale=result.locale,
            category=record.category,
            scenario=record.scenario,
            step=record.step,
            extra=result.extra,
            created_at=record.created_at,
        )

    def _commit_sends(
        self,
        plans: list[SendPlan],
        rendered: list[Rendered | Exception],
        later: dict[str, float],
        now: datetime,
    ) -> list[Sending]:
        """Mark a batch's rendered messages `sending`, in one transaction, before any is handed
        to its channel; record those held back (by the plan, or put back by `later`: message id →
        seconds until its turn under its provider's rate limit), and drop those that could not
        render. Returns what goes to the channels (`rendered` is in the order of the plans that go)."""
        sendings = []
        marked: list[tuple[str, dict[str, Any]]] = []  # written together at the end
        stamp = to_iso(now)
        # by plan: `_decide_again` may yet hold back a plan that was rendered to go
        going = [plan for plan in plans if plan.goes]
        results = {id(plan): result for plan, result in zip(going, rendered, strict=True)}
        settled: Tally[tuple[str | None, str]] = Tally()  # messages held back or dropped here
        with self.store.transaction():
            if self.store.shared:
                self._decide_again(plans, now)
            for plan in plans:
                if plan.record.id in later and plan.goes:
                    plan.decision = _put_back(plan.decision, later[plan.record.id], now)
            current = self.store.message_states([plan.record.id for plan in plans])
            try:
                for plan in plans:
                    # A message held back after one that goes: its line waits for that one's,
                    # which is written with the channel's answer (`_record_delivery`).
                    self._held_lines = sendings[-1].lines_after if sendings else None
                    result = results[id(plan)] if plan.goes else None
                    outcome = self._commit_send(plan, result, current, sendings, marked, stamp, now)
                    if outcome is not None:
                        settled[outcome] += 1
            finally:
                self._held_lines = None
            self.store.update_messages(marked)
        self.metrics.messages(settled)
        return sendings

    def _decide_again(self, plans: list[SendPlan], now: datetime) -> None:
        """Several daemons share the database: decide again, in the transaction that marks the
        batch `sending` and under each customer's lock (`Store.lock_customers`), what caps and
        the gap count, so that two daemons never both take a customer's last slot. A message
        that the plan no longer sends where it was rendered for is held back: dropped or
        deferred as the plan says now, or, for another channel, planned again at once."""
        going = [plan for plan in plans if plan.goes]
        if not going:
            return
        customer_ids = sorted({plan.customer.id for plan in going})
        self.store.lock_customers(customer_ids)
        sent = self.store.sent_messages(customer_ids, now - self.plan.window)
        engagement = self._engagement(set(customer_ids), now)
        for plan in going:
            history = sent[plan.customer.id]
            own = engagement[plan.customer.id]
            fresh = self._decide(plan.record, plan.customer, plan.template, now, history, own)
            if fresh.channel == plan.decision.channel:
                history.append(Sent(now, plan.decision.channel, plan.record.category))
            elif fresh.channel is None:
                plan.decision = fresh
            else:
                why = f"{plan.decision.channel} was taken by another daemon's send; planned again"
                plan.decision = Decision(None, why, defer_until=now, rule=fresh.rule)

    def _commit_send(
        self,
        plan: SendPlan,
        result: Rendered | Exception | None,
        current: dict[str, dict[str, Any]],
        sendings: list[Sending],
        marked: list[tuple[str, dict[str, Any]]],
        stamp: str,
        now: datetime,
    ) -> tuple[str | None, str] | None:
        """`_commit_sends` for one message of the batch: held back, dropped, or marked `sending`
        (in `marked`, written together) and added to `sendings`. Returns the (channel, result)
        of a message held back or dropped, for the metrics; None for one that goes (or was
        settled meanwhile)."""
        record, channel_name = plan.record, plan.decision.channel
        if current.get(record.id, {}).get("status") not in ("pending", "sending"):
            self.store.complete_job(plan.job.id)  # settled meanwhile (its journey ended...)
            return None
        if channel_name is None:
            return None, self._hold_back(plan, now)
        assert result is not None  # a plan that goes has its rendering
        if isinstance(result, Exception):
            reason = f"{channel_name}: cannot render: {result}"
            if isinstance(result, RenderLimitExceeded | SecurityError):
                # Worded by the sandbox, without customer data: the operator should hear of it.
                log.warning("message %s: cannot render: %s", record.id, result)
            self.store.update_message(record.id, status="dropped", detail=reason)
            fields = {"template": record.template, "message_id": record.id, "channel": channel_name}
            self._journal(now, "drop", plan.journey, record.step, reason, **fields)
            self.store.complete_job(plan.job.id)
            return channel_name, "dropped"
        message = plan.message
        assert message is not None and message.channel == channel_name  # built with its rendering
        links = self.tracking.apply(message) if self.tracking else []
        fields = {"status": "sending", "channel": channel_name, "links": links, "sent_at": stamp}
        marked.append((record.id, fields))
        sendings.append(Sending(plan.job, message, plan.decision.explain()))
        return None

    async def _deliver(self, sendings: list[Sending], turns: Turns) -> list[Delivery]:
        """Hand a batch's messages to their channels, at most `SENDS_AT_ONCE` at a time, so that
        a slow provider holds up only its own messages, each once its turn under its provider's
        rate limit has come (`turns`); a customer's messages go in order."""
        slots = asyncio.Semaphore(SENDS_AT_ONCE)
        deliveries: dict[str, Delivery] = {}
        by_customer: dict[str, list[Message]] = {}
        for sending in sendings:
            by_customer.setdefault(sending.message.customer_id, []).append(sending.message)

        async def send_in_order(messages: list[Message]) -> None:
            for message in messages:
                await turns.wait(message.id)  # before taking a slot: a wait holds up no other send
                async with slots:
                    deliveries[message.id] = await send_message(
                        self.plugins, self.project.registry, message, self.metrics
                    )

        await asyncio.gather(*(send_in_order(messages) for messages in by_customer.values()))
        return [deliveries[sending.message.id] for sending in sendings]

    def _record_delivery(self, sendings: list[Sending], deliveries: list[Delivery], now: datetime) -> None:
        """Record the channels' answers for a batch, in one transaction, on the store's thread,
        and act on the feedback events that stored (message.sent, message.failed) in the same
        transaction, one commit for the batch.

        The sends of consecutive `sent` answers are recorded together: their rows marked with one
        statement, their jobs completed with one, their `message.sent` events stored in one
        ingest; any other answer first records those before it, so that the rows and events
        keep the answers' order. The timeline's lines and new jobs are written at the end, one
        statement each (`batched_writes`).
        """
        results: Tally[tuple[str | None, str]] = Tally()
        with self.store.transaction():
            # The turn at events first, as `handle_pending_events` below takes it: taken after
            # this batch's rows were locked, two daemons each wait for the other (a deadlock).
            self.store.take_turn("events")
            current = self.store.message_states([sending.message.id for sending in sendings])
            # Only for the timeline's lines, which record no more of a journey than its variants.
            journey_ids = {row["journey_id"] for row in current.values()} - {None}
            journeys = self.store.journeys(journey_ids, variants_only=True)
            sent = _Sent()
            with self.batched_writes():
                for sending, delivery in zip(sendings, deliveries, strict=True):
                    if delivery.status is not DeliveryStatus.SENT or delivery.gone:
                        sent.record(self.store, now, current)
                    row = current.get(sending.message.id)
                    record = MessageRecord.from_row(row) if row else None
                    journey = journeys.get(record.journey_id) if record and record.journey_id else None
                    result = self._record_answer(sending, record, journey, delivery, now, sent)
                    results[sending.message.channel, result] += 1
                    for entry in sending.lines_after:
                        self.writes.add_journal(entry)
                sent.record(self.store, now, current)
            self.handle_pending_events()
        self.metrics.messages(results)

    def _record_answer(
        self,
        sending: Sending,
        record: MessageRecord | None,
        journey: Journey | None,
        delivery: Delivery,
        now: datetime,
        sent: _Sent,
    ) -> str:
        """Record one channel's answer about a message (`record`, as stored now, of `journey`):
        sent, retried by `RETRY`, or failed. A sent message is added to `sent`, which the
        caller records. Returns the result the metrics count: `sent`, `retried`, or the
        failure (`failed`, `address_invalid`, `opted_out`; `failed` once retries run out)."""
        job, message, reason = sending.job, sending.message, sending.reason
        step = message.step
        fields = {"template": message.template, "channel": message.channel, "message_id": message.id}
        sender = self.project.registry.channels.get(message.channel)
        for address in delivery.gone if sender is not None else ():
            customer = self.store.customer(message.customer_id)
            if customer is not None:  # the channel says how its address is forgotten
                self.store.set_profile(message.customer_id, sender.forget(customer, address))
        if delivery.status is DeliveryStatus.SENT:
            # A receipt may already have marked it delivered: keep that, add what we know.
            status = "delivered" if record and record.status == "delivered" else "sent"
            sent.add(job, message.id, status, delivery)
            if journey:
                self._journal(now, "send", journey, step, reason, **fields)
            if self.plan.fallback_after and sender is not None and sender.receipts:
                self.writes.add_job(
                    "fallback",
                    (now + self.plan.fallback_after).timestamp(),
                    job.priority,
                    {"message": message.id},
                    journey_id=record.journey_id if record else None,
                    key=f"fallback:{message.id}",
                )
            return "sent"
        if delivery.status is DeliveryStatus.RETRY and RETRY.retries(job.attempts):
            wait = delivery.retry_after or RETRY.backoff(job.attempts)
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
            return "retried"
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
        return "failed" if delivery.status is DeliveryStatus.RETRY else delivery.status.value

    def settle_interrupted_sends(self, now: datetime) -> int:
        """Settle the messages a process that died left `sending`; returns how many became `unknown`.

        The provider may or may not have taken such a message before the crash. Marketing
        (trigger, promo) goes at most once: it is marked `unknown` and not sent again (its send
        job then finds nothing to do). A transactional message is sent again by its job,
        through the same channel and with the same idempotency key (see `_decide`).
        """
        settled = 0
        with self.store.transaction():
            for record in map(MessageRecord.from_row, self.store.messages_sending()):
                if record.category != "transactional":
                    self._settle_unknown(record, "the daemon stopped during the send", now)
                    settled += 1
        return settled

    def _settle_unknown(self, record: MessageRecord, why: str, now: datetime) -> None:
        """Mark a marketing message whose send was cut off `unknown`: it is not sent again."""
        reason = (
            f"{record.channel}: {why}, so it may or may not have gone; "
            "marketing is sent at most once: not sent again"
        )
        self.store.update_message(record.id, status="unknown", detail=reason)
        self.metrics.message(record.channel, "unknown")
        journey = self.store.journey(record.journey_id) if record.journey_id else None
        if journey:
            fields = {"template": record.template, "channel": record.channel}
            self._journal(now, "unknown", journey, record.step, reason, message_id=record.id, **fields)

    def _fall_back(self, message_id: str, why: str, now: datetime) -> None:
        """Queue the same step again on the next best channel, unless the step already arrived."""
        record = self._message(message_id)
        if record is None or not record.journey_id or not record.channel:
            return
        first = record.fallback_of or record.id
        if self.store.chain_delivered(first):
            return  # never the same step twice through two channels that both delivered
        tried = [*(record.tried or []), record.channel]
        fallback_id = stable_id("m-", first, "fallback", len(tried))
        fields = {
            key: getattr(record, key)
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
        self._queue_send(fallback_id, record.category, record.journey_id, now)

    def _no_receipt(self, job: Job, now: datetime) -> None:
        """A `fallback` job, on the store's thread: no receipt came in time, so try the next channel."""
        with self.store.transaction():
            self.store.complete_job(job.id)
            record = self._message(job.payload["message"])
            if record is not None and record.status == "sent":
                hours = self.plan.fallback_after.total_seconds() / 3600 if self.plan.fallback_after else 0
                self._fall_back(record.id, f"no delivery receipt from {record.channel} in {hours:g}h", now)

    async def _act(self, job: Job) -> None:
        """Run an `action` job's plugin action on the event loop; a failure is retried by `RETRY`
        unless the action raised `ActionFailed(retry=False)`."""
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
                mendable = not isinstance(exc, ActionFailed) or exc.retry
                outcome, retry = f"{name}: failed: {exc}", mendable and RETRY.retries(job.attempts)
        await self.store.run(self._record_action, job, outcome, retry, self.clock.now())

    def _record_action(self, job: Job, outcome: str, retry: bool, now: datetime) -> None:
        """Record how an action went, on the store's thread."""
        with self.store.transaction():
            journey = self.store.journey(job.journey_id) if job.journey_id else None
            if retry:
                self.store.retry_job(job.id, now.timestamp() + RETRY.backoff(job.attempts))
                kind = "defer"
            else:
                self.store.complete_job(job.id)
                kind = "action"
            if journey:
                self._journal(now, kind, journey, job.payload.get("step"), outcome)

    def _engagement(
        self, customer_ids: Collection[str], now: datetime
    ) -> dict[str, dict[str, tuple[float, float, float]]]:
        """Per customer, per channel: (the customer's engagement, their message count, everyone's)."""
        if self._population is None or now - self._population[0] > POPULATION_REFRESH:
            self._population = (now, self.store.engagement())
        population = self._population[1]
        return {
            customer_id: {
                name: (*own.get(name, (0.0, 0)), population.get(name, (DEFAULT_RATE, 0))[0])
                for name in self.plan.channels
            }
            for customer_id, own in self.store.engagement_of(customer_ids).items()
        }


class _Sent:
    """Sends answered `sent`, held to be recorded together (`record`)."""

    def __init__(self) -> None:
        self.jobs: list[int] = []
        self.changes: list[tuple[str, dict[str, Any]]] = []

    def add(self, job: Job, message_id: str, status: str, delivery: Delivery) -> None:
        """Hold a sent message: its job, and its row's new status and the provider's word."""
        self.jobs.append(job.id)
        fields = {"status": status, "detail": delivery.detail, "provider_id": delivery.provider_id}
        self.changes.append((message_id, fields))

    def record(self, store: EngineStore, now: datetime, states: dict[str, dict[str, Any]]) -> None:
        """Mark the rows held, complete their jobs and store their `message.sent` events (of
        the messages as `states`, their `message_states` read in this transaction, name them)."""
        if not self.jobs:
            return
        store.update_messages(self.changes)
        store.complete_jobs(self.jobs)
        store.record_sent([message_id for message_id, _ in self.changes], now, states)
        self.jobs, self.changes = [], []


def _pace_of(channel: Channel, message: Message) -> Pace | None:
    """The channel's `pace` for the message; a channel whose `pace` raises is logged and not paced."""
    try:
        return channel.pace(message)
    except Exception:
        log.exception("channel %s raised in pace() for message %s: sent unpaced", message.channel, message.id)
        return None


def _put_back(decision: Decision, wait: float, now: datetime) -> Decision:
    """The plan for a message that `pacing` put back: deferred until its turn, `wait` seconds
    from `now`, as the contact plan defers (planned again then, not counted as a retry)."""
    why = f"{decision.channel}: paced by the provider's rate limit: its turn is in {wait:.0f}s"
    return Decision(None, why, defer_until=now + timedelta(seconds=wait), rule="rate_limit")


def promo_view(promo: dict[str, Any] | None, now: datetime) -> dict[str, Any]:
    """The promo as templates see it: percent, amount, currency, code, expires_at (in `now`'s
    timezone: the moment kept with an issued code, else `expires` from now), expires_hours."""
    view = dict(promo or {})
    seconds = view.pop("expires", None)
    kept = view.pop("expires_at", None)
    if isinstance(seconds, int | float):
        view["expires_at"] = now + timedelta(seconds=seconds)
        view["expires_hours"] = round(seconds / 3600)
    if isinstance(kept, str):
        view["expires_at"] = parse_time(kept).astimezone(now.tzinfo)
    return view
