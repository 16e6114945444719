"""What the push channel (push.py) sends with: aiohttp, pywebpush, and a resolver that leads
to public addresses only.

A module of its own because these libraries (pywebpush brings requests and urllib3 along)
take a large share of a command's start: it loads only when a push channel sends or is
prepared to (`PushChannel.prepare`), never for `boomerang check`.
"""

from __future__ import annotations

import functools
import ipaddress
import socket
import ssl
from pathlib import Path
from typing import Any

import aiohttp
import pywebpush
from aiohttp.resolver import ThreadedResolver

webpush_async = pywebpush.webpush_async
WebPushException = pywebpush.WebPushException
# What a push request raises when it gets no answer: retried.
CONNECTION_ERRORS = (aiohttp.ClientError, TimeoutError, OSError)


class PublicResolver(ThreadedResolver):
    """Resolves host names to public addresses only: no endpoint's name may lead inside."""

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[Any]:
        """The addresses of `host` that are global; OSError if it has none."""
        answers = await super().resolve(host, port, family)
        public = [answer for answer in answers if ipaddress.ip_address(answer["host"]).is_global]
        if not public:
            raise OSError(f"{host} resolves to no public address")
        return public


@functools.cache  # one for every send of a channel, as it was made once
def client_timeout(seconds: float) -> aiohttp.ClientTimeout:
    """The timeout of one push request."""
    return aiohttp.ClientTimeout(total=seconds)


def make_session(
    ca_file: Path | None, allow_private_endpoints: bool, seconds: float
) -> aiohttp.ClientSession:
    """The HTTP session every send of a channel shares: the system's CA certificates (and
    `ca_file`'s), and unless private endpoints are allowed, public addresses only."""
    context: ssl.SSLContext | bool = True
    if ca_file is not None:
        context = ssl.create_default_context()
        context.load_verify_locations(cafile=str(ca_file))
    resolver = None if allow_private_endpoints else PublicResolver()
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(ssl=context, resolver=resolver), timeout=client_timeout(seconds)
    )
