"""Dispatch: a queued message planned, rendered, tracked, sent and recorded; actions run.

A send is planned on the store's thread (the contact plan's decision; nothing is written
unless the message waits or is dropped), rendered on a render thread within the message's
time and size budget, so that a slow template never holds up the store, handed to its
channel on the event loop, and recorded on the store's thread, where the decision is made
again: if another message took the slot in the meantime, it is planned afresh. A crash
before the record leaves the message pending; one during the send leaves it `sending`, which
`settle_interrupted_sends` settles at the next start.

Which thread runs what is in each name: `async def` methods run on the event loop; `_render`
on a render thread; every other method on the store's thread (reached through `store.run`).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from jinja2.exceptions import SecurityError

from boomerang.clock import parse_time, to_iso
from boomerang.contact_plan import DEFAULT_RATE, Decision
from boomerang.expressions import MESSAGE_SECONDS, Budget, Expression, RenderLimitExceeded, Scope, evaluating
from boomerang.history import History
from boomerang.journeys import Journeys, stable_id
from boomerang.model import Customer, Delivery, DeliveryStatus, Event, Job, Message, MessageRecord
from boomerang.plugin_manager import Plugins, Registry, notify
from boomerang.retry import RETRY
from boomerang.templates import MessageTemplate, Rendered

log = logging.getLogger(__name__)

POPULATION_REFRESH = timedelta(minutes=10)  # how long channel-wide engagement figures are reused
REPLANS = 3  # a send whose decision changed while it rendered is planned again this many times
# Messages render here, never on the store's thread or the event loop. Two threads: rendering
# is CPU-bound under the GIL, so more would not be faster, and a thread per message would not scale.
RENDERING = ThreadPoolExecutor(max_workers=2, thread_name_prefix="render")


@dataclasses.dataclass
class SendPlan:
    """What the store's thread decided for one message, for a render thread to render."""

    record: MessageRecord
    customer: Customer
    template: MessageTemplate
    decision: Decision
    context: dict[str, Any]
    locales: list[str | None]
    segments: dict[str, Expression]
    now: datetime


async def send_message(plugins: Plugins, registry: Registry, message: Message) -> Delivery:
    """Send through the message's channel; a channel that raises is treated as 'retry later'."""
    channel = registry.channels.get(message.channel)
    if channel is None:
        delivery = Delivery(DeliveryStatus.FAILED, detail=f"channel '{message.channel}' is not configured")
    else:
        try:
            delivery = await channel.send(message)
        except Exception as exc:
            log.exception("channel %s raised while sending message %s", message.channel, message.id)
            delivery = Delivery(DeliveryStatus.RETRY, detail=f"{type(exc).__name__}: {exc}")
    log.info(
        "message %s to customer %s via %s: %s",
        message.id,
        message.customer_id,
        message.channel,
        delivery.status.value,
    )
    await notify(plugins, "message_finished", message=message, delivery=delivery)
    return delivery


class Dispatch(Journeys):
    """Sends, fallbacks and actions: the jobs that talk to the outside."""

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

    async def _send(self, job: Job) -> None:
        """Run a send job, on the event loop: plan, render, send and record one message."""
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
        promo = plan.record.promo or {}
        name = promo.get("provider")
        provider = self.project.registry.promo_providers.get(name) if name else None
        if provider is None or promo.get("code"):
            return  # no provider step, a code already kept, or one `check` reports as unknown
        code = f"<code from {name}>" if self.dry_run else await provider.issue(plan.customer, promo)
        await self.store.run(
            self.store.update_message, plan.record.id, promo=json.dumps({**promo, "code": code})
        )
        plan.context["promo"]["code"] = code

    def _decide(
        self, record: MessageRecord, customer: Customer, template: MessageTemplate, now: datetime
    ) -> Decision:
        """The contact plan's decision for a message now, among the channels its template has."""
        versions = template.channels()
        candidates = [name for name in (record.candidates or self.plan.order) if name in versions]
        if record.status == "sending" and record.channel:
            # A send cut off by a crash goes again to the same provider, whose idempotency
            # key (and the email Message-ID) then makes it recognisably the same message.
            candidates = [record.channel]
        decision = self.plan.decide(
            customer,
            candidates,
            record.category,
            now,
            self.store.sent_messages(customer.id, now - self.plan.window),
            self._engagement(customer.id, now),
            tuple(record.tried or ()),
        )
        if decision.channel is not None and record.fallback_of:
            decision.reason = f"fallback after {', '.join(record.tried or ())}: {decision.reason}"
        return decision

    def _plan_send(self, job: Job, now: datetime) -> SendPlan | None:
        """Decide whether, when and where a message goes; None if it waits, is dropped or is done."""
        with self.store.transaction():
            record = self._message(job.payload["message"])
            if record is None or record.status not in ("pending", "sending"):
                self.store.complete_job(job.id)
                return None
            if record.status == "sending" and record.category != "transactional":
                # An earlier attempt of this job handed it to the channel and then failed before
                # recording the answer (a crash is settled at start; this is anything else).
                self._settle_unknown(record, "recording the previous attempt failed", now)
                self.store.complete_job(job.id)
                return None
            journey = self.store.journey(record.journey_id) if record.journey_id else None
            customer = self.store.customer(record.customer_id)
            if customer is None or journey is None:
                self.store.complete_job(job.id)
                return None
            step = record.step
            step_fields = {"template": record.template, "message_id": record.id}
            if record.expires_at and parse_time(record.expires_at) < now:
                reason = f"expired at {record.expires_at} before it could go"
                self.store.update_message(record.id, status="dropped", detail=reason)
                self._journal(now, "drop", journey, step, reason, **step_fields)
                self.store.complete_job(job.id)
                return None
            template = self.project.templates.get(record.template)
            if template is None:  # removed by a reload after the message was queued
                reason = f"template '{record.template}' does not exist"
                self.store.update_message(record.id, status="dropped", detail=reason)
                self._journal(now, "drop", journey, step, reason, **step_fields)
                self.store.complete_job(job.id)
                return None
            # Only channels the template has a version for can carry the message.
            decision = self._decide(record, customer, template, now)
            if decision.channel is None:
                expires = parse_time(record.expires_at) if record.expires_at else None
                if decision.defer_until is not None and (expires is None or decision.defer_until <= expires):
                    self.store.update_message(record.id, status="pending", detail=decision.explain())
                    self._journal(now, "defer", journey, step, decision.explain(), **step_fields)
                    self.store.postpone_job(job.id, decision.defer_until.timestamp())
                    return None
                reason = decision.explain()
                if decision.defer_until is not None:
                    reason += f"; dropped: that is past its expiry at {record.expires_at}"
                self.store.update_message(record.id, status="dropped", detail=reason)
                self._journal(now, "drop", journey, step, reason, **step_fields)
                self.store.complete_job(job.id)
                return None
            journey.context = record.context or journey.context
            context = self.context(customer, journey, now)
            zone = ZoneInfo(customer.timezone) if customer.timezone else self.zone
            context["promo"] = _promo_view(record.promo, now.astimezone(zone))
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
            record = self._message(plan.record.id)
            customer = self.store.customer(plan.record.customer_id)
            journey = self.store.journey(plan.record.journey_id)
            settled = record is None or record.status not in ("pending", "sending")
            if settled or customer is None or journey is None:
                self.store.complete_job(job.id)  # settled while it rendered
                return ()
            decision = self._decide(record, customer, plan.template, now)
            if decision.channel != plan.decision.channel:
                # Another message took the slot, or a channel closed, while it rendered.
                log.debug("message %s: the decision changed while it rendered; planning again", record.id)
                return None
            assert decision.channel is not None
            step = record.step
            fields = {"template": record.template, "message_id": record.id, "channel": decision.channel}
            if isinstance(rendered, Exception):
                reason = f"{decision.channel}: cannot render: {rendered}"
                if isinstance(rendered, RenderLimitExceeded | SecurityError):
                    # Worded by the sandbox, without customer data: the operator should hear of it.
                    log.warning("message %s: cannot render: %s", record.id, rendered)
                self.store.update_message(record.id, status="dropped", detail=reason)
                self._journal(now, "drop", journey, step, reason, **fields)
                self.store.complete_job(job.id)
                return ()
            channel = self.project.registry.channels[decision.channel]
            message = Message(
                id=record.id,
                customer_id=customer.id,
                channel=decision.channel,
                to=channel.address(customer) or "",
                template=record.template,
                body=rendered.body,
                subject=rendered.subject,
                html=rendered.html,
                locale=rendered.locale,
                category=record.category,
                scenario=record.scenario,
                step=record.step,
                extra=rendered.extra,
            )
            links = self.tracking.apply(message) if self.tracking else []
            self.store.update_message(
                record.id,
                status="sending",
                channel=decision.channel,
                links=json.dumps(links),
                sent_at=to_iso(now),
            )
            return message, decision.explain()

    def _record_delivery(
        self, job: Job, message: Message, reason: str, delivery: Delivery, now: datetime
    ) -> None:
        """Record the channel's answer on the store's thread: sent, retried by `RETRY`, or failed."""
        with self.store.transaction():
            record = self._message(message.id)
            journey = self.store.journey(record.journey_id) if record and record.journey_id else None
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
                        journey_id=record.journey_id if record else None,
                        key=f"fallback:{message.id}",
                    )
            elif delivery.status is DeliveryStatus.RETRY and RETRY.retries(job.attempts):
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
        """Run an `action` job's plugin action on the event loop; a failure is retried by `RETRY`."""
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
                outcome, retry = f"{name}: failed: {exc}", RETRY.retries(job.attempts)
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

    def _engagement(self, customer_id: str, now: datetime) -> dict[str, tuple[float, float, float]]:
        """Per channel: (the customer's engagement, their message count, everyone's engagement)."""
        if self._population is None or now - self._population[0] > POPULATION_REFRESH:
            self._population = (now, self.store.engagement())
        population = self._population[1]
        own = self.store.engagement(customer_id)
        return {
            name: (*own.get(name, (0.0, 0)), population.get(name, (DEFAULT_RATE, 0))[0])
            for name in self.plan.channels
        }


def _promo_view(promo: dict[str, Any] | None, now: datetime) -> dict[str, Any]:
    """The promo as templates see it: percent, amount, code, expires_at, expires_hours."""
    view = dict(promo or {})
    seconds = view.pop("expires", None)
    if isinstance(seconds, int | float):
        view["expires_at"] = now + timedelta(seconds=seconds)
        view["expires_hours"] = round(seconds / 3600)
    return view
