"""The names an expression or a template sees: plain data only, never an object.

A plain function of a customer, a journey and an event, so `preview` builds a context the
way a send does without building an engine.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

from boomerang.expressions import EXPRESSION_SECONDS, Budget, Expression, Scope
from boomerang.history import History
from boomerang.model import Customer, Journey
from boomerang.recommendations import Recommend

CUSTOMER_FIELDS = tuple(field.name for field in dataclasses.fields(Customer))
# A key of an event's data with one of these names does not shadow the name itself.
RESERVED_NAMES = ("customer", "event", "journey", "now", "waited", "data", "history", "segments", "promo")


def context(customer: Customer, journey: Journey | None, now: datetime, event: dict | None = None) -> dict:
    """The names an expression or template sees for `customer` in `journey` (or none) at `now`.

    `event` defaults to the event the journey entered on.
    """
    journey_context = journey.context if journey else {}
    event = event if event is not None else journey_context.get("event") or {}
    data = event.get("data") or {}
    names: dict[str, Any] = {key: value for key, value in data.items() if key not in RESERVED_NAMES}
    names.update(
        data=data,
        event=event,
        customer=customer_data(customer),
        journey=journey_view(journey),
        now=now,
        waited=journey_context.get("waited") or {},
    )
    return names


def customer_data(customer: Customer) -> dict[str, Any]:
    """The customer as plain data: what `dataclasses.asdict` gives, copying only what could change.

    `asdict` deep-copies every value, strings and datetimes included; only the JSON values
    (dicts and lists) can be changed, so only they are copied. An audience of a million
    customers builds a million of these.
    """
    attributes = vars(customer)
    data = {name: attributes[name] for name in CUSTOMER_FIELDS}
    for name, value in data.items():
        if isinstance(value, dict | list):
            data[name] = _copied(value)
    return data


def _copied(value: Any) -> Any:
    """A copy of a JSON value as `copy.deepcopy` makes it, several times faster: plain dicts and
    lists are rebuilt, text, numbers and times are shared (they cannot change), anything else
    is deep-copied."""
    kind = type(value)
    if kind is dict:
        return {key: _copied(item) for key, item in value.items()}
    if kind is list:
        return [_copied(item) for item in value]
    if kind in _UNCHANGING:
        return value
    return copy.deepcopy(value)


_UNCHANGING = frozenset({str, int, float, bool, type(None), datetime})


def journey_view(journey: Journey | None) -> dict[str, Any]:
    """The journey as templates see it: id, scenario, entry, holdout and A/B variants."""
    if journey is None:
        return {}
    variants = journey.context.get("variants") or {}
    return {
        "id": journey.id,
        "scenario": journey.scenario,
        "entered_at": journey.entered_at,
        "holdout": journey.holdout,
        "variants": variants,
        "variant": list(variants.values())[-1] if variants else None,
    }


def store_scope(
    events_of_types: Callable[..., list[dict[str, Any]]],
    customer_id: str,
    now: datetime,
    segments: Mapping[str, Expression],
    seconds: float = EXPRESSION_SECONDS,
    recommend: Recommend | None = None,
) -> Scope:
    """An evaluation on the store's thread: the customer's history is read from the store directly.

    `events_of_types` is the store's method of that name, called on the thread that owns it;
    `recommend` answers `recommendations()` (`recommendations.read_on_store`), if it may be asked.
    """
    history = History(functools.partial(events_of_types, customer_id), now)
    return Scope(Budget(seconds), history, segments, recommend=recommend)
