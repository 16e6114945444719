"""The plugin kinds: the objects that `register_*` hooks hand over to the core.

Subclass these (or write objects of the same shape). The core validates what it is handed:
a missing or duplicate name is a startup error naming the plugin.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import timedelta
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Protocol

from boomerang.problems import did_you_mean

if TYPE_CHECKING:
    from aiohttp import web

    from boomerang.erasure import Forgotten
    from boomerang.model import Customer, Delivery, Event, Message
    from boomerang.pacing import Pace


@dataclass(frozen=True)
class IngestResult:
    """How many events of a batch were stored, and how many had been seen before."""

    accepted: int
    duplicates: int


class Ingest(Protocol):
    """What sources call with the events they received; returns once they are committed."""

    async def __call__(self, events: list[Event], source: str) -> IngestResult:
        """Store events (deduplicated by id) and act on them; returns once committed."""
        ...

    async def feedback(
        self, message_id: str, event_type: str, data: dict[str, Any] | None = None, key: str | None = None
    ) -> bool:
        """Record a receipt (`message.delivered`...) about a message; False if it is unknown."""
        ...

    async def customer(self, identity: str) -> Customer | None:
        """The customer with this id or address (email, phone, Telegram chat), or None."""
        ...

    async def visit(self, visitor: str, source: str, idle: timedelta) -> None:
        """A browser (a first-party visitor id) is active on the site now: its customer is seen
        now, and `idle` after its last activity a `site.left` event is stored (once per visit,
        across restarts). Heartbeats come here without storing an event each."""
        ...

    async def forget(self, identity: str) -> Forgotten | None:
        """Erase the personal data of the customer with this id, email or phone, as
        `boomerang forget` does (a platform's redact request); None if there is none."""
        ...


Handler = Callable[["web.Request", Ingest], Awaitable["web.StreamResponse"]]


@dataclass(frozen=True)
class Route:
    """An HTTP route a source or channel serves; its handler also gets the ingest function."""

    method: str
    path: str
    handler: Handler


class Source:
    """Turns what a shop or site sends (webhooks, polled APIs) into normalised events."""

    name: str = ""
    # True only when every identity in this source's events is the shop's own word (an
    # authenticated API, a signed platform webhook): only such events may merge customers.
    # Events built from what visitors send are claims and never merge (core/ingest.py).
    verified: bool = False

    def routes(self) -> list[Route]:
        """The HTTP routes this source serves; each verifies its own signatures."""
        return []

    async def poll(self, ingest: Ingest, stop: asyncio.Event) -> None:
        """Fetch events until `stop` is set; the default source does not poll."""
        return None

    async def setup(self) -> list[str] | None:
        """Register this source with its platform (webhook subscriptions...) for
        `boomerang sources setup NAME`; idempotent: run twice, nothing doubles.

        :return: one line per thing done or found already in place; None when the source has
            nothing to set up.
        :raise SetupError: with a message for the admin when the platform refuses.
        """
        return None

    def read_export(self, record: dict[str, Any]) -> list[Event] | None:
        """The events one record of this platform's export holds (an order, a customer: one
        JSON object of the export file), for `boomerang ingest --format NAME`; optional.

        :param record: one JSON object of the export.
        :return: the events it means (none is fine); their ids must be the same every time
            the record is read, so that importing a file twice stores nothing twice. None (what
            a source that does not override this returns) says it reads no exports.
        :raise EventError: with a message saying what is wrong with the record.
        """
        return None

    async def close(self) -> None:
        """Release connections; called on shutdown and when a reload replaces the source."""
        return None


class SetupError(Exception):
    """A source's platform refused its setup; the message says what to fix."""


class Channel(ABC):
    """Sends messages over one medium (email, sms, push... or any a plugin adds).

    The class attributes declare what the core needs to know about the channel even where it
    is not configured (`boomerang check`, template loading): hand the class over from
    `register_channel_kinds()` and configured instances from `register_channels(config, rate_limits)`.
    """

    name: str = ""
    # Template files are `<name>.<locale>.<ext>` with one of these extensions; an `html` body
    # is autoescaped.
    extensions: tuple[str, ...] = ("txt",)
    # Front matter keys a template of this channel may have, with the type(s) of their
    # values (a `str` value is itself a template); `check` reports any other key or type.
    front_matter: Mapping[str, type | tuple[type, ...]] = MappingProxyType({})
    # Front matter keys every locale of a template of this channel must have.
    required_front_matter: tuple[str, ...] = ()
    # Whether the provider reports delivery; if so, a message with no receipt within the
    # plan's `fallback.after` is tried on the next channel.
    receipts: bool = False
    # Whether a message reaches the person at once (a buzz, a notification), so that the
    # plan's `quiet_hours` hold it back when they name no channels.
    instant: bool = True
    # The customer profile fields the channel's address is made from, in order of preference
    # (`email`, `phone`, `whatsapp`, `telegram_chat_id`, `push_subscriptions`): an event that
    # brings a new value for them lifts the channel's "known bad" mark. Empty: the address is
    # the channel's entry in the customer's address map (`customer.addresses` in events).
    address_fields: tuple[str, ...] = ()

    def address(self, customer: Customer) -> str | None:
        """The customer's address on this channel, or None if they have none.

        By default the one under the channel's name in the customer's address map
        (`customer.addresses` in events); the built-in channels read their own fields.
        """
        address = customer.addresses.get(self.name)
        return address if isinstance(address, str) and address else None

    def forget(self, customer: Customer, gone: str) -> dict[str, Any]:
        """The profile fields to store so that `gone` (an address of `Delivery.gone`) is not
        used again; by default the address map without this channel's `gone` address."""
        if customer.addresses.get(self.name) != gone:
            return {}
        return {"addresses": {k: v for k, v in customer.addresses.items() if k != self.name}}

    @abstractmethod
    async def send(self, message: Message) -> Delivery:
        """Send one message and say what happened; must not raise for provider errors.

        `message.idempotency_key` is the same on every attempt to send this message (a
        retry, a transactional message sent again after a crash): hand it to a provider
        that accepts one, so that it can drop the repeat.
        """

    def pace(self, message: Message) -> Pace | None:
        """How the provider's rate limit paces this message (a bucket of the `rate_limits` the
        channel was handed, the tokens it takes), or None if it is not paced (the default).

        Dispatch takes the tokens of a batch before marking its messages `sending`: a message
        whose turn is more than a moment away is not handed to `send` but put back until then
        (`boomerang.pacing`), so that a stop never finds it half sent. `send` then need not wait.
        """
        return None

    def outbox_file(self, message: Message) -> tuple[str, bytes]:
        """The file the outbox writes instead of sending: (suffix, content)."""
        return ".json", json.dumps(message.as_dict(), ensure_ascii=False, indent=2).encode()

    def routes(self) -> list[Route]:
        """Routes for delivery receipts (`/callbacks/<channel>`), verified by the channel."""
        return []

    def describe(self, message: Message) -> list[str]:
        """Notes for `boomerang preview` about how this message would go (SMS segments...)."""
        return []

    def prepare(self) -> None:
        """Load what sending needs (a provider's library, an HTTP client's modules) now rather
        than on the event loop in the middle of the first send. Called when a project that
        runs loads; `boomerang check` constructs channels without calling it, so that it
        starts fast. Sending must still work unprepared (it loads them then)."""
        return None

    async def close(self) -> None:
        """Close pooled connections; called on shutdown and when a reload replaces the channel."""
        return None


class SendsInFlight:
    """The sends a channel has under way, so that its `close()` (on a reload or shutdown) lets
    them finish on the connections they hold, and no send re-opens what was closed."""

    def __init__(self) -> None:
        self.closed = False
        self._count = 0
        self._none = asyncio.Event()
        self._none.set()

    @contextlib.contextmanager
    def track(self) -> Iterator[None]:
        """Count one send as under way while inside the block."""
        self._count += 1
        self._none.clear()
        try:
            yield
        finally:
            self._count -= 1
            if not self._count:
                self._none.set()

    async def close(self, timeout: float) -> None:
        """Refuse new sends from now on; wait up to `timeout` seconds for those under way."""
        self.closed = True
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._none.wait(), timeout)


@dataclass(frozen=True)
class Action:
    """A named action for `action:` steps; `run` gets the rendered `with:` arguments.

    An exception from `run` is retried under the one retry policy (core/retry.py); raise
    `ActionFailed(..., retry=False)` for a failure that trying again cannot mend (a wrong
    argument, a record the other system does not have).
    """

    name: str
    run: Callable[..., Awaitable[dict[str, Any] | None]]
    description: str = ""

    def argument_problems(self, given: Iterable[str]) -> list[str]:
        """What is wrong with `with:` arguments of these names, judged by the signature of
        `run`: names it does not take (unless it takes `**anything`), required ones missing."""
        try:
            parameters = inspect.signature(self.run).parameters.values()
        except (TypeError, ValueError):  # a callable Python cannot describe: nothing to judge by
            return []
        named = {p.name: p for p in parameters if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
        takes_any = any(p.kind == p.VAR_KEYWORD for p in parameters)
        given = list(given)
        problems = []
        for name in given:
            if name not in named and not takes_any:
                problems.append(
                    f"action '{self.name}' takes no argument '{name}'{did_you_mean(name, named)}; "
                    f"it takes {', '.join(named) or 'none'}"
                )
        for name, parameter in named.items():
            if parameter.default is parameter.empty and name not in given:
                problems.append(f"action '{self.name}' needs the argument '{name}' under with:")
        return problems


class ActionFailed(Exception):
    """An action's failure, with whether trying again later may succeed (`retry`)."""

    def __init__(self, message: str, retry: bool = True):
        super().__init__(message)
        self.retry = retry


class PromoProvider(ABC):
    """Issues personal promo codes for `send` steps with `promo:`."""

    name: str = ""

    @abstractmethod
    async def issue(self, customer: Customer, spec: dict[str, Any]) -> str:
        """A new code for this customer, following the step's `promo:` spec.

        The core keeps every code issued in its `promo_codes` table, linked to the message, and
        asks again if the code is one another message has: return a fresh code each call.
        """

    def sample(self, spec: dict[str, Any], seed: str) -> str | None:
        """A code that looks like this provider's, the same for the same `seed`, issued nowhere:
        what `simulate` and `preview` show. None (the default): a placeholder is shown."""
        return None


class Recommender(ABC):
    """A recommendation strategy: templates ask it as `recommendations(limit, strategy=name)`.

    It is asked once per message whose template names it, on the event loop, after the
    contact plan has decided the message goes and before it renders (core/dispatch.py); what
    it answers is copied as plain data. One that raises or takes longer than
    `RECOMMENDER_SECONDS` gives an empty list (logged): the message goes without it. Its
    `name` may not be one of the built-in strategies (`viewed`, `cross_sell`, `bestsellers`,
    `also_bought`). `with:` values and previews do not ask it (a preview shows sample products).
    """

    name: str = ""

    @abstractmethod
    async def recommend(self, customer: Customer, limit: int) -> list[dict[str, Any]]:
        """Up to `limit` products for the customer, best first: dicts with `id`, `name`, `url`,
        `image`, `price`, `currency`, `category` (at least a `name` or a `url`; the rest may be
        left out; an entry that is no product is dropped)."""
