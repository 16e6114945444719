"""Token buckets in PostgreSQL's `rate_buckets` table (migration 13), shared by every daemon
on the database: a provider's limit holds across the cluster, not per daemon.

One statement refills a bucket by the time passed since it was last taken from and takes
from it (`INSERT ... ON CONFLICT DO UPDATE ... RETURNING`), on the database's clock, so
daemons whose clocks disagree still agree on the bucket; the row lock orders concurrent
takers. Each statement is its own short transaction on a connection of the buckets' own,
never the store's: nobody holds a transaction open while waiting for tokens. Takes that
arrive while one statement is under way are summed into the next one, so a batch of sends
costs one round trip, not one per message.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from boomerang.rate_limits import Grant, RateLimits, check_take, waits

if TYPE_CHECKING:
    import psycopg

CONNECT_TIMEOUT = 10  # seconds
TAKE_SECONDS = 10  # a statement not answered by then is given up, its connection with it

# `clock_timestamp()`, not `now()`: the time the statement runs, whatever its transaction.
# A taker that waited for the row lock read the clock before an earlier one wrote: the
# elapsed time is then negative and adds nothing, and `updated_at` never goes back.
TAKE = """
WITH clock AS (SELECT extract(epoch FROM clock_timestamp())::double precision AS now)
INSERT INTO rate_buckets AS bucket (name, tokens, updated_at)
SELECT %(name)s, %(burst)s::double precision - %(count)s::double precision, now FROM clock
ON CONFLICT (name) DO UPDATE SET
    tokens = least(
        %(burst)s::double precision,
        bucket.tokens + greatest(0, excluded.updated_at - bucket.updated_at) * %(rate)s::double precision
    ) - %(count)s::double precision,
    updated_at = greatest(bucket.updated_at, excluded.updated_at)
RETURNING tokens, updated_at
"""

# Tokens a send did not use go back, refilled up to now like a take and never above `burst`.
# No row: the bucket was never taken from (or is gone), which is full already.
GIVE_BACK = """
WITH clock AS (SELECT extract(epoch FROM clock_timestamp())::double precision AS now)
UPDATE rate_buckets AS bucket SET
    tokens = least(
        %(burst)s::double precision,
        least(
            %(burst)s::double precision,
            bucket.tokens + greatest(0, clock.now - bucket.updated_at) * %(rate)s::double precision
        ) + %(count)s::double precision
    ),
    updated_at = greatest(bucket.updated_at, clock.now)
FROM clock
WHERE bucket.name = %(name)s
"""


@dataclass
class _Takers:
    """The takes from one bucket waiting for the next statement, and whether one is under way."""

    waiting: list[tuple[float, asyncio.Future[Grant]]] = field(default_factory=list)
    serving: bool = False


class SharedRateLimits(RateLimits):
    """`RateLimits` whose buckets are rows of `rate_buckets` in the PostgreSQL at `url`."""

    def __init__(self, url: str):
        self.url = url
        self._connection: psycopg.AsyncConnection | None = None
        self._connecting = asyncio.Lock()
        self._takers: dict[tuple[str, float, float], _Takers] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    async def take(self, name: str, count: float, rate: float, burst: float) -> Grant:
        """Take `count` tokens (see `RateLimits.take`), together with the takes from the same
        bucket that arrive while a statement is under way."""
        check_take(count, rate, burst)
        key = (name, float(rate), float(burst))
        takers = self._takers.setdefault(key, _Takers())
        taken: asyncio.Future[Grant] = asyncio.get_running_loop().create_future()
        takers.waiting.append((float(count), taken))
        if not takers.serving:
            takers.serving = True
            task = asyncio.create_task(self._serve(key, takers))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return await taken

    async def give_back(self, name: str, count: float, rate: float, burst: float) -> None:
        """Return `count` unused tokens (see `RateLimits.give_back`), in one statement."""
        import psycopg

        check_take(count, rate, burst)
        connection = await self._connect()
        try:
            async with asyncio.timeout(TAKE_SECONDS):
                parameters = {"name": name, "count": count, "rate": rate, "burst": burst}
                await connection.execute(GIVE_BACK, parameters)
        except (psycopg.OperationalError, TimeoutError):
            self._connection = None  # as in `_take`: the next statement opens another
            await connection.close()
            raise

    async def _serve(self, key: tuple[str, float, float], takers: _Takers) -> None:
        """Take for everyone waiting, one statement per round, until nobody waits."""
        name, rate, burst = key
        batch: list[tuple[float, asyncio.Future[Grant]]] = []
        try:
            while takers.waiting:
                batch, takers.waiting = takers.waiting, []
                counts = [count for count, _ in batch]
                try:
                    left, at = await self._take(name, sum(counts), rate, burst)
                except Exception as exc:  # noqa: BLE001 - each taker gets it, as from its own take
                    for _, taken in batch:
                        if not taken.done():
                            taken.set_exception(exc)
                    continue
                for (_, taken), wait in zip(batch, waits(left, counts, rate), strict=True):
                    if not taken.done():  # a taker cancelled meanwhile leaves its tokens taken
                        taken.set_result(Grant(at, wait))
        finally:
            # Cancelled (the loop shutting down): nobody is left waiting for an answer.
            for _, taken in [*batch, *takers.waiting]:
                if not taken.done():
                    taken.cancel()
            takers.serving = False
            if self._takers.get(key) is takers:
                del self._takers[key]

    async def _take(self, name: str, count: float, rate: float, burst: float) -> tuple[float, float]:
        """One statement: (tokens left, the bucket's time) after taking `count`."""
        import psycopg

        connection = await self._connect()
        try:
            async with asyncio.timeout(TAKE_SECONDS):
                cursor = await connection.execute(
                    TAKE, {"name": name, "count": count, "rate": rate, "burst": burst}
                )
                row = await cursor.fetchone()
        except (psycopg.OperationalError, TimeoutError):
            # The connection broke or hangs (a restart, a network cut): the next take opens another.
            self._connection = None
            await connection.close()
            raise
        assert row is not None
        return float(row[0]), float(row[1])

    async def _connect(self) -> psycopg.AsyncConnection:
        """The buckets' own connection, in autocommit: each take is its own transaction."""
        async with self._connecting:
            if self._connection is None or self._connection.closed:
                import psycopg

                self._connection = await psycopg.AsyncConnection.connect(
                    self.url, autocommit=True, connect_timeout=CONNECT_TIMEOUT
                )
            return self._connection

    async def close(self) -> None:
        """Close the connection once the statements under way are answered."""
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._connection is not None:
            connection, self._connection = self._connection, None
            await connection.close()
