"""Attribution as the report's SQL applies it, on a real store (a SQLite file, a PostgreSQL
schema): the windows and their edges, the last engaged message, one order counted once per
scenario, promo redemptions."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from report_data import journal, journey, message, order, stored_event

from boomerang.attribution import Windows
from boomerang.clock import to_iso
from boomerang.store import Store
from boomerang.store.report import Period, Reports
from conftest import t

T = t("2026-03-10 12:00")
GOALS = {"cart": "order.placed", "browse": "order.placed"}


@pytest.fixture
def store(database: Path | str) -> Iterator[Store]:
    store = Store(database)
    yield store
    store.close()


@pytest.fixture
def reports(store: Store, database: Path | str) -> Iterator[Reports]:
    """The report's read-only connection beside the store, which made the database."""
    reports = Reports.open(database)
    yield reports
    reports.close()


DEFAULT = Windows()


def conversions(reports: Reports, windows: Windows = DEFAULT, scenario: str | None = None) -> dict:
    """{(scenario, step, channel): (converted, revenue)} as the report reads them."""
    period = Period(to_iso(T - timedelta(days=60)), to_iso(T + timedelta(days=60)), scenario)
    rows = reports.conversions_by_step(period, GOALS, windows)
    return {(r["scenario"], r["step"], r["channel"]): (r["converted"], r["revenue"]) for r in rows}


@pytest.mark.parametrize(
    ("stamp", "window"),
    [
        ("clicked_at", timedelta(days=5)),
        ("opened_at", timedelta(days=1)),
        ("delivered_at", timedelta(days=1)),
    ],
)
def test_an_order_at_the_window_edge_counts_and_a_second_later_does_not(
    store: Store, reports: Reports, stamp: str, window: timedelta
) -> None:
    message(store, "m-1", "cart", "c-1", T - timedelta(days=10), **{stamp: T})
    message(store, "m-2", "cart", "c-2", T - timedelta(days=10), **{stamp: T})
    order(store, "o-1", "c-1", T + window, 50)
    order(store, "o-2", "c-2", T + window + timedelta(seconds=1), 70)
    assert conversions(reports) == {("cart", "1", "email"): (1, 50.0)}


def test_an_engagement_after_the_order_earns_nothing(store: Store, reports: Reports) -> None:
    message(store, "m-1", "cart", "c-1", T - timedelta(days=1), clicked_at=T + timedelta(minutes=1))
    order(store, "o-1", "c-1", T, 50)
    assert conversions(reports) == {}


def test_the_windows_come_from_the_settings(store: Store, reports: Reports) -> None:
    message(store, "m-1", "cart", "c-1", T - timedelta(days=3), clicked_at=T - timedelta(days=2))
    order(store, "o-1", "c-1", T, 50)
    assert conversions(reports) == {("cart", "1", "email"): (1, 50.0)}
    assert conversions(reports, Windows(click=timedelta(days=1))) == {}


def test_each_kind_of_engagement_has_its_own_window(store: Store, reports: Reports) -> None:
    # the windows differ each from the other: each bound the SQL narrows messages by is its own
    windows = Windows(click=timedelta(days=3), open=timedelta(hours=36), delivery=timedelta(hours=1))
    message(store, "m-1", "cart", "c-1", T - timedelta(days=30), opened_at=T - timedelta(hours=35))
    message(store, "m-2", "cart", "c-2", T - timedelta(days=30), delivered_at=T - timedelta(hours=2))
    message(store, "m-3", "browse", "c-3", T - timedelta(days=30), clicked_at=T - timedelta(days=2))
    message(store, "m-4", "browse", "c-4", T - timedelta(days=30), opened_at=T - timedelta(hours=37))
    for customer in ("c-1", "c-2", "c-3", "c-4"):
        order(store, f"o-{customer}", customer, T, 50)
    assert conversions(reports, windows) == {
        ("cart", "1", "email"): (1, 50.0),
        ("browse", "1", "email"): (1, 50.0),
    }


def test_the_last_engaged_message_of_the_scenario_earns_the_order(store: Store, reports: Reports) -> None:
    message(store, "m-1", "cart", "c-1", T - timedelta(days=4), step="1", clicked_at=T - timedelta(days=3))
    message(
        store,
        "m-2",
        "cart",
        "c-1",
        T - timedelta(hours=5),
        step="3",
        channel="sms",
        delivered_at=T - timedelta(hours=4),
    )
    # sent later but never engaged with: not credited
    message(store, "m-3", "cart", "c-1", T - timedelta(hours=1), step="5")
    # another scenario's message earns that scenario's conversion, not this one's
    message(store, "m-4", "browse", "c-1", T - timedelta(hours=2), opened_at=T - timedelta(hours=1))
    # another customer's message earns nothing
    message(store, "m-5", "cart", "c-2", T - timedelta(hours=2), clicked_at=T - timedelta(hours=1))
    order(store, "o-1", "c-1", T, 80)
    assert conversions(reports) == {("cart", "3", "sms"): (1, 80.0), ("browse", "1", "email"): (1, 80.0)}
    assert conversions(reports, scenario="browse") == {("browse", "1", "email"): (1, 80.0)}


def test_one_order_counts_once_within_a_scenario(store: Store, reports: Reports) -> None:
    message(store, "m-1", "cart", "c-1", T - timedelta(days=2), clicked_at=T - timedelta(days=1))
    message(store, "m-2", "cart", "c-1", T - timedelta(hours=3), opened_at=T - timedelta(hours=2))
    # the same order reported twice (a platform's retry under a new event id)
    order(store, "o-1", "c-1", T, 120, order_id="1001")
    order(store, "o-1-again", "c-1", T + timedelta(minutes=5), 120, order_id="1001")
    order(store, "o-2", "c-1", T + timedelta(hours=1), 30, order_id="1002")
    assert conversions(reports) == {("cart", "1", "email"): (2, 150.0)}


def test_a_promo_redemption_always_counts_for_the_message_that_issued_the_code(
    store: Store, reports: Reports
) -> None:
    # issued 20 days ago, never opened: outside every window
    message(store, "m-promo", "cart", "c-1", T - timedelta(days=20), step="4")
    # a later click of the same scenario would otherwise take the order
    message(
        store, "m-click", "cart", "c-1", T - timedelta(days=1), step="1", clicked_at=T - timedelta(hours=3)
    )
    order(store, "o-1", "c-1", T, 99.5, order_id="2001")
    stored_event(
        store,
        "p-1",
        "promo.redeemed",
        "c-1",
        T,
        {"code": "CART-7QX", "order_id": "2001", "message_id": "m-promo", "scenario": "cart", "step": "4"},
    )
    # a redemption whose order never arrived as an event still counts, with the order's total if it names one
    message(store, "m-promo-2", "cart", "c-2", T - timedelta(days=30), step="4")
    stored_event(
        store,
        "p-2",
        "promo.redeemed",
        "c-2",
        T,
        {"code": "CART-8AB", "order": {"id": "2002", "total": 10}, "message": {"id": "m-promo-2"}},
    )
    assert conversions(reports) == {("cart", "4", "email"): (2, 109.5)}


def test_a_goal_event_without_an_order_counts_with_no_revenue(store: Store, reports: Reports) -> None:
    message(store, "m-1", "cart", "c-1", T - timedelta(days=1), clicked_at=T - timedelta(hours=1))
    stored_event(store, "e-1", "order.placed", "c-1", T, {"note": "no order object"})
    assert conversions(reports) == {("cart", "1", "email"): (1, 0.0)}


def test_the_plan_outcomes_are_named_from_the_journal(store: Store, reports: Reports) -> None:
    lines = [
        ("defer", "quiet hours: waits until 2026-03-11 08:00 (passed over sms: quiet hours 21:00-08:00)"),
        ("defer", "cap 2 per 1d (trigger, promo) reached: waits until 2026-03-11 00:00"),
        ("defer", "min_gap 4h: waits until 2026-03-10 16:00"),
        ("defer", "sms: retry in 30s: 503"),
        (
            "drop",
            "cap 2 per 1d (trigger) reached: waits until 2026-03-20 00:00; dropped: that is past its expiry",
        ),
        ("drop", "quiet hours: waits until 08:00; dropped: that is past its expiry at 2026-03-10T20:00:00Z"),
        ("drop", "control group (holdout): not sent"),
        ("drop", "no reachable channel"),
        ("drop", "email: failed: 550 no such user"),
    ]
    journey(store, "j-1", "cart", "c-1", T)
    for kind, reason in lines:
        journal(store, kind, "cart", "j-1", "c-1", T, reason)
    found = reports.plan_outcomes(Period(to_iso(T - timedelta(days=1)), to_iso(T + timedelta(days=1))))
    assert {row["outcome"]: row["count"] for row in found} == {
        "deferred by quiet hours": 1,
        "deferred by a cap": 1,
        "deferred by min_gap": 1,
        "retried by the channel": 1,
        "dropped by a cap": 1,
        "dropped by quiet hours": 1,
        "control group (holdout)": 1,
        "no reachable channel": 1,
        "failed at the channel": 1,
    }
