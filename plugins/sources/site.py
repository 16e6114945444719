"""Site tracking (seed S14): the shop's pages report what visitors do, through `/t.js`.

`GET /t.js` is the tracking script (`site.js` beside this module); it posts to `POST /t` one
JSON object per call: `{"v": <visitor id>, "id": <random id>, "type": ..., "data": {...}}`, or
`{"type": "identify", "email": ...}` / `{"type": "identify", "token": ...}`, or a heartbeat
`{"type": "site.active"}`.

`POST /t` is public: anyone may post anything, so what it says is a claim (`verified =
False`). Before a body is read the request must come from a configured shop origin (CORS), fit
the size limit and the visitor's and the address's rate; the body is then checked strictly.
Every accepted call marks the visitor active (`Ingest.visit`: their visit ends with a
`site.left` once they are quiet for `left_after`, durably); heartbeats store no event. An
identify with a token sealed by the shop's server (`seal(secret, "site", customer_id)`) links
the browser to that customer, folding in its anonymous profile; one with an email typed into a
form is a claim that never merges and never changes anyone's address (core/store/customers.py,
`_resolve_claim`).
"""

from __future__ import annotations

import hashlib
import logging
import math
import re
import time
from datetime import UTC, datetime, timedelta
from importlib import resources
from typing import TYPE_CHECKING, Any

from boomerang import hookimpl
from boomerang.kinds import Ingest, Route, Source
from boomerang.plugin_api import (
    Config,
    Event,
    EventError,
    SettingsCheck,
    parse_body,
    parse_duration,
    parse_event,
    to_iso,
    unseal,
)

if TYPE_CHECKING:
    from aiohttp import web

log = logging.getLogger(__name__)

SCRIPT = (resources.files(__package__) / "site.js").read_text(encoding="utf-8")
SCRIPT_ETAG = '"' + hashlib.sha256(SCRIPT.encode()).hexdigest()[:16] + '"'
# Browsers and CDNs keep the script an hour (and may use a stale one for a day while they
# check again): a shop picks up a new version within the hour without a request per page view.
SCRIPT_CACHE = "public, max-age=3600, stale-while-revalidate=86400"

# What the script sends: events stored as they are, an identify, and the heartbeat.
TRACKED = ("page.viewed", "product.viewed", "category.viewed", "cart.updated", "checkout.started")
IDENTIFY, HEARTBEAT = "identify", "site.active"
FIELDS = {"v", "id", "type", "data", "email", "token"}
VISITOR = re.compile(r"^[A-Za-z0-9_-]{16,64}$")
ORIGIN = re.compile(r"^https?://[A-Za-z0-9.-]+(:\d{1,5})?$")
BODY_TYPES = ("text/plain", "application/json")
FOREIGN_ORIGIN = "this origin is not one of the shop's (sources.site.origins)"
MAX_TOKEN = 512  # characters: a sealed token for an id of a few hundred bytes
# Rate-limit buckets kept at most; past it, the full ones (idle callers) are dropped.
MAX_BUCKETS = 100_000

DEFAULTS = {"left_after": "10m", "max_body": 16384, "per_visitor": 120, "per_ip": 1200}
SETTINGS = {"origins", *DEFAULTS}


class RateLimit:
    """Token buckets, one per key: `per_minute` requests a minute, as a burst or spread."""

    def __init__(self, per_minute: int):
        self.per_minute = per_minute
        self._buckets: dict[str, tuple[float, float]] = {}  # key -> (tokens, when counted)

    def wait(self, key: str, now: float) -> float:
        """Take one request for `key`: 0 if it may go now, else the seconds until it may."""
        if self.per_minute <= 0:
            return 0.0
        rate = self.per_minute / 60.0
        tokens, then = self._buckets.get(key, (float(self.per_minute), now))
        tokens = min(float(self.per_minute), tokens + (now - then) * rate)
        if tokens < 1:
            self._buckets[key] = (tokens, now)
            return (1 - tokens) / rate
        if len(self._buckets) >= MAX_BUCKETS and key not in self._buckets:
            self._forget_idle(now)
        self._buckets[key] = (tokens - 1, now)
        return 0.0

    def _forget_idle(self, now: float) -> None:
        rate = self.per_minute / 60.0
        full = [k for k, (t, then) in self._buckets.items() if t + (now - then) * rate >= self.per_minute]
        for key in full:
            del self._buckets[key]
        if len(self._buckets) >= MAX_BUCKETS:  # a flood of distinct keys: start over rather than grow
            self._buckets.clear()


class SiteSource(Source):
    """The tracking script and its endpoint."""

    name = "site"
    verified = False  # anyone can post to /t: what it says is a claim

    def __init__(
        self,
        origins: set[str],
        secret: str,
        left_after: timedelta,
        max_body: int,
        per_visitor: int,
        per_ip: int,
    ):
        self.origins = origins
        self.secret = secret
        self.left_after = left_after
        self.max_body = max_body
        self.visitors = RateLimit(per_visitor)
        self.addresses = RateLimit(per_ip)
        # How often the script should say the visitor is still here: often enough that a
        # reader is never taken for gone, rarely enough not to cost a write each few seconds.
        self.beat = max(1, min(60, int(left_after.total_seconds() // 3)))

    def routes(self) -> list[Route]:
        """`GET /t.js`, `POST /t` and its CORS preflight."""
        return [
            Route("GET", "/t.js", self.script),
            Route("POST", "/t", self.track),
            Route("OPTIONS", "/t", self.preflight),
        ]

    async def script(self, request: web.Request, ingest: Ingest) -> web.Response:
        """`GET /t.js`: the tracking script, cacheable."""
        from aiohttp import web  # here, not at the top: `boomerang check` loads plugins and must start fast

        headers = {"Cache-Control": SCRIPT_CACHE, "ETag": SCRIPT_ETAG}
        if SCRIPT_ETAG in request.headers.get("If-None-Match", ""):
            return web.Response(status=304, headers=headers)
        return web.Response(text=SCRIPT, content_type="text/javascript", charset="utf-8", headers=headers)

    def _cors(self, request: web.Request) -> dict[str, str] | None:
        """The CORS headers for a request from a shop origin; None for any other origin."""
        origin = request.headers.get("Origin", "")
        if origin not in self.origins:
            return None
        return {"Access-Control-Allow-Origin": origin, "Vary": "Origin"}

    async def preflight(self, request: web.Request, ingest: Ingest) -> web.Response:
        """`OPTIONS /t`: the shop's origins may post JSON; others are refused."""
        from aiohttp import web

        cors = self._cors(request)
        if cors is None:
            return _error(403, FOREIGN_ORIGIN, {"Vary": "Origin"})
        cors.update(
            {
                "Access-Control-Allow-Methods": "POST",
                "Access-Control-Allow-Headers": "Content-Type",
                "Access-Control-Max-Age": "86400",
            }
        )
        return web.Response(status=204, headers=cors)

    async def track(self, request: web.Request, ingest: Ingest) -> web.Response:
        """`POST /t`: one call of the script. Origin, size and rate are checked before the body
        is read; the body must be exactly what the script sends."""
        from aiohttp import web

        cors = self._cors(request)
        if cors is None:
            return _error(403, FOREIGN_ORIGIN, {"Vary": "Origin"})
        now = time.monotonic()
        wait = self.addresses.wait(request.remote or "", now)
        if wait:
            return _too_many(wait, cors)
        if request.content_type not in BODY_TYPES:
            return _error(415, "send the call as text/plain or application/json", cors)
        if (request.content_length or 0) > self.max_body:
            return _error(413, f"the body is larger than {self.max_body} bytes", cors)
        body = await self._read(request)
        if len(body) > self.max_body:
            return _error(413, f"the body is larger than {self.max_body} bytes", cors)
        try:
            call = self._call(body)
        except EventError as exc:
            return _error(400, str(exc), cors)
        wait = self.visitors.wait(call["v"], now)
        if wait:
            return _too_many(wait, cors)
        try:
            event = self._event(call)
        except EventError as exc:
            return _error(400, str(exc), cors)
        except PermissionError as exc:
            return _error(403, str(exc), cors)
        await ingest.visit(call["v"], self.name, self.left_after)
        if event is not None:
            await ingest([event], self.name)
        return web.json_response({"ok": True, "beat": self.beat}, headers=cors)

    async def _read(self, request: web.Request) -> bytes:
        """The body, or its first `max_body + 1` bytes (decompressed) if it is longer."""
        body = b""
        while len(body) <= self.max_body:
            chunk = await request.content.read(self.max_body + 1 - len(body))
            if not chunk:
                break
            body += chunk
        return body

    def _call(self, body: bytes) -> dict[str, Any]:
        """The body as the script's call object; `EventError` says what is wrong."""
        items = parse_body(body)
        if len(items) != 1 or not isinstance(items[0][1], dict):
            raise EventError("the body must be one JSON object, as /t.js sends it")
        call = items[0][1]
        unknown = set(call) - FIELDS
        if unknown:
            raise EventError(f"unknown field(s) {', '.join(sorted(map(str, unknown)))[:200]}")
        for field in ("v", "id"):
            if not isinstance(call.get(field), str) or not VISITOR.match(call[field]):
                raise EventError(f"'{field}' must be 16 to 64 letters, digits, '-' or '_'")
        kind = call.get("type")
        if kind not in (*TRACKED, IDENTIFY, HEARTBEAT):
            raise EventError(f"'type' must be one of {', '.join((*TRACKED, IDENTIFY, HEARTBEAT))}")
        extra = set(call) & {"data", "email", "token"}
        allowed = {"data"} if kind in TRACKED else {"email", "token"} if kind == IDENTIFY else set()
        if extra - allowed:
            raise EventError(f"a {kind} call takes no {', '.join(sorted(extra - allowed))}")
        if kind == IDENTIFY and len(extra) != 1:
            raise EventError("an identify call takes either 'email' or 'token'")
        return call

    def _event(self, call: dict[str, Any]) -> Event | None:
        """The event a call stores (None for a heartbeat). `PermissionError` for a token that
        is not genuine or has expired."""
        kind = call["type"]
        if kind == HEARTBEAT:
            return None
        visitor = call["v"]
        raw: dict[str, Any] = {
            "id": f"site:{visitor}:{call['id']}",  # never another source's id: no suppressing it
            "type": kind,
            "at": to_iso(datetime.now(UTC)),
            "customer": {"id": visitor},  # replaced below: validated for `parse_event` only
            "data": call.get("data", {}),
        }
        signed = "token" in call
        if kind == IDENTIFY:
            raw["type"] = "site.identified"
            raw["data"] = {"signed": signed}
            if not signed:
                if not isinstance(call["email"], str):
                    raise EventError("'email' must be text")
                raw["customer"] = {"email": call["email"]}
        event = parse_event(raw)
        if signed:
            token = call["token"]
            genuine = isinstance(token, str) and len(token) <= MAX_TOKEN
            customer_id = unseal(self.secret, self.name, token) if genuine else None
            if not customer_id:
                raise PermissionError("the identify token is not valid or is older than 7 days")
            event.profile.id, event.profile.email = customer_id, None
        else:
            event.profile.id = None
        event.profile.visitor = visitor
        return event


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> web.Response:
    from aiohttp import web

    return web.json_response({"error": message}, status=status, headers=headers)


def _too_many(wait: float, cors: dict[str, str]) -> web.Response:
    return _error(429, "too many calls: slow down", {**cors, "Retry-After": str(math.ceil(wait))})


def source_from_config(config: Config) -> SiteSource:
    """The site source for `sources.site`; raises `ProblemError` naming every wrong setting."""
    check = SettingsCheck(config, "sources", "site", SETTINGS)
    settings = {**DEFAULTS, **check.settings}
    origins = settings.get("origins")
    if not isinstance(origins, list) or not origins:
        check.problem("origins", "'origins' is required: the shop's origins, such as [https://shop.example]")
        origins = []
    for index, origin in enumerate(origins):
        if not isinstance(origin, str) or not ORIGIN.match(origin.rstrip("/")):
            check.problem(
                ("origins", index),
                f"{str(origin)[:100]!r} is not an origin: scheme and host (and port), no path, "
                "such as https://shop.example",
            )
    left_after = timedelta(minutes=10)
    try:
        left_after = parse_duration(str(settings["left_after"]))
        if not timedelta(seconds=1) <= left_after <= timedelta(days=1):
            raise ValueError
    except ValueError:
        check.problem("left_after", "'left_after' must be a duration from 1s to 1d, such as 10m")
    numbers: dict[str, int] = {}
    for key, low, high in (("max_body", 256, 1 << 20), ("per_visitor", 1, 100_000), ("per_ip", 0, 1_000_000)):
        value = settings[key]
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            check.problem(key, f"'{key}' must be a whole number from {low} to {high}")
            value = DEFAULTS[key]
        numbers[key] = value
    if not config.secret:
        check.problem(None, "site tracking needs 'secret' (it checks identify tokens with it)")
    check.done()
    return SiteSource(
        {origin.rstrip("/") for origin in origins},
        config.secret or "",
        left_after,
        numbers["max_body"],
        numbers["per_visitor"],
        numbers["per_ip"],
    )


@hookimpl
def register_sources(config: Config) -> list[Source]:
    """The site source, when `sources.site` is configured."""
    if "site" not in config.sources:
        return []
    return [source_from_config(config)]
