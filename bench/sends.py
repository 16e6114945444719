"""Sends: N customers each triggering an immediate-send scenario, against huey draining N
render-and-write tasks in the same run.

Boomerang runs a project made by `boomerang init` (the reference scenarios and templates, the
contact plan, the outbox channel writing `.eml` files): each customer's `order.shipped` enters
`delivery-status`, whose first step sends at once. The events are stored and acted on before
the clock starts; what is timed is the daemon's scheduler and engine, from the moment the N
send jobs are due until all N messages are recorded as sent. `sends-null` is the same into a
channel that sends nothing: the core's own cost.

The baseline is huey's `SqliteHuey` with 4 worker threads draining N queued tasks, each
rendering the same email template with Jinja2 and writing it to a file.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

from jinja2 import Environment

from bench.figures import Figure
from boomerang.clock import WallClock
from boomerang.engine import Engine
from boomerang.formats import locale_of, money
from boomerang.ingest import parse_event
from boomerang.kinds import Channel
from boomerang.model import Customer, Delivery, DeliveryStatus, Message
from boomerang.plugin_manager import address_fields
from boomerang.project import open_project
from boomerang.scaffold import create_project
from boomerang.scheduler import Scheduler
from boomerang.store import Store

GOAL = "at least 5x huey (SqliteHuey, 4 threads) draining the same number of render-and-write tasks"
CUSTOMERS = int(os.environ.get("BENCH_SENDS_CUSTOMERS", "10000"))
RATIO = 5.0


class NullChannel(Channel):
    """The wrapped channel's addresses, and a send that goes nowhere: the core's own cost."""

    def __init__(self, channel: Channel):
        self.channel = channel
        self.name = channel.name
        self.receipts = False
        self.instant = channel.instant

    def address(self, customer: Customer) -> str | None:
        """The wrapped channel's address."""
        return self.channel.address(customer)

    async def send(self, message: Message) -> Delivery:
        """Sent, at once."""
        return Delivery(DeliveryStatus.SENT, provider_id=message.id)


def order_shipped(n: int, now: datetime) -> dict:
    """Customer n's order has shipped: what enters `delivery-status`."""
    return {
        "id": f"e-{n}",
        "type": "order.shipped",
        "at": now.isoformat().replace("+00:00", "Z"),
        "customer": {"id": f"c-{n}", "email": f"c{n}@example.com", "name": f"Customer {n}"},
        "data": {
            "order": {
                "id": f"o-{n}",
                "currency": "EUR",
                "tracking_url": f"https://track.example.com/{n}",
                "items": [{"name": "Tyre", "qty": 2, "price": 30}, {"name": "Pump", "qty": 1, "price": 15}],
            }
        },
    }


async def boomerang_sends(directory: Path, null: bool) -> tuple[float, int]:
    """Seconds from the moment CUSTOMERS send jobs are due until every message is recorded sent."""
    create_project(directory)
    project, plugins = open_project(directory / "boomerang.yaml")
    if null:
        project.registry.channels = {
            name: NullChannel(channel) for name, channel in project.registry.channels.items()
        }
    store = Store(project.config.database)
    store.address_fields = address_fields(project.registry.channel_kinds)
    clock = WallClock()
    try:
        engine = Engine(store, clock, plugins, project)
        now = clock.now()
        events = [parse_event(order_shipped(n, now)) for n in range(CUSTOMERS)]
        await store.run(store.ingest, events, now)
        while await store.run(engine.handle_pending_events, 1000):
            pass
        sent_query = "SELECT count(*) FROM messages WHERE status = 'sent'"

        def sent() -> int:
            return store.db.execute(sent_query).fetchone()[0]

        stopping = asyncio.Event()
        scheduler = Scheduler(store, clock, engine.run_job, batches=engine.batches)
        started = time.perf_counter()
        serving = asyncio.create_task(scheduler.serve(stopping))
        # The scheduler counts the jobs it has run (a batch once it is recorded): watching that
        # costs the store nothing, where counting the sent rows every 50 ms scanned the table.
        # A send that did not go (retried later) would hold the count below CUSTOMERS at the end.
        while scheduler.done < CUSTOMERS:
            await asyncio.sleep(0.01)
            if serving.done():
                serving.result()  # a crash of the scheduler is the benchmark's failure
        elapsed = time.perf_counter() - started
        stopping.set()
        await serving
        await scheduler.drain(5)
        recorded = await store.run(sent)
        assert recorded == CUSTOMERS, f"{recorded} messages sent for {CUSTOMERS} customers"
        files = len(list((directory / "outbox").iterdir())) if not null else CUSTOMERS
    finally:
        store.close()
    return elapsed, files


class _ItemsFirst(Environment):
    """`order.items` is the order's items, as in Boomerang's templates, not `dict.items`."""

    def getattr(self, obj: object, attribute: str) -> object:
        if isinstance(obj, dict) and attribute in obj:
            return obj[attribute]
        return super().getattr(obj, attribute)


def huey_drains(directory: Path) -> float:
    """Seconds for SqliteHuey's 4 worker threads to drain CUSTOMERS render-and-write tasks."""
    from huey import SqliteHuey

    source = (Path(__file__).parent.parent / "templates" / "delivery_status" / "email.en.html").read_text()
    environment = _ItemsFirst(autoescape=True)
    english = locale_of("en")
    # The template writes prices with `money`: the baseline formats them with the same function.
    environment.filters["money"] = lambda value, currency: money(value, currency, english)
    template = environment.from_string(source.split("---", 2)[2])
    huey = SqliteHuey("bench", filename=str(directory / "huey.db"), results=False)
    outbox = directory / "huey-outbox"
    outbox.mkdir()
    done = threading.Semaphore(0)
    failed: list[Exception] = []

    @huey.task()
    def render_and_write(n: int) -> None:
        try:
            event = order_shipped(n, datetime.now(UTC))
            html = template.render(customer=event["customer"], event=event, order=event["data"]["order"])
            (outbox / f"email-m-{n}.html").write_text(html, encoding="utf-8")
        except Exception as exc:  # noqa: BLE001 - reported after the run, never a hang
            failed.append(exc)
        finally:
            done.release()

    for n in range(CUSTOMERS):
        render_and_write(n)
    consumer = huey.create_consumer(workers=4, worker_type="thread", periodic=False, initial_delay=0.001)
    started = time.perf_counter()
    consumer.start()
    for _ in range(CUSTOMERS):
        done.acquire()
    elapsed = time.perf_counter() - started
    consumer.stop(graceful=True)
    if failed:
        raise RuntimeError(f"{len(failed)} huey tasks failed, the first with {failed[0]!r}")
    return elapsed


def run() -> list[Figure]:
    with tempfile.TemporaryDirectory(prefix="bench-sends-") as directory:
        root = Path(directory)
        baseline = CUSTOMERS / huey_drains(root)
        outbox_seconds, files = asyncio.run(boomerang_sends(root / "outbox-project", null=False))
        null_seconds, _ = asyncio.run(boomerang_sends(root / "null-project", null=True))
    assert files == CUSTOMERS, f"{files} files in the outbox for {CUSTOMERS} customers"
    outbox_rate, null_rate = CUSTOMERS / outbox_seconds, CUSTOMERS / null_seconds
    print(
        f"{CUSTOMERS:,} customers: huey {CUSTOMERS / baseline:.1f} s, outbox {outbox_seconds:.1f} s,"
        f" null channel {null_seconds:.1f} s"
    )
    detail = f"{CUSTOMERS:,} immediate sends; baseline: huey, 4 threads, render + write"
    return [
        Figure(
            "sends",
            round(outbox_rate),
            "messages/s",
            round(baseline),
            GOAL,
            outbox_rate >= RATIO * baseline,
            detail + "; outbox channel",
        ),
        Figure(
            "sends-null",
            round(null_rate),
            "messages/s",
            round(baseline),
            GOAL,
            null_rate >= RATIO * baseline,
            detail + "; a channel that sends nothing",
        ),
    ]
