"""Rows for the report's tests, written into a real store's tables as the engine writes them
(the same columns and the same fixed-width ISO times), without running scenarios to get them."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
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


def a_month(store: Store, now: datetime, scenario: str = "abandoned-cart", seed: int = 15) -> None:
    """Four weeks of one scenario: 1,000 entrants (10% held out, the rest split a/b), messages
    on three channels with receipts, opens and clicks, orders and the journal's goals, the
    plan's deferrals and drops, unsubscribes. Treated entrants convert at 12%, held-out at 5%."""
    import random
    from datetime import timedelta

    rng = random.Random(seed)
    with store.transaction():  # one commit: a thousand fsyncs would take the test seconds
        for n in range(1000):
            customer, journey_id = f"c-{n}", f"j-{n}"
            entered = now - timedelta(days=28) + timedelta(minutes=40 * n)
            holdout = n % 10 == 0
            variant = None if holdout else ("a" if n % 2 else "b")
            journey(
                store,
                journey_id,
                scenario,
                customer,
                entered,
                holdout=holdout,
                variants={"3": variant} if variant else None,
            )
            journal(store, "enter", scenario, journey_id, customer, entered, "entered on cart.updated")
            if holdout:
                journal(
                    store,
                    "drop",
                    scenario,
                    journey_id,
                    customer,
                    entered,
                    "control group (holdout): not sent",
                )
            else:
                channel = ("email", "sms", "push")[n % 3]
                sent = entered + timedelta(minutes=20)
                stamps: dict[str, Any] = {"delivered_at": sent + timedelta(minutes=1)}
                if rng.random() < 0.4:
                    stamps["opened_at"] = sent + timedelta(hours=1)
                if rng.random() < 0.2:
                    stamps["clicked_at"] = sent + timedelta(hours=2)
                message(
                    store,
                    f"m-{n}",
                    scenario,
                    customer,
                    sent,
                    step="1",
                    channel=channel,
                    status="delivered",
                    journey_id=journey_id,
                    **stamps,
                )
                if n % 7 == 0:
                    journal(
                        store,
                        "defer",
                        scenario,
                        journey_id,
                        customer,
                        sent,
                        "quiet hours: waits until 08:00 (passed over sms: quiet hours 21:00-08:00)",
                    )
                if n % 13 == 0:
                    journal(
                        store,
                        "drop",
                        scenario,
                        journey_id,
                        customer,
                        sent,
                        "cap 2 per 1d (trigger) reached: waits until 2026-03-20 00:00; dropped",
                    )
                if n % 50 == 1:
                    stored_event(
                        store,
                        f"u-{n}",
                        "message.unsubscribed",
                        customer,
                        sent + timedelta(hours=3),
                        {
                            "message": {
                                "id": f"m-{n}",
                                "channel": channel,
                                "template": "t",
                                "scenario": scenario,
                                "step": "1",
                            }
                        },
                    )
            if rng.random() < (0.05 if holdout else 0.12):
                at = entered + timedelta(hours=3)
                total = round(rng.uniform(20, 150), 2)
                order(store, f"o-{n}", customer, at, total)
                journal(
                    store,
                    "goal",
                    scenario,
                    journey_id,
                    customer,
                    at,
                    f"order.placed ({'holdout' if holdout else 'treated'})",
                    value=total,
                    variant=variant,
                )


def with_a_split(project: Path) -> None:
    """The `init` project's abandoned-cart with its fourth step a split (`a`: the offer, `b`:
    the second reminder) instead of an `if:`, as `a_month`'s journeys drew it."""
    scenario = project / "scenarios" / "abandoned_cart.yaml"
    text = scenario.read_text()
    start = text.index("  - if: cart.total >= 50")
    scenario.write_text(
        text[:start]
        + "  - split:\n"
        + "      a: {weight: 50%, steps: [{send: cart_offer, promo: {percent: 10, expires: 48h}}]}\n"
        + "      b: {weight: 50%, steps: [{send: cart_reminder_2, channels: [email]}]}\n"
    )
