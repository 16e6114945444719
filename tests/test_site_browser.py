"""Site tracking as a browser runs it: headless Chromium, driven over its DevTools protocol with
aiohttp's websocket client, opens a shop page (served by a local aiohttp server on its own
origin) that includes `/t.js`; the visitor views a product, adds it to the cart and logs in (a
token the shop's server sealed), then leaves. The daemon must store the events under one
visitor, merge the visitor into the customer on identify, keep the visit open while the page is
visible, derive `site.left` once it is gone, and end a wait `until_idle` only after that."""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from browser import CHROMIUM, NO_CHROMIUM, chromium
from site_tracking import configure_site, events, owner, reminded, rows

import conftest
from boomerang.tokens import seal
from conftest import AUTH, SECRET, free_port, running, url, wait_for

pytestmark = pytest.mark.skipif(CHROMIUM is None, reason=NO_CHROMIUM)

LEFT_AFTER = 3  # seconds: the visit's idle time, short for the test
IDLE_SCENARIO = """
scenario: idle-reminder
trigger: {event: cart.updated}
steps:
  - wait: 1s
    until_idle: 1s
  - set: {reminded: true}
"""
PAGE = """<!doctype html>
<html><head><title>Bicycle</title>
<script>
window.boomerang = window.boomerang || {q: []};
["track", "identify", "cart"].forEach(function (m) {
  window.boomerang[m] = window.boomerang[m] || function () { window.boomerang.q.push([m, arguments]); };
});
boomerang.track("product.viewed", {product: {sku: "B-1", name: "Bicycle", price: 79.9}});
</script>
<script async src="__DAEMON__/t.js"></script>
</head><body><h1>Bicycle</h1>
<script>window.identifyToken = "__TOKEN__";</script>
</body></html>
"""


@contextlib.asynccontextmanager
async def shop(port: int, page: str) -> AsyncIterator[None]:
    """The shop's site on its own origin (`http://127.0.0.1:<port>`): one product page."""
    app = web.Application()

    async def product(request: web.Request) -> web.Response:
        return web.Response(text=page, content_type="text/html")

    app.router.add_get("/product", product)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield
    finally:
        await runner.cleanup()


def last_seen(project: Path, customer_id: str) -> datetime | None:
    found = rows(project, "SELECT last_seen_at FROM customers WHERE id = ?", customer_id)
    return datetime.fromisoformat(found[0][0]) if found and found[0][0] else None


async def test_a_visit_in_a_real_browser(project: Path, tmp_path: Path) -> None:
    (project / "scenarios" / "idle_reminder.yaml").write_text(IDLE_SCENARIO)
    page = PAGE.replace("__TOKEN__", seal(SECRET, "site", "c-42"))  # what the shop's server does
    shop_port = free_port()
    origin = f"http://127.0.0.1:{shop_port}"
    configure_site(project, origin, left_after=f"{LEFT_AFTER}s")
    async with running(project) as daemon, aiohttp.ClientSession() as session:
        body = conftest.event(
            "e-anna", "customer.updated", datetime.now(UTC), {"id": "c-42", "email": "anna@example.com"}
        )
        async with session.post(url(daemon, "/events"), json=body, headers=AUTH) as response:
            assert response.status == 200
        page = page.replace("__DAEMON__", url(daemon, ""))
        async with shop(shop_port, page), chromium(tmp_path / "chromium") as browser:
            target = await browser.send("Target.createTarget", url=f"{origin}/product")
            attached = await browser.send("Target.attachToTarget", targetId=target["targetId"], flatten=True)
            tab = attached["sessionId"]
            await wait_for(
                lambda: browser.evaluate(tab, "Boolean(window.boomerang && window.boomerang.loaded)"),
                20,
                "/t.js to load",
            )
            visitor = await browser.evaluate(tab, "boomerang.visitor")
            assert visitor == await browser.evaluate(tab, "localStorage.getItem('boomerang_vid')")
            await wait_for(lambda: events(project, "product.viewed"), 20, "the product view")
            anonymous = owner(project, visitor)
            assert anonymous is not None and anonymous.startswith("anon-")

            await browser.evaluate(tab, 'boomerang.cart({items: [{sku: "B-1", qty: 1}], total: 79.9})')
            await wait_for(lambda: events(project, "cart.updated"), 20, "the cart update")
            await browser.evaluate(tab, "boomerang.identify({token: window.identifyToken})")
            await wait_for(lambda: owner(project, visitor) == "c-42", 20, "the visitor to be linked")

            stored = events(project)
            assert [type_ for _, type_, _ in stored] == [
                "customer.updated",
                "product.viewed",
                "cart.updated",
                "site.identified",
            ]
            assert all(event_id.startswith(f"site:{visitor}:") for event_id, _, _ in stored[1:])
            assert {customer for _, _, customer in stored} == {"c-42"}  # the anonymous profile merged
            assert rows(project, "SELECT count(*) FROM customers WHERE id = ?", anonymous) == [(0,)]

            # While the page is open and visible its heartbeats keep the visit going: the
            # customer is seen again well past the idle time, and no site.left comes.
            identified = last_seen(project, "c-42")
            assert identified is not None
            later = identified + timedelta(seconds=LEFT_AFTER + 1)
            await wait_for(lambda: last_seen(project, "c-42") >= later, 30, "heartbeats")
            assert events(project, "site.left") == []
            assert reminded(project, "c-42") is None

            # The visitor goes away: the page is hidden and unloaded (a last beacon goes).
            gone = time.time()
            await browser.send("Page.navigate", tab, url="about:blank")
            left = await wait_for(lambda: events(project, "site.left"), 30, "site.left")
            assert [customer for _, _, customer in left] == ["c-42"]
            left_at = rows(project, "SELECT at FROM events WHERE type = 'site.left'")[0][0]
            assert datetime.fromisoformat(left_at).timestamp() >= gone

            await wait_for(
                lambda: reminded(project, "c-42") is True, 20, "the until_idle wait to end after site.left"
            )
