"""Rate limits for the tests: a test's PostgreSQL schema migrated (so with `rate_buckets`), and
buckets that note every take (what a channel asked of its provider's limit)."""

from __future__ import annotations

import psycopg

from boomerang.rate_limits import Grant, LocalRateLimits
from boomerang.store.migrations_postgresql import migrate_postgresql


def migrated(url: str) -> str:
    """The schema at `url` with every migration applied (`rate_buckets` is migration 13)."""
    with psycopg.connect(url) as conn:
        migrate_postgresql(conn)
    return url


class RecordingRateLimits(LocalRateLimits):
    """Buckets in memory that keep every take: (name, count, rate, burst)."""

    def __init__(self) -> None:
        super().__init__()
        self.takes: list[tuple[str, float, float, float]] = []

    async def take(self, name: str, count: float, rate: float, burst: float) -> Grant:
        """Note the take, then take."""
        self.takes.append((name, count, rate, burst))
        return await super().take(name, count, rate, burst)
