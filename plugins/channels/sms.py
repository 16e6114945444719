"""The SMS channel, through Twilio's Messages API (the common part is in `twilio_messages`).

Configured under `channels.sms`: `account_sid`, `auth_token`, `from` (a number in E.164 such
as "+15550001111", an alphanumeric sender ID or a short code) or `messaging_service_sid` (or
both), `api_base` (default https://api.twilio.com: point it at a local server for tests and
staging), `timeout` (seconds, default 30) and `mps` (the sender's message segments a second
across every daemon; by default Twilio's for the kind of sender, see `twilio_messages`). One
HTTP session is kept for the channel's life.

A customer's address is their `phone` in E.164; spaces, dashes, dots and brackets are dropped,
and anything that is still not `+<country><number>` counts as no address. Each message asks
Twilio for status callbacks at `{public_url}/callbacks/sms?m=<message id>`; `POST
/callbacks/sms` checks `X-Twilio-Signature` against the auth token and turns `delivered`,
`read`, `failed` and `undelivered` into `message.delivered`, `message.opened` and
`message.failed` feedback events. `segments(text)` tells how many SMS parts a text takes.
Every create request carries the message's idempotency key as `I-Twilio-Idempotency-Token`,
the same on a retry and on a re-send after a crash.
"""

from __future__ import annotations

from typing import Any

from boomerang import hookimpl
from boomerang.kinds import Channel
from boomerang.plugin_api import Config, Message
from boomerang.plugins.channels.twilio_messages import TwilioChannel, validate

# GSM 03.38: the basic character set (one septet each) and its extension table (two septets:
# an escape and the character). Anything else makes the whole message UCS-2.
GSM7_BASIC = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
GSM7_EXTENSION = frozenset("\f^{}\\[~]|€")


def segments(text: str) -> tuple[str, int]:
    """The encoding ("GSM-7" or "UCS-2") and number of SMS segments a text is sent as.

    GSM-7 fits 160 characters in one segment and 153 in each part of a longer message;
    characters of the extension table (`€ [ ] { } ^ ~ | \\`) take two and are never split
    across parts. Any other character makes it UCS-2: 70 UTF-16 units, 67 per part, a
    character outside the basic plane (an emoji) taking two that stay together.
    """
    if all(char in GSM7_BASIC or char in GSM7_EXTENSION for char in text):
        sizes = [2 if char in GSM7_EXTENSION else 1 for char in text]
        return "GSM-7", _parts(sizes, 160, 153)
    sizes = [2 if ord(char) > 0xFFFF else 1 for char in text]
    return "UCS-2", _parts(sizes, 70, 67)


def _parts(sizes: list[int], single: int, each: int) -> int:
    total = sum(sizes)
    if total <= single:
        return 1 if total else 0
    count, used = 1, 0
    for size in sizes:
        if used + size > each:  # a two-unit character never straddles two parts
            count, used = count + 1, 0
        used += size
    return count


class SmsChannel(TwilioChannel):
    """SMS through Twilio."""

    name = "sms"

    def segment_count(self, message: Message) -> int:
        """The SMS segments of the text: Twilio's MPS counts segments, not messages."""
        return max(1, segments(message.body)[1])

    def describe(self, message: Message) -> list[str]:
        """For `preview`: how many SMS segments the text takes, and in which encoding."""
        encoding, count = segments(message.body)
        plural = "s" if count != 1 else ""
        note = f"note: {count} SMS segment{plural}, {encoding}, {len(message.body)} characters"
        if encoding == "UCS-2":
            other = next(c for c in message.body if c not in GSM7_BASIC and c not in GSM7_EXTENSION)
            note += f" ({other!r} is not in GSM-7, so every segment holds 70 characters, 67 when split)"
        return [note]

    def outbox_data(self, message: Message) -> dict[str, Any]:
        """The message, its Twilio parameters and the SMS segments its text takes."""
        data = super().outbox_data(message)
        if message.body:
            encoding, count = segments(message.body)
            data["segments"] = {"encoding": encoding, "count": count}
        return data


@hookimpl
def register_channels(config: Config) -> list[Channel]:
    """The SMS channel, when `channels.sms` is configured."""
    if "sms" not in config.channels:
        return []
    return [SmsChannel(validate(config, "sms"), config.public_url)]


@hookimpl
def register_channel_kinds() -> list[type[Channel]]:
    """SMS templates, known whether or not the channel is configured."""
    return [SmsChannel]
