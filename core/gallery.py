"""`boomerang preview --all`: every template x channel x locale rendered with sample data on
one self-contained HTML page, so a change to the templates is reviewed by opening one file.

The page loads nothing from anywhere (inline CSS, no scripts, no images but the messages' own):
email in two frames (`srcdoc`) 600 and 375 px wide, SMS with its encoding and segments, push as
a notification card, Telegram with its button, WhatsApp and any other channel as text. A
template that fails to render shows its error in its card; the page is made all the same.

Sample data: core/samples.py. A step's promo is shown with a sample code
(`preview.sample_promo`).
"""

from __future__ import annotations

import html
from dataclasses import dataclass

from boomerang.model import Message
from boomerang.preview import Preview, PreviewError, email_page, render_with
from boomerang.project import Project
from boomerang.samples import sample_customer, sample_event
from boomerang.store import Store

EMAIL_WIDTHS = (600, 375)  # px: a desktop mail client's column, a phone


@dataclass
class Card:
    """One template x channel x locale: its preview, or the error that stopped it."""

    template: str
    channel: str
    locale: str
    preview: Preview | None = None
    error: str | None = None


def render_all(project: Project) -> list[Card]:
    """Every template x channel x locale, rendered with sample data (errors kept in their cards)."""
    cards = []
    store = Store(":memory:")
    try:
        for name in project.templates.names():
            template = project.templates.get(name)
            assert template is not None
            event = sample_event(project, name)
            for channel in sorted(template.channels()):
                for locale in template.locales(channel):
                    card = Card(name, channel, locale)
                    try:
                        card.preview = render_with(
                            project, store, name, channel, sample_customer(locale), event, locale
                        )
                    except PreviewError as exc:
                        card.error = str(exc)
                    cards.append(card)
    finally:
        store.close()
    return cards


STYLE = """
body{font:14px/1.4 system-ui,sans-serif;margin:0;padding:16px;background:#f3f4f6;color:#111}
h1{font-size:20px;margin:0 0 4px}h2{font-size:16px;margin:24px 0 8px;border-bottom:1px solid #ccc}
.summary{color:#555;margin-bottom:8px}.bad{color:#b00020}
.card{background:#fff;border:1px solid #ddd;border-radius:8px;padding:12px;margin:8px 0;max-width:100%;
box-sizing:border-box;overflow-x:auto}
.card h3{font-size:14px;margin:0 0 8px}.card.failed{border-color:#b00020;background:#fff5f5}
.frames{display:flex;gap:16px;flex-wrap:wrap;align-items:flex-start}
.frames figure{margin:0}.frames figcaption{font-size:12px;color:#555}
iframe{border:1px solid #ccc;background:#fff;height:480px}
.meta{font-size:12px;color:#555;margin:4px 0}
.text{white-space:pre-wrap;font-family:inherit;margin:0}
.bubble{background:#e7f7e0;border-radius:12px;padding:8px 12px;max-width:360px;white-space:pre-wrap}
.sms{background:#e5e5ea}.telegram{background:#eef4fb}
.button{display:block;margin-top:6px;text-align:center;background:#2f80c2;color:#fff;border-radius:6px;
padding:6px;text-decoration:none;max-width:360px}
.push{display:flex;gap:10px;background:#fafafa;border:1px solid #ddd;border-radius:10px;padding:10px;
max-width:360px;box-shadow:0 1px 3px rgba(0,0,0,.15)}
.push .icon{width:36px;height:36px;border-radius:8px;background:#2f80c2;flex:none}
.push b{display:block}.notes{font-size:12px;color:#555;margin:6px 0 0;padding-left:18px}
"""


def gallery_page(cards: list[Card], title: str = "Boomerang templates") -> str:
    """The self-contained HTML page of the cards, grouped by template."""
    failed = sum(1 for card in cards if card.error)
    parts = [
        "<!doctype html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        '<link rel="icon" href="data:,">',  # else a browser asks the server for /favicon.ico
        f"<title>{html.escape(title)}</title><style>{STYLE}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
        f'<p class="summary">{len(cards)} previews with sample data'
        + (f', <span class="bad">{failed} failed to render</span>' if failed else "")
        + "</p>",
    ]
    shown = None
    for card in cards:
        if card.template != shown:
            shown = card.template
            parts.append(f'<h2 id="{html.escape(card.template)}">{html.escape(card.template)}</h2>')
        parts.append(_card(card))
    parts.append("</body></html>\n")
    return "\n".join(parts)


def _card(card: Card) -> str:
    heading = f"<h3>{html.escape(card.channel)} · {html.escape(card.locale or 'no locale')}</h3>"
    label = f'data-template="{html.escape(card.template)}" data-channel="{html.escape(card.channel)}"'
    if card.error or card.preview is None:
        error = html.escape(card.error or "not rendered")
        return f'<section class="card failed" {label}>{heading}<p class="bad">{error}</p></section>'
    message, notes = card.preview.message, card.preview.notes
    body = _body(message)
    listed = "".join(f"<li>{html.escape(note)}</li>" for note in notes)
    return f'<section class="card" {label}>{heading}{body}' + (
        f'<ul class="notes">{listed}</ul></section>' if listed else "</section>"
    )


def _body(message: Message) -> str:
    escape, channel, text, extra = html.escape, message.channel, message.body, message.extra
    if channel == "email":
        document = escape(email_page(message))
        frames = "".join(
            f'<figure><figcaption>{width} px</figcaption><iframe class="email" width="{width}" '
            f'data-width="{width}" sandbox="allow-same-origin" srcdoc="{document}"></iframe></figure>'
            for width in EMAIL_WIDTHS
        )
        subject = escape(message.subject or "")
        return f'<p class="meta">Subject: <b>{subject}</b></p><div class="frames">{frames}</div>'
    if channel == "push":
        title = escape(str(extra.get("title") or ""))
        url = escape(str(extra.get("url") or ""))
        return (
            f'<div class="push"><div class="icon"></div><div><b>{title}</b>{escape(text)}'
            f'<div class="meta">{url}</div></div></div>'
        )
    style = {"sms": "bubble sms", "telegram": "bubble telegram"}.get(channel, "bubble")
    bubble = f'<div class="{style}">{escape(text)}</div>'
    button = extra.get("button")
    if channel == "telegram" and button:
        bubble += f'<a class="button" href="{escape(str(extra.get("url") or ""))}">{escape(str(button))}</a>'
    return bubble
