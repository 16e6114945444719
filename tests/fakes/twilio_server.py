"""A local fake of Twilio's Messages API, speaking its wire format, for the SMS and WhatsApp tests.

`POST /2010-04-01/Accounts/{AccountSid}/Messages.json` takes Twilio's form-encoded fields,
checks HTTP basic auth (account SID and auth token), records the request and answers `201`
with a Message resource as Twilio does, or with Twilio's JSON error body. Failures are set per
recipient with `fail()`, or at random with `faults` (tests/fakes/faults.py). `callback()` POSTs
a status callback signed the way Twilio signs them (`X-Twilio-Signature`, HMAC-SHA1 of the URL
and the sorted form fields).
"""

from __future__ import annotations

import asyncio
import base64
import secrets
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import format_datetime
from typing import Any
from urllib.parse import parse_qs, urlsplit

import aiohttp
from aiohttp import web
from twilio.request_validator import RequestValidator

from fakes import serve
from fakes.faults import Faults, http_fault

ACCOUNT_SID = "AC" + "0123456789abcdef" * 2
AUTH_TOKEN = "fake-twilio-auth-token-0123456789"


@dataclass
class Received:
    """One request the fake Twilio got: its account, form fields and credentials."""

    account_sid: str
    form: dict[str, str]
    auth: tuple[str, str] | None
    user_agent: str
    peer: tuple | None = None  # the client's address: the same one means a reused connection
    sid: str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    at: float = field(default_factory=time.monotonic)  # when it arrived


@dataclass
class Failure:
    """How to refuse messages to one recipient."""

    code: int
    status: int = 400
    message: str = "refused"
    headers: dict[str, str] = field(default_factory=dict)


class FakeTwilio:
    """The fake server: start it, point `api_base` at `base_url`, read `requests`."""

    def __init__(self, account_sid: str = ACCOUNT_SID, auth_token: str = AUTH_TOKEN):
        self.account_sid = account_sid
        self.auth_token = auth_token
        self.requests: list[Received] = []
        self.delay = 0.0  # seconds before each answer: a slow Twilio
        self.failures: dict[str, Failure] = {}
        self.faults: Faults | None = None  # random faults, recorded by our message id
        self.base_url = ""
        self._runner: web.AppRunner | None = None

    def fail(
        self, to: str, code: int, status: int = 400, message: str = "refused", retry_after: str | None = None
    ) -> None:
        """Refuse every message to `to` with this Twilio error code and HTTP status."""
        headers = {"Retry-After": retry_after} if retry_after is not None else {}
        self.failures[to] = Failure(code, status, message, headers)

    async def start(self) -> str:
        """Serve on a free port of 127.0.0.1; returns the base URL."""
        app = web.Application()
        app.router.add_post("/2010-04-01/Accounts/{account}/Messages.json", self.create_message)
        self._runner, self.base_url = await serve(app, access_log=None)
        return self.base_url

    async def stop(self) -> None:
        """Stop serving."""
        if self._runner is not None:
            await self._runner.cleanup()

    async def create_message(self, request: web.Request) -> web.Response:
        """Twilio's Message create: 201 with the resource, or a JSON error like Twilio's."""
        auth = _basic_auth(request.headers.get("Authorization", ""))
        form = {key: str(value) for key, value in (await request.post()).items()}
        account = request.match_info["account"]
        peer = request.transport.get_extra_info("peername") if request.transport else None
        received = Received(
            account, form, auth, request.headers.get("User-Agent", ""), peer, headers=dict(request.headers)
        )
        self.requests.append(received)
        await asyncio.sleep(self.delay)  # a sleep on purpose: a slow provider when a test asks for one
        if auth != (self.account_sid, self.auth_token) or account != self.account_sid:
            return _error(401, 20003, "Authenticate")
        to = form.get("To", "")
        if not to:
            return _error(400, 21604, "A 'To' phone number is required.")
        if not (form.get("From") or form.get("MessagingServiceSid")):
            return _error(400, 21603, "The 'From' phone number is required.")
        if not (form.get("Body") or form.get("ContentSid") or form.get("MediaUrl")):
            return _error(400, 21602, "Message body is required.")
        if self.faults is not None:
            callback = parse_qs(urlsplit(form.get("StatusCallback", "")).query)
            kind, wait = self.faults.decide(callback.get("m", [to])[0])
            if kind is not None:
                return await http_fault(request, kind, wait, self.faults.hang, _fault_answer)
        failure = self.failures.get(to)
        if failure is not None:
            return _error(failure.status, failure.code, failure.message, failure.headers)
        received.sid = "SM" + secrets.token_hex(16)
        now = format_datetime(datetime.now(UTC))
        resource = {
            "account_sid": account,
            "api_version": "2010-04-01",
            "body": form.get("Body", ""),
            "date_created": now,
            "date_sent": None,
            "date_updated": now,
            "direction": "outbound-api",
            "error_code": None,
            "error_message": None,
            "from": form.get("From"),
            "messaging_service_sid": form.get("MessagingServiceSid"),
            "num_media": "0",
            "num_segments": "1",
            "price": None,
            "price_unit": "USD",
            "sid": received.sid,
            "status": "accepted" if form.get("MessagingServiceSid") else "queued",
            "subresource_uris": {
                "media": f"/2010-04-01/Accounts/{account}/Messages/{received.sid}/Media.json"
            },
            "to": to,
            "uri": f"/2010-04-01/Accounts/{account}/Messages/{received.sid}.json",
        }
        return web.json_response(resource, status=201)

    def sign(self, url: str, params: dict[str, str]) -> str:
        """The `X-Twilio-Signature` Twilio would send with these form fields to `url`."""
        return RequestValidator(self.auth_token).compute_signature(url, params)

    async def callback(
        self,
        received: Received,
        status: str,
        error_code: str | None = None,
        signature: str | None = None,
    ) -> int:
        """POST a status callback for a message to its `StatusCallback`; returns the HTTP status.

        The request is signed unless `signature` is given (then that header is sent as is;
        an empty string sends none).
        """
        url = received.form["StatusCallback"]
        params = {
            "AccountSid": self.account_sid,
            "ApiVersion": "2010-04-01",
            "From": received.form.get("From", ""),
            "To": received.form["To"],
            "MessageSid": received.sid or "",
            "SmsSid": received.sid or "",
            "MessageStatus": status,
            "SmsStatus": status,
        }
        if error_code:
            params["ErrorCode"] = error_code
        if signature is None:
            signature = self.sign(url, params)
        headers = {"X-Twilio-Signature": signature} if signature else {}
        async with (
            aiohttp.ClientSession() as session,
            session.post(url, data=params, headers=headers) as answer,
        ):
            return answer.status


def _basic_auth(header: str) -> tuple[str, str] | None:
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        user, _, password = base64.b64decode(value).decode().partition(":")
    except ValueError:
        return None
    return user, password


def _fault_answer(status: int, retry_after: int | None) -> web.Response:
    """Twilio's answer to a fault: a permanent refusal, an outage, or too many requests."""
    if status == 429:
        return _error(429, 20429, "Too Many Requests", {"Retry-After": str(retry_after)})
    if status >= 500:
        return _error(status, 20500, "Internal Server Error")
    return _error(status, 21617, "The concatenated message body exceeds the 1600 character limit")


def _error(status: int, code: int, message: str, headers: dict[str, str] | None = None) -> web.Response:
    body: dict[str, Any] = {
        "code": code,
        "message": message,
        "more_info": f"https://www.twilio.com/docs/errors/{code}",
        "status": status,
    }
    return web.json_response(body, status=status, headers=headers)
