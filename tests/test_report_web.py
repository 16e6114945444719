"""`GET /report` on the daemon in-process: the admin token as a bearer or through the login
form's sealed cookie, 303/401/403 without it, 404 for an unknown scenario, 400 for a bad period."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path

import aiohttp
import pytest
from report_data import a_month, with_a_split

from conftest import AUTH, bearer, project_store, running, url

ADMIN_TOKEN = "admin-token-for-the-report-tests"
HTML = {"Accept": "text/html,application/xhtml+xml"}


@pytest.fixture
def shop(project: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The `init` project with four weeks of abandoned-cart journeys, and a known admin token."""
    monkeypatch.setenv("BOOMERANG_ADMIN_TOKEN", ADMIN_TOKEN)
    with_a_split(project)
    store = project_store(project)
    a_month(store, datetime.now(UTC))
    store.close()
    return project


async def get(
    session: aiohttp.ClientSession, address: str, **headers: str
) -> tuple[int, str, aiohttp.ClientResponse]:
    async with session.get(address, headers=headers, allow_redirects=False) as response:
        return response.status, await response.text(), response


async def test_the_report_needs_the_admin_token(shop: Path) -> None:
    async with running(shop) as daemon, aiohttp.ClientSession() as session:
        status, _, response = await get(session, url(daemon, "/report"), **HTML)
        assert status == 303 and response.headers["Location"] == "/report/login?next=/report"
        status, text, response = await get(session, url(daemon, "/report"))
        assert status == 401 and response.headers["WWW-Authenticate"].startswith("Bearer")
        assert (await get(session, url(daemon, "/report"), **bearer("wrong")))[0] == 401
        # the API token is not the admin token
        assert (await get(session, url(daemon, "/report"), **AUTH))[0] == 401
        assert (await get(session, url(daemon, "/report/abandoned-cart"), **HTML))[2].headers["Location"] == (
            "/report/login?next=/report/abandoned-cart"
        )
        status, text, response = await get(session, url(daemon, "/report"), **bearer(ADMIN_TOKEN))
        assert status == 200 and response.content_type == "text/html"
        assert 'data-scenario="abandoned-cart"' in text and "<svg" in text
        assert response.headers["Cache-Control"] == "no-store"


async def test_one_scenario_a_period_and_bad_requests(shop: Path) -> None:
    async with running(shop) as daemon, aiohttp.ClientSession(headers=bearer(ADMIN_TOKEN)) as session:
        status, text, _ = await get(session, url(daemon, "/report/abandoned-cart"))
        assert status == 200 and re.findall(r'data-scenario="([^"]+)"', text) == ["abandoned-cart"]
        status, text, _ = await get(session, url(daemon, "/report/birthday?since=7d"))
        assert status == 200 and re.findall(r'data-scenario="([^"]+)"', text) == ["birthday"]
        assert (await get(session, url(daemon, "/report/no-such-scenario")))[0] == 404
        status, text, _ = await get(session, url(daemon, "/report?since=yesterday-ish"))
        assert status == 400 and "neither a duration" in text
        assert (await get(session, url(daemon, "/report/%00%ff")))[0] == 404


async def test_the_login_form_sets_a_cookie_that_opens_the_report(shop: Path) -> None:
    jar = aiohttp.CookieJar(unsafe=True)  # cookies of 127.0.0.1
    async with running(shop) as daemon, aiohttp.ClientSession(cookie_jar=jar) as session:
        status, text, _ = await get(session, url(daemon, "/report/login?next=/report/abandoned-cart"))
        assert status == 200 and 'type="password"' in text and 'value="/report/abandoned-cart"' in text
        form = {"token": "not it", "next": "/report/abandoned-cart"}
        async with session.post(url(daemon, "/report/login"), data=form, allow_redirects=False) as response:
            assert response.status == 401 and "not the admin token" in await response.text()
        assert not jar.filter_cookies(url(daemon, "/report"))
        form["token"] = ADMIN_TOKEN
        async with session.post(url(daemon, "/report/login"), data=form, allow_redirects=False) as response:
            assert response.status == 303 and response.headers["Location"] == "/report/abandoned-cart"
            cookie = response.cookies["boomerang_report"]
            assert cookie["httponly"] and cookie["samesite"] == "Strict" and cookie["path"] == "/report"
            assert ADMIN_TOKEN not in cookie.value
        status, text, _ = await get(session, url(daemon, "/report/abandoned-cart"), **HTML)
        assert status == 200 and 'data-scenario="abandoned-cart"' in text
        # a tampered cookie is no cookie
        jar.update_cookies({"boomerang_report": cookie.value[:-2] + "AA"}, response.url)
        assert (await get(session, url(daemon, "/report"), **HTML))[0] == 303


async def test_signing_in_never_redirects_off_the_report(shop: Path) -> None:
    async with running(shop) as daemon, aiohttp.ClientSession() as session:
        for target in (
            "https://evil.example/",
            "//evil.example/report",
            "/healthz",
            "/report/../events",
            "/report/x",
        ):
            form = {"token": ADMIN_TOKEN, "next": target}
            async with session.post(
                url(daemon, "/report/login"), data=form, allow_redirects=False
            ) as response:
                assert response.status == 303
                assert response.headers["Location"] == ("/report/x" if target == "/report/x" else "/report")


async def test_without_an_admin_token_the_report_is_off(project: Path) -> None:
    config = project / "boomerang.yaml"
    config.write_text(re.sub(r"^admin_token: .*\n", "", config.read_text(), flags=re.MULTILINE))
    async with running(project) as daemon, aiohttp.ClientSession() as session:
        status, text, _ = await get(session, url(daemon, "/report"), **bearer(ADMIN_TOKEN))
        assert status == 403 and "set admin_token" in text
        assert (await get(session, url(daemon, "/report/login")))[0] == 403


async def test_bad_input_is_never_a_5xx(shop: Path) -> None:
    async with running(shop) as daemon, aiohttp.ClientSession() as session:
        for since in ("99999999d", "2026-13-45", ""):
            status, _, _ = await get(session, url(daemon, f"/report?since={since}"), **bearer(ADMIN_TOKEN))
            assert status == 400
        assert (await get(session, url(daemon, "/report?since=9999-12-31"), **bearer(ADMIN_TOKEN)))[0] == 200
        big = {"token": "x" * 5000}
        async with session.post(url(daemon, "/report/login"), data=big, allow_redirects=False) as response:
            assert response.status == 413
        async with session.post(url(daemon, "/report/login"), json={"token": ADMIN_TOKEN}) as response:
            assert response.status == 401  # not a form: no token
        assert (await get(session, url(daemon, "/report"), Authorization="Bearer \u00e9"))[0] == 401
