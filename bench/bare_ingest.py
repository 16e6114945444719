"""The ingest benchmark's baseline: a bare aiohttp handler that parses the JSON body and stores
its events in SQLite (WAL, synchronous=FULL), one transaction per request, before answering.

    python -m bench.bare_ingest PORT DATABASE

It is what any web service storing events would do at its simplest, with the same durability
as Boomerang's ingest; run in its own process, like the daemon.
"""

from __future__ import annotations

import json
import sqlite3
import sys

from aiohttp import web


def application(database: str) -> web.Application:
    """The bare handler's app: `POST /events` takes one event or an array of them."""
    db = sqlite3.connect(database, isolation_level=None)
    db.execute("PRAGMA journal_mode = WAL")
    db.execute("PRAGMA synchronous = FULL")
    db.execute("CREATE TABLE IF NOT EXISTS events (id TEXT PRIMARY KEY, type TEXT, at TEXT, body TEXT)")

    async def post_events(request: web.Request) -> web.Response:
        body = json.loads(await request.read())
        events = body if isinstance(body, list) else [body]
        rows = [(e["id"], e["type"], e["at"], json.dumps(e)) for e in events]
        db.execute("BEGIN")
        db.executemany("INSERT OR IGNORE INTO events VALUES (?, ?, ?, ?)", rows)
        db.execute("COMMIT")
        return web.json_response({"accepted": len(rows)})

    app = web.Application(client_max_size=16 * 1024 * 1024)
    app.router.add_post("/events", post_events)
    app.router.add_get("/healthz", lambda request: web.json_response({"status": "ok"}))
    return app


if __name__ == "__main__":
    web.run_app(
        application(sys.argv[2]), host="127.0.0.1", port=int(sys.argv[1]), access_log=None, print=None
    )
