"""The email channel: SMTP through aiosmtplib, over a small pool of kept-open connections.

Configured under `channels.email`: host, port, from, starttls, tls, username, password,
timeout, pool, unsubscribe_mailto, validate_certs, per_second. `pool` is this daemon's kept-open
connections: daemons sharing a database each open their own, so a server that allows N
connections to one sender takes `pool: N / daemons`. `per_second`, when the provider limits
messages a second, is kept across every daemon on the database by one token bucket per server
and login (`smtp:<host>:<username or from>`). Messages are `multipart/alternative` (text and HTML) with
`Date`, `X-Boomerang-Message-Id` (the message id) and a `Message-ID` made from the message's
idempotency key, `<{key}@{from domain}>`: every attempt to send one message (a retry, a re-send
after a crash) carries the same one, so any receiver can tell a repeat. Marketing messages
carry RFC 8058 one-click unsubscribe headers, in the plain `<https://...>, <mailto:...>` form
mailbox providers read. Bodies are 8-bit UTF-8 when the server advertises 8BITMIME and
quoted-printable when it does not (`email_bytes.transfer_encoding`), never base64: aiosmtplib
would re-encode an 8-bit body as base64 for a server without 8BITMIME, so the message is built
for the connection it goes over.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from datetime import UTC, datetime
from email.headerregistry import HeaderRegistry, UnstructuredHeader
from email.message import EmailMessage
from email.policy import Policy
from email.policy import default as default_policy
from email.utils import format_datetime, parseaddr
from types import MappingProxyType
from typing import Any
from urllib.parse import quote

import aiosmtplib

from boomerang import hookimpl
from boomerang.kinds import Channel, SendsInFlight
from boomerang.plugin_api import (
    Config,
    Customer,
    Delivery,
    DeliveryStatus,
    Message,
    Pace,
    SettingsCheck,
    html_to_text,
)
from boomerang.plugins.channels.email_bytes import EmailBytes, transfer_encoding

SETTINGS = {
    "host",
    "port",
    "from",
    "starttls",
    "tls",
    "username",
    "password",
    "timeout",
    "pool",
    "unsubscribe_mailto",
    "validate_certs",
    "per_second",
}
_CONNECTION_ERRORS = (
    aiosmtplib.SMTPServerDisconnected,
    aiosmtplib.SMTPConnectError,
    ConnectionError,
    OSError,
)


class _ListUnsubscribeHeader(UnstructuredHeader):
    """`List-Unsubscribe` written as it is: `<https://...>, <mailto:...>`, one entry per line.

    The email package folds a long unstructured header into RFC 2047 encoded words, and
    mailbox providers then find no URL in it, so no one-click unsubscribe. The header object
    folds itself whatever policy the message is flattened with (aiosmtplib uses its own).
    """

    def fold(self, *, policy: Policy) -> str:
        """The header line, folded only between its entries."""
        separator = "," + policy.linesep + " "
        return f"{self.name}: {separator.join(str(self).split(', '))}{policy.linesep}"


class _Headers(HeaderRegistry):
    """The package's header registry, making each header's class once rather than on every
    header set (a new class each time was a good part of building a message)."""

    def __init__(self) -> None:
        super().__init__()
        self._classes: dict[str, type] = {}

    def map_to_type(self, name: str, cls: type) -> None:
        """As the package's, forgetting the classes made so far."""
        super().map_to_type(name, cls)
        self._classes.clear()

    def __getitem__(self, name: str) -> type:
        key = name.lower()
        made = self._classes.get(key)
        if made is None:
            made = self._classes[key] = super().__getitem__(name)
        return made


_HEADERS = _Headers()
_HEADERS.map_to_type("list-unsubscribe", _ListUnsubscribeHeader)
POLICY = default_policy.clone(header_factory=_HEADERS)
_BYTES = EmailBytes(POLICY)


class SmtpPool:
    """Up to `size` SMTP connections, opened on demand and kept open between messages."""

    def __init__(self, settings: dict[str, Any], size: int):
        self.settings = settings
        self.size = size
        self._idle: list[aiosmtplib.SMTP] = []
        self._slots = asyncio.Semaphore(size)
        self._sends = SendsInFlight()
        self.opened = 0  # connections opened so far, for tests and metrics

    async def _connect(self) -> aiosmtplib.SMTP:
        tls = bool(self.settings.get("tls"))
        client = aiosmtplib.SMTP(
            hostname=str(self.settings.get("host", "127.0.0.1")),
            port=int(self.settings.get("port", 465 if tls else 25)),
            use_tls=tls,
            start_tls=False if tls else bool(self.settings.get("starttls")),
            username=self.settings.get("username") or None,
            password=self.settings.get("password") or None,
            timeout=float(self.settings.get("timeout", 30)),
            validate_certs=bool(self.settings.get("validate_certs", True)),
        )
        await client.connect()  # STARTTLS and login happen here when configured
        if client.is_ehlo_or_helo_needed:  # greet now: the message depends on the extensions
            try:
                await client.ehlo()
            except aiosmtplib.SMTPHeloError:  # a server that knows no EHLO knows no 8BITMIME
                await client.helo()
        self.opened += 1
        return client

    @staticmethod
    async def _send(client: aiosmtplib.SMTP, build: Callable[[bool], EmailMessage]) -> str:
        _errors, response = await client.send_message(build(client.supports_extension("8BITMIME")))
        return response

    async def send(self, build: Callable[[bool], EmailMessage]) -> str:
        """Send one message, made by `build(eight_bit)` for the connection it goes over (whether the
        server takes 8-bit bodies); a connection the server closed meanwhile is replaced once."""
        with self._sends.track():
            async with self._slots:
                if self._sends.closed:
                    raise aiosmtplib.SMTPException("the email channel was closed (a reload or shutdown)")
                client = self._idle.pop() if self._idle else await self._connect()
                try:
                    try:
                        response = await self._send(client, build)
                    except _CONNECTION_ERRORS:
                        with contextlib.suppress(Exception):
                            client.close()
                        client = await self._connect()
                        response = await self._send(client, build)
                except BaseException:
                    with contextlib.suppress(Exception):
                        client.close()
                    raise
                if self._sends.closed:  # the pool was closed while this connection was out
                    with contextlib.suppress(Exception):
                        await client.quit()
                else:
                    self._idle.append(client)
                return response

    async def close(self) -> None:
        """Let the sends under way finish, then say QUIT on every open connection."""
        await self._sends.close(float(self.settings.get("timeout", 30)))
        while self._idle:
            client = self._idle.pop()
            with contextlib.suppress(Exception):
                await client.quit()


class EmailChannel(Channel):
    """Sends each message to the configured SMTP server."""

    name = "email"
    extensions = ("html", "txt")
    front_matter = MappingProxyType({"subject": str, "preheader": str})
    required_front_matter = ("subject",)
    address_fields = ("email",)

    def __init__(self, settings: dict[str, Any]):
        self.sender = str(settings["from"])
        self.unsubscribe_mailto = settings.get("unsubscribe_mailto") or parseaddr(self.sender)[1]
        self.pool = SmtpPool(settings, int(settings.get("pool", 4)))
        per_second = settings.get("per_second")
        self.per_second = float(per_second) if per_second is not None else None
        # The provider's limit is per account: the server and the login (or the sender) name it.
        login = settings.get("username") or parseaddr(self.sender)[1]
        self.bucket = f"smtp:{settings.get('host', '127.0.0.1')}:{login}"
        self._from_line: str | None = None

    def address(self, customer: Customer) -> str | None:
        """The customer's email address."""
        return customer.email

    def headers(self, message: Message) -> list[tuple[str, str]]:
        """The message's headers before its content's, in order."""
        domain = parseaddr(self.sender)[1].rpartition("@")[2] or "boomerang.local"
        headers = [
            ("From", self.sender),
            ("To", message.to),
            ("Subject", message.subject or ""),
            ("Date", format_datetime(datetime.now(UTC))),
            ("Message-ID", f"<{message.idempotency_key}@{domain}>"),
            ("X-Boomerang-Message-Id", message.id),
        ]
        unsubscribe = message.extra.get("unsubscribe_url")
        if unsubscribe:
            token = unsubscribe.rsplit("/", 1)[-1]
            mailto = f"mailto:{self.unsubscribe_mailto}?subject={quote('unsubscribe ' + token)}"
            headers.append(("List-Unsubscribe", f"<{unsubscribe}>, <{mailto}>"))
            headers.append(("List-Unsubscribe-Post", "List-Unsubscribe=One-Click"))
        return headers

    @staticmethod
    def contents(message: Message) -> tuple[str, str | None]:
        """The text part and, when the template has one, the HTML alternative."""
        text = message.body or html_to_text(message.html or "")
        if not message.html:
            return text, None
        preheader = message.extra.get("preheader")
        if preheader:  # the line mail clients show after the subject; hidden in the body
            hidden = '<div style="display:none;max-height:0;overflow:hidden">'
            return text, f"{hidden}{preheader}</div>{message.html}"
        return text, message.html

    def build(self, message: Message, eight_bit: bool = True) -> EmailMessage:
        """The MIME message: a text part and, when the template has one, an HTML alternative;
        their bodies 8-bit only if `eight_bit` (the server advertises 8BITMIME)."""
        mail = EmailMessage(policy=POLICY)
        for name, value in self.headers(message):
            mail[name] = value
        text, html = self.contents(message)
        mail.set_content(text, cte=transfer_encoding(text, eight_bit))
        if html is not None:
            mail.add_alternative(html, subtype="html", cte=transfer_encoding(html, eight_bit))
        return mail

    def pace(self, message: Message) -> Pace | None:
        """One token of the account's bucket a message, `per_second` a second, if it is set."""
        return None if self.per_second is None else Pace(self.bucket, 1, self.per_second)

    async def send(self, message: Message) -> Delivery:
        """Deliver over SMTP: 4xx means retry later, a refused recipient an invalid address."""
        try:
            response = await self.pool.send(lambda eight_bit: self.build(message, eight_bit))
        except aiosmtplib.SMTPRecipientsRefused as exc:
            code = min(refused.code for refused in exc.recipients)
            status = DeliveryStatus.RETRY if 400 <= code < 500 else DeliveryStatus.ADDRESS_INVALID
            return Delivery(status, detail=f"recipient refused: {code}")
        except aiosmtplib.SMTPResponseException as exc:
            status = DeliveryStatus.RETRY if 400 <= exc.code < 500 else DeliveryStatus.FAILED
            return Delivery(status, detail=f"SMTP {exc.code}: {exc.message}")
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
            return Delivery(DeliveryStatus.RETRY, detail=f"{type(exc).__name__}: {exc}")
        return Delivery(DeliveryStatus.SENT, detail=response, provider_id=message.id)

    def outbox_file(self, message: Message) -> tuple[str, bytes]:
        """The message exactly as it would go over SMTP, as an `.eml` file: the bytes of
        `bytes(self.build(message))`, written without building it (see `email_bytes`)."""
        kinds = {"To": "address", "Message-ID": "message-id"}
        lines = []
        for name, value in self.headers(message):
            if name == "From":  # the same on every message: folded once
                if self._from_line is None:
                    self._from_line = _BYTES.folded(name, value)
                lines.append(self._from_line)
            elif name == "List-Unsubscribe":
                lines.append(_BYTES.list_unsubscribe(value))
            else:
                lines.append(_BYTES.header(name, value, kinds.get(name, "unstructured")))
        text, html = self.contents(message)
        if html is None:
            part = _BYTES.text_part(text, "plain", mime_version=True)
            return ".eml", ("".join(lines) + part).encode("ascii", "surrogateescape")
        parts = [_BYTES.text_part(text, "plain", mime_version=False), _BYTES.text_part(html, "html", True)]
        return ".eml", _BYTES.alternative("".join(lines), parts)

    async def close(self) -> None:
        """Close the pooled connections."""
        await self.pool.close()


def validate(config: Config) -> None:
    """Raise `ProblemError` naming every wrong `channels.email` setting."""
    check = SettingsCheck(config, "channels", "email", SETTINGS)
    settings = check.settings
    sender = settings.get("from")
    if not sender or "@" not in parseaddr(str(sender))[1]:
        check.problem("from", "'from' must be an address such as \"Shop <shop@example.com>\"")
    for key in ("port", "pool", "timeout"):
        if key in settings and not str(settings[key]).replace(".", "", 1).isdigit():
            check.problem(key, f"'{key}' must be a number")
    if str(settings.get("pool", 1)).isdigit() and int(settings.get("pool", 1)) < 1:
        check.problem("pool", "'pool' must be at least 1")
    check.positive_number("per_second")
    check.done()


@hookimpl
def register_channels(config: Config) -> list[Channel]:
    """The email channel, when `channels.email` is configured."""
    if "email" not in config.channels:
        return []
    validate(config)
    return [EmailChannel(dict(config.channels["email"]))]


@hookimpl
def register_channel_kinds() -> list[type[Channel]]:
    """Email's templates and front matter, known whether or not it is configured."""
    return [EmailChannel]
