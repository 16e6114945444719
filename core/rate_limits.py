"""The rate limits providers impose (Telegram's messages a second, a Twilio number's MPS), as
token buckets that hold for every daemon sending through one database.

A bucket has a name (`telegram:<bot id>`, `twilio:<sender>`), fills at `rate` tokens a second
up to `burst`, and a send takes one token (an SMS one per segment). `take` answers at once
with how long the tokens it took need to come in (a `Grant`); it may leave the bucket in debt,
which the next taker waits off, so takers queue in the order they took and nothing waits in the
bucket itself. `acquire` takes and sleeps. `give_back` returns tokens taken for a send that
then did not go (dispatch paces a batch and puts back what would wait too long: `pacing`).

Where the bucket lives follows from the database (`rate_limits_for`): one daemon on SQLite (the
lock file makes it the only one) keeps its buckets in memory (`LocalRateLimits`), exact and
free; daemons sharing PostgreSQL keep them in its `rate_buckets` table
(`boomerang.store.rate_buckets.SharedRateLimits`), one statement per batch of takers.
"""

from __future__ import annotations

import asyncio
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from boomerang.database_url import is_postgresql

# A bucket holds this many seconds' worth of tokens unless its user says otherwise: at 25/s,
# 5 at once and 30 in any one second, which is Telegram's ~30/s.
BURST_SECONDS = 0.2


@dataclass(frozen=True)
class Grant:
    """Tokens taken: they are all in at `at + wait`, `at` read on the bucket's clock (seconds)."""

    at: float
    wait: float

    @property
    def ready_at(self) -> float:
        """When the tokens are in, on the bucket's clock."""
        return self.at + self.wait


def burst_for(rate: float) -> float:
    """The burst a bucket of `rate` tokens a second has by default: `BURST_SECONDS` of them,
    at least one."""
    return max(1.0, rate * BURST_SECONDS)


def refilled(tokens: float, elapsed: float, rate: float, burst: float) -> float:
    """A bucket's tokens `elapsed` seconds after it held `tokens` (a clock going back adds none)."""
    return min(burst, tokens + max(0.0, elapsed) * rate)


def waits(left: float, counts: Sequence[float], rate: float) -> list[float]:
    """The wait of each of several takers who took `counts` together, in that order, leaving
    `left` tokens: each waits until the tokens up to and including its own are in."""
    after = left + sum(counts)  # what the bucket held before them
    result = []
    for count in counts:
        after -= count
        result.append(max(0.0, -after / rate))
    return result


def check_take(count: float, rate: float, burst: float) -> None:
    """Raise `ValueError` for a take that means nothing (no tokens, no rate, no burst)."""
    if not count > 0:
        raise ValueError(f"take a number of tokens above 0, not {count!r}")
    if not rate > 0:
        raise ValueError(f"a bucket's rate is a number of tokens a second above 0, not {rate!r}")
    if not burst >= 1:
        raise ValueError(f"a bucket's burst is at least 1 token, not {burst!r}")


class RateLimits(ABC):
    """Token buckets by name; what channels (and sources) are handed to keep to a provider's
    limits across every daemon of one database."""

    @abstractmethod
    async def take(self, name: str, count: float, rate: float, burst: float) -> Grant:
        """Take `count` tokens from the bucket `name` (filling at `rate` a second, holding at
        most `burst`) and say how long until they are in. Several concurrent takes from one
        bucket may be answered by one round trip; each waits for its own tokens.

        `count` may exceed `burst` (a long SMS): it then waits until the bucket has paid for
        all of it. Callers of one bucket should give it the same `rate` and `burst`.
        """

    @abstractmethod
    async def give_back(self, name: str, count: float, rate: float, burst: float) -> None:
        """Return `count` tokens taken from the bucket `name` and not used (the send did not go),
        so that later takers wait less; the bucket never holds more than `burst`. Takers already
        answered keep their waits: returning only ever makes a later take sooner."""

    async def acquire(self, name: str, count: float, rate: float, burst: float | None = None) -> None:
        """Take `count` tokens (see `take`; `burst` by default `burst_for(rate)`) and return
        once they are in."""
        grant = await self.take(name, count, rate, burst_for(rate) if burst is None else burst)
        if grant.wait > 0:
            await asyncio.sleep(grant.wait)

    async def close(self) -> None:
        """Release what the buckets hold open (a connection); they reopen it if used again."""
        return None


class LocalRateLimits(RateLimits):
    """Buckets in this process's memory: exact where one daemon is the only sender (SQLite,
    whose lock file makes it so), and what commands that send nothing are handed."""

    def __init__(self, clock: Callable[[], float] = time.monotonic):
        self.clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}  # name: (tokens, at)

    async def take(self, name: str, count: float, rate: float, burst: float) -> Grant:
        """Take `count` tokens at once (see `RateLimits.take`)."""
        return self.take_now(name, count, rate, burst)

    def take_now(self, name: str, count: float, rate: float, burst: float) -> Grant:
        """`take` without awaiting anything: the arithmetic on this process's clock."""
        check_take(count, rate, burst)
        now = self.clock()
        tokens, at = self._buckets.get(name, (burst, now))
        tokens = refilled(tokens, now - at, rate, burst) - count
        at = max(at, now)
        self._buckets[name] = (tokens, at)
        return Grant(at, max(0.0, -tokens / rate))

    async def give_back(self, name: str, count: float, rate: float, burst: float) -> None:
        """Return `count` unused tokens (see `RateLimits.give_back`)."""
        check_take(count, rate, burst)
        if name in self._buckets:  # a bucket never taken from is full already
            tokens, at = self._buckets[name]
            now = self.clock()
            self._buckets[name] = (min(burst, refilled(tokens, now - at, rate, burst) + count), max(at, now))


def rate_limits_for(database: Path | str) -> RateLimits:
    """The buckets for daemons on `database` (the `database:` setting): in PostgreSQL for a
    `postgresql://` URL, since several daemons may share it; in memory for a SQLite file."""
    if is_postgresql(database):
        from boomerang.store.rate_buckets import SharedRateLimits

        return SharedRateLimits(database)
    return LocalRateLimits()
