"""The web report as a marketer opens it: headless Chromium goes to the daemon's /report, is
sent to the login form, signs in with the admin token, and gets the page: it loads with its
charts, logs no console error, and does not screenshot blank."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from browser import CHROMIUM, NO_CHROMIUM, chromium
from report_data import a_month, with_a_split

from conftest import project_store, running, url, wait_for

pytestmark = pytest.mark.skipif(CHROMIUM is None, reason=NO_CHROMIUM)
ADMIN_TOKEN = "admin-token-for-the-browser-test"


async def test_the_report_in_a_real_browser(
    project: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BOOMERANG_ADMIN_TOKEN", ADMIN_TOKEN)
    with_a_split(project)
    store = project_store(project)
    a_month(store, datetime.now(UTC))
    store.close()
    async with running(project) as daemon, chromium(tmp_path / "chromium") as browser:
        target = await browser.send("Target.createTarget", url="about:blank")
        attached = await browser.send("Target.attachToTarget", targetId=target["targetId"], flatten=True)
        tab = attached["sessionId"]
        for domain in ("Runtime.enable", "Log.enable", "Page.enable"):
            await browser.send(domain, tab)
        await browser.send(
            "Emulation.setDeviceMetricsOverride",
            tab,
            width=1280,
            height=900,
            deviceScaleFactor=1,
            mobile=False,
        )
        await browser.send("Page.navigate", tab, url=url(daemon, "/report/abandoned-cart"))
        await wait_for(
            lambda: browser.evaluate(tab, "document.readyState === 'complete' && !!document.forms[0]"),
            30,
            "the login form",
        )
        assert await browser.evaluate(tab, "location.pathname") == "/report/login"
        await browser.evaluate(
            tab, f"document.getElementById('token').value = {ADMIN_TOKEN!r}; document.forms[0].submit(); true"
        )
        await wait_for(
            lambda: browser.evaluate(
                tab,
                "document.readyState === 'complete' && !!document.querySelector('section[data-scenario]')",
            ),
            30,
            "the report",
        )
        assert await browser.evaluate(tab, "location.pathname") == "/report/abandoned-cart"
        charts = await browser.evaluate(tab, "document.querySelectorAll('svg').length")
        assert charts >= 5  # per day, reasons, funnel, plan, two comparisons
        drawn = await browser.evaluate(
            tab, "Array.from(document.querySelectorAll('svg')).every(s => s.getBBox().width > 0)"
        )
        assert drawn

        png, colours = await browser.screenshot(tab)
        assert png[:4] == b"\x89PNG"
        assert colours > 3

        errors = [
            event
            for event in browser.events
            if event["method"] == "Runtime.exceptionThrown"
            or (event["method"] == "Runtime.consoleAPICalled" and event["params"]["type"] == "error")
            or (event["method"] == "Log.entryAdded" and event["params"]["entry"]["level"] == "error")
        ]
        assert errors == [], [event["params"] for event in errors]
