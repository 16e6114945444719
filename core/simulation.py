"""`boomerang simulate`: the real engine, scheduler, contact plan and templates on a virtual
clock, with a temporary store, sending nothing.

Only the clock and the channels' sinks differ from the daemon: a simulation that differs
from production is a bug.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from itertools import chain, dropwhile, takewhile
from pathlib import Path
from typing import Any, TypeVar
from zoneinfo import ZoneInfo

from boomerang import bodies
from boomerang.bodies import BodyError
from boomerang.clock import VirtualClock, to_iso
from boomerang.engine import Engine
from boomerang.ingest import parse_body, parse_event, parse_events, parse_line
from boomerang.kinds import Channel
from boomerang.model import Customer, Delivery, DeliveryStatus, Event, JournalEntry, Message
from boomerang.plugin_manager import address_fields
from boomerang.project import open_project
from boomerang.rehearsed import RenderedMessages
from boomerang.scheduler import Scheduler
from boomerang.store import Store
from boomerang.timeline_order import ExitsLast, exits_last

DEFAULT_TAIL = timedelta(days=30)
TIMELINE_PAGE = 5000  # timeline entries read back (and written) at a time
EVENT_BATCH = 2000  # events stored and handled in one transaction at most
T = TypeVar("T")
ZoneOf = Callable[[str], Awaitable[ZoneInfo]]  # a customer's timezone, by id


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

    def __init__(
        self,
        channel: Channel,
        outcome: str | None = None,
        keep: bool = True,
        on_send: Callable[[Message], None] | None = None,
    ):
        self.channel = channel
        self.on_send = on_send  # `simulate --outbox/--show`: each message as it is sent
        self.keep = keep  # keep every message in `sent` (tests look at them; a long run does not)
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
        if self.keep:
            self.sent.append(message)
        if self.on_send is not None:
            self.on_send(message)
        if self.outcome == "failed":
            return Delivery(DeliveryStatus.FAILED, detail="simulated failure")
        for event_type, data in RECEIPTS.get(self.outcome or "", []):
            self.pending_receipts.append((message.id, event_type, data))
        return Delivery(DeliveryStatus.SENT, detail="simulated")


@dataclass
class Timeline:
    """What happened in a simulation, in time order, with each customer's timezone; `entries`
    as the engine wrote them, shown with each exit after its moment's sends (`exits_last`)."""

    entries: list[JournalEntry]
    zones: dict[str, ZoneInfo] = field(default_factory=dict)
    start: datetime | None = None
    until: datetime | None = None

    def as_json_lines(self) -> str:
        """One JSON object per line, in time order, stable for scripts and CI."""
        return "".join(map(json_line, exits_last(self.entries)))

    def as_table(self) -> str:
        """A table for people: UTC and customer-local time, then what happened and why."""
        zones = self.zones
        rows = [table_row(entry, zones.get(entry.customer_id, UTC)) for entry in exits_last(self.entries)]
        return "".join(table_lines(rows, column_widths(rows)))


def json_line(entry: JournalEntry, shown: dict[str, Any] | None = None) -> str:
    """A timeline entry as one line of `simulate --json`; `shown`: a send's subject and text."""
    return (
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
                **(shown or {}),
            },
            ensure_ascii=False,
        )
        + "\n"
    )


TABLE_HEADER = (
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


def table_row(entry: JournalEntry, zone: ZoneInfo | timezone) -> tuple[str, ...]:
    """A timeline entry as the cells of a table row; `zone` is the customer's."""
    return (
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


def column_widths(rows: Iterable[tuple[str, ...]], widths: list[int] | None = None) -> list[int]:
    """The widths of every column but the last (the reason runs on), header included; `widths`
    carries on from an earlier part of the same table."""
    widths = widths or [len(cell) for cell in TABLE_HEADER[:-1]]
    for row in rows:
        widths = [max(width, len(cell)) for width, cell in zip(widths, row, strict=False)]
    return widths


def table_lines(rows: Iterable[tuple[str, ...]], widths: list[int], header: bool = True) -> Iterator[str]:
    """The table's lines (with the header first, unless `header` is false)."""
    for row in chain([TABLE_HEADER] if header else [], rows):
        cells = (cell.ljust(width) for cell, width in zip(row[:-1], widths, strict=True))
        yield "  ".join(cells) + "  " + row[-1] + "\n"


class EventsFileError(ValueError):
    """The events file cannot be simulated as it is; the message names the file and line."""


def read_events(path: Path) -> list[Event]:
    """Events from a JSON-lines file (or a JSON array), sorted by time; errors name the line."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise EventsFileError(f"{path}: cannot read: {exc}") from None
    try:
        events = parse_events(parse_body(text))
    except ValueError as exc:
        raise EventsFileError(f"{path}: {exc}") from None
    return sorted(events, key=lambda event: event.at)


def stream_events(path: Path) -> Iterator[Event]:
    """The events of a file one at a time, without holding the file in memory.

    A JSON-lines file is read line by line and must be in time order (a shop's export
    usually is; a line dated before the one above it is an error naming both lines), so a
    month of events needs no more memory than a minute of them. A file holding one JSON
    document (an array, or a pretty-printed object) is read whole and sorted, as before.
    Every error is an `EventsFileError` naming the file and the line.
    """
    whole = True
    try:
        with path.open(encoding="utf-8") as file:
            numbered = ((number, line) for number, line in enumerate(file, start=1) if line.strip())
            first = next(numbered, None)
            if first is not None and _is_event_line(first[1]):
                whole = False
                yield from _event_lines(path, chain([first], numbered))
    except (OSError, UnicodeDecodeError) as exc:
        raise EventsFileError(f"{path}: cannot read: {exc}") from None
    if whole:
        yield from read_events(path)


def _is_event_line(line: str) -> bool:
    """Whether a file's first line holds a JSON object by itself: then the file is JSON lines."""
    try:
        return isinstance(bodies.loads(line), dict)
    except BodyError:
        return False


def _event_lines(path: Path, lines: Iterable[tuple[int, str]]) -> Iterator[Event]:
    previous: tuple[int, datetime] | None = None
    for number, line in lines:
        try:
            event = parse_event(parse_line(line.rstrip("\r\n"), number), f"line {number}")
        except ValueError as exc:
            raise EventsFileError(f"{path}: {exc}") from None
        if previous is not None and event.at < previous[1]:
            raise EventsFileError(
                f"{path}: line {number} '{event.id}': {_moment(event.at)} is earlier than line "
                f"{previous[0]} ({_moment(previous[1])}); simulate reads JSON lines in time order: "
                "sort the file by `at` first (e.g. jq -c -s 'sort_by(.at)[]')"
            )
        previous = (number, event.at)
        yield event


def _moment(at: datetime) -> str:
    return at.astimezone(UTC).isoformat().replace("+00:00", "Z")


async def simulate(
    config_path: Path,
    events: list[Event],
    start: datetime | None = None,
    until: datetime | None = None,
    outcomes: dict[str, str] | None = None,
) -> Timeline:
    """Run events through the configured scenarios on a virtual clock; returns the timeline."""

    async def collect(store: Store, zone_of: ZoneOf, window: tuple[datetime, datetime]) -> Timeline:
        entries = await store.run(store.journal)
        zones = {customer_id: await zone_of(customer_id) for customer_id in {e.customer_id for e in entries}}
        return Timeline(entries, zones, *window)

    ordered = sorted(events, key=lambda event: event.at)
    return await rehearse(config_path, iter(ordered), collect, start, until, outcomes)


async def simulate_into(
    write: Callable[[str], None],
    config_path: Path,
    events: Iterator[Event],
    as_json: bool,
    start: datetime | None = None,
    until: datetime | None = None,
    outcomes: dict[str, str] | None = None,
    messages: RenderedMessages | None = None,
) -> None:
    """`boomerang simulate`: run a stream of events (in time order) and `write` the timeline,
    page by page, as JSON lines or a table; nothing is written if the events are bad.
    `messages` receives every message sent (`--outbox`) and, with `show`, gives each send row
    its subject and first lines (`--show`).

    Memory stays bounded by a page: the timeline grows in the temporary database as the
    simulation runs and is read back from it once the run is complete.
    """

    async def pages(store: Store) -> AsyncIterator[list[JournalEntry]]:
        after = 0
        while page := await store.run(store.journal_page, after, TIMELINE_PAGE):
            after = page[-1][0]
            yield [entry for _, entry in page]

    async def write_out(store: Store, zone_of: ZoneOf, _: tuple[datetime, datetime]) -> None:
        def json_lines(entries: list[JournalEntry]) -> str:
            return "".join(json_line(entry, shown_fields(entry)) for entry in entries)

        def shown_fields(entry: JournalEntry) -> dict[str, Any] | None:
            taken = messages.taken(entry.message_id) if messages and entry.kind == "send" else None
            return {"subject": taken[0], "text": "\n".join(taken[1])} if taken else None

        async def table_part(entries: list[JournalEntry], header: bool) -> str:
            rows = [table_row(entry, await zone_of(entry.customer_id)) for entry in entries]
            if not (messages and messages.show):
                return "".join(table_lines(rows, widths, header))
            lines = list(table_lines([], widths)) if header else []
            for entry, row in zip(entries, rows, strict=True):
                lines += table_lines([row], widths, header=False)
                taken = messages.taken(entry.message_id) if entry.kind == "send" else None
                subject, text = taken or (None, [])
                lines += [f"    │ {line}\n" for line in ([subject] if subject else []) + text]
            return "".join(lines)

        ordering = ExitsLast()
        if as_json:
            async for page in pages(store):
                write(json_lines(ordering.order(page)))
            write(json_lines(ordering.rest()))
            return
        # Two readings of the timeline: the first for the widths of the columns.
        widths = None
        async for page in pages(store):
            rows = [table_row(entry, await zone_of(entry.customer_id)) for entry in page]
            widths = column_widths(rows, widths)
        widths = widths or column_widths([])
        header = True
        async for page in pages(store):
            write(await table_part(ordering.order(page), header))
            header = False
        write(await table_part(ordering.rest(), header))

    await rehearse(config_path, events, write_out, start, until, outcomes, keep_sent=False, messages=messages)



async def rehearse(
    config_path: Path,
    events: Iterator[Event],
    read: Callable[[Store, ZoneOf, tuple[datetime, datetime]], Awaitable[T]],
    start: datetime | None = None,
    until: datetime | None = None,
    outcomes: dict[str, str] | None = None,
    keep_sent: bool = True,
    messages: RenderedMessages | None = None,
) -> T:
    """Run events (in time order) through the configured scenarios on a virtual clock, then
    `read(store, zone_of, (start, until))` the outcome from the temporary store.

    Events are stored and handled in batches, each event at its own moment, up to the next
    moment a job falls due; then the clock moves to that job. Without `until`, the run goes on
    `DEFAULT_TAIL` past the last event. `keep_sent`: the rehearsal channels keep every message
    they were given (for tests; a long run leaves it off). `messages` receives each message
    sent, with its virtual time.
    """
    project, plugins = open_project(config_path)
    config = project.config
    if messages is not None:
        messages.channels = dict(project.registry.channels)

        def on_send(message: Message) -> None:
            messages(message, clock.now())

    rehearsals = {
        name: Rehearsal(ch, (outcomes or {}).get(name), keep=keep_sent, on_send=on_send if messages else None)
        for name, ch in project.registry.channels.items()
    }
    project.registry.channels = dict(rehearsals)
    if start is not None:
        events = dropwhile(lambda event: event.at < start, events)
    if until is not None:
        events = takewhile(lambda event: event.at <= until, events)  # the rest is never read
    upcoming = next(events, None)
    start = start or (upcoming.at if upcoming else datetime.now(UTC).replace(microsecond=0))
    last = start
    clock = VirtualClock(start)
    with tempfile.TemporaryDirectory(prefix="boomerang-simulate-") as directory:
        # Thrown away afterwards: tuned for speed, not for surviving a power cut.
        store = Store(Path(directory) / "simulation.db", durable=False)
        store.address_fields = address_fields(project.registry.channel_kinds)
        store.drop_report_totals()  # nobody reports on a rehearsal
        try:
            engine = Engine(store, clock, plugins, project, dry_run=True)
            engine.render_here = True  # the store answers on this thread too: no hop per send
            scheduler = Scheduler(store, clock, engine.run_job, batches=engine.batches, concurrency=1)

            def feed(event: Event) -> Event | None:
                """Store and handle events, each at its own moment, in one transaction, until a
                job falls due before the next event; returns the first event not fed."""
                nonlocal last
                with store.transaction():
                    for _ in range(EVENT_BATCH):
                        clock.advance_to(event.at)
                        last = event.at
                        # the events file is the operator's own, as POST /events would bring it
                        event.source = "simulate"
                        store.ingest([event], clock.now(), verified=True)
                        while engine.handle_pending_events():
                            pass
                        following = next(events, None)
                        if following is None:
                            return None
                        event = following
                        due = store.next_due_at()
                        if due is not None and due <= event.at.timestamp():
                            break
                return event

            await store.run(engine.ensure_ticks, clock.now())
            while True:
                if upcoming is None and until is None:
                    # Any four-digit year is simulated: the tail stops at the last moment a datetime holds.
                    until = last + min(DEFAULT_TAIL, datetime.max.replace(tzinfo=UTC) - last)
                job_at = await store.run(store.next_due_at)
                if (
                    job_at is not None
                    and (until is None or job_at <= until.timestamp())
                    and (upcoming is None or job_at <= upcoming.at.timestamp())
                ):
                    clock.advance_to(datetime.fromtimestamp(job_at, UTC))
                    await scheduler.run_due()
                    await _deliver_receipts(store, engine, rehearsals.values(), clock)
                elif upcoming is not None:
                    upcoming = await store.run(feed, upcoming)
                else:
                    break
            assert until is not None
            zones: dict[str, ZoneInfo] = {}

            async def zone_of(customer_id: str) -> ZoneInfo:
                if customer_id not in zones:
                    customer = await store.run(store.customer, customer_id)
                    zones[customer_id] = ZoneInfo((customer and customer.timezone) or config.default_timezone)
                return zones[customer_id]

            return await read(store, zone_of, (start, until))
        finally:
            store.close()


async def _deliver_receipts(store: Store, engine: Engine, rehearsals: Any, clock: VirtualClock) -> None:
    """Receipts the rehearsed providers would send back, recorded as the daemon would."""
    for rehearsal in rehearsals:
        receipts, rehearsal.pending_receipts = rehearsal.pending_receipts, []
        for message_id, event_type, data in receipts:
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
