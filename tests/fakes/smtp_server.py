"""A stand-in mail server for the tests: an aiosmtpd handler that keeps what it receives, and that
`faults` (tests/fakes/faults.py) makes answer DATA with SMTP's faults at random, recorded by the
message's `X-Boomerang-Message-Id`."""

from __future__ import annotations

import asyncio
import re
from email import message_from_bytes, policy

from fakes.faults import Faults

# SMTP's words for the faults: 5xx refuses for good, 4xx means try later, 421 also closes.
SMTP_FAULTS = {
    "refused": "554 5.7.1 Message rejected",
    "unavailable": "451 4.3.0 Mail server temporarily unavailable",
    "rate_limited": "421 4.7.0 Too many messages, slow down",
    "timeout": "451 4.4.2 Timeout",
}


class Mailbox:
    """An aiosmtpd handler keeping every message (parsed, and as the bytes that came over the
    wire); recipients can be made to fail, and DATA to take `delay` seconds."""

    def __init__(self) -> None:
        self.messages: list = []
        self.raw: list[bytes] = []
        self.mail_options: list[list[str]] = []  # each message's MAIL FROM parameters (BODY=8BITMIME)
        self.peers: set = set()
        self.refuse: dict[str, str] = {}
        self.delay = 0.0
        self.faults: Faults | None = None
        self.started = 0  # messages whose DATA began, answered or not
        self.quits = 0

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if address in self.refuse:
            return self.refuse[address]
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        self.started += 1
        if self.faults is not None:
            parsed = message_from_bytes(envelope.original_content, policy=policy.default)
            kind, _ = self.faults.decide(str(parsed["X-Boomerang-Message-Id"]))
            if kind == "dropped":
                server.transport.abort()
                return "451 4.3.0 never written: the connection is gone"
            if kind == "timeout":
                await asyncio.sleep(self.faults.hang)  # a sleep on purpose: no answer in time
            if kind is not None:
                return SMTP_FAULTS[kind]
        await asyncio.sleep(self.delay)  # a sleep on purpose: a slow provider when a test asks for one
        self.peers.add(session.peer)
        self.raw.append(envelope.original_content)
        self.mail_options.append(list(envelope.mail_options))
        # the bytes, also from a server that decodes DATA (`decode_data=True`: no 8BITMIME)
        self.messages.append(message_from_bytes(envelope.original_content, policy=policy.default))
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
