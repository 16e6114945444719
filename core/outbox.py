"""The outbox: every channel renders as usual but writes files instead of sending.

With `outbox: DIR` in the config, each channel is wrapped so that a message becomes one file
in DIR (`.eml` for email, `.json` for the others), named so that `ls` lists them in time order
and shows what each is: `<UTC time>-<channel>-<customer>-<message id>.<suffix>`, e.g.
`20261207T101500Z-email-c42-m-1a2b….eml`. The time is when the journey queued the message, the
same on every attempt, so a message written twice overwrites its file. The customer is their id
when it is a short plain one, else a short hash of it (`customer_token`): a name never shows an
email address or a phone number. The demo made by `boomerang init` runs this way, with no
credentials at all.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from boomerang.clock import parse_time
from boomerang.kinds import Channel, Route
from boomerang.model import Customer, Delivery, DeliveryStatus, Message
from boomerang.private_files import write_private

# A customer id shown as it is: short, and only characters that say nothing about who it is
# (no `@`, no `+`); `-` is written `_`, so that the name's parts split on `-`.
_PLAIN_CUSTOMER = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,31}")
_STAMP = re.compile(r"\d{8}T\d{6}Z-")  # the time a name starts with (earlier names had none)


def customer_token(customer_id: str) -> str:
    """The customer in a file name: the id when it is short and plain (`c-42` as `c_42`), else
    `h` and 10 hex digits of its SHA-256, so an id that is an email address or a phone number
    is never written out."""
    if _PLAIN_CUSTOMER.fullmatch(customer_id):
        return customer_id.replace("-", "_")
    return "h" + hashlib.sha256(customer_id.encode()).hexdigest()[:10]


def file_name(channel: str, message: Message, suffix: str) -> str:
    """The outbox file name of `message` over `channel`."""
    moment = None
    if message.created_at:
        try:
            moment = parse_time(message.created_at)
        except ValueError:  # a stored time that does not read: the file is still written
            moment = None
    stamp = (moment or datetime.now(UTC)).strftime("%Y%m%dT%H%M%SZ")
    return f"{stamp}-{channel}-{customer_token(message.customer_id)}-{message.id}{suffix}"


def messages_of(name: str, channels: Iterable[str] = ()) -> Iterator[tuple[str, str]]:
    """The (channel, message id) pairs an outbox file name can be for: one, unless a channel's
    own name has a `-` (a plugin's may), so `channels` are the names to try; without them, the
    channel is the name's part up to its next `-`. Reads the earlier names with no time and no
    customer, `<channel>-<message id>.<suffix>`, too."""
    stem, dot, _suffix = name.rpartition(".")
    if not dot:
        return
    stamped = _STAMP.match(stem)
    rest = stem[stamped.end() :] if stamped else stem
    for channel in list(channels) or [rest.partition("-")[0]]:
        if not channel or not rest.startswith(channel + "-"):
            continue
        message_id = rest[len(channel) + 1 :]
        if stamped:  # then the customer, which has no `-` (`customer_token`)
            _customer, dash, message_id = message_id.partition("-")
            if not dash:
                continue
        if message_id:
            yield channel, message_id


def message_of(name: str) -> tuple[str, str] | None:
    """The (channel, message id) an outbox file name is for, for channels without a `-` in
    their names (the built-in ones); None for a name the outbox does not write."""
    return next(messages_of(name), None)


class Outbox(Channel):
    """A channel that writes what the wrapped channel would send into a directory."""

    def __init__(self, channel: Channel, directory: Path):
        self.channel = channel
        self.name = channel.name
        self.receipts = channel.receipts
        self.instant = channel.instant
        self.directory = directory

    def address(self, customer: Customer) -> str | None:
        """The wrapped channel's address for the customer."""
        return self.channel.address(customer)

    def forget(self, customer: Customer, gone: str) -> dict[str, Any]:
        """What the wrapped channel stores to forget a gone address."""
        return self.channel.forget(customer, gone)

    async def send(self, message: Message) -> Delivery:
        """Write the message file; a message id written twice overwrites, never duplicates."""
        # Built off the event loop too: an `.eml` takes milliseconds of the email package's time.
        path = await asyncio.get_running_loop().run_in_executor(None, self._write, message)
        return Delivery(DeliveryStatus.SENT, detail=f"written to {path.name}", provider_id=path.name)

    def _write(self, message: Message) -> Path:
        suffix, content = self.channel.outbox_file(message)
        path = self.directory / file_name(self.name, message, suffix)
        write_private(path, content)
        return path

    def outbox_file(self, message: Message) -> tuple[str, bytes]:
        """The wrapped channel's file."""
        return self.channel.outbox_file(message)

    def routes(self) -> list[Route]:
        """The wrapped channel's receipt routes."""
        return self.channel.routes()

    def describe(self, message: Message) -> list[str]:
        """The wrapped channel's notes."""
        return self.channel.describe(message)

    async def close(self) -> None:
        """Close the wrapped channel."""
        await self.channel.close()
