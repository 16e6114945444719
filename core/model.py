"""The plain data that flows through Boomerang: events, customers, messages, deliveries."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from datetime import datetime
from enum import StrEnum
from typing import Any

CATEGORIES = ("transactional", "trigger", "promo")
# A customer keeps at most this many browsers' push subscriptions (the newest): every push
# goes to each of them.
MAX_PUSH_SUBSCRIPTIONS = 10
EVENT_TYPES = (
    "product.viewed",
    "category.viewed",
    "cart.updated",
    "checkout.started",
    "site.left",
    "order.placed",
    "order.paid",
    "order.shipped",
    "order.delivered",
    "order.cancelled",
    "customer.created",
    "customer.updated",
    "review.submitted",
    "promo.redeemed",
    "promo.rejected",
    "message.sent",
    "message.delivered",
    "message.failed",
    "message.opened",
    "message.clicked",
    "message.unsubscribed",
    "message.replied",
)


# The profile fields an event's `customer` may set, besides consents, attributes and addresses.
PROFILE_FIELDS = (
    "email",
    "phone",
    "name",
    "locale",
    "timezone",
    "birthday",
    "gender",
    "telegram_chat_id",
    "whatsapp",
)


@dataclass
class ProfileUpdate:
    """What an event says about its customer; later values update the stored profile."""

    id: str | None = None
    email: str | None = None
    phone: str | None = None
    name: str | None = None
    locale: str | None = None
    timezone: str | None = None
    birthday: str | None = None
    gender: str | None = None
    telegram_chat_id: str | None = None
    whatsapp: str | None = None
    consents: dict[str, bool] = field(default_factory=dict)
    attributes: dict[str, Any] = field(default_factory=dict)
    push_subscriptions: list[dict] = field(default_factory=list)
    addresses: dict[str, str] = field(default_factory=dict)  # channel → address, for plugins' channels
    # A browser's first-party visitor id, given by the site tracking source (never by an event's
    # `customer` object): an identity, not a profile field.
    visitor: str | None = None

    def identities(self) -> list[tuple[str, str]]:
        """The (kind, value) pairs that identify a customer, strongest first."""
        pairs = [
            ("id", self.id),
            ("email", self.email),
            ("phone", self.phone),
            ("telegram", self.telegram_chat_id),
            ("visitor", self.visitor),
        ]
        return [(kind, value) for kind, value in pairs if value]


@dataclass
class Event:
    """Something a customer did or that happened to them."""

    id: str
    type: str
    at: datetime
    profile: ProfileUpdate
    data: dict[str, Any] = field(default_factory=dict)
    customer_id: str | None = None  # set once the store has resolved the customer
    source: str = "api"


@dataclass
class Customer:
    """A profile merged from every identity seen for one person."""

    id: str
    email: str | None = None
    phone: str | None = None
    name: str | None = None
    locale: str | None = None
    timezone: str | None = None
    birthday: str | None = None
    gender: str | None = None
    telegram_chat_id: str | None = None
    whatsapp: str | None = None
    consents: dict[str, bool] = field(default_factory=dict)
    attributes: dict[str, Any] = field(default_factory=dict)
    push_subscriptions: list[dict] = field(default_factory=list)
    addresses: dict[str, str] = field(default_factory=dict)  # channel → address, for plugins' channels
    opt_outs: dict[str, str] = field(default_factory=dict)  # channel (or "all") → when they said no
    unreachable: dict[str, str] = field(default_factory=dict)  # channel → why the address is bad
    orders_count: int = 0
    revenue: float = 0.0
    last_order_at: datetime | None = None
    last_seen_at: datetime | None = None
    created_at: datetime | None = None
    updated_at: datetime | None = None


@dataclass
class Message:
    """One rendered send of one template to one customer over one channel."""

    id: str
    customer_id: str
    channel: str
    to: str
    template: str
    body: str
    subject: str | None = None
    html: str | None = None
    locale: str | None = None
    category: str = "trigger"
    scenario: str | None = None
    step: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)  # channel-specific parts: url, title...
    # When its journey queued it, ISO-8601 text as the store keeps it: the same on every attempt
    # to send it (the outbox names its file by it, so a re-send overwrites the file).
    created_at: str | None = None

    @property
    def idempotency_key(self) -> str:
        """The same on every attempt to send this message: a retry, or a re-send after a crash.

        Channels hand it to providers that accept one (so they can drop a repeat) and derive
        the email `Message-ID` from it (so every mail receiver sees the same message).
        """
        return self.id

    def as_dict(self) -> dict[str, Any]:
        """The message as JSON-ready data (what the outbox writes for non-email channels)."""
        return {
            "id": self.id,
            "customer": self.customer_id,
            "channel": self.channel,
            "to": self.to,
            "template": self.template,
            "locale": self.locale,
            "category": self.category,
            "scenario": self.scenario,
            "step": self.step,
            "subject": self.subject,
            "body": self.body,
            "html": self.html,
            **({"extra": self.extra} if self.extra else {}),
        }


@dataclass
class MessageRecord:
    """A message as stored: queued by a journey, then planned, sent and settled by the engine.

    `promo`, `context`, `candidates` and `tried` are decoded JSON; times are ISO-8601 text,
    as the store keeps them.
    """

    id: str
    customer_id: str
    template: str
    category: str
    status: str  # pending | sending | sent | delivered | failed | dropped | unknown
    journey_id: str | None = None
    scenario: str | None = None
    step: str | None = None
    candidates: list[str] | None = None  # the step's `channels:`; None: the contact plan's order
    channel: str | None = None
    promo: dict[str, Any] | None = None
    expires_at: str | None = None
    variant: str | None = None
    context: dict[str, Any] | None = None  # the journey's context when the step queued it
    detail: str | None = None
    created_at: str | None = None
    sent_at: str | None = None
    fallback_of: str | None = None  # the first message of a fallback chain
    tried: list[str] | None = None  # the channels the chain tried before this one

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> MessageRecord:
        """The record of a row as `Store.message` returns it (a column it does not know is left out)."""
        return cls(**{name: row[name] for name in _MESSAGE_RECORD_FIELDS if name in row})


class DeliveryStatus(StrEnum):
    """What a channel says happened to a message it was asked to send."""

    SENT = "sent"
    RETRY = "retry"  # a temporary failure: try again later
    FAILED = "failed"  # failed for good
    ADDRESS_INVALID = "address_invalid"  # the address is known bad: do not use it again
    OPTED_OUT = "opted_out"  # the customer said no on this channel


@dataclass(frozen=True)
class Delivery:
    """A channel's answer to one send."""

    status: DeliveryStatus
    detail: str = ""
    provider_id: str | None = None
    retry_after: float | None = None  # seconds, when the provider said how long to wait
    gone: tuple[str, ...] = ()  # push endpoints the push service says no longer exist: forgotten


@dataclass
class Journey:
    """One customer's pass through one scenario; `cursor` is the path of the current step."""

    id: str
    scenario: str
    customer_id: str
    entry_key: str
    status: str  # active | completed | exited
    holdout: bool
    cursor: str | None
    version: int
    context: dict[str, Any]
    entered_at: datetime
    waiting_for: str | None = None
    ended_at: datetime | None = None


@dataclass
class Job:
    """A unit of scheduled work: advance a journey, send a message, run an action, a cron tick."""

    id: int
    kind: str  # advance | send | action | tick
    due_at: float  # unix seconds
    priority: int
    payload: dict[str, Any]
    journey_id: str | None = None
    version: int | None = None
    key: str | None = None
    attempts: int = 0


@dataclass
class JournalEntry:
    """One line of a customer's timeline: what the engine and contact plan did, and why."""

    at: datetime
    kind: str  # enter | send | defer | drop | unknown | action | exit | goal | holdout
    customer_id: str
    reason: str
    scenario: str | None = None
    journey_id: str | None = None
    step: str | None = None
    template: str | None = None
    channel: str | None = None
    message_id: str | None = None
    value: float | None = None
    variant: str | None = None


@dataclass(frozen=True)
class Sent:
    """A message that counts against caps: when it went, over which channel, of which category."""

    at: datetime
    channel: str
    category: str


_MESSAGE_RECORD_FIELDS = tuple(item.name for item in fields(MessageRecord))
