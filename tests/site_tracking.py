"""Helpers of the site tracking tests: the `sources.site` section, calls as /t.js makes them,
and reading what the daemon stored."""

from __future__ import annotations

import json
import secrets
from pathlib import Path
from typing import Any

from conftest import project_database

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


def rows(project: Path, sql: str, *params: Any) -> list[tuple]:
    """Rows of a query (SQLite's SQL) on the database of the project in `project`, beside the
    daemon that may be running."""
    with project_database(project) as db:
        return [tuple(row) for row in db.execute(sql, params).fetchall()]


def events(project: Path, type_: str | None = None) -> list[tuple]:
    """(id, type, customer_id) of the stored events, of one type or all, in arrival order."""
    where = "WHERE type = ?" if type_ else ""
    return rows(
        project,
        f"SELECT id, type, customer_id FROM events {where} ORDER BY received_at, rowid",
        *([type_] if type_ else []),
    )


def owner(project: Path, visitor: str) -> str | None:
    """The customer a browser belongs to now."""
    found = rows(project, "SELECT customer_id FROM identities WHERE kind = 'visitor' AND value = ?", visitor)
    return found[0][0] if found else None


def reminded(project: Path, customer_id: str) -> Any:
    """The `reminded` attribute the idle scenarios set on a customer (None before)."""
    found = rows(project, "SELECT attributes FROM customers WHERE id = ?", customer_id)
    return json.loads(found[0][0]).get("reminded") if found else None
