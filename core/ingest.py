"""Turning incoming JSON into validated events, and storing them before anyone is told.

The same reading serves `POST /events`, `boomerang ingest` and `boomerang simulate`: a JSON
object, a JSON array of objects, or JSON lines (one object per line).

The merge policy. Two customers are merged only on identities (id, email, phone, Telegram chat)
that a verified source asserted: a source whose `verified` is true (the generic source, whose
`POST /events` carries the api_token; a shop platform's signed webhook) and the files
`simulate` reads. Everything else is a claim made through a public endpoint (`/start` with a
link token, `POST /push/subscribe`, a tracking call): it attaches a chat or a browser to the
one customer its token names, moving it away from whoever had it, and never merges two
customers (see `Store.ingest`); only a browser's anonymous profile, made of nothing but
browsers, is folded into the customer a signed token names (`Customers._resolve_claim`).
"""

from __future__ import annotations

import asyncio
import logging
import re
import string
import time
import unicodedata
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from boomerang import bodies
from boomerang.bodies import MAX_VALUE_DEPTH, BodyError, nesting
from boomerang.clock import parse_time, to_iso
from boomerang.erasure import Forgotten, remove_outbox_files
from boomerang.kinds import IngestResult
from boomerang.metrics import Metrics
from boomerang.model import PROFILE_FIELDS, Customer, Event, ProfileUpdate

log = logging.getLogger(__name__)

_TYPE = re.compile(r"^[A-Za-z0-9_]+(\.[A-Za-z0-9_]+)+$")
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
_CHANNEL = re.compile(r"^[a-z][a-z0-9_]{0,31}$")  # what a channel plugin's name looks like
MAX_ADDRESS = 256  # characters of an address in `customer.addresses`
_BIRTHDAY = re.compile(r"^(\d{4}|-)-(0[1-9]|1[0-2])-(0[1-9]|[12]\d|3[01])$")
_ASCII_LOWER = str.maketrans(string.ascii_uppercase, string.ascii_lowercase)


_LATEST = datetime.max.replace(tzinfo=UTC)
_EVENT_FIELDS = frozenset(("id", "type", "at", "customer", "data"))


class EventError(ValueError):
    """Input that is not a valid event; the message says what is wrong and where."""


@dataclass(frozen=True)
class IngestWindow:
    """The `at` moments live ingest accepts (setting `ingest:`): from `earliest` up to `future`
    past the present.

    A live event dated outside it is a sender's mistake (a clock reset to 1970, 2062 typed for
    2026) that would otherwise steer profiles and waits. `simulate` and history imports take
    any four-digit year.
    """

    earliest: datetime = datetime(2000, 1, 1, tzinfo=UTC)
    future: timedelta = timedelta(days=1)

    def problem(self, at: datetime, now: datetime) -> str | None:
        """Why `at` is outside the window at `now`, or None if it is inside."""
        if at < self.earliest:
            return (
                f"is before {to_iso(self.earliest)}, the earliest a live event may be dated "
                "(setting ingest.earliest)"
            )
        if self.future < _LATEST - now and at > now + self.future:
            hours = self.future.total_seconds() / 3600
            return (
                f"is more than {hours:g}h ahead of this server's clock ({to_iso(now)}); "
                "check the sender's clock (setting ingest.future)"
            )
        return None


def parse_body(body: bytes | str) -> list[tuple[str, Any]]:
    """Split a request body or file into (where, decoded JSON value) items.

    `where` names the item in error messages: `event 3` in an array, `line 3` in JSON lines.
    Nesting deeper than `bodies.MAX_DEPTH` is refused before any parsing.
    """
    try:
        text = body.decode("utf-8") if isinstance(body, bytes) else body
    except UnicodeDecodeError as exc:
        raise EventError(f"the body is not UTF-8 text (byte {exc.start})") from None
    if not text.strip():
        raise EventError("no events: the body is empty")
    try:
        whole = bodies.loads(text)
    except BodyError as exc:
        # JSON lines: several documents, each on its own line. A pretty-printed document with a
        # mistake is not that, and its error is reported at its real line.
        lines = [line for line in text.splitlines() if line.strip()]
        if "Extra data" in str(exc) or any(_parses(line) for line in lines[:2]):
            return _json_lines(text)
        raise EventError(str(exc)) from None
    if isinstance(whole, list):
        return [(f"event {index}", item) for index, item in enumerate(whole, start=1)]
    return [("event", whole)]


def _parses(line: str) -> bool:
    try:
        bodies.loads(line)
    except BodyError:
        return False
    return True


def _json_lines(text: str) -> list[tuple[str, Any]]:
    return [
        (f"line {number}", parse_line(line, number))
        for number, line in enumerate(text.splitlines(), start=1)
        if line.strip()
    ]


def parse_line(line: str, number: int) -> Any:
    """The JSON value of line `number` of a JSON-lines body; `EventError` names the line."""
    try:
        return bodies.loads(line)
    except BodyError as exc:
        # The line was parsed alone: its position within it is "line 1, column N".
        problem = str(exc)
        where = f"line {number}, " if problem.startswith("line 1, ") else f"line {number}: "
        raise EventError(where + problem.removeprefix("line 1, ")) from None


def parse_event(
    raw: Any, where: str = "event", window: IngestWindow | None = None, now: datetime | None = None
) -> Event:
    """Validate one generic event object; raises `EventError` naming the field at fault.

    With a `window` (live ingest), `at` must lie inside it at `now` (default: the wall clock).
    """
    if not isinstance(raw, dict):
        raise EventError(f"{where}: an event must be a JSON object, not {type(raw).__name__}")
    if not _EVENT_FIELDS.issuperset(raw):
        raise EventError(
            f"{where}: unknown field(s) {', '.join(sorted(raw.keys() - _EVENT_FIELDS))}; "
            "an event has id, type, at, customer and data"
        )
    event_id = raw.get("id")
    if isinstance(event_id, bool) or not isinstance(event_id, (str, int)) or str(event_id) == "":
        raise EventError(f"{where}: 'id' is required (a string unique to this event)")
    where = f"{where} '{event_id}'"
    event_type = raw.get("type")
    if not isinstance(event_type, str) or not _TYPE.match(event_type):
        raise EventError(f"{where}: 'type' must be a dotted name such as cart.updated")
    if "at" not in raw:
        raise EventError(f"{where}: 'at' is required (ISO-8601 with a timezone)")
    try:
        at = parse_time(raw["at"])
    except ValueError as exc:
        raise EventError(f"{where}: 'at': {exc}") from None
    problem = window.problem(at, now or datetime.now(UTC)) if window else None
    if problem:
        raise EventError(f"{where}: 'at' {raw['at']} {problem}")
    data = raw.get("data", {})
    if not isinstance(data, dict):
        raise EventError(f"{where}: 'data' must be a JSON object")
    _check_nesting(data, f"{where}: 'data'")
    profile = parse_profile(raw.get("customer"), where)
    return Event(id=str(event_id), type=event_type, at=at, profile=profile, data=data)


_TEXT_FIELDS = frozenset(("id", *PROFILE_FIELDS))  # a customer's fields given as text
_CUSTOMER_FIELDS = _TEXT_FIELDS | {"consents", "attributes", "push_subscriptions", "addresses"}


def parse_profile(raw: Any, where: str) -> ProfileUpdate:
    """Validate an event's `customer` object; it must name at least one identity."""
    if not isinstance(raw, dict):
        raise EventError(f"{where}: 'customer' is required: an object with an id, email or phone")
    if not _CUSTOMER_FIELDS.issuperset(raw):
        raise EventError(
            f"{where}: unknown customer field(s) {', '.join(sorted(raw.keys() - _CUSTOMER_FIELDS))}; "
            "put free-form values under customer.attributes"
        )
    text = {}
    for name, value in raw.items():
        if value is None or name not in _TEXT_FIELDS:
            continue
        if not isinstance(value, str):
            if isinstance(value, bool) or not isinstance(value, int):
                raise EventError(f"{where}: customer.{name} must be a string")
            value = str(value)
        text[name] = value.strip() or None
    if text.get("email"):
        text["email"] = normalise_email(text["email"], f"{where}: customer.email")
    for name in ("phone", "whatsapp"):
        if text.get(name):
            text[name] = normalise_phone(text[name], f"{where}: customer.{name}")
    if text.get("timezone"):
        try:
            ZoneInfo(text["timezone"])
        except (ZoneInfoNotFoundError, ValueError, OSError):  # OSError: a name too long for a file
            raise EventError(
                f"{where}: customer.timezone '{text['timezone'][:64]}' is not an IANA "
                "timezone such as Europe/Moscow"
            ) from None
    if text.get("birthday") and not _BIRTHDAY.match(text["birthday"]):
        raise EventError(f"{where}: customer.birthday must be YYYY-MM-DD or --MM-DD")
    # Any channel name, not only the configured ones: a channel plugin may be added later,
    # and the contact plan reads consents only for the channels it has.
    consents = raw.get("consents") or {}
    if consents and (
        not isinstance(consents, dict)
        or not all(_CHANNEL.match(k) and isinstance(v, bool) for k, v in consents.items())
    ):
        raise EventError(
            f"{where}: customer.consents must map channel names (email, sms, push...) to true or false"
        )
    addresses = raw.get("addresses") or {}
    if addresses and (
        not isinstance(addresses, dict)
        or not all(
            _CHANNEL.match(k) and isinstance(v, str) and 0 < len(v.strip()) <= MAX_ADDRESS
            for k, v in addresses.items()
        )
    ):
        raise EventError(
            f"{where}: customer.addresses must map channel names to addresses on them "
            f'(text up to {MAX_ADDRESS} characters), such as {{"pigeon": "coop-7"}}'
        )
    attributes = raw.get("attributes") or {}
    if attributes:
        if not isinstance(attributes, dict):
            raise EventError(f"{where}: customer.attributes must be a JSON object")
        _check_nesting(attributes, f"{where}: customer.attributes")
    subscriptions = raw.get("push_subscriptions") or []
    if subscriptions and (
        not isinstance(subscriptions, list) or not all(_is_subscription(s) for s in subscriptions)
    ):
        raise EventError(
            f"{where}: customer.push_subscriptions must be a list of "
            "PushSubscription.toJSON() objects (endpoint, keys.p256dh, keys.auth)"
        )
    profile = ProfileUpdate(
        consents=consents,
        attributes=attributes,
        push_subscriptions=subscriptions,
        addresses={channel: address.strip() for channel, address in addresses.items()} if addresses else {},
        **text,
    )
    if not (text.get("id") or text.get("email") or text.get("phone") or text.get("telegram_chat_id")):
        raise EventError(f"{where}: customer needs an id, email, phone or telegram_chat_id")
    return profile


def normalise_email(value: str, where: str) -> str:
    """The form emails are compared in: only A-Z lower-cased, after checking NFKC leaves it be.

    Unicode lower-casing folds look-alikes into real addresses (the Kelvin sign K becomes k, so
    `\u212aate@` was `kate@`), and so does NFKC: an address that NFKC would change is refused,
    never folded into another customer's. Other non-ASCII letters are kept as they are.
    """
    if not _EMAIL.match(value):
        raise EventError(f"{where} is not an email address")
    if unicodedata.normalize("NFKC", value) != value:
        raise EventError(
            f"{where} has characters that Unicode normalisation (NFKC) turns into others, as it does "
            "the Kelvin sign into K; it could pass for another address, so it is refused"
        )
    return value.translate(_ASCII_LOWER)


def _check_nesting(value: Any, what: str) -> None:
    """Free-form values are kept shallow, so that nothing which passes here fails a send later."""
    depth = nesting(value)
    if depth > MAX_VALUE_DEPTH:
        raise EventError(f"{what} is nested {depth} levels deep; at most {MAX_VALUE_DEPTH} are allowed")


_PHONE_PUNCTUATION = re.compile(r"[\s()\-.]")
_E164 = re.compile(r"^\+[1-9]\d{6,14}$")


def normalise_phone(value: str, where: str) -> str:
    """Keep the digits (and a leading +) so the same number always looks the same."""
    digits = _PHONE_PUNCTUATION.sub("", value)
    if not re.fullmatch(r"\+?\d{7,15}", digits):
        raise EventError(f"{where} is not a phone number (7 to 15 digits, + country code)")
    return digits


def e164(phone: str | None) -> str | None:
    """A phone number in E.164 (`+79990001122`) with its punctuation dropped, or None if it is
    not one: what SMS and WhatsApp providers take as an address."""
    if not phone:
        return None
    number = _PHONE_PUNCTUATION.sub("", str(phone))
    return number if _E164.match(number) else None


def _is_subscription(value: Any) -> bool:
    return (
        isinstance(value, dict)
        and isinstance(value.get("endpoint"), str)
        and value["endpoint"].startswith("https://")
        and isinstance(value.get("keys"), dict)
        and isinstance(value["keys"].get("p256dh"), str)
        and isinstance(value["keys"].get("auth"), str)
    )


def parse_events(
    items: list[tuple[str, Any]], window: IngestWindow | None = None, now: datetime | None = None
) -> list[Event]:
    """Validate every item; one bad event rejects the whole batch, so nothing is half-stored."""
    now = now or datetime.now(UTC)
    return [parse_event(raw, where, window, now) for where, raw in items]


# The source of the events `boomerang ingest` imports: `import` for the event format,
# `import:<source>` for a platform's export read by that source.
IMPORTED = "import"


def imported(event: Event) -> bool:
    """Whether an event came from a history import rather than live."""
    return event.source == IMPORTED or event.source.startswith(IMPORTED + ":")


def nothing_verified(source: str) -> bool:
    """The policy for an ingest that knows no verified source: every event is a claim."""
    return False


@dataclass
class _Waiting:
    """A request's events waiting for the next group commit, and where its answer goes."""

    events: list[Event]
    verified: bool
    answer: asyncio.Future[list[Event]]


class Ingestor:
    """The ingest function handed to sources: commit, then tell the listeners.

    Group commit: requests that arrive while a transaction is being written wait together and
    are written by the next one, in ONE transaction (one fsync with `synchronous=FULL`) by a
    single writer; each is answered only after that transaction has committed. Each request
    is its own savepoint in the group (`Store.ingest_group`), so one that fails leaves the
    others stored; if the transaction cannot commit (disk full, database locked), every
    request of the group gets `StoreUnavailable` and nothing of them is stored.

    `verified(source)` says whether a source's events may merge customers (the merge policy
    above); by default none may. `outbox()` is the outbox folder of the live configuration,
    whose files of an erased customer's messages `forget` deletes. `metrics` counts what each
    group stored, by source and type, and the duplicates.
    """

    # Events a group takes at most (whole requests; at least one): bounds one transaction's time.
    GROUP_EVENTS = 5000

    def __init__(
        self,
        store: Any,
        clock: Any,
        on_stored: Callable[[list[Event]], Awaitable[None]],
        verified: Callable[[str], bool] = nothing_verified,
        wake: Callable[[], None] = lambda: None,
        outbox: Callable[[], Path | None] = lambda: None,
        metrics: Metrics | None = None,
    ):
        self.store = store
        self.metrics = metrics or Metrics()
        self.clock = clock
        self.on_stored = on_stored
        self.verified = verified
        self.wake = wake  # tells the scheduler that a job was queued or moved (a visit's end)
        self.outbox = outbox
        self.accepted = 0
        self.duplicates = 0
        self._waiting: list[_Waiting] = []
        self._writer: asyncio.Task | None = None
        self._last_written = 0.0  # monotonic time the writer last finished a group

    async def idle(self, quiet: float, at_most: float) -> None:
        """Return once no request has waited nor been written for `quiet` seconds, or after
        `at_most` seconds whatever ingest does: work that yields to ingest waits here first,
        so that a steady stream of requests delays it but never stops it."""
        started = time.monotonic()
        while True:
            now = time.monotonic()
            busy = self._waiting or (self._writer is not None and not self._writer.done())
            still = quiet if busy else quiet - (now - self._last_written)
            left = at_most - (now - started)
            if still <= 0 or left <= 0:
                return
            await asyncio.sleep(min(still, left))

    async def __call__(self, events: list[Event], source: str) -> IngestResult:
        """Store the events; returns only after they are committed."""
        for event in events:
            event.source = source
        waiting = _Waiting(events, self.verified(source), asyncio.get_running_loop().create_future())
        self._waiting.append(waiting)
        if self._writer is None or self._writer.done():
            self._writer = asyncio.ensure_future(self._write())
        stored = await waiting.answer
        return IngestResult(accepted=len(stored), duplicates=len(events) - len(stored))

    async def _write(self) -> None:
        """The writer: while requests wait, write them in groups, answer them, tell the listeners."""
        while self._waiting:
            group, size = [], 0
            while self._waiting and (not group or size + len(self._waiting[0].events) <= self.GROUP_EVENTS):
                group.append(self._waiting.pop(0))
                size += len(group[-1].events)
            try:
                outcomes = await self.store.run(
                    self.store.ingest_group, [(w.events, w.verified) for w in group], self.clock.now()
                )
            except Exception as exc:  # noqa: BLE001 - nothing of the group is stored: each request is told

                for waiting in group:
                    if not waiting.answer.done():
                        waiting.answer.set_exception(exc)
                continue
            stored: list[Event] = []
            for waiting, outcome in zip(group, outcomes, strict=True):
                if waiting.answer.done():  # the request was cancelled (client gone); it is stored
                    pass
                elif isinstance(outcome, Exception):
                    waiting.answer.set_exception(outcome)
                else:
                    waiting.answer.set_result(outcome)
                if not isinstance(outcome, Exception):
                    stored += outcome
                    self.accepted += len(outcome)
                    duplicates = len(waiting.events) - len(outcome)
                    self.duplicates += duplicates
                    if duplicates:
                        self.metrics.duplicates(waiting.events[0].source, duplicates)
            self._last_written = time.monotonic()
            if stored:
                self.metrics.ingested(stored)
                try:
                    await self.on_stored(stored)
                except Exception:  # the writer must outlive a listener's bug: requests wait on it
                    log.exception("telling the listeners about %d stored events failed", len(stored))

    async def feedback(
        self, message_id: str, event_type: str, data: dict[str, Any] | None = None, key: str | None = None
    ) -> bool:
        """Record a receipt about a message we sent (`message.delivered`, `.failed`, `.opened`,
        `.clicked`, `.unsubscribed`, `.replied`); False if no such message exists."""
        known, event = await self.store.run(
            self.store.record_feedback, message_id, event_type, data or {}, key, self.clock.now()
        )
        if event is not None:
            self.accepted += 1
            self.metrics.ingested([event])
            await self.on_stored([event])
        return known

    async def customer(self, identity: str) -> Customer | None:
        """The customer with this id or address (email, phone, Telegram chat), or None."""
        return await self.store.run(self.store.find_customer, identity)

    async def visit(self, visitor: str, source: str, idle: timedelta) -> None:
        """The browser `visitor` is active on the site now: its customer counts as seen now, and
        its visit ends with a `site.left` event once it has been quiet for `idle` (durable: a
        `visit` job, moved later by each call). Stores no event itself."""
        await self.store.run(self.store.visit, source, visitor, idle, self.clock.now())
        self.wake()

    async def forget(self, identity: str) -> Forgotten | None:
        """Erase the customer with this id, email or phone (`Store.forget`) and their messages'
        outbox files; None if there is no such customer."""
        gone = await self.store.run(self.store.forget, identity, self.clock.now())
        if gone is not None:
            outbox = self.outbox()
            await asyncio.get_running_loop().run_in_executor(
                None, remove_outbox_files, outbox, gone.message_files
            )
        return gone
