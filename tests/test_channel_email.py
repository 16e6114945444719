"""The email channel against a real SMTP server (aiosmtpd): MIME, headers, the connection pool,
SMTP answers, and the links in a message: one-click unsubscribe, click redirect, open pixel."""

from __future__ import annotations

import asyncio
import json
import quopri
import re
import ssl
from email.header import decode_header, make_header
from pathlib import Path

import aiohttp
import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

from boomerang.config import load_config
from boomerang.model import DeliveryStatus, Message
from boomerang.pacing import Pace
from boomerang.plugins.channels import email
from boomerang.plugins.channels.email import EmailChannel
from boomerang.problems import ProblemError
from conftest import AUTH, free_port, running, url, wait_for
from fakes.push_service import make_certificate
from fakes.smtp_server import Mailbox, header


def message(**fields) -> Message:
    values = {
        "id": "m-1",
        "customer_id": "c-1",
        "channel": "email",
        "to": "anna@example.com",
        "template": "t",
        "subject": "Привет, Анна — скидка 10%",
        "body": "Текст письма",
        "html": "<p>HTML письма</p>",
        "category": "trigger",
    }
    return Message(**{**values, **fields})


async def test_a_message_is_multipart_with_utf8_headers_and_ids(smtp) -> None:
    mailbox, port = smtp
    channel = EmailChannel({"host": "127.0.0.1", "port": port, "from": "Магазин <shop@example.com>"})
    delivery = await channel.send(message(extra={"preheader": "Только до пятницы"}))
    await channel.close()
    assert delivery.status is DeliveryStatus.SENT
    [mail] = mailbox.messages
    assert mail["Subject"] == "Привет, Анна — скидка 10%"
    assert mail["From"] == "Магазин <shop@example.com>"
    assert mail["To"] == "anna@example.com"
    assert mail["X-Boomerang-Message-Id"] == "m-1"
    assert re.fullmatch(r"<[^@>]*m-1[^@>]*@example\.com>", mail["Message-ID"])
    assert mail["Date"]
    assert mail.get_content_type() == "multipart/alternative"
    assert mail.get_body(("plain",)).get_content().strip() == "Текст письма"
    html = mail.get_body(("html",)).get_content()
    assert "HTML письма" in html and "Только до пятницы" in html
    assert "List-Unsubscribe" not in mail  # no unsubscribe link was given


# One line of 90 characters, 162 bytes of UTF-8: longer than 78, so the email package's
# own choice for it was base64, which no one reads in `less`.
LONG_RUSSIAN = "Ваша корзина ждёт вас: велосипед, шлем и фонарь всё ещё в ней, скидка действует до пятницы"


def part(raw: bytes, content_type: bytes) -> tuple[bytes, bytes]:
    """A part's header block and body, as the bytes that came over the wire."""
    found = re.search(rb"Content-Type: " + content_type + rb".*?\r\n\r\n(.*?)\r\n--", raw, re.DOTALL)
    assert found, f"no {content_type.decode()} part"
    head = raw[raw.rindex(b"Content-Type: " + content_type, 0, found.end()) : found.start(1)]
    return head, found.group(1)


async def test_bodies_go_as_8bit_utf8_to_a_server_with_8bitmime(smtp) -> None:
    mailbox, port = smtp
    channel = EmailChannel({"host": "127.0.0.1", "port": port, "from": "Магазин <shop@example.com>"})
    await channel.send(message(body=LONG_RUSSIAN, html=f"<p>{LONG_RUSSIAN}</p>"))
    await channel.close()
    [raw] = mailbox.raw
    assert "BODY=8BITMIME" in mailbox.mail_options[0]
    head = raw.split(b"\r\n\r\n", 1)[0]
    assert head.isascii()  # headers are RFC 2047 encoded words, not raw UTF-8
    subject = header(raw, b"Subject").decode("ascii")
    assert subject.lower().startswith("=?utf-8?")
    assert str(make_header(decode_header(subject))) == "Привет, Анна — скидка 10%"
    assert b"base64" not in raw.lower()
    for content_type in (b"text/plain", b"text/html"):
        part_head, body = part(raw, content_type)
        assert b"Content-Transfer-Encoding: 8bit" in part_head
        assert LONG_RUSSIAN.encode("utf-8") in body  # the words themselves, readable as they are


async def test_bodies_are_quoted_printable_for_a_server_without_8bitmime() -> None:
    mailbox = Mailbox()
    # decode_data=True: aiosmtpd then does not advertise 8BITMIME
    controller = Controller(mailbox, hostname="127.0.0.1", port=free_port(), decode_data=True)
    controller.start()
    try:
        channel = EmailChannel({"host": "127.0.0.1", "port": controller.port, "from": "shop@example.com"})
        assert (await channel.send(message(body=LONG_RUSSIAN))).status is DeliveryStatus.SENT
        await channel.close()
    finally:
        controller.stop()
    [raw] = mailbox.raw
    assert not any(o.upper().startswith("BODY=") for o in mailbox.mail_options[0])  # none offered
    assert raw.isascii() and b"base64" not in raw.lower()
    part_head, body = part(raw, b"text/plain")
    assert b"Content-Transfer-Encoding: quoted-printable" in part_head
    assert max(len(line) for line in body.split(b"\r\n")) <= 78  # the email package's policy wraps at 78
    assert quopri.decodestring(body).decode("utf-8").strip() == LONG_RUSSIAN


async def test_a_text_part_is_derived_from_html_when_there_is_none(smtp) -> None:
    mailbox, port = smtp
    channel = EmailChannel({"host": "127.0.0.1", "port": port, "from": "shop@example.com"})
    await channel.send(message(body="", html='<p>Hello</p><p><a href="https://s.example/x">Shop</a></p>'))
    await channel.close()
    assert (
        mailbox.messages[0].get_body(("plain",)).get_content().replace("\r\n", "\n").strip()
        == "Hello\n\nShop (https://s.example/x)"
    )


async def test_the_pool_keeps_connections_open_and_bounded(smtp) -> None:
    mailbox, port = smtp
    channel = EmailChannel({"host": "127.0.0.1", "port": port, "from": "shop@example.com", "pool": 2})
    results = await asyncio.gather(*(channel.send(message(id=f"m-{n}")) for n in range(12)))
    assert {r.status for r in results} == {DeliveryStatus.SENT}
    assert len(mailbox.messages) == 12
    assert channel.pool.opened == 2  # twelve messages over two kept-open connections
    assert len(mailbox.peers) == 2
    await channel.close()


async def test_per_second_paces_messages_in_the_bucket_of_the_server_and_login(smtp) -> None:
    mailbox, port = smtp
    settings = {"host": "127.0.0.1", "port": port, "from": "Shop <shop@example.com>", "per_second": 20}
    channel = EmailChannel(settings)
    unlimited = EmailChannel({**settings, "per_second": None})
    try:
        pace = channel.pace(message())
        assert pace == Pace("smtp:127.0.0.1:shop@example.com", 1, 20.0)
        assert pace.key == ("smtp:127.0.0.1:shop@example.com", 20.0, 4.0)
        assert unlimited.pace(message()) is None
        # The engine waits for the turn (`boomerang.pacing`): `send` itself takes no token.
        sent = await asyncio.gather(*(channel.send(message(id=f"m-{n}")) for n in range(3)))
    finally:
        await channel.close()
        await unlimited.close()
    assert {d.status for d in sent} == {DeliveryStatus.SENT} and len(mailbox.messages) == 3


def test_per_second_must_be_a_number_above_0(tmp_path: Path) -> None:
    path = tmp_path / "boomerang.yaml"
    path.write_text("channels:\n  email:\n    from: shop@example.com\n    per_second: 0\n")
    with pytest.raises(ProblemError) as caught:
        email.register_channels(load_config(path))
    assert str(caught.value) == f"{path}:4:17: error: 'per_second' must be a number above 0, such as 1 or 2.5"


async def test_a_dropped_connection_is_replaced(smtp) -> None:
    mailbox, port = smtp
    channel = EmailChannel({"host": "127.0.0.1", "port": port, "from": "shop@example.com", "pool": 1})
    assert (await channel.send(message(id="m-1"))).status is DeliveryStatus.SENT
    channel.pool._idle[0].close()  # the server side went away between two messages
    assert (await channel.send(message(id="m-2"))).status is DeliveryStatus.SENT
    assert channel.pool.opened == 2 and len(mailbox.messages) == 2
    await channel.close()


@pytest.mark.parametrize(
    ("answer", "status"),
    [
        ("450 4.2.1 Mailbox busy, try later", DeliveryStatus.RETRY),
        ("550 5.1.1 No such user", DeliveryStatus.ADDRESS_INVALID),
    ],
)
async def test_smtp_answers_map_to_delivery_results(smtp, answer, status) -> None:
    mailbox, port = smtp
    mailbox.refuse["anna@example.com"] = answer
    channel = EmailChannel({"host": "127.0.0.1", "port": port, "from": "shop@example.com"})
    delivery = await channel.send(message())
    await channel.close()
    assert delivery.status is status
    assert answer[:3] in delivery.detail


async def test_an_unreachable_server_means_retry_later() -> None:
    channel = EmailChannel(
        {"host": "127.0.0.1", "port": free_port(), "from": "shop@example.com", "timeout": 2}
    )
    delivery = await channel.send(message())
    assert delivery.status is DeliveryStatus.RETRY


async def test_starttls_and_login(tmp_path: Path) -> None:
    cert, key = make_certificate(tmp_path)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    logins = []

    def authenticator(server, session, envelope, mechanism, auth_data):
        ok = isinstance(auth_data, LoginPassword) and auth_data.password == b"s3cret"
        logins.append((auth_data.login, ok))
        return AuthResult(success=ok)

    mailbox = Mailbox()
    controller = Controller(
        mailbox,
        hostname="127.0.0.1",
        port=free_port(),
        tls_context=context,
        require_starttls=True,
        authenticator=authenticator,
        auth_require_tls=True,
    )
    controller.start()
    try:
        settings = {
            "host": "127.0.0.1",
            "port": controller.port,
            "from": "shop@example.com",
            "starttls": True,
            "username": "shop",
            "password": "s3cret",
            "validate_certs": False,
        }
        channel = EmailChannel(settings)
        assert (await channel.send(message())).status is DeliveryStatus.SENT
        await channel.close()
    finally:
        controller.stop()
    assert logins == [(b"shop", True)]
    assert len(mailbox.messages) == 1


WELCOME = """scenario: welcome
category: promo
trigger: {event: signup.completed}
steps:
  - send: welcome
  - wait: 1d
  - send: welcome
"""


def daemon_project(project: Path, smtp_port: int) -> None:
    config = project / "boomerang.yaml"
    text = config.read_text().replace("outbox: ./outbox\n", "").replace("port: 25,", f"port: {smtp_port},")
    config.write_text(text)
    for old in (project / "scenarios").glob("*.yaml"):
        old.unlink()
    (project / "scenarios" / "welcome.yaml").write_text(WELCOME)
    (project / "templates" / "welcome").mkdir()
    (project / "templates" / "welcome" / "email.en.html").write_text(
        "---\nsubject: Welcome\n---\n"
        '<p>See <a href="https://shop.example/new?a=1&amp;b=2">what is new</a>.</p>\n'
    )


async def test_one_click_unsubscribe_click_and_open_round_trip(project: Path, smtp, monkeypatch) -> None:
    mailbox, smtp_port = smtp
    daemon_project(project, smtp_port)
    async with running(project) as daemon:
        # Links must point at this daemon: its public URL is where it listens.
        monkeypatch.setenv("BOOMERANG_PUBLIC_URL", f"http://127.0.0.1:{daemon.port}")
        assert await daemon.reload()
        signup = {
            "id": "s-1",
            "type": "signup.completed",
            "at": "2026-03-02T10:00:00Z",
            "customer": {"id": "c-1", "email": "anna@example.com"},
        }
        async with aiohttp.ClientSession() as session:
            async with session.post(url(daemon, "/events"), data=json.dumps(signup), headers=AUTH) as answer:
                assert answer.status == 200
            await wait_for(lambda: mailbox.messages)
            [mail] = mailbox.messages
            assert mail["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
            web_link, mailto = re.fullmatch(r"<([^>]+)>, <([^>]+)>", mail["List-Unsubscribe"]).groups()
            assert web_link.startswith(f"http://127.0.0.1:{daemon.port}/u/")
            assert mailto.startswith("mailto:shop@example.com?subject=unsubscribe%20")
            html = mail.get_body(("html",)).get_content()
            assert "anna@example.com" not in web_link + html  # tokens carry no personal data

            # the click redirect goes to the URL that was in the message, and nowhere else
            click = re.search(r'href="([^"]+/c/[^"]+)"', html).group(1)
            async with session.get(click, allow_redirects=False) as answer:
                assert answer.status == 302
                assert answer.headers["Location"] == "https://shop.example/new?a=1&b=2"
            async with session.get(click[:-3] + "AAA", allow_redirects=False) as answer:
                assert answer.status == 404
            pixel = re.search(r'src="([^"]+/o/[^"]+)"', html).group(1)
            async with session.get(pixel) as answer:
                assert answer.status == 200 and answer.headers["Content-Type"] == "image/gif"

            # the page shows choices; the one-click POST unsubscribes at once
            async with session.get(web_link) as answer:
                assert answer.status == 200 and 'name="channel" value="email" checked' in await answer.text()
            form = aiohttp.FormData({"List-Unsubscribe": "One-Click"})
            async with session.post(web_link, data=form) as answer:
                assert answer.status == 200
            forged = web_link.rsplit(".", 1)[0] + ".forgedsignatureforgedsig"
            async with session.post(
                forged, data=aiohttp.FormData({"List-Unsubscribe": "One-Click"})
            ) as answer:
                assert answer.status == 404

        customer = await daemon.store.run(daemon.store.customer, "c-1")
        assert "email" in customer.opt_outs
        record = await daemon.store.run(daemon.store.message, mail["X-Boomerang-Message-Id"])
        assert record["opened_at"] and record["clicked_at"]
        types = [e["type"] for e in await daemon.store.run(daemon.store.events_of, "c-1")]
        assert {"message.sent", "message.clicked", "message.opened", "message.unsubscribed"} <= set(types)
        # the second message of the journey is now withheld: the customer said no on email
        journey = (await daemon.store.run(daemon.store.journeys_of, "c-1"))[0]
        decision = daemon.engine.plan.decide(customer, None, "promo", daemon.clock.now())
        assert journey.status == "active" and decision.channel is None
        assert decision.passed_over == {"email": "opted out"}
