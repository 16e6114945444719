"""`boomerang preview --all` as a reviewer sees it: the page opened in headless Chromium (served
by a local aiohttp server) loads with no console errors, does not screenshot blank, and no email
is wider than its frame at 375 px."""

from __future__ import annotations

from pathlib import Path

import pytest
from aiohttp import web
from browser import CHROMIUM, NO_CHROMIUM, chromium
from click.testing import CliRunner

from boomerang.cli import cli
from conftest import free_port, wait_for

pytestmark = pytest.mark.skipif(CHROMIUM is None, reason=NO_CHROMIUM)

LOADED = """Array.from(document.querySelectorAll('iframe')).every(
  f => f.contentDocument && f.contentDocument.readyState === 'complete' && f.contentDocument.body)
  && document.readyState === 'complete'"""
# Each 375 px frame whose email is wider than the frame: [template, scrollWidth, clientWidth].
OVERFLOWING = """Array.from(document.querySelectorAll('iframe[data-width="375"]')).map(f => {
  const root = f.contentDocument.documentElement;
  return [f.closest('section').dataset.template, root.scrollWidth, root.clientWidth];
}).filter(([, scroll, client]) => scroll > client)"""


async def test_the_gallery_in_a_real_browser(project: Path, tmp_path: Path) -> None:
    page = tmp_path / "gallery.html"
    result = CliRunner().invoke(
        cli, ["preview", "--all", "--out", str(page), "--config", str(project / "boomerang.yaml")]
    )
    assert result.exit_code == 0, result.output
    app = web.Application()

    async def gallery(request: web.Request) -> web.FileResponse:
        return web.FileResponse(page)

    app.router.add_get("/gallery.html", gallery)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        async with chromium(tmp_path / "chromium") as browser:
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
            await browser.send("Page.navigate", tab, url=f"http://127.0.0.1:{port}/gallery.html")
            await wait_for(lambda: browser.evaluate(tab, LOADED), 30, "the gallery and its frames to load")

            frames = await browser.evaluate(
                tab, "document.querySelectorAll('iframe[data-width=\"375\"]').length"
            )
            assert frames == len(list((project / "templates").glob("*/email.*")))
            assert await browser.evaluate(tab, OVERFLOWING) == []

            png, colours = await browser.screenshot(tab)
            assert colours > 1, "the screenshot is one colour"
            assert png[:4] == b"\x89PNG"

            errors = [
                event
                for event in browser.events
                if event["method"] == "Runtime.exceptionThrown"
                or (event["method"] == "Runtime.consoleAPICalled" and event["params"]["type"] == "error")
                or (event["method"] == "Log.entryAdded" and event["params"]["entry"]["level"] == "error")
            ]
            assert errors == [], [event["params"] for event in errors]
    finally:
        await runner.cleanup()
