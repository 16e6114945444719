"""A fault mode for the provider stand-ins: seeded random answers a real provider gives on a bad day.

A stand-in with `faults` set asks it, for every message that reaches it, whether to answer
normally (None) or with a fault, and answers the fault in its own wire format:

- `refused`: a permanent refusal (HTTP 4xx; SMTP 5xx): the message fails for good;
- `unavailable`: a passing outage (HTTP 5xx; SMTP 4xx): try again later;
- `rate_limited`: slow down (HTTP 429 with `Retry-After`, Telegram's `retry_after`; SMTP 421);
- `timeout`: no answer for `hang` seconds (longer than the channel's timeout where that is a
  setting), then `unavailable` if anyone still listens;
- `dropped`: the connection closed without an answer.

Every decision is recorded with the message it was about, so a test can tell what the provider
last said about each message.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable
from dataclasses import dataclass, field

from aiohttp import web

KINDS = ("refused", "unavailable", "rate_limited", "timeout", "dropped")
# What each fault should become, as the contact plan sees it: a permanent failure or a retry.
PERMANENT = {"refused"}


@dataclass
class Faults:
    """Seeded random faults: each message gets one with probability `rate`, kinds chosen evenly."""

    seed: int
    rate: float = 0.5
    kinds: tuple[str, ...] = KINDS
    hang: float = 1.5  # seconds a `timeout` keeps the request waiting
    retry_after: tuple[int, ...] = (1, 2)  # seconds a `rate_limited` answer asks for
    answers: list[tuple[str, str | None, int | None]] = field(default_factory=list)
    _random: random.Random = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._random = random.Random(self.seed)

    def decide(self, key: str) -> tuple[str | None, int | None]:
        """The fault (or None) for one request about `key`, and the wait a `rate_limited` asks for;
        recorded in `answers`."""
        kind = self._random.choice(self.kinds) if self._random.random() < self.rate else None
        wait = self._random.choice(self.retry_after) if kind == "rate_limited" else None
        self.answers.append((key, kind, wait))
        return kind, wait

    def last(self) -> dict[str, tuple[str | None, int | None]]:
        """What was last answered about each key: (fault or None, the wait asked for)."""
        return {key: (kind, wait) for key, kind, wait in self.answers}


def drop(request: web.Request) -> web.Response:
    """Close the client's connection without an answer (the response returned is never written)."""
    if request.transport is not None:
        request.transport.abort()
    return web.Response(status=204)


# The HTTP status each fault is answered with by an HTTP provider.
HTTP_STATUS = {"refused": 400, "unavailable": 503, "rate_limited": 429}


async def http_fault(
    request: web.Request,
    kind: str,
    wait: int | None,
    hang: float,
    error: Callable[[int, int | None], web.Response],
) -> web.Response:
    """Answer an HTTP provider's fault: `error(status, retry_after)` builds its error answer."""
    if kind == "dropped":
        return drop(request)
    if kind == "timeout":
        await asyncio.sleep(hang)  # a sleep on purpose: the provider does not answer in time
        kind = "unavailable"
    return error(HTTP_STATUS[kind], wait)
