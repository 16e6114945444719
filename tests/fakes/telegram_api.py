"""A local stand-in for the Telegram Bot API, for tests: a real aiohttp server on 127.0.0.1.

It speaks the Bot API's wire format (`POST /bot<token>/<method>` with JSON or form fields;
`{"ok": true, "result": ...}` or `{"ok": false, "error_code": ..., "description": ...}`),
checks `parse_mode: HTML` text the way Telegram does (only its tags, balanced, only its named
entities), records every request, and can be told to fail: canned answers for the next sends
(429 with `retry_after`...), chats that blocked the bot (403), chats that do not exist (400),
or at random with `faults` (tests/fakes/faults.py), recorded by chat id.
`getUpdates` serves queued updates with Telegram's offset semantics and long polling.
"""

from __future__ import annotations

import asyncio
import contextlib
import html
import json
import re
import time
from dataclasses import dataclass, field
from html.parser import HTMLParser
from typing import Any

from aiohttp import web

from fakes import serve
from fakes.faults import Faults, http_fault

TELEGRAM_TAGS = {
    "b",
    "strong",
    "i",
    "em",
    "u",
    "ins",
    "s",
    "strike",
    "del",
    "a",
    "code",
    "pre",
    "blockquote",
    "tg-spoiler",
    "tg-emoji",
    "span",
}
NAMED_ENTITIES = {"lt", "gt", "amp", "quot"}


@dataclass
class Call:
    """One request the fake received."""

    method: str
    token: str
    params: dict[str, Any]
    at: float = field(default_factory=time.monotonic)


class EntityError(ValueError):
    """What Telegram answers as `Bad Request: can't parse entities: ...`."""


class _Checker(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.stack: list[str] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag not in TELEGRAM_TAGS:
            raise EntityError(f'Unsupported start tag "{tag}"')
        if tag == "span" and dict(attrs).get("class") != "tg-spoiler":
            raise EntityError('Tag "span" must have class "tg-spoiler"')
        if tag == "a" and not dict(attrs).get("href"):
            raise EntityError('Tag "a" must have attribute "href"')
        self.stack.append(tag)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        raise EntityError(f'Unsupported start tag "{tag}/"')

    def handle_endtag(self, tag: str) -> None:
        if not self.stack or self.stack[-1] != tag:
            raise EntityError(f'Unmatched end tag "{tag}"')
        self.stack.pop()

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def parse_html(text: str) -> str:
    """The visible text of a Telegram HTML message; `EntityError` where Telegram would refuse it."""
    for name in re.findall(r"&([A-Za-z][A-Za-z0-9]*);", text):
        if name not in NAMED_ENTITIES:
            raise EntityError(f'Unsupported HTML entity "&{name};"')
    if re.search(r"<(?![/A-Za-z])", text) or re.search(r"&(?![A-Za-z]+;|#\d+;|#x[0-9A-Fa-f]+;)", text):
        raise EntityError("Unescaped < or & in the text")
    checker = _Checker()
    checker.feed(text)
    checker.close()
    if checker.stack:
        raise EntityError(f'Can\'t find end tag corresponding to start tag "{checker.stack[-1]}"')
    return "".join(checker.text)


class FakeBotApi:
    """The fake server; use `async with FakeBotApi(token) as api:` and point `api_base` at `api.base`."""

    def __init__(self, token: str):
        self.token = token
        self.calls: list[Call] = []
        self.delivered: list[Call] = []  # sendMessage calls that delivered a message
        self.failures: list[dict[str, Any]] = []  # answers for the next sendMessage calls, in order
        self.blocked: set[str] = set()  # chats whose user blocked the bot: 403
        self.missing: set[str] = set()  # chats that do not exist: 400 chat not found
        self.webhook_url: str | None = None  # getUpdates answers 409 while a webhook is set
        self.updates: list[dict[str, Any]] = []
        self.delay = 0.0  # seconds before answering a sendMessage that delivered: a slow Bot API
        self.faults: Faults | None = None  # random faults for sendMessage, recorded by chat id
        self._arrived = asyncio.Event()
        self._next_update_id = 1000
        self._next_message_id = 1
        self._runner: web.AppRunner | None = None
        self.base = ""

    async def __aenter__(self) -> FakeBotApi:
        app = web.Application()
        app.router.add_route("*", "/bot{token}/{method}", self._handle)
        self._runner, self.base = await serve(app, shutdown_timeout=0.5)
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._arrived.set()  # wake long polls so the server can stop
        if self._runner is not None:
            await self._runner.cleanup()

    # what tests look at and arrange
    def sent(self) -> list[Call]:
        """The sendMessage calls that delivered a message."""
        return list(self.delivered)

    def calls_of(self, method: str) -> list[Call]:
        """Every call of one method, answered or not."""
        return [c for c in self.calls if c.method == method]

    def fail_next(self, status: int, description: str, **parameters: Any) -> None:
        """Make the next sendMessage answer this error (`retry_after=3` for a 429)."""
        answer: dict[str, Any] = {"ok": False, "error_code": status, "description": description}
        if parameters:
            answer["parameters"] = parameters
        self.failures.append(answer)

    def user_says(self, chat_id: int, text: str, language: str = "en") -> dict[str, Any]:
        """Queue an update: a user wrote `text` to the bot in a private chat."""
        self._next_update_id += 1
        update = {
            "update_id": self._next_update_id,
            "message": {
                "message_id": self._next_update_id,
                "from": {"id": chat_id, "is_bot": False, "first_name": "Anna", "language_code": language},
                "chat": {"id": chat_id, "first_name": "Anna", "type": "private"},
                "date": int(time.time()),
                "text": text,
            },
        }
        self.updates.append(update)
        self._arrived.set()
        return update

    # the server
    async def _handle(self, request: web.Request) -> web.Response:
        method = request.match_info["method"]
        params = await self._params(request)
        call = Call(method, request.match_info["token"], params)
        self.calls.append(call)
        if call.token != self.token:
            return self._error(401, "Unauthorized")
        handler = {
            "sendMessage": self._send_message,
            "getUpdates": self._get_updates,
            "deleteWebhook": self._delete_webhook,
            "setWebhook": self._set_webhook,
            "getMe": self._get_me,
        }.get(method)
        if handler is None:
            return self._error(404, "Not Found: method not found")
        if method == "sendMessage" and self.faults is not None:
            kind, wait = self.faults.decide(str(params.get("chat_id", "")))
            if kind is not None:
                return await http_fault(request, kind, wait, self.faults.hang, self._fault_answer)
        return await handler(call)

    @staticmethod
    async def _params(request: web.Request) -> dict[str, Any]:
        if request.content_type == "application/json":
            return dict(await request.json())
        params: dict[str, Any] = {}
        for key, value in (await request.post()).items():
            text = str(value)
            if key in ("reply_markup", "allowed_updates"):
                text = json.loads(text)
            params[key] = text
        for key, value in request.query.items():
            params.setdefault(key, value)
        return params

    @staticmethod
    def _error(status: int, description: str, **parameters: Any) -> web.Response:
        answer: dict[str, Any] = {"ok": False, "error_code": status, "description": description}
        if parameters:
            answer["parameters"] = parameters
        return web.json_response(answer, status=status)

    def _fault_answer(self, status: int, retry_after: int | None) -> web.Response:
        """The Bot API's answer to a fault: a refusal, an outage, or flood control."""
        if status == 429:
            return self._error(429, f"Too Many Requests: retry after {retry_after}", retry_after=retry_after)
        if status >= 500:
            return self._error(502, "Bad Gateway")
        return self._error(400, "Bad Request: message is too long")

    async def _send_message(self, call: Call) -> web.Response:
        params = call.params
        chat = str(params.get("chat_id", ""))
        text = params.get("text")
        if not chat:
            return self._error(400, "Bad Request: chat_id is empty")
        if self.failures:
            answer = self.failures.pop(0)
            return web.json_response(answer, status=answer["error_code"])
        if chat in self.blocked:
            return self._error(403, "Forbidden: bot was blocked by the user")
        if chat in self.missing:
            return self._error(400, "Bad Request: chat not found")
        if not isinstance(text, str) or not text.strip():
            return self._error(400, "Bad Request: message text is empty")
        if params.get("parse_mode") == "HTML":
            try:
                visible = parse_html(text)
            except EntityError as exc:
                return self._error(400, f"Bad Request: can't parse entities: {exc}")
        else:
            visible = text
        if len(visible) > 4096:
            return self._error(400, "Bad Request: message is too long")
        markup = params.get("reply_markup")
        if markup is not None:
            buttons = markup.get("inline_keyboard") if isinstance(markup, dict) else None
            if not isinstance(buttons, list) or not all(
                isinstance(b, dict) and b.get("text") and b.get("url") for row in buttons for b in row
            ):
                return self._error(400, "Bad Request: can't parse reply keyboard markup JSON object")
        self.delivered.append(call)
        await asyncio.sleep(self.delay)  # a sleep on purpose: a slow provider when a test asks for one
        self._next_message_id += 1
        message = {
            "message_id": self._next_message_id,
            "from": {"id": int(self.token.split(":")[0]), "is_bot": True, "first_name": "Shop"},
            "chat": {"id": int(chat) if chat.lstrip("-").isdigit() else chat, "type": "private"},
            "date": int(time.time()),
            "text": html.unescape(visible),
        }
        return web.json_response({"ok": True, "result": message})

    async def _get_updates(self, call: Call) -> web.Response:
        if self.webhook_url:
            return self._error(
                409, "Conflict: can't use getUpdates method while webhook is active; use deleteWebhook"
            )
        offset = int(call.params.get("offset") or 0)
        limit = int(call.params.get("limit") or 100)
        timeout = float(call.params.get("timeout") or 0)
        if offset:  # an offset confirms every update before it: they are never sent again
            self.updates = [u for u in self.updates if u["update_id"] >= offset]
        if not self.updates and timeout:
            self._arrived.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._arrived.wait(), timeout)
        return web.json_response({"ok": True, "result": self.updates[:limit]})

    async def _delete_webhook(self, call: Call) -> web.Response:
        self.webhook_url = None
        return web.json_response({"ok": True, "result": True, "description": "Webhook was deleted"})

    async def _set_webhook(self, call: Call) -> web.Response:
        self.webhook_url = str(call.params.get("url") or "") or None
        return web.json_response({"ok": True, "result": True, "description": "Webhook was set"})

    async def _get_me(self, call: Call) -> web.Response:
        bot_id = int(self.token.split(":")[0])
        return web.json_response(
            {
                "ok": True,
                "result": {"id": bot_id, "is_bot": True, "first_name": "Shop", "username": "ShopBot"},
            }
        )
