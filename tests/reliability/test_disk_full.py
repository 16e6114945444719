"""Disk full and database locked: ingest answers 503 with Retry-After rather than accepting
events it cannot keep, stores nothing of such a request, and recovers by itself.

The real daemon (in-process, on a real SQLite file) meets genuine SQLite errors: SQLITE_FULL
from `PRAGMA max_page_count` set on its own connection (the limit is per connection, so it is
set on the daemon's, through its store thread), and SQLITE_BUSY ("database is locked") from a
second connection holding the write lock past a shortened busy timeout.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import aiohttp
import pytest

from conftest import AUTH, event, running, url, wait_for

# SQLite's own errors on its file (SQLITE_FULL from max_page_count, SQLITE_BUSY from a second
# connection's write lock): PostgreSQL has neither (its writers wait on row locks)
pytestmark = pytest.mark.sqlite_only

UNLIMITED = 1073741823  # SQLite's largest max_page_count


def burst(prefix: str, count: int) -> list[dict]:
    """Events that need new pages: each a new customer with a sizeable profile and data."""
    return [
        event(
            f"{prefix}-{n}",
            "product.viewed",
            customer={"id": f"{prefix}-c-{n}", "email": f"{prefix}-{n}@example.com", "name": "x" * 200},
            data={"product": {"id": f"p-{n}", "description": "y" * 400}},
        )
        for n in range(count)
    ]


def stored(database: Path, prefix: str) -> tuple[int, int]:
    """Events and customers of a burst found in the database file."""
    with sqlite3.connect(database) as db:
        events = db.execute("SELECT count(*) FROM events WHERE id LIKE ?", [f"{prefix}-%"]).fetchone()[0]
        customers = db.execute(
            "SELECT count(*) FROM customers WHERE id LIKE ?", [f"{prefix}-c-%"]
        ).fetchone()[0]
    return events, customers


async def test_a_full_disk_is_answered_503_and_ingest_recovers_when_space_returns(project: Path) -> None:
    database = project / "boomerang.db"
    async with running(project) as daemon, aiohttp.ClientSession() as session:
        post = url(daemon, "/events")
        async with session.post(post, json=burst("before", 20), headers=AUTH) as response:
            assert response.status == 200

        pages = await daemon.store.run(lambda: daemon.store.db.execute("PRAGMA page_count").fetchone()[0])
        await daemon.store.run(daemon.store.db.execute, f"PRAGMA max_page_count = {pages}")
        refused = burst("full", 300)
        async with session.post(post, json=refused, headers=AUTH) as response:
            assert response.status == 503
            assert response.headers["Retry-After"] == "5"
            error = (await response.json())["error"]
        assert "database or disk is full" in error
        assert "nothing of this request was stored" in error
        assert stored(database, "full") == (0, 0)  # nothing half-stored
        async with session.get(url(daemon, "/healthz")) as response:
            assert response.status == 200

        await daemon.store.run(daemon.store.db.execute, f"PRAGMA max_page_count = {UNLIMITED}")
        async with session.post(post, json=refused, headers=AUTH) as response:
            assert response.status == 200
            assert await response.json() == {"accepted": 300, "duplicates": 0}
        assert stored(database, "full") == (300, 300)
        assert stored(database, "before") == (20, 20)
        # The engine met the full disk too (acting on the first burst may have) and carried on.
        await wait_for(
            lambda: (
                sqlite3.connect(database)
                .execute("SELECT count(*) FROM events WHERE handled = 0")
                .fetchone()[0]
                == 0
            ),
            30,
            "the engine to act on every stored event",
        )
        assert not daemon.crashed


async def test_a_locked_database_is_answered_503_and_ingest_recovers_when_released(project: Path) -> None:
    database = project / "boomerang.db"
    async with running(project) as daemon, aiohttp.ClientSession() as session:
        post = url(daemon, "/events")
        await daemon.store.run(daemon.store.db.execute, "PRAGMA busy_timeout = 200")
        other = sqlite3.connect(database, isolation_level=None)
        other.execute("BEGIN IMMEDIATE")  # another process holds the write lock
        try:
            async with session.post(post, json=burst("locked", 5), headers=AUTH) as response:
                assert response.status == 503
                assert response.headers["Retry-After"] == "5"
                assert "database is locked" in (await response.json())["error"]
        finally:
            other.execute("ROLLBACK")
            other.close()
        assert stored(database, "locked") == (0, 0)
        async with session.post(post, json=burst("locked", 5), headers=AUTH) as response:
            assert response.status == 200
            assert await response.json() == {"accepted": 5, "duplicates": 0}
        assert stored(database, "locked") == (5, 5)
        assert not daemon.crashed
