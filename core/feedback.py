"""Feedback rules, pure: what a feedback event about a message changes.

The one place that says what a receipt, an open, a click, a failure or an unsubscribe does to
the message and to the customer's channels: a failure because the address is bad marks the
channel unreachable, a failure because the customer opted out (an SMS "STOP") and an
unsubscribe opt them out. The store applies the `Effect` inside the transaction that records
the event (`Store.record_feedback`); the engine and the channels only report what happened.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from boomerang.model import DeliveryStatus


@dataclass(frozen=True)
class Effect:
    """What one feedback event changes."""

    status: str | None = None  # the message's new status
    only_from: tuple[str, ...] = ()  # the statuses it may change from (empty: any)
    stamp: str | None = None  # the message column that gets the event's time, the first time
    detail: str | None = None  # the message's new detail
    opt_out: tuple[str, ...] = ()  # channels (or `all`) the customer said no on
    unreachable: str | None = None  # why the message's address is known bad, if it is


def effect(event_type: str, data: dict[str, Any], channel: str | None) -> Effect:
    """The effect of a feedback event of `event_type` with `data` about a message sent over
    `channel` (None before a channel was chosen)."""
    if event_type == "message.delivered":
        # a fast receipt may beat the commit of the send itself ('sending'), and one for a
        # send a crash cut off ('unknown') settles that it arrived
        return Effect("delivered", ("sending", "sent", "unknown"), "delivered_at")
    if event_type == "message.failed":
        detail = str(data.get("detail", ""))
        reason = data.get("reason")
        if channel and reason == DeliveryStatus.ADDRESS_INVALID:
            return Effect("failed", detail=detail, unreachable=detail or "address invalid")
        if channel and reason == DeliveryStatus.OPTED_OUT:
            return Effect("failed", detail=detail, opt_out=(channel,))
        return Effect("failed", detail=detail)
    if event_type == "message.opened":
        return Effect(stamp="opened_at")
    if event_type == "message.clicked":
        return Effect(stamp="clicked_at")
    if event_type == "message.unsubscribed":
        channels = data.get("channels") or [channel]
        return Effect(opt_out=tuple(c for c in channels if c))
    return Effect()  # message.sent: the send itself already wrote the message
