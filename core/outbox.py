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
        # Sends waiting for the next group write (`_write_group`) of their event loop, each
        # with its answer's future.
        self._waiting: dict[asyncio.AbstractEventLoop, list[tuple[Message, asyncio.Future[Path]]]] = {}

    def address(self, customer: Customer) -> str | None:
        """The wrapped channel's address for the customer."""
        return self.channel.address(customer)

    def forget(self, customer: Customer, gone: str) -> dict[str, Any]:
        """What the wrapped channel stores to forget a gone address."""
        return self.channel.forget(customer, gone)

    async def send(self, message: Message) -> Delivery:
        """Write the message file; a message id written twice overwrites, never duplicates."""
        loop = asyncio.get_running_loop()
        answer: asyncio.Future[Path] = loop.create_future()
        waiting = self._waiting.setdefault(loop, [])
        waiting.append((message, answer))
        if len(waiting) == 1:
            # The sends a batch hands over together arrive in this turn of the loop: they are
            # written by one call off the loop, not one thread hop and one thread each, which
            # would cost more than the file (and threads creating files in one folder wait on
            # each other's lock of it).
            loop.call_soon(self._write_group, loop)
        path = await answer
        return Delivery(DeliveryStatus.SENT, detail=f"written to {path.name}", provider_id=path.name)

    def _write_group(self, loop: asyncio.AbstractEventLoop) -> None:
        """Write the files of the sends waiting on a thread of the loop's executor (an `.eml`
        takes the email package's time too), and answer each send with its path or its error."""
        group = self._waiting.pop(loop)
        written = loop.run_in_executor(None, self._write_all, [message for message, _ in group])

        def answer(written: asyncio.Future[list[Path | Exception]]) -> None:
            cancelled = written.cancelled()
            failed = None if cancelled else written.exception()
            outcomes = [failed] * len(group) if cancelled or failed else written.result()
            for (_, future), outcome in zip(group, outcomes, strict=True):
                if future.done():  # its send was cancelled
                    continue
                if outcome is None:  # the executor was shut down under it
                    future.cancel()
                elif isinstance(outcome, BaseException):
                    future.set_exception(outcome)
                else:
                    future.set_result(outcome)

        written.add_done_callback(answer)

    def _write_all(self, messages: list[Message]) -> list[Path | Exception]:
        """Each message's file written, or why it could not be: one message's failure is its own."""
        outcomes: list[Path | Exception] = []
        for message in messages:
            try:
                outcomes.append(self._write(message))
            except Exception as exc:  # noqa: BLE001 - handed to that message's send, which raises it
                outcomes.append(exc)
        return outcomes

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
