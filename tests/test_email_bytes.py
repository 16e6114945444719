"""The `.eml` the outbox writes is byte for byte what the email package writes for the same
message (`bytes(EmailChannel.build(message))`), for ordinary and awkward messages alike; and it
reads in a text editor: UTF-8 bodies as they are, quoted-printable only for over-long lines."""

from __future__ import annotations

import quopri
import random
import re

from hypothesis import given, settings
from hypothesis import strategies as st

from boomerang.model import Message
from boomerang.plugins.channels.email import EmailChannel

CHANNEL = EmailChannel({"from": "Velo Shop <shop@velo.example>", "host": "127.0.0.1", "port": 25})
DATE = re.compile(rb"^Date: .*$", re.MULTILINE)  # read from the clock by each build


def both(message: Message, seed: int) -> tuple[bytes | str, bytes | str]:
    """The package's bytes and the outbox's, with the same random boundary (or what each raised)."""
    results: list[bytes | str] = []
    for write in (lambda: bytes(CHANNEL.build(message)), lambda: CHANNEL.outbox_file(message)[1]):
        random.seed(seed)
        try:
            results.append(DATE.sub(b"Date: -", write()))
        except Exception as exc:  # noqa: BLE001 - what the package raises on odd input, raised by both
            results.append(type(exc).__name__)
    return results[0], results[1]


def message(**fields: object) -> Message:
    values: dict[str, object] = {
        "id": "m-1",
        "customer_id": "c-1",
        "channel": "email",
        "to": "anna@example.com",
        "template": "t",
        "subject": "Your order has shipped",
        "body": "Hello Anna,\n\nyour order is on its way.\n",
        "html": "<p>Hello Anna,</p>\n<p>your order is on its way.</p>\n",
    }
    return Message(**{**values, **fields})  # type: ignore[arg-type]


def test_the_reference_shapes_are_the_packages_bytes() -> None:
    unsubscribe = {"unsubscribe_url": "https://shop.example/u/" + "t" * 40, "preheader": "Free returns"}
    shapes = [
        message(),
        message(html=None),
        message(body="", html="<p>" + "long line " * 30 + "</p>"),
        message(subject="Привет, Анна — скидка 10%", body="Текст письма", extra=unsubscribe),
        message(to="Анна <anna@example.com>", subject="x" * 120, html="<p>é</p>" * 200),
        message(id="m-abc.def", body="=?utf-8?q?not-a-word?= " * 5, subject="=?utf-8?q?hi?="),
        message(body="--===============0000000000000000000==\n" * 3),
    ]
    for n, shape in enumerate(shapes):
        package, outbox = both(shape, n)
        assert isinstance(package, bytes) and outbox == package


RUSSIAN = "Здравствуйте, Анна! Ваша корзина ждёт вас: велосипед и шлем всё ещё в ней, скидка до пятницы."


def test_an_eml_file_shows_the_russian_words_themselves() -> None:
    shape = message(subject="Ваша корзина ждёт", body=RUSSIAN, html=f"<p>{RUSSIAN}</p>")
    suffix, eml = CHANNEL.outbox_file(shape)
    head, body = eml.split(b"\n\n", 1)
    assert suffix == ".eml" and head.isascii()
    # the subject is an RFC 2047 encoded word, which every mail client decodes
    assert re.search(rb"^Subject: =\?utf-8\?[bq]\?[^?]+\?=$", head, re.MULTILINE | re.IGNORECASE)
    assert body.count(b"Content-Transfer-Encoding: 8bit") == 2 and b"base64" not in eml
    assert body.count(RUSSIAN.encode("utf-8")) == 2  # in the text part and in the HTML one


def test_a_line_over_998_bytes_is_quoted_printable_and_still_readable_ascii() -> None:
    long_line = "Скидка " * 100  # 1,300 bytes of UTF-8 on one line: too long for an 8bit body
    _, eml = CHANNEL.outbox_file(message(body=long_line, html=None))
    assert eml.isascii() and b"Content-Transfer-Encoding: quoted-printable" in eml
    body = eml.split(b"\n\n", 1)[1]
    assert quopri.decodestring(body).decode("utf-8").strip() == long_line.strip()


def test_ascii_bodies_are_7bit_as_they_are() -> None:
    _, eml = CHANNEL.outbox_file(message(body="Hello Anna, " * 20, html=None))
    assert b"Content-Transfer-Encoding: 7bit" in eml and ("Hello Anna, " * 20).encode() in eml


texts = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=200)
urls = st.from_regex(r"https://[a-z.]{1,30}/u/[\w-]{1,90}", fullmatch=True)
ascii_texts = st.text(st.characters(min_codepoint=9, max_codepoint=126), max_size=120)


@settings(max_examples=300, deadline=None)
@given(
    subject=st.one_of(texts, ascii_texts),
    to=st.one_of(st.from_regex(r"[a-z0-9.+_-]{1,20}@[a-z0-9-]{1,20}\.[a-z]{2,6}", fullmatch=True), texts),
    message_id=st.one_of(st.from_regex(r"m-[a-z0-9.-]{1,30}", fullmatch=True), ascii_texts),
    body=st.one_of(texts, ascii_texts),
    html=st.one_of(st.none(), texts, ascii_texts),
    unsubscribe=st.one_of(st.none(), urls, texts),
    preheader=st.one_of(st.none(), texts),
    seed=st.integers(0, 2**32),
)
def test_any_message_is_the_packages_bytes(
    subject: str,
    to: str,
    message_id: str,
    body: str,
    html: str | None,
    unsubscribe: str | None,
    preheader: str | None,
    seed: int,
) -> None:
    extra = {"unsubscribe_url": unsubscribe, "preheader": preheader}
    shape = message(id=message_id, to=to, subject=subject, body=body, html=html, extra=extra)
    package, outbox = both(shape, seed)
    assert outbox == package
