"""The contact plan through `simulate` on the virtual clock: reachable channels, caps and gaps,
quiet hours, the choice by expected value, priorities and fallback, with exact timelines.

Multi-channel tests use the drop-in channels of `tests/fakes/plan_channels.py` (sms, push, telegram),
with the built-in plugins of those names disabled, so they run whether or not the real channel
plugins are installed.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import re
import shutil
import textwrap
import zlib
from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from boomerang.cli import cli
from boomerang.clock import VirtualClock
from boomerang.config import load_config
from boomerang.engine import Engine
from boomerang.ingest import Ingestor
from boomerang.model import Event, JournalEntry
from boomerang.plugin_manager import load_plugins
from boomerang.project import assemble
from boomerang.scheduler import Scheduler
from boomerang.simulation import Rehearsal, Timeline, simulate
from boomerang.store import Store
from conftest import incoming, t

PLUGIN = Path(__file__).parent / "fakes" / "plan_channels.py"
SUBSCRIPTION = {"endpoint": "https://push.example/s/1", "keys": {"p256dh": "key", "auth": "auth"}}
TEMPLATE_FILES = {
    "email.en.html": "---\nsubject: {name} for {{{{ customer.name }}}}\n---\n<p>{name}</p>\n",
    "sms.en.txt": "{name}\n",
    "push.en.txt": "---\ntitle: {name}\n---\n{name}\n",
    "telegram.en.html": "{name}\n",
}


@pytest.fixture
def shop(project: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The `init` project with the test channels as a drop-in plugin, the built-in ones disabled."""
    monkeypatch.setenv("BOOMERANG_DISABLED_PLUGINS", "sms,push,telegram,whatsapp")
    shutil.copy(PLUGIN, project / "plugins" / "plan_channels.py")
    return project


def scenario(
    name: str,
    category: str,
    event: str,
    template: str | None = None,
    *,
    channels: str | None = None,
    expires: str | None = None,
    restart: bool = False,
    after: str = "",
) -> str:
    """A one-send scenario: `event` enters, the template goes at once (then `after` steps)."""
    send = f"  - send: {template or name}\n"
    if channels:
        send += f"    channels: {channels}\n"
    if expires:
        send += f"    expires: {expires}\n"
    head = f"scenario: {name}\ncategory: {category}\ntrigger: {{event: {event}}}\n"
    return head + ("restart: true\n" if restart else "") + "steps:\n" + send + after


def configure(
    project: Path,
    scenarios: list[str],
    plan: str = "",
    channels: dict[str, str] | None = None,
    templates: dict[str, tuple[str, ...]] | None = None,
) -> Path:
    """Point the project at our scenarios and templates, add channels and plan settings."""
    config = project / "boomerang.yaml"
    text = config.read_text(encoding="utf-8")
    assert "scenarios: ./scenarios" in text and "templates: ./templates" in text
    assert text.endswith("contact_plan:\n  default_timezone: Europe/Moscow\n")
    email = 'from: "Demo Shop <shop@example.com>"}\n'
    assert email in text
    added = "".join(
        f"  {name}: {settings}\n" for name, settings in (channels or {"sms": "{}", "push": "{}"}).items()
    )
    text = text.replace("scenarios: ./scenarios", "scenarios: ./mine")
    text = text.replace("templates: ./templates", "templates: ./mytemplates").replace(email, email + added)
    config.write_text(text + textwrap.indent(textwrap.dedent(plan), "  "), encoding="utf-8")
    (project / "mine").mkdir()
    for body in scenarios:
        name = re.search(r"^scenario: (\S+)", body, re.M)
        assert name
        (project / "mine" / f"{name.group(1)}.yaml").write_text(body, encoding="utf-8")
    for name in sorted({name for body in scenarios for name in re.findall(r"send: (\S+)", body)}):
        for file in (templates or {}).get(name, tuple(TEMPLATE_FILES)):
            folder = project / "mytemplates" / name
            folder.mkdir(parents=True, exist_ok=True)
            (folder / file).write_text(TEMPLATE_FILES[file].format(name=name), encoding="utf-8")
    return config


def customer(
    cid: str,
    *,
    email: bool = True,
    phone: bool = False,
    push: bool = False,
    telegram: bool = False,
    **fields: Any,
) -> dict[str, Any]:
    """A customer object with the addresses asked for."""
    profile: dict[str, Any] = {"id": cid}
    if email:
        profile["email"] = f"{cid}@example.com"
    if phone:
        profile["phone"] = "+7999" + str(zlib.crc32(cid.encode()) % 10**7).zfill(7)
    if push:
        profile["push_subscriptions"] = [{**SUBSCRIPTION, "endpoint": f"https://push.example/s/{cid}"}]
    if telegram:
        profile["telegram_chat_id"] = f"tg-{cid}"
    return {**profile, **fields}


def plan_rows(result: Timeline | list[JournalEntry]) -> list[tuple]:
    """The contact plan's part of a timeline: sends, deferrals and drops."""
    entries = result.entries if isinstance(result, Timeline) else result
    return [
        (e.at, e.kind, e.customer_id, e.step, e.template, e.channel)
        for e in entries
        if e.kind in ("send", "defer", "drop")
    ]


def reasons(result: Timeline, kind: str | None = None) -> list[str]:
    return [e.reason for e in result.entries if e.kind in ((kind,) if kind else ("send", "defer", "drop"))]


# what the plan says it passed over for a customer with only an email address
EMAIL_ONLY = " (passed over sms: no address; push: no address)"
TRIGGER = scenario("cart", "trigger", "cart.updated")
PROMO = scenario("promo", "promo", "product.viewed")
RECEIPT = scenario("receipt", "transactional", "order.placed")


# reachable channels


async def test_a_customer_without_a_push_subscription_gets_sms(shop: Path) -> None:
    config = configure(
        shop,
        [scenario("cart", "trigger", "cart.updated", channels="[push, sms]")],
        "channels:\n  push: {cost: 0}\n  sms: {cost: 0.05}\n",
    )
    both = customer("ann", email=True, phone=True, push=True)
    no_push = customer("bob", email=True, phone=True)
    result = await simulate(
        config,
        [
            incoming("e1", "cart.updated", "2026-03-02 10:00", both),
            incoming("e2", "cart.updated", "2026-03-02 10:05", no_push),
        ],
    )
    assert plan_rows(result) == [
        (t("2026-03-02 10:00"), "send", "ann", "0", "cart", "push"),
        (t("2026-03-02 10:05"), "send", "bob", "0", "cart", "sms"),
    ]
    assert reasons(result) == [
        "push: best expected value 0.300 (passed over sms: lower expected value 0.250 < 0.300)",
        # email is configured but not a candidate of this step: never considered
        "sms: the only channel open (passed over push: no address)",
    ]


class Rig:
    """`simulate`'s engine, scheduler and rehearsal channels, driven step by step by a test, so
    that it can deliver feedback (unsubscribes, clicks, bounces) between events."""

    def __init__(self, config_path: Path, store_path: Path, start: datetime):
        config = load_config(config_path)
        plugins = load_plugins(config.plugin_dirs)
        project, problems = assemble(config, plugins)
        assert project is not None and [p for p in problems if p.severity == "error"] == []
        self.channels = {name: Rehearsal(channel) for name, channel in project.registry.channels.items()}
        project.registry.channels = dict(self.channels)
        self.clock = VirtualClock(start)
        self.store = Store(store_path)
        self.engine = Engine(self.store, self.clock, plugins, project, dry_run=True)
        self.scheduler = Scheduler(self.store, self.clock, self.engine.run_job, concurrency=1)

        async def nothing(_: list[Event]) -> None:
            return None

        self.ingest = Ingestor(self.store, self.clock, nothing)

    async def run_until(self, moment: datetime) -> None:
        while True:
            due = await self.store.run(self.store.next_due_at)
            if due is None or due > moment.timestamp():
                break
            self.clock.advance_to(datetime.fromtimestamp(due, UTC))
            await self.scheduler.run_due()
        self.clock.advance_to(moment)

    async def send_event(self, item: Event) -> None:
        await self.run_until(item.at)
        await self.ingest([item], "test")
        await self.settle()
        await self.run_until(item.at)  # what the event queued for now

    async def feedback(self, at: str, message_id: str, type_: str, **data: Any) -> None:
        await self.run_until(t(at))
        assert await self.ingest.feedback(message_id, type_, data)
        await self.settle()
        await self.run_until(t(at))

    async def settle(self) -> None:
        while await self.store.run(self.engine.handle_pending_events):
            pass

    def journal(self) -> list[JournalEntry]:
        return self.store.journal()

    def last_message(self, who: str) -> str:
        sent = [e.message_id for e in self.journal() if e.kind == "send" and e.customer_id == who]
        assert sent and sent[-1]
        return sent[-1]


@pytest.fixture
def rig_for(database: Path | str) -> Iterator[Callable[[Path], Rig]]:
    """Makes a `Rig` on a config, closed after the test."""
    rigs: list[Rig] = []

    def make(config: Path) -> Rig:
        rig = Rig(config, database, t("2026-03-02 09:00"))
        rigs.append(rig)
        return rig

    yield make
    for rig in rigs:
        rig.store.close()


async def test_an_opted_out_channel_is_never_used(shop: Path, rig_for) -> None:
    # email is the better channel for this customer until they unsubscribe from it
    config = configure(shop, [TRIGGER, RECEIPT], "channels:\n  email: {cost: 0}\n  sms: {cost: 0.5}\n")
    ann = customer("ann", phone=True)
    rig = rig_for(config)
    await rig.send_event(incoming("e1", "cart.updated", "2026-03-02 10:00", ann))
    # The unsubscribe link of that email, for email only: SMS is still fine.
    await rig.feedback(
        "2026-03-02 10:30", rig.last_message("ann"), "message.unsubscribed", channels=["email"]
    )
    await rig.send_event(incoming("e2", "cart.updated", "2026-03-02 11:00", ann))
    await rig.send_event(incoming("o1", "order.placed", "2026-03-02 12:00", ann))
    # Then "all": nothing goes any more, not even a transactional message.
    await rig.feedback("2026-03-02 12:30", rig.last_message("ann"), "message.unsubscribed", channels=["all"])
    await rig.send_event(incoming("e3", "cart.updated", "2026-03-02 13:00", ann))
    await rig.send_event(incoming("o2", "order.placed", "2026-03-02 14:00", ann))
    await rig.run_until(t("2026-03-04 00:00"))
    journal = rig.journal()
    assert plan_rows(journal) == [
        (t("2026-03-02 10:00"), "send", "ann", "0", "cart", "email"),
        (t("2026-03-02 11:00"), "send", "ann", "0", "cart", "sms"),
        (t("2026-03-02 12:00"), "send", "ann", "0", "receipt", "sms"),
        (t("2026-03-02 13:00"), "drop", "ann", "0", "cart", None),
        (t("2026-03-02 14:00"), "drop", "ann", "0", "receipt", None),
    ]
    assert [e.reason for e in journal if e.kind in ("send", "drop")][1:] == [
        "sms: the only channel open (passed over email: opted out; push: no address)",
        "sms: the only channel open; transactional: caps and quiet hours do not apply"
        " (passed over email: opted out; push: no address)",
        "no reachable channel (passed over email: opted out; sms: opted out; push: no address)",
        "no reachable channel (passed over email: opted out; sms: opted out; push: no address)",
    ]


async def test_a_known_bad_address_is_not_used_again(shop: Path, rig_for) -> None:
    config = configure(shop, [TRIGGER, RECEIPT], "channels:\n  email: {cost: 0}\n  sms: {cost: 0.5}\n")
    ann = customer("ann", phone=True)
    rig = rig_for(config)
    await rig.send_event(incoming("e1", "cart.updated", "2026-03-02 10:00", ann))
    # A hard bounce reported after the send: the address is known bad from now on.
    bounce = {"reason": "address_invalid", "detail": "550 no such mailbox"}
    await rig.feedback("2026-03-02 10:10", rig.last_message("ann"), "message.failed", **bounce)
    await rig.send_event(incoming("e2", "cart.updated", "2026-03-02 11:00", ann))
    await rig.send_event(incoming("o1", "order.placed", "2026-03-02 12:00", ann))
    journal = rig.journal()
    assert plan_rows(journal) == [
        (t("2026-03-02 10:00"), "send", "ann", "0", "cart", "email"),
        (t("2026-03-02 11:00"), "send", "ann", "0", "cart", "sms"),
        (t("2026-03-02 12:00"), "send", "ann", "0", "receipt", "sms"),
    ]
    assert [e.reason for e in journal if e.kind == "send"][1] == (
        "sms: the only channel open (passed over email: address known bad (550 no such mailbox);"
        " push: no address)"
    )


async def test_marketing_needs_consent_where_the_source_gave_it_but_transactional_does_not(
    shop: Path,
) -> None:
    config = configure(shop, [TRIGGER, RECEIPT], "channels:\n  sms: {cost: 0}\n  email: {cost: 0.001}\n")
    no_sms = {"consents": {"sms": False}}
    events = [
        # sms is the plan's first choice; ann said no to marketing by SMS, bob said yes
        incoming("e1", "cart.updated", "2026-03-02 10:00", customer("ann", phone=True, **no_sms)),
        incoming(
            "e2", "cart.updated", "2026-03-02 10:00", customer("bob", phone=True, consents={"sms": True})
        ),
        # cid has only a phone and no consent: no marketing at all, but the receipt goes
        incoming(
            "e3", "cart.updated", "2026-03-02 10:00", customer("cid", email=False, phone=True, **no_sms)
        ),
        incoming("o1", "order.placed", "2026-03-02 10:30", customer("cid", email=False, phone=True)),
    ]
    result = await simulate(config, events, outcomes={"sms": "clicked"})
    assert plan_rows(result) == [
        (t("2026-03-02 10:00"), "send", "ann", "0", "cart", "email"),
        (t("2026-03-02 10:00"), "send", "bob", "0", "cart", "sms"),
        (t("2026-03-02 10:00"), "drop", "cid", "0", "cart", None),
        (t("2026-03-02 10:30"), "send", "cid", "0", "receipt", "sms"),
    ]
    assert reasons(result) == [
        "email: the only channel open (passed over sms: no marketing consent; push: no address)",
        "sms: best expected value 0.300 (passed over push: no address;"
        " email: lower expected value 0.299 < 0.300)",
        "no reachable channel (passed over sms: no marketing consent; email: no address; push: no address)",
        "sms: the only channel open; transactional: caps and quiet hours do not apply"
        " (passed over email: no address; push: no address)",
    ]


async def test_the_steps_channels_are_the_only_candidates(shop: Path) -> None:
    config = configure(
        shop,
        [scenario("cart", "trigger", "cart.updated", channels="[email, telegram]")],
        "channels:\n  sms: {cost: 0}\n  email: {cost: 0.001}\n",
    )
    result = await simulate(
        config, [incoming("e1", "cart.updated", "2026-03-02 10:00", customer("ann", phone=True))]
    )
    assert plan_rows(result) == [(t("2026-03-02 10:00"), "send", "ann", "0", "cart", "email")]
    assert reasons(result) == ["email: the only channel open (passed over telegram: not configured)"]


async def test_a_channel_the_template_has_no_version_for_is_not_chosen(shop: Path) -> None:
    # Regression: the plan chose sms for an email-only template and the message was dropped.
    config = configure(
        shop,
        [TRIGGER],
        "channels:\n  sms: {cost: 0}\n  email: {cost: 0.001}\n",
        templates={"cart": ("email.en.html",)},
    )
    result = await simulate(
        config, [incoming("e1", "cart.updated", "2026-03-02 10:00", customer("ann", phone=True))]
    )
    assert plan_rows(result) == [(t("2026-03-02 10:00"), "send", "ann", "0", "cart", "email")]


# caps and gaps

TWO_A_DAY = "caps:\n  - {categories: [trigger, promo], max: 2, per: 1d}\n"


@pytest.mark.parametrize("expires", [None, "2h"])
async def test_the_third_trigger_message_of_a_day_is_withheld_under_2_per_day_while_transactional_goes(
    shop: Path, expires: str | None
) -> None:
    cart = scenario("cart", "trigger", "cart.updated", expires=expires)
    config = configure(shop, [cart, RECEIPT], TWO_A_DAY)
    ann = customer("ann")
    events = [
        incoming("o1", "order.placed", "2026-03-02 09:30", ann),  # transactional: not counted
        incoming("e1", "cart.updated", "2026-03-02 10:00", ann),
        incoming("e2", "cart.updated", "2026-03-02 11:00", ann),
        incoming("e3", "cart.updated", "2026-03-02 12:00", ann),
        incoming("o2", "order.placed", "2026-03-02 12:00", ann),  # transactional: not held back
    ]
    result = await simulate(config, events)
    third = [
        (t("2026-03-02 12:00"), "defer", "ann", "0", "cart", None),
        (t("2026-03-02 12:00"), "send", "ann", "0", "receipt", "email"),
        # the cap frees at the customer's midnight (Moscow, the plan's default timezone)
        (t("2026-03-02 21:00"), "send", "ann", "0", "cart", "email"),
    ]
    if expires:
        third = [(t("2026-03-02 12:00"), "drop", "ann", "0", "cart", None), third[1]]
    assert plan_rows(result) == [
        (t("2026-03-02 09:30"), "send", "ann", "0", "receipt", "email"),
        (t("2026-03-02 10:00"), "send", "ann", "0", "cart", "email"),
        (t("2026-03-02 11:00"), "send", "ann", "0", "cart", "email"),
        *third,
    ]
    withheld = "cap 2 per 1d (trigger, promo) reached: waits until 2026-03-03 00:00 MSK" + EMAIL_ONLY
    if expires:
        withheld += "; dropped: that is past its expiry at 2026-03-02T14:00:00.000000Z"
    assert reasons(result)[3] == withheld


async def test_a_cap_counts_every_message_of_the_customer_on_every_channel_and_scenario(shop: Path) -> None:
    config = configure(
        shop,
        [
            scenario("cart", "trigger", "cart.updated", channels="[sms]"),
            scenario("promo", "promo", "product.viewed", channels="[email]"),
        ],
        TWO_A_DAY,
    )
    ann = customer("ann", phone=True)
    events = [
        incoming("e1", "cart.updated", "2026-03-02 10:00", ann),
        incoming("v1", "product.viewed", "2026-03-02 11:00", ann),
        incoming("e2", "cart.updated", "2026-03-02 12:00", ann),
        incoming("v2", "product.viewed", "2026-03-02 13:00", ann),
        # another customer's messages do not count for ann, nor hers for him
        incoming("e3", "cart.updated", "2026-03-02 13:00", customer("bob", phone=True)),
    ]
    result = await simulate(config, events)
    assert plan_rows(result) == [
        (t("2026-03-02 10:00"), "send", "ann", "0", "cart", "sms"),
        (t("2026-03-02 11:00"), "send", "ann", "0", "promo", "email"),
        (t("2026-03-02 12:00"), "defer", "ann", "0", "cart", None),
        (t("2026-03-02 13:00"), "defer", "ann", "0", "promo", None),
        (t("2026-03-02 13:00"), "send", "bob", "0", "cart", "sms"),
        (t("2026-03-02 21:00"), "send", "ann", "0", "cart", "sms"),
        (t("2026-03-02 21:00"), "send", "ann", "0", "promo", "email"),
    ]


async def test_a_day_cap_frees_at_the_customers_local_midnight(shop: Path) -> None:
    config = configure(shop, [TRIGGER], "caps:\n  - {max: 1, per: 1d}\n")
    vladivostok = customer("vla", timezone="Asia/Vladivostok")  # UTC+10
    moscow = customer("mow", timezone="Europe/Moscow")  # UTC+3
    events = [
        incoming("v1", "cart.updated", "2026-03-02 12:00", vladivostok),  # 22:00 there
        incoming("m1", "cart.updated", "2026-03-02 12:00", moscow),  # 15:00 there
        incoming("v2", "cart.updated", "2026-03-02 13:00", vladivostok),  # 23:00: same local day
        incoming("m2", "cart.updated", "2026-03-02 13:00", moscow),
        incoming("v3", "cart.updated", "2026-03-02 15:00", vladivostok),  # 01:00 on 03-03, one sent already
    ]
    result = await simulate(config, events)
    assert plan_rows(result) == [
        (t("2026-03-02 12:00"), "send", "vla", "0", "cart", "email"),
        (t("2026-03-02 12:00"), "send", "mow", "0", "cart", "email"),
        (t("2026-03-02 13:00"), "defer", "vla", "0", "cart", None),
        (t("2026-03-02 13:00"), "defer", "mow", "0", "cart", None),
        (t("2026-03-02 14:00"), "send", "vla", "0", "cart", "email"),  # midnight in Vladivostok
        (t("2026-03-02 15:00"), "defer", "vla", "0", "cart", None),
        (t("2026-03-02 21:00"), "send", "mow", "0", "cart", "email"),  # midnight in Moscow
        (t("2026-03-03 14:00"), "send", "vla", "0", "cart", "email"),
    ]
    assert reasons(result, "defer") == [
        "cap 1 per 1d (trigger, promo) reached: waits until 2026-03-03 00:00 +10" + EMAIL_ONLY,
        "cap 1 per 1d (trigger, promo) reached: waits until 2026-03-03 00:00 MSK" + EMAIL_ONLY,
        "cap 1 per 1d (trigger, promo) reached: waits until 2026-03-04 00:00 +10" + EMAIL_ONLY,
    ]


async def test_a_rolling_cap_frees_when_the_oldest_message_leaves_the_window(shop: Path) -> None:
    # Regression: at oldest + per the oldest send still counted, so the plan deferred to `now`
    # forever and the scheduler spun on one job.
    config = configure(shop, [TRIGGER], "caps:\n  - {max: 2, per: 6h}\n")
    ann = customer("ann")
    events = [incoming(f"e{n}", "cart.updated", f"2026-03-02 {10 + n}:00", ann) for n in range(4)]
    # a guard: the run takes well under a second unless the plan defers to the same moment forever
    result = await asyncio.wait_for(simulate(config, events), timeout=5)
    assert plan_rows(result) == [
        (t("2026-03-02 10:00"), "send", "ann", "0", "cart", "email"),
        (t("2026-03-02 11:00"), "send", "ann", "0", "cart", "email"),
        (t("2026-03-02 12:00"), "defer", "ann", "0", "cart", None),
        (t("2026-03-02 13:00"), "defer", "ann", "0", "cart", None),
        (t("2026-03-02 16:00"), "send", "ann", "0", "cart", "email"),
        (t("2026-03-02 16:00"), "defer", "ann", "0", "cart", None),
        (t("2026-03-02 17:00"), "send", "ann", "0", "cart", "email"),
    ]


async def test_min_gap_between_two_marketing_messages(shop: Path) -> None:
    config = configure(shop, [TRIGGER, PROMO, RECEIPT], "min_gap: 4h\n")
    ann = customer("ann")
    events = [
        incoming("e1", "cart.updated", "2026-03-02 10:00", ann),
        incoming("v1", "product.viewed", "2026-03-02 11:00", ann),
        incoming(
            "o1", "order.placed", "2026-03-02 12:00", ann
        ),  # not held back, and does not restart the gap
    ]
    result = await simulate(config, events)
    assert plan_rows(result) == [
        (t("2026-03-02 10:00"), "send", "ann", "0", "cart", "email"),
        (t("2026-03-02 11:00"), "defer", "ann", "0", "promo", None),
        (t("2026-03-02 12:00"), "send", "ann", "0", "receipt", "email"),
        (t("2026-03-02 14:00"), "send", "ann", "0", "promo", "email"),
    ]
    assert reasons(result, "defer") == ["min_gap 4h: waits until 2026-03-02 17:00 MSK" + EMAIL_ONLY]


async def test_a_channel_cap_removes_only_that_channel(shop: Path) -> None:
    config = configure(
        shop,
        [TRIGGER, RECEIPT],
        "caps:\n  - {channel: sms, max: 1, per: 7d}\nchannels:\n  sms: {cost: 0}\n  email: {cost: 0.001}\n",
    )
    ann = customer("ann", phone=True)
    bob = customer("bob", email=False, phone=True)
    events = [
        incoming("a1", "cart.updated", "2026-03-02 10:00", ann),
        incoming("b1", "cart.updated", "2026-03-02 10:00", bob),
        incoming("a2", "cart.updated", "2026-03-02 11:00", ann),
        incoming("b2", "cart.updated", "2026-03-02 11:00", bob),
        incoming("b3", "order.placed", "2026-03-02 12:00", bob),
    ]
    # sms clicks make sms the better channel for everyone: only the cap moves ann to email
    result = await simulate(config, events, until=t("2026-03-12 00:00"), outcomes={"sms": "clicked"})
    assert plan_rows(result) == [
        (t("2026-03-02 10:00"), "send", "ann", "0", "cart", "sms"),
        (t("2026-03-02 10:00"), "send", "bob", "0", "cart", "sms"),
        (t("2026-03-02 11:00"), "send", "ann", "0", "cart", "email"),
        (t("2026-03-02 11:00"), "defer", "bob", "0", "cart", None),
        (t("2026-03-02 12:00"), "send", "bob", "0", "receipt", "sms"),
        # seven calendar days in Moscow after the first SMS
        (t("2026-03-08 21:00"), "send", "bob", "0", "cart", "sms"),
    ]
    assert reasons(result)[2:4] == [
        "email: the only channel open (passed over push: no address;"
        " sms: sms cap 1 per 7d (trigger, promo) reached until 2026-03-09 00:00 MSK)",
        "every reachable channel is capped: waits until 2026-03-09 00:00 MSK"
        " (passed over email: no address; push: no address;"
        " sms: sms cap 1 per 7d (trigger, promo) reached until 2026-03-09 00:00 MSK)",
    ]


# quiet hours

QUIET = 'quiet_hours: {from: "21:00", to: "09:00", channels: [sms, push]}\n'
SMS_FIRST = "channels:\n  sms: {cost: 0}\n  email: {cost: 0.001}\n"
SMS_QUIET = "sms: quiet hours 21:00-09:00 (customer's time)"
FALLBACK_RULE = "fallback: {after: 2h, when: [failed, undelivered]}\n"


async def test_sms_at_23_00_moscow_is_deferred_to_09_00_moscow_while_email_goes_at_once(shop: Path) -> None:
    config = configure(shop, [TRIGGER, RECEIPT], QUIET + SMS_FIRST)
    events = [
        # 10:00 in Moscow: SMS, the plan's first choice
        incoming("d1", "cart.updated", "2026-03-02 07:00", customer("day", phone=True)),
        # 23:00 in Moscow (the plan's default timezone; and one who says so)
        incoming("a1", "cart.updated", "2026-03-02 20:00", customer("ann", phone=True)),
        incoming("b1", "cart.updated", "2026-03-02 20:00", customer("bob", email=False, phone=True)),
        incoming(
            "c1",
            "cart.updated",
            "2026-03-02 20:00",
            customer("cid", email=False, phone=True, timezone="Europe/Moscow"),
        ),
        # transactional messages ignore quiet hours
        incoming("b2", "order.placed", "2026-03-02 20:30", customer("bob", email=False, phone=True)),
    ]
    # sms clicks keep SMS the better channel: only the quiet hours move ann to email
    result = await simulate(config, events, outcomes={"sms": "clicked"})
    assert plan_rows(result) == [
        (t("2026-03-02 07:00"), "send", "day", "0", "cart", "sms"),
        (t("2026-03-02 20:00"), "send", "ann", "0", "cart", "email"),
        (t("2026-03-02 20:00"), "defer", "bob", "0", "cart", None),
        (t("2026-03-02 20:00"), "defer", "cid", "0", "cart", None),
        (t("2026-03-02 20:30"), "send", "bob", "0", "receipt", "sms"),
        (t("2026-03-03 06:00"), "send", "bob", "0", "cart", "sms"),
        (t("2026-03-03 06:00"), "send", "cid", "0", "cart", "sms"),
    ]
    assert reasons(result)[1:3] == [
        f"email: the only channel open (passed over push: no address; {SMS_QUIET})",
        "quiet hours: waits until 2026-03-03 09:00 MSK"
        f" (passed over email: no address; push: no address; {SMS_QUIET})",
    ]


async def test_quiet_hours_are_in_each_customers_timezone(shop: Path) -> None:
    config = configure(shop, [TRIGGER], QUIET + SMS_FIRST)
    at = "2026-03-02 20:00"  # 06:00 in Vladivostok, 20:00 in London, 01:30 in Kolkata
    events = [
        incoming(
            "v", "cart.updated", at, customer("vla", email=False, phone=True, timezone="Asia/Vladivostok")
        ),
        incoming("l", "cart.updated", at, customer("lon", email=False, phone=True, timezone="Europe/London")),
        incoming("k", "cart.updated", at, customer("kol", email=False, phone=True, timezone="Asia/Kolkata")),
    ]
    result = await simulate(config, events)
    assert plan_rows(result) == [
        (t("2026-03-02 20:00"), "defer", "vla", "0", "cart", None),
        (t("2026-03-02 20:00"), "send", "lon", "0", "cart", "sms"),
        (t("2026-03-02 20:00"), "defer", "kol", "0", "cart", None),
        (t("2026-03-02 23:00"), "send", "vla", "0", "cart", "sms"),  # 09:00 in Vladivostok
        (t("2026-03-03 03:30"), "send", "kol", "0", "cart", "sms"),  # 09:00 in Kolkata
    ]
    assert reasons(result, "defer")[1].startswith("quiet hours: waits until 2026-03-03 09:00 IST ")


@pytest.mark.parametrize("expires", ["2h", "12h"])
async def test_a_message_that_would_wait_past_its_expiry_is_dropped(shop: Path, expires: str) -> None:
    cart = scenario("cart", "trigger", "cart.updated", expires=expires)
    config = configure(shop, [cart], QUIET + SMS_FIRST)
    result = await simulate(
        config, [incoming("b1", "cart.updated", "2026-03-02 20:00", customer("bob", email=False, phone=True))]
    )
    if expires == "12h":  # 09:00 Moscow is before 11:00 Moscow: it waits
        assert plan_rows(result) == [
            (t("2026-03-02 20:00"), "defer", "bob", "0", "cart", None),
            (t("2026-03-03 06:00"), "send", "bob", "0", "cart", "sms"),
        ]
        return
    assert plan_rows(result) == [(t("2026-03-02 20:00"), "drop", "bob", "0", "cart", None)]
    assert reasons(result) == [
        "quiet hours: waits until 2026-03-03 09:00 MSK"
        f" (passed over email: no address; push: no address; {SMS_QUIET});"
        " dropped: that is past its expiry at 2026-03-02T22:00:00.000000Z"
    ]


async def test_deferred_to_the_earliest_moment_a_channel_is_open(shop: Path) -> None:
    # Regression: the wait ran to the end of the quiet hours although email freed at midnight.
    config = configure(
        shop,
        [TRIGGER],
        QUIET + "caps:\n  - {channel: email, max: 1, per: 1d}\nchannels:\n  email: {cost: 0}\n",
    )
    ann = customer("ann", phone=True)
    events = [
        incoming("a1", "cart.updated", "2026-03-02 14:00", ann),  # 17:00 Moscow: email
        incoming("a2", "cart.updated", "2026-03-02 16:00", ann),  # 19:00: email capped, sms quiet from 21:00
        incoming("a3", "cart.updated", "2026-03-02 19:00", ann),  # 22:00: email capped until 00:00, sms quiet
    ]
    result = await simulate(config, events)
    assert plan_rows(result) == [
        (t("2026-03-02 14:00"), "send", "ann", "0", "cart", "email"),
        (t("2026-03-02 16:00"), "send", "ann", "0", "cart", "sms"),
        (t("2026-03-02 19:00"), "defer", "ann", "0", "cart", None),
        (t("2026-03-02 21:00"), "send", "ann", "0", "cart", "email"),  # midnight in Moscow
    ]


# the choice: best expected value


@pytest.mark.parametrize("push_outcome", ["clicked", None])
async def test_the_customers_engagement_history_is_weighed_against_costs(
    shop: Path, push_outcome: str | None
) -> None:
    config = configure(
        shop,
        [scenario("news", "trigger", "product.viewed", channels="[push]"), TRIGGER],
        "channels:\n  email: {cost: 0}\n  push: {cost: 0.2}\n",
        channels={"push": "{}"},
    )
    ann = customer("ann", push=True)
    history = [incoming(f"v{n}", "product.viewed", f"2026-03-02 1{n}:00", ann) for n in range(4)]
    events = [
        *history,
        incoming("a1", "cart.updated", "2026-03-02 16:00", ann),
        # bob has no history of his own: the population's figure is his
        incoming("b1", "cart.updated", "2026-03-02 16:00", customer("bob", push=True)),
    ]
    result = await simulate(config, events, outcomes={"push": push_outcome} if push_outcome else {})
    news = [(t(f"2026-03-02 1{n}:00"), "send", "ann", "0", "news", "push") for n in range(4)]
    if push_outcome == "clicked":
        # clicks on every push: engagement 1.0, less the cost 0.2, beats email's default 0.3
        assert plan_rows(result) == [
            *news,
            (t("2026-03-02 16:00"), "send", "ann", "0", "cart", "push"),
            (t("2026-03-02 16:00"), "send", "bob", "0", "cart", "push"),
        ]
        assert (
            reasons(result)[-2:]
            == ["push: best expected value 0.800 (passed over email: lower expected value 0.300 < 0.800)"] * 2
        )
    else:
        # pushes that were only sent: 0.1 less 0.2 loses to email
        assert plan_rows(result) == [
            *news,
            (t("2026-03-02 16:00"), "send", "ann", "0", "cart", "email"),
            (t("2026-03-02 16:00"), "send", "bob", "0", "cart", "email"),
        ]
        assert (
            reasons(result)[-2:]
            == ["email: best expected value 0.300 (passed over push: lower expected value -0.100 < 0.300)"]
            * 2
        )


async def test_own_engagement_is_smoothed_with_the_population_and_a_new_customer_gets_the_population(
    shop: Path, rig_for
) -> None:
    config = configure(
        shop,
        [scenario("news", "trigger", "product.viewed", channels="[email]"), TRIGGER],
        "channels:\n  push: {cost: 0}\n  email: {cost: 0.3}\n",
        channels={"push": "{}"},
    )
    ann, bob, cid = (customer(name, push=True) for name in ("ann", "bob", "cid"))
    rig = rig_for(config)
    for n in range(3):
        await rig.send_event(incoming(f"a{n}", "product.viewed", f"2026-03-02 10:{n}0", ann))
        await rig.feedback(f"2026-03-02 10:{n}5", rig.last_message("ann"), "message.clicked", url="https://x")
        await rig.send_event(incoming(f"b{n}", "product.viewed", f"2026-03-02 10:{n}0", bob))
    for who in (ann, bob, cid):
        await rig.send_event(incoming(f"c-{who['id']}", "cart.updated", "2026-03-02 12:00", who))
    journal = rig.journal()
    assert plan_rows(journal)[-3:] == [
        (t("2026-03-02 12:00"), "send", "ann", "0", "cart", "email"),
        (t("2026-03-02 12:00"), "send", "bob", "0", "cart", "push"),
        (t("2026-03-02 12:00"), "send", "cid", "0", "cart", "push"),
    ]
    # email: ann 3 clicks (1.0), bob 3 sends (0.1), everyone 0.55; with 5 messages' weight on the
    # population: ann (3 + 2.75) / 8 - 0.3 = 0.419, bob (0.3 + 2.75) / 8 - 0.3 = 0.081, cid 0.55 - 0.3
    assert [e.reason for e in journal if e.kind == "send"][-3:] == [
        "email: best expected value 0.419 (passed over push: lower expected value 0.300 < 0.419)",
        "push: best expected value 0.300 (passed over email: lower expected value 0.081 < 0.300)",
        "push: best expected value 0.300 (passed over email: lower expected value 0.250 < 0.300)",
    ]


@pytest.mark.parametrize("order", [("push", "telegram"), ("telegram", "push")])
async def test_ties_are_broken_by_the_plan_order(shop: Path, order: tuple[str, str]) -> None:
    config = configure(
        shop,
        [TRIGGER],
        f"channels:\n  {order[0]}: {{cost: 0}}\n  {order[1]}: {{cost: 0}}\n  email: {{cost: 0}}\n",
        channels={"push": "{}", "telegram": "{}"},
    )
    result = await simulate(
        config,
        [incoming("a1", "cart.updated", "2026-03-02 10:00", customer("ann", push=True, telegram=True))],
    )
    assert plan_rows(result) == [(t("2026-03-02 10:00"), "send", "ann", "0", "cart", order[0])]


async def test_the_same_history_gives_the_same_choice(shop: Path) -> None:
    config = configure(
        shop,
        [scenario("news", "trigger", "product.viewed", channels="[push, sms]"), TRIGGER],
        "channels:\n  push: {cost: 0}\n  sms: {cost: 0}\n  email: {cost: 0}\n",
    )
    people = [
        customer(name, phone=True, push=name in ("ann", "bob")) for name in ("ann", "bob", "cid", "dan")
    ]
    events = [
        incoming(f"{who['id']}-{n}", kind, f"2026-03-02 1{n}:{i}0", who)
        for n, kind in enumerate(["product.viewed", "product.viewed", "cart.updated", "cart.updated"])
        for i, who in enumerate(people)
    ]
    outcomes = {"push": "opened", "sms": "clicked", "email": "delivered"}
    first = await simulate(config, events, outcomes=outcomes)
    second = await simulate(config, events, outcomes=outcomes)
    assert first.entries == second.entries
    # equal histories, equal choices: everyone's n-th message went over the same channel
    by_person: dict[str, list[str | None]] = {}
    for entry in first.entries:
        if entry.kind == "send":
            by_person.setdefault(entry.customer_id, []).append(entry.channel)
    assert by_person == {
        "ann": ["push", "sms", "sms", "sms"],
        "bob": ["push", "sms", "sms", "sms"],
        "cid": ["sms", "sms", "sms", "sms"],
        "dan": ["sms", "sms", "sms", "sms"],
    }


async def test_a_channel_whose_messages_never_arrive_loses_to_one_that_works(shop: Path) -> None:
    # Regression: failed and undelivered messages were left out of the engagement record, so sms
    # kept 0.300 and was chosen first every time.
    config = configure(shop, [TRIGGER], "channels:\n  sms: {cost: 0}\n  email: {cost: 0}\n" + FALLBACK_RULE)
    ann = customer("ann", phone=True)
    events = [incoming(f"e{n}", "cart.updated", f"2026-03-02 1{n}:00", ann) for n in range(4)]
    result = await simulate(config, events, outcomes={"sms": "undelivered"})
    last = [row[-1] for row in plan_rows(result) if row[0] == t("2026-03-02 13:00")]
    assert last == ["email"]


# priorities: who gets the last slot under a cap


@pytest.mark.parametrize("expires", [None, "2h"])
async def test_a_transactional_message_takes_the_last_slot_before_a_promo(
    shop: Path, expires: str | None
) -> None:
    # "a_offer" sorts (and is queued) first: only its lower priority makes it wait
    offer = scenario("a_offer", "promo", "order.placed", "offer", expires=expires)
    receipt = scenario("b_receipt", "transactional", "order.placed", "receipt")
    config = configure(
        shop, [offer, receipt], "caps:\n  - {categories: [transactional, promo], max: 1, per: 1d}\n"
    )
    result = await simulate(config, [incoming("o1", "order.placed", "2026-03-02 10:00", customer("ann"))])
    waits = (
        [(t("2026-03-02 10:00"), "drop", "ann", "0", "offer", None)]
        if expires
        else [
            (t("2026-03-02 10:00"), "defer", "ann", "0", "offer", None),
            (t("2026-03-02 21:00"), "send", "ann", "0", "offer", "email"),
        ]
    )
    assert plan_rows(result) == [(t("2026-03-02 10:00"), "send", "ann", "0", "receipt", "email"), *waits]
    assert reasons(result)[1].startswith(
        "cap 1 per 1d (transactional, promo) reached: waits until 2026-03-03 00:00 MSK"
    )


@pytest.mark.parametrize("priorities", [None, "{promo: 60}"])
async def test_a_trigger_message_takes_the_last_slot_before_a_promo_unless_the_plan_says_otherwise(
    shop: Path, priorities: str | None
) -> None:
    # the scenarios are named so that the winner is never simply the one queued first
    offer_name, browse_name = ("a_offer", "b_browse") if priorities is None else ("b_offer", "a_browse")
    offer = scenario(offer_name, "promo", "product.viewed", "offer")
    browse = scenario(browse_name, "trigger", "product.viewed", "browse")
    plan = "caps:\n  - {max: 1, per: 1d}\n" + (f"priorities: {priorities}\n" if priorities else "")
    config = configure(shop, [offer, browse], plan)
    result = await simulate(config, [incoming("v1", "product.viewed", "2026-03-02 10:00", customer("ann"))])
    winner, loser = ("browse", "offer") if priorities is None else ("offer", "browse")
    assert plan_rows(result) == [
        (t("2026-03-02 10:00"), "send", "ann", "0", winner, "email"),
        (t("2026-03-02 10:00"), "defer", "ann", "0", loser, None),
        (t("2026-03-02 21:00"), "send", "ann", "0", loser, "email"),
    ]


async def test_messages_waiting_for_the_same_slot_go_by_priority_not_by_who_waited_longer(shop: Path) -> None:
    config = configure(shop, [TRIGGER, PROMO], "caps:\n  - {max: 1, per: 1d}\n")
    ann = customer("ann")
    events = [
        incoming("e1", "cart.updated", "2026-03-02 10:00", ann),
        incoming("v1", "product.viewed", "2026-03-02 11:00", ann),  # waits for midnight first...
        incoming("e2", "cart.updated", "2026-03-02 12:00", ann),  # ...but this one goes first then
    ]
    result = await simulate(config, events)
    assert plan_rows(result) == [
        (t("2026-03-02 10:00"), "send", "ann", "0", "cart", "email"),
        (t("2026-03-02 11:00"), "defer", "ann", "0", "promo", None),
        (t("2026-03-02 12:00"), "defer", "ann", "0", "cart", None),
        (t("2026-03-02 21:00"), "send", "ann", "0", "cart", "email"),
        (t("2026-03-02 21:00"), "defer", "ann", "0", "promo", None),
        (t("2026-03-03 21:00"), "send", "ann", "0", "promo", "email"),
    ]


# fallback

FALLBACK = SMS_FIRST + FALLBACK_RULE


def sends(result: Timeline) -> list[tuple]:
    """Send and drop entries with their message ids."""
    return [(e.at, e.kind, e.channel, e.message_id) for e in result.entries if e.kind in ("send", "drop")]


async def test_sms_failing_falls_back_to_email(shop: Path) -> None:
    config = configure(shop, [TRIGGER], FALLBACK)
    events = [incoming("a1", "cart.updated", "2026-03-02 10:00", customer("ann", phone=True))]
    result = await simulate(config, events, outcomes={"sms": "failed"})
    assert plan_rows(result) == [
        (t("2026-03-02 10:00"), "drop", "ann", "0", "cart", "sms"),
        (t("2026-03-02 10:00"), "send", "ann", "0", "cart", "email"),
    ]
    assert reasons(result) == [
        "sms: failed: simulated failure",
        "fallback after sms: email: the only channel open"
        " (passed over sms: already tried for this step; push: no address)",
    ]
    (_, _, _, failed), (_, _, _, fallback) = sends(result)
    assert failed and fallback and failed != fallback  # each try is its own message


async def test_an_undelivered_receipt_falls_back_to_email(shop: Path) -> None:
    config = configure(shop, [TRIGGER], FALLBACK)
    events = [incoming("a1", "cart.updated", "2026-03-02 10:00", customer("ann", phone=True))]
    result = await simulate(config, events, outcomes={"sms": "undelivered"})
    assert plan_rows(result) == [
        (t("2026-03-02 10:00"), "send", "ann", "0", "cart", "sms"),
        (t("2026-03-02 10:00"), "send", "ann", "0", "cart", "email"),
    ]
    assert reasons(result)[1].startswith("fallback after sms: email: ")
    assert len({message for *_, message in sends(result)}) == 2


async def test_no_receipt_within_the_fallback_wait_falls_back(shop: Path) -> None:
    config = configure(shop, [TRIGGER], FALLBACK, channels={"sms": "{receipts: true}", "push": "{}"})
    events = [incoming("a1", "cart.updated", "2026-03-02 10:00", customer("ann", phone=True))]
    result = await simulate(config, events)
    assert plan_rows(result) == [
        (t("2026-03-02 10:00"), "send", "ann", "0", "cart", "sms"),
        (t("2026-03-02 12:00"), "send", "ann", "0", "cart", "email"),
    ]
    assert reasons(result)[1].startswith("fallback after sms: email: ")


@pytest.mark.parametrize("outcome", ["failed", "undelivered", "delivered"])
def test_simulate_command_rehearses_the_outcome_and_the_fallback(shop: Path, outcome: str) -> None:
    config = configure(shop, [TRIGGER], FALLBACK)
    events = shop / "events.jsonl"
    line = {
        "id": "a1",
        "type": "cart.updated",
        "at": "2026-03-02T10:00:00Z",
        "customer": customer("ann", phone=True),
        "data": {},
    }
    events.write_text(json.dumps(line) + "\n", encoding="utf-8")
    result = CliRunner().invoke(
        cli,
        [
            "simulate",
            "--config",
            str(config),
            "--events",
            str(events),
            "--json",
            "--outcome",
            f"sms={outcome}",
        ],
    )
    assert result.exit_code == 0, result.output
    rows = [json.loads(text) for text in result.output.splitlines()]
    assert [(r["at"], r["kind"], r["channel"]) for r in rows if r["kind"] in ("send", "drop")] == {
        "failed": [("2026-03-02T10:00:00Z", "drop", "sms"), ("2026-03-02T10:00:00Z", "send", "email")],
        "undelivered": [("2026-03-02T10:00:00Z", "send", "sms"), ("2026-03-02T10:00:00Z", "send", "email")],
        "delivered": [("2026-03-02T10:00:00Z", "send", "sms")],
    }[outcome]


@pytest.mark.parametrize("receipts", [True, False])
async def test_a_delivered_message_does_not_fall_back(shop: Path, receipts: bool) -> None:
    config = configure(
        shop, [TRIGGER], FALLBACK, channels={"sms": "{receipts: true}" if receipts else "{}", "push": "{}"}
    )
    events = [incoming("a1", "cart.updated", "2026-03-02 10:00", customer("ann", phone=True))]
    result = await simulate(config, events, outcomes={"sms": "delivered"})
    assert plan_rows(result) == [(t("2026-03-02 10:00"), "send", "ann", "0", "cart", "sms")]


async def test_only_the_outcomes_named_in_when_fall_back(shop: Path) -> None:
    config = configure(shop, [TRIGGER], SMS_FIRST + "fallback: {after: 2h, when: [undelivered]}\n")
    events = [incoming("a1", "cart.updated", "2026-03-02 10:00", customer("ann", phone=True))]
    failed = await simulate(config, events, outcomes={"sms": "failed"})
    assert plan_rows(failed) == [(t("2026-03-02 10:00"), "drop", "ann", "0", "cart", "sms")]
    undelivered = await simulate(config, events, outcomes={"sms": "undelivered"})
    assert [row[-1] for row in plan_rows(undelivered)] == ["sms", "email"]


async def test_without_fallback_a_failed_message_is_not_retried_elsewhere(shop: Path) -> None:
    config = configure(shop, [TRIGGER], SMS_FIRST)
    events = [incoming("a1", "cart.updated", "2026-03-02 10:00", customer("ann", phone=True))]
    result = await simulate(config, events, outcomes={"sms": "failed"})
    assert plan_rows(result) == [(t("2026-03-02 10:00"), "drop", "ann", "0", "cart", "sms")]


async def test_fallback_tries_each_channel_once_then_gives_up(shop: Path) -> None:
    config = configure(shop, [TRIGGER], FALLBACK)
    events = [incoming("a1", "cart.updated", "2026-03-02 10:00", customer("ann", phone=True, push=True))]
    result = await simulate(config, events, outcomes={"sms": "failed", "push": "failed", "email": "failed"})
    # by expected value: sms (cost 0), then push (cost 0) over email (cost 0.001)
    assert [(kind, channel) for _, kind, channel, _ in sends(result)] == [
        ("drop", "sms"),
        ("drop", "push"),
        ("drop", "email"),
        ("drop", None),
    ]
    assert reasons(result)[-1] == (
        "no reachable channel (passed over sms: already tried for this step;"
        " email: already tried for this step; push: already tried for this step)"
    )
    assert len({message for *_, message in sends(result)}) == 4


async def test_a_late_failure_after_the_fallback_was_delivered_sends_nothing_more(
    shop: Path, rig_for
) -> None:
    config = configure(shop, [TRIGGER], FALLBACK, channels={"sms": "{receipts: true}", "push": "{}"})
    rig = rig_for(config)
    await rig.send_event(incoming("a1", "cart.updated", "2026-03-02 10:00", customer("ann", phone=True)))
    sms = rig.last_message("ann")
    await rig.run_until(t("2026-03-02 12:00"))  # no receipt from the sms provider: email goes
    email = rig.last_message("ann")
    await rig.feedback("2026-03-02 12:05", email, "message.delivered")
    # the sms provider reports, late, that its message never arrived: the step already has
    await rig.feedback("2026-03-02 13:00", sms, "message.failed", reason="undelivered", detail="late")
    await rig.run_until(t("2026-03-04 00:00"))
    assert plan_rows(rig.journal()) == [
        (t("2026-03-02 10:00"), "send", "ann", "0", "cart", "sms"),
        (t("2026-03-02 12:00"), "send", "ann", "0", "cart", "email"),
    ]
    assert sms != email


async def test_a_restarted_journey_falls_back_although_an_earlier_pass_of_the_step_was_delivered(
    shop: Path,
) -> None:
    # Regression: fallback asked "was this journey step ever delivered?", which an earlier pass answered.
    cart = scenario("cart", "trigger", "cart.updated", restart=True, after="  - wait: 1d\n")
    config = configure(shop, [cart], FALLBACK)
    events = [
        incoming("a1", "cart.updated", "2026-03-02 10:00", customer("ann")),  # no phone yet: email
        incoming("a2", "cart.updated", "2026-03-02 12:00", customer("ann", phone=True)),  # restart: sms
    ]
    result = await simulate(config, events, outcomes={"email": "delivered", "sms": "failed"})
    assert plan_rows(result) == [
        (t("2026-03-02 10:00"), "send", "ann", "0", "cart", "email"),
        (t("2026-03-02 12:00"), "drop", "ann", "0", "cart", "sms"),
        (t("2026-03-02 12:00"), "send", "ann", "0", "cart", "email"),
    ]


# `boomerang check`: the contact plan's settings, with positions


def check(config: Path) -> tuple[int, list[str]]:
    result = CliRunner().invoke(cli, ["check", "--config", str(config)])
    problems = [line for line in result.output.splitlines() if ": error: " in line or ": warning: " in line]
    return result.exit_code, problems


def position(config: Path, needle: str, occurrence: int = 0) -> str:
    """`file:line:col` of the first character of `needle` (its n-th occurrence) in the config."""
    lines = config.read_text(encoding="utf-8").splitlines()
    found = [(number, line.index(needle) + 1) for number, line in enumerate(lines, 1) if needle in line]
    line, col = found[occurrence]
    return f"{config}:{line}:{col}"


def test_check_points_at_an_unknown_plan_setting_and_suggests_the_right_one(shop: Path) -> None:
    # Regression: an unknown plan setting was reported at its value, unlike every other unknown setting.
    config = configure(shop, [TRIGGER], "min_gapp: 4h\n")
    assert check(config) == (
        1,
        [
            f"{position(config, 'min_gapp')}: error: unknown contact plan setting 'min_gapp'"
            " (did you mean 'min_gap'?)"
        ],
    )


QUOTED_25 = '"25:00"'


def test_check_reports_each_bad_plan_value_where_it_is(shop: Path) -> None:
    config = configure(
        shop,
        [TRIGGER],
        'quiet_hours: {from: "25:00", to: "09:00", channels: [sms, pusj, fax]}\n'
        "caps:\n"
        "  - {max: 2, per: 1day, chanel: sms}\n"
        "  - {max: 5, per: 7d, channel: pigeon}\n"
        "fallback: {after: 2h, when: [failed, bounced]}\n",
    )
    code, problems = check(config)
    assert code == 1
    assert problems == [
        f"{position(config, QUOTED_25)}: error: '25:00' is not a time such as \"21:00\"",
        f"{position(config, 'pusj')}: error: unknown channel 'pusj' (did you mean 'push'?)",
        f"{position(config, 'fax')}: error: unknown channel 'fax'",
        f"{position(config, '1day')}: error: '1day' is not a duration;"
        " write a number and a unit: 30s, 20m, 2h, 1d, 3w",
        f"{position(config, 'chanel')}: error: unknown cap setting 'chanel'",
        f"{position(config, 'pigeon')}: error: unknown channel 'pigeon'",
        f"{position(config, 'bounced')}: error: 'bounced' is not failed or undelivered",
    ]
    # the same project with good values checks clean
    text = config.read_text(encoding="utf-8")
    for bad, good in [
        ("25:00", "21:00"),
        ("pusj, fax", "push"),
        ("1day, chanel", "1d, channel"),
        ("pigeon", "sms"),
        ("bounced", "undelivered"),
    ]:
        text = text.replace(bad, good)
    config.write_text(text, encoding="utf-8")
    assert check(config) == (0, [])


# properties: whatever happens, no cap is exceeded and marketing keeps quiet at night

PROPERTY_PLAN = """\
quiet_hours: {from: "21:00", to: "09:00", channels: [sms, push]}
caps:
  - {max: 2, per: 1d}
  - {max: 3, per: 2d}
  - {channel: sms, max: 1, per: 1d}
  - {max: 2, per: 5h}
min_gap: 90m
channels:
  push: {cost: 0}
  email: {cost: 0.001}
  sms: {cost: 0.05}
fallback: {after: 2h, when: [failed, undelivered]}
"""
PROPERTY_SCENARIOS = [
    scenario("cart", "trigger", "cart.updated", after="  - wait: 3h\n  - send: cart\n"),
    scenario("promo", "promo", "product.viewed", expires="12h"),
    RECEIPT,
]
CATEGORY = {"cart": "trigger", "promo": "promo", "receipt": "transactional"}
KINDS = {"cart": "cart.updated", "promo": "product.viewed", "receipt": "order.placed"}
# DST in New York on 2026-03-08, half hours in Kolkata, the day line in Vladivostok
ZONES = ["Europe/Moscow", "Asia/Vladivostok", "America/New_York", "Asia/Kolkata", "UTC", None]
START = t("2026-03-06 00:00")
OUTCOME = st.sampled_from([None, "failed", "undelivered", "delivered", "clicked"])

people = st.lists(
    st.fixed_dictionaries(
        {
            "timezone": st.sampled_from(ZONES),
            "email": st.booleans(),
            "phone": st.booleans(),
            "push": st.booleans(),
            "sms_consent": st.sampled_from([None, True, False]),
        }
    ),
    min_size=1,
    max_size=3,
)
streams = st.lists(
    st.tuples(st.integers(0, 2), st.sampled_from(sorted(KINDS)), st.integers(0, 3 * 24 * 12)),
    min_size=1,
    max_size=12,
)
outcome_sets = st.fixed_dictionaries({"sms": OUTCOME, "push": OUTCOME, "email": OUTCOME})
PROPERTY_SETTINGS = settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)


@pytest.fixture
def property_config(shop: Path) -> Path:
    return configure(
        shop, PROPERTY_SCENARIOS, PROPERTY_PLAN, channels={"sms": "{receipts: true}", "push": "{}"}
    )


def run_stream(
    config: Path, who: list[dict], stream: list[tuple[int, str, int]], outcomes: dict[str, str | None]
) -> Timeline:
    profiles = []
    for index, person in enumerate(who):
        extra: dict[str, Any] = {}
        if person["timezone"]:
            extra["timezone"] = person["timezone"]
        if person["sms_consent"] is not None:
            extra["consents"] = {"sms": person["sms_consent"]}
        profiles.append(
            customer(f"p{index}", email=person["email"], phone=person["phone"], push=person["push"], **extra)
        )
    events = sorted(
        (
            incoming(
                f"x{n}", KINDS[kind], START + timedelta(minutes=5 * slot), profiles[index % len(profiles)]
            )
            for n, (index, kind, slot) in enumerate(stream)
        ),
        key=lambda item: item.at,
    )
    chosen = {channel: outcome for channel, outcome in outcomes.items() if outcome}
    # a guard: a plan that defers to the very moment it decided would spin forever
    run = asyncio.wait_for(simulate(config, events, START, START + timedelta(days=6), chosen), timeout=10)
    return asyncio.run(run)


def marketing_sends(result: Timeline) -> list[JournalEntry]:
    return [e for e in result.entries if e.kind == "send" and CATEGORY[e.scenario or ""] != "transactional"]


@PROPERTY_SETTINGS
@given(who=people, stream=streams, outcomes=outcome_sets)
def test_property_no_customer_ever_exceeds_a_cap_or_the_minimum_gap(
    property_config: Path,
    who: list[dict],
    stream: list[tuple[int, str, int]],
    outcomes: dict[str, str | None],
) -> None:
    result = run_stream(property_config, who, stream, outcomes)
    # an undelivered message is reported failed at once: it never counted against the caps
    counted = [e for e in marketing_sends(result) if outcomes.get(e.channel or "") != "undelivered"]
    by_customer: dict[str, list[JournalEntry]] = {}
    for entry in counted:
        by_customer.setdefault(entry.customer_id, []).append(entry)
    for customer_id, entries in by_customer.items():
        zone = result.zones[customer_id]
        days: dict[date, int] = {}
        sms_days: dict[date, int] = {}
        for entry in entries:
            day = entry.at.astimezone(zone).date()
            days[day] = days.get(day, 0) + 1
            if entry.channel == "sms":
                sms_days[day] = sms_days.get(day, 0) + 1
        assert max(days.values()) <= 2, (customer_id, days)  # {max: 2, per: 1d}
        for day in days:  # {max: 3, per: 2d}: two calendar days of the customer's
            assert days[day] + days.get(day - timedelta(days=1), 0) <= 3, (customer_id, days)
        assert max(sms_days.values(), default=0) <= 1, (customer_id, sms_days)  # {channel: sms, ...}
        moments = sorted(entry.at for entry in entries)
        for at in moments:  # {max: 2, per: 5h}: a rolling window
            assert sum(at - timedelta(hours=5) < other <= at for other in moments) <= 2, (
                customer_id,
                moments,
            )
        gaps = [later - earlier for earlier, later in itertools.pairwise(moments)]
        assert all(gap >= timedelta(minutes=90) for gap in gaps), (customer_id, moments)  # min_gap


@PROPERTY_SETTINGS
@given(who=people, stream=streams, outcomes=outcome_sets)
def test_property_no_marketing_message_in_quiet_hours_and_transactional_never_waits(
    property_config: Path,
    who: list[dict],
    stream: list[tuple[int, str, int]],
    outcomes: dict[str, str | None],
) -> None:
    result = run_stream(property_config, who, stream, outcomes)
    for entry in marketing_sends(result):
        local = entry.at.astimezone(result.zones[entry.customer_id])
        if entry.channel in ("sms", "push"):
            assert time(9) <= local.time() < time(21), (entry.customer_id, entry.channel, local)
        if entry.channel == "sms":
            assert who[int(entry.customer_id[1:])]["sms_consent"] is not False, entry
    # a transactional message goes (or is dropped, unreachable) the moment its journey queues it;
    # only a fallback (2h without a receipt from sms) may come later, and never a deferral
    entered = {e.journey_id: e.at for e in result.entries if e.scenario == "receipt" and e.kind == "enter"}
    assert len(entered) == sum(1 for _, kind, _ in stream if kind == "receipt")
    for journey, at in entered.items():
        decisions = [
            e for e in result.entries if e.journey_id == journey and e.kind in ("send", "defer", "drop")
        ]
        assert decisions and decisions[0].at == at, decisions
        assert all(e.kind != "defer" for e in decisions), decisions
