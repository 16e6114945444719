"""The built-in condition functions of the expression language.

`days_since(ts)`, `in_segment(name)`, `bought_category(name)`, `viewed_products(since)`,
`is_on_site()`, `birthday_this_month()`. As any condition plugin may, they read the plain data
of the expression's context (`customer`, `now`) through Jinja's `pass_context`, and what the
context does not hold — the customer's history, the segments — from the evaluation's
`scope()`, which templates cannot reach. What they return is plain data.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from jinja2 import pass_context
from jinja2.runtime import Context

from boomerang import hookimpl
from boomerang.plugin_api import History, days_since_term, parse_duration, parse_time, scope, translated_as

ON_SITE_WITHIN = timedelta(minutes=5)


def _moment(value: Any) -> datetime | None:
    if isinstance(value, datetime):
        return value
    if isinstance(value, str) and value:
        try:
            return parse_time(value if "T" in value else f"{value}T00:00:00+00:00")
        except ValueError:
            return None
    return None


@translated_as(days_since_term)
@pass_context
def days_since(context: Context, moment: Any) -> int | None:
    """Whole days from `moment` (a timestamp or ISO text) to now; None if there is no moment."""
    then = _moment(moment)
    if then is None:
        return None
    return (context["now"] - then).days


@pass_context
def in_segment(context: Context, name: str) -> bool:
    """Whether the customer matches the segment `name` defined under `segments:` in the config."""
    segment = scope().segments.get(name)
    if segment is None:
        raise LookupError(f"no segment named '{name}' in the config")
    return segment.test(context.get_all())


def _history() -> History:
    history = scope().history
    if history is None:
        raise LookupError("the customer's history is not available here")
    return history


def bought_category(name: str) -> bool:
    """Whether any order of the customer had an item of category `name`."""
    return name in _history().categories_bought()


def viewed_products(since: str = "7d") -> list[dict[str, Any]]:
    """Products the customer viewed within `since` (e.g. `1d`), latest first."""
    return _history().viewed_products(parse_duration(since))


@pass_context
def is_on_site(context: Context) -> bool:
    """Whether the customer showed site activity in the last five minutes."""
    seen = context["customer"].get("last_seen_at")
    return seen is not None and context["now"] - seen <= ON_SITE_WITHIN


@pass_context
def birthday_this_month(context: Context) -> bool:
    """Whether the customer's birthday falls in the current month, in their own timezone."""
    customer = context["customer"]
    birthday = customer.get("birthday")
    if not birthday:
        return False
    try:
        zone = ZoneInfo(customer.get("timezone") or "UTC")
    except (ZoneInfoNotFoundError, ValueError):
        zone = ZoneInfo("UTC")
    return int(birthday[-5:-3]) == context["now"].astimezone(zone).month


@hookimpl
def register_conditions() -> dict[str, Any]:
    """The built-in functions, by the names expressions use."""
    return {
        "days_since": days_since,
        "in_segment": in_segment,
        "bought_category": bought_category,
        "viewed_products": viewed_products,
        "is_on_site": is_on_site,
        "birthday_this_month": birthday_this_month,
    }
