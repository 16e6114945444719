"""Rows for the report's tests, written into a real store's tables as the engine writes them
(the same columns and the same fixed-width ISO times), without running scenarios to get them."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from boomerang.clock import to_iso
from boomerang.store import Store


def journey(
    store: Store,
    journey_id: str,
    scenario: str,
    customer: str,
    entered: datetime,
    *,
    holdout: bool = False,
    variants: dict[str, str] | None = None,
) -> None:
    """A journey entered at `entered` (in the control group if `holdout`), with the split
    variants it drew."""
    context = {"variants": variants} if variants else {}
    store.db.execute(
        "INSERT INTO journeys (id, scenario, customer_id, entry_key, status, holdout, context, entered_at,"
        " updated_at) VALUES (?, ?, ?, ?, 'active', ?, ?, ?, ?)",
        [
            journey_id,
            scenario,
            customer,
            journey_id,
            int(holdout),
            json.dumps(context),
            to_iso(entered),
            to_iso(entered),
        ],
    )


def message(
    store: Store,
    message_id: str,
    scenario: str,
    customer: str,
    created: datetime,
    *,
    step: str = "1",
    channel: str = "email",
    status: str = "sent",
    journey_id: str | None = None,
    **stamps: datetime | str | None,
) -> None:
    """A message of `scenario` sent at `created`; `stamps` set delivered_at, opened_at,
    clicked_at (datetimes) or other columns (text)."""
    values: dict[str, Any] = {
        "id": message_id,
        "journey_id": journey_id,
        "customer_id": customer,
        "scenario": scenario,
        "step": step,
        "template": "t",
        "category": "trigger",
        "channel": channel,
        "status": status,
        "created_at": to_iso(created),
        "sent_at": to_iso(created),
    }
    for key, value in stamps.items():
        values[key] = to_iso(value) if isinstance(value, datetime) else value
    store.insert_message(values)


def stored_event(
    store: Store, event_id: str, type_: str, customer: str, at: datetime, data: dict[str, Any]
) -> None:
    """An event as the ingest stores it."""
    store.db.execute(
        "INSERT INTO events (id, type, at, customer_id, data, source, received_at, handled)"
        " VALUES (?, ?, ?, ?, ?, 'api', ?, 1)",
        [event_id, type_, to_iso(at), customer, json.dumps(data), to_iso(at)],
    )


def order(
    store: Store, event_id: str, customer: str, at: datetime, total: float, order_id: str | None = None
) -> None:
    """An `order.placed` event of `total` (its order id `order_id`, else the event's)."""
    stored_event(
        store,
        event_id,
        "order.placed",
        customer,
        at,
        {"order": {"id": order_id or event_id, "total": total, "currency": "EUR"}},
    )


def journal(
    store: Store,
    kind: str,
    scenario: str,
    journey_id: str,
    customer: str,
    at: datetime,
    reason: str,
    *,
    value: float | None = None,
    variant: str | None = None,
    step: str | None = None,
) -> None:
    """A line of the journal, as `EngineBase._journal` writes it."""
    store.db.execute(
        "INSERT INTO journal (at, kind, customer_id, scenario, journey_id, step, reason, value, variant)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [to_iso(at), kind, customer, scenario, journey_id, step, reason, value, variant],
    )
