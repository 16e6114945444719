"""Rate limits for the tests: the `rate_buckets` table in a test's PostgreSQL schema, and
buckets that note every take (what a channel asked of its provider's limit)."""

from __future__ import annotations

import psycopg

from boomerang.rate_limits import Grant, LocalRateLimits


def create_rate_buckets(url: str) -> None:
    """The table of migration 13, made by hand in the test's schema."""
    # TODO(i-pg-schema): migrate_postgresql(url) once migration 13 is merged
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            "CREATE TABLE rate_buckets (name TEXT PRIMARY KEY, tokens double precision NOT NULL, "
            "updated_at double precision NOT NULL)"
        )


class RecordingRateLimits(LocalRateLimits):
    """Buckets in memory that keep every take: (name, count, rate, burst)."""

    def __init__(self) -> None:
        super().__init__()
        self.takes: list[tuple[str, float, float, float]] = []

    async def take(self, name: str, count: float, rate: float, burst: float) -> Grant:
        """Note the take, then take."""
        self.takes.append((name, count, rate, burst))
        return await super().take(name, count, rate, burst)
