"""`GET /report` and `GET /report/<scenario>`: the HTML report from the live database.

Behind `admin_token`: a request carries it as `Authorization: Bearer <admin_token>`, or signs
in once on `/report/login`, which sets a sealed cookie (`boomerang.tokens.seal`, 7 days) naming
a fingerprint of the token, so that changing `admin_token` signs every browser out. A browser
without either is sent to the form (303); any other client gets 401. With no `admin_token`
configured the report is off (403).

The queries run on a read-only connection of their own (`Reports`), on its own thread: the
event loop never waits for them, and the store's writer thread (ingest, the engine) never
queues behind them. `?since=7d` picks the period (default 30 days); an unknown scenario is a
404, a bad `since` a 400, never a 5xx.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable
from datetime import datetime
from html import escape
from pathlib import Path
from typing import Any
from urllib.parse import quote

from aiohttp import web

from boomerang import report as reporting
from boomerang.report_html import page
from boomerang.store.report import Reports
from boomerang.tokens import bearer, seal, unseal

COOKIE = "boomerang_report"
PURPOSE = "report"  # the sealed cookie's purpose
MAX_FORM = 4096  # bytes of a login form's body
NO_STORE = {"Cache-Control": "no-store"}
LOGIN_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1"><link rel="icon" href="data:,">
<title>Boomerang report: sign in</title>
<style>body {{ font: 15px system-ui, sans-serif; max-width: 360px; margin: 80px auto; padding: 0 16px; }}
input {{ font: inherit; width: 100%; margin: 6px 0 12px; padding: 6px; box-sizing: border-box; }}
.error {{ color: #b3261e; }}</style></head>
<body><h1>Boomerang report</h1>{error}
<form method="post" action="/report/login">
<input type="hidden" name="next" value="{next}">
<label for="token">Admin token</label>
<input id="token" name="token" type="password" autocomplete="current-password" required autofocus>
<button type="submit">Sign in</button></form></body></html>
"""


def fingerprint(admin_token: str) -> str:
    """What the cookie names: the token's SHA-256, shortened; never the token itself."""
    return hashlib.sha256(f"boomerang report\0{admin_token}".encode()).hexdigest()[:32]


class ReportPages:
    """The report's endpoints; `project()` gives the live project (its config with
    `admin_token`, its scenarios, costs and windows: a reload swaps it)."""

    def __init__(self, database: Path, project: Callable[[], Any], now: Callable[[], datetime]):
        self.database = database
        self.project = project
        self.now = now
        self._reports: Reports | None = None

    def routes(self) -> list[web.RouteDef]:
        """The routes to mount (the login form's before `/report/{scenario}`)."""
        return [
            web.get("/report", self.report),
            web.get("/report/login", self.login_form),
            web.post("/report/login", self.login),
            web.get("/report/{scenario}", self.report),
        ]

    async def close(self, _app: web.Application | None = None) -> None:
        """Close the read-only connection (an `on_cleanup` callback of the app)."""
        if self._reports is not None:
            self._reports.close()
            self._reports = None

    # authentication
    def _keys(self) -> tuple[str, str] | None:
        """(admin_token, the key cookies are sealed with), or None when the report is off."""
        config = self.project().config
        if not config.admin_token:
            return None
        return config.admin_token, config.secret or config.admin_token

    def _signed_in(self, request: web.Request) -> bool:
        keys = self._keys()
        if keys is None:
            raise web.HTTPForbidden(text="the report is off: set admin_token in boomerang.yaml\n")
        admin_token, key = keys
        token = bearer(request.headers.get("Authorization", ""))
        if token is not None:
            return hmac.compare_digest(token.encode(), admin_token.encode())
        cookie = request.cookies.get(COOKIE)
        if cookie and cookie.isascii():
            value = unseal(key, PURPOSE, cookie, now=self.now())
            return value is not None and hmac.compare_digest(value, fingerprint(admin_token))
        return False

    def _refuse(self, request: web.Request) -> web.Response:
        """A browser goes to the form (303); any other client gets 401."""
        if "text/html" in request.headers.get("Accept", "") and "Authorization" not in request.headers:
            raise web.HTTPSeeOther(f"/report/login?next={quote(request.path)}", headers=NO_STORE)
        raise web.HTTPUnauthorized(
            text="send Authorization: Bearer <admin_token>, or sign in at /report/login\n",
            headers={"WWW-Authenticate": 'Bearer realm="boomerang report"', **NO_STORE},
        )

    async def login_form(self, request: web.Request) -> web.Response:
        """The sign-in form."""
        if self._keys() is None:
            raise web.HTTPForbidden(text="the report is off: set admin_token in boomerang.yaml\n")
        return _form(_next(request.query.get("next", "")))

    async def login(self, request: web.Request) -> web.Response:
        """Check the form's token; right, set the cookie and go on to `next`."""
        keys = self._keys()
        if keys is None:
            raise web.HTTPForbidden(text="the report is off: set admin_token in boomerang.yaml\n")
        admin_token, key = keys
        if request.content_length is not None and request.content_length > MAX_FORM:
            raise web.HTTPRequestEntityTooLarge(MAX_FORM, request.content_length)
        try:
            form = await request.post()
        except (ValueError, UnicodeDecodeError):
            raise web.HTTPBadRequest(text="not a form\n") from None
        token, target = form.get("token"), _next(str(form.get("next", "")))
        if not isinstance(token, str) or not hmac.compare_digest(token.encode(), admin_token.encode()):
            return _form(target, "That is not the admin token.", status=401)
        response = web.HTTPSeeOther(target, headers=NO_STORE)
        response.set_cookie(
            COOKIE,
            seal(key, PURPOSE, fingerprint(admin_token), now=self.now()),
            max_age=7 * 86400,
            path="/report",
            httponly=True,
            samesite="Strict",
            secure=self.project().config.public_url.startswith("https://"),
        )
        raise response

    # the report
    async def report(self, request: web.Request) -> web.Response:
        """The report page, of every scenario or of one."""
        if not self._signed_in(request):
            return self._refuse(request)
        project = self.project()
        scenario = request.match_info.get("scenario")
        now = self.now()
        try:
            since, until = reporting.window(request.query.get("since", reporting.DEFAULT_SINCE), now)
        except ValueError as exc:
            raise web.HTTPBadRequest(text=f"{exc}\n") from None
        if self._reports is None:
            self._reports = Reports.open(self.database)
        reports = self._reports
        if (
            scenario is not None
            and scenario not in {s.id for s in project.scenarios}
            and scenario not in await reports.run(reports.scenarios_known)
        ):
            raise web.HTTPNotFound(text=f"no scenario '{scenario}'\n")
        found = await reports.run(
            reporting.gather, reports, reporting.Settings.of(project), since, until, scenario
        )
        title = f"Boomerang report: {scenario}" if scenario else "Boomerang report"
        return web.Response(text=page(found, title), content_type="text/html", headers=NO_STORE)


def _next(target: str) -> str:
    """Where to go after signing in: a path of the report, nothing else (no open redirect)."""
    if target == "/report" or (
        target.startswith("/report/") and not any(part in target for part in ("//", "\\", ".."))
    ):
        return target
    return "/report"


def _form(target: str, error: str = "", status: int = 200) -> web.Response:
    shown = f'<p class="error">{escape(error)}</p>' if error else ""
    return web.Response(
        text=LOGIN_PAGE.format(error=shown, next=escape(target)),
        content_type="text/html",
        status=status,
        headers=NO_STORE,
    )
