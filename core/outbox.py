"""The outbox: every channel renders as usual but writes files instead of sending.

With `outbox: DIR` in the config, each channel is wrapped so that a message becomes one file
in DIR (`.eml` for email, `.json` for the others), named by channel and message id. The demo
made by `boomerang init` runs this way, with no credentials at all.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from boomerang.kinds import Channel, Route
from boomerang.model import Customer, Delivery, DeliveryStatus, Message
from boomerang.private_files import write_private


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
        path = self.directory / f"{self.name}-{message.id}{suffix}"
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
