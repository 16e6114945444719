"""Helpers of the site tracking tests: the `sources.site` section, calls as /t.js makes them,
and reading what the daemon stored."""

from __future__ import annotations

import json
import secrets
import sqlite3
from pathlib import Path
from typing import Any

SHOP = "http://shop.test:8000"  # the shop's origin, as the tests configure it


def configure_site(project: Path, *origins: str, **settings: Any) -> None:
    """Add `sources.site` to the project's config: the shop's `origins` and other settings."""
    section = {"origins": list(origins or [SHOP]), **settings}
    config = project / "boomerang.yaml"
    config.write_text(config.read_text() + f"\nsources:\n  site: {json.dumps(section)}\n")


def visitor_id() -> str:
    """A new visitor id, as the script makes them (32 hex digits)."""
    return secrets.token_hex(16)


def call(visitor: str, type_: str, **fields: Any) -> bytes:
    """The body of one call of the script."""
    return json.dumps({"v": visitor, "id": secrets.token_hex(16), "type": type_, **fields}).encode()


def headers(origin: str = SHOP) -> dict[str, str]:
    """The headers of the script's calls from a page on `origin`."""
    return {"Origin": origin, "Content-Type": "text/plain;charset=UTF-8"}


def rows(database: Path, sql: str, *params: Any) -> list[tuple]:
    """Rows of a query on the project's database, read-only (the daemon may be running)."""
    with sqlite3.connect(f"file:{database}?mode=ro", uri=True) as db:
        return db.execute(sql, params).fetchall()


def events(database: Path, type_: str | None = None) -> list[tuple]:
    """(id, type, customer_id) of the stored events, of one type or all, in arrival order."""
    where = "WHERE type = ?" if type_ else ""
    return rows(
        database,
        f"SELECT id, type, customer_id FROM events {where} ORDER BY received_at, rowid",
        *([type_] if type_ else []),
    )


def owner(database: Path, visitor: str) -> str | None:
    """The customer a browser belongs to now."""
    found = rows(database, "SELECT customer_id FROM identities WHERE kind = 'visitor' AND value = ?", visitor)
    return found[0][0] if found else None
