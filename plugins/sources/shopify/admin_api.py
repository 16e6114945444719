"""The Shopify Admin API (REST), as far as Boomerang uses it: webhook subscriptions and
discount codes. One aiohttp session per configured shop, opened on first use.

Every refusal becomes an `AdminApiError` that says what to do: 401/403 (the token or its
scopes), 404 (the shop or API version), 422 (Shopify's own validation errors), 429 (throttled;
waited out and tried again when Shopify asks for a few seconds), 5xx, a timeout.
"""

from __future__ import annotations

import asyncio
import json
from typing import TYPE_CHECKING, Any

from boomerang.plugin_api import retry_after
from boomerang.plugins.sources.shopify.settings import ShopifySettings

if TYPE_CHECKING:
    import aiohttp

# A 429 asking to wait at most this long is waited out, at most THROTTLE_TRIES times in all.
THROTTLE_WAIT = 5.0
THROTTLE_TRIES = 3


class AdminApiError(Exception):
    """The Admin API refused a call, or did not answer; the message says what to fix."""

    def __init__(self, status: int, message: str, retry_after: float | None = None):
        super().__init__(message)
        self.status = status
        self.retry_after = retry_after


class AdminApi:
    """Calls to one shop's Admin API with the app's access token."""

    def __init__(self, settings: ShopifySettings):
        self.settings = settings
        self._session: aiohttp.ClientSession | None = None

    async def call(self, method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        """`method` on `<admin api>/<path>` with a JSON body; the JSON object answered.

        :raise AdminApiError: on any answer but 2xx, a timeout, or an answer that is not JSON.
        """
        if not self.settings.admin_token:
            raise AdminApiError(0, "no admin_token is set under sources.shopify: the Admin API needs one")
        for attempt in range(1, THROTTLE_TRIES + 1):
            try:
                return await self._once(method, path, body)
            except AdminApiError as exc:
                wait = exc.retry_after
                if exc.status != 429 or wait is None or wait > THROTTLE_WAIT or attempt == THROTTLE_TRIES:
                    raise
                await asyncio.sleep(wait)
        raise AssertionError("unreachable")  # the loop returns or raises

    async def _once(self, method: str, path: str, body: dict[str, Any] | None) -> dict[str, Any]:
        import aiohttp

        url = f"{self.settings.admin_api}/{path}"
        headers = {"X-Shopify-Access-Token": self.settings.admin_token or "", "Accept": "application/json"}
        try:
            async with self._client().request(method, url, json=body, headers=headers) as response:
                text = await response.text(errors="replace")
                status, wait = response.status, _retry_after(response.headers.get("Retry-After"))
        except TimeoutError:
            raise AdminApiError(
                0, f"the Admin API did not answer within {self.settings.timeout:g} s ({method} {path})"
            ) from None
        except aiohttp.ClientError as exc:
            where = self.settings.admin_api_base
            raise AdminApiError(0, f"cannot reach the Admin API at {where}: {exc}") from None
        if 200 <= status < 300:
            try:
                answer = json.loads(text) if text.strip() else {}
            except ValueError:
                answer = None
            if not isinstance(answer, dict):
                raise AdminApiError(status, f"the Admin API answered {method} {path} with something not JSON")
            return answer
        raise AdminApiError(status, _refusal(status, method, path, text), wait)

    def _client(self) -> aiohttp.ClientSession:
        import aiohttp

        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.settings.timeout))
        return self._session

    async def close(self) -> None:
        """Close the session, if one was opened."""
        if self._session is not None:
            await self._session.close()
            self._session = None


def _retry_after(value: str | None) -> float | None:
    """Shopify's `Retry-After` is seconds with a fraction ("2.0"); RFC 9110's forms are read too."""
    try:
        seconds = float(value) if value else None
    except ValueError:
        return retry_after(value)
    return seconds if seconds is not None and 0 <= seconds < 86400 else retry_after(value)


def _refusal(status: int, method: str, path: str, text: str) -> str:
    """What a refusal means, with Shopify's own `errors` when it gave them."""
    try:
        errors = json.loads(text).get("errors")
    except (ValueError, AttributeError):
        errors = None
    if isinstance(errors, dict):
        said = "; ".join(
            f"{field} {', '.join(map(str, reasons)) if isinstance(reasons, list) else reasons}"
            for field, reasons in errors.items()
        )
    else:
        said = str(errors) if errors else text.strip()[:200]
    what = {
        401: "the admin_token was refused: check sources.shopify.admin_token",
        403: "the admin_token lacks an access scope this needs (read_orders, write_discounts...)",
        404: "not found: check sources.shopify.shop and api_version",
        422: "Shopify refused the request",
        429: "throttled by Shopify: too many calls, try again later",
    }.get(status, "the Admin API failed" if status >= 500 else "the Admin API refused the request")
    return f"{what} ({status} on {method} {path}){': ' + said if said else ''}"
