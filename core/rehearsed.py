"""The messages a rehearsal (`boomerang simulate`) would send, shown rather than sent.

`--outbox DIR` writes each one rendered: email as the `.eml` the channel would send plus an
`.html` that opens in a browser, the other channels as readable text. Files are named by time,
customer (`outbox.customer_token`), scenario, template and channel, so `ls` lists them in the
order they went.
`--show` keeps each message's subject and first lines for the timeline's send rows.
"""

from __future__ import annotations

import re
from datetime import datetime
from pathlib import Path

from boomerang.kinds import Channel
from boomerang.model import Message
from boomerang.outbox import customer_token
from boomerang.preview import Preview, email_page
from boomerang.private_files import write_private

SHOWN_LINES = 2  # lines of a message's text shown beside its send row
UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


class RenderedMessages:
    """Receives every message a rehearsal sends, with the virtual time it went at."""

    def __init__(self, outbox: Path | None = None, show: bool = False):
        self.channels: dict[str, Channel] = {}  # the configured channels, set by the rehearsal
        self.outbox = outbox
        self.show = show
        self.shown: dict[str, tuple[str | None, list[str]]] = {}  # message id → subject, first lines

    def __call__(self, message: Message, at: datetime) -> None:
        """Keep or write one sent message."""
        if self.show:
            lines = [line.strip() for line in message.body.splitlines() if line.strip()]
            title = message.extra.get("title")  # a push's
            subject = message.subject or (title if isinstance(title, str) else None)
            self.shown[message.id] = (subject, lines[:SHOWN_LINES])
        if self.outbox is not None:
            self._write(message, at)

    def taken(self, message_id: str | None) -> tuple[str | None, list[str]] | None:
        """The subject and first lines of a message, once (each is shown on its one send row)."""
        return self.shown.pop(message_id, None) if message_id else None

    def _write(self, message: Message, at: datetime) -> None:
        assert self.outbox is not None
        when = at.strftime("%Y%m%dT%H%M%SZ")
        # the customer as the outbox names them: never an id that is an email address or a phone
        parts = (when, customer_token(message.customer_id), message.scenario or "-", message.template)
        stem = "-".join(UNSAFE.sub("_", part)[:60] for part in parts) + f"-{message.channel}"
        channel = self.channels.get(message.channel)
        suffix, content = channel.outbox_file(message) if channel else (".json", b"")
        files: dict[str, bytes] = {}
        if suffix == ".eml":
            files[".eml"] = content
            files[".html"] = email_page(message).encode()
        else:
            files[".txt"] = Preview(message).as_text().encode()
        number = 1
        while any((self.outbox / f"{stem}{_nth(number)}{ext}").exists() for ext in files):
            number += 1  # the same template sent twice in one second
        for ext, data in files.items():
            write_private(self.outbox / f"{stem}{_nth(number)}{ext}", data)


def _nth(number: int) -> str:
    return "" if number == 1 else f"-{number}"
