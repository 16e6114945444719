"""The generic source: `POST /events` with the product's own event format.

Accepts a JSON object, a JSON array or JSON lines, authenticated with
`Authorization: Bearer <api_token>`. Answers only after the events are committed.
"""

from __future__ import annotations

import hmac
from typing import TYPE_CHECKING

from boomerang import hookimpl
from boomerang.kinds import Ingest, Route, Source
from boomerang.plugin_api import Config, EventError, IngestWindow, bearer, parse_body, parse_events

if TYPE_CHECKING:
    from aiohttp import web


class GenericSource(Source):
    """Events posted by the shop's own code, by scripts, or by another system."""

    name = "api"
    verified = True  # every request carries the api_token: the shop's own word

    def __init__(self, api_token: str | None, window: IngestWindow | None = None):
        self.api_token = api_token
        self.window = window or IngestWindow()

    def routes(self) -> list[Route]:
        """`POST /events`."""
        return [Route("POST", "/events", self.post_events)]

    def authorized(self, request: web.Request) -> bool:
        """True when the request carries the configured bearer token (compared in constant time)."""
        token = bearer(request.headers.get("Authorization", ""))
        if not self.api_token or token is None:
            return False
        return hmac.compare_digest(token.encode(), self.api_token.encode())

    async def post_events(self, request: web.Request, ingest: Ingest) -> web.Response:
        """Validate the whole batch, store it, answer with the counts."""
        from aiohttp import web  # here, not at the top: `boomerang check` loads plugins and must start fast

        if not self.authorized(request):
            return web.json_response(
                {"error": "missing or wrong bearer token: send Authorization: Bearer <api_token>"},
                status=401,
                headers={"WWW-Authenticate": 'Bearer realm="boomerang"'},
            )
        # Only now, with the caller known, is the body read (aiohttp answers 413 above the
        # app's client_max_size) and parsed (nesting is bounded before the parser recurses).
        body = await request.read()
        try:
            events = parse_events(parse_body(body), self.window)
        except EventError as exc:
            return web.json_response({"error": str(exc)}, status=400)
        result = await ingest(events, self.name)
        return web.json_response({"accepted": result.accepted, "duplicates": result.duplicates})


@hookimpl
def register_sources(config: Config) -> list[Source]:
    """The generic source is always on; without an `api_token` it refuses every request."""
    return [GenericSource(config.api_token, config.ingest_window)]
