"""The Bot API client: one aiohttp session per bot, and the rate limits Telegram sets."""

from __future__ import annotations

import asyncio
import json
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from boomerang.kinds import SendsInFlight
from boomerang.plugin_api import RateLimits, burst_for
from boomerang.plugins.channels.telegram.settings import TelegramSettings

if TYPE_CHECKING:
    import aiohttp

CHAT_INTERVAL = 1.0  # seconds between two messages to one chat
REQUEST_TIMEOUT = 30.0


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
    """Spaces a bot's messages: at most `per_second` in all, in the bucket `bucket` of
    `rate_limits` (shared by every daemon on the database), and one per `chat_interval`
    seconds to any one chat (in this daemon: a customer's messages go from one daemon at a
    time)."""

    def __init__(
        self, rate_limits: RateLimits, bucket: str, per_second: float, chat_interval: float = CHAT_INTERVAL
    ):
        self.rate_limits = rate_limits
        self.bucket = bucket
        self.per_second = per_second
        self.chat_interval = chat_interval
        self._chats: dict[str, _ChatSlot] = {}

    async def wait(self, chat: str, paced: bool = False) -> None:
        """Return when a message to `chat` may go; messages to one chat go in call order. A
        `paced` message took its token of the bot's bucket before it was marked `sending`."""
        loop = asyncio.get_running_loop()
        slot = self._chats.setdefault(chat, _ChatSlot())
        async with slot.lock:
            delay = max(slot.last + self.chat_interval, slot.held_until) - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            if not paced:  # taken only now, so that one chat's wait delays no other
                await self.rate_limits.acquire(self.bucket, 1, self.per_second, burst_for(self.per_second))
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

    def __init__(self, settings: TelegramSettings, rate_limits: RateLimits):
        self.settings = settings
        # Telegram's limit is the bot's, whoever sends: the bucket is named after the bot's id.
        bucket = f"telegram:{settings.token.partition(':')[0]}"
        self.limiter = RateLimiter(rate_limits, bucket, settings.per_second)
        self.sends = SendsInFlight()  # the channel's sends: close() lets them finish first
        self._session: aiohttp.ClientSession | None = None
        self._shut = False

    @property
    def closed(self) -> bool:
        """True from the moment `close()` is called: no new send starts."""
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

    async def send_message(self, params: dict[str, Any], paced: bool = False) -> dict[str, Any]:
        """`sendMessage`, once the rate limits allow it (`paced`: the bot's token was taken
        already, by the channel's `pace`); the sent message."""
        await self.limiter.wait(str(params["chat_id"]), paced)
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


def api_chat_id(chat: str) -> int | str:
    """A chat id as the Bot API takes it: a number, or an @username as it is."""
    return int(chat) if re.fullmatch(r"-?\d+", chat) else chat


def network_errors() -> tuple[type[BaseException], ...]:
    """The errors of a call that never got an answer (aiohttp is imported only when needed)."""
    import aiohttp

    return (aiohttp.ClientError, OSError, TimeoutError)
