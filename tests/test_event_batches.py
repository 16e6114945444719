"""Acting on stored events in batches: a batch does exactly what the same events do one at a time.

`handle_pending_events` reads a batch's customers and journeys once and skips the events no
scenario acts on; these tests hold it to the one-event-at-a-time outcome through the
reference scenarios of `boomerang init`.
"""

from __future__ import annotations

from pathlib import Path

from boomerang.clock import VirtualClock
from boomerang.engine import Engine
from boomerang.model import Event
from boomerang.plugin_manager import address_fields
from boomerang.project import open_project
from boomerang.store import Store
from conftest import incoming, t

NOW = t("2026-03-10 12:00")


def shop(number: int, customer: str, type_: str, minute: int, **data: object) -> Event:
    fields = {"id": customer, "email": f"{customer}@example.com"}
    return incoming(f"e{number}", type_, f"2026-03-10 10:{minute:02d}", fields, data)


def events() -> list[Event]:
    """Several customers' visits interleaved: entries, exits, goals, restarts, an awaited
    delivery, and events no scenario acts on."""
    product = {"sku": "B-1", "name": "Trek FX 2", "price": 790, "category": "bicycles"}
    cart = {"total": 790, "currency": "EUR", "items": [product], "url": "https://shop.example/cart"}
    order = {"id": "o-1", "total": 790, "currency": "EUR", "items": [product]}
    return [
        shop(1, "ann", "product.viewed", 0, product=product),
        shop(2, "bob", "product.viewed", 1, product=product),
        shop(3, "ann", "cart.updated", 2, cart=cart),
        shop(4, "ann", "page.visited", 3, url="/help"),
        shop(5, "bob", "product.viewed", 4, product=product),
        shop(6, "ann", "cart.updated", 5, cart=cart),
        shop(7, "cid", "order.placed", 6, order=order),
        shop(8, "ann", "checkout.started", 7, cart=cart),
        shop(9, "ann", "order.placed", 8, order=order),
        shop(10, "cid", "order.shipped", 9, order=order),
        shop(11, "bob", "cart.updated", 10, cart={**cart, "items": []}),
        shop(12, "cid", "order.delivered", 11, order=order),
        shop(13, "ann", "order.placed", 12, order={**order, "id": "o-2"}),
    ]


def outcome(
    directory: Path, database: Path | str, batches: list[list[Event]], waiting: str | None = None
) -> tuple:
    """The journal and journeys after storing and acting on `batches`, each batch stored whole
    and then acted on in one call; `waiting` makes every active journey wait for that type
    after the first batch, as one begun under an earlier version of its scenario may."""
    project, plugins = open_project(directory / "boomerang.yaml")
    store = Store(database)
    store.address_fields = address_fields(project.registry.channel_kinds)
    try:
        engine = Engine(store, VirtualClock(NOW), plugins, project)
        for number, batch in enumerate(batches):
            store.ingest(batch, NOW)
            assert engine.handle_pending_events(1000) == len(batch)
            if waiting and number == 0:
                store.db.execute("UPDATE journeys SET waiting_for = ? WHERE status = 'active'", [waiting])
        journal = [
            (entry.kind, entry.customer_id, entry.scenario, entry.step, entry.reason, entry.value)
            for entry in store.journal()
        ]
        journeys = store.db.execute(
            "SELECT id, status, cursor, waiting_for, version, context, ended_at FROM journeys ORDER BY id"
        ).fetchall()
        jobs = store.db.execute(
            "SELECT kind, due_at, journey_id, version, key FROM jobs ORDER BY id"
        ).fetchall()
        assert store.db.execute("SELECT count(*) FROM events WHERE handled = 0").fetchone()[0] == 0
    finally:
        store.close()
    return journal, journeys, jobs


def test_a_batch_acts_as_the_same_events_one_at_a_time(
    project: Path, database: Path | str, other_database: Path | str
) -> None:
    one_by_one = outcome(project, database, [[event] for event in events()])
    in_one_batch = outcome(project, other_database, [events()])
    journal = one_by_one[0]
    assert {kind for kind, *_ in journal} >= {"enter", "exit", "goal"}  # the events did work
    assert any("restarted" in reason for _, _, _, _, reason, _ in journal)
    assert in_one_batch == one_by_one


def test_an_event_a_journey_still_waits_for_is_acted_on_though_no_scenario_names_it(
    project: Path, database: Path | str, other_database: Path | str
) -> None:
    first = events()[:3]
    rest = [shop(20, "ann", "legacy.answered", 30), shop(21, "bob", "page.visited", 31)]
    legacy = "legacy.answered"
    one_by_one = outcome(project, database, [first, *[[event] for event in rest]], waiting=legacy)
    in_one_batch = outcome(project, other_database, [first, rest], waiting=legacy)
    assert in_one_batch == one_by_one
    # ann's journeys got what they waited for; bob's still wait, his page visit was not it
    answered = [row for row in in_one_batch[1] if '"event": "legacy.answered"' in row[5]]
    assert answered and all(row[3] is None for row in answered)
    assert [row for row in in_one_batch[1] if row[3] == "legacy.answered"]
