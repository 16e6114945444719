"""The channel: a rendered message as a `sendMessage` call, and Telegram's answer as a delivery."""

from __future__ import annotations

import html
import json
import logging
import re
from types import MappingProxyType
from typing import Any

from boomerang.kinds import Channel
from boomerang.plugin_api import Customer, Delivery, DeliveryStatus, Message, Pace
from boomerang.plugins.channels.telegram.bot_api import ApiError, BotApi, api_chat_id, network_errors
from boomerang.plugins.channels.telegram.markup import URL, telegram_html, visible_length

log = logging.getLogger(__name__)

MAX_TEXT = 4096  # characters of a message after its entities are parsed


class TelegramChannel(Channel):
    """Sends messages to customers' Telegram chats."""

    name = "telegram"
    extensions = ("html", "txt")
    front_matter = MappingProxyType({"button": str, "url": str})
    address_fields = ("telegram_chat_id",)

    def __init__(self, bot: BotApi):
        self.bot = bot

    def address(self, customer: Customer) -> str | None:
        """The chat linked to the customer."""
        return customer.telegram_chat_id

    def payload(self, message: Message) -> dict[str, Any]:
        """The `sendMessage` parameters for a message."""
        button, url = str(message.extra.get("button") or ""), str(message.extra.get("url") or "")
        params: dict[str, Any] = {"chat_id": api_chat_id(message.to)}
        if message.html:
            text = telegram_html(message.html)
            if url and not button and URL.match(url):
                text += f'\n\n<a href="{html.escape(url, quote=True)}">{html.escape(url, quote=False)}</a>'
            if visible_length(text) <= MAX_TEXT:
                params.update(text=text, parse_mode="HTML")
            else:  # too long for Telegram: the plain text, cut
                params["text"] = _cut(message.body)
        else:
            params["text"] = _cut(message.body + (f"\n\n{url}" if url and not button else ""))
        if button and URL.match(url):
            params["reply_markup"] = {"inline_keyboard": [[{"text": button, "url": url}]]}
        return params

    def pace(self, message: Message) -> Pace:
        """A token of the bot's bucket (`per_second`, shared by every daemon on the database),
        taken before the message is marked `sending`; the one-a-second per chat is kept in `send`."""
        limiter = self.bot.limiter
        return Pace(limiter.bucket, 1, limiter.per_second)

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
                result = await self.bot.send_message(params, paced=True)
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
        except network_errors() as exc:
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
