"""PostgreSQL for the tests: each test gets a schema of its own on the server, dropped afterwards.

The server is `BOOMERANG_TEST_POSTGRESQL` (default `postgresql://127.0.0.1:5432/test`, the
machine's own, trust auth). Where it does not answer, the tests that need it are skipped and say
why, so `make test` passes on a machine without PostgreSQL.
"""

from __future__ import annotations

import functools
import os
import secrets
from collections.abc import Iterator
from urllib.parse import quote

import pytest

SERVER = os.environ.get("BOOMERANG_TEST_POSTGRESQL", "postgresql://127.0.0.1:5432/test")
SCHEMA_PREFIX = "boomerang_test_"


@functools.cache
def unavailable() -> str | None:
    """Why PostgreSQL cannot be used by the tests, or None when it answers."""
    try:
        import psycopg
    except ImportError as exc:  # pragma: no cover - psycopg is a dependency
        return f"psycopg is not installed ({exc})"
    try:
        with psycopg.connect(SERVER, connect_timeout=3) as conn:
            conn.execute("SELECT 1")
    except psycopg.Error as exc:
        return f"PostgreSQL does not answer at {SERVER} (BOOMERANG_TEST_POSTGRESQL): {exc}".strip()
    return None


def in_schema(schema: str) -> str:
    """The server's URL with `schema` first on the search path: what a `database:` setting holds."""
    separator = "&" if "?" in SERVER else "?"
    return f"{SERVER}{separator}options={quote(f'-csearch_path={schema}')}"


def create_schema() -> str:
    """A new empty schema on the server; returns its name."""
    import psycopg

    schema = f"{SCHEMA_PREFIX}{secrets.token_hex(6)}"
    with psycopg.connect(SERVER, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    return schema


def drop_schema(schema: str) -> None:
    """Drop a schema made by `create_schema`, with everything in it."""
    import psycopg

    with psycopg.connect(SERVER, autocommit=True) as conn:
        conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")


@pytest.fixture
def postgresql_url() -> Iterator[str]:
    """The URL of an empty schema of this test's own (skipped where PostgreSQL does not answer)."""
    reason = unavailable()
    if reason:
        pytest.skip(reason)
    schema = create_schema()
    try:
        yield in_schema(schema)
    finally:
        drop_schema(schema)
