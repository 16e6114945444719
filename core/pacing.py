"""Pacing: the sends of a batch kept to their providers' rate limits before they are marked
`sending`, so that a message is handed over only when it can go within a moment.

A channel says how a message is paced (`Channel.pace`: a bucket of `RateLimits`, how many
tokens, at what rate). Dispatch takes the tokens of a batch's paced messages together, in the
batch's order (`take_turns`): a message whose tokens are in within `HORIZON` seconds goes, and
waits for them just before its send (`Turns.wait`); the others are put back, their send jobs
due when their turn comes, as the contact plan defers a message. A customer's messages after
one put back are put back with it, so that they keep their order. The tokens of messages that
do not go are given back (`Turns.give_back`), so that a message put back takes its turn again
without paying for it twice.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Awaitable, Collection, Sequence
from dataclasses import dataclass, field

from boomerang.model import Message
from boomerang.rate_limits import Grant, RateLimits, burst_for

# A message whose tokens are in within this many seconds goes (marked `sending`, then waits
# for them); later ones are put back. Short: the daemon's stop drains sends for 8 seconds.
HORIZON = 2.0


@dataclass(frozen=True)
class Pace:
    """How one message is paced: `count` tokens of the bucket `bucket`, which fills at `rate`
    tokens a second up to `burst` (by default `burst_for(rate)`)."""

    bucket: str
    count: float
    rate: float
    burst: float | None = None

    @property
    def key(self) -> tuple[str, float, float]:
        """The bucket as `RateLimits` takes it: (name, rate, burst)."""
        return self.bucket, self.rate, burst_for(self.rate) if self.burst is None else self.burst

    def take(self, limits: RateLimits) -> Awaitable[Grant]:
        """Take the message's tokens from its bucket in `limits` (`RateLimits.take`)."""
        name, rate, burst = self.key
        return limits.take(name, self.count, rate, burst)


@dataclass
class Turns:
    """A batch's turns: when each paced message that goes may be sent (`ready`, loop time),
    how long until the turn of each message put back (`later`, seconds), and the tokens taken."""

    limits: RateLimits
    ready: dict[str, float] = field(default_factory=dict)
    later: dict[str, float] = field(default_factory=dict)
    taken: dict[str, Pace] = field(default_factory=dict)

    async def wait(self, message_id: str) -> None:
        """Return once the message's tokens are in (at once for one not paced)."""
        ready = self.ready.get(message_id)
        if ready is not None:
            delay = ready - asyncio.get_running_loop().time()
            if delay > 0:
                await asyncio.sleep(delay)

    async def give_back(self, sent: Collection[str]) -> None:
        """Give back the tokens taken for the messages not in `sent` (put back, or held back
        when marked), one call per bucket."""
        unused: dict[tuple[str, float, float], float] = defaultdict(float)
        for message_id, pace in self.taken.items():
            if message_id not in sent:
                unused[pace.key] += pace.count
        returns = (self.limits.give_back(name, n, rate, burst) for (name, rate, burst), n in unused.items())
        await asyncio.gather(*returns)


async def take_turns(
    limits: RateLimits, messages: Sequence[Message], paces: Sequence[Pace | None], horizon: float = HORIZON
) -> Turns:
    """Take the tokens of a batch's paced `messages` (`paces`, None for one not paced), in the
    batch's order, and say which go now and which are put back (see the module's docstring)."""
    turns = Turns(limits)
    paced = [(message, pace) for message, pace in zip(messages, paces, strict=True) if pace is not None]
    if not paced:
        return turns
    # Concurrent takes from one bucket are answered in the order asked (one statement on PostgreSQL).
    grants = await asyncio.gather(*(pace.take(limits) for _, pace in paced))
    taken_at = asyncio.get_running_loop().time()
    waits = {message.id: grant.wait for (message, _), grant in zip(paced, grants, strict=True)}
    turns.taken = {message.id: pace for message, pace in paced}
    put_back: dict[str, float] = {}  # customer: the wait of their first message put back
    for message in messages:
        wait = waits.get(message.id, 0.0)
        if message.customer_id in put_back:
            turns.later[message.id] = put_back[message.customer_id] = max(put_back[message.customer_id], wait)
        elif wait > horizon:
            turns.later[message.id] = put_back[message.customer_id] = wait
        elif message.id in waits:
            turns.ready[message.id] = taken_at + wait
    return turns
