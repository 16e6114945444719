"""Twilio's Messages API, shared by the SMS and WhatsApp channels: the channel base, its HTTP
client, status callbacks and the settings check.

Both are configured the same way (`channels.sms`, `channels.whatsapp`): `account_sid`,
`auth_token`, `from` or `messaging_service_sid` (or both), `api_base` (default
https://api.twilio.com: point it at a local server for tests and staging) and `timeout`
(seconds, default 30). One HTTP session is kept for the channel's life. Each message asks
Twilio for status callbacks at `{public_url}/callbacks/<channel>?m=<message id>`; `POST
/callbacks/<channel>` checks `X-Twilio-Signature` against the auth token and turns
`delivered`, `read`, `failed` and `undelivered` into `message.delivered`, `message.opened` and
`message.failed` feedback events. Every create request carries the message's idempotency key
as `I-Twilio-Idempotency-Token`, the same on a retry and on a re-send after a crash.

`mps` is the sender's throughput in message segments a second (an SMS of three segments
counts three, a WhatsApp message one), kept across every daemon on the database by a token
bucket per sender (`twilio:<from or messaging service>`). By default it is what Twilio gives
the sender: 100 for a short code, 3 for a US or Canadian toll-free number, 80 for a WhatsApp
sender, 1 for any other number (a long code), sender ID or messaging service; give a messaging
service the sum of its senders'. Twilio would queue what goes faster; paced here (`pace`), a
message waits for its turn in the daemon instead, unsent, and messages keep their order.
"""

from __future__ import annotations

import importlib
import json
import logging
import re
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from twilio.base.exceptions import TwilioException
from twilio.request_validator import RequestValidator

from boomerang.kinds import Channel, Ingest, Route, SendsInFlight
from boomerang.plugin_api import (
    Config,
    Customer,
    Delivery,
    DeliveryStatus,
    Message,
    Pace,
    SettingsCheck,
    e164,
    retry_after,
)

if TYPE_CHECKING:
    from types import ModuleType

    from aiohttp import web
    from twilio.rest import Client

    from boomerang.plugins.channels.twilio_client import HttpClient

log = logging.getLogger(__name__)

DEFAULT_API_BASE = "https://api.twilio.com"
SETTINGS = {"account_sid", "auth_token", "from", "messaging_service_sid", "api_base", "timeout", "mps"}
# The throughput Twilio gives a sender by default, in message segments a second
# (https://www.twilio.com/docs/api/errors/30001, Twilio's toll-free and WhatsApp FAQs).
SHORT_CODE_MPS = 100.0
TOLL_FREE_MPS = 3.0
WHATSAPP_MPS = 80.0
LONG_CODE_MPS = 1.0
TOLL_FREE_PREFIXES = tuple(f"+1{code}" for code in (800, 833, 844, 855, 866, 877, 888))

# Twilio error codes (https://www.twilio.com/docs/api/errors), on create and in callbacks.
OPTED_OUT_CODES = {21610}  # the recipient replied STOP
ADDRESS_INVALID_CODES = {
    21211,  # invalid 'To' number
    21614,  # 'To' is not a mobile number
    21635,  # 'To' is a landline
    30005,  # unknown destination handset
    30006,  # landline or unreachable carrier
    63003,  # WhatsApp: the channel could not find the 'To' address
    63024,  # WhatsApp: invalid message recipient
}
TOO_MANY_REQUESTS = 20429

_ALPHANUMERIC_SENDER = re.compile(r"^(?=.*[A-Za-z])[A-Za-z0-9 ]{1,11}$")
_SHORT_CODE = re.compile(r"^\d{3,8}$")
_ACCOUNT_SID = re.compile(r"^AC[0-9a-fA-F]{32}$")
_SERVICE_SID = re.compile(r"^MG[0-9a-fA-F]{32}$")
_URL = re.compile(r"^https?://[^/\s]+")


def refusal_status(http_status: int, code: int | None) -> DeliveryStatus:
    """What Twilio's refusal of a message means for us, by its error code and HTTP status."""
    if code in OPTED_OUT_CODES:
        return DeliveryStatus.OPTED_OUT
    if code in ADDRESS_INVALID_CODES:
        return DeliveryStatus.ADDRESS_INVALID
    if code == TOO_MANY_REQUESTS or http_status == 429 or http_status >= 500:
        return DeliveryStatus.RETRY
    return DeliveryStatus.FAILED


def failure_reason(error_code: str | None) -> str:
    """The `reason` of a `message.failed` event for an `ErrorCode` in a status callback."""
    code = int(error_code) if error_code and error_code.isdigit() else None
    if code in OPTED_OUT_CODES:
        return "opted_out"
    if code in ADDRESS_INVALID_CODES:
        return "address_invalid"
    return "failed"


class TwilioChannel(Channel):
    """Sends text messages through Twilio's Messages API; subclasses name the channel."""

    extensions = ("html", "txt")
    address_fields = ("phone",)
    prefix = ""  # the Twilio address prefix of the channel: "whatsapp:" for WhatsApp

    def __init__(self, settings: dict[str, Any], public_url: str):
        self.account_sid = str(settings["account_sid"])
        self.auth_token = str(settings["auth_token"])
        self.sender = str(settings["from"]) if settings.get("from") else None
        service = settings.get("messaging_service_sid")
        self.messaging_service_sid = str(service) if service else None
        self.api_base = str(settings.get("api_base") or DEFAULT_API_BASE).rstrip("/")
        self.timeout = float(settings.get("timeout", 30))
        self.mps = float(settings.get("mps") or default_mps(self.sender, self.prefix == "whatsapp:"))
        # The limit is the sender's: Twilio sends from `from` when both are given.
        self.bucket = f"twilio:{self.sender or self.messaging_service_sid}"
        self.public_url = public_url.rstrip("/")
        self.callback_path = f"/callbacks/{self.name}"
        self.validator = RequestValidator(self.auth_token)
        self._http: HttpClient | None = None
        self._client: Client | None = None
        self._sends = SendsInFlight()
        self._twilio: ModuleType | None = None

    def prepare(self) -> None:
        """Load the twilio client (and aiohttp and the requests library it brings) while the
        project loads, not on the event loop in the middle of the first send
        (tests/reliability/test_provider_faults.py saw that stall); `boomerang check`, which
        only constructs the channel, never loads it."""
        self.library()

    def library(self) -> ModuleType:
        """`boomerang.plugins.channels.twilio_client`, imported once."""
        if self._twilio is None:
            self._twilio = importlib.import_module("boomerang.plugins.channels.twilio_client")
        return self._twilio

    def address(self, customer: Customer) -> str | None:
        """The customer's phone number in E.164."""
        return e164(customer.phone)

    def client(self) -> Client:
        """The Twilio client, made on first use (its HTTP session needs the running loop)."""
        if self._client is None:
            self._http, self._client = self.library().make_client(
                self.account_sid, self.auth_token, self.api_base, self.timeout, log
            )
        return self._client

    def status_callback(self, message: Message) -> str:
        """Where Twilio reports this message's delivery status."""
        return f"{self.public_url}{self.callback_path}?m={quote(message.id, safe='')}"

    def parameters(self, message: Message) -> dict[str, Any]:
        """The arguments of `messages.create_async` for a message, besides the status callback."""
        parameters: dict[str, Any] = {"to": self.to(message), "body": message.body}
        if self.sender:
            parameters["from_"] = self.sender
        if self.messaging_service_sid:
            parameters["messaging_service_sid"] = self.messaging_service_sid
        return parameters

    def pace(self, message: Message) -> Pace:
        """The sender's bucket: as many tokens as the message has segments, `mps` a second."""
        return Pace(self.bucket, self.segment_count(message), self.mps)

    def segment_count(self, message: Message) -> int:
        """How many message segments Twilio counts for a message against the sender's MPS."""
        return 1

    def to(self, message: Message) -> str:
        """The message's recipient as Twilio wants it."""
        to = message.to
        return to if not self.prefix or to.startswith(self.prefix) else f"{self.prefix}{to}"

    async def send(self, message: Message) -> Delivery:
        """Create the message at Twilio; its error code says retry, failed, invalid or opted out."""
        if not message.to:
            return Delivery(DeliveryStatus.ADDRESS_INVALID, detail="no phone number")
        try:
            parameters = self.parameters(message)
        except ValueError as exc:
            return Delivery(DeliveryStatus.FAILED, detail=str(exc))
        if "content_sid" not in parameters and not (parameters.get("body") or "").strip():
            return Delivery(DeliveryStatus.FAILED, detail="the message body is empty")
        if self._sends.closed:  # a reload replaced this channel: the new one sends it later
            closed = f"the {self.name} channel was closed (a reload or shutdown)"
            return Delivery(DeliveryStatus.RETRY, detail=closed)
        with self._sends.track():
            return await self._create(message, parameters)

    async def _create(self, message: Message, parameters: dict[str, Any]) -> Delivery:
        """Create the message at Twilio and map its answer onto a delivery result."""
        twilio = self.library()
        twilio.last_response.set(None)
        twilio.idempotency_key.set(message.idempotency_key)
        try:
            created = await self.client().messages.create_async(
                status_callback=self.status_callback(message), **parameters
            )
        except TwilioException as exc:
            http_status = int(getattr(exc, "status", 0) or 0)
            code = getattr(exc, "code", None)
            text = getattr(exc, "msg", None) or getattr(exc, "detail", None) or type(exc).__name__
            status = refusal_status(http_status, code if isinstance(code, int) else None)
            response = twilio.last_response.get()
            wait = retry_after(response.headers.get("Retry-After")) if response and response.headers else None
            return Delivery(
                status,
                detail=f"Twilio {code or http_status}: {text}",
                retry_after=wait if status is DeliveryStatus.RETRY else None,
            )
        except twilio.CONNECTION_ERRORS as exc:
            return Delivery(DeliveryStatus.RETRY, detail=f"{type(exc).__name__}: {exc}")
        return Delivery(DeliveryStatus.SENT, detail=f"Twilio: {created.status}", provider_id=created.sid)

    def routes(self) -> list[Route]:
        """`POST /callbacks/<channel>`: Twilio's status callbacks, signed with the auth token."""
        return [Route("POST", self.callback_path, self.receipt)]

    async def receipt(self, request: web.Request, ingest: Ingest) -> web.Response:
        """Record a signed status callback as a feedback event; anything unsigned gets 403."""
        from aiohttp import web  # here, not at the top: `boomerang check` loads plugins and must start fast

        signature = request.headers.get("X-Twilio-Signature", "")
        url = f"{self.public_url}{request.raw_path}"
        # The signature covers the form, so the form is read first, but only when there is one.
        form = await request.post() if signature else {}
        if not signature or not self.validator.validate(url, form, signature):
            log.warning("%s: refused a status callback with a bad signature for %s", self.name, url)
            raise web.HTTPForbidden(text="bad or missing X-Twilio-Signature\n")
        message_id = request.query.get("m", "")
        status = str(form.get("MessageStatus") or form.get("SmsStatus") or "")
        if status == "delivered":
            event = ("message.delivered", {})
        elif status == "read":  # WhatsApp: the customer opened it
            event = ("message.opened", {})
        elif status in ("failed", "undelivered"):
            code = str(form.get("ErrorCode") or "")
            event = ("message.failed", {"reason": failure_reason(code), "detail": code or status})
        else:  # queued, accepted, sending, sent...: nothing to record
            return web.Response(status=204)
        # A failure because the customer replied STOP opts them out of this channel: the
        # feedback rules (core/feedback.py) say so, for every channel.
        if not message_id or not await ingest.feedback(message_id, event[0], event[1], key=status):
            log.info("%s: status callback about unknown message %r", self.name, message_id)
        return web.Response(status=204)

    def outbox_data(self, message: Message) -> dict[str, Any]:
        """What the outbox writes for a message: the message and the Twilio parameters it
        would be sent with."""
        data = message.as_dict()
        try:
            parameters = self.parameters(message)
        except ValueError as exc:
            parameters = {"error": str(exc)}
        data["twilio"] = {key.rstrip("_"): value for key, value in parameters.items()}
        return data

    def outbox_file(self, message: Message) -> tuple[str, bytes]:
        """`outbox_data()` as JSON."""
        return ".json", json.dumps(self.outbox_data(message), ensure_ascii=False, indent=2).encode()

    async def close(self) -> None:
        """Let the sends under way finish, then close the HTTP session."""
        await self._sends.close(self.timeout)
        if self._http is not None:
            await self._http.close()
        self._http = self._client = None


def validate(config: Config, name: str) -> dict[str, Any]:
    """The `channels.<name>` settings of a Twilio channel; raises `ProblemError` naming every
    wrong one."""
    check = SettingsCheck(config, "channels", name, SETTINGS)
    settings = check.settings
    whatsapp = name == "whatsapp"
    sid = settings.get("account_sid")
    if not sid:
        check.problem("account_sid", "'account_sid' is required")
    elif not _ACCOUNT_SID.match(str(sid)):
        check.problem("account_sid", "'account_sid' must be a Twilio Account SID: AC and 32 hex digits")
    if not settings.get("auth_token"):
        check.problem("auth_token", "'auth_token' is required")
    sender, service = settings.get("from"), settings.get("messaging_service_sid")
    if not sender and not service:
        check.problem(None, "give 'from' (the sending number) or 'messaging_service_sid'")
    if service and not _SERVICE_SID.match(str(service)):
        check.problem("messaging_service_sid", "'messaging_service_sid' must be MG and 32 hex digits")
    if isinstance(sender, int | float) and not isinstance(sender, bool):
        example = '"whatsapp:+15550001111"' if whatsapp else '"+15550001111"'
        check.problem("from", f"'from' is read as a number; quote it: from: {example}")
    elif sender and whatsapp:
        if not (str(sender).startswith("whatsapp:") and _is_e164(str(sender)[9:])):
            check.problem("from", "'from' must be a WhatsApp sender such as \"whatsapp:+15550001111\"")
    elif sender and not (
        _is_e164(str(sender)) or _ALPHANUMERIC_SENDER.match(str(sender)) or _SHORT_CODE.match(str(sender))
    ):
        check.problem(
            "from",
            "'from' must be a number in E.164 such as \"+15550001111\", a short code, "
            "or a sender ID of up to 11 letters and digits",
        )
    if "api_base" in settings and not _URL.match(str(settings["api_base"] or "")):
        check.problem("api_base", "'api_base' must be an http(s) URL such as https://api.twilio.com")
    if "timeout" in settings:
        try:
            if isinstance(settings["timeout"], bool) or float(settings["timeout"]) <= 0:
                raise ValueError
        except (TypeError, ValueError):
            check.problem("timeout", "'timeout' must be a number of seconds above 0")
    check.positive_number("mps")
    check.done()
    return dict(settings)


def default_mps(sender: str | None, whatsapp: bool) -> float:
    """The message segments a second Twilio lets a sender send by default (see `mps`)."""
    if whatsapp:
        return WHATSAPP_MPS
    if sender and _SHORT_CODE.match(sender):
        return SHORT_CODE_MPS
    if sender and sender.startswith(TOLL_FREE_PREFIXES):
        return TOLL_FREE_MPS
    return LONG_CODE_MPS


def _is_e164(number: str) -> bool:
    """Whether a number is written in E.164 as it is, with nothing to drop."""
    return e164(number) == number
