"""The report's queries: every figure an aggregate SQL query over an index, never a Python loop
over rows.

`Reports` is a `Connection` opened read-only (`Reports.open`), so that the report, from the
command line or the daemon's `/report`, never writes and never holds the write lock: in WAL
mode its reads see a snapshot while ingest goes on. The attribution rules it applies are
`boomerang.attribution`'s; the running totals per day (`report_days`, `report_entrants`, kept by
triggers on `messages` and `journeys`, migration 11's; `report_variants` and `report_plan` on
journeys' variants and the journal's plan lines, migration 12's) and the indexes it reads are
theirs, so that messages, entrants and plan effects are counted from a few rows a day, however
many there are.

Times are the store's fixed-width ISO text (`to_iso`), compared as text; an attribution window
is measured with julianday, to the millisecond.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from boomerang.attribution import (
    MESSAGE_ID_PATHS,
    ORDER_ID_PATHS,
    PROMO_REDEEMED,
    TOTAL_PATHS,
    Windows,
    json_first,
    plan_outcome_sql,
)
from boomerang.store.connection import Connection

# Half a millisecond more than the window: julianday's doubles are good to about 50 microseconds.
_EDGE = 0.0005


@dataclass(frozen=True)
class Period:
    """What a report covers: [since, until) as stored ISO text, and optionally one scenario.
    The totals kept per day are read for the days from `since`'s to `until`'s, so `since` is
    the start of a day (UTC) for the figures to agree (`boomerang.report.window` makes it so)."""

    since: str
    until: str
    scenario: str | None = None

    def params(self) -> dict[str, Any]:
        """The named parameters every query takes."""
        return {
            "since": self.since,
            "until": self.until,
            "since_day": self.since[:10],
            "until_day": self.until[:10],
            "scenario": self.scenario,
        }


def _only(column: str) -> str:
    """The condition limiting `column` to the period's scenario, if it names one."""
    return f"(:scenario IS NULL OR {column} = :scenario)"


class Reports(Connection):
    """The read-only connection the report's queries run on."""

    @classmethod
    def open(cls, path: Path | str) -> Reports:
        """Open the database at `path` for reading only (it must exist and be migrated)."""
        return cls(path, read_only=True)

    @contextlib.contextmanager
    def snapshot(self) -> Iterator[None]:
        """One read transaction: the queries inside see the database as it was at the first,
        whatever is committed meanwhile (WAL), so that a report's figures agree."""
        self.db.execute("BEGIN")
        try:
            yield
        finally:
            self.db.execute("COMMIT")

    def messages_by_step(self, period: Period) -> list[dict[str, Any]]:
        """Per scenario, step and channel: messages sent, failed, delivered, opened, clicked
        (from the running totals per day that migration 11's triggers keep)."""
        return self._select(
            f"""SELECT scenario, step, channel, sum(sent) AS sent, sum(failed) AS failed,
                    sum(delivered) AS delivered, sum(opened) AS opened, sum(clicked) AS clicked
                FROM report_days
                WHERE day >= :since_day AND day <= :until_day AND scenario != '' AND channel != ''
                    AND {_only("scenario")}
                GROUP BY scenario, step, channel""",
            period.params(),
        )

    def unsubscribes_by_step(self, period: Period) -> list[dict[str, Any]]:
        """Per scenario, step and channel: the unsubscribes that came through its messages."""
        return self._select(
            f"""SELECT json_extract(data, '$.message.scenario') AS scenario,
                    json_extract(data, '$.message.step') AS step,
                    json_extract(data, '$.message.channel') AS channel,
                    count(*) AS unsubscribed
                FROM events
                WHERE type = 'message.unsubscribed' AND at >= :since AND at < :until
                    AND {_only("json_extract(data, '$.message.scenario')")}
                GROUP BY 1, 2, 3""",
            period.params(),
        )

    def conversions_by_step(
        self, period: Period, goals: dict[str, str], windows: Windows
    ) -> list[dict[str, Any]]:
        """Per scenario, step and channel: orders attributed to its messages and their revenue.

        `goals` maps a scenario to its goal event type. A goal event is credited to the last
        message of its scenario the customer engaged with inside the window
        (`boomerang.attribution`); a promo redemption to the message that issued the code. One
        order counts once per scenario (its id, else the event's)."""
        seconds = windows.seconds()
        order_key = f"coalesce({json_first('e.data', ORDER_ID_PATHS)}, e.id)"
        total = json_first("e.data", TOTAL_PATHS)

        def since(kind: str) -> str:
            # A bound as text, two seconds wider than the window: a cheap comparison on the
            # index that lets through every message `within` may credit, and few others.
            return f"strftime('%Y-%m-%dT%H:%M:%fZ', e.at, '-' || (:{kind} + 2) || ' seconds')"

        # one bound per distinct window (open and delivery are both a day by default)
        first_of: dict[float, str] = {}
        for kind, value in seconds.items():
            first_of.setdefault(value, kind)
        bound = {kind: f"o.{first_of[value]}_since" for kind, value in seconds.items()}
        bounds = ", ".join(f"{since(kind)} AS {kind}_since" for kind in first_of.values())

        def within(column: str, kind: str) -> str:
            return f"m.{column} <= o.at AND (julianday(o.at) - julianday(m.{column})) * 86400 <= :{kind}"

        sql = f"""
            WITH goals AS (SELECT key AS scenario, value AS type FROM json_each(:goals)),
            orders AS MATERIALIZED (
                SELECT e.customer_id, e.type, e.at, {order_key} AS order_key, {total} AS total, {bounds}
                FROM events e INDEXED BY events_type_at
                WHERE e.type IN (SELECT type FROM goals) AND e.type != '{PROMO_REDEEMED}'
                    AND e.at >= :since AND e.at < :until
            ),
            promos AS MATERIALIZED (
                SELECT m.scenario, m.step, m.channel, {order_key} AS order_key, e.at, m.id AS message_id,
                    {total} AS total
                FROM events e INDEXED BY events_type_at
                JOIN messages m ON m.id = {json_first("e.data", MESSAGE_ID_PATHS)}
                WHERE e.type = '{PROMO_REDEEMED}' AND e.at >= :since AND e.at < :until
                    AND m.scenario IS NOT NULL AND {_only("m.scenario")}
            ),
            engaged AS (
                SELECT m.scenario, m.step, m.channel, o.order_key, o.total, m.id AS message_id,
                    CASE WHEN {within("clicked_at", "click")} THEN m.clicked_at
                         WHEN {within("opened_at", "open")} THEN m.opened_at
                         WHEN {within("delivered_at", "delivery")} THEN m.delivered_at
                    END AS engaged_at
                FROM orders o JOIN messages m INDEXED BY messages_customer_engaged
                    ON m.customer_id = o.customer_id AND m.created_at <= o.at
                JOIN goals g ON g.scenario = m.scenario AND g.type = o.type
                WHERE {_only("m.scenario")} AND (m.clicked_at >= {bound["click"]}
                    OR m.opened_at >= {bound["open"]} OR m.delivered_at >= {bound["delivery"]})
            ),
            candidates AS (
                SELECT scenario, step, channel, order_key, total, message_id, 0 AS rank, at AS engaged_at
                FROM promos
                UNION ALL
                SELECT scenario, step, channel, order_key, total, message_id, 1, engaged_at FROM engaged
                WHERE engaged_at IS NOT NULL
                -- the order event of a redeemed code lends the redemption its total
                UNION ALL
                SELECT p.scenario, NULL, NULL, o.order_key, o.total, NULL, 2, NULL
                FROM promos p JOIN orders o ON o.order_key = p.order_key
            ),
            picked AS (
                -- one sort: both windows are the same (the order's candidates, best first)
                SELECT scenario, step, channel, row_number() OVER per_order AS place,
                    max(CASE WHEN typeof(total) IN ('integer', 'real') THEN total END) OVER (
                        per_order ROWS BETWEEN UNBOUNDED PRECEDING AND UNBOUNDED FOLLOWING
                    ) AS total
                FROM candidates
                WINDOW per_order AS (
                    PARTITION BY scenario, order_key ORDER BY rank, engaged_at DESC, message_id DESC
                )
            )
            -- the first candidate of an order is a message's (rank 0 or 1), never rank 2's
            SELECT scenario, step, channel, count(*) AS converted, total(total) AS revenue
            FROM picked
            WHERE place = 1
            GROUP BY scenario, step, channel"""
        params = {
            **period.params(),
            "goals": json.dumps(goals),
            **{kind: value + _EDGE for kind, value in seconds.items()},
        }
        return self._select(sql, params)

    def entrants(self, period: Period) -> list[dict[str, Any]]:
        """Per scenario and group (holdout 0 or 1): journeys entered in the period (from the
        running totals per day)."""
        return self._select(
            f"""SELECT scenario, holdout, sum(entrants) AS entrants
                FROM report_entrants
                WHERE day >= :since_day AND day <= :until_day AND {_only("scenario")}
                GROUP BY scenario, holdout""",
            period.params(),
        )

    def variant_entrants(self, period: Period, scenarios: tuple[str, ...]) -> list[dict[str, Any]]:
        """Per scenario (of `scenarios`, those with a split), split step and variant: treated
        journeys entered in the period that reached the split (the variant each journey drew is
        kept in its context's `variants` object; the running totals per day of migration 12's
        triggers count them)."""
        return self._select(
            f"""SELECT scenario, split, variant, sum(entrants) AS entrants
                FROM report_variants
                WHERE day >= :since_day AND day <= :until_day
                    AND scenario IN (SELECT value FROM json_each(:splits)) AND {_only("scenario")}
                GROUP BY 1, 2, 3 HAVING sum(entrants) != 0""",
            {**period.params(), "splits": json.dumps(scenarios)},
        )

    def goals_reached(self, period: Period, scenarios: tuple[str, ...]) -> list[dict[str, Any]]:
        """The journeys entered in the period that reached their goal (the journal's `goal`
        lines, one per journey), with the revenue and its squares: per scenario and group
        (holdout 0 or 1; `split` and `variant` None), and per scenario of `scenarios` (those with
        a split), split step and variant drawn (treated journeys, `holdout` 0). One pass over
        the goal lines and their journeys serves both."""
        variants = "CASE WHEN json_valid(j.context) THEN j.context END"
        return self._select(
            f"""WITH reached AS MATERIALIZED (
                    SELECT j.scenario, j.holdout, coalesce(g.value, 0) AS value,
                        CASE WHEN j.holdout = 0 AND j.scenario IN (SELECT value FROM json_each(:splits))
                            AND json_type({variants}, '$.variants') = 'object'
                        THEN json_extract(j.context, '$.variants') END AS variants
                    FROM journal g INDEXED BY journal_kind_at JOIN journeys j ON j.id = g.journey_id
                    WHERE g.kind = 'goal' AND g.at >= :since
                        AND j.entered_at >= :since AND j.entered_at < :until AND {_only("j.scenario")}
                )
                SELECT scenario, holdout, NULL AS split, NULL AS variant, count(*) AS conversions,
                    total(value) AS revenue, total(value * value) AS revenue_squares
                FROM reached GROUP BY scenario, holdout
                UNION ALL
                SELECT r.scenario, 0, v.key, v.atom, count(*), total(r.value), total(r.value * r.value)
                FROM reached r, json_each(r.variants) v
                WHERE r.variants IS NOT NULL AND v.atom IS NOT NULL
                GROUP BY r.scenario, v.key, v.atom""",
            {**period.params(), "splits": json.dumps(scenarios)},
        )

    def plan_outcomes(self, period: Period) -> list[dict[str, Any]]:
        """Per scenario: the journal's deferred and dropped lines, named by `PLAN_OUTCOMES`
        (counted per day and reason by migration 12's triggers)."""
        return self._select(
            f"""SELECT scenario, {plan_outcome_sql()} AS outcome, sum(lines) AS count
                FROM report_plan
                WHERE day >= :since_day AND day <= :until_day AND {_only("scenario")}
                GROUP BY 1, 2 HAVING sum(lines) != 0""",
            period.params(),
        )

    def fallbacks(self, period: Period) -> list[dict[str, Any]]:
        """Per scenario: messages that went out again on another channel (a fallback)."""
        return self._select(
            f"""SELECT scenario, count(*) AS fallbacks
                FROM messages INDEXED BY messages_fallbacks
                WHERE fallback_of IS NOT NULL AND created_at >= :since AND created_at < :until
                    AND scenario IS NOT NULL AND {_only("scenario")}
                GROUP BY scenario""",
            period.params(),
        )

    def messages_by_day(self, period: Period) -> list[dict[str, Any]]:
        """Per day (UTC) and channel: messages sent."""
        return self._select(
            f"""SELECT day, channel, sum(sent) AS sent
                FROM report_days
                WHERE day >= :since_day AND day <= :until_day AND channel != '' AND {_only("scenario")}
                GROUP BY day, channel HAVING sum(sent) > 0 ORDER BY day, channel""",
            period.params(),
        )

    def scenarios_known(self) -> set[str]:
        """Scenarios with a journey in the store, whatever the period."""
        return {row["scenario"] for row in self._select("SELECT DISTINCT scenario FROM journeys")}
