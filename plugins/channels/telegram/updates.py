"""Updates to the bot: `/start <token>` links a chat to a customer, other text from a linked
chat becomes `message.replied`. They arrive on the webhook or through long polling."""

from __future__ import annotations

import asyncio
import hmac
import logging
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from boomerang.kinds import Ingest, Route, Source
from boomerang.plugin_api import BodyError, Event, EventError, parse_event, read_json
from boomerang.plugins.channels.telegram.bot_api import ApiError, BotApi, api_chat_id, network_errors
from boomerang.plugins.channels.telegram.links import read_link_parameter
from boomerang.plugins.channels.telegram.polling import poll_updates
from boomerang.plugins.channels.telegram.settings import TelegramSettings

if TYPE_CHECKING:
    from aiohttp import web

log = logging.getLogger(__name__)

WEBHOOK_PATH = "/hooks/telegram"
SECRET_HEADER = "X-Telegram-Bot-Api-Secret-Token"
LATEST_TIMESTAMP = 253402300799  # 9999-12-31T23:59:59Z, the last second a datetime holds

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


class TelegramSource(Source):
    """Updates to the bot: `/start <token>` links a chat, other text becomes `message.replied`."""

    name = "telegram"
    event_types = ("customer.updated", "message.replied")

    def __init__(self, settings: TelegramSettings, bot: BotApi):
        self.settings = settings
        self.bot = bot

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
        # Telegram's secret is ASCII; a header byte that is not UTF-8 arrives as a surrogate.
        if not expected or not given.isascii() or not hmac.compare_digest(given.encode(), expected.encode()):
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
        holder = await ingest.customer(customer_id)
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
        """Whether a customer has this chat."""
        customer = await ingest.customer(chat_id)
        return customer is not None and customer.telegram_chat_id == chat_id

    async def _say(self, chat_id: str, reply: str, language: str) -> None:
        """The bot's own short answer; a failure is logged, never raised."""
        texts = REPLIES[reply]
        text = texts.get(language) or texts.get(self.settings.default_locale[:2]) or texts["en"]
        if self.settings.outbox:
            log.info("telegram: outbox mode, the bot's %s reply is not sent", reply)
            return
        try:
            await self.bot.send_message({"chat_id": api_chat_id(chat_id), "text": text})
        except (ApiError, *network_errors()) as exc:
            log.warning("telegram: the bot's %s reply was not sent: %s", reply, self.bot.redact(str(exc)))

    async def poll(self, ingest: Ingest, stop: asyncio.Event) -> None:
        """In polling mode: long-poll `getUpdates` until `stop` is set; in webhook mode, nothing."""
        if self.settings.mode == "polling":
            await poll_updates(self.bot, self.handle_update, ingest, stop)

    async def close(self) -> None:
        """Close the Bot API session (shared with the channel)."""
        await self.bot.close()


def _event(raw: dict[str, Any]) -> Event | None:
    """An event in the generic format, validated like any other; None (logged) if it is not valid."""
    try:
        return parse_event(raw, f"telegram update event '{raw['id']}'")
    except EventError as exc:
        log.warning("telegram: %s", exc)
        return None
