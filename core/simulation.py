"""`boomerang simulate`: the real engine, scheduler, contact plan and templates on a virtual
clock, with a temporary store, sending nothing.

Only the clock and the channels' sinks differ from the daemon: a simulation that differs
from production is a bug.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from boomerang.clock import VirtualClock, to_iso
from boomerang.engine import Engine
from boomerang.ingest import Ingestor, parse_body, parse_events
from boomerang.kinds import Channel
from boomerang.model import Customer, Delivery, DeliveryStatus, Event, JournalEntry, Message
from boomerang.plugin_manager import address_fields
from boomerang.project import open_project
from boomerang.scheduler import Scheduler
from boomerang.store import Store

DEFAULT_TAIL = timedelta(days=30)


OUTCOMES = ("failed", "undelivered", "delivered", "opened", "clicked")
# The receipts each rehearsed outcome produces after a successful send.
RECEIPTS = {
    "undelivered": [("message.failed", {"reason": "undelivered", "detail": "simulated"})],
    "delivered": [("message.delivered", {})],
    "opened": [("message.delivered", {}), ("message.opened", {})],
    "clicked": [("message.delivered", {}), ("message.opened", {}), ("message.clicked", {})],
}


class Rehearsal(Channel):
    """A channel that finds addresses like the real one and sends nothing.

    `outcome` rehearses what the provider answers: `failed` at once, or receipts after the
    send (`undelivered`, `delivered`, `opened`, `clicked`); without one the send just succeeds.
    """

    def __init__(self, channel: Channel, outcome: str | None = None):
        self.channel = channel
        self.name = channel.name
        self.receipts = channel.receipts or outcome in RECEIPTS
        self.instant = channel.instant
        self.outcome = outcome
        self.sent: list[Message] = []
        self.pending_receipts: list[tuple[str, str, dict]] = []

    def address(self, customer: Customer) -> str | None:
        """The real channel's address for the customer."""
        return self.channel.address(customer)

    async def send(self, message: Message) -> Delivery:
        """Record the message; answer as the rehearsed outcome says."""
        self.sent.append(message)
        if self.outcome == "failed":
            return Delivery(DeliveryStatus.FAILED, detail="simulated failure")
        for event_type, data in RECEIPTS.get(self.outcome or "", []):
            self.pending_receipts.append((message.id, event_type, data))
        return Delivery(DeliveryStatus.SENT, detail="simulated")


@dataclass
class Timeline:
    """What happened in a simulation, in time order, with each customer's timezone."""

    entries: list[JournalEntry]
    zones: dict[str, ZoneInfo] = field(default_factory=dict)
    start: datetime | None = None
    until: datetime | None = None

    def as_json_lines(self) -> str:
        """One JSON object per line, in time order, stable for scripts and CI."""
        return "".join(
            json.dumps(
                {
                    "at": to_iso(entry.at)[:19] + "Z",
                    "kind": entry.kind,
                    "customer": entry.customer_id,
                    "scenario": entry.scenario,
                    "step": entry.step,
                    "template": entry.template,
                    "channel": entry.channel,
                    "reason": entry.reason,
                },
                ensure_ascii=False,
            )
            + "\n"
            for entry in self.entries
        )

    def as_table(self) -> str:
        """A table for people: UTC and customer-local time, then what happened and why."""
        header = (
            "time (UTC)",
            "local",
            "customer",
            "scenario",
            "step",
            "what",
            "template",
            "channel",
            "reason",
        )
        rows = [header]
        for entry in self.entries:
            zone = self.zones.get(entry.customer_id, UTC)
            rows.append(
                (
                    to_iso(entry.at)[:16].replace("T", " "),
                    entry.at.astimezone(zone).strftime("%m-%d %H:%M %Z"),
                    entry.customer_id,
                    entry.scenario or "-",
                    entry.step or "-",
                    entry.kind,
                    entry.template or "-",
                    entry.channel or "-",
                    entry.reason,
                )
            )
        widths = [max(len(str(row[i])) for row in rows) for i in range(len(header) - 1)]
        return "".join(
            "  ".join(str(cell).ljust(width) for cell, width in zip(row[:-1], widths, strict=True))
            + "  "
            + row[-1]
            + "\n"
            for row in rows
        )


def read_events(path: Path) -> list[Event]:
    """Events from a JSON-lines file (or a JSON array), sorted by time; errors name the line."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path}: cannot read: {exc}") from None
    try:
        events = parse_events(parse_body(text))
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from None
    return sorted(events, key=lambda event: event.at)


async def simulate(
    config_path: Path,
    events: list[Event],
    start: datetime | None = None,
    until: datetime | None = None,
    outcomes: dict[str, str] | None = None,
) -> Timeline:
    """Run events through the configured scenarios on a virtual clock; returns the timeline."""
    project, plugins = open_project(config_path)
    config = project.config
    rehearsals = {
        name: Rehearsal(ch, (outcomes or {}).get(name)) for name, ch in project.registry.channels.items()
    }
    project.registry.channels = dict(rehearsals)
    start = start or (events[0].at if events else datetime.now(UTC).replace(microsecond=0))
    last = events[-1].at if events else start
    # Any four-digit year is simulated: the tail stops at the last moment a datetime holds.
    until = until or last + min(DEFAULT_TAIL, datetime.max.replace(tzinfo=UTC) - last)
    events = [event for event in events if start <= event.at <= until]
    clock = VirtualClock(start)
    with tempfile.TemporaryDirectory(prefix="boomerang-simulate-") as directory:
        store = Store(Path(directory) / "simulation.db")
        store.address_fields = address_fields(project.registry.channel_kinds)
        try:
            engine = Engine(store, clock, plugins, project, dry_run=True)
            scheduler = Scheduler(store, clock, engine.run_job, concurrency=1)

            async def nothing(_: list[Event]) -> None:
                return None

            # the events file is the operator's own, as POST /events would bring it
            ingest = Ingestor(store, clock, nothing, verified=lambda source: True)
            await store.run(engine.ensure_ticks, clock.now())
            pending = list(events)
            while True:
                job_at = await store.run(store.next_due_at)
                event_at = pending[0].at.timestamp() if pending else None
                if (
                    job_at is not None
                    and job_at <= until.timestamp()
                    and (event_at is None or job_at <= event_at)
                ):
                    clock.advance_to(datetime.fromtimestamp(job_at, UTC))
                    await scheduler.run_due()
                    await _deliver_receipts(store, engine, rehearsals.values(), clock)
                elif event_at is not None:
                    clock.advance_to(pending[0].at)
                    await ingest([pending.pop(0)], "simulate")
                    while await store.run(engine.handle_pending_events):
                        pass
                else:
                    break
            entries = await store.run(store.journal)
            zones = {}
            for customer_id in {entry.customer_id for entry in entries}:
                customer = await store.run(store.customer, customer_id)
                zones[customer_id] = ZoneInfo((customer and customer.timezone) or config.default_timezone)
        finally:
            store.close()
    return Timeline(entries, zones, start, until)


async def _deliver_receipts(store: Store, engine: Engine, rehearsals: Any, clock: VirtualClock) -> None:
    """Receipts the rehearsed providers would send back, recorded as the daemon would."""
    for rehearsal in rehearsals:
        while rehearsal.pending_receipts:
            message_id, event_type, data = rehearsal.pending_receipts.pop(0)
            await store.run(store.record_feedback, message_id, event_type, data, None, clock.now())
    while await store.run(engine.handle_pending_events):
        pass


def parse_outcomes(texts: tuple[str, ...]) -> dict[str, str]:
    """`sms=failed email=opened` → {"sms": "failed", "email": "opened"}; ValueError if malformed."""
    outcomes = {}
    for text in texts:
        channel, _, outcome = text.partition("=")
        if outcome not in OUTCOMES:
            raise ValueError(f"'{text}' is not CHANNEL=OUTCOME with an outcome of {', '.join(OUTCOMES)}")
        outcomes[channel] = outcome
    return outcomes


def parse_moment(text: str) -> datetime:
    """`--from`/`--until`: an ISO-8601 timestamp, or a date (midnight UTC)."""
    moment = datetime.fromisoformat(text)
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).astimezone(UTC)
