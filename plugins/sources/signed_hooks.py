"""What the built-in shop and CRM sources share: signatures compared in constant time, their
answers, customers and events built from what a platform says of a person and an order.

Each platform source (woocommerce, bitrix, bitrix24) turns its payloads into events of the
product's own format (README, "The event format") and validates them with `parse_event`, so
what a platform sends is held to the same rules as `POST /events`.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import logging
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from boomerang.kinds import IngestResult
from boomerang.plugin_api import (
    Event,
    EventError,
    SettingsCheck,
    did_you_mean,
    normalise_email,
    normalise_phone,
    parse_event,
    to_iso,
)

if TYPE_CHECKING:
    from aiohttp import web

log = logging.getLogger(__name__)

ORDER_EVENTS = ("order.placed", "order.paid", "order.shipped", "order.delivered", "order.cancelled")


def hmac_sha256(secret: str, body: bytes) -> bytes:
    """The HMAC-SHA256 digest of a raw request body with a shared secret."""
    return hmac.new(secret.encode(), body, hashlib.sha256).digest()


def base64_signature_matches(secret: str, body: bytes, given: str | None) -> bool:
    """Whether `given` is the base64 HMAC-SHA256 of `body` (as WooCommerce and Shopify sign)."""
    expected = base64.b64encode(hmac_sha256(secret, body)).decode()
    return same_text(expected, given)


def hex_signature_matches(secret: str, body: bytes, given: str | None, prefix: str = "sha256=") -> bool:
    """Whether `given` is `prefix` and the hex HMAC-SHA256 of `body` (the `X-Boomerang-Signature`)."""
    expected = prefix + hmac_sha256(secret, body).hex()
    return same_text(expected, given.strip().lower() if given else given)


def same_text(expected: str, given: str | None) -> bool:
    """Constant-time comparison of a credential; a missing or non-ASCII one never matches."""
    if not given or not given.isascii():
        return False
    return hmac.compare_digest(expected.encode(), given.encode())


def refused(message: str) -> web.Response:
    """The 401 a request without the right credential gets; nothing of it is read further."""
    from aiohttp import web  # here, not at the top: `boomerang check` loads plugins and must start fast

    return web.json_response({"error": message}, status=401)


def bad_request(message: str) -> web.Response:
    """The 400 for a signed body that cannot be read: the platform's sender has a bug."""
    from aiohttp import web

    return web.json_response({"error": message}, status=400)


def stored(result: IngestResult | None, **extra: Any) -> web.Response:
    """The 200 once the events are committed (or when there was nothing to store)."""
    from aiohttp import web

    counts = (
        {"accepted": result.accepted, "duplicates": result.duplicates}
        if result
        else {
            "accepted": 0,
            "duplicates": 0,
        }
    )
    return web.json_response({**counts, **extra})


def customer(
    *,
    id: str | None = None,
    email: Any = None,
    phone: Any = None,
    name: str | None = None,
    attributes: dict[str, Any] | None = None,
) -> dict[str, Any] | None:
    """An event's `customer` from what a platform knows; None when it names no identity.

    A platform's form fields are not checked as ours are (a phone typed as "call me"): an email
    or phone that is not one is left out rather than refusing the whole webhook.
    """
    profile: dict[str, Any] = {}
    if id:
        profile["id"] = id
    if isinstance(email, str) and email.strip():
        with contextlib.suppress(EventError):
            profile["email"] = normalise_email(email.strip(), "email")
    if isinstance(phone, str) and phone.strip():
        with contextlib.suppress(EventError):
            profile["phone"] = normalise_phone(phone.strip(), "phone")
    if not profile:
        return None
    if name and name.strip():
        profile["name"] = name.strip()
    if attributes:
        profile["attributes"] = attributes
    return profile


def moment(value: Any) -> str | None:
    """A platform's date as ISO 8601 with a timezone; one without a zone is taken as UTC
    (WooCommerce's `*_gmt` fields); None when it is not a date."""
    if not isinstance(value, str) or not value.strip():
        return None
    try:
        parsed = datetime.fromisoformat(value.strip().replace("Z", "+00:00").replace(" ", "T", 1))
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return to_iso(parsed)


def event(event_id: str, type_: str, at: str | None, profile: dict[str, Any], data: dict[str, Any]) -> Event:
    """An event in the product's format, validated as `POST /events` validates one; `at`
    defaults to now. Raises `EventError` naming what is wrong."""
    raw = {
        "id": event_id,
        "type": type_,
        "at": at or to_iso(datetime.now(UTC)),
        "customer": profile,
        "data": data,
    }
    return parse_event(raw, where=f"{type_} event")


def number(value: Any) -> float | None:
    """A money amount as platforms send it ("79.90", 79.9); None for anything else."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value.strip())
        except ValueError:
            return None
    return None


class Unheard:
    """Logs each unknown topic a source is sent once, not once per delivery."""

    def __init__(self, source: str):
        self.source = source
        self._seen: set[str] = set()

    def note(self, topic: str) -> None:
        """Log `topic` at INFO the first time it arrives."""
        topic = topic[:80]
        if topic not in self._seen and len(self._seen) < 100:
            self._seen.add(topic)
            log.info("%s: ignoring topic %r (acknowledged, nothing stored)", self.source, topic)


def order_event_mapping(check: SettingsCheck, key: str, example: str) -> dict[str, tuple[str, ...]]:
    """A setting that maps a platform's states (order statuses, deal stages) to the order events
    each means: an event type, a list of them, or null for none. Problems go to `check`."""
    given = check.settings.get(key) or {}
    if not isinstance(given, dict):
        check.problem(key, f"'{key}' maps each state to an order event, e.g. {example}")
        return {}
    mapping: dict[str, tuple[str, ...]] = {}
    for state, types in given.items():
        listed = [] if types is None else types if isinstance(types, list) else [types]
        unknown = [t for t in listed if t not in ORDER_EVENTS]
        if unknown:
            check.problem(
                (key, state),
                f"'{unknown[0]}' is not one of {', '.join(ORDER_EVENTS)} (or null for none)"
                + did_you_mean(str(unknown[0]), ORDER_EVENTS),
            )
            continue
        mapping[str(state)] = tuple(listed)
    return mapping
