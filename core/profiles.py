"""Profile rules, pure: what an event changes on a stored profile, and how two profiles merge.

No SQL here: the store (core/store/customers.py) reads the stored row, asks these functions for
the columns to write, and writes them. Rows are the stored columns, JSON still encoded.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Mapping
from typing import Any

from boomerang.clock import to_iso
from boomerang.ingest import EventError, normalise_email, normalise_phone
from boomerang.model import MAX_PUSH_SUBSCRIPTIONS, PROFILE_FIELDS, Event, ProfileUpdate

# Event types that mean the customer is on the site right now.
SITE_ACTIVITY = {"product.viewed", "category.viewed", "cart.updated", "checkout.started"}

# The JSON profile columns that hold addresses: the channel-keyed map, push subscriptions.
ADDRESS_JSON = ("addresses", "push_subscriptions")

# The profile fields a channel's address may be made from (`Channel.address_fields`).
ADDRESS_FIELDS = (*PROFILE_FIELDS, "push_subscriptions")

# The profile field of each identity kind but `id`.
IDENTITY_FIELDS = {"email": "email", "phone": "phone", "telegram": "telegram_chat_id"}


def merged(survivor: dict[str, Any], other: dict[str, Any]) -> dict[str, Any]:
    """The columns of `survivor` after `other` is folded into it: the later-updated profile's
    values win, lists join, counts add up."""
    # What was said last is true now: an opt-out given to the other profile yesterday
    # must not be undone by an older consent on the survivor.
    a, b = (survivor, other) if survivor["updated_at"] >= other["updated_at"] else (other, survivor)
    updates: dict[str, Any] = {name: a[name] if a[name] is not None else b[name] for name in PROFILE_FIELDS}
    updates["consents"] = json.dumps({**json.loads(b["consents"]), **json.loads(a["consents"])})
    updates["attributes"] = json.dumps(
        {**json.loads(b["attributes"]), **json.loads(a["attributes"])}, ensure_ascii=False
    )
    updates["push_subscriptions"] = json.dumps(
        join_subscriptions(json.loads(b["push_subscriptions"]), json.loads(a["push_subscriptions"]))
    )
    updates["addresses"] = json.dumps(
        {**json.loads(b["addresses"]), **json.loads(a["addresses"])}, ensure_ascii=False
    )
    for key in ("opt_outs", "unreachable"):  # what either profile learnt stays true
        updates[key] = json.dumps({**json.loads(b[key]), **json.loads(a[key])})
    updates["orders_count"] = a["orders_count"] + b["orders_count"]
    updates["revenue"] = a["revenue"] + b["revenue"]
    updates["last_order_at"] = max(filter(None, [a["last_order_at"], b["last_order_at"]]), default=None)
    updates["last_seen_at"] = max(filter(None, [a["last_seen_at"], b["last_seen_at"]]), default=None)
    updates["created_at"] = min(a["created_at"], b["created_at"])
    updates["updated_at"] = a["updated_at"]
    return updates


def updated(
    row: dict[str, Any],
    event: Event,
    now: str,
    refused: set[str],
    address_fields: Mapping[str, tuple[str, ...]],
) -> dict[str, Any]:
    """The columns an event changes on a stored profile, but for the `refused` fields; an older
    event only fills gaps. `address_fields` are the profile fields of each channel's address
    (see `renewed_channels`).

    `updated_at` is the time of the latest event that spoke about the profile, so events
    that arrive out of order cannot overwrite newer values with older ones. An event dated
    in the future counts as of its arrival (`now`), and so do stamps stored beyond `now`
    before that rule: one wrong clock must not make every later event look older. A
    consent withdrawn applies whatever the order.
    """
    profile = event.profile
    at = as_of(event, now)
    updated_at = min(row["updated_at"], now)
    newer = at >= updated_at
    updates: dict[str, Any] = {"updated_at": max(at, updated_at)}
    for name in PROFILE_FIELDS:
        value = getattr(profile, name)
        if value is not None and name not in refused and (newer or row[name] is None):
            updates[name] = value

    def joined(stored: str, given: dict) -> dict:
        old = json.loads(stored)
        return {**old, **given} if newer else {**given, **old}

    if profile.consents:
        # A withdrawal applies whatever the order of `at`: an older "no" is still a no.
        withdrawn = {channel: False for channel, given in profile.consents.items() if not given}
        updates["consents"] = json.dumps({**joined(row["consents"], profile.consents), **withdrawn})
    if profile.attributes:
        updates["attributes"] = json.dumps(joined(row["attributes"], profile.attributes), ensure_ascii=False)
    if profile.addresses:
        updates["addresses"] = json.dumps(joined(row["addresses"], profile.addresses), ensure_ascii=False)
    if profile.push_subscriptions:
        updates["push_subscriptions"] = json.dumps(
            join_subscriptions(json.loads(row["push_subscriptions"]), profile.push_subscriptions)
        )
    # Most profiles have no channel known bad and no opt-out: then nothing is to be lifted.
    if row["unreachable"] != "{}":
        renewed = renewed_channels(row, event, refused, address_fields)
        unreachable = json.loads(row["unreachable"])
        if any(renewed.get(channel) for channel in unreachable):
            updates["unreachable"] = json.dumps({k: v for k, v in unreachable.items() if not renewed.get(k)})
    subscribed = subscribed_channels(event)
    if subscribed and row["opt_outs"] != "{}":
        opt_outs = json.loads(row["opt_outs"])
        if any(channel in opt_outs for channel in subscribed):
            updates["opt_outs"] = json.dumps({k: v for k, v in opt_outs.items() if k not in subscribed})
    if event.type == "order.placed":
        order = event.data.get("order") if isinstance(event.data.get("order"), dict) else {}
        total = order.get("total", 0)
        updates["orders_count"] = row["orders_count"] + 1
        updates["revenue"] = row["revenue"] + (total if isinstance(total, int | float) else 0)
        updates["last_order_at"] = max(filter(None, [not_after(row["last_order_at"], now), at]))
    if event.type in SITE_ACTIVITY:
        updates["last_seen_at"] = max(filter(None, [not_after(row["last_seen_at"], now), at]))
    return updates


def renewed_channels(
    row: dict[str, Any], event: Event, refused: set[str], address_fields: Mapping[str, tuple[str, ...]]
) -> dict[str, bool]:
    """The address-renewal table: per channel, whether the event gives it a new address (or the
    customer's own "yes"), which undoes "known bad" for it: the old address was the bad one.

    `address_fields` maps each channel to the profile fields its address is made from, in order
    of preference (`Channel.address_fields`, some of ADDRESS_FIELDS: the plugin manager refuses
    others). A channel with none uses its entry in the customer's address map.
    """
    profile = event.profile
    stored_addresses = json.loads(row["addresses"])
    renewed = {
        name: True
        for name, value in profile.addresses.items()
        if not address_fields.get(name) and stored_addresses.get(name) != value
    }
    for name, fields in address_fields.items():
        if fields:
            renewed[name] = new_address(row, profile, fields, refused)
    renewed.update(dict.fromkeys(subscribed_channels(event), True))
    return renewed


def new_address(
    row: dict[str, Any], profile: ProfileUpdate, fields: tuple[str, ...], refused: set[str]
) -> bool:
    """Whether the event brings a new address made from `fields`: the first of them it gives a
    value (but for the `refused` ones, which are not written) holds a value none of them holds now.

    With `fields` ("whatsapp", "phone"), a new phone is not news when it is the stored WhatsApp
    number, nor a new WhatsApp number when it is the stored phone: the address stays the same.
    A refused phone is not written, so it renews neither SMS nor WhatsApp (the table of built-in
    channels this replaced let it renew WhatsApp).
    """
    given = next((getattr(profile, f) for f in fields if f not in refused and getattr(profile, f)), None)
    if isinstance(given, list):
        # Push subscriptions: a browser hands one over only when the person subscribes (again),
        # their own fresh "yes", so it renews even when it is a subscription already stored.
        return True
    return given is not None and given not in [row[f] for f in fields]


def subscribed_channels(event: Event) -> list[str]:
    """The channels of the event's `subscribed`: the customer's own explicit "yes" (pressing
    Start on a bot, allowing push), which lifts an earlier opt-out and "known bad" for them."""
    subscribed = event.data.get("subscribed")
    return [c for c in subscribed if isinstance(c, str)] if isinstance(subscribed, list) else []


def join_subscriptions(first: list[dict], second: list[dict]) -> list[dict]:
    """Push subscriptions of both lists, one per endpoint, the later one winning; only the
    latest MAX_PUSH_SUBSCRIPTIONS are kept, so every send knocks on a bounded number of doors."""
    by_endpoint: dict[Any, dict] = {}
    for sub in [*first, *second]:
        by_endpoint.pop(sub.get("endpoint"), None)  # subscribed again: the newest now
        by_endpoint[sub.get("endpoint")] = sub
    return list(by_endpoint.values())[-MAX_PUSH_SUBSCRIPTIONS:]


def as_of(event: Event, received_at: str) -> str:
    """When an event counts for ordering: its `at`, or its arrival if `at` lies in the future."""
    return min(to_iso(event.at), received_at)


def not_after(stamp: str | None, now: str) -> str | None:
    """A stored stamp, unless it lies beyond `now` (written from a future-dated event)."""
    return stamp if stamp is not None and stamp <= now else None


def identity_candidates(identity: str) -> list[str]:
    """The stored identity values a person's lookup may mean: as typed, as an email, as a phone."""
    candidates = [identity.strip(), identity.strip()]
    with contextlib.suppress(EventError):
        candidates[1] = normalise_email(identity.strip(), "email")
    with contextlib.suppress(EventError):
        candidates.append(normalise_phone(identity, "phone"))
    return [*candidates, *candidates[:1]][:3]
