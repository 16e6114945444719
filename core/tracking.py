"""Tracked links in messages and the endpoints they lead to.

Before a message goes, its HTML links are rewritten to `/c/<token>` (the redirect goes only to
the URL that was in the message: the token names the message and the link's index, never a
URL), an open pixel `/o/<token>` is added, and marketing messages get an unsubscribe link
`/u/<token>`; email adds RFC 8058 one-click headers for it. Tokens are signed with `secret`.
The unsubscribe link is known before the message renders (`page_links`), so its template can
print it; the page speaks the customer's language and offers the channels that reach them.
"""

from __future__ import annotations

import html
import re
from collections.abc import Callable, Mapping
from typing import Any

from aiohttp import web

from boomerang.kinds import Channel, Ingest
from boomerang.model import Customer, Message
from boomerang.tokens import sign, verify

_HREF = re.compile(r'(<a\b[^>]*?\bhref=")(https?://[^"]+)(")', re.IGNORECASE)
PIXEL = (
    b"GIF89a\x01\x00\x01\x00\x80\x00\x00\x00\x00\x00\xff\xff\xff!\xf9\x04\x01\x00\x00\x00\x00,"
    b"\x00\x00\x00\x00\x01\x00\x01\x00\x00\x02\x02D\x01\x00;"
)
NO_STORE = {"Cache-Control": "no-store, private", "Referrer-Policy": "no-referrer"}


SAMPLE_TOKEN = "sample"  # the unsubscribe page's token in `simulate` and `preview`: no real page


def page_links(
    tracking: Tracking | None, message_id: str, category: str, public_url: str, sample: bool = False
) -> dict[str, str]:
    """`unsubscribe_url` and `preferences_url` for a message's template, known before it renders.

    Both lead to the message's unsubscribe page, which lists every channel the customer can be
    reached on, so it is also where they choose what they keep. A transactional message gets
    neither (empty: `{% if unsubscribe_url %}` leaves its footer out); without `secret` there
    is no page, so none either; `sample` (simulate, preview) gives a placeholder on `public_url`.
    """
    if category == "transactional":
        url = ""
    elif sample:
        url = f"{public_url.rstrip('/')}/u/{SAMPLE_TOKEN}"
    else:
        url = tracking.unsubscribe_url(message_id) if tracking else ""
    return {"unsubscribe_url": url, "preferences_url": url}


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
            own_pages = f"{self.public_url}/u/"

            def tracked(match: re.Match) -> str:
                if match.group(2).startswith(own_pages):
                    return match.group(0)  # its own unsubscribe link is no click to count
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
    secret: str | None, store: Any, ingest: Ingest, channels: Callable[[], Mapping[str, Channel]]
) -> list[web.RouteDef]:
    """`GET /o/<token>`, `GET /c/<token>`, `GET` and `POST /u/<token>`; the unsubscribe page
    offers the `channels()` configured at the time (they change on a reload) that the customer
    can be reached on, in their locale."""

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
        customer = await store.run(store.customer, record["customer_id"])
        choices = [channel, *(name for name in reachable(customer, channels()) if name != channel)]
        words = PAGE_WORDS[page_locale(customer)]
        # Only POST changes anything (RFC 8058): GET and HEAD (link scanners, prefetchers) show.
        if request.method != "POST":
            page = _page(channel, choices, words)
            return web.Response(text=page, content_type="text/html", headers=NO_STORE)
        form = await request.post()
        if form.get("List-Unsubscribe") == "One-Click":  # RFC 8058: at once, from the mail client
            chosen = [channel]
        else:
            chosen = [c for c in form.getall("channel", []) if c in (*choices, "all")] or [channel]
        await ingest.feedback(message_id, "message.unsubscribed", {"channels": chosen})
        return web.Response(text=_done(chosen, words), content_type="text/html", headers=NO_STORE)

    return [
        web.get("/o/{token}", opened),
        web.get("/c/{token}", clicked),
        web.get("/u/{token}", unsubscribe),
        web.post("/u/{token}", unsubscribe),
    ]


def reachable(customer: Customer | None, channels: Mapping[str, Channel]) -> list[str]:
    """The configured channels the customer has an address on, has not opted out of and whose
    address is not known bad: those an unsubscribe page offers besides the message's own."""
    if customer is None or "all" in customer.opt_outs:
        return []
    return [
        name
        for name, channel in channels.items()
        if channel.address(customer) and name not in customer.opt_outs and name not in customer.unreachable
    ]


# The unsubscribe page in the customers' languages; a channel without a word here shows its name.
PAGE_WORDS: dict[str, dict[str, Any]] = {
    "en": {
        "lang": "en",
        "title": "Unsubscribe",
        "ask": "Stop messages over:",
        "all": "everything",
        "button": "Unsubscribe",
        "done_title": "Unsubscribed",
        "done": "Done",
        "no_more": "You will get no more messages over:",
        "channels": {"email": "email", "sms": "SMS", "push": "notifications in the browser"},
    },
    "ru": {
        "lang": "ru",
        "title": "Отписка",
        "ask": "Больше не присылать сообщения по каналам:",
        "all": "все каналы",
        "button": "Отписаться",
        "done_title": "Вы отписались",
        "done": "Готово",
        "no_more": "Вы больше не будете получать сообщения по каналам:",
        "channels": {"email": "электронная почта", "sms": "SMS", "push": "уведомления в браузере"},
    },
    "uk": {
        "lang": "uk",
        "title": "Відписка",
        "ask": "Більше не надсилати повідомлення каналами:",
        "all": "усі канали",  # noqa: RUF001 - Ukrainian
        "button": "Відписатися",
        "done_title": "Ви відписалися",
        "done": "Готово",
        "no_more": "Ви більше не отримуватимете повідомлення каналами:",
        "channels": {"email": "електронна пошта", "sms": "SMS", "push": "сповіщення в браузері"},
    },
}


def page_locale(customer: Customer | None) -> str:
    """The language of the customer's unsubscribe page: theirs if it is one the page speaks, else en."""
    language = ((customer.locale if customer else None) or "en")[:2].lower()
    return language if language in PAGE_WORDS else "en"


_STYLE = "font-family:sans-serif;max-width:28rem;margin:3rem auto;line-height:1.5"


def _page(channel: str, names: list[str], words: dict[str, Any]) -> str:
    choices = "".join(
        f'<label><input type="checkbox" name="channel" value="{html.escape(name)}"'
        f"{' checked' if name == channel else ''}> "
        f"{html.escape(words['channels'].get(name, name))}</label><br>"
        for name in names
    )
    return (
        f'<!doctype html><html lang="{words["lang"]}"><meta charset="utf-8">'
        f'<title>{html.escape(words["title"])}</title><body style="{_STYLE}">'
        f"<h1>{html.escape(words['title'])}</h1><form method=post><p>{html.escape(words['ask'])}</p>{choices}"
        f'<label><input type="checkbox" name="channel" value="all"> {html.escape(words["all"])}</label>'
        f"<p><button type=submit>{html.escape(words['button'])}</button></p></form></body></html>"
    )


def _done(channels: list[str], words: dict[str, Any]) -> str:
    names = ", ".join(
        html.escape(words["channels"].get(name, words["all"] if name == "all" else name)) for name in channels
    )
    return (
        f'<!doctype html><html lang="{words["lang"]}"><meta charset="utf-8">'
        f'<title>{html.escape(words["done_title"])}</title><body style="{_STYLE}">'
        f"<h1>{html.escape(words['done'])}</h1><p>{html.escape(words['no_more'])} {names}.</p></body></html>"
    )
