"""One test per hook (named test_hook_<hook>), each through a real drop-in plugin file."""

from __future__ import annotations

import json
import re
import textwrap
from pathlib import Path

import aiohttp
import pytest
from click.testing import CliRunner

from boomerang.cli import build_cli
from boomerang.config import load_config
from boomerang.dispatch import send_message
from boomerang.model import DeliveryStatus, Message
from boomerang.plugin_manager import collect, load_plugins
from boomerang.problems import ProblemError
from boomerang.project import load_project
from conftest import AUTH, event, running, url


def drop_in(project: Path, name: str, source: str) -> None:
    (project / "plugins" / f"{name}.py").write_text(textwrap.dedent(source), encoding="utf-8")


def add_channel(project: Path, name: str) -> None:
    config = project / "boomerang.yaml"
    config.write_text(config.read_text().replace("channels:\n", f"channels:\n  {name}: {{}}\n"))


PIGEON = """
    from boomerang import hookimpl
    from boomerang.kinds import Channel
    from boomerang.model import Delivery, DeliveryStatus

    SENT = []
    FINISHED = []

    class Pigeon(Channel):
        name = "pigeon"

        def address(self, customer):
            return customer.attributes.get("loft")

        async def send(self, message):
            SENT.append(message.id)
            return Delivery(DeliveryStatus.SENT, provider_id="p-1")

    @hookimpl
    def register_channels(config):
        return [Pigeon()] if "pigeon" in config.channels else []

    @hookimpl
    async def message_finished(message, delivery):
        FINISHED.append((message.id, delivery.status.value))
"""


def message(channel: str = "pigeon") -> Message:
    return Message(id="m-1", customer_id="c-42", channel=channel, to="loft 7", template="hello", body="Hi!")


def plugin_module(loaded, name: str):
    return next(p for p in loaded.pm.get_plugins() if getattr(p, "__file__", "").endswith(f"{name}.py"))


async def test_hook_register_channels(project: Path) -> None:
    drop_in(project, "pigeon", PIGEON)
    add_channel(project, "pigeon")
    config = load_config(project / "boomerang.yaml")
    config.outbox = None
    loaded = load_plugins(config.plugin_dirs)
    registry = collect(loaded, config)
    assert sorted(registry.channels) == ["email", "pigeon"]
    delivery = await send_message(loaded, registry, message())
    assert delivery.status is DeliveryStatus.SENT
    assert plugin_module(loaded, "pigeon").SENT == ["m-1"]


async def test_hook_message_finished(project: Path) -> None:
    drop_in(project, "pigeon", PIGEON)
    add_channel(project, "pigeon")
    loaded = load_plugins([project / "plugins"])
    registry = load_project(project / "boomerang.yaml", loaded).registry
    await send_message(loaded, registry, message())
    await send_message(loaded, registry, message("carrier-crow"))
    assert plugin_module(loaded, "pigeon").FINISHED == [("m-1", "sent"), ("m-1", "failed")]


async def test_outbox_writes_a_file_per_message_instead_of_sending(project: Path) -> None:
    drop_in(project, "pigeon", PIGEON)
    add_channel(project, "pigeon")
    loaded = load_plugins([project / "plugins"])
    registry = load_project(project / "boomerang.yaml", loaded).registry
    assert (await send_message(loaded, registry, message())).status is DeliveryStatus.SENT
    email = Message(
        id="m-2",
        customer_id="c-42",
        channel="email",
        to="anna@example.com",
        template="hello",
        subject="Привет, Анна",
        body="Text part",
        html="<p>HTML part</p>",
    )
    await send_message(loaded, registry, email)
    assert plugin_module(loaded, "pigeon").SENT == []  # nothing really sent
    [pigeon] = (project / "outbox").glob("*-pigeon-*-m-1.json")
    written = json.loads(pigeon.read_text())
    assert written["to"] == "loft 7" and written["body"] == "Hi!"
    from email import policy
    from email.parser import BytesParser

    [eml] = (project / "outbox").glob("*-email-*-m-2.eml")
    # named by time, channel, customer (`c-42` as `c_42`) and message id
    assert re.fullmatch(r"\d{8}T\d{6}Z-email-c_42-m-2\.eml", eml.name)
    mail = BytesParser(policy=policy.default).parsebytes(eml.read_bytes())
    assert mail["Subject"] == "Привет, Анна"
    assert mail["X-Boomerang-Message-Id"] == "m-2"
    assert mail.get_body(("plain",)).get_content().strip() == "Text part"
    assert mail.get_body(("html",)).get_content().strip() == "<p>HTML part</p>"


async def test_hook_register_sources(project: Path) -> None:
    drop_in(
        project,
        "beacon",
        """
        from aiohttp import web
        from boomerang import hookimpl
        from boomerang.ingest import parse_event
        from boomerang.kinds import Route, Source

        class Beacon(Source):
            name = "beacon"

            def routes(self):
                return [Route("GET", "/hooks/beacon/{customer}", self.hit)]

            async def hit(self, request, ingest):
                raw = {"id": "b-" + request.match_info["customer"], "type": "product.viewed",
                       "at": "2026-03-02T10:00:00Z", "customer": {"id": request.match_info["customer"]}}
                result = await ingest([parse_event(raw)], self.name)
                return web.json_response({"accepted": result.accepted})

        @hookimpl
        def register_sources(config):
            return [Beacon()]
    """,
    )
    async with running(project) as daemon:
        async with (
            aiohttp.ClientSession() as session,
            session.get(url(daemon, "/hooks/beacon/c-7")) as response,
        ):
            assert await response.json() == {"accepted": 1}
        assert (await daemon.store.run(daemon.store.events_of, "c-7"))[0]["source"] == "beacon"


async def test_hook_event_stored(project: Path) -> None:
    drop_in(
        project,
        "listener",
        """
        from boomerang import hookimpl
        SEEN = []

        @hookimpl
        async def event_stored(event):
            SEEN.append((event.id, event.customer_id))
    """,
    )
    async with running(project) as daemon:
        async with aiohttp.ClientSession() as session:
            body = json.dumps([event("e1", id="c-1"), event("e1", id="c-1"), event("e2", email="x@y.org")])
            async with session.post(url(daemon, "/events"), data=body, headers=AUTH) as response:
                assert response.status == 200
        seen = plugin_module(daemon.plugins, "listener").SEEN
    assert seen[0] == ("e1", "c-1")
    assert [event_id for event_id, _ in seen] == ["e1", "e2"]


def registry_for(project: Path, source: str):
    drop_in(project, "extras", source)
    config = load_config(project / "boomerang.yaml")
    return collect(load_plugins(config.plugin_dirs), config)


def test_hook_register_conditions(project: Path) -> None:
    registry = registry_for(
        project,
        """
        from boomerang import hookimpl

        @hookimpl
        def register_conditions():
            return {"is_vip": lambda attributes: attributes.get("vip", False)}
    """,
    )
    assert registry.conditions["is_vip"]({"vip": True}) is True
    with pytest.raises(ProblemError, match="condition 'broken' is not callable"):
        registry_for(
            project,
            """
            from boomerang import hookimpl

            @hookimpl
            def register_conditions():
                return {"broken": 42}
        """,
        )


async def test_hook_register_actions(project: Path) -> None:
    registry = registry_for(
        project,
        """
        from boomerang import hookimpl
        from boomerang.kinds import Action

        async def create_task(title):
            return {"task": title.upper()}

        @hookimpl
        def register_actions(config):
            return [Action("crm.create_task", create_task)]
    """,
    )
    assert await registry.actions["crm.create_task"].run(title="call anna") == {"task": "CALL ANNA"}


PROMO = """
    from boomerang import hookimpl
    from boomerang.kinds import PromoProvider

    class Fixed(PromoProvider):
        name = "fixed"
        async def issue(self, customer, spec):
            return f"BACK{spec['percent']}"

    @hookimpl
    def register_promo_providers(config):
        return [Fixed()] * COPIES
"""


async def test_hook_register_promo_providers(project: Path) -> None:
    with pytest.raises(ProblemError, match="duplicate promo provider name 'fixed'"):
        registry_for(project, PROMO.replace("COPIES", "2"))
    registry = registry_for(project, PROMO.replace("COPIES", "1"))
    assert await registry.promo_providers["fixed"].issue(None, {"percent": 10}) == "BACK10"


async def test_hook_register_recommenders(project: Path) -> None:
    with pytest.raises(ProblemError, match="invalid recommender"):
        registry_for(
            project,
            """
            from boomerang import hookimpl

            @hookimpl
            def register_recommenders(config):
                return ["not a recommender"]
        """,
        )
    registry = registry_for(
        project,
        """
        from boomerang import hookimpl
        from boomerang.kinds import Recommender

        class Trending(Recommender):
            name = "trending"
            async def recommend(self, customer, limit):
                return [{"name": f"Item {i}", "url": f"https://shop.example/{i}"} for i in range(limit)]

        @hookimpl
        def register_recommenders(config):
            return [Trending()]
    """,
    )
    assert len(await registry.recommenders["trending"].recommend(None, 3)) == 3


def test_hook_register_commands(project: Path) -> None:
    drop_in(
        project,
        "hello",
        """
        import click
        from boomerang import hookimpl

        @hookimpl
        def register_commands(cli):
            @cli.command()
            @click.argument("name")
            def hello(name):
                \"\"\"Say hello.\"\"\"
                click.echo(f"Hello, {name}!")
    """,
    )
    group = build_cli(load_plugins([project / "plugins"]))
    result = CliRunner().invoke(group, ["hello", "Anna"])
    assert result.exit_code == 0, result.output
    assert result.output == "Hello, Anna!\n"
    assert "Say hello." in CliRunner().invoke(group, ["--help"]).output


async def test_a_promo_provider_issues_the_code_a_message_shows(project: Path) -> None:
    from boomerang.simulation import Rehearsal, read_events, simulate

    drop_in(project, "codes", PROMO.replace("COPIES", "1"))
    for old in (project / "scenarios").glob("*.yaml"):
        old.unlink()
    (project / "scenarios" / "promo.yaml").write_text(
        "scenario: promo\ntrigger: {event: signup.completed}\nsteps:\n"
        "  - send: welcome\n    promo: {provider: fixed, percent: 15}\n"
    )
    (project / "templates" / "welcome").mkdir()
    (project / "templates" / "welcome" / "email.en.html").write_text(
        "---\nsubject: Your code {{ promo.code }}\n---\n<p>{{ promo.percent }}% with {{ promo.code }}</p>\n"
    )
    events = project / "events.jsonl"
    events.write_text(
        json.dumps({**event("s-1", "signup.completed"), "customer": {"id": "c-1", "email": "a@b.cc"}})
    )
    sent: list[Message] = []
    original = Rehearsal.send

    async def record(self: Rehearsal, message: Message):
        sent.append(message)
        return await original(self, message)

    Rehearsal.send = record  # type: ignore[method-assign]
    try:
        timeline = await simulate(project / "boomerang.yaml", read_events(events))
    finally:
        Rehearsal.send = original  # type: ignore[method-assign]
    assert [e.kind for e in timeline.entries] == ["enter", "exit", "send"]
    # simulate sends nothing and asks no provider for a real code
    assert sent[0].subject == "Your code <code from fixed>"

    (project / "scenarios" / "promo.yaml").write_text(
        (project / "scenarios" / "promo.yaml").read_text().replace("fixed", "fixd")
    )
    result = CliRunner().invoke(
        build_cli(load_plugins([project / "plugins"])), ["check", "--config", str(project / "boomerang.yaml")]
    )
    assert result.exit_code == 1
    assert "unknown promo provider 'fixd' (did you mean 'fixed'?)" in result.output
