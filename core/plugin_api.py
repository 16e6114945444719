"""What a plugin may import besides `boomerang.kinds` and `boomerang.hookimpl`.

Every name here is defined once in the core and kept stable for plugins; the rest of the
`boomerang` package may change without notice. README's "Writing a plugin" lists them:

- the data a plugin is handed and hands back: `Config`, `Customer`, `Event`, `Message`,
  `Delivery`, `DeliveryStatus`, `MAX_PUSH_SUBSCRIPTIONS`;
- errors with positions: `Problem`, `ProblemError`, `did_you_mean`, and `SettingsCheck` for a
  plugin's own section of `boomerang.yaml`;
- events: `parse_event`, `parse_events`, `parse_body`, `EventError`, `IngestWindow`, and
  `read_json`, `BodyError` for a request's JSON body;
- addresses: `normalise_email`, `normalise_phone`, `e164`;
- tokens: `sign`, `verify`, `seal`, `unseal`, `bearer`, `SEALED_OVERHEAD`, and `b64url`,
  `b64url_decode`;
- HTTP: `retry_after` for a `Retry-After` header;
- provider rate limits: `Pace` (what `Channel.pace` answers), `RateLimits` (what
  `register_channels` and `register_sources` are handed), `Grant`, `burst_for`, and
  `LocalRateLimits` (buckets of one's own, for tests);
- promo codes: `PROMO_ALPHABET`, `DEFAULT_GROUPS`, `new_code`, `sample_code`, `prefix_problem`;
- text and time: `html_to_text`, `parse_duration`, `parse_time`, `to_iso`;
- for condition functions: `scope` (the evaluation's history and segments) and `History`;
  `translated_as` and the terms of `boomerang.audiences` (`days_since_term`) for a function a
  schedule's audience can ask the store about.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

from boomerang.audiences import days_since_term, translated_as
from boomerang.bodies import BodyError, read_json
from boomerang.clock import parse_duration, parse_time, to_iso
from boomerang.config import Config
from boomerang.expressions import scope
from boomerang.history import History
from boomerang.ingest import (
    EventError,
    IngestWindow,
    e164,
    normalise_email,
    normalise_phone,
    parse_body,
    parse_event,
    parse_events,
)
from boomerang.model import MAX_PUSH_SUBSCRIPTIONS, Customer, Delivery, DeliveryStatus, Event, Message
from boomerang.pacing import Pace
from boomerang.problems import Problem, ProblemError, did_you_mean
from boomerang.promo_codes import ALPHABET as PROMO_ALPHABET
from boomerang.promo_codes import DEFAULT_GROUPS, new_code, prefix_problem, sample_code
from boomerang.rate_limits import Grant, LocalRateLimits, RateLimits, burst_for
from boomerang.templates import html_to_text
from boomerang.tokens import SEALED_OVERHEAD, b64url, b64url_decode, bearer, seal, sign, unseal, verify

__all__ = [
    "DEFAULT_GROUPS",
    "MAX_PUSH_SUBSCRIPTIONS",
    "PROMO_ALPHABET",
    "SEALED_OVERHEAD",
    "BodyError",
    "Config",
    "Customer",
    "Delivery",
    "DeliveryStatus",
    "Event",
    "EventError",
    "Grant",
    "History",
    "IngestWindow",
    "LocalRateLimits",
    "Message",
    "Pace",
    "Problem",
    "ProblemError",
    "RateLimits",
    "SettingsCheck",
    "b64url",
    "b64url_decode",
    "bearer",
    "burst_for",
    "days_since_term",
    "did_you_mean",
    "e164",
    "html_to_text",
    "new_code",
    "normalise_email",
    "normalise_phone",
    "parse_body",
    "parse_duration",
    "parse_event",
    "parse_events",
    "parse_time",
    "prefix_problem",
    "read_json",
    "retry_after",
    "sample_code",
    "scope",
    "seal",
    "sign",
    "to_iso",
    "translated_as",
    "unseal",
    "verify",
]


def retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds to wait from a `Retry-After` header (RFC 9110): whole seconds or an HTTP date.

    None when there is no header or it is neither; a date in the past is 0.
    """
    if not value:
        return None
    value = value.strip()
    if value.isascii() and value.isdigit():
        return float(value)
    try:
        moment = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return max(0.0, (moment - (now or datetime.now(UTC))).total_seconds())


class SettingsCheck:
    """The problems of one plugin's section of the config (`channels.<name>`, `sources.<name>`,
    `actions.<name>`, `promo_providers.<name>`), each at its place in `boomerang.yaml`.

    Unknown settings are reported at once, at the key, with a "did you mean"; add the others
    with `problem()` and finish with `done()`:

        check = SettingsCheck(config, "channels", "pigeon", known={"url", "timeout"})
        if not check.settings.get("url"):
            check.problem("url", "'url' is required")
        check.done()
    """

    def __init__(self, config: Config, section: str, name: str, known: Iterable[str]):
        self.config = config
        self.keys = (section, name)
        self.settings: dict[str, Any] = getattr(config, section).get(name) or {}
        self.problems: list[Problem] = []
        known = sorted(known)
        for key in self.settings:
            if key not in known:
                message = f"unknown {name} setting '{key}'{did_you_mean(str(key), known)}"
                self.problems.append(config.problem((*self.keys, key), message, at_key=True))

    def problem(self, key: str | int | tuple[str | int, ...] | None, message: str) -> None:
        """A problem at the value of `key` (or of a path of keys below the section); at the
        section itself when `key` is None or not given in the file (a missing setting)."""
        path = key if isinstance(key, tuple) else (key,) if key is not None else ()
        if path and path[0] not in self.settings:
            path = ()
        self.problems.append(self.config.problem((*self.keys, *path), message))

    def text(self, key: str) -> str | None:
        """The setting `key` as text (a number is taken as its digits), stripped; None when it is
        not given or empty, and when it is no text (a list, a mapping, a boolean: reported)."""
        value = self.settings.get(key)
        if value is None or value == "":
            return None
        if isinstance(value, bool) or not isinstance(value, str | int | float):
            self.problem(key, f"'{key}' must be a text value")
            return None
        return str(value).strip()

    def positive_number(self, key: str) -> float | None:
        """The setting `key` as a number above 0 (a rate, a timeout); None when it is not
        given, and when it is no such number (reported)."""
        value = self.settings.get(key)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
            self.problem(key, f"'{key}' must be a number above 0, such as 1 or 2.5")
            return None
        return float(value)

    def done(self) -> None:
        """Raise `ProblemError` with every problem found, if there is any."""
        if self.problems:
            raise ProblemError(self.problems)
