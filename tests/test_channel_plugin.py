"""A channel that is only a drop-in plugin file: `tests/pigeon.py` copied into `plugins/`.

It goes everywhere a built-in channel goes: `check` (its templates, its front matter and its
types), `simulate`, the running daemon's outbox, its own receipts route, the contact plan's
costs, `explain`, and the customer's address map fed by events.
"""

from __future__ import annotations

import json
import shutil
import time
from datetime import UTC, datetime
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from click.testing import CliRunner

from boomerang.cli import cli
from boomerang.ingest import EventError, parse_event
from boomerang.plugin_manager import channel_kinds, load_plugins
from boomerang.store import Store
from boomerang.tokens import seal, sign, unseal
from conftest import AUTH, SECRET, bearer, free_port, running, url, wait_for

PIGEON_TOKEN = "pigeon-token-0123456789"
SCENARIO = """scenario: pigeon-note
category: trigger
trigger: {event: order.placed}
steps:
  - send: pigeon_note
    channels: [pigeon, email]
"""
NOTE = """---
ring: "{{ customer.name }}'s blue"
---
Thank you for order {{ event.data.order.id }}, {{ customer.name }}!
"""
ORDER = {
    "id": "o-1",
    "type": "order.placed",
    "at": "2026-03-02T10:00:00Z",
    "customer": {"id": "c-1", "name": "Anna", "email": "anna@example.com", "addresses": {"pigeon": "coop-7"}},
    "data": {"order": {"id": "A-100", "total": 20}},
}


def setup_pigeon(
    project: Path, *, pigeon_cost: float = 0, email_cost: float = 0.5, loft: str = "", per_second: str = ""
) -> None:
    """The init project with the pigeon drop-in, its template and scenario, and plan costs
    (and the loft's `per_second`, if given)."""
    shutil.copy(Path(__file__).parent / "pigeon.py", project / "plugins" / "pigeon.py")
    for old in (project / "scenarios").glob("*.yaml"):
        old.unlink()
    (project / "scenarios" / "pigeon_note.yaml").write_text(SCENARIO)
    folder = project / "templates" / "pigeon_note"
    folder.mkdir()
    (folder / "pigeon.en.txt").write_text(NOTE)
    (folder / "email.en.html").write_text(
        "---\nsubject: Thank you\n---\n<p>Thank you, {{ customer.name }}</p>\n"
    )
    config = project / "boomerang.yaml"
    text = config.read_text().replace(
        "channels:\n",
        f'channels:\n  pigeon: {{loft: "{loft or "http://127.0.0.1:9"}", token: {PIGEON_TOKEN}'
        + (f", per_second: {per_second}" if per_second else "")
        + "}\n",
    )
    if loft:  # send for real, to the loft
        text = text.replace("outbox: ./outbox\n", "")
    text += f"  channels:\n    email: {{cost: {email_cost}}}\n    pigeon: {{cost: {pigeon_cost}}}\n"
    config.write_text(text)


def check(project: Path) -> tuple[int, str]:
    result = CliRunner().invoke(cli, ["check", "--config", str(project / "boomerang.yaml")])
    return result.exit_code, result.output


def simulate(project: Path, tmp_path: Path, event: dict = ORDER) -> list[dict]:
    events = tmp_path / "events.jsonl"
    events.write_text(json.dumps(event) + "\n")
    result = CliRunner().invoke(
        cli, ["simulate", "--config", str(project / "boomerang.yaml"), "--events", str(events), "--json"]
    )
    assert result.exit_code == 0, result.output
    return [json.loads(line) for line in result.stdout.splitlines()]


def test_hook_register_channel_kinds(project: Path) -> None:
    """A drop-in's channel is known without being configured: its templates pass `check`."""
    setup_pigeon(project)
    config = project / "boomerang.yaml"
    config.write_text(
        config.read_text()
        .replace("  pigeon: {loft", "  # pigeon: {loft")
        .replace("    pigeon: {cost", "    # pigeon: {cost")
    )
    kinds, problems = channel_kinds(load_plugins([project / "plugins"]))
    assert problems == []
    assert kinds["pigeon"].__name__ == "PigeonChannel"
    assert {"email", "sms", "whatsapp", "push", "telegram"} <= set(kinds)
    code, output = check(project)
    assert code == 0, output
    assert "channel 'pigeon' is not configured: this step will not use it" in output


def test_check_accepts_the_channel_and_places_its_front_matter_mistakes(project: Path) -> None:
    setup_pigeon(project)
    code, output = check(project)
    assert code == 0, output
    note = project / "templates" / "pigeon_note" / "pigeon.en.txt"
    note.write_text("---\nwing: left\nring: [red, blue]\n---\nHello\n")
    code, output = check(project)
    assert code == 1
    assert (
        f"{note}:2:7: error: unknown front matter 'wing' for pigeon (did you mean 'ring'?); expected ring"
        in output
    )
    assert f"{note}:3:7: error: 'ring' must be text, not a list" in output
    note.unlink()
    (note.parent / "pigeon.en.html").write_text("Hello\n")
    code, output = check(project)
    assert code == 1
    assert "error: 'pigeon.en.html': a pigeon template ends in .txt" in output


def test_check_accepts_the_plan_settings_of_the_channel_and_places_wrong_ones(project: Path) -> None:
    setup_pigeon(project)
    config = project / "boomerang.yaml"
    config.write_text(config.read_text().replace("pigeon: {cost: 0}", "pigeon: {cost: cheap}"))
    code, output = check(project)
    assert code == 1
    assert "error: cost must be a number" in output
    config.write_text(config.read_text().replace("pigeon: {cost: cheap}", "pidgeon: {cost: 0}"))
    code, output = check(project)
    assert "error: unknown channel 'pidgeon' (did you mean 'pigeon'?)" in output


@pytest.mark.parametrize(("pigeon_cost", "email_cost", "chosen"), [(0, 0.5, "pigeon"), (0.5, 0, "email")])
def test_simulate_sends_by_pigeon_when_the_plan_says_it_costs_less(
    project: Path, tmp_path: Path, pigeon_cost: float, email_cost: float, chosen: str
) -> None:
    setup_pigeon(project, pigeon_cost=pigeon_cost, email_cost=email_cost)
    timeline = simulate(project, tmp_path)
    [send] = [line for line in timeline if line["kind"] == "send"]
    assert (send["template"], send["channel"]) == ("pigeon_note", chosen)


def test_quiet_hours_hold_back_instant_channels_but_not_this_one(project: Path, tmp_path: Path) -> None:
    """At 23:00 in Moscow the cheaper email is in its quiet hours; the pigeon (not `instant`) flies."""
    setup_pigeon(project, pigeon_cost=0.5, email_cost=0)
    config = project / "boomerang.yaml"
    config.write_text(config.read_text() + '  quiet_hours: {from: "21:00", to: "09:00"}\n')
    late = {**ORDER, "at": "2026-03-02T20:00:00Z"}
    [send] = [line for line in simulate(project, tmp_path, late) if line["kind"] == "send"]
    assert (send["at"], send["channel"]) == ("2026-03-02T20:00:00Z", "pigeon")


def test_a_consent_withdrawn_on_the_channel_is_kept(project: Path, tmp_path: Path) -> None:
    setup_pigeon(project)
    refused = {**ORDER, "customer": {**ORDER["customer"], "consents": {"pigeon": False}}}
    [send] = [line for line in simulate(project, tmp_path, refused) if line["kind"] == "send"]
    assert send["channel"] == "email"


def test_sealed_tokens_serve_the_channel_and_only_it() -> None:
    token = seal(SECRET, "pigeon", "c-1")
    assert unseal(SECRET, "pigeon", token) == "c-1"
    assert unseal(SECRET, "push", token) is None
    with pytest.raises(ValueError, match="pigeon tokens are made by seal"):
        sign(SECRET, "pigeon", "c-1")


async def test_the_daemon_writes_the_note_takes_the_landing_report_and_explain_shows_both(
    project: Path,
) -> None:
    setup_pigeon(project)
    async with running(project) as daemon, aiohttp.ClientSession() as session:
        async with session.post(url(daemon, "/events"), json=ORDER, headers=AUTH) as answer:
            assert answer.status == 200

        async def written() -> bool:
            return bool(list((project / "outbox").glob("*-pigeon-*.json")))

        await wait_for(written)
        [file] = (project / "outbox").glob("*-pigeon-*.json")
        note = json.loads(file.read_text())
        assert (note["channel"], note["to"], note["template"]) == ("pigeon", "coop-7", "pigeon_note")
        assert note["body"] == "Thank you for order A-100, Anna!"
        assert note["extra"]["ring"] == "Anna's blue"

        callback = url(daemon, "/callbacks/pigeon")
        async with session.post(callback, json={"message": note["id"]}, headers=bearer("wrong")) as answer:
            assert answer.status == 403
        async with session.post(callback, json={"message": "nope"}, headers=bearer(PIGEON_TOKEN)) as answer:
            assert answer.status == 404
        async with session.post(
            callback, json={"message": note["id"]}, headers=bearer(PIGEON_TOKEN)
        ) as answer:
            assert answer.status == 200
            assert await answer.json() == {"known": True}
        record = await daemon.store.run(daemon.store.message, note["id"])
        assert record["status"] == "delivered"
        events = await daemon.store.run(daemon.store.events_of, "c-1")
        assert "message.delivered" in [e["type"] for e in events]

        # the unsubscribe page offers the configured channels, this one checked
        unsubscribe = url(daemon, "/u/" + note["extra"]["unsubscribe_url"].rsplit("/u/", 1)[1])
        async with session.get(unsubscribe) as answer:
            page = await answer.text()
        assert 'value="pigeon" checked> pigeon' in page and 'value="email"> email' in page
        assert 'value="sms"' not in page
        async with session.post(unsubscribe, data={"channel": "pigeon"}) as answer:
            assert answer.status == 200
        customer = await daemon.store.run(daemon.store.customer, "c-1")
        assert list(customer.opt_outs) == ["pigeon"]

    result = CliRunner().invoke(
        cli, ["explain", "--config", str(project / "boomerang.yaml"), "c-1", "--json"]
    )
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert document["customer"]["addresses"] == {"pigeon": "coop-7"}
    sends = [row for row in document["timeline"] if row["kind"] == "send"]
    assert [(row["template"], row["channel"]) for row in sends] == [("pigeon_note", "pigeon")]
    text = CliRunner().invoke(cli, ["explain", "--config", str(project / "boomerang.yaml"), "c-1"]).stdout
    assert "pigeon coop-7" in text.splitlines()[1]


async def test_a_coop_the_loft_does_not_know_is_forgotten_and_a_new_one_is_used(project: Path) -> None:
    """The channel's `gone` address leaves the customer's address map; a new one in a later
    event makes the channel usable again."""
    flights: list[dict] = []

    async def flight(request: web.Request) -> web.Response:
        flights.append(await request.json())
        return web.Response(status=404 if flights[-1]["coop"] == "coop-7" else 201)

    app = web.Application()
    app.router.add_post("/flights", flight)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        setup_pigeon(project, loft=f"http://127.0.0.1:{port}")
        async with running(project) as daemon, aiohttp.ClientSession() as session:
            async with session.post(url(daemon, "/events"), json=ORDER, headers=AUTH) as answer:
                assert answer.status == 200

            async def forgotten() -> bool:
                customer = await daemon.store.run(daemon.store.customer, "c-1")
                return customer.addresses == {} and "pigeon" in customer.unreachable

            await wait_for(forgotten)
            again = {**ORDER, "id": "o-2", "customer": {"id": "c-1", "addresses": {"pigeon": "coop-9"}}}
            async with session.post(url(daemon, "/events"), json=again, headers=AUTH) as answer:
                assert answer.status == 200

            async def flown() -> bool:
                return [f["coop"] for f in flights] == ["coop-7", "coop-9"]

            await wait_for(flown)
            customer = await daemon.store.run(daemon.store.customer, "c-1")
            assert customer.addresses == {"pigeon": "coop-9"} and customer.unreachable == {}
            assert flights[1]["ring"] == "Anna's blue"
    finally:
        await runner.cleanup()


async def test_a_drop_in_channel_paces_its_messages_by_declaring_pace(project: Path) -> None:
    """`pace` is all a channel says: the engine sends the first note at once, puts back the
    ones whose turn is past the horizon (pending, a `defer` line), then sends each in its turn."""
    flights: list[tuple[float, str]] = []

    async def flight(request: web.Request) -> web.Response:
        flights.append((time.monotonic(), (await request.json())["coop"]))
        return web.Response(status=201)

    app = web.Application()
    app.router.add_post("/flights", flight)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    orders = [
        {**ORDER, "id": f"o-{n}", "customer": {"id": f"c-{n}", "addresses": {"pigeon": f"coop-{n}"}}}
        for n in range(3)
    ]
    try:
        setup_pigeon(project, loft=f"http://127.0.0.1:{port}", per_second="0.4")  # one each 2.5 s
        async with running(project) as daemon, aiohttp.ClientSession() as session:
            async with session.post(url(daemon, "/events"), json=orders, headers=AUTH) as answer:
                assert answer.status == 200
            await wait_for(lambda: len(flights) == 3, 30, "three notes flown")
            journal = await daemon.store.run(daemon.store.journal)
    finally:
        await runner.cleanup()
    assert sorted(coop for _, coop in flights) == ["coop-0", "coop-1", "coop-2"]
    paced = [entry for entry in journal if entry.kind == "defer" and "rate limit" in entry.reason]
    assert len(paced) >= 2  # the second and third waited pending, not `sending`
    first = flights[0][0]
    assert all(at - first >= n * 2.5 - 0.05 for n, (at, _) in enumerate(flights))  # never faster


CARRIER = '''"""Carrier pigeons that find the customer by their phone number."""

from boomerang import hookimpl
from boomerang.kinds import Channel
from boomerang.plugin_api import Delivery, DeliveryStatus


class CarrierChannel(Channel):
    name = "carrier"
    address_fields = ("phone",)

    def address(self, customer):
        return customer.phone

    async def send(self, message):
        return Delivery(DeliveryStatus.SENT, "in the air")


@hookimpl
def register_channel_kinds():
    return [CarrierChannel]
'''


async def test_a_new_phone_lifts_known_bad_on_a_drop_in_channel_that_reads_the_phone(project: Path) -> None:
    """The store learns from the registry which profile fields make a channel's address."""
    (project / "plugins" / "carrier.py").write_text(CARRIER)

    def update(event_id: str, phone: str) -> dict:
        customer = {"id": "c-1", "phone": phone}
        return {"id": event_id, "type": "customer.updated", "at": "2026-03-02T10:00Z", "customer": customer}

    async with running(project) as daemon, aiohttp.ClientSession() as session:
        store = daemon.store

        async def post(event: dict) -> dict:
            async with session.post(url(daemon, "/events"), json=event, headers=AUTH) as answer:
                assert answer.status == 200
            return (await store.run(store.customer, "c-1")).unreachable

        await post(update("u-1", "+15550001111"))
        await store.run(store.mark_unreachable, "c-1", "carrier", "no such loft")
        assert await post(update("u-2", "+15550001111")) == {"carrier": "no such loft"}  # not new
        assert await post(update("u-3", "+15550002222")) == {}


def test_the_readme_shows_this_very_plugin() -> None:
    readme = (Path(__file__).parent.parent / "README.md").read_text(encoding="utf-8")
    assert "```python\n" + (Path(__file__).parent / "pigeon.py").read_text(encoding="utf-8") + "```" in readme


def test_addresses_in_events_are_checked_and_merged(database: Path | str) -> None:
    with pytest.raises(EventError, match=r"customer\.addresses must map channel names to addresses"):
        parse_event({**ORDER, "customer": {"id": "c-1", "addresses": {"pigeon": 7}}}, "event 'o-1'")
    store = Store(database)
    store.migrate()
    now = datetime(2026, 3, 2, 12, tzinfo=UTC)
    first = parse_event(
        {**ORDER, "customer": {"id": "c-1", "addresses": {"pigeon": "coop-7", "viber": "v-1"}}}
    )
    second = parse_event(
        {
            **ORDER,
            "id": "o-2",
            "at": "2026-03-02T11:00:00Z",
            "customer": {"id": "c-1", "addresses": {"pigeon": "coop-8"}},
        }
    )
    store.ingest([first, second], now)
    assert store.customer("c-1").addresses == {"pigeon": "coop-8", "viber": "v-1"}
    # a second profile, known by email only, is folded into c-1 with its address map
    other = parse_event(
        {**ORDER, "id": "o-3", "customer": {"email": "bo@example.com", "addresses": {"vk": "id5"}}}
    )
    both = parse_event({**ORDER, "id": "o-4", "customer": {"id": "c-1", "email": "bo@example.com"}})
    store.ingest([other], now)
    store.ingest([both], now)
    assert store.customer("c-1").addresses == {"pigeon": "coop-8", "viber": "v-1", "vk": "id5"}
    store.close()
