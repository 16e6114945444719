# ruff: noqa: RUF001  (the expected texts are Russian and Ukrainian on purpose)
"""The reference scenarios in scenarios/ (seeds S9, S11-S13, S16, S22), rehearsed on a virtual clock.

Each test runs `simulate` on a project made by `boomerang init` and asserts the exact timeline
of sends that matters — who got which template over which channel at which UTC minute — and
the paths where nothing must go out. Only `email` is configured, so the other channels of a
step are passed over. The messages the simulation rendered are recorded too, so the texts are
checked in the customers' own languages.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from boomerang import simulation
from boomerang.cli import cli
from boomerang.expressions import Scope, evaluating
from boomerang.ingest import parse_body, parse_events
from boomerang.model import Message
from boomerang.plugin_manager import channel_kinds, load_plugins
from boomerang.plugins.conditions.builtin import register_conditions
from boomerang.scenarios import load_scenarios, scenario_files
from boomerang.simulation import Timeline, simulate
from boomerang.templates import load_templates
from conftest import event, t

CHANNEL_KINDS = channel_kinds(load_plugins())[0]
REFERENCE = (
    "abandoned-cart",
    "birthday",
    "browse-abandonment",
    "cross-sell-bicycle",
    "delivery-status",
    "reactivation",
    "recommendations",
    "review-request",
)

PEOPLE = {
    "c-anna": {"id": "c-anna", "email": "anna@example.com", "name": "Анна", "locale": "ru"},
    "c-boris": {"id": "c-boris", "email": "boris@example.com", "name": "Борис", "locale": "uk"},
    "c-vera": {"id": "c-vera", "email": "vera@example.com", "name": "Vera", "locale": "en"},
    "c-gleb": {"id": "c-gleb", "email": "gleb@example.com", "name": "Gleb", "locale": "en"},
    # c-mila is in the 10% holdout of browse-abandonment, c-uma (and c-anna) of reactivation:
    # the holdout share is stable per customer
    "c-mila": {"id": "c-mila", "email": "mila@example.com", "name": "Mila", "locale": "en"},
    "c-uma": {"id": "c-uma", "email": "uma@example.com", "name": "Uma", "locale": "en"},
}

BIKE = {
    "sku": "B-1",
    "name": "Trek FX 2",
    "price": 790,
    "qty": 1,
    "category": "bicycles",
    "url": "https://shop.example/p/b-1",
}
HELMET = {
    "sku": "H-7",
    "name": "Giro Register",
    "price": 49,
    "qty": 1,
    "category": "helmets",
    "url": "https://shop.example/p/h-7",
}
TYRES = {
    "sku": "T-3",
    "name": "Schwalbe Marathon kit",
    "price": 65,
    "qty": 1,
    "category": "tyres",
    "url": "https://shop.example/p/t-3",
}


def product(sku: str, name: str) -> dict[str, Any]:
    return {"sku": sku, "name": name, "price": 100, "url": f"https://shop.example/p/{sku.lower()}"}


def order(order_id: str, *items: dict[str, Any], **extra: Any) -> dict[str, Any]:
    total = sum(item["price"] * item["qty"] for item in items)
    return {"order": {"id": order_id, "total": total, "currency": "EUR", "items": list(items), **extra}}


class Events:
    """Generic events, built in the format of POST /events and parsed as `simulate` reads them."""

    def __init__(self) -> None:
        self.raw: list[dict[str, Any]] = []

    def add(self, at: str, type_: str, who: str, data: dict | None = None, **profile: Any) -> Events:
        self.raw.append(
            event(f"evt-{len(self.raw) + 1}", type_, at, {**PEOPLE.get(who, {"id": who}), **profile}, data)
        )
        return self

    def parsed(self) -> list:
        events = parse_events(parse_body("\n".join(json.dumps(e, ensure_ascii=False) for e in self.raw)))
        return sorted(events, key=lambda event: event.at)


def minute(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M")


def sends(timeline: Timeline, scenario: str) -> list[tuple[str, str, str, str | None]]:
    """(UTC minute, customer, template, channel) of every message the scenario sent."""
    return [
        (minute(e.at), e.customer_id, e.template or "", e.channel)
        for e in timeline.entries
        if e.kind == "send" and e.scenario == scenario
    ]


def entries(timeline: Timeline, scenario: str, customer: str) -> list[tuple[str, str]]:
    """(UTC minute, kind) of every journal line of one customer in one scenario."""
    return [
        (minute(e.at), e.kind)
        for e in timeline.entries
        if e.scenario == scenario and e.customer_id == customer
    ]


@dataclass
class Run:
    timeline: Timeline
    messages: list[Message]

    def message(self, scenario: str, customer: str, template: str, index: int = 0) -> Message:
        found = [
            m
            for m in self.messages
            if (m.scenario, m.customer_id, m.template) == (scenario, customer, template)
        ]
        return found[index]


@pytest.fixture
def rehearse(project: Path, monkeypatch: pytest.MonkeyPatch):
    """Run `simulate` on the project and keep every message the rehearsal channels were given."""
    messages: list[Message] = []

    class Recording(simulation.Rehearsal):
        async def send(self, message: Message):
            messages.append(message)
            return await super().send(message)

    monkeypatch.setattr(simulation, "Rehearsal", Recording)

    async def run(events: Events, start: str, until: str) -> Run:
        timeline = await simulate(project / "boomerang.yaml", events.parsed(), t(start), t(until))
        return Run(timeline, messages)

    return run


def test_check_passes_on_the_whole_project(project: Path) -> None:
    result = CliRunner().invoke(cli, ["check", "--config", str(project / "boomerang.yaml")])
    assert result.exit_code == 0, result.output
    assert ": error:" not in result.output
    assert f"{len(REFERENCE)} files checked: " in result.output
    # Only channels that the demo config does not configure are warned about.
    warnings = [line for line in result.output.splitlines() if ": warning:" in line]
    assert warnings and all("is not configured: this step will not use it" in w for w in warnings)
    files = scenario_files(project / "scenarios")
    assert sorted(s.id for s in load_scenarios(files)) == list(REFERENCE)
    for file in files:  # each names the seed behaviours it implements
        assert file.read_text(encoding="utf-8").startswith("# S"), file.name


async def test_browse_abandonment(rehearse) -> None:
    events = (
        Events()
        # Anna views two products: the second view restarts the 20 minutes.
        .add("2026-03-02T10:00:00Z", "product.viewed", "c-anna", {"product": product("P-1", "Kettle")})
        .add("2026-03-02T10:05:00Z", "product.viewed", "c-anna", {"product": product("P-2", "Toaster")})
        # Boris keeps browsing categories: no reminder until 20 quiet minutes after the last one.
        .add("2026-03-02T10:00:00Z", "product.viewed", "c-boris", {"product": product("P-1", "Kettle")})
        .add("2026-03-02T10:15:00Z", "category.viewed", "c-boris", {"category": {"id": "kitchen"}})
        .add("2026-03-02T10:30:00Z", "category.viewed", "c-boris", {"category": {"id": "kitchen"}})
        # Vera adds to the cart: the browse journey exits (abandoned-cart takes over).
        .add("2026-03-02T10:00:00Z", "product.viewed", "c-vera", {"product": product("P-1", "Kettle")})
        .add(
            "2026-03-02T10:10:00Z", "cart.updated", "c-vera", {"cart": {"items": [product("P-1", "Kettle")]}}
        )
        # Gleb gets the reminder, then orders: no offer.
        .add("2026-03-02T10:00:00Z", "product.viewed", "c-gleb", {"product": product("P-1", "Kettle")})
        .add("2026-03-03T09:00:00Z", "order.placed", "c-gleb", order("G-1", {**HELMET}))
        # Mila is in the holdout; the anonymous visitor has no email.
        .add("2026-03-02T10:00:00Z", "product.viewed", "c-mila", {"product": product("P-1", "Kettle")})
        .add("2026-03-02T10:00:00Z", "product.viewed", "c-anon", {"product": product("P-1", "Kettle")})
        # Anna again: within 3 days of entering nothing; after 3 days a new journey.
        .add("2026-03-04T12:00:00Z", "product.viewed", "c-anna", {"product": product("P-3", "Blender")})
        .add("2026-03-05T11:00:00Z", "product.viewed", "c-anna", {"product": product("P-1", "Kettle")})
    )
    run = await rehearse(events, "2026-03-02T09:00:00", "2026-03-08T00:00:00")

    assert sends(run.timeline, "browse-abandonment") == [
        ("2026-03-02T10:20", "c-gleb", "browse_reminder", "email"),
        ("2026-03-02T10:25", "c-anna", "browse_reminder", "email"),
        ("2026-03-02T10:50", "c-boris", "browse_reminder", "email"),
        ("2026-03-03T10:25", "c-anna", "browse_offer", "email"),
        ("2026-03-03T10:50", "c-boris", "browse_offer", "email"),
        ("2026-03-05T11:20", "c-anna", "browse_reminder", "email"),
        ("2026-03-06T11:20", "c-anna", "browse_offer", "email"),
    ]
    assert entries(run.timeline, "browse-abandonment", "c-vera") == [
        ("2026-03-02T10:00", "enter"),
        ("2026-03-02T10:10", "exit"),
    ]
    assert ("2026-03-03T09:00", "exit") in entries(run.timeline, "browse-abandonment", "c-gleb")
    assert ("2026-03-03T09:00", "goal") in entries(run.timeline, "browse-abandonment", "c-gleb")
    mila = entries(run.timeline, "browse-abandonment", "c-mila")
    assert ("2026-03-02T10:00", "holdout") in mila and ("2026-03-02T10:20", "drop") in mila
    assert all(kind != "send" for _, kind in mila)
    assert entries(run.timeline, "browse-abandonment", "c-anon") == []

    # The reminder lists the products viewed in the last day, latest first, in Anna's Russian.
    first = run.message("browse-abandonment", "c-anna", "browse_reminder")
    assert first.subject == "Анна, товары, которые вы смотрели, ещё в наличии"
    assert first.html is not None and "Здравствуйте, Анна!" in first.html
    assert first.html.index("Toaster") < first.html.index("Kettle")
    second = run.message("browse-abandonment", "c-anna", "browse_reminder", 1)
    assert second.html is not None and "Blender" in second.html and "Toaster" not in second.html
    offer = run.message("browse-abandonment", "c-anna", "browse_offer")
    assert offer.subject == "Скидка 10% на товары, которые вы смотрели"
    assert offer.html is not None and "48 ч." in offer.html and "Kettle" in offer.html
    boris = run.message("browse-abandonment", "c-boris", "browse_reminder")
    assert boris.locale == "uk" and boris.subject == "Борис, товари, які ви переглядали, ще в наявності"


async def test_review_request_after_delivery(rehearse) -> None:
    shipped = order("1001", {**BIKE})
    events = (
        Events()
        .add("2026-03-02T10:00:00Z", "order.shipped", "c-anna", shipped)
        .add("2026-03-04T15:00:00Z", "order.delivered", "c-anna", shipped)
        # Boris's delivery is never confirmed: no review request.
        .add("2026-03-02T10:00:00Z", "order.shipped", "c-boris", order("1002", {**HELMET}))
        # Vera reviews on her own before we ask: the journey exits and counts the goal.
        .add("2026-03-02T10:00:00Z", "order.shipped", "c-vera", order("1003", {**HELMET}))
        .add("2026-03-03T12:00:00Z", "order.delivered", "c-vera", order("1003", {**HELMET}))
        .add("2026-03-05T09:00:00Z", "review.submitted", "c-vera", {"review": {"rating": 5}})
    )
    run = await rehearse(events, "2026-03-02T00:00:00", "2026-03-25T00:00:00")

    assert sends(run.timeline, "review-request") == [
        ("2026-03-07T15:00", "c-anna", "review_request", "email"),
    ]
    assert entries(run.timeline, "review-request", "c-boris") == [
        ("2026-03-02T10:00", "enter"),
        ("2026-03-16T10:00", "exit"),  # 14 days without order.delivered
    ]
    assert entries(run.timeline, "review-request", "c-vera") == [
        ("2026-03-02T10:00", "enter"),
        ("2026-03-05T09:00", "goal"),
        ("2026-03-05T09:00", "exit"),
    ]
    message = run.message("review-request", "c-anna", "review_request")
    assert message.subject == "Анна, как вам покупка?"
    assert message.html is not None
    assert "заказ № 1001" in message.html and "https://shop.example/p/b-1#reviews" in message.body
    assert (
        "скидка 5%" in message.html and "THANKS5" in message.html and "21 марта 2026\u202fг." in message.html
    )


async def test_review_request_waits_three_days_after_a_late_delivery(rehearse) -> None:
    shipped = order("1001", {**BIKE})
    events = (
        Events()
        .add("2026-03-02T10:00:00Z", "order.shipped", "c-anna", shipped)
        .add("2026-03-14T00:00:00Z", "order.delivered", "c-anna", shipped)  # day 12 of the 14
    )
    run = await rehearse(events, "2026-03-02T00:00:00", "2026-03-25T00:00:00")
    # The engine sends at 2026-03-16T10:00, when the wait for order.delivered would have timed out.
    assert sends(run.timeline, "review-request") == [
        ("2026-03-17T00:00", "c-anna", "review_request", "email"),
    ]


async def test_reactivation_picks_only_buyers_inactive_for_90_days(rehearse) -> None:
    events = (
        Events()
        .add("2026-01-05T12:00:00Z", "order.placed", "c-boris", order("B-1", {**HELMET}))
        .add("2026-01-05T12:00:00Z", "order.placed", "c-uma", order("U-1", {**HELMET}))  # holdout
        .add("2026-01-05T12:00:00Z", "customer.created", "c-vera")  # never ordered
        .add("2026-01-05T12:00:00Z", "order.placed", "c-gleb", order("G-1", {**HELMET}))
        .add("2026-02-20T12:00:00Z", "order.placed", "c-gleb", order("G-2", {**HELMET}))  # recent
        .add("2026-04-08T08:00:00Z", "order.placed", "c-boris", order("B-2", {**HELMET}))
    )
    run = await rehearse(events, "2026-01-05T00:00:00", "2026-04-12T00:00:00")

    # Daily at 10:00 Moscow (07:00 UTC): on 5 April Boris's last order is 89 days 19 hours old.
    assert sends(run.timeline, "reactivation") == [
        ("2026-04-06T07:00", "c-boris", "reactivation_offer", "email"),
    ]
    assert entries(run.timeline, "reactivation", "c-boris") == [
        ("2026-04-06T07:00", "enter"),
        ("2026-04-06T07:00", "exit"),  # reached the last step; the later ticks: reentry 90d
        ("2026-04-06T07:00", "send"),
        ("2026-04-08T08:00", "goal"),
    ]
    uma = entries(run.timeline, "reactivation", "c-uma")
    assert ("2026-04-06T07:00", "holdout") in uma and all(kind != "send" for _, kind in uma)
    assert entries(run.timeline, "reactivation", "c-gleb") == []
    assert entries(run.timeline, "reactivation", "c-vera") == []
    message = run.message("reactivation", "c-boris", "reactivation_offer")
    assert message.subject == "Борис, ми сумуємо! Ваша особиста знижка 15%"
    # simulate shows the local provider's sample: a code of the real look, issued nowhere
    assert message.html is not None and "13 квітня 2026\u202fр." in message.html
    assert re.search(r"<b>BMR(-[A-HJKMNP-Z2-9]{4}){3}</b>", message.html)


async def test_recommendations_a_month_after_a_purchase(rehearse) -> None:
    events = (
        Events()
        .add("2026-03-02T10:00:00Z", "order.placed", "c-anna", order("A-1", {**BIKE}, {**HELMET}))
        .add("2026-03-20T10:00:00Z", "order.placed", "c-anna", order("A-2", {**TYRES}))  # inside the month
        .add("2026-04-05T10:00:00Z", "order.placed", "c-anna", order("A-3", {**TYRES}))  # a new month
        .add("2026-03-02T10:00:00Z", "order.placed", "c-boris", order("B-1", {**HELMET}))
        .add("2026-03-03T10:00:00Z", "order.cancelled", "c-boris", order("B-1", {**HELMET}))
    )
    run = await rehearse(events, "2026-03-02T00:00:00", "2026-05-10T00:00:00")

    assert sends(run.timeline, "recommendations") == [
        ("2026-04-01T10:00", "c-anna", "recommendations", "email"),
        ("2026-05-05T10:00", "c-anna", "recommendations", "email"),
    ]
    assert entries(run.timeline, "recommendations", "c-boris") == [
        ("2026-03-02T10:00", "enter"),
        ("2026-03-03T10:00", "exit"),
    ]
    first = run.message("recommendations", "c-anna", "recommendations")
    assert first.subject == "Анна, мы подобрали для вас хиты месяца"
    assert first.html is not None and "Trek FX 2, Giro Register" in first.html
    assert "/c/bicycles?sort=bestsellers" in first.body and "/c/helmets?sort=bestsellers" in first.body
    later = run.message("recommendations", "c-anna", "recommendations", 1)
    assert "/c/tyres?sort=bestsellers" in later.body


async def test_delivery_status_for_shipped_and_delivered(rehearse) -> None:
    with_courier = order("1001", {**BIKE}, courier_phone="+79991234567")
    events = (
        Events()
        # 23:30 in Moscow: transactional, sent at once.
        .add("2026-03-02T20:30:00Z", "order.shipped", "c-anna", with_courier)
        .add("2026-03-04T08:00:00Z", "order.delivered", "c-anna", with_courier)
        .add("2026-03-02T11:00:00Z", "order.shipped", "c-boris", order("1002", {**HELMET}))
    )
    run = await rehearse(events, "2026-03-02T00:00:00", "2026-03-05T00:00:00")

    assert sends(run.timeline, "delivery-status") == [
        ("2026-03-02T11:00", "c-boris", "delivery_status", "email"),
        ("2026-03-02T20:30", "c-anna", "delivery_status", "email"),
        ("2026-03-04T08:00", "c-anna", "delivery_status", "email"),
    ]
    shipped = run.message("delivery-status", "c-anna", "delivery_status")
    assert shipped.subject == "Ваш заказ № 1001 уже в пути"
    assert shipped.html is not None and "Телефон курьера" in shipped.html and "+79991234567" in shipped.html
    delivered = run.message("delivery-status", "c-anna", "delivery_status", 1)
    assert delivered.subject == "Ваш заказ № 1001 доставлен"
    boris = run.message("delivery-status", "c-boris", "delivery_status")
    assert boris.subject == "Ваше замовлення № 1002 уже в дорозі"
    assert boris.html is not None and "кур'єра" not in boris.html.lower()


async def test_birthday_three_days_ahead_at_ten_moscow_every_year(rehearse) -> None:
    events = (
        Events()
        .add("2026-03-01T09:00:00Z", "customer.created", "c-anna", birthday="1990-03-15")
        .add("2026-03-01T09:00:00Z", "customer.created", "c-gleb", birthday="--03-16")
        .add("2026-03-01T09:00:00Z", "customer.created", "c-boris", birthday="1985-06-01")
        .add("2026-03-01T09:00:00Z", "customer.created", "c-vera")  # no birthday known
    )
    run = await rehearse(events, "2026-03-01T00:00:00", "2027-03-14T00:00:00")

    assert sends(run.timeline, "birthday") == [
        ("2026-03-12T07:00", "c-anna", "birthday_gift", "email"),
        ("2026-03-13T07:00", "c-gleb", "birthday_gift", "email"),
        ("2026-05-29T07:00", "c-boris", "birthday_gift", "email"),
        ("2027-03-12T07:00", "c-anna", "birthday_gift", "email"),
        ("2027-03-13T07:00", "c-gleb", "birthday_gift", "email"),
    ]
    assert entries(run.timeline, "birthday", "c-vera") == []
    message = run.message("birthday", "c-anna", "birthday_gift")
    assert message.subject == "С наступающим днём рождения, Анна! Дарим скидку 20%"
    assert (
        message.html is not None and "BIRTHDAY20" in message.html and "22 марта 2026\u202fг." in message.html
    )


async def test_cross_sell_tyres_only_to_bicycle_buyers(rehearse) -> None:
    events = (
        Events()
        .add("2026-03-02T10:00:00Z", "order.placed", "c-anna", order("A-1", {**BIKE}, {**HELMET}))
        .add("2026-03-02T10:00:00Z", "order.placed", "c-boris", order("B-1", {**HELMET}))  # no bicycle
        # Vera buys tyres within the week, Gleb with the bicycle: no offer for either.
        .add("2026-03-02T10:00:00Z", "order.placed", "c-vera", order("V-1", {**BIKE}))
        .add("2026-03-05T10:00:00Z", "order.placed", "c-vera", order("V-2", {**TYRES}))
        .add("2026-03-02T10:00:00Z", "order.placed", "c-gleb", order("G-1", {**BIKE}, {**TYRES}))
    )
    run = await rehearse(events, "2026-03-02T00:00:00", "2026-03-20T00:00:00")

    assert sends(run.timeline, "cross-sell-bicycle") == [
        ("2026-03-09T10:00", "c-anna", "cross_sell_tyres", "email"),
    ]
    assert entries(run.timeline, "cross-sell-bicycle", "c-boris") == []
    assert entries(run.timeline, "cross-sell-bicycle", "c-vera") == [
        ("2026-03-02T10:00", "enter"),
        ("2026-03-05T10:00", "goal"),
        ("2026-03-09T10:00", "exit"),
    ]
    assert entries(run.timeline, "cross-sell-bicycle", "c-gleb") == [
        ("2026-03-02T10:00", "enter"),
        ("2026-03-09T10:00", "exit"),
    ]
    message = run.message("cross-sell-bicycle", "c-anna", "cross_sell_tyres")
    assert message.subject == "Запасной комплект шин для вашего нового велосипеда со скидкой 10%"
    assert message.html is not None and "«Trek FX 2»" in message.html and "72 ч." in message.html


class FakeHistory:
    """What `viewed_products` and `bought_category` read, without a store."""

    def viewed_products(self, since: timedelta) -> list[dict[str, Any]]:
        return [product("P-2", "Toaster"), product("P-1", "Kettle")]

    def categories_bought(self) -> set[str]:
        return {"bicycles"}


@pytest.mark.parametrize("locale", ["en", "ru", "uk"])
def test_every_new_template_renders_on_every_channel(project: Path, locale: str) -> None:
    """SMS and push are not configured in the demo, so the simulations never render them."""
    library, problems = load_templates(project / "templates", register_conditions(), CHANNEL_KINDS)
    assert problems == []
    now = t("2026-03-02T10:00:00")
    data = {
        **order("1001", {**BIKE}, {**HELMET}, courier_phone="+79991234567"),
        "product": product("P-1", "Kettle"),
    }
    new = [name for name in library.names() if not name.startswith("cart_")]
    assert len(new) == 8
    for name in new:
        template = library.get(name)
        assert template is not None
        for channel in sorted(template.channels()):
            assert template.locales(channel) == ["en", "ru", "uk"], (name, channel)
            for event_type in ("order.shipped", "order.delivered"):
                context = {
                    **data,
                    "data": data,
                    "event": {"type": event_type, "data": data},
                    "customer": {**PEOPLE["c-anna"], "locale": locale},
                    "now": now,
                    "waited": {},
                    "journey": {},
                    "promo": {
                        "percent": 10,
                        "code": "CODE10",
                        "expires_at": now + timedelta(hours=48),
                        "expires_hours": 48,
                    },
                }
                with evaluating(Scope(history=FakeHistory())):
                    rendered = template.render(channel, [locale], context)
                parts = (rendered.subject, rendered.body, *rendered.extra.values())
                text = " ".join(str(part) for part in parts if part is not None)
                assert rendered.locale == locale
                assert rendered.body.strip(), (name, channel)
                assert "None" not in text and "Undefined" not in text, (name, channel, text)
                if channel == "sms":
                    assert len(rendered.body) <= 160, (name, locale, rendered.body)
                if channel == "email":
                    assert rendered.subject, (name, locale)
                if channel == "push":
                    assert rendered.extra.get("title") and rendered.extra.get("url"), (name, locale)


def test_an_email_subject_is_plain_text(project: Path) -> None:
    library, _ = load_templates(project / "templates", register_conditions(), CHANNEL_KINDS)
    template = library.get("birthday_gift")
    assert template is not None
    context = {"customer": {"name": "Tom & Jerry O'Brien"}, "promo": {"percent": 20}}
    rendered = template.render("email", ["en"], context)
    assert rendered.subject == "Happy birthday, Tom & Jerry O'Brien! A 20% gift for you"
