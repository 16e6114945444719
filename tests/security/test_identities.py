"""Issue 9, section 4: identities that cannot be hijacked.

Each test reproduces an attack as the issue states it, against the daemon started in-process
on a `boomerang init` project, the local Telegram Bot API stand-in (tests/fakes/telegram_api.py) and
the real SQLite store: `/start` with another customer's link token, a Kelvin-sign email, a link
token past its 7 days, and a token read every way an attacker would read it.
"""

from __future__ import annotations

import base64
import binascii
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp
import pytest
from test_channel_telegram import (
    TOKEN,
    hook,
    make_config,
    parameter_of,
    post_event,
    telegram_project,
)

import conftest
from boomerang.daemon import Daemon
from boomerang.ingest import parse_event
from boomerang.model import ProfileUpdate
from boomerang.plugins.channels.telegram import deep_link
from boomerang.store import Store
from fakes.telegram_api import FakeBotApi

VICTIM = {"id": "c-kate", "name": "Kate", "email": "kate@example.com", "phone": "+79990001122"}
ATTACKER = {"id": "c-mallory", "name": "Mallory", "email": "mallory@example.com", "phone": "+79990003344"}
SHIPPED = """
scenario: shipped
category: transactional
trigger: {event: order.shipped}
steps:
  - send: shipped
    channels: [telegram]
"""


@pytest.fixture
async def api():
    """The Bot API stand-in, serving for one test."""
    async with FakeBotApi(TOKEN) as server:
        yield server


def shop(project: Path, api: FakeBotApi) -> None:
    """The init project with the Telegram channel on the stand-in and an order.shipped notice."""
    telegram_project(project, api.base)
    (project / "scenarios" / "shipped.yaml").write_text(SHIPPED)
    (project / "templates" / "shipped").mkdir()
    (project / "templates" / "shipped" / "telegram.en.html").write_text("<p>{{ customer.name }}: shipped</p>")


def known(event_id: str, **customer: str) -> dict:
    """What the shop's server says about a customer on the authenticated POST /events."""
    return conftest.event(event_id, "customer.updated", **customer)


async def profiles(daemon: Daemon) -> dict[str, tuple]:
    """Every customer's id → (email, phone, telegram chat)."""
    store = daemon.store
    found = {}
    for customer_id in ("c-kate", "c-mallory", "c-new"):
        customer = await store.run(store.customer, customer_id)
        if customer is not None:
            found[customer_id] = (customer.email, customer.phone, customer.telegram_chat_id)
    return found


async def test_start_with_another_customers_token_does_not_hijack_them(
    project: Path, api: FakeBotApi
) -> None:
    shop(project, api)
    async with conftest.running(project) as daemon:
        await post_event(daemon, known("e-1", **VICTIM, telegram_chat_id="777"))
        await post_event(daemon, known("e-2", **ATTACKER, telegram_chat_id="666"))
        before = await profiles(daemon)
        # Mallory's chat, linked to Mallory, sends /start with Kate's token
        victims_link = deep_link(daemon.project.config, "c-kate")
        assert await hook(daemon, api.user_says(666, f"/start {parameter_of(victims_link)}")) == 200

        # not merged: two customers, each with their own addresses and events
        assert (
            await profiles(daemon)
            == before
            == {
                "c-kate": ("kate@example.com", "+79990001122", "777"),
                "c-mallory": ("mallory@example.com", "+79990003344", "666"),
            }
        )
        store = daemon.store
        assert (await store.run(store.counts))["customers"] == 2
        assert [e["id"] for e in await store.run(store.events_of, "c-mallory")] == ["e-2"]
        [refusal] = api.sent()
        assert refusal.params["chat_id"] == 666 and "another Telegram chat" in refusal.params["text"]

        # Kate's messages still go to Kate only
        await post_event(daemon, conftest.event("e-3", "order.shipped", id="c-kate"))

        async def notified() -> bool:
            return len(api.sent()) == 2

        await conftest.wait_for(notified)
        assert [(c.params["chat_id"], c.params["text"]) for c in api.sent()[1:]] == [(777, "Kate: shipped")]


async def test_linking_a_chat_moves_the_chat_and_merges_nobody(project: Path, api: FakeBotApi) -> None:
    shop(project, api)
    async with conftest.running(project) as daemon:
        await post_event(daemon, known("e-1", **ATTACKER, telegram_chat_id="666"))
        await post_event(daemon, known("e-2", id="c-new", email="new@example.com"))
        link = deep_link(daemon.project.config, "c-new")
        assert await hook(daemon, api.user_says(666, f"/start {parameter_of(link)}")) == 200
        assert await profiles(daemon) == {
            "c-mallory": ("mallory@example.com", "+79990003344", None),
            "c-new": ("new@example.com", None, "666"),
        }
        store = daemon.store
        assert (await store.run(store.find_customer, "666")).id == "c-new"
        assert (await store.run(store.find_customer, "mallory@example.com")).id == "c-mallory"


async def test_a_kelvin_sign_email_is_refused_not_merged(project: Path) -> None:
    async with conftest.running(project) as daemon, aiohttp.ClientSession() as http:
        await post_event(daemon, known("e-1", **VICTIM))
        for index, email in enumerate(["\u212aate@example.com", "kate@exampl\uff45.com"]):
            body = known(f"e-{index + 2}", id="c-mallory", email=email)
            async with http.post(conftest.url(daemon, "/events"), json=body, headers=conftest.AUTH) as answer:
                assert answer.status == 400
                assert "customer.email" in (await answer.json())["error"]
        store = daemon.store
        assert await store.run(store.customer, "c-mallory") is None
        kate = await store.run(store.customer, "c-kate")
        assert kate is not None and (kate.name, kate.email) == ("Kate", "kate@example.com")
        assert await store.run(store.find_customer, "\u212aate@example.com") is None

        # ASCII letters still compare without case; other letters are kept as they are
        await post_event(daemon, known("e-4", email="KATE@Example.COM", name="Kate K."))
        await post_event(daemon, known("e-5", id="c-anna", email="Анна@пример.рф"))
        assert (await store.run(store.counts))["customers"] == 2
        kate = await store.run(store.customer, "c-kate")
        assert kate is not None and (kate.name, kate.email) == ("Kate K.", "kate@example.com")
        anna = await store.run(store.customer, "c-anna")
        assert anna is not None and anna.email == "Анна@пример.рф"


async def test_a_link_token_older_than_7_days_is_refused(project: Path, api: FakeBotApi) -> None:
    from boomerang.tokens import seal  # a token made in the past, new with the fix

    shop(project, api)
    async with conftest.running(project) as daemon:
        await post_event(daemon, known("e-1", **VICTIM))
        now = datetime.now(UTC)
        stale = seal(conftest.SECRET, "telegram", "c-kate", now=now - timedelta(days=7, minutes=1))
        fresh = seal(conftest.SECRET, "telegram", "c-kate", now=now - timedelta(days=6, hours=23))
        assert await hook(daemon, api.user_says(501, f"/start {stale}")) == 200
        store = daemon.store
        assert await store.run(store.find_customer, "501") is None
        assert await hook(daemon, api.user_says(502, f"/start {fresh}")) == 200
        assert (await store.run(store.customer, "c-kate")).telegram_chat_id == "502"
        assert [c.params["chat_id"] for c in api.sent()] == [501, 502]
        assert "link" in api.sent()[0].params["text"]  # told how to link


def readings(token: str) -> list[bytes]:
    """Every way an attacker would decode a token: the text itself, and each part of it (split
    at the separators a URL or a token might use) as base64 and base64url, from each of the
    four alignments, padded."""
    found = [token.encode()]
    for text in {token, *re.split(r"[.?=&/]", token)}:
        for start in range(4):
            piece = text[start:] + "=" * (-len(text[start:]) % 4)
            for decode in (base64.b64decode, base64.urlsafe_b64decode):
                try:
                    found.append(decode(piece))
                except (binascii.Error, ValueError):
                    continue
    return found


def assert_reveals_nothing(token: str, customer_id: str) -> None:
    """Neither the id's text nor, for a UUID, its 16 bytes show in any reading of the token."""
    hidden = [customer_id.encode()]
    if re.fullmatch(r"[0-9a-f]{8}(-[0-9a-f]{4}){3}-[0-9a-f]{12}", customer_id):
        hidden.append(bytes.fromhex(customer_id.replace("-", "")))
    for reading in readings(token):
        for secret in hidden:
            assert secret not in reading, (token, reading)


@pytest.mark.parametrize("customer_id", ["c-kate", "0b9d6c2e-5d1a-4c1e-9a57-3f2d8f1e7a11", "7215553011875"])
def test_tokens_reveal_no_customer_id(tmp_path: Path, customer_id: str) -> None:
    link = deep_link(make_config(tmp_path, token=TOKEN, bot_username="ShopBot"), customer_id)
    assert_reveals_nothing(link, customer_id)
    from boomerang.tokens import seal  # what the shop's server makes subscribe tokens with

    assert_reveals_nothing(seal(conftest.SECRET, "push", customer_id), customer_id)


def test_a_claim_takes_no_address_from_another_customer(database: Path | str) -> None:
    """What an unverified source (a public endpoint, a third-party plugin's) passes on: its
    customer is the one its id names, and an email or phone someone else has stays theirs."""
    store = Store(database)
    try:
        received = datetime(2026, 3, 5, tzinfo=UTC)
        kate = parse_event(known("e-1", **VICTIM))
        claim = parse_event(known("e-2", id="c-mallory", email="kate@example.com", phone="+79990003344"))
        store.ingest([kate], received)
        store.ingest([claim], received, verified=False)
        assert store.counts()["customers"] == 2
        mallory = store.customer("c-mallory")
        assert mallory is not None and (mallory.email, mallory.phone) == (None, "+79990003344")
        assert store.find_customer("kate@example.com").id == "c-kate"
    finally:
        store.close()


def test_a_browser_typing_a_customers_email_is_not_taken_for_them(database: Path | str) -> None:
    """Site tracking's claims (`_resolve_claim` with a browser): an email typed into a form
    that another customer has stays theirs; a signed id takes the browser and folds in its
    anonymous profile."""
    store = Store(database)
    try:
        now = datetime(2026, 3, 5, tzinfo=UTC)
        store.ingest([conftest.incoming("e-1", customer={"id": "c-kate", "email": "kate@example.com"})], now)
        browsing = conftest.incoming("e-2", "product.viewed", customer={"id": "x"})
        browsing.profile = ProfileUpdate(visitor="v" * 16)
        store.ingest([browsing], now, verified=False)
        anonymous = store.find_customer("v" * 16).id
        typed = parse_event(conftest.event("e-3", "site.identified", customer={"email": "kate@example.com"}))
        typed.profile.visitor = "v" * 16
        store.ingest([typed], now, verified=False)
        assert typed.customer_id == anonymous  # the browser's, not Kate's
        assert store.customer(anonymous).email is None
        signed = conftest.incoming("e-4", "site.identified", customer={"id": "c-kate"})
        signed.profile.visitor = "v" * 16
        store.ingest([signed], now, verified=False)
        assert store.find_customer("v" * 16).id == "c-kate"
        assert store.customer(anonymous) is None  # a profile of nothing but a browser: folded in
        assert [e["id"] for e in store.events_of("c-kate")] == ["e-1", "e-2", "e-3", "e-4"]
    finally:
        store.close()
