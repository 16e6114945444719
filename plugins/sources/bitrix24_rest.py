"""Calls to a Bitrix24 portal through its inbound REST webhook URL, within its rate limit.

`rest_url` is the URL Bitrix24 gives an inbound webhook (Developer resources → Other → Inbound
webhook): `https://x.bitrix24.ru/rest/<user>/<code>/`; a method is called as
`<rest_url><method>.json` with a JSON body, and answers `{"result": ...}` or
`{"error": CODE, "error_description": ...}`.

Bitrix24 limits a portal's requests with a leaky bucket (about 2 a second once a burst of 50
is spent) and answers 503 `QUERY_LIMIT_EXCEEDED` beyond it. So every client of one portal (the
source's fetches and the actions, in every daemon of the database) shares one `Bucket` that
spaces requests at `per_second`,
and a `QUERY_LIMIT_EXCEEDED` is waited out (0.5 s, then doubling) and tried again, up to
`ATTEMPTS` times. `batch` runs up to 50 calls in one request, each able to use an earlier
one's result (`$result[deal][CONTACT_ID]`).
"""

from __future__ import annotations

import asyncio
import hashlib
from typing import TYPE_CHECKING, Any

from boomerang.plugin_api import LocalRateLimits, RateLimits

if TYPE_CHECKING:
    import aiohttp

ATTEMPTS = 5  # tries of a request Bitrix24 refuses for the rate limit
BACKOFF = 0.5  # seconds before the first retry after QUERY_LIMIT_EXCEEDED; doubled each time
TIMEOUT = 20  # seconds for one request
MAX_BATCH = 50  # Bitrix24's limit of commands in one `batch`
# Errors that mean "not now": the portal is busy or down, trying later may work.
TRANSIENT = frozenset(
    ("QUERY_LIMIT_EXCEEDED", "INTERNAL_SERVER_ERROR", "OPERATION_TIME_LIMIT", "PORTAL_DELETED")
)


class Bitrix24Error(Exception):
    """Bitrix24 refused a call or could not be reached; `retry` says whether trying later may work."""

    def __init__(self, message: str, code: str = "", retry: bool = True):
        super().__init__(message)
        self.code = code
        self.retry = retry


class Bucket:
    """Spaces the requests to one portal at `per_second`, across all its clients: a bucket of
    `rate_limits` (shared by every daemon of the database; by default this process's own)."""

    def __init__(self, per_second: float, rate_limits: RateLimits | None = None, name: str = "bitrix24"):
        self.per_second = per_second
        self.rate_limits = LocalRateLimits() if rate_limits is None else rate_limits
        self.name = name

    async def turn(self) -> None:
        """Wait until this request may go."""
        await self.rate_limits.acquire(self.name, 1, self.per_second)


_buckets: dict[str, Bucket] = {}


def bucket_for(rest_url: str, per_second: float, rate_limits: RateLimits) -> Bucket:
    """The one bucket of the portal at `rest_url` in `rate_limits` (the latest rate configured
    wins). Named after a digest of the URL: the URL holds the webhook's secret code, and the
    name is stored in the database on PostgreSQL."""
    bucket = _buckets.get(rest_url)
    if bucket is None or bucket.per_second != per_second or bucket.rate_limits is not rate_limits:
        name = f"bitrix24:{hashlib.sha256(rest_url.encode()).hexdigest()[:16]}"
        bucket = _buckets[rest_url] = Bucket(per_second, rate_limits, name)
    return bucket


class Bitrix24Rest:
    """A client of one portal: `call` and `batch`; use it in `async with` or `close()` it."""

    def __init__(self, rest_url: str, bucket: Bucket, backoff: float = BACKOFF):
        self.rest_url = rest_url if rest_url.endswith("/") else rest_url + "/"
        self.bucket = bucket
        self.backoff = backoff
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> Bitrix24Rest:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the connection pool."""
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def call(self, method: str, params: dict[str, Any]) -> Any:
        """The `result` of one method; raises `Bitrix24Error` with Bitrix24's code and message."""
        import aiohttp  # here, not at the top: `boomerang check` loads plugins and must start fast

        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=TIMEOUT))
        # The method name is ours, never the caller's input: the webhook URL carries the secret.
        url = f"{self.rest_url}{method}.json"
        for attempt in range(ATTEMPTS):
            await self.bucket.turn()
            try:
                async with self._session.post(url, json=params) as response:
                    status = response.status
                    try:
                        answer = await response.json(content_type=None)
                    except ValueError:
                        answer = None
            except (aiohttp.ClientError, TimeoutError) as exc:
                raise Bitrix24Error(
                    f"{method}: Bitrix24 cannot be reached ({exc or type(exc).__name__})"
                ) from None
            code = str(answer.get("error") or "") if isinstance(answer, dict) else ""
            if code == "QUERY_LIMIT_EXCEEDED" and attempt + 1 < ATTEMPTS:
                await asyncio.sleep(self.backoff * 2**attempt)
                continue
            if status < 400 and isinstance(answer, dict) and "result" in answer and not code:
                return answer["result"]
            description = answer.get("error_description") if isinstance(answer, dict) else None
            retry = status >= 500 or status == 429 or code in TRANSIENT
            raise Bitrix24Error(
                f"{method}: Bitrix24 answered {status} {code or '(no error code)'}"
                + (f": {description}" if description else ""),
                code,
                retry,
            )
        raise AssertionError("unreachable: the last attempt returns or raises")

    async def batch(self, commands: dict[str, str]) -> tuple[dict[str, Any], dict[str, dict]]:
        """Run up to 50 commands (`{key: "crm.deal.get?id=5"}`) in one request: the results and
        the errors, by key. A command may use an earlier one's result: `$result[key][FIELD]`."""
        if len(commands) > MAX_BATCH:
            raise ValueError(f"a batch takes at most {MAX_BATCH} commands")
        answer = await self.call("batch", {"halt": 0, "cmd": commands})
        if not isinstance(answer, dict):
            raise Bitrix24Error("batch: Bitrix24 answered a result that is not an object", retry=False)
        # PHP's json_encode writes an empty map as []: both mean none.
        results = answer.get("result") if isinstance(answer.get("result"), dict) else {}
        errors = answer.get("result_error") if isinstance(answer.get("result_error"), dict) else {}
        return results, {key: value for key, value in errors.items() if isinstance(value, dict)}
