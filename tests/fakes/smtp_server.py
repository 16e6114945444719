"""A stand-in mail server for the tests: an aiosmtpd handler that keeps what it receives."""

from __future__ import annotations

import asyncio
import re
from email import message_from_bytes, policy


class Mailbox:
    """An aiosmtpd handler keeping every message (parsed, and as the bytes that came over the
    wire); recipients can be made to fail, and DATA to take `delay` seconds."""

    def __init__(self) -> None:
        self.messages: list = []
        self.raw: list[bytes] = []
        self.peers: set = set()
        self.refuse: dict[str, str] = {}
        self.delay = 0.0
        self.started = 0  # messages whose DATA began, answered or not
        self.quits = 0

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if address in self.refuse:
            return self.refuse[address]
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        self.started += 1
        await asyncio.sleep(self.delay)  # a sleep on purpose: a slow provider when a test asks for one
        self.peers.add(session.peer)
        self.raw.append(envelope.original_content)
        self.messages.append(message_from_bytes(envelope.content, policy=policy.default))
        return "250 Message accepted"

    async def handle_QUIT(self, server, session, envelope):
        self.quits += 1
        return "221 Bye"


def header(raw: bytes, name: bytes) -> bytes:
    """One header's value as the bytes that came over the wire, unfolded (RFC 5322 2.2.3)."""
    head = re.sub(rb"\r?\n[ \t]+", b" ", re.split(rb"\r?\n\r?\n", raw, maxsplit=1)[0])
    found = re.search(rb"^" + re.escape(name) + rb":[ \t]*(.*?)\r?$", head, re.MULTILINE | re.IGNORECASE)
    assert found, f"no {name.decode()} header"
    return found.group(1)
