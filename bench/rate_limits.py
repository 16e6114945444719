"""Rate limits in PostgreSQL: the takes a second of `SENDS_AT_ONCE` concurrent senders from one
shared bucket (`SharedRateLimits`, whose concurrent takes share one statement), against the
same takes made one statement each, in the same run on the same schema.

The bucket's rate is far above what is taken, so nobody waits: what is timed is the buckets'
own cost per send. The server is `BOOMERANG_BENCH_POSTGRESQL` (default the machine's
`postgresql://127.0.0.1:5432/test`); the benchmark works in a schema of its own, dropped after.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import time
from urllib.parse import quote

from bench.figures import Figure
from boomerang.dispatch import SENDS_AT_ONCE
from boomerang.store.migrations_postgresql import migrate_postgresql
from boomerang.store.rate_buckets import SharedRateLimits

GOAL = "at least 5x the takes a second of one statement per take"
SERVER = os.environ.get("BOOMERANG_BENCH_POSTGRESQL", "postgresql://127.0.0.1:5432/test")
TAKES = int(os.environ.get("BENCH_RATE_TAKES", "20000"))
RATIO = 5.0
RATE = 1e9  # tokens a second: nobody waits


async def _together(url: str) -> float:
    """Takes a second of SENDS_AT_ONCE senders taking at once, as a batch of sends does."""
    limits = SharedRateLimits(url)
    each = TAKES // SENDS_AT_ONCE

    async def sender() -> None:
        for _ in range(each):
            await limits.take("bench:together", 1, RATE, RATE)

    started = time.perf_counter()
    await asyncio.gather(*(sender() for _ in range(SENDS_AT_ONCE)))
    elapsed = time.perf_counter() - started
    await limits.close()
    return each * SENDS_AT_ONCE / elapsed


async def _one_by_one(url: str) -> float:
    """Takes a second when each take is a statement of its own (a round trip per message)."""
    limits = SharedRateLimits(url)
    count = TAKES // 4  # a quarter as many: it is slower, the rate is what counts
    started = time.perf_counter()
    for _ in range(count):
        await limits.take("bench:alone", 1, RATE, RATE)
    elapsed = time.perf_counter() - started
    await limits.close()
    return count / elapsed


def run() -> list[Figure]:
    """Measure both in one schema of the benchmark's own."""
    import psycopg

    schema = f"boomerang_bench_{secrets.token_hex(6)}"
    separator = "&" if "?" in SERVER else "?"
    url = f"{SERVER}{separator}options={quote(f'-csearch_path={schema}')}"
    try:
        with psycopg.connect(SERVER, autocommit=True, connect_timeout=3) as conn:
            conn.execute(f"CREATE SCHEMA {schema}")
    except psycopg.OperationalError as exc:
        print(f"rate: skipped, PostgreSQL does not answer at {SERVER} (BOOMERANG_BENCH_POSTGRESQL): {exc}")
        return []
    try:
        with psycopg.connect(url) as conn:
            migrate_postgresql(conn)
        alone = asyncio.run(_one_by_one(url))
        together = asyncio.run(_together(url))
    finally:
        with psycopg.connect(SERVER, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
    return [
        Figure(
            "rate",
            together,
            "takes/s",
            alone,
            GOAL,
            together >= RATIO * alone,
            f"({SENDS_AT_ONCE} senders at once from one bucket; baseline: a statement per take)",
        )
    ]
