"""Stand-ins for the providers, speaking their wire formats: a push service, Twilio, the Telegram Bot
API, an SMTP mailbox, and plain channels for the contact-plan tests."""

from __future__ import annotations

from typing import Any

from aiohttp import web


async def serve(app: web.Application, **runner_options: Any) -> tuple[web.AppRunner, str]:
    """Serve `app` on a free port of 127.0.0.1: its runner (to `cleanup()`) and its base URL."""
    runner = web.AppRunner(app, **runner_options)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    return runner, f"http://127.0.0.1:{port}"
