"""Attribution rules, pure: which message of a scenario earns a goal, and what the plan's
journal lines mean for the report.

A goal event of a scenario (its `goal: {event: ...}`, usually `order.placed`) is attributed to
the last message of that scenario the customer engaged with inside the attribution window
before the event: up to `click` after a click, `open` after an open, `delivery` after a
delivery (defaults 5 days, 1 day, 1 day; `report: {attribution: {...}}` in the config). A
`promo.redeemed` event whose data names the message that issued the code always counts, window
or not. One order (its `order.id`, else the event's own id) counts once per scenario; its value
is the order's `total`, in the shop's currency. The store's SQL applies these rules
(`boomerang.store.report`); this module holds what they are made of.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

DEFAULT_WINDOWS = {"click": timedelta(days=5), "open": timedelta(days=1), "delivery": timedelta(days=1)}
# Which message column each kind of engagement is stamped in, strongest first: a message that
# was clicked is credited from its click, else its open, else its delivery.
ENGAGEMENT_COLUMNS = (("click", "clicked_at"), ("open", "opened_at"), ("delivery", "delivered_at"))
PROMO_REDEEMED = "promo.redeemed"
# JSON paths where a promo redemption or an order names its order, its message and its total:
# the first one present wins (`{order: {id: ..}}` as order events carry it, or flat fields).
ORDER_ID_PATHS = ("$.order.id", "$.order_id", "$.order")
MESSAGE_ID_PATHS = ("$.message.id", "$.message_id", "$.message")
TOTAL_PATHS = ("$.order.total", "$.total")


@dataclass(frozen=True)
class Windows:
    """How long after each kind of engagement a goal is still the message's doing."""

    click: timedelta = DEFAULT_WINDOWS["click"]
    open: timedelta = DEFAULT_WINDOWS["open"]
    delivery: timedelta = DEFAULT_WINDOWS["delivery"]

    def seconds(self) -> dict[str, float]:
        """Each window in seconds, keyed click, open, delivery (the SQL's parameters)."""
        return {kind: getattr(self, kind).total_seconds() for kind, _column in ENGAGEMENT_COLUMNS}

    def credits(self, engaged: dict[str, timedelta | None]) -> bool:
        """Whether a message engaged `engaged[kind]` before a goal (None: not engaged that
        way) earns it: any engagement no older than its window, edges included."""
        return any(
            ago is not None and timedelta(0) <= ago <= getattr(self, kind) for kind, ago in engaged.items()
        )


# The contact plan's effects, read from the journal: (label, journal kind, SQL LIKE patterns on
# the line's reason). The reasons are the ones `ContactPlan.decide` and `Dispatch` write; the
# first row that matches names a line, and a line no row matches is `other`.
PLAN_OUTCOMES: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("retried by the channel", "defer", ("%: retry in %",)),
    ("deferred by quiet hours", "defer", ("quiet hours%",)),
    ("deferred by a cap", "defer", ("%cap % per % reached%", "every reachable channel is capped%")),
    ("deferred by min_gap", "defer", ("min_gap %",)),
    ("deferred", "defer", ("%",)),
    ("control group (holdout)", "drop", ("control group%",)),
    ("dropped by quiet hours", "drop", ("quiet hours%",)),
    ("dropped by a cap", "drop", ("%cap % per % reached%", "every reachable channel is capped%")),
    ("dropped by min_gap", "drop", ("min_gap %",)),
    ("no reachable channel", "drop", ("no reachable channel%",)),
    ("expired", "drop", ("expired at %",)),
    ("template missing", "drop", ("template % does not exist",)),
    (
        "failed at the channel",
        "drop",
        ("%: failed: %", "%: retry: %", "%: address_invalid: %", "%: opted_out: %"),
    ),
    ("dropped, other", "drop", ("%",)),
)


def plan_outcome_sql(kind_column: str = "kind", reason_column: str = "reason") -> str:
    """A SQL CASE expression naming a journal line's plan outcome by `PLAN_OUTCOMES`."""
    arms = []
    for label, kind, patterns in PLAN_OUTCOMES:
        likes = " OR ".join(f"{reason_column} LIKE '{pattern}'" for pattern in patterns)
        arms.append(f"WHEN {kind_column} = '{kind}' AND ({likes}) THEN '{label}'")
    return "CASE " + " ".join(arms) + " ELSE 'other' END"


def json_first(column: str, paths: tuple[str, ...]) -> str:
    """A SQL expression: the first of `paths` in the JSON `column` that holds a scalar."""
    arms = " ".join(
        f"WHEN json_type({column}, '{path}') IN ('text', 'integer', 'real')"
        f" THEN json_extract({column}, '{path}')"
        for path in paths
    )
    return f"(CASE {arms} END)"
