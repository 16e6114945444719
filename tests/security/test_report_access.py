"""`/report` shows a shop's revenue: only the admin token opens it. Against the daemon started
in-process on a `boomerang init` project: the cookie the login form sets is void once
`admin_token` changes (a reload), a sealed token made for another purpose (a channel's) or with
another key is no cookie, and the report is never served for the API token."""

from __future__ import annotations

from pathlib import Path

import aiohttp
import pytest

from boomerang.report_web import COOKIE, PURPOSE, fingerprint
from boomerang.tokens import seal
from conftest import AUTH, SECRET, running, url

FIRST, SECOND = "first-admin-token-0123456789", "second-admin-token-0123456789"
HTML = {"Accept": "text/html"}


async def status_with_cookie(session: aiohttp.ClientSession, address: str, cookie: str) -> int:
    async with session.get(
        address, headers={**HTML, "Cookie": f"{COOKIE}={cookie}"}, allow_redirects=False
    ) as response:
        return response.status


async def test_a_changed_admin_token_signs_every_browser_out(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BOOMERANG_ADMIN_TOKEN", FIRST)
    async with running(project) as daemon, aiohttp.ClientSession() as session:
        form = {"token": FIRST, "next": "/report"}
        async with session.post(url(daemon, "/report/login"), data=form, allow_redirects=False) as response:
            assert response.status == 303
            cookie = response.cookies[COOKIE].value
        assert await status_with_cookie(session, url(daemon, "/report"), cookie) == 200
        monkeypatch.setenv("BOOMERANG_ADMIN_TOKEN", SECOND)
        assert await daemon.reload()
        assert await status_with_cookie(session, url(daemon, "/report"), cookie) == 303
        async with session.get(
            url(daemon, "/report"), headers={"Authorization": f"Bearer {FIRST}"}
        ) as response:
            assert response.status == 401


async def test_only_a_cookie_sealed_for_the_report_opens_it(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BOOMERANG_ADMIN_TOKEN", FIRST)
    async with running(project) as daemon, aiohttp.ClientSession() as session:
        address = url(daemon, "/report")
        assert await status_with_cookie(session, address, seal(SECRET, PURPOSE, fingerprint(FIRST))) == 200
        # the same value sealed for a channel, with the admin token as the key, or naming the token
        assert await status_with_cookie(session, address, seal(SECRET, "telegram", fingerprint(FIRST))) == 303
        assert await status_with_cookie(session, address, seal(FIRST, PURPOSE, fingerprint(FIRST))) == 303
        assert await status_with_cookie(session, address, seal(SECRET, PURPOSE, FIRST)) == 303
        assert await status_with_cookie(session, address, "not-a-token") == 303
        async with session.get(address, headers=AUTH, allow_redirects=False) as response:
            assert response.status == 401
