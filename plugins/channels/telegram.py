"""The Telegram channel: messages through the Bot API, chats linked to customers by deep links.

Configured under `channels.telegram`:

```yaml
channels:
  telegram:
    token: ${TELEGRAM_TOKEN}               # from @BotFather
    api_base: https://api.telegram.org     # the Bot API server (a local one in tests)
    bot_username: ShopBot                  # for deep links https://t.me/ShopBot?start=...
    webhook_secret: ${TELEGRAM_WEBHOOK_SECRET}   # checked on POST /hooks/telegram
    mode: webhook                          # or polling: getUpdates, no public URL needed
```

Sending: `sendMessage` with `parse_mode: HTML`. Telegram accepts only a few tags, so the
template's HTML is converted: paragraphs, lists and line breaks become text and newlines,
headings bold, links stay links, anything else keeps only its text. The front matter's `button`
and `url` become an inline keyboard button. At most about 25 messages a second go out in all,
and at most one a second to any one chat. The Bot API takes no idempotency key: a message sent
again after a crash (transactional only) arrives twice.

Linking: `deep_link(config, customer_id)` (in templates `telegram_link()`) gives
`https://t.me/<bot_username>?start=<token>`, a sealed token (core/tokens.py) that reveals no id
and expires after 7 days. When the customer opens it and presses Start, the bot gets `/start
<token>`: a `customer.updated` event links the chat to the customer and the bot says hello.
Whoever holds a link can use it, so what it claims is limited: the chat moves to that customer
(away from any other customer it was linked to), two customers are never merged, and a customer
whose own chat still works keeps it (the new chat is told so). Later text from a linked chat
becomes a `message.replied` event, so a scenario can hand the dialogue to a person (seed S1).
Updates arrive on `POST /hooks/telegram` (mode `webhook`; register it once with the Bot API's
`setWebhook`, giving `secret_token`) or by long polling `getUpdates` (mode `polling`).
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import html
import json
import logging
import re
import weakref
from dataclasses import dataclass, field
from datetime import UTC, datetime
from html.parser import HTMLParser
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from jinja2 import pass_context

from boomerang import hookimpl
from boomerang.bodies import BodyError, read_json
from boomerang.config import Config
from boomerang.ingest import EventError, parse_event
from boomerang.kinds import Channel, Ingest, Route, SendsInFlight, Source
from boomerang.model import Customer, Delivery, DeliveryStatus, Event, Message
from boomerang.problems import Problem, ProblemError, did_you_mean
from boomerang.tokens import SEALED_OVERHEAD, seal, unseal
from boomerang.yamlfile import key_position

if TYPE_CHECKING:
    import aiohttp
    from aiohttp import web
    from jinja2.runtime import Context

log = logging.getLogger(__name__)

SETTINGS = ("token", "api_base", "bot_username", "webhook_secret", "mode")
MODES = ("webhook", "polling")
DEFAULT_API_BASE = "https://api.telegram.org"
WEBHOOK_PATH = "/hooks/telegram"
SECRET_HEADER = "X-Telegram-Bot-Api-Secret-Token"

MAX_TEXT = 4096  # characters of a message after its entities are parsed
MAX_START_PARAMETER = 64  # Telegram's limit for ?start=..., characters A-Z a-z 0-9 _ -
MAX_LINKED_ID = MAX_START_PARAMETER * 3 // 4 - SEALED_OVERHEAD  # bytes of customer id in a deep link
MESSAGES_PER_SECOND = 25.0  # overall, below Telegram's ~30/s
CHAT_INTERVAL = 1.0  # seconds between two messages to one chat
LATEST_TIMESTAMP = 253402300799  # 9999-12-31T23:59:59Z, the last second a datetime holds
REQUEST_TIMEOUT = 30.0
POLL_TIMEOUT = 25  # seconds a getUpdates long poll may wait for updates
POLL_BACKOFF_MAX = 60.0
UPDATE_ATTEMPTS = 5  # a polled update that fails this often is skipped

_TOKEN = re.compile(r"^\d+:[A-Za-z0-9_-]+$")
_USERNAME = re.compile(r"^@?[A-Za-z][A-Za-z0-9_]{3,31}$")
_WEBHOOK_SECRET = re.compile(r"^[A-Za-z0-9_-]{1,256}$")
_URL = re.compile(r"^(https?|tg)://\S+$", re.IGNORECASE)

REPLIES = {
    "welcome": {
        "en": "Done: the shop's messages will come here. If you need help, just write to us here.",
        "ru": "Готово: сообщения магазина будут приходить сюда. "
        "Если нужна помощь, просто напишите нам здесь.",
        "uk": "Готово: повідомлення магазину надходитимуть сюди. "
        "Якщо потрібна допомога, просто напишіть нам тут.",
    },
    "linked_elsewhere": {
        "en": "This shop account already gets its messages in another Telegram chat. "
        "If that chat is no longer yours, write to the shop.",
        "ru": "Сообщения этого аккаунта магазина уже приходят в другой чат Telegram. "
        "Если тот чат больше не ваш, напишите магазину.",
        "uk": "Повідомлення цього облікового запису магазину вже надходять до іншого чату Telegram. "
        "Якщо той чат більше не ваш, напишіть магазину.",
    },
    "not_linked": {
        "en": "Hello! To get the shop's messages here, open the Telegram link on the shop's website "
        "or in one of its emails.",
        "ru": "Здравствуйте! Чтобы получать сообщения магазина здесь, откройте ссылку на Telegram "
        "на сайте магазина или в письме магазина.",
        "uk": "Вітаємо! Щоб отримувати повідомлення магазину тут, відкрийте посилання на Telegram "
        "на сайті магазину чи в листі магазину.",
    },
}


# settings
@dataclass(frozen=True)
class TelegramSettings:
    """`channels.telegram`, validated, with the installation's `secret` for link tokens."""

    token: str
    api_base: str = DEFAULT_API_BASE
    bot_username: str | None = None
    webhook_secret: str | None = None
    mode: str = "webhook"
    secret: str | None = None
    default_locale: str = "en"
    outbox: bool = False  # messages go to the outbox: the bot's own replies are not sent either


def read_settings(config: Config) -> TelegramSettings:
    """Validate `channels.telegram`; raises `ProblemError` pointing at every wrong setting."""
    raw = config.channels.get("telegram") or {}
    problems: list[Problem] = []

    def problem(key: str | None, message: str) -> None:
        keys = ("channels", "telegram", key) if key else ("channels", "telegram")
        problems.append(config.problem(keys, message))

    def text(key: str) -> str | None:
        value = raw.get(key)
        if value is None or value == "":
            return None
        if isinstance(value, bool) or not isinstance(value, str | int | float):
            problem(key, f"'{key}' must be a text value")
            return None
        return str(value).strip()

    for key in raw:
        if key not in SETTINGS:
            # at the key itself, as the core reports its own unknown settings
            line, col = key_position(raw, key)
            problems.append(
                Problem(
                    str(config.path),
                    line,
                    col,
                    f"unknown telegram setting '{key}'{did_you_mean(str(key), SETTINGS)}",
                )
            )
    token = text("token")
    if token is None:
        problem(None if "token" not in raw else "token", "'token' is required: the bot token from @BotFather")
    elif not _TOKEN.match(token):
        problem("token", "'token' does not look like a bot token from @BotFather (123456789:AAE...)")
    api_base = text("api_base") or DEFAULT_API_BASE
    if not re.match(r"^https?://[^/\s]+", api_base):
        problem("api_base", f"'api_base': '{api_base}' is not an http(s) URL such as {DEFAULT_API_BASE}")
    username = text("bot_username")
    if username is not None and not _USERNAME.match(username):
        problem("bot_username", f"'bot_username': '{username}' is not a Telegram username such as ShopBot")
    webhook_secret = text("webhook_secret")
    if webhook_secret is not None and not _WEBHOOK_SECRET.match(webhook_secret):
        problem(
            "webhook_secret",
            "'webhook_secret' must be 1 to 256 characters of A-Z, a-z, 0-9, _ and - (Telegram's rule)",
        )
    mode = (text("mode") or "webhook").lower()
    if mode not in MODES:
        problem("mode", f"'mode': '{mode}' is not one of {', '.join(MODES)}{did_you_mean(mode, MODES)}")
    if problems:
        raise ProblemError(problems)
    assert token is not None
    return TelegramSettings(
        token=token,
        api_base=api_base.rstrip("/"),
        bot_username=username.lstrip("@") if username else None,
        webhook_secret=webhook_secret,
        mode=mode,
        secret=config.secret,
        default_locale=config.default_locale,
        outbox=config.outbox is not None,
    )


# deep links
def link_parameter(secret: str, customer_id: str) -> str:
    """The `start` parameter that links a chat to `customer_id`: a sealed token (core/tokens.py).

    It is already in Telegram's alphabet; raises ValueError when the id makes it longer than
    Telegram's 64 characters.
    """
    parameter = seal(secret, "telegram", customer_id)
    if len(parameter) > MAX_START_PARAMETER:
        raise ValueError(
            f"customer id '{customer_id}' is too long for a Telegram deep link "
            f"(at most {MAX_LINKED_ID} bytes, or a UUID)"
        )
    return parameter


def read_link_parameter(secret: str, parameter: str) -> str | None:
    """The customer id of a genuine `start` parameter made within the last 7 days, or None."""
    if len(parameter) > MAX_START_PARAMETER:
        return None
    return unseal(secret, "telegram", parameter)


def deep_link(config: Config, customer_id: str) -> str:
    """`https://t.me/<bot_username>?start=<token>`: opening it and pressing Start links the chat.

    Needs `secret` and `channels.telegram.bot_username` in the config; raises ValueError otherwise.
    """
    raw = config.channels.get("telegram")
    if raw is None:
        raise ValueError("the telegram channel is not configured (channels.telegram)")
    return _deep_link(config.secret, str(raw.get("bot_username") or ""), str(customer_id))


def _deep_link(secret: str | None, bot_username: str | None, customer_id: str) -> str:
    username = (bot_username or "").strip().lstrip("@")
    if not username:
        raise ValueError("a Telegram deep link needs channels.telegram.bot_username")
    if not secret:
        raise ValueError("a Telegram deep link needs 'secret' in the config to sign it")
    if not customer_id:
        raise ValueError("a Telegram deep link needs a customer id")
    return f"https://t.me/{username}?start={link_parameter(secret, customer_id)}"


# The configuration loaded last, for `telegram_link()` in templates: `register_conditions`
# is given no config, so the channel's registration leaves what links need here.
_linking: dict[str, str | None] = {}


@pass_context
def telegram_link(context: Context, customer_id: str | None = None) -> str:
    """In templates: the deep link for `customer_id`, by default the customer the message is for."""
    if customer_id is None:
        customer = context.get("customer") or {}
        customer_id = customer.get("id") if isinstance(customer, dict) else None
    if "bot_username" not in _linking:
        raise ValueError("telegram_link(): the telegram channel is not configured")
    return _deep_link(_linking.get("secret"), _linking.get("bot_username"), str(customer_id or ""))


# HTML for Telegram
_ALLOWED = {
    "b": "b",
    "strong": "b",
    "i": "i",
    "em": "i",
    "u": "u",
    "ins": "u",
    "s": "s",
    "strike": "s",
    "del": "s",
    "code": "code",
    "pre": "pre",
    "a": "a",
    "blockquote": "blockquote",
    "tg-spoiler": "tg-spoiler",
    **{f"h{n}": "b" for n in range(1, 7)},
}
_PARAGRAPH = {"p", "ul", "ol", "table", "blockquote", "pre", "dl", "section", "article", "header", "footer"}
_PARAGRAPH |= {f"h{n}" for n in range(1, 7)}
_LINE = {"div", "tr", "li", "dt", "dd", "hr", "address", "figure", "figcaption", "center", "main", "nav"}
_LINE |= {"aside", "caption", "form", "fieldset", "details", "summary", "thead", "tbody", "tfoot"}
_HIDDEN = {"script", "style", "head", "title", "template", "noscript", "svg"}
_VOID = {"br", "img", "hr", "meta", "link", "input", "wbr", "col", "source", "area", "base", "embed"}
_VOID |= {"param", "track"}


@dataclass
class _Element:
    tag: str
    emitted: str | None = None  # the Telegram tag written for it, if any
    counter: int = 0  # items so far, for <ol>


class _TelegramHtml(HTMLParser):
    """Rewrites HTML into Telegram's subset: the allowed tags, text, and newlines for blocks."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.out: list[str] = []
        self.stack: list[_Element] = []
        self.started = False  # something visible was written
        self.breaks = 0  # newlines owed before the next thing written
        self.space = False  # a collapsed space owed before the next text
        self.at_space = True  # the last visible character written is a space or a newline
        self.after_bullet = False  # a list item's bullet was just written: no break before its text

    # writing
    def _flush(self) -> None:
        if self.started and self.breaks:
            self.out.append("\n" * self.breaks)
            self.at_space = True
        elif self.started and self.space and not self.at_space:
            self.out.append(" ")
            self.at_space = True
        self.breaks, self.space = 0, False

    def _write(self, text: str) -> None:
        self._flush()
        self.out.append(text)
        self.started = True
        self.at_space = text.endswith((" ", "\n"))
        self.after_bullet = False

    def _break(self, count: int) -> None:
        if self.started and not self.after_bullet:
            self.breaks = max(self.breaks, count)
            self.space = False

    def _inside(self, *tags: str) -> bool:
        return any(element.emitted in tags for element in self.stack)

    # the parser's callbacks
    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        """Open an element: write its Telegram tag, or start its block."""
        if self._inside_hidden() or tag in _HIDDEN:
            if tag not in _VOID:
                self.stack.append(_Element(tag))
            return
        if tag == "br":
            if self.started and not self.after_bullet:
                self.breaks = min(self.breaks + 1, 2)
                self.space = False
            return
        if tag in _VOID:
            if tag == "hr":
                self._break(2)
            return
        element = _Element(tag)
        if tag in _PARAGRAPH:
            self._break(1 if self._in_list() else 2)
        elif tag in _LINE:
            self._break(1)
        opening = self._opening(tag, dict(attrs))
        self.stack.append(element)
        if tag == "li":
            self._bullet()
        if opening:
            element.emitted = opening.split()[0].strip("<>")
            self._flush()
            self.out.append(opening)

    def _opening(self, tag: str, attrs: dict[str, str | None]) -> str | None:
        """The Telegram tag to write for an element, or None to keep only its text."""
        if self._inside("pre", "code"):
            if tag == "code" and self.stack and self.stack[-1].emitted == "pre":
                language = (attrs.get("class") or "").strip()
                if re.fullmatch(r"language-[A-Za-z0-9_+#.-]+", language):
                    return f'<code class="{language}">'
                return "<code>"
            return None
        if tag == "span" and "tg-spoiler" in (attrs.get("class") or "").split():
            return "<tg-spoiler>"
        name = _ALLOWED.get(tag)
        if name is None or (name in ("a", "blockquote") and self._inside(name)):
            return None
        if name == "a":
            href = (attrs.get("href") or "").strip()
            if not _URL.match(href):
                return None
            return f'<a href="{html.escape(href, quote=True)}">'
        return f"<{name}>"

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        """`<br/>`: the same as `<br>`."""
        self.handle_starttag(tag, attrs)
        if tag not in _VOID and self.stack and self.stack[-1].tag == tag:
            self._close(self.stack.pop())

    def handle_endtag(self, tag: str) -> None:
        """Close the element and any left open inside it."""
        if tag in _VOID or not any(element.tag == tag for element in self.stack):
            return
        while self.stack:
            element = self.stack.pop()
            self._close(element)
            if element.tag == tag:
                break

    def _close(self, element: _Element) -> None:
        if element.tag in _HIDDEN or self._inside_hidden():
            return
        if element.emitted:
            self.out.append(f"</{element.emitted}>")
        if element.tag in _PARAGRAPH:
            self._break(1 if self._in_list() else 2)
        elif element.tag in _LINE:
            self._break(1)
        elif element.tag in ("td", "th"):
            self.space = True

    def handle_data(self, data: str) -> None:
        """Text: escaped for Telegram; whitespace collapsed as a browser would, except in <pre>."""
        if self._inside_hidden():
            return
        if self._inside("pre"):
            if data:
                self._write(html.escape(data, quote=False))
            return
        collapsed = re.sub(r"\s+", " ", data)
        if not collapsed.strip():
            if collapsed:
                self.space = True
            return
        if collapsed.startswith(" "):
            self.space = True
        self._write(html.escape(collapsed.strip(), quote=False))
        self.space = collapsed.endswith(" ")

    # lists
    def _in_list(self) -> bool:
        return any(element.tag in ("ul", "ol") for element in self.stack)

    def _bullet(self) -> None:
        lists = [element for element in self.stack if element.tag in ("ul", "ol")]
        if not lists:
            self._write("• ")
            self.after_bullet = True
            return
        current = lists[-1]
        current.counter += 1
        indent = "  " * (len(lists) - 1)
        self._write(indent + (f"{current.counter}. " if current.tag == "ol" else "• "))
        self.after_bullet = True

    def _inside_hidden(self) -> bool:
        return any(element.tag in _HIDDEN for element in self.stack)

    def result(self) -> str:
        """The converted text, every tag closed."""
        self.close()
        while self.stack:
            self._close(self.stack.pop())
        return "".join(self.out)


def telegram_html(source: str) -> str:
    """Convert a template's HTML into what `sendMessage` accepts with `parse_mode: HTML`.

    Telegram allows only b/strong, i/em, u/ins, s/strike/del, a href, code, pre, blockquote
    and spoilers, and only the entities `&lt; &gt; &amp; &quot;` and numeric ones. Paragraphs
    and headings become blank-line separated (headings bold), `<br>` and `<div>` newlines,
    list items `• ` or `1. ` lines; images, scripts and styles go; other tags keep their text.
    """
    parser = _TelegramHtml()
    parser.feed(source)
    return parser.result()


def visible_length(text: str) -> int:
    """How long Telegram counts a text with its tags removed (UTF-16 code units)."""
    plain = html.unescape(re.sub(r"<[^>]*>", "", text))
    return len(plain.encode("utf-16-le")) // 2


# the Bot API
class ApiError(Exception):
    """The Bot API said no (`"ok": false`), or answered something that is not the Bot API."""

    def __init__(self, status: int, description: str, parameters: dict[str, Any] | None = None):
        super().__init__(f"{status}: {description}")
        self.status = status
        self.description = description
        self.parameters = parameters or {}

    @property
    def retry_after(self) -> float | None:
        """Seconds to wait, when Telegram said so (429)."""
        value = self.parameters.get("retry_after")
        return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


@dataclass
class _ChatSlot:
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    last: float = float("-inf")  # loop time of the last message to this chat
    held_until: float = float("-inf")  # no message before this (after a 429)


class RateLimiter:
    """Spaces messages: at most `per_second` overall, one per `chat_interval` seconds per chat."""

    def __init__(self, per_second: float = MESSAGES_PER_SECOND, chat_interval: float = CHAT_INTERVAL):
        self.interval = 1.0 / per_second
        self.chat_interval = chat_interval
        self._next = float("-inf")  # loop time of the next free slot overall
        self._chats: dict[str, _ChatSlot] = {}

    async def wait(self, chat: str) -> None:
        """Return when a message to `chat` may go; messages to one chat go in call order."""
        loop = asyncio.get_running_loop()
        slot = self._chats.setdefault(chat, _ChatSlot())
        async with slot.lock:
            delay = max(slot.last + self.chat_interval, slot.held_until) - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            now = loop.time()
            at = max(now, self._next)
            self._next = at + self.interval  # taken only now, so one chat's wait delays no other
            if at > now:
                await asyncio.sleep(at - now)
            slot.last = loop.time()
        if len(self._chats) > 10_000:
            self._forget(loop.time())

    def hold(self, chat: str, seconds: float) -> None:
        """Send nothing more to `chat` for `seconds` (Telegram answered 429)."""
        slot = self._chats.setdefault(chat, _ChatSlot())
        slot.held_until = max(slot.held_until, asyncio.get_running_loop().time() + seconds)

    def _forget(self, now: float) -> None:
        for chat, slot in list(self._chats.items()):
            if not slot.lock.locked() and max(slot.last + self.chat_interval, slot.held_until) < now:
                del self._chats[chat]


class BotApi:
    """One bot's Bot API client: one aiohttp session (opened on first use) and the rate limiter."""

    def __init__(self, settings: TelegramSettings):
        self.settings = settings
        self.limiter = RateLimiter()
        self.sends = SendsInFlight()  # the channel's sends: close() lets them finish first
        self._session: aiohttp.ClientSession | None = None
        self._shut = False

    @property
    def closed(self) -> bool:
        """True from the moment `close()` is called: no new send starts, the poller moves on."""
        return self.sends.closed

    def _client(self) -> aiohttp.ClientSession:
        import aiohttp  # here, not at the top: `boomerang check` loads plugins and must start fast

        # Only once the session is shut: until then the sends under way may still use it.
        if self._shut:
            raise ConnectionError("the Telegram channel was closed (reloaded or stopping)")
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=REQUEST_TIMEOUT))
        return self._session

    async def call(self, method: str, params: dict[str, Any], timeout: float = REQUEST_TIMEOUT) -> Any:
        """Call a Bot API method; its `result`, or `ApiError`. Network errors propagate as they are."""
        import aiohttp

        url = f"{self.settings.api_base}/bot{self.settings.token}/{method}"
        async with self._client().post(
            url, json=params, timeout=aiohttp.ClientTimeout(total=timeout)
        ) as response:
            body = await response.read()
            status = response.status
        try:
            answer = json.loads(body)
        except ValueError:
            answer = None
        if not isinstance(answer, dict) or "ok" not in answer:
            raise ApiError(status, f"HTTP {status}: the answer is not from the Bot API")
        if answer["ok"] is True:
            return answer.get("result")
        parameters = answer.get("parameters") if isinstance(answer.get("parameters"), dict) else {}
        code = answer.get("error_code")
        raise ApiError(
            code if isinstance(code, int) else status, str(answer.get("description") or ""), parameters
        )

    async def send_message(self, params: dict[str, Any]) -> dict[str, Any]:
        """`sendMessage`, once the rate limits allow it; the sent message."""
        await self.limiter.wait(str(params["chat_id"]))
        return await self.call("sendMessage", params)

    def redact(self, text: str) -> str:
        """`text` without the bot token (errors may quote the URL)."""
        return text.replace(self.settings.token, "<token>")

    async def close(self) -> None:
        """Let the sends under way finish, then close the session; safe to call twice (the
        channel and the source share it)."""
        await self.sends.close(REQUEST_TIMEOUT)
        self._shut = True
        if self._session is not None:
            await self._session.close()
            self._session = None


def _chat_id(chat: str) -> int | str:
    return int(chat) if re.fullmatch(r"-?\d+", chat) else chat


def _network_errors() -> tuple[type[BaseException], ...]:
    import aiohttp

    return (aiohttp.ClientError, OSError, TimeoutError)


# the channel
class TelegramChannel(Channel):
    """Sends messages to customers' Telegram chats."""

    name = "telegram"
    extensions = ("html", "txt")
    front_matter = MappingProxyType({"button": str, "url": str})

    def __init__(self, bot: BotApi):
        self.bot = bot

    def address(self, customer: Customer) -> str | None:
        """The chat linked to the customer."""
        return customer.telegram_chat_id

    def payload(self, message: Message) -> dict[str, Any]:
        """The `sendMessage` parameters for a message."""
        button, url = str(message.extra.get("button") or ""), str(message.extra.get("url") or "")
        params: dict[str, Any] = {"chat_id": _chat_id(message.to)}
        if message.html:
            text = telegram_html(message.html)
            if url and not button and _URL.match(url):
                text += f'\n\n<a href="{html.escape(url, quote=True)}">{html.escape(url, quote=False)}</a>'
            if visible_length(text) <= MAX_TEXT:
                params.update(text=text, parse_mode="HTML")
            else:  # too long for Telegram: the plain text, cut
                params["text"] = _cut(message.body)
        else:
            params["text"] = _cut(message.body + (f"\n\n{url}" if url and not button else ""))
        if button and _URL.match(url):
            params["reply_markup"] = {"inline_keyboard": [[{"text": button, "url": url}]]}
        return params

    async def send(self, message: Message) -> Delivery:
        """Send with `sendMessage`; say retry, invalid address or failed as Telegram answers."""
        if not message.to:
            return Delivery(DeliveryStatus.ADDRESS_INVALID, detail="the customer has no Telegram chat")
        params = self.payload(message)
        if not html.unescape(re.sub(r"<[^>]*>", "", params["text"])).strip():
            return Delivery(DeliveryStatus.FAILED, detail="the message is empty")
        if self.bot.closed:  # a reload replaced this channel: the new one sends it later
            closed = "the telegram channel was closed (a reload or shutdown)"
            return Delivery(DeliveryStatus.RETRY, detail=closed)
        with self.bot.sends.track():
            return await self._send_message(message, params)

    async def _send_message(self, message: Message, params: dict[str, Any]) -> Delivery:
        """`sendMessage` (again as plain text if Telegram cannot read the HTML), its answer mapped."""
        try:
            try:
                result = await self.bot.send_message(params)
            except ApiError as exc:
                if exc.status != 400 or "parse entities" not in exc.description or "parse_mode" not in params:
                    raise
                # Telegram could not read the HTML after all: send the plain text instead.
                log.warning("telegram refused the HTML of message %s: %s", message.id, exc.description)
                plain = {key: value for key, value in params.items() if key != "parse_mode"}
                plain["text"] = _cut(message.body)
                result = await self.bot.call("sendMessage", plain)
        except ApiError as exc:
            return self._refused(message, exc)
        except _network_errors() as exc:
            return Delivery(DeliveryStatus.RETRY, detail=self.bot.redact(f"{type(exc).__name__}: {exc}"))
        message_id = result.get("message_id") if isinstance(result, dict) else None
        return Delivery(DeliveryStatus.SENT, detail="sent", provider_id=f"{message.to}:{message_id}")

    def _refused(self, message: Message, exc: ApiError) -> Delivery:
        detail = f"Telegram {exc.status}: {exc.description}"
        description = exc.description.lower()
        if exc.status == 429:
            wait = exc.retry_after
            if wait:
                self.bot.limiter.hold(message.to, wait)
            return Delivery(DeliveryStatus.RETRY, detail=detail, retry_after=wait)
        if exc.status == 403:  # blocked by the user, user deactivated, bot kicked out
            return Delivery(DeliveryStatus.ADDRESS_INVALID, detail=detail)
        if exc.status == 400 and (
            "chat not found" in description
            or "user not found" in description
            or "peer_id_invalid" in description
            or "migrate_to_chat_id" in exc.parameters
        ):
            return Delivery(DeliveryStatus.ADDRESS_INVALID, detail=detail)
        if exc.status in (401, 404) or exc.status >= 500:
            # A refused token or a wrong api_base is the configuration's fault, not the message's:
            # retried, so fixing the config (and reloading) lets the message go.
            return Delivery(DeliveryStatus.RETRY, detail=detail)
        return Delivery(DeliveryStatus.FAILED, detail=detail)

    def outbox_file(self, message: Message) -> tuple[str, bytes]:
        """The message and the exact `sendMessage` call it would make, as JSON."""
        content = {
            **message.as_dict(),
            "telegram": {"method": "sendMessage", "params": self.payload(message)},
        }
        return ".json", json.dumps(content, ensure_ascii=False, indent=2).encode()

    def describe(self, message: Message) -> list[str]:
        """Notes for `boomerang preview`: the length Telegram counts and the button."""
        params = self.payload(message)
        notes = [f"telegram: {visible_length(params['text'])} of {MAX_TEXT} characters"]
        if "parse_mode" not in params:
            notes.append("telegram: sent as plain text")
        keyboard = params.get("reply_markup", {}).get("inline_keyboard")
        if keyboard:
            notes.append(f"telegram: button '{keyboard[0][0]['text']}' → {keyboard[0][0]['url']}")
        return notes

    async def close(self) -> None:
        """Let the sends under way finish, then close the Bot API session."""
        await self.bot.close()


def _cut(text: str) -> str:
    text = text.strip()
    return text if len(text) <= MAX_TEXT - 1 else text[: MAX_TEXT - 1].rstrip() + "…"


# the source: updates from the bot
class TelegramSource(Source):
    """Updates to the bot: `/start <token>` links a chat, other text becomes `message.replied`."""

    name = "telegram"
    event_types = ("customer.updated", "message.replied")

    def __init__(self, settings: TelegramSettings, bot: BotApi, lineage: str):
        self.settings = settings
        self.bot = bot
        self.lineage = lineage  # the config file: a reload's source succeeds this one

    def routes(self) -> list[Route]:
        """`POST /hooks/telegram`, always served so a reload may switch the mode."""
        return [Route("POST", WEBHOOK_PATH, self.webhook)]

    async def webhook(self, request: web.Request, ingest: Ingest) -> web.Response:
        """One update from Telegram, verified by its secret token header."""
        from aiohttp import web

        if self.settings.mode != "webhook":
            raise web.HTTPNotFound(text="the telegram channel is in polling mode\n")
        given = request.headers.get(SECRET_HEADER, "")
        expected = self.settings.webhook_secret
        if not expected or not hmac.compare_digest(given.encode(), expected.encode()):
            return web.json_response({"error": f"missing or wrong {SECRET_HEADER}"}, status=403)
        try:
            update = await read_json(request)
        except BodyError as exc:
            return web.json_response({"error": str(exc)}, status=exc.status)
        if not isinstance(update, dict):
            return web.json_response({"error": "an update is a JSON object"}, status=400)
        await self.handle_update(update, ingest)
        return web.json_response({"ok": True})

    async def handle_update(self, update: dict[str, Any], ingest: Ingest) -> None:
        """Act on one update; updates other than text in a private chat are ignored."""
        update_id = update.get("update_id")
        message = update.get("message")
        if not isinstance(update_id, int) or not isinstance(message, dict):
            return
        chat = message.get("chat") if isinstance(message.get("chat"), dict) else {}
        text = message.get("text")
        if chat.get("type") != "private" or not isinstance(chat.get("id"), int) or not isinstance(text, str):
            return
        chat_id = str(chat["id"])
        sender = message.get("from") if isinstance(message.get("from"), dict) else {}
        language = str(sender.get("language_code") or self.settings.default_locale)[:2].lower()
        date = message.get("date")
        # A date no datetime can hold (OverflowError, OSError) must not make the update unreadable.
        readable = isinstance(date, int) and 0 <= date <= LATEST_TIMESTAMP
        at = datetime.fromtimestamp(date, UTC) if readable else datetime.now(UTC)
        command, _, argument = text.strip().partition(" ")
        if command.split("@")[0] == "/start":
            await self._start(update_id, chat_id, argument.strip(), at, language, ingest)
        else:
            await self._replied(update_id, chat_id, message, text, at, ingest)

    async def _start(
        self, update_id: int, chat_id: str, parameter: str, at: datetime, language: str, ingest: Ingest
    ) -> None:
        secret = self.settings.secret
        customer_id = read_link_parameter(secret, parameter) if secret and parameter else None
        if customer_id is None:
            log.info("telegram: /start without a valid link token (update %s)", update_id)
            await self._say(chat_id, "not_linked", language)
            return
        holder = await _customer(ingest, customer_id)
        if (
            holder is not None
            and holder.telegram_chat_id not in (None, chat_id)
            and "telegram" not in holder.unreachable
        ):
            # A link in someone else's hands must not take over a chat that works: the messages
            # of that customer keep going where they go.
            log.info(
                "telegram: customer %s already has a working chat; /start does not replace it (update %s)",
                customer_id,
                update_id,
            )
            await self._say(chat_id, "linked_elsewhere", language)
            return
        event = _event(
            {
                "id": f"telegram.start:{update_id}",
                "type": "customer.updated",
                "at": at.isoformat(),
                "customer": {"id": customer_id, "telegram_chat_id": chat_id},
                # pressing Start is the customer's own "yes" on Telegram (after a block or opt-out too)
                "data": {"telegram": {"linked": True}, "subscribed": ["telegram"]},
            }
        )
        if event is None:
            return
        result = await ingest([event], self.name)
        if result.accepted:
            log.info("telegram: chat linked to customer %s", customer_id)
            await self._say(chat_id, "welcome", language)

    async def _replied(
        self, update_id: int, chat_id: str, message: dict, text: str, at: datetime, ingest: Ingest
    ) -> None:
        if not await self._linked(chat_id, ingest):
            log.info(
                "telegram: a message from a chat linked to no customer is ignored (update %s)", update_id
            )
            return
        event = _event(
            {
                "id": f"telegram.update:{update_id}",
                "type": "message.replied",
                "at": at.isoformat(),
                "customer": {"telegram_chat_id": chat_id},
                "data": {
                    "text": text,
                    "channel": "telegram",
                    "telegram": {"chat_id": chat_id, "message_id": message.get("message_id")},
                },
            }
        )
        if event is not None:
            await ingest([event], self.name)

    @staticmethod
    async def _linked(chat_id: str, ingest: Ingest) -> bool:
        """Whether a customer has this chat (believed so when there is no store to ask)."""
        store = _store(ingest)
        if store is None:
            return True
        customer = await store.run(store.find_customer, chat_id)
        return customer is not None and customer.telegram_chat_id == chat_id

    async def _say(self, chat_id: str, reply: str, language: str) -> None:
        """The bot's own short answer; a failure is logged, never raised."""
        texts = REPLIES[reply]
        text = texts.get(language) or texts.get(self.settings.default_locale[:2]) or texts["en"]
        if self.settings.outbox:
            log.info("telegram: outbox mode, the bot's %s reply is not sent", reply)
            return
        try:
            await self.bot.send_message({"chat_id": _chat_id(chat_id), "text": text})
        except (ApiError, *_network_errors()) as exc:
            log.warning("telegram: the bot's %s reply was not sent: %s", reply, self.bot.redact(str(exc)))

    # long polling
    def _current(self) -> TelegramSource:
        """This source, or once a reload has closed it, the one that replaced it."""
        if not self.bot.closed:
            return self
        successor = _sources.get(self.lineage)
        return successor if successor is not None and not successor.bot.closed else self

    async def poll(self, ingest: Ingest, stop: asyncio.Event) -> None:
        """In polling mode: long-poll `getUpdates` until `stop` is set.

        The core starts pollers once, with the sources of the first configuration; this loop
        follows reloads by switching to the source that replaced a closed one.
        """
        source, polling, offset, token, backoff = self, None, None, None, 1.0
        failures: dict[int, int] = {}
        while not stop.is_set():
            source = source._current()
            if source.settings.mode != "polling" or source.bot.closed:
                polling = None
                if await _stopped(stop, 1.0 if source.bot.closed else 5.0):
                    return
                continue
            if source is not polling:  # started, reloaded, or switched to polling
                if source.settings.token != token:
                    token, offset = source.settings.token, None  # update ids belong to one bot
                polling = source
                await source._drop_webhook()
            params: dict[str, Any] = {"timeout": POLL_TIMEOUT, "allowed_updates": ["message"]}
            if offset is not None:
                params["offset"] = offset
            try:
                call = source.bot.call("getUpdates", params, timeout=POLL_TIMEOUT + 15)
                updates = await _unless_stopped(call, stop)
                if updates is None:
                    return
                for update in updates if isinstance(updates, list) else []:
                    update_id = update.get("update_id") if isinstance(update, dict) else None
                    if not isinstance(update_id, int):
                        continue
                    try:
                        await source.handle_update(update, ingest)
                    except Exception:
                        failures[update_id] = failures.get(update_id, 0) + 1
                        if failures[update_id] < UPDATE_ATTEMPTS:
                            raise
                        log.exception(
                            "telegram: update %s failed %d times; skipped", update_id, UPDATE_ATTEMPTS
                        )
                    failures.pop(update_id, None)
                    offset = update_id + 1
                backoff = 1.0
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - the poller must outlive any one failure
                if source.bot.closed:
                    continue  # reloaded mid-call: go on with the new source at once
                if isinstance(exc, ApiError) and exc.status == 409:
                    await source._drop_webhook()
                log.warning(
                    "telegram: getUpdates failed (%s); again in %.0fs", source.bot.redact(repr(exc)), backoff
                )
                if await _stopped(stop, backoff):
                    return
                backoff = min(backoff * 2, POLL_BACKOFF_MAX)

    async def _drop_webhook(self) -> None:
        """getUpdates does not work while a webhook is set: remove it (pending updates stay)."""
        try:
            await self.bot.call("deleteWebhook", {"drop_pending_updates": False})
        except (ApiError, *_network_errors()) as exc:
            log.warning("telegram: deleteWebhook failed: %s", self.bot.redact(str(exc)))

    async def close(self) -> None:
        """Close the Bot API session (shared with the channel)."""
        await self.bot.close()


def _store(ingest: Ingest) -> Any:
    """The daemon's store behind `ingest`, or None. The Ingest protocol offers no look-up, so
    the source asks the store itself when there is one."""
    store = getattr(ingest, "store", None)
    return store if store is not None and hasattr(store, "find_customer") else None


async def _customer(ingest: Ingest, customer_id: str) -> Customer | None:
    """The customer with this id, or None (also when there is no store to ask)."""
    store = _store(ingest)
    return None if store is None else await store.run(store.customer, customer_id)


def _event(raw: dict[str, Any]) -> Event | None:
    """An event in the generic format, validated like any other; None (logged) if it is not valid."""
    try:
        return parse_event(raw, f"telegram update event '{raw['id']}'")
    except EventError as exc:
        log.warning("telegram: %s", exc)
        return None


async def _stopped(stop: asyncio.Event, seconds: float) -> bool:
    """Wait up to `seconds`; True if `stop` was set meanwhile."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)
    return stop.is_set()


async def _unless_stopped(work: Any, stop: asyncio.Event) -> Any:
    """The result of `work`, or None as soon as `stop` is set; the work never outlives the wait."""
    task = asyncio.ensure_future(work)
    stopping = asyncio.ensure_future(stop.wait())
    finished = False
    try:
        await asyncio.wait({task, stopping}, return_when=asyncio.FIRST_COMPLETED)
        finished = task.done()
    finally:  # also when the poller itself is cancelled mid-wait (the daemon stopping)
        stopping.cancel()
        if not task.done():
            task.cancel()
            task.add_done_callback(_consume)
    return task.result() if finished else None


def _consume(task: asyncio.Future) -> None:
    """Take a cancelled call's outcome, so that asyncio does not report it as never retrieved."""
    if not task.cancelled():
        task.exception()


# registration: the channel and the source of one configuration share one BotApi
_bots: dict[int, BotApi] = {}
_sources: dict[str, TelegramSource] = {}


def _bot_for(config: Config) -> BotApi:
    key = id(config)
    bot = _bots.get(key)
    if bot is None:
        bot = _bots[key] = BotApi(read_settings(config))
        weakref.finalize(config, _bots.pop, key, None)
    return bot


@hookimpl
def register_channels(config: Config) -> list[Channel]:
    """The Telegram channel, when `channels.telegram` is configured."""
    if "telegram" not in config.channels:
        return []
    bot = _bot_for(config)
    _linking.update(secret=bot.settings.secret, bot_username=bot.settings.bot_username)
    return [TelegramChannel(bot)]


@hookimpl
def register_channel_kinds() -> list[type[Channel]]:
    """Telegram's templates and front matter, known whether or not it is configured."""
    return [TelegramChannel]


@hookimpl
def register_sources(config: Config) -> list[Source]:
    """The bot's updates (webhook or polling), when `channels.telegram` is configured."""
    if "telegram" not in config.channels:
        return []
    try:
        bot = _bot_for(config)
    except ProblemError:
        return []  # the channel's registration reports the problems, once
    source = TelegramSource(bot.settings, bot, str(config.path))
    _sources[source.lineage] = source
    return [source]


@hookimpl
def register_conditions() -> dict[str, Any]:
    """`telegram_link()` for templates: the deep link that links a customer's chat."""
    return {"telegram_link": telegram_link}
