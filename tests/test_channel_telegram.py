"""The Telegram channel against a local Bot API server (tests/fakes/telegram_api.py): sendMessage and
its answers, rate limits, HTML conversion, deep links, the webhook, long polling, and the real
`boomerang run` sending a scenario's message through the bot."""

from __future__ import annotations

import asyncio
import json
import os
import re
import time
from pathlib import Path

import aiohttp
import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rate_buckets import RecordingRateLimits, migrated

from boomerang.config import Config, load_config
from boomerang.daemon import Daemon
from boomerang.kinds import IngestResult
from boomerang.model import Customer, Delivery, DeliveryStatus, Message
from boomerang.pacing import take_turns
from boomerang.plugins.channels import telegram
from boomerang.plugins.channels.telegram import (
    TelegramChannel,
    deep_link,
    link_parameter,
    read_link_parameter,
    register_channels,
    telegram_html,
)
from boomerang.problems import ProblemError
from boomerang.rate_limits import LocalRateLimits, rate_limits_for
from boomerang.store.rate_buckets import SharedRateLimits
from boomerang.templates import load_templates
from conftest import AUTH, SECRET, daemon_process, event, free_port, project_database, running, url, wait_for
from fakes.telegram_api import EntityError, FakeBotApi, parse_html

TOKEN = "123456:TEST-token_abc"
HOOK_SECRET = "hook-secret_0123456789"
TEMPLATE = """---
button: "Open the cart"
url: "{{ cart.url }}"
---
<h2>Your cart</h2>
<p>Hello, {{ customer.name }}! You left these:</p>
<ul>{% for item in cart.items %}
<li><a href="{{ item.url }}">{{ item.name }}</a> — {{ item.price }} €</li>
{% endfor %}</ul>
<p>Questions? Call us<br>+7 999 000-11-22</p>
"""


@pytest.fixture
async def api():
    """The fake Bot API, serving for one test."""
    async with FakeBotApi(TOKEN) as server:
        yield server


def make_config(tmp_path: Path, **telegram_settings) -> Config:
    """A config file with only `channels.telegram` (and the secret that signs link tokens)."""
    path = tmp_path / "boomerang.yaml"
    settings_ = json.dumps(telegram_settings)
    path.write_text(f"database: ./boomerang.db\nsecret: {SECRET}\nchannels:\n  telegram: {settings_}\n")
    return load_config(path)


def channel_for(tmp_path: Path, api: FakeBotApi) -> telegram.TelegramChannel:
    """The channel as the core gets it, pointed at the fake."""
    [channel] = register_channels(make_config(tmp_path, token=TOKEN, api_base=api.base), LocalRateLimits())
    return channel


def message(to: str = "4242", **fields) -> Message:
    """A rendered telegram message for chat `to`."""
    values = {
        "id": "m-1",
        "customer_id": "c-1",
        "channel": "telegram",
        "to": to,
        "template": "cart",
        "body": "Hello",
        "html": "<p>Hello</p>",
    }
    return Message(**{**values, **fields})


# sending
async def test_send_message_carries_sanitised_html_and_the_button(tmp_path: Path, api: FakeBotApi) -> None:
    folder = tmp_path / "templates" / "cart"
    folder.mkdir(parents=True)
    (folder / "telegram.en.html").write_text(TEMPLATE)
    library, problems = load_templates(tmp_path / "templates", None, {"telegram": TelegramChannel})
    assert problems == []
    cart = {
        "url": "https://shop.example/cart/abc?x=1&y=2",
        "items": [{"name": "Bike <Pro>", "price": 79.9, "url": "https://shop.example/p/b-1"}],
    }
    rendered = library.get("cart").render("telegram", ["en"], {"customer": {"name": "Anna"}, "cart": cart})
    channel = channel_for(tmp_path, api)
    try:
        delivery = await channel.send(message(html=rendered.html, body=rendered.body, extra=rendered.extra))
    finally:
        await channel.close()
    assert delivery.status is DeliveryStatus.SENT
    [call] = api.sent()
    assert delivery.provider_id == "4242:2"  # chat and Telegram's message id
    assert call.params["chat_id"] == 4242
    assert call.params["parse_mode"] == "HTML"
    assert call.params["text"] == (
        "<b>Your cart</b>\n\n"
        "Hello, Anna! You left these:\n\n"
        '• <a href="https://shop.example/p/b-1">Bike &lt;Pro&gt;</a> — 79.9 €\n\n'
        "Questions? Call us\n+7 999 000-11-22"
    )
    assert call.params["reply_markup"] == {
        "inline_keyboard": [[{"text": "Open the cart", "url": "https://shop.example/cart/abc?x=1&y=2"}]]
    }


async def test_a_link_without_button_text_goes_into_the_text(tmp_path: Path, api: FakeBotApi) -> None:
    channel = channel_for(tmp_path, api)
    try:
        plain = await channel.send(
            message(html=None, body="Plain & simple", extra={"url": "https://s.example/"})
        )
        html = await channel.send(message(to="4243", extra={"url": "https://s.example/?a=1&b=2"}))
    finally:
        await channel.close()
    assert plain.status is html.status is DeliveryStatus.SENT
    first, second = api.sent()
    assert first.params == {"chat_id": 4242, "text": "Plain & simple\n\nhttps://s.example/"}
    assert second.params["text"] == (
        'Hello\n\n<a href="https://s.example/?a=1&amp;b=2">https://s.example/?a=1&amp;b=2</a>'
    )
    assert "reply_markup" not in second.params
    # the outbox writes the very call it would make
    suffix, content = channel.outbox_file(message(extra={"button": "Go", "url": "https://s.example/"}))
    written = json.loads(content)
    assert suffix == ".json" and written["telegram"]["method"] == "sendMessage"
    assert (
        written["telegram"]["params"]["reply_markup"]["inline_keyboard"][0][0]["url"] == "https://s.example/"
    )


@pytest.mark.parametrize(
    ("arrange", "status", "retry_after"),
    [
        (lambda api: api.fail_next(429, "Too Many Requests: retry after 3", retry_after=3), "retry", 3),
        (lambda api: api.blocked.add("4242"), "address_invalid", None),
        (lambda api: api.missing.add("4242"), "address_invalid", None),
        (lambda api: api.fail_next(502, "Bad Gateway"), "retry", None),
        (lambda api: api.fail_next(400, "Bad Request: BUTTON_URL_INVALID"), "failed", None),
    ],
    ids=["429", "403-blocked", "400-chat-not-found", "502", "400-other"],
)
async def test_what_telegram_answers_decides_the_delivery(
    tmp_path: Path, api: FakeBotApi, arrange, status: str, retry_after: float | None
) -> None:
    arrange(api)
    channel = channel_for(tmp_path, api)
    try:
        delivery = await channel.send(message())
    finally:
        await channel.close()
    assert delivery.status.value == status
    assert delivery.retry_after == retry_after
    assert "Telegram" in delivery.detail
    if status == "address_invalid":
        assert api.calls_of("sendMessage")[0].params["chat_id"] == 4242


async def test_network_errors_and_a_missing_chat_id(tmp_path: Path) -> None:
    [channel] = register_channels(
        make_config(tmp_path, token=TOKEN, api_base=f"http://127.0.0.1:{free_port()}"), LocalRateLimits()
    )
    try:
        unreachable = await channel.send(message())
        no_chat = await channel.send(message(to=""))
    finally:
        await channel.close()
    assert unreachable.status is DeliveryStatus.RETRY
    assert TOKEN not in unreachable.detail
    assert no_chat.status is DeliveryStatus.ADDRESS_INVALID


async def test_html_telegram_cannot_parse_goes_as_plain_text(tmp_path: Path, api: FakeBotApi) -> None:
    api.fail_next(400, 'Bad Request: can\'t parse entities: Unsupported start tag "x" at byte offset 0')
    channel = channel_for(tmp_path, api)
    try:
        delivery = await channel.send(message(html="<p>Hi <b>there</b></p>", body="Hi there"))
    finally:
        await channel.close()
    assert delivery.status is DeliveryStatus.SENT
    [call] = api.sent()
    assert call.params == {"chat_id": 4242, "text": "Hi there"}


async def test_one_message_a_second_per_chat(tmp_path: Path, api: FakeBotApi) -> None:
    channel = channel_for(tmp_path, api)
    try:
        results = await asyncio.gather(
            channel.send(message(to="1", id="m-1")),
            channel.send(message(to="1", id="m-2")),
            channel.send(message(to="2", id="m-3")),
        )
    finally:
        await channel.close()
    assert all(d.status is DeliveryStatus.SENT for d in results)
    times = {}
    for call in api.sent():
        times.setdefault(call.params["chat_id"], []).append(call.at)
    assert times[1][1] - times[1][0] >= 0.9  # Telegram: about one message a second to one chat
    assert times[2][0] - times[1][0] < 0.5  # another chat does not wait for it


async def send_as_dispatch(channel: TelegramChannel, messages: list[Message]) -> list[Delivery]:
    """Send as `Dispatch` does: the messages' turns taken first from the channel's `pace`
    (`take_turns`, every turn within reach here), then each sent when its turn comes."""
    limits = channel.bot.limiter.rate_limits
    turns = await take_turns(limits, messages, [channel.pace(m) for m in messages], horizon=60)

    async def send(message: Message) -> Delivery:
        await turns.wait(message.id)
        return await channel.send(message)

    return await asyncio.gather(*(send(message) for message in messages))


async def test_at_most_about_25_messages_a_second(tmp_path: Path, api: FakeBotApi) -> None:
    channel = channel_for(tmp_path, api)
    try:  # 5 at once (a fifth of a second's worth), then 25 a second: 31 take over a second
        await send_as_dispatch(channel, [message(to=str(chat), id=f"m-{chat}") for chat in range(31)])
    finally:
        await channel.close()
    arrivals = sorted(call.at for call in api.sent())
    assert len(arrivals) == 31
    assert arrivals[-1] - arrivals[0] >= 0.9


async def test_the_bots_messages_take_from_the_bucket_of_its_id(tmp_path: Path, api: FakeBotApi) -> None:
    limits = RecordingRateLimits()
    config = make_config(tmp_path, token=TOKEN, api_base=api.base, per_second=10)
    [channel] = register_channels(config, limits)
    try:
        await send_as_dispatch(channel, [message()])
        await channel.bot.send_message({"chat_id": 7, "text": "linked"})  # a reply: not paced
    finally:
        await channel.close()
    # The bot's id, never the token's secret; a paced message's token is not taken again in send.
    assert limits.takes == [("telegram:123456", 1, 10.0, 2.0)] * 2


async def test_two_daemons_on_one_database_share_the_bots_rate(
    tmp_path: Path, api: FakeBotApi, postgresql_url: str
) -> None:
    migrated(postgresql_url)
    daemons = []
    for name in ("one", "two"):
        (tmp_path / name).mkdir()
        limits = rate_limits_for(postgresql_url)  # each daemon's own connection to the buckets
        [channel] = register_channels(make_config(tmp_path / name, token=TOKEN, api_base=api.base), limits)
        daemons.append((channel, limits))
    try:
        # Each daemon a batch of 20, to chats of its own, at the same time.
        batches = [
            [message(to=str(100 * index + chat), id=f"m-{index}-{chat}") for chat in range(20)]
            for index in range(len(daemons))
        ]
        sent_batches = await asyncio.gather(
            *(send_as_dispatch(channel, batch) for (channel, _), batch in zip(daemons, batches, strict=True))
        )
        sent = [delivery for batch in sent_batches for delivery in batch]
    finally:
        for channel, limits in daemons:
            await channel.close()
            await limits.close()
    assert [delivery.status for delivery in sent] == [DeliveryStatus.SENT] * 40
    arrivals = sorted(call.at for call in api.sent())
    assert len(arrivals) == 40
    # 5 at once, then 25 a second for both together: 35 more take 1.4 s (each alone: 0.6 s).
    assert arrivals[-1] - arrivals[0] >= 1.2


# HTML
def test_html_becomes_what_telegram_accepts() -> None:
    assert telegram_html("<p>One</p>\n<p>Two &amp; <em>three</em></p>") == "One\n\nTwo &amp; <i>three</i>"
    assert telegram_html("<ol><li>a</li><li>b<ul><li>c</li></ul></li></ol>") == "1. a\n2. b\n  • c"
    assert telegram_html("<div>x<br/>y</div><div>z</div>") == "x\ny\nz"
    assert telegram_html('<p>a <span class="x">b</span> <span class="tg-spoiler">c</span></p>') == (
        "a b <tg-spoiler>c</tg-spoiler>"
    )
    assert telegram_html("<style>p{color:red}</style><p>Hi&nbsp;&#39;you&#39;</p><img src='x' alt=''>") == (
        "Hi 'you'"
    )
    assert telegram_html(
        '<a href="javascript:alert(1)">x</a> <a href="https://a.example/?q=&quot;">y</a>'
    ) == ('x <a href="https://a.example/?q=&quot;">y</a>')
    assert telegram_html("<pre>  keep\n    this</pre>") == "<pre>  keep\n    this</pre>"
    assert telegram_html("<p><b>never <i>closed</p>after") == "<b>never <i>closed</i></b>\n\nafter"


_TAGS = ["p", "div", "b", "strong", "i", "em", "u", "s", "a", "span", "ul", "ol", "li", "h1", "table", "tr",
         "td", "pre", "code", "blockquote", "br", "img", "script", "font", "center"]  # fmt: skip
_PIECES = st.one_of(
    st.sampled_from([f"<{t}>" for t in _TAGS] + [f"</{t}>" for t in _TAGS]),
    st.sampled_from(
        ['<a href="https://x.example/?a=1&amp;b=2">', '<a href="ftp://x">', "<br/>", "&nbsp;", "&#60;"]
    ),
    st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=8),
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_PIECES, max_size=25))
def test_any_html_converts_to_something_telegram_parses(pieces: list[str]) -> None:
    converted = telegram_html("".join(pieces))
    try:
        parse_html(converted)
    except EntityError as exc:  # pragma: no cover - the failure message is the point
        raise AssertionError(f"{converted!r}: {exc}") from None


# deep links
def test_deep_links_carry_a_signed_customer_id(tmp_path: Path) -> None:
    config = make_config(tmp_path, token=TOKEN, bot_username="@ShopBot")
    link = deep_link(config, "c-42")
    prefix = "https://t.me/ShopBot?start="
    assert link.startswith(prefix)
    parameter = link[len(prefix) :]
    assert re.fullmatch(r"[A-Za-z0-9_-]{1,64}", parameter)  # Telegram's alphabet and length
    assert read_link_parameter(SECRET, parameter) == "c-42"
    assert read_link_parameter("another-secret-0123456789", parameter) is None
    assert read_link_parameter(SECRET, parameter[:-1] + ("A" if parameter[-1] != "A" else "B")) is None
    assert read_link_parameter(SECRET, link_parameter(SECRET, "c-43")[:-16] + parameter[-16:]) is None
    uuid = "0b9d6c2e-5d1a-4c1e-9a57-3f2d8f1e7a11"  # a 36-character id still fits
    assert read_link_parameter(SECRET, link_parameter(SECRET, uuid)) == uuid
    with pytest.raises(ValueError, match="too long"):
        link_parameter(SECRET, "x" * 37)
    with pytest.raises(ValueError, match="bot_username"):
        deep_link(make_config(tmp_path, token=TOKEN), "c-42")


# configuration
def test_settings_errors_point_at_their_place(tmp_path: Path) -> None:
    path = tmp_path / "boomerang.yaml"
    path.write_text(
        "database: ./boomerang.db\n"
        "channels:\n"
        "  telegram:\n"
        "    token: not-a-token\n"
        "    api_base: api.telegram.org\n"
        "    mode: pollng\n"
        "    webhook_secret: has spaces\n"
        "    bot_name: ShopBot\n"
        "    per_second: fast\n"
    )
    with pytest.raises(ProblemError) as caught:
        register_channels(load_config(path), LocalRateLimits())
    assert str(caught.value).splitlines() == [
        f"{path}:4:12: error: 'token' does not look like a bot token from @BotFather (123456789:AAE...)",
        f"{path}:5:15: error: 'api_base': 'api.telegram.org' is not an http(s) URL such as "
        "https://api.telegram.org",
        f"{path}:6:11: error: 'mode': 'pollng' is not one of webhook, polling (did you mean 'polling'?)",
        f"{path}:7:21: error: 'webhook_secret' must be 1 to 256 characters of A-Z, a-z, 0-9, _ and - "
        "(Telegram's rule)",
        f"{path}:8:5: error: unknown telegram setting 'bot_name' (did you mean 'bot_username'?)",
        f"{path}:9:17: error: 'per_second' must be a number above 0, such as 1 or 2.5",
    ]
    path.write_text("database: ./boomerang.db\nchannels:\n  telegram: {api_base: https://x.example}\n")
    with pytest.raises(ProblemError, match=r":3:13: error: 'token' is required"):
        register_channels(load_config(path), LocalRateLimits())


# the daemon: webhook, linking, replies, polling
HANDOVER = """
scenario: telegram-handover
description: A customer wrote to the bot; tell them a person will answer (seed S1).
category: transactional
trigger: {event: message.replied}
steps:
  - send: handover
    channels: [telegram]
"""
HANDOVER_TEMPLATE = (
    "<p>Thanks, {{ customer.name }}! A person will answer you here.</p><p>You wrote: <i>{{ text }}</i></p>\n"
)


def telegram_project(project: Path, api_base: str, mode: str = "webhook") -> None:
    """The `boomerang init` project, sending for real through the bot, with our own scenario only."""
    config = project / "boomerang.yaml"
    settings_ = json.dumps(
        {
            "token": TOKEN,
            "api_base": api_base,
            "bot_username": "ShopBot",
            "webhook_secret": HOOK_SECRET,
            "mode": mode,
        }
    )
    text = config.read_text().replace("outbox: ./outbox\n", "")
    text = re.sub(r"(?m)^(  email: .*\n)", lambda m: m.group(1) + f"  telegram: {settings_}\n", text)
    config.write_text(text)
    for old in (project / "scenarios").glob("*.yaml"):
        old.unlink()
    (project / "scenarios" / "handover.yaml").write_text(HANDOVER)
    (project / "templates" / "handover").mkdir()
    (project / "templates" / "handover" / "telegram.en.html").write_text(HANDOVER_TEMPLATE)


async def hook(daemon: Daemon, update: dict, secret: str | None = HOOK_SECRET) -> int:
    """POST an update to the daemon's webhook; the HTTP status."""
    headers = {"X-Telegram-Bot-Api-Secret-Token": secret} if secret is not None else {}
    async with (
        aiohttp.ClientSession() as session,
        session.post(url(daemon, "/hooks/telegram"), json=update, headers=headers) as answer,
    ):
        return answer.status


async def post_event(daemon: Daemon, event: dict) -> None:
    """POST one generic event to the daemon."""
    async with (
        aiohttp.ClientSession() as session,
        session.post(url(daemon, "/events"), data=json.dumps(event), headers=AUTH) as answer,
    ):
        assert answer.status == 200, await answer.text()


def customer_event(event_id: str, **customer) -> dict:
    """A generic event that only tells who the customer is."""
    return event(event_id, "customer.created", **customer)


def parameter_of(link: str) -> str:
    """The start parameter of a deep link."""
    return link.partition("?start=")[2]


async def test_webhook_needs_the_secret_header(project: Path, api: FakeBotApi) -> None:
    telegram_project(project, api.base)
    async with running(project) as daemon:
        update = api.user_says(777, "hello")
        assert await hook(daemon, update, secret=None) == 403
        assert await hook(daemon, update, secret="wrong") == 403
        assert await hook(daemon, update) == 200
        async with aiohttp.ClientSession() as session:
            headers = {"X-Telegram-Bot-Api-Secret-Token": HOOK_SECRET}
            async with session.post(url(daemon, "/hooks/telegram"), data="{", headers=headers) as answer:
                assert answer.status == 400


async def test_start_with_a_signed_token_links_the_chat(project: Path, api: FakeBotApi) -> None:
    telegram_project(project, api.base)
    async with running(project) as daemon:
        store = daemon.store
        await post_event(daemon, customer_event("e-1", id="c-42", name="Anna", email="anna@example.com"))
        link = deep_link(daemon.project.config, "c-42")
        # templates get the same link from telegram_link()
        rendered = daemon.project.environment.from_string("{{ telegram_link() }}").render(
            customer={"id": "c-42"}
        )
        assert rendered == link

        update = api.user_says(777, f"/start {parameter_of(link)}", language="ru")
        assert await hook(daemon, update) == 200
        customer = await store.run(store.find_customer, "777")
        assert (customer.id, customer.telegram_chat_id, customer.email) == ("c-42", "777", "anna@example.com")
        [welcome] = api.sent()
        assert welcome.params["chat_id"] == 777 and welcome.params["text"].startswith("Готово")
        events = await store.run(store.events_of, "c-42")
        assert [e["id"] for e in events if e["type"] == "customer.updated"] == [
            f"telegram.start:{update['update_id']}"
        ]

        # Telegram delivers an update again when unsure: stored once, welcomed once.
        assert await hook(daemon, update) == 200
        assert len(api.sent()) == 1

        # a forged token links nothing; the user is told how to link
        forged = parameter_of(link)[:-16] + parameter_of(deep_link(daemon.project.config, "c-43"))[-16:]
        assert await hook(daemon, api.user_says(778, f"/start {forged}")) == 200
        assert await hook(daemon, api.user_says(779, "/start")) == 200
        assert await store.run(store.find_customer, "778") is None
        assert await store.run(store.find_customer, "c-43") is None
        assert [c.params["chat_id"] for c in api.sent()[1:]] == [778, 779]
        assert "link" in api.sent()[1].params["text"]


async def test_text_from_a_linked_chat_is_a_reply_a_scenario_hands_over(
    project: Path, api: FakeBotApi
) -> None:
    telegram_project(project, api.base)
    async with running(project) as daemon:
        store = daemon.store
        await post_event(daemon, customer_event("e-1", id="c-42", name="Anna", telegram_chat_id="777"))
        counts = await store.run(store.counts)

        # a chat nobody linked is not a customer: nothing is stored
        assert await hook(daemon, api.user_says(999, "who are you?")) == 200
        assert await store.run(store.counts) == counts

        update = api.user_says(777, "Can a person call me?")
        assert await hook(daemon, update) == 200
        [replied] = [e for e in await store.run(store.events_of, "c-42") if e["type"] == "message.replied"]
        assert replied["id"] == f"telegram.update:{update['update_id']}"
        assert replied["data"]["text"] == "Can a person call me?"

        # the hand-over scenario answered in the chat, with the customer's words
        async def answered() -> bool:
            return bool(api.sent())

        await wait_for(answered)
        [handover] = api.sent()
        assert handover.params["chat_id"] == 777
        assert handover.params["text"] == (
            "Thanks, Anna! A person will answer you here.\n\nYou wrote: <i>Can a person call me?</i>"
        )


async def test_a_daemon_on_postgresql_keeps_the_bots_rate_in_the_database(
    project: Path, api: FakeBotApi, postgresql_url: str
) -> None:
    telegram_project(project, api.base)
    config = project / "boomerang.yaml"
    config.write_text(re.sub(r"(?m)^database: .*$", f"database: {postgresql_url}", config.read_text()))
    async with running(project) as daemon:
        assert isinstance(daemon.rate_limits, SharedRateLimits)
        await post_event(daemon, customer_event("e-1", id="c-42", name="Anna", telegram_chat_id="777"))
        assert await hook(daemon, api.user_says(777, "Can a person call me?")) == 200

        async def answered() -> bool:
            return bool(api.sent())

        await wait_for(answered)
    with psycopg.connect(postgresql_url) as conn:
        buckets = conn.execute("SELECT name FROM rate_buckets").fetchall()
    assert buckets == [("telegram:123456",)]


async def test_polling_mode_links_chats_through_get_updates(project: Path, api: FakeBotApi) -> None:
    telegram_project(project, api.base, mode="polling")
    api.webhook_url = "https://old.example/hook"  # getUpdates refuses while a webhook is set
    async with running(project) as daemon:
        store = daemon.store
        link = deep_link(daemon.project.config, "c-42")
        first = api.user_says(555, f"/start {parameter_of(link)}")

        async def linked(chat: str, customer_id: str = "c-42") -> bool:
            customer = await store.run(store.find_customer, chat)
            return customer is not None and customer.id == customer_id

        await wait_for(lambda: linked("555"))
        assert api.calls_of("deleteWebhook")
        assert await hook(daemon, {"update_id": 1}) == 404  # no webhook in polling mode

        # a reload replaces the source; polling goes on through the new one
        assert await daemon.reload()
        api.user_says(556, f"/start {parameter_of(deep_link(daemon.project.config, 'c-43'))}")
        await wait_for(lambda: linked("556", "c-43"))
        offsets = [c.params.get("offset") for c in api.calls_of("getUpdates")]
        assert first["update_id"] + 1 in offsets  # each update is confirmed once stored
        assert [c.params["chat_id"] for c in api.sent()] == [555, 556]  # the welcomes


async def test_a_reload_switches_from_webhook_to_polling(project: Path, api: FakeBotApi) -> None:
    telegram_project(project, api.base)
    async with running(project) as daemon:
        store = daemon.store
        await asyncio.sleep(0.2)
        assert api.calls_of("getUpdates") == []  # a webhook bot does not poll

        config = project / "boomerang.yaml"
        config.write_text(config.read_text().replace('"mode": "webhook"', '"mode": "polling"'))
        assert await daemon.reload()
        assert await hook(daemon, {"update_id": 1}) == 404  # the webhook is off now
        api.user_says(557, f"/start {parameter_of(deep_link(daemon.project.config, 'c-44'))}")

        async def linked() -> bool:
            customer = await store.run(store.find_customer, "557")
            return customer is not None and customer.id == "c-44"

        await wait_for(linked)


class Collected:
    """An Ingest that keeps what it is given, with no store behind it: every chat is linked to a
    customer of its own."""

    def __init__(self) -> None:
        self.events: list = []

    async def __call__(self, events: list, source: str) -> IngestResult:
        self.events.extend(events)
        return IngestResult(accepted=len(events), duplicates=0)

    async def customer(self, identity: str) -> Customer:
        return Customer(f"chat-{identity}", telegram_chat_id=identity)


async def test_the_poller_outlives_errors_and_stops_at_once(tmp_path: Path, api: FakeBotApi) -> None:
    [source] = telegram.register_sources(
        make_config(tmp_path, token=TOKEN, api_base=api.base, mode="polling"), LocalRateLimits()
    )
    ingest, stop = Collected(), asyncio.Event()
    poller = asyncio.create_task(source.poll(ingest, stop))
    try:

        async def received(count: int) -> bool:
            return len(ingest.events) >= count

        api.user_says(5, "first")
        await wait_for(lambda: received(1))
        api.webhook_url = "https://elsewhere.example/hook"  # someone set a webhook: getUpdates gets 409
        api.user_says(5, "second")
        await wait_for(lambda: received(2))
        third = api.user_says(5, "third")
        await wait_for(lambda: received(3))
        assert len(api.calls_of("deleteWebhook")) == 2  # at the start, and after the 409
        assert [e.data["text"] for e in ingest.events] == ["first", "second", "third"]
        assert {e.type for e in ingest.events} == {"message.replied"}
        assert ingest.events[0].profile.telegram_chat_id == "5"

        def long_polling() -> bool:
            # the poller has confirmed the third update: its next getUpdates waits for a fourth
            offsets = [int(c.params.get("offset") or 0) for c in api.calls_of("getUpdates")]
            return max(offsets) > third["update_id"]

        await wait_for(long_polling)
        started = time.monotonic()
        stop.set()
        await asyncio.wait_for(poller, 2)
        assert time.monotonic() - started < 0.5
    finally:
        poller.cancel()
        await source.close()


# the real daemon, end to end
HELLO = """
scenario: telegram-hello
category: trigger
trigger: {event: signup.completed}
steps:
  - send: hello
    channels: [telegram]
"""
HELLO_TEMPLATE = """---
button: "Shop now"
url: "https://shop.example/new?c={{ customer.id }}"
---
<p>Hi {{ customer.name }}!</p>
<ul><li>New arrivals</li><li>Free delivery</li></ul>
<p>See <a href="https://shop.example/new">what is new</a>.</p>
"""


@pytest.mark.slow
async def test_boomerang_run_sends_a_scenario_message_through_the_bot(
    project: Path, api: FakeBotApi, tmp_path: Path
) -> None:
    telegram_project(project, api.base)
    (project / "scenarios" / "hello.yaml").write_text(HELLO)
    (project / "templates" / "hello").mkdir()
    (project / "templates" / "hello" / "telegram.en.html").write_text(HELLO_TEMPLATE)
    port = int(os.environ["BOOMERANG_PORT"])
    log = tmp_path / "daemon.log"
    async with daemon_process(project, log), aiohttp.ClientSession() as session:
        signup = {
            "id": "s-1",
            "type": "signup.completed",
            "at": "2026-03-02T10:00:00Z",
            "customer": {"id": "c-7", "name": "Anna", "telegram_chat_id": "555"},
        }
        async with session.post(
            f"http://127.0.0.1:{port}/events", data=json.dumps(signup), headers=AUTH
        ) as answer:
            assert answer.status == 200

        async def sent() -> bool:
            return bool(api.sent())

        await wait_for(sent)
    [call] = api.sent()
    assert call.params["chat_id"] == 555
    assert call.params["parse_mode"] == "HTML"
    text = call.params["text"]
    assert text.startswith('Hi Anna!\n\n• New arrivals\n• Free delivery\n\nSee <a href="')
    assert re.search(r'<a href="http://[^"]+/c/[^"]+">what is new</a>\.$', text)  # a tracked link
    assert call.params["reply_markup"] == {
        "inline_keyboard": [[{"text": "Shop now", "url": "https://shop.example/new?c=c-7"}]]
    }
    with project_database(project) as db:
        rows = db.execute("SELECT channel, status, provider_id FROM messages").fetchall()
    assert rows == [("telegram", "sent", "555:2")]
