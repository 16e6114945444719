"""Engine: acting on a mixed batch of stored events, against storing the same events.

Boomerang runs a project made by `boomerang init` (the reference scenarios). The events are
a shop's month (bench/shop_month.py: product views, cart updates, checkouts, orders,
shipments, deliveries) plus one `message.sent` receipt for every fourth customer, the
feedback each sent message brings. What is timed is `Journeys.handle_pending_events`
draining them in batches of 1 000, as the daemon does; the baseline is storing the same
events (`Store.ingest`, in groups of 1 000) in the same run, on the same database.
"""

from __future__ import annotations

import io
import json
import os
import tempfile
import time
from datetime import timedelta
from pathlib import Path

from bench.figures import Figure
from bench.shop_month import START, write_month
from boomerang.clock import VirtualClock
from boomerang.engine import Engine
from boomerang.ingest import parse_event
from boomerang.model import Event, ProfileUpdate
from boomerang.plugin_manager import address_fields
from boomerang.project import open_project
from boomerang.scaffold import create_project
from boomerang.store import Store

GOAL = "acting on a stored event costs no more than storing it"
CUSTOMERS = int(os.environ.get("BENCH_ENGINE_CUSTOMERS", "2500"))
BATCH = 1000


def mixed_events(customers: int) -> list[Event]:
    """The month's events of `customers` customers, then a `message.sent` receipt for every fourth."""
    lines = io.StringIO()
    write_month(customers, lines)
    events = [parse_event(json.loads(line)) for line in lines.getvalue().splitlines()]
    end = START + timedelta(days=31)
    for number in range(1, customers + 1, 4):
        message = {
            "id": f"m-{number}",
            "channel": "email",
            "template": "browse_abandonment",
            "scenario": "browse-abandonment",
            "step": "1",
        }
        events.append(
            Event(
                id=f"message.sent:m-{number}",
                type="message.sent",
                at=end,
                profile=ProfileUpdate(id=f"c-{number}"),
                data={"message": message},
                source="email",
            )
        )
    return events


def measure(directory: Path, events: list[Event]) -> tuple[float, float]:
    """Seconds to store `events`, and seconds to act on them all, in one project's store."""
    create_project(directory)
    project, plugins = open_project(directory / "boomerang.yaml")
    store = Store(project.config.database)
    store.address_fields = address_fields(project.registry.channel_kinds)
    clock = VirtualClock(START + timedelta(days=31))
    try:
        engine = Engine(store, clock, plugins, project)
        started = time.perf_counter()
        for first in range(0, len(events), BATCH):
            store.ingest(events[first : first + BATCH], clock.now())
        stored = time.perf_counter() - started
        started = time.perf_counter()
        handled = 0
        while count := engine.handle_pending_events(BATCH):
            handled += count
        acted = time.perf_counter() - started
        assert handled == len(events), f"{handled} events acted on of {len(events)}"
    finally:
        store.close()
    return stored, acted


def run() -> list[Figure]:
    events = mixed_events(CUSTOMERS)
    with tempfile.TemporaryDirectory(prefix="bench-engine-") as directory:
        stored, acted = measure(Path(directory) / "project", events)
    count = len(events)
    print(
        f"{count:,} events: stored in {stored:.2f} s ({stored / count * 1e6:.0f} µs each),"
        f" acted on in {acted:.2f} s ({acted / count * 1e6:.0f} µs each)"
    )
    return [
        Figure(
            "engine",
            round(count / acted),
            "events/s",
            round(count / stored),
            GOAL,
            acted <= stored,
            f"{count:,} mixed events (a shop's month and message.sent receipts);"
            " baseline: storing them",
        )
    ]
