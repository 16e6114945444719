"""Erasure rules, pure: what is kept of a customer whose personal data is erased
(`boomerang forget`, a shop's redact request), and the outbox files that go with them.

The store (core/store/erasure.py) finds the rows and writes what these functions say. What
stays is anonymous: the rows of events, messages, journeys and the journal keep their types,
times, scenarios, templates, channels and statuses (what reports count) under a new random
customer id that no identity points to; everything that says who the person was goes.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from boomerang.outbox import messages_of

# The id the rows of an erased customer are moved to: random, so it links to nobody.
ANONYMOUS_PREFIX = "forgotten-"

# What an event's data keeps: the numbers reports add up, under the object that holds them.
KEPT_NUMBERS = {"order": ("total", "currency"), "cart": ("total", "currency")}


@dataclass
class Forgotten:
    """What erasing one customer did: the id they had, the anonymous id their rows now carry,
    how many rows were blanked, and the messages whose outbox files go too."""

    customer_id: str
    anonymous_id: str
    events: int = 0
    messages: int = 0
    journeys: int = 0
    message_files: list[tuple[str, str]] = field(default_factory=list)  # (channel, message id)

    def summary(self) -> str:
        """One line for the admin, with no personal data in it."""
        return (
            f"forgot customer {self.customer_id}: profile and identities deleted; "
            f"{self.events} events, {self.messages} messages and {self.journeys} journeys "
            f"kept anonymously as {self.anonymous_id}"
        )


def anonymous_id() -> str:
    """A fresh id for an erased customer's rows."""
    return f"{ANONYMOUS_PREFIX}{secrets.token_hex(8)}"


def kept_data(data: dict[str, Any]) -> dict[str, Any]:
    """What an erased customer's event keeps of its data: an order's or cart's total and
    currency, when they are plain numbers and short codes; nothing else (items, addresses,
    links and free text may all say who the person was)."""
    kept: dict[str, Any] = {}
    for key, names in KEPT_NUMBERS.items():
        holder = data.get(key)
        if isinstance(holder, dict):
            values = {name: holder[name] for name in names if _anonymous_value(name, holder.get(name))}
            if values:
                kept[key] = values
    return kept


def _anonymous_value(name: str, value: Any) -> bool:
    if name == "currency":
        return isinstance(value, str) and len(value) <= 8
    return isinstance(value, int | float) and not isinstance(value, bool)


def remove_outbox_files(outbox: Path | None, messages: Iterable[tuple[str, str]]) -> int:
    """Delete the outbox files of these (channel, message id) pairs, named as core/outbox.py
    names them (and as it named them before); how many there were. One pass over the folder."""
    if outbox is None or not outbox.is_dir():
        return 0
    wanted = set(messages)
    if not wanted:
        return 0
    channels = {channel for channel, _ in wanted}
    removed = 0
    with os.scandir(outbox) as entries:
        for entry in entries:
            if any(found in wanted for found in messages_of(entry.name, channels)):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(entry.path)
                    removed += 1
    return removed
