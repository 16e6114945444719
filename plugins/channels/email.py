"""The email channel: SMTP through aiosmtplib.

Configured under `channels.email`: host, port, from, starttls, tls, username, password,
timeout. Messages are `multipart/alternative` (text and HTML) with a `Message-ID` and an
`X-Boomerang-Message-Id` header carrying the message id, so a retried send is recognisable.
"""

from __future__ import annotations

from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid, parseaddr
from typing import Any

import aiosmtplib

from boomerang import hookimpl
from boomerang.config import Config
from boomerang.kinds import Channel
from boomerang.model import Customer, Delivery, DeliveryStatus, Message
from boomerang.problems import ProblemError, did_you_mean
from boomerang.templates import html_to_text

SETTINGS = {"host", "port", "from", "starttls", "tls", "username", "password", "timeout", "pool"}


class EmailChannel(Channel):
    """Sends each message to the configured SMTP server."""

    name = "email"

    def __init__(self, settings: dict[str, Any]):
        self.host = str(settings.get("host", "127.0.0.1"))
        self.port = int(settings.get("port", 25))
        self.sender = str(settings["from"])
        self.starttls = bool(settings.get("starttls", False))
        self.tls = bool(settings.get("tls", False))
        self.username = settings.get("username") or None
        self.password = settings.get("password") or None
        self.timeout = float(settings.get("timeout", 30))

    def address(self, customer: Customer) -> str | None:
        """The customer's email address."""
        return customer.email

    def build(self, message: Message) -> EmailMessage:
        """The MIME message: a text part, and an HTML alternative when the template has one."""
        mail = EmailMessage()
        mail["From"] = self.sender
        mail["To"] = message.to
        mail["Subject"] = message.subject or ""
        mail["Date"] = format_datetime(message.extra.get("created_at") or datetime.now(UTC))
        domain = parseaddr(self.sender)[1].rpartition("@")[2] or "boomerang.local"
        mail["Message-ID"] = make_msgid(idstring=message.id, domain=domain)
        mail["X-Boomerang-Message-Id"] = message.id
        mail.set_content(message.body or html_to_text(message.html or ""))
        if message.html:
            mail.add_alternative(message.html, subtype="html")
        return mail

    async def send(self, message: Message) -> Delivery:
        """Deliver over SMTP; 4xx answers mean retry later, a refused recipient an invalid address."""
        try:
            _errors, response = await aiosmtplib.send(
                self.build(message),
                hostname=self.host,
                port=self.port,
                username=self.username,
                password=self.password,
                start_tls=False if self.tls else self.starttls,
                use_tls=self.tls,
                timeout=self.timeout,
            )
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
        """The message exactly as it would go over SMTP, as an `.eml` file."""
        return ".eml", bytes(self.build(message))


def validate(config: Config, settings: dict[str, Any]) -> None:
    """Raise `ProblemError` naming every wrong `channels.email` setting."""
    problems = []
    for key in settings:
        if key not in SETTINGS:
            problems.append(
                config.problem(
                    ("channels", "email", key), f"unknown email setting '{key}'{did_you_mean(key, SETTINGS)}"
                )
            )
    sender = settings.get("from")
    if not sender or "@" not in parseaddr(str(sender))[1]:
        problems.append(
            config.problem(
                ("channels", "email", "from") if sender else ("channels", "email"),
                "'from' must be an address such as \"Shop <shop@example.com>\"",
            )
        )
    for key in ("port", "pool", "timeout"):
        if key in settings and not str(settings[key]).replace(".", "", 1).isdigit():
            problems.append(config.problem(("channels", "email", key), f"'{key}' must be a number"))
    if problems:
        raise ProblemError(problems)


@hookimpl
def register_channels(config: Config) -> list[Channel]:
    """The email channel, when `channels.email` is configured."""
    if "email" not in config.channels:
        return []
    settings = dict(config.channels["email"])
    validate(config, settings)
    return [EmailChannel(settings)]
