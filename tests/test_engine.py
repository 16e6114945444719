"""Journey semantics, through `simulate` on the virtual clock: exact timelines of what the engine did."""

from __future__ import annotations

import itertools
import logging
import textwrap
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from boomerang.clock import VirtualClock
from boomerang.config import load_config
from boomerang.engine import Engine
from boomerang.ingest import Ingestor
from boomerang.model import Delivery, DeliveryStatus, Event, Job, Message
from boomerang.plugin_manager import load_plugins
from boomerang.project import assemble
from boomerang.retry import RETRY
from boomerang.scheduler import Scheduler
from boomerang.simulation import Rehearsal, Timeline, simulate
from boomerang.store import Store
from conftest import incoming, t

HELLO = "---\nsubject: Hello {{ customer.name }}\n---\n<p>Hello {{ customer.name }}</p>\n"

CRM_PLUGIN = """\
from boomerang import hookimpl
from boomerang.kinds import Action


async def note(customer_id, text):
    raise RuntimeError("a simulation must not run actions")


@hookimpl
def register_actions(config):
    return [Action("crm.note", note, description="Write a note on the customer")]
"""


def setup(
    project: Path,
    scenarios: dict[str, str],
    templates: dict[str, str] | None = None,
    extra_config: str = "",
) -> Path:
    """Point the `init` project at our own scenarios and templates; returns the config path."""
    config = project / "boomerang.yaml"
    text = config.read_text(encoding="utf-8")
    assert "scenarios: ./scenarios" in text and "templates: ./templates" in text
    text = text.replace("scenarios: ./scenarios", "scenarios: ./mine")
    config.write_text(text.replace("templates: ./templates", "templates: ./mytemplates") + extra_config)
    (project / "mine").mkdir()
    for name, body in scenarios.items():
        (project / "mine" / f"{name}.yaml").write_text(textwrap.dedent(body), encoding="utf-8")
    for name, body in (templates or {"hello": HELLO}).items():
        (project / "mytemplates" / name).mkdir(parents=True)
        (project / "mytemplates" / name / "email.en.html").write_text(body, encoding="utf-8")
    return config


def shop_event(
    event_id: str, type_: str, at: str, customer: str = "c1", *, email: bool = True, profile=None, **data: Any
) -> Event:
    """An `incoming()` event of one customer; by default with an email address `<id>@example.com`."""
    fields = {"id": customer, **({"email": f"{customer}@example.com"} if email else {}), **(profile or {})}
    return incoming(event_id, type_, at, fields, data)


async def timeline(config: Path, events: list[Event], start=None, until=None) -> list[tuple]:
    result = await simulate(config, events, start, until)
    return rows(result)


def rows(result: Timeline) -> list[tuple]:
    return [(e.at, e.kind, e.customer_id, e.step, e.template) for e in result.entries]


WAIT_THEN_SEND = """\
scenario: reminder
trigger: {event: cart.updated}
steps:
  - wait: 20m
  - send: hello
"""


async def test_wait_then_send_through_the_rehearsal_channel(project: Path) -> None:
    config = setup(project, {"reminder": WAIT_THEN_SEND})
    result = await simulate(
        config, [shop_event("e1", "cart.updated", "2026-03-02 10:00", profile={"name": "Ann"})]
    )
    assert rows(result) == [
        (t("2026-03-02 10:00"), "enter", "c1", None, None),
        (t("2026-03-02 10:20"), "exit", "c1", None, None),
        (t("2026-03-02 10:20"), "send", "c1", "1", "hello"),
    ]
    send = result.entries[-1]
    assert (send.channel, send.scenario, send.reason) == (
        "email",
        "reminder",
        "email: the only channel open",
    )
    assert result.entries[0].reason == "entered on cart.updated"
    assert result.entries[1].reason == "reached the last step"
    # Rehearsed, not sent: the project's outbox stays empty.
    assert not list((project / "outbox").glob("**/*"))


async def test_a_customer_keeps_browsing_so_until_idle_postpones(project: Path) -> None:
    config = setup(
        project,
        {
            "idle": """\
            scenario: idle
            trigger: {event: cart.updated}
            steps:
              - wait: 20m
                until_idle: 20m
              - send: hello
            """
        },
    )
    browsing = [
        shop_event("e1", "cart.updated", "2026-03-02 10:00"),
        shop_event("v1", "product.viewed", "2026-03-02 10:15", product={"sku": "a"}),
        shop_event("v2", "product.viewed", "2026-03-02 10:30", product={"sku": "b"}),
        # Another customer's browsing does not hold c1 back.
        shop_event("x1", "product.viewed", "2026-03-02 10:45", "c2", product={"sku": "a"}),
    ]
    assert await timeline(config, browsing) == [
        (t("2026-03-02 10:00"), "enter", "c1", None, None),
        (t("2026-03-02 10:50"), "exit", "c1", None, None),
        (t("2026-03-02 10:50"), "send", "c1", "1", "hello"),
    ]
    assert await timeline(config, browsing[:1]) == [
        (t("2026-03-02 10:00"), "enter", "c1", None, None),
        (t("2026-03-02 10:20"), "exit", "c1", None, None),
        (t("2026-03-02 10:20"), "send", "c1", "1", "hello"),
    ]


RESTART = """\
scenario: debounce
trigger: {event: cart.updated}
restart: {restart}
steps:
  - wait: 20m
  - send: total
"""
TOTAL = '---\nsubject: "Your cart: {{ cart.total }}"\n---\n<p>Total {{ cart.total }}</p>\n'


@pytest.mark.parametrize("restart", [True, False])
async def test_restart_debounces_the_wait(project: Path, restart: bool) -> None:
    config = setup(
        project, {"debounce": RESTART.replace("{restart}", str(restart).lower())}, {"total": TOTAL}
    )
    events = [
        shop_event("e1", "cart.updated", "2026-03-02 10:00", cart={"total": 10}),
        shop_event("e2", "cart.updated", "2026-03-02 10:10", cart={"total": 99}),
    ]
    result = await simulate(config, events)
    if restart:
        assert rows(result) == [
            (t("2026-03-02 10:00"), "enter", "c1", None, None),
            (t("2026-03-02 10:10"), "enter", "c1", None, None),
            (t("2026-03-02 10:30"), "exit", "c1", None, None),
            (t("2026-03-02 10:30"), "send", "c1", "1", "total"),
        ]
        assert result.entries[1].reason == "restarted by cart.updated: waiting again"
        assert result.entries[1].journey_id == result.entries[0].journey_id
    else:
        assert rows(result) == [
            (t("2026-03-02 10:00"), "enter", "c1", None, None),
            (t("2026-03-02 10:20"), "exit", "c1", None, None),
            (t("2026-03-02 10:20"), "send", "c1", "1", "total"),
        ]


class Rig:
    """The engine, scheduler and rehearsal channels of `simulate`, driven step by step by a test;
    with `dry_run=False` the engine renders and runs actions as the daemon's does."""

    def __init__(self, config_path: Path, store_path: Path, start: datetime, dry_run: bool = True):
        config = load_config(config_path)
        self.plugins = load_plugins(config.plugin_dirs)
        project, problems = assemble(config, self.plugins)
        assert project is not None and [p for p in problems if p.severity == "error"] == []
        self.channels = {name: Rehearsal(channel) for name, channel in project.registry.channels.items()}
        project.registry.channels = dict(self.channels)
        self.clock = VirtualClock(start)
        self.store = Store(store_path)
        self.engine = Engine(self.store, self.clock, self.plugins, project, dry_run=dry_run)
        self.scheduler = Scheduler(self.store, self.clock, self.engine.run_job, concurrency=1)

        async def nothing(_: list[Event]) -> None:
            return None

        self.ingest = Ingestor(self.store, self.clock, nothing)

    async def send_event(self, item: Event) -> None:
        self.clock.advance_to(item.at)
        await self.scheduler.run_due()
        await self.ingest([item], "test")
        while await self.store.run(self.engine.handle_pending_events):
            pass

    async def run_until(self, moment: datetime) -> None:
        while True:
            due = await self.store.run(self.store.next_due_at)
            if due is None or due > moment.timestamp():
                break
            self.clock.advance_to(datetime.fromtimestamp(due, UTC))
            await self.scheduler.run_due()
        self.clock.advance_to(moment)


async def test_a_restarted_journey_renders_the_latest_event(project: Path, database: Path | str) -> None:
    config = setup(project, {"debounce": RESTART.replace("{restart}", "true")}, {"total": TOTAL})
    rig = Rig(config, database, t("2026-03-02 10:00"))
    try:
        await rig.send_event(shop_event("e1", "cart.updated", "2026-03-02 10:00", cart={"total": 10}))
        await rig.send_event(shop_event("e2", "cart.updated", "2026-03-02 10:10", cart={"total": 99}))
        await rig.run_until(t("2026-03-02 10:25"))
        assert rig.channels["email"].sent == []  # the first wait was pushed back
        await rig.run_until(t("2026-03-02 10:35"))
        [message] = rig.channels["email"].sent
        assert (message.to, message.template, message.step) == ("c1@example.com", "total", "1")
        assert (message.subject, message.body) == ("Your cart: 99", "Total 99")
        await rig.run_until(t("2026-03-05 00:00"))
        assert len(rig.channels["email"].sent) == 1
    finally:
        rig.store.close()


class SaysRetryLater(Rehearsal):
    """A provider that always answers "try again later"."""

    async def send(self, message: Message) -> Delivery:
        self.sent.append(message)
        return Delivery(DeliveryStatus.RETRY, detail="busy")


TIER = """\
scenario: tier
trigger: {event: loyalty.tier_changed}
steps:
  - send: tier_news
"""


async def test_live_a_name_the_event_lacks_prints_as_nothing_with_a_warning(
    project: Path, database: Path | str, caplog: pytest.LogCaptureFixture
) -> None:
    # A custom type's data keys cannot be known to `check`: this event has no `order`. The
    # daemon sends the message all the same (simulate and preview would report it).
    template = "---\nsubject: 'Tier {{ tier.level }}'\n---\n<p>Order {{ order.id }}.</p>\n"
    config = setup(project, {"tier": TIER}, {"tier_news": template})
    rig = Rig(config, database, t("2026-03-02 10:00"), dry_run=False)
    try:
        with caplog.at_level(logging.WARNING, logger="boomerang"):
            await rig.send_event(
                shop_event("e1", "loyalty.tier_changed", "2026-03-02 10:00", tier={"level": 2})
            )
            await rig.run_until(t("2026-03-02 10:05"))
        [message] = rig.channels["email"].sent
        assert message.subject == "Tier 2" and message.html.startswith("<p>Order .</p>")
        warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
        assert "a template printed 'order', which is not defined for its message" in warnings
    finally:
        rig.store.close()


async def test_a_send_the_provider_keeps_deferring_follows_the_retry_policy(
    project: Path, database: Path | str
) -> None:
    """30 s, then twice as long each time; given up after RETRY.attempts sends in all."""
    config = setup(project, {"reminder": WAIT_THEN_SEND})
    rig = Rig(config, database, t("2026-03-02 10:00"))
    busy = rig.engine.project.registry.channels["email"] = SaysRetryLater(rig.channels["email"].channel)
    try:
        await rig.send_event(shop_event("e1", "cart.updated", "2026-03-02 10:00"))
        await rig.run_until(t("2026-03-02 12:00"))
        journal = await rig.store.run(rig.store.journal, "c1")
    finally:
        rig.store.close()
    sends = [t("2026-03-02 10:20") + timedelta(seconds=s) for s in (0, 30, 90, 210, 450, 930)]
    assert [message.id for message in busy.sent] == [busy.sent[0].id] * RETRY.attempts
    assert [(e.at, e.kind, e.reason) for e in journal if e.kind in ("defer", "drop")] == [
        *[
            (at, "defer", f"email: retry in {wait}s: busy")
            for at, wait in zip(sends[:-1], (30, 60, 120, 240, 480), strict=True)
        ],
        (sends[-1], "drop", "email: retry: busy"),
    ]


REENTRY = """\
scenario: again
trigger: {event: cart.updated}
reentry: {reentry}
steps:
  - wait: 1h
  - send: hello
"""


@pytest.mark.parametrize(
    ("reentry", "entered"),
    [
        ("once", ["2026-03-02 10:00"]),
        ("7d", ["2026-03-02 10:00", "2026-03-10 10:00"]),
        ("always", ["2026-03-02 10:00", "2026-03-05 10:00", "2026-03-10 10:00"]),
    ],
)
async def test_reentry(project: Path, reentry: str, entered: list[str]) -> None:
    config = setup(project, {"again": REENTRY.replace("{reentry}", reentry)})
    events = [
        shop_event("e1", "cart.updated", "2026-03-02 10:00"),
        shop_event("e2", "cart.updated", "2026-03-02 10:30"),  # still in the journey: never a second one
        shop_event("e3", "cart.updated", "2026-03-05 10:00"),
        shop_event("e4", "cart.updated", "2026-03-10 10:00"),
    ]
    result = await timeline(config, events)
    assert [at for at, kind, *_ in result if kind == "enter"] == [t(text) for text in entered]
    assert [at for at, kind, *_ in result if kind == "send"] == [
        t(text) + timedelta(hours=1) for text in entered
    ]
    # reentry is per customer: another customer enters regardless.
    events.insert(2, shop_event("o1", "cart.updated", "2026-03-02 10:40", "c2"))
    other = await timeline(config, events)
    assert [(at, who) for at, kind, who, *_ in other if kind == "enter" and who == "c2"] == [
        (t("2026-03-02 10:40"), "c2")
    ]


async def test_exit_on_cancels_the_pending_wait(project: Path) -> None:
    config = setup(
        project,
        {
            "cart": """\
            scenario: cart
            trigger: {event: cart.updated}
            exit_on: [order.placed]
            steps:
              - wait: 1d
              - send: hello
              - wait: 1d
              - send: hello
            """
        },
    )
    result = await simulate(
        config,
        [
            shop_event("e1", "cart.updated", "2026-03-02 10:00"),
            shop_event("e2", "cart.updated", "2026-03-02 10:00", "c2"),
            shop_event("o1", "order.placed", "2026-03-03 12:00", order={"total": 50}),
        ],
        until=t("2026-03-10 00:00"),
    )
    assert rows(result) == [
        (t("2026-03-02 10:00"), "enter", "c1", None, None),
        (t("2026-03-02 10:00"), "enter", "c2", None, None),
        (t("2026-03-03 10:00"), "send", "c1", "1", "hello"),
        (t("2026-03-03 10:00"), "send", "c2", "1", "hello"),
        (t("2026-03-03 12:00"), "exit", "c1", None, None),
        (t("2026-03-04 10:00"), "exit", "c2", None, None),
        (t("2026-03-04 10:00"), "send", "c2", "3", "hello"),
    ]
    assert result.entries[4].reason == "order.placed arrived"


GOAL = """\
scenario: cart
trigger: {event: cart.updated}
goal: order.placed
steps:
  - wait: 1h
  - send: hello
"""


@pytest.mark.parametrize(
    ("ordered", "counted"),
    [
        ("2026-03-02 10:30", True),  # while the journey runs
        ("2026-03-05 12:00", True),  # after it ended, within the default 7 days
        ("2026-03-09 10:59", True),  # one minute before the window closes
        ("2026-03-09 11:01", False),  # one minute too late
    ],
)
async def test_goal_is_recorded_with_the_order_value_within_the_window(
    project: Path, ordered: str, counted: bool
) -> None:
    config = setup(project, {"cart": GOAL})
    events = [
        shop_event("e1", "cart.updated", "2026-03-02 10:00"),
        shop_event("o1", "order.placed", ordered, order={"total": 120.5}),
        shop_event(
            "o2", "order.placed", "2026-03-09 11:00" if counted else "2026-03-20 10:00", order={"total": 9}
        ),
    ]
    result = await simulate(config, events)
    goals = [(e.at, e.customer_id, e.scenario, e.value, e.reason) for e in result.entries if e.kind == "goal"]
    if counted:
        # Counted once, for the first order only.
        assert goals == [(t(ordered), "c1", "cart", 120.5, "order.placed (treated)")]
    else:
        assert goals == []
    # The goal does not stop the journey: the reminder still goes at 11:00.
    assert [(e.at, e.kind) for e in result.entries if e.kind in ("send", "exit")] == [
        (t("2026-03-02 11:00"), "exit"),
        (t("2026-03-02 11:00"), "send"),
    ]


async def test_a_goal_window_can_be_set(project: Path) -> None:
    config = setup(
        project, {"cart": GOAL.replace("goal: order.placed", "goal: {event: order.paid, within: 1d}")}
    )
    events = [
        shop_event("e1", "cart.updated", "2026-03-02 10:00"),
        shop_event("e2", "cart.updated", "2026-03-02 10:00", "c2"),
        shop_event("p1", "order.paid", "2026-03-03 10:59", order={"total": 30}),
        shop_event("p2", "order.paid", "2026-03-03 11:01", "c2", order={"total": 40}),
    ]
    result = await simulate(config, events)
    assert [(e.at, e.customer_id, e.value) for e in result.entries if e.kind == "goal"] == [
        (t("2026-03-03 10:59"), "c1", 30)
    ]


HOLDOUT = """\
scenario: cart
trigger: {event: cart.updated}
goal: order.placed
holdout: 50%
steps:
  - send: hello
"""


def crowd(count: int, day: str = "2026-03-02", prefix: str = "") -> list[Event]:
    carts = [
        shop_event(f"{prefix}e{i}", "cart.updated", f"{day} 10:{i % 60:02d}", f"c{i:02d}")
        for i in range(count)
    ]
    orders = [
        shop_event(f"{prefix}o{i}", "order.placed", f"{day} 12:{i % 60:02d}", f"c{i:02d}", order={"total": i})
        for i in range(count)
    ]
    return carts + orders


async def test_holdout_is_a_stable_share_that_is_sent_nothing(project: Path) -> None:
    config = setup(project, {"cart": HOLDOUT})
    first = await simulate(config, crowd(40))
    held = {e.customer_id for e in first.entries if e.kind == "holdout"}
    assert 12 <= len(held) <= 28
    sent = {e.customer_id for e in first.entries if e.kind == "send"}
    assert sent == {f"c{i:02d}" for i in range(40)} - held
    for entry in first.entries:
        if entry.customer_id in held and entry.kind == "drop":
            assert (entry.step, entry.template, entry.reason) == (
                "0",
                "hello",
                "control group (holdout): not sent",
            )
        if entry.kind == "holdout":
            assert entry.reason == "control group (50%): sent nothing"
    assert sorted(e.customer_id for e in first.entries if e.kind == "drop") == sorted(held)
    goals = {e.customer_id: (e.reason, e.value) for e in first.entries if e.kind == "goal"}
    assert goals == {
        f"c{i:02d}": (f"order.placed ({'holdout' if f'c{i:02d}' in held else 'treated'})", i)
        for i in range(40)
    }
    # The same customers are in the control group another time, with other events.
    second = await simulate(config, crowd(40, "2026-04-10", "again-"))
    assert {e.customer_id for e in second.entries if e.kind == "holdout"} == held


SPLIT = """\
scenario: ab
trigger: {event: cart.updated}
steps:
  - split:
      a: {weight: 70%, steps: [{send: hello}]}
      b:
        weight: 30%
        steps:
          - wait: 1h
          - send: other
  - send: last
"""


async def test_split_is_stable_per_customer_and_follows_the_weights(project: Path) -> None:
    config = setup(project, {"ab": SPLIT}, {"hello": HELLO, "other": HELLO, "last": HELLO})
    carts = [shop_event(f"e{i}", "cart.updated", f"2026-03-02 10:{i:02d}", f"c{i:02d}") for i in range(60)]
    result = await simulate(config, carts)
    sends = [(e.customer_id, e.step, e.template, e.variant) for e in result.entries if e.kind == "send"]
    variant = {who: var for who, step, _, var in sends if step == "1"}
    assert len(variant) == 60
    in_a = sorted(who for who, var in variant.items() if var == "a")
    assert 32 <= len(in_a) <= 52
    for who, step, template, var in sends:
        if step != "1":
            assert (step, template) == (("0.a.0", "hello") if var == "a" else ("0.b.1", "other"))
            assert variant[who] == var
    assert len(sends) == 120
    # B waits an hour; A goes at once, and both then reach the step after the split.
    for i, cart in enumerate(carts):
        who = f"c{i:02d}"
        delay = timedelta(0) if variant[who] == "a" else timedelta(hours=1)
        times = [e.at for e in result.entries if e.kind == "send" and e.customer_id == who]
        assert times == [cart.at + delay] * 2
    later = [shop_event(f"x{i}", "cart.updated", f"2026-05-01 08:{i:02d}", f"c{i:02d}") for i in range(60)]
    again = await simulate(config, later)
    assert {e.customer_id: e.variant for e in again.entries if e.kind == "send" and e.step == "1"} == variant


WAIT_FOR = """\
scenario: delivery
trigger: {event: order.shipped}
steps:
  - wait: {for: 3d, until: order.delivered}
  - if: waited.event == 'order.delivered'
    then:
      - send: review
    else:
      - send: where
"""


@pytest.mark.parametrize("delivered", [True, False])
async def test_wait_for_an_event_then_branch_on_what_came(project: Path, delivered: bool) -> None:
    config = setup(project, {"delivery": WAIT_FOR}, {"review": HELLO, "where": HELLO})
    events = [shop_event("s1", "order.shipped", "2026-03-02 10:00")]
    if delivered:
        events.append(shop_event("d1", "order.delivered", "2026-03-03 15:00"))
    result = await timeline(config, events, until=t("2026-03-10 00:00"))
    moment, path, template = (
        ("2026-03-03 15:00", "1.then.0", "review") if delivered else ("2026-03-05 10:00", "1.else.0", "where")
    )
    assert result == [
        (t("2026-03-02 10:00"), "enter", "c1", None, None),
        (t(moment), "exit", "c1", None, None),
        (t(moment), "send", "c1", path, template),
    ]


async def test_the_timeout_of_an_answered_wait_for_does_not_cut_a_later_wait(project: Path) -> None:
    scenario = WAIT_FOR.replace(
        "      - send: review\n", "      - send: review\n      - wait: 5d\n      - send: review\n"
    )
    config = setup(project, {"delivery": scenario}, {"review": HELLO, "where": HELLO})
    events = [
        shop_event("s1", "order.shipped", "2026-03-02 10:00"),
        shop_event("d1", "order.delivered", "2026-03-03 15:00"),
    ]
    result = await timeline(config, events, until=t("2026-03-20 00:00"))
    assert [(at, step) for at, kind, _, step, _ in result if kind == "send"] == [
        (t("2026-03-03 15:00"), "1.then.0"),
        (t("2026-03-08 15:00"), "1.then.2"),
    ]


async def test_set_changes_attributes_that_a_later_if_reads(project: Path) -> None:
    config = setup(
        project,
        {
            "tiers": """\
            scenario: tiers
            trigger: {event: customer.created}
            steps:
              - if: customer.attributes.tier == 'gold'
                then: [{send: gold}]
              - set: {tier: gold, greeting: "Hi {{ customer.name }}"}
              - if: customer.attributes.tier == 'gold'
                then: [{send: gold}]
                else: [{send: plain}]
              - wait: 1h
              - if: "customer.attributes.greeting == 'Hi Ann' and customer.attributes.tier == 'gold'"
                then: [{send: plain}]
            """
        },
        {"gold": HELLO, "plain": HELLO},
    )
    result = await timeline(
        config, [shop_event("c", "customer.created", "2026-03-02 10:00", profile={"name": "Ann"})]
    )
    assert result == [
        (t("2026-03-02 10:00"), "enter", "c1", None, None),
        (t("2026-03-02 10:00"), "send", "c1", "2.then.0", "gold"),
        (t("2026-03-02 11:00"), "exit", "c1", None, None),
        (t("2026-03-02 11:00"), "send", "c1", "4.then.0", "plain"),
    ]


async def test_an_action_step_is_recorded_not_run(project: Path) -> None:
    config = setup(
        project,
        {
            "thanks": """\
            scenario: thanks
            trigger: {event: review.submitted}
            steps:
              - action: crm.note
                with: {customer_id: "{{ customer.id }}", text: "Thank {{ customer.name }}"}
              - send: hello
            """
        },
    )
    (project / "plugins" / "crm.py").write_text(CRM_PLUGIN, encoding="utf-8")
    result = await simulate(
        config, [shop_event("r1", "review.submitted", "2026-03-02 10:00", profile={"name": "Ann"})]
    )
    assert rows(result) == [
        (t("2026-03-02 10:00"), "enter", "c1", None, None),
        (t("2026-03-02 10:00"), "exit", "c1", None, None),
        (t("2026-03-02 10:00"), "action", "c1", "0", None),
        (t("2026-03-02 10:00"), "send", "c1", "1", "hello"),
    ]
    assert result.entries[2].reason == "crm.note: simulated, not run"


def profile_event(event_id: str, at: str, customer: str, **fields: Any) -> Event:
    return shop_event(event_id, "customer.updated", at, customer, profile=fields)


async def test_a_schedule_trigger_enters_the_audience_once_per_tick(project: Path) -> None:
    config = setup(
        project,
        {
            "daily": """\
            scenario: daily
            trigger: {schedule: "0 10 * * *", audience: "customer.attributes.plan == 'pro'"}
            steps:
              - send: hello
            """,
            "slow": """\
            scenario: slow
            trigger: {schedule: "0 10 * * *", audience: "customer.attributes.plan == 'pro'"}
            steps:
              - wait: 36h
              - send: hello
            """,
        },
    )
    events = [
        profile_event("p1", "2026-03-02 06:00", "pro1", attributes={"plan": "pro"}),
        profile_event("p2", "2026-03-02 06:01", "free1", attributes={"plan": "free"}),
        profile_event("p3", "2026-03-02 06:02", "pro2", attributes={"plan": "pro"}),
    ]
    result = await simulate(config, events, until=t("2026-03-03 23:00"))
    enters = [(e.at, e.scenario, e.customer_id) for e in result.entries if e.kind == "enter"]
    # 10:00 in Moscow is 07:00 UTC; a journey still running (slow) is not entered again.
    assert enters == [
        (t("2026-03-02 07:00"), "daily", "pro1"),
        (t("2026-03-02 07:00"), "daily", "pro2"),
        (t("2026-03-02 07:00"), "slow", "pro1"),
        (t("2026-03-02 07:00"), "slow", "pro2"),
        (t("2026-03-03 07:00"), "daily", "pro1"),
        (t("2026-03-03 07:00"), "daily", "pro2"),
    ]
    assert all(e.reason == "entered on schedule" for e in result.entries if e.kind == "enter")
    sends = sorted((e.at, e.scenario, e.customer_id) for e in result.entries if e.kind == "send")
    assert sends == [
        (t("2026-03-02 07:00"), "daily", "pro1"),
        (t("2026-03-02 07:00"), "daily", "pro2"),
        (t("2026-03-03 07:00"), "daily", "pro1"),
        (t("2026-03-03 07:00"), "daily", "pro2"),
        (t("2026-03-03 19:00"), "slow", "pro1"),
        (t("2026-03-03 19:00"), "slow", "pro2"),
    ]


async def test_a_date_trigger_enters_before_the_birthday_at_ten_moscow_time(project: Path) -> None:
    config = setup(
        project,
        {
            "birthday": """\
            scenario: birthday
            trigger: {date: customer.birthday, offset: -3d}
            steps:
              - send: hello
            """
        },
    )
    events = [
        profile_event("b1", "2026-03-02 06:00", "ann", birthday="1990-03-07"),
        profile_event("b2", "2026-03-02 06:00", "bob", birthday="1985-03-08"),
        profile_event("b3", "2026-03-02 06:00", "cid", birthday="1985-06-01"),
        profile_event("b4", "2026-03-02 06:00", "dan"),
    ]
    assert await timeline(config, events, until=t("2026-03-08 00:00")) == [
        (t("2026-03-04 07:00"), "enter", "ann", None, None),
        (t("2026-03-04 07:00"), "exit", "ann", None, None),
        (t("2026-03-04 07:00"), "send", "ann", "0", "hello"),
        (t("2026-03-05 07:00"), "enter", "bob", None, None),
        (t("2026-03-05 07:00"), "exit", "bob", None, None),
        (t("2026-03-05 07:00"), "send", "bob", "0", "hello"),
    ]


async def test_a_date_trigger_on_an_attribute_at_a_set_time_and_a_leap_day_birthday(project: Path) -> None:
    config = setup(
        project,
        {
            "anniversary": """\
            scenario: anniversary
            trigger: {date: customer.attributes.anniversary, offset: 1d, at: "09:30"}
            steps:
              - send: hello
            """,
            "birthday": """\
            scenario: birthday
            trigger: {date: customer.birthday}
            steps:
              - send: hello
            """,
        },
    )
    events = [
        profile_event("a1", "2026-02-20 00:00", "ann", attributes={"anniversary": "2020-02-25"}),
        profile_event("l1", "2026-02-20 00:00", "leap", birthday="2000-02-29"),
    ]
    result = await simulate(config, events, until=t("2026-03-03 00:00"))
    # 09:30 in Moscow is 06:30 UTC; in a year without 29 February that birthday is kept on the 28th.
    assert [(e.at, e.scenario, e.customer_id) for e in result.entries if e.kind == "send"] == [
        (t("2026-02-26 06:30"), "anniversary", "ann"),
        (t("2026-02-28 07:00"), "birthday", "leap"),
    ]


async def test_condition_functions_in_expressions(project: Path) -> None:
    config = setup(
        project,
        {
            "conditions": """\
            scenario: conditions
            trigger: {event: promo.redeemed}
            steps:
              - if: days_since(customer.last_order_at) >= 10
                then: [{send: lapsed}]
              - if: in_segment('vip')
                then: [{send: vip}]
              - if: bought_category('bicycles')
                then: [{send: cyclist}]
              - if: viewed_products('1d') | length == 2
                then: [{send: browsed}]
            """
        },
        {name: HELLO for name in ("lapsed", "vip", "cyclist", "browsed")},
        '\nsegments:\n  vip: "customer.orders_count >= 2"\n',
    )
    bike = {"total": 500, "items": [{"sku": "b-1", "category": "bicycles"}]}
    helmet = {"total": 50, "items": [{"sku": "h-1", "category": "helmets"}]}
    events = [
        # ann: two orders (vip), a bicycle, last order 11 days ago, two products viewed in the last day
        shop_event("a1", "order.placed", "2026-02-20 10:00", "ann", order=bike),
        shop_event("a2", "order.placed", "2026-03-01 10:00", "ann", order=helmet),
        shop_event("a3", "product.viewed", "2026-03-09 09:00", "ann", product={"sku": "old"}),
        shop_event("a4", "product.viewed", "2026-03-11 20:00", "ann", product={"sku": "p1"}),
        shop_event("a5", "product.viewed", "2026-03-11 21:00", "ann", product={"sku": "p2"}),
        shop_event("a6", "product.viewed", "2026-03-11 22:00", "ann", product={"sku": "p1"}),
        # bob: one recent helmet order, one product viewed
        shop_event("b1", "order.placed", "2026-03-10 10:00", "bob", order=helmet),
        shop_event("b2", "product.viewed", "2026-03-12 08:00", "bob", product={"sku": "p1"}),
        # cid: nothing at all (days_since of no order is None: the condition is false)
        shop_event("c1", "customer.created", "2026-03-12 08:00", "cid"),
        shop_event("r1", "promo.redeemed", "2026-03-12 10:00", "ann"),
        shop_event("r2", "promo.redeemed", "2026-03-12 10:00", "bob"),
        shop_event("r3", "promo.redeemed", "2026-03-12 10:00", "cid"),
    ]
    result = await timeline(config, events)
    assert [(who, step, template) for _, kind, who, step, template in result if kind == "send"] == [
        ("ann", "0.then.0", "lapsed"),
        ("ann", "1.then.0", "vip"),
        ("ann", "2.then.0", "cyclist"),
        ("ann", "3.then.0", "browsed"),
    ]
    assert [who for _, kind, who, *_ in result if kind == "enter"] == ["ann", "bob", "cid"]


async def test_a_customer_without_an_email_is_dropped(project: Path) -> None:
    config = setup(project, {"reminder": WAIT_THEN_SEND})
    result = await simulate(config, [shop_event("e1", "cart.updated", "2026-03-02 10:00", email=False)])
    assert rows(result) == [
        (t("2026-03-02 10:00"), "enter", "c1", None, None),
        (t("2026-03-02 10:20"), "exit", "c1", None, None),
        (t("2026-03-02 10:20"), "drop", "c1", "1", "hello"),
    ]
    drop = result.entries[-1]
    assert drop.reason == "no reachable channel (passed over email: no address)"
    assert drop.channel is None


async def test_a_template_that_fails_to_render_is_dropped_and_the_rest_goes_on(project: Path) -> None:
    config = setup(
        project,
        {
            "broken": """\
            scenario: broken
            trigger: {event: checkout.started}
            steps:
              - send: bad
              - wait: 1h
              - send: hello
            """
        },
        {
            "hello": HELLO,
            "bad": "---\nsubject: Hi\n---\n<p>{% for x in cart.total %}{{ x }}{% endfor %}</p>\n",
        },
    )
    events = [
        shop_event("k1", "checkout.started", "2026-03-02 10:00", cart={"total": 5}),
        shop_event("k2", "checkout.started", "2026-03-02 10:30", "c2", cart={"total": 7}),
    ]
    result = await simulate(config, events)
    assert rows(result) == [
        (t("2026-03-02 10:00"), "enter", "c1", None, None),
        (t("2026-03-02 10:00"), "drop", "c1", "0", "bad"),
        (t("2026-03-02 10:30"), "enter", "c2", None, None),
        (t("2026-03-02 10:30"), "drop", "c2", "0", "bad"),
        (t("2026-03-02 11:00"), "exit", "c1", None, None),
        (t("2026-03-02 11:00"), "send", "c1", "2", "hello"),
        (t("2026-03-02 11:30"), "exit", "c2", None, None),
        (t("2026-03-02 11:30"), "send", "c2", "2", "hello"),
    ]
    assert result.entries[1].reason == "email: cannot render: 'int' object is not iterable"
    assert result.entries[1].channel == "email"


async def test_an_action_whose_arguments_fail_to_render_does_not_lose_the_journey(project: Path) -> None:
    config = setup(
        project,
        {
            "noted": """\
            scenario: noted
            trigger: {event: checkout.started}
            steps:
              - action: crm.note
                with: {customer_id: "{{ customer.id }}", text: "{% for x in cart.total %}{% endfor %}"}
              - send: hello
            """
        },
    )
    (project / "plugins" / "crm.py").write_text(CRM_PLUGIN, encoding="utf-8")
    result = await timeline(
        config, [shop_event("k1", "checkout.started", "2026-03-02 10:00", cart={"total": 5})]
    )
    assert (t("2026-03-02 10:00"), "enter", "c1", None, None) in result
    assert (t("2026-03-02 10:00"), "send", "c1", "1", "hello") in result


async def test_a_job_whose_handler_raises_is_retried_by_the_same_policy_then_given_up(
    database: Path | str,
) -> None:
    clock = VirtualClock(t("2026-03-02 10:00"))
    store = Store(database)
    runs: list[datetime] = []

    async def broken(job: Job) -> None:
        runs.append(clock.now())
        raise RuntimeError("a bug")

    scheduler = Scheduler(store, clock, broken, concurrency=1)
    try:
        await store.run(store.add_job, "advance", clock.now().timestamp(), 0, {})
        while (due := await store.run(store.next_due_at)) is not None:
            clock.advance_to(datetime.fromtimestamp(due, UTC))
            await scheduler.run_due()
    finally:
        store.close()
    assert [(later - earlier).total_seconds() for earlier, later in itertools.pairwise(runs)] == [
        30,
        60,
        120,
        240,
        480,
    ]
    assert len(runs) == RETRY.attempts


async def test_a_job_of_an_unknown_kind_is_dropped(project: Path, database: Path | str) -> None:
    config = setup(project, {"reminder": WAIT_THEN_SEND})
    rig = Rig(config, database, t("2026-03-02 10:00"))
    try:
        await rig.store.run(rig.store.add_job, "from-a-newer-version", rig.clock.now().timestamp(), 0, {})
        assert await rig.scheduler.run_due() == 1
        assert await rig.store.run(rig.store.next_due_at) is None
    finally:
        rig.store.close()
