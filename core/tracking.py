"""Tracked links in messages and the endpoints they lead to.

Before a message goes, its HTML links are rewritten to `/c/<token>` (the redirect goes only to
the URL that was in the message: the token names the message and the link's index, never a
URL), an open pixel `/o/<token>` is added, and marketing messages get an unsubscribe link
`/u/<token>`; email adds RFC 8058 one-click headers for it. Tokens are signed with `secret`.
"""

from __future__ import annotations

import html
import re
from collections.abc import Callable, Iterable
from typing import Any

from aiohttp import web

from boomerang.kinds import Ingest
from boomerang.model import Message
from boomerang.tokens import sign, verify

_HREF = re.compile(r'(<a\b[^>]*?\bhref=")(https?://[^"]+)(")', re.IGNORECASE)
PIXEL = (
    b"GIF89a\x01\x00\x01\x00\x80\x00\x00\x00\x00\x00\xff\xff\xff!\xf9\x04\x01\x00\x00\x00\x00,"
    b"\x00\x00\x00\x00\x01\x00\x01\x00\x00\x02\x02D\x01\x00;"
)
NO_STORE = {"Cache-Control": "no-store, private", "Referrer-Policy": "no-referrer"}


class Tracking:
    """Rewrites a message's links and adds its pixel and unsubscribe link."""

    def __init__(self, public_url: str, secret: str):
        self.public_url = public_url.rstrip("/")
        self.secret = secret

    def unsubscribe_url(self, message_id: str) -> str:
        """The signed unsubscribe page of a message."""
        return f"{self.public_url}/u/{sign(self.secret, 'unsubscribe', message_id)}"

    def apply(self, message: Message) -> list[str]:
        """Rewrite the message in place; returns the original URLs, by their index in the tokens."""
        links: list[str] = []
        if message.category != "transactional":
            message.extra["unsubscribe_url"] = self.unsubscribe_url(message.id)
        if message.html:

            def tracked(match: re.Match) -> str:
                links.append(html.unescape(match.group(2)))
                token = sign(self.secret, "click", f"{message.id}:{len(links) - 1}")
                return f"{match.group(1)}{self.public_url}/c/{token}{match.group(3)}"

            message.html = _HREF.sub(tracked, message.html)
            token = sign(self.secret, "open", message.id)
            pixel = f'<img src="{self.public_url}/o/{token}" width="1" height="1" alt="">'
            message.html = (
                message.html.replace("</body>", pixel + "</body>")
                if "</body>" in message.html
                else message.html + pixel
            )
        return links


def routes(
    secret: str | None, store: Any, ingest: Ingest, channels: Callable[[], Iterable[str]]
) -> list[web.RouteDef]:
    """`GET /o/<token>`, `GET /c/<token>`, `GET` and `POST /u/<token>`; the unsubscribe page
    offers the `channels()` configured at the time (they change on a reload)."""

    async def opened(request: web.Request) -> web.Response:
        message_id = secret and verify(secret, "open", request.match_info["token"])
        if not message_id:
            raise web.HTTPNotFound()
        await ingest.feedback(message_id, "message.opened")
        return web.Response(body=PIXEL, content_type="image/gif", headers=NO_STORE)

    async def clicked(request: web.Request) -> web.Response:
        value = secret and verify(secret, "click", request.match_info["token"])
        if not value:
            raise web.HTTPNotFound(text="This link is not valid.\n")
        message_id, _, index = value.rpartition(":")
        record = await store.run(store.message, message_id)
        links = (record or {}).get("links") or []
        # ASCII digits only: "²" is a digit to `isdigit` and none to `int`.
        if not (index.isascii() and index.isdigit()) or int(index) >= len(links):
            raise web.HTTPNotFound(text="This link is not valid.\n")
        await ingest.feedback(message_id, "message.clicked", {"url": links[int(index)]}, key=index)
        raise web.HTTPFound(links[int(index)], headers=NO_STORE)

    async def unsubscribe(request: web.Request) -> web.Response:
        message_id = secret and verify(secret, "unsubscribe", request.match_info["token"])
        record = message_id and await store.run(store.message, message_id)
        if not record:
            raise web.HTTPNotFound(text="This unsubscribe link is not valid.\n")
        channel = record["channel"] or "email"
        choices = [channel, *(name for name in channels() if name != channel)]
        # Only POST changes anything (RFC 8058): GET and HEAD (link scanners, prefetchers) show.
        if request.method != "POST":
            return web.Response(text=_page(channel, choices), content_type="text/html", headers=NO_STORE)
        form = await request.post()
        if form.get("List-Unsubscribe") == "One-Click":  # RFC 8058: at once, from the mail client
            chosen = [channel]
        else:
            chosen = [c for c in form.getall("channel", []) if c in (*choices, "all")] or [channel]
        await ingest.feedback(message_id, "message.unsubscribed", {"channels": chosen})
        return web.Response(text=_done(chosen), content_type="text/html", headers=NO_STORE)

    return [
        web.get("/o/{token}", opened),
        web.get("/c/{token}", clicked),
        web.get("/u/{token}", unsubscribe),
        web.post("/u/{token}", unsubscribe),
    ]


_STYLE = "font-family:sans-serif;max-width:28rem;margin:3rem auto;line-height:1.5"


def _page(channel: str, names: list[str]) -> str:
    choices = "".join(
        f'<label><input type="checkbox" name="channel" value="{html.escape(name)}"'
        f"{' checked' if name == channel else ''}> "
        f"{html.escape(name)}</label><br>"
        for name in names
    )
    return (
        f'<!doctype html><meta charset="utf-8"><title>Unsubscribe</title><body style="{_STYLE}">'
        f"<h1>Unsubscribe</h1><form method=post><p>Stop messages over:</p>{choices}"
        f'<label><input type="checkbox" name="channel" value="all"> everything</label>'
        f"<p><button type=submit>Unsubscribe</button></p></form></body>"
    )


def _done(channels: list[str]) -> str:
    return (
        f'<!doctype html><meta charset="utf-8"><title>Unsubscribed</title><body style="{_STYLE}">'
        f"<h1>Done</h1><p>You will get no more messages over: {', '.join(channels)}.</p></body>"
    )
