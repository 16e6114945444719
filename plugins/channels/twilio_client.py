"""The twilio library's client as the Twilio channels use it (twilio_messages.py): its aiohttp
HTTP client with a default timeout, the message's idempotency key and the last answer kept.

A module of its own because the library (and the requests library it imports) takes a large
share of a command's start: it loads only when an SMS or WhatsApp channel is configured.
"""

from __future__ import annotations

import importlib
import logging
from contextvars import ContextVar
from typing import Any

import aiohttp
from twilio.http.async_http_client import AsyncTwilioHttpClient
from twilio.http.response import Response
from twilio.rest import Client

from boomerang import __version__
from boomerang.plugins.channels.twilio_messages import DEFAULT_API_BASE

# What `Client.messages` imports on first use: a few hundred milliseconds, taken now rather
# than on the event loop in the middle of the first send.
importlib.import_module("twilio.rest.api.v2010.account.message")

# The twilio library raises on an error answer without its headers; the HTTP client keeps the
# last answer of the current task here so that `Retry-After` can be read.
last_response: ContextVar[Response | None] = ContextVar("boomerang_twilio_response", default=None)
# The library's create call takes no headers: the current task's message idempotency key
# reaches the HTTP client this way.
idempotency_key: ContextVar[str | None] = ContextVar("boomerang_twilio_idempotency_key", default=None)
IDEMPOTENCY_HEADER = "I-Twilio-Idempotency-Token"
# What a create call raises when it gets no answer (or one it cannot read): retried.
CONNECTION_ERRORS = (aiohttp.ClientError, OSError, TimeoutError, ValueError)


class QuietLogger(logging.LoggerAdapter):
    """Twilio's client logs every request at INFO; Boomerang's log shows them only at DEBUG."""

    def info(self, msg: object, *args: Any, **kwargs: Any) -> None:
        """Log at DEBUG instead."""
        self.debug(msg, *args, **kwargs)


class HttpClient(AsyncTwilioHttpClient):
    """Twilio's aiohttp client with a default timeout, the message's idempotency key as
    `I-Twilio-Idempotency-Token`, and the last answer kept for its headers."""

    async def request(
        self,
        method: str,
        url: str,
        params: dict[str, object] | None = None,
        data: dict[str, object] | None = None,
        headers: dict[str, str] | None = None,
        auth: tuple[str, str] | None = None,
        timeout: float | None = None,
        allow_redirects: bool = False,
    ) -> Response:
        """Make the request (with the client's timeout unless one is given) and keep the answer."""
        if auth is not None:  # aiohttp deprecates `auth=`: send the same basic credentials as a header
            headers = {**(headers or {}), "Authorization": aiohttp.encode_basic_auth(*auth)}
        key = idempotency_key.get()
        if key is not None:
            headers = {**(headers or {}), IDEMPOTENCY_HEADER: key}
        response = await super().request(
            method,
            url,
            params=params,
            data=data,
            headers=headers,
            auth=None,
            timeout=timeout or self.timeout,
            allow_redirects=allow_redirects,
        )
        last_response.set(response)
        return response


def make_client(
    account_sid: str, auth_token: str, api_base: str, timeout: float, log: logging.Logger
) -> tuple[HttpClient, Client]:
    """A Twilio client whose Messages requests go to `api_base`, and its HTTP client."""
    http = HttpClient(timeout=timeout, logger=QuietLogger(log, {}))
    client = Client(
        account_sid, auth_token, http_client=http, user_agent_extensions=[f"boomerang/{__version__}"]
    )
    # Every Messages request is built from the Api domain's base URL: aim it at api_base.
    client.api.base_url = api_base
    if api_base != DEFAULT_API_BASE:
        client.edge = client.region = None  # TWILIO_EDGE/REGION would rewrite the host
    return http, client
