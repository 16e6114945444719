"""Fixtures of the security reproductions (the shared ones are in tests/conftest.py)."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
from aiosmtpd.controller import Controller
from test_channel_email import Mailbox

from conftest import free_port


@pytest.fixture
def smtp() -> Iterator[tuple[Mailbox, int]]:
    """A real SMTP server (aiosmtpd) on a free port of 127.0.0.1: its mailbox and its port."""
    mailbox = Mailbox()
    controller = Controller(mailbox, hostname="127.0.0.1", port=free_port())
    controller.start()
    yield mailbox, controller.port
    controller.stop()


def header(raw: bytes, name: bytes) -> bytes:
    """One header's value as the bytes that came over the wire, unfolded (RFC 5322 2.2.3)."""
    head = re.sub(rb"\r?\n[ \t]+", b" ", re.split(rb"\r?\n\r?\n", raw, maxsplit=1)[0])
    found = re.search(rb"^" + re.escape(name) + rb":[ \t]*(.*?)\r?$", head, re.MULTILINE | re.IGNORECASE)
    assert found, f"no {name.decode()} header"
    return found.group(1)
