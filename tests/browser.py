"""Headless Chromium for tests, driven over its DevTools protocol with aiohttp's websocket
client: `chromium(profile)` starts one and yields a `DevTools` client. Tests that need it skip
with `NO_CHROMIUM` as the reason when `CHROMIUM` is None."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import json
import shutil
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp

from conftest import wait_for

CHROMIUM = next(
    (path for name in ("chromium", "chromium-browser", "google-chrome") if (path := shutil.which(name))), None
)
NO_CHROMIUM = "Chromium is not installed (Debian: apt-get install chromium; `make test` does it)"
# How many different colours a screenshot holds (sampled), drawn on a canvas in the page.
COLOURS = """new Promise(done => {
  const image = new Image();
  image.onload = () => {
    const canvas = document.createElement('canvas');
    canvas.width = image.width; canvas.height = image.height;
    const context = canvas.getContext('2d');
    context.drawImage(image, 0, 0);
    const pixels = context.getImageData(0, 0, image.width, image.height).data;
    const seen = new Set();
    for (let i = 0; i < pixels.length; i += 4 * 97) seen.add(pixels.slice(i, i + 3).join());
    done(seen.size);
  };
  image.src = 'data:image/png;base64,__PNG__';
})"""


class DevTools:
    """A tiny client of Chromium's DevTools protocol over one websocket: commands to the
    browser or, with a session id, to a page. The protocol's events that arrive meanwhile are
    kept in `events` (console messages, once `Runtime.enable` and `Log.enable` are sent)."""

    def __init__(self, socket: aiohttp.ClientWebSocketResponse):
        self.socket = socket
        self.ids = itertools.count(1)
        self.events: list[dict[str, Any]] = []

    async def send(self, method: str, session: str | None = None, **params: Any) -> dict[str, Any]:
        """Send one command and return its result; protocol events on the way are kept."""
        number = next(self.ids)
        message: dict[str, Any] = {"id": number, "method": method, "params": params}
        if session:
            message["sessionId"] = session
        await self.socket.send_json(message)
        async with asyncio.timeout(20):
            while True:
                answer = json.loads((await self.socket.receive()).data)
                if answer.get("id") == number:
                    assert "error" not in answer, (method, answer["error"])
                    return answer["result"]
                if "method" in answer:
                    self.events.append(answer)

    async def evaluate(self, session: str, expression: str) -> Any:
        """The value of a JavaScript expression in the page (awaited if it is a promise)."""
        result = await self.send(
            "Runtime.evaluate", session, expression=expression, awaitPromise=True, returnByValue=True
        )
        assert "exceptionDetails" not in result, result["exceptionDetails"]
        return result["result"].get("value")

    async def screenshot(self, session: str) -> tuple[bytes, int]:
        """The page as a PNG, and how many colours a sample of its pixels holds (1: blank)."""
        shot = await self.send("Page.captureScreenshot", session, format="png")
        return base64.b64decode(shot["data"]), await self.evaluate(
            session, COLOURS.replace("__PNG__", shot["data"])
        )


@contextlib.asynccontextmanager
async def chromium(profile: Path) -> AsyncIterator[DevTools]:
    """Headless Chromium with a fresh profile, and a DevTools client connected to it."""
    process = subprocess.Popen(
        [
            str(CHROMIUM),
            "--headless=new",
            "--no-sandbox",  # tests run as root in containers
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--no-default-browser-check",
            "--remote-debugging-port=0",
            f"--user-data-dir={profile}",
            "about:blank",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        # Chromium writes the port it chose and the browser's websocket path to this file.
        active = profile / "DevToolsActivePort"
        lines = await wait_for(
            lambda: active.exists() and len(active.read_text().split()) == 2 and active.read_text().split(),
            30,
            "Chromium's DevTools port",
        )
        async with (
            aiohttp.ClientSession() as session,
            session.ws_connect(f"ws://127.0.0.1:{lines[0]}{lines[1]}", max_msg_size=0) as socket,
        ):
            yield DevTools(socket)
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
