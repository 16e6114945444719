"""Sends in batches: the scheduler hands every due send job over at once, the contact plan is
decided for the batch against one read of each customer's history, and one message's trouble
(its template, its provider) stays its own."""

from __future__ import annotations

import asyncio
from pathlib import Path

from boomerang.clock import VirtualClock
from boomerang.engine import Engine
from boomerang.ingest import Ingestor
from boomerang.kinds import Channel
from boomerang.model import Customer, Delivery, DeliveryStatus, Event, Job, JournalEntry, Message
from boomerang.project import open_project
from boomerang.scheduler import Scheduler
from conftest import incoming, project_store, t

START = "2026-03-02 10:00"  # 13:00 in Moscow, the plan's timezone: no quiet hours


class Shop:
    """The engine and a batching scheduler on a virtual clock, over the `init` project with the
    scenarios and templates a test writes; it records the size of every batch of sends."""

    def __init__(self, project: Path, scenarios: dict[str, str], templates: dict[str, str], plan: str = ""):
        for reference in (project / "scenarios").glob("*.yaml"):
            reference.unlink()
        for name, body in scenarios.items():
            (project / "scenarios" / f"{name}.yaml").write_text(body, encoding="utf-8")
        for name, body in templates.items():
            (project / "templates" / name).mkdir()
            (project / "templates" / name / "email.en.html").write_text(
                f"---\nsubject: {name}\n---\n{body}\n", encoding="utf-8"
            )
        config_path = project / "boomerang.yaml"
        config_path.write_text(config_path.read_text(encoding="utf-8") + plan, encoding="utf-8")
        self.project, plugins = open_project(config_path)  # channels write to outbox/
        self.clock = VirtualClock(t(START))
        self.store = project_store(project)
        self.engine = Engine(self.store, self.clock, plugins, self.project)
        self.batches: list[int] = []

        async def send(jobs: list[Job]) -> None:
            self.batches.append(len(jobs))
            await self.engine.batches["send"](jobs)

        self.scheduler = Scheduler(self.store, self.clock, self.engine.run_job, batches={"send": send})

        async def nothing(_: list[Event]) -> None:
            return None

        self.ingest = Ingestor(self.store, self.clock, nothing)

    async def events(self, *items: Event) -> None:
        """Store and act on events, then run what they made due now."""
        await self.ingest(list(items), "test")
        while await self.store.run(self.engine.handle_pending_events):
            pass
        await self.scheduler.run_due()

    def journal(self, kind: str) -> list[JournalEntry]:
        return [entry for entry in self.store.journal() if entry.kind == kind]

    def close(self) -> None:
        self.store.close()


def promo(name: str) -> str:
    return f"scenario: {name}\ncategory: promo\ntrigger: {{event: cart.updated}}\nsteps:\n  - send: {name}\n"


def cart(event_id: str, who: str, name: str = "Anna") -> Event:
    return incoming(event_id, "cart.updated", START, id=who, email=f"{who}@example.com", name=name)


async def test_two_messages_of_one_customer_in_one_batch_respect_a_cap(project: Path) -> None:
    cap = "  caps:\n    - {categories: [promo], max: 1, per: 1d}\n"
    shop = Shop(
        project, {"first": promo("first"), "second": promo("second")}, {"first": "1", "second": "2"}, cap
    )
    try:
        await shop.events(cart("e-1", "c-1"))
        assert shop.batches == [2]
        assert len(shop.journal("send")) == 1
        [held] = shop.journal("defer")
        assert "cap 1 per 1d (promo) reached: waits until 2026-03-03 00:00 MSK" in held.reason
        assert len(list((project / "outbox").glob("*-email-*.eml"))) == 1
    finally:
        shop.close()


async def test_a_batch_writes_its_timeline_in_the_order_its_messages_were_planned(project: Path) -> None:
    # One send at a time writes send, defer, send, defer; a batch must not write both defers
    # (decided before any message is handed over) ahead of the sends (written with the answers).
    shop = Shop(
        project,
        {"first": promo("first"), "second": promo("second")},
        {"first": "1", "second": "2"},
        "  min_gap: 4h\n",
    )
    try:
        await shop.events(cart("e-1", "c-1"), cart("e-2", "c-2"))
        assert shop.batches == [4]
        lines = [(e.kind, e.customer_id) for e in shop.store.journal() if e.kind in ("send", "defer")]
        assert lines == [("send", "c-1"), ("defer", "c-1"), ("send", "c-2"), ("defer", "c-2")]
    finally:
        shop.close()


async def test_two_messages_of_one_customer_in_one_batch_keep_the_minimum_gap(project: Path) -> None:
    shop = Shop(
        project,
        {"first": promo("first"), "second": promo("second")},
        {"first": "1", "second": "2"},
        "  min_gap: 4h\n",
    )
    try:
        await shop.events(cart("e-1", "c-1"), cart("e-2", "c-2"))
        assert shop.batches == [4]
        assert sorted(entry.customer_id for entry in shop.journal("send")) == ["c-1", "c-2"]
        held = shop.journal("defer")
        assert sorted(entry.customer_id for entry in held) == ["c-1", "c-2"]
        assert all("min_gap 4h: waits until 2026-03-02 17:00 MSK" in entry.reason for entry in held)
        # the held messages go when the gap is over, each after its own customer's first
        shop.clock.advance_to(t("2026-03-02 14:00"))
        await shop.scheduler.run_due()
        assert len(shop.journal("send")) == 4
    finally:
        shop.close()


async def test_a_template_that_fails_for_one_customer_does_not_stop_the_batch(project: Path) -> None:
    # `Broken` has 6 letters: a division by zero for that customer only
    shop = Shop(project, {"hello": promo("hello")}, {"hello": "{{ 60 // (customer.name | length - 6) }}"})
    try:
        await shop.events(
            cart("e-1", "c-1", "Anna"), cart("e-2", "c-2", "Broken"), cart("e-3", "c-3", "Boris")
        )
        assert shop.batches == [3]
        assert sorted(entry.customer_id for entry in shop.journal("send")) == ["c-1", "c-3"]
        [dropped] = shop.journal("drop")
        assert dropped.customer_id == "c-2" and dropped.reason.startswith("email: cannot render: ")
        assert len(list((project / "outbox").glob("*-email-*.eml"))) == 2
    finally:
        shop.close()


class Provider(Channel):
    """A provider stand-in over the email channel's addresses: it fails with an exception for one
    address, and holds another's message until the rest of the batch has gone."""

    name = "email"

    def __init__(self, channel: Channel, broken: str, slow: str, others: int):
        self.channel = channel
        self.broken = broken
        self.slow = slow
        self.others = others
        self.sent: list[str] = []

    def address(self, customer: Customer) -> str | None:
        return self.channel.address(customer)

    async def send(self, message: Message) -> Delivery:
        if message.to == self.broken:
            raise ConnectionResetError("the provider hung up")
        if message.to == self.slow:
            # sent one after another, the others would still wait behind this one: a timeout
            async with asyncio.timeout(10):
                while len(self.sent) < self.others:
                    await asyncio.sleep(0.01)
        self.sent.append(message.to)
        return Delivery(DeliveryStatus.SENT, provider_id=message.id)


async def test_a_provider_that_raises_or_is_slow_for_one_message_leaves_the_others_alone(
    project: Path,
) -> None:
    shop = Shop(project, {"hello": promo("hello")}, {"hello": "Hello {{ customer.name }}"})
    provider = Provider(shop.project.registry.channels["email"], "c-1@example.com", "c-2@example.com", 2)
    shop.project.registry.channels["email"] = provider
    try:
        await shop.events(*(cart(f"e-{n}", f"c-{n}") for n in range(1, 5)))
        assert shop.batches == [4]
        assert provider.sent == ["c-3@example.com", "c-4@example.com", "c-2@example.com"]
        assert sorted(entry.customer_id for entry in shop.journal("send")) == ["c-2", "c-3", "c-4"]
        [retry] = shop.journal("defer")
        assert retry.customer_id == "c-1"
        assert "email: retry in 30s: ConnectionResetError: the provider hung up" in retry.reason
        statuses = [row[0] for row in shop.store.db.execute("SELECT status FROM messages")]
        assert sorted(statuses) == ["pending", "sent", "sent", "sent"]
    finally:
        shop.close()
