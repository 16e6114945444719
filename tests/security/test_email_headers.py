"""Email headers and connections (issue 9, section 5).

`List-Unsubscribe` must reach mailbox providers in the plain `<https://...>, <mailto:...>` form
(RFC 2369, RFC 8058): read from the raw bytes the SMTP server received and the raw bytes of the
outbox `.eml` file, never through a header parsed back by the email package.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import aiohttp
import pytest

import conftest
from fakes.smtp_server import header

PROMO = """\
scenario: news
category: promo
trigger: {event: signup.completed}
steps:
  - send: news
"""


def news_project(project: Path, smtp_port: int | None) -> None:
    """One promo email on signup, to the SMTP server on `smtp_port`, or to the outbox if None."""
    config = project / "boomerang.yaml"
    text = config.read_text()
    if smtp_port is not None:
        text = text.replace("outbox: ./outbox\n", "").replace("port: 25,", f"port: {smtp_port},")
    config.write_text(text)
    for old in (project / "scenarios").glob("*.yaml"):
        old.unlink()
    (project / "scenarios" / "news.yaml").write_text(PROMO)
    (project / "templates" / "news").mkdir()
    (project / "templates" / "news" / "email.en.html").write_text(
        '---\nsubject: What is new\n---\n<p>See <a href="https://shop.example/new">what is new</a>.</p>\n'
    )


@pytest.mark.parametrize("way", ["smtp", "outbox"])
async def test_list_unsubscribe_is_plain_on_the_wire(project: Path, smtp, monkeypatch, way: str) -> None:
    mailbox, smtp_port = smtp
    news_project(project, smtp_port if way == "smtp" else None)
    base = f"http://127.0.0.1:{os.environ['BOOMERANG_PORT']}"
    monkeypatch.setenv("BOOMERANG_PUBLIC_URL", base)
    signup = conftest.event("s-1", "signup.completed", id="c-1", email="anna@example.com")
    async with conftest.running(project) as daemon, aiohttp.ClientSession() as session:
        async with session.post(
            conftest.url(daemon, "/events"), data=json.dumps(signup), headers=conftest.AUTH
        ) as answer:
            assert answer.status == 200
        outbox = project / "outbox"
        if way == "smtp":
            [raw] = await conftest.wait_for(lambda: mailbox.raw)
        else:
            [path] = await conftest.wait_for(lambda: list(outbox.glob("*-email-*.eml")))
            raw = path.read_bytes()

        value = header(raw, b"List-Unsubscribe")
        assert b"=?" not in value  # no RFC 2047 encoded word
        web, mailto = re.fullmatch(rb"<([^<>\s]+)>, <([^<>\s]+)>", value).groups()
        assert web.startswith(base.encode() + b"/u/")
        assert mailto.startswith(b"mailto:shop@example.com?subject=unsubscribe%20")
        assert header(raw, b"List-Unsubscribe-Post") == b"List-Unsubscribe=One-Click"

        # what a mailbox provider does with it: a one-click POST to the URL as it stands
        form = aiohttp.FormData({"List-Unsubscribe": "One-Click"})
        async with session.post(web.decode(), data=form) as answer:
            assert answer.status == 200
        customer = await daemon.store.run(daemon.store.customer, "c-1")
        assert "email" in customer.opt_outs
