"""`boomerang report`: what each scenario earned, gathered into plain data and written as a
terminal table, JSON or CSV (the HTML page is `boomerang.report_html`).

`gather` asks the store's aggregate queries (`boomerang.store.report.Reports`) and puts their
few rows together: per scenario, step and channel the messages and what came of them; the
funnel; the contact plan's effects; the holdout and split comparisons
(`boomerang.statistics`). Only aggregates pass through Python, never a row per message.
"""

from __future__ import annotations

import csv
import io
import json
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from boomerang.clock import parse_duration, parse_time, to_iso
from boomerang.statistics import Comparison, Group, compare
from boomerang.store.report import Period, Reports

STEP_COLUMNS = (
    "sent",
    "failed",
    "delivered",
    "opened",
    "clicked",
    "unsubscribed",
    "converted",
    "revenue",
    "cost",
    "revenue_per_message",
)
FUNNEL = ("entered", "sent", "delivered", "opened", "clicked", "converted")
DEFAULT_SINCE = "30d"
TOP_SUPPRESSED = 10


@dataclass(frozen=True)
class Settings:
    """What the report needs of the project: each scenario's goal event (None: no goal), the
    channels' costs per message, the attribution windows, the shop's currency, and which
    scenarios have a `split:` (only their journeys are read for variants)."""

    goals: dict[str, str | None]
    costs: dict[str, float]
    windows: Any  # boomerang.attribution.Windows
    currency: str | None = None
    splits: tuple[str, ...] = ()

    @classmethod
    def of(cls, project: Any) -> Settings:
        """The settings of a loaded `Project`."""
        plan_channels = project.config.contact_plan.get("channels") or {}
        return cls(
            goals={s.id: (s.goal.event if s.goal else None) for s in project.scenarios},
            costs={
                str(name): float((value or {}).get("cost", 0) or 0) for name, value in plan_channels.items()
            },
            windows=project.config.attribution,
            currency=project.config.currency,
            splits=tuple(
                s.id for s in project.scenarios if any(step.kind == "split" for step in s.index.values())
            ),
        )


def period_since(text: str, now: datetime) -> datetime:
    """`--since`: a duration back from now (`30d`, `12h`) or a moment (`2026-11-01`, ISO)."""
    try:
        return now - parse_duration(text)
    except (ValueError, OverflowError):
        pass
    try:
        return parse_time(text if "T" in text else f"{text}T00:00:00Z")
    except ValueError:
        raise ValueError(
            f"--since '{text}' is neither a duration (30d, 12h, 2w) nor a date (2026-11-01)"
        ) from None


def gather(
    reports: Reports, settings: Settings, since: datetime, until: datetime, scenario: str | None = None
) -> dict[str, Any]:
    """The whole report as plain data (what --json prints and the other formats show)."""
    with reports.snapshot():
        return _gather(reports, settings, since, until, scenario)


def _gather(
    reports: Reports, settings: Settings, since: datetime, until: datetime, scenario: str | None
) -> dict[str, Any]:
    period = Period(to_iso(since), to_iso(until), scenario)
    goals = {sid: goal for sid, goal in settings.goals.items() if goal}
    steps: dict[tuple[str, str, str], dict[str, float]] = defaultdict(lambda: dict.fromkeys(STEP_COLUMNS, 0))
    for rows, columns in (
        (reports.messages_by_step(period), ("sent", "failed", "delivered", "opened", "clicked")),
        (reports.unsubscribes_by_step(period), ("unsubscribed",)),
        (reports.conversions_by_step(period, goals, settings.windows), ("converted", "revenue")),
    ):
        for row in rows:
            if row["scenario"] is None:
                continue
            key = (row["scenario"], row["step"] or "", row["channel"] or "")
            for column in columns:
                steps[key][column] += row[column] or 0
    entrants: dict[str, dict[int, int]] = defaultdict(dict)
    for row in reports.entrants(period):
        entrants[row["scenario"]][row["holdout"]] = row["entrants"]
    goals_by_group: dict[str, dict[int, dict[str, Any]]] = defaultdict(dict)
    goals_by_variant: dict[tuple[str, str, Any], dict[str, Any]] = {}
    for row in reports.goals_reached(period, settings.splits):
        if row["split"] is None:
            goals_by_group[row["scenario"]][row["holdout"]] = row
        else:
            goals_by_variant[(row["scenario"], row["split"], row["variant"])] = row
    plan: dict[str, dict[str, int]] = defaultdict(dict)
    suppressed: dict[str, int] = defaultdict(int)
    for row in reports.plan_outcomes(period):
        plan[row["scenario"]][row["outcome"]] = row["count"]
        # the control group's drops are the design, not a suppression
        if not row["outcome"].startswith(("deferred", "retried", "control group")):
            suppressed[row["outcome"]] += row["count"]
    for row in reports.fallbacks(period):
        plan[row["scenario"]]["fallbacks"] = row["fallbacks"]
    variants = _variants(reports, period, settings.splits, goals_by_variant)

    known = [sid for sid in settings.goals if scenario in (None, sid)]
    found = {key[0] for key in steps} | set(entrants) | set(plan)
    scenarios = []
    for sid in known + sorted(found - set(known)):
        rows = [
            _step_row(step, channel, values, settings.costs)
            for (name, step, channel), values in sorted(steps.items())
            if name == sid
        ]
        total = _step_row(
            "",
            "",
            {c: sum(r[c] for r in rows) for c in STEP_COLUMNS},
            settings.costs,
            cost=sum(r["cost"] for r in rows),
        )
        groups = entrants.get(sid, {})
        treated = Group(
            groups.get(0, 0),
            int(goals_by_group[sid].get(0, {}).get("conversions", 0)),
            float(goals_by_group[sid].get(0, {}).get("revenue", 0.0)),
            float(goals_by_group[sid].get(0, {}).get("revenue_squares", 0.0)),
        )
        control = Group(
            groups.get(1, 0),
            int(goals_by_group[sid].get(1, {}).get("conversions", 0)),
            float(goals_by_group[sid].get(1, {}).get("revenue", 0.0)),
            float(goals_by_group[sid].get(1, {}).get("revenue_squares", 0.0)),
        )
        funnel = {"entered": treated.entrants, **{stage: total[stage] for stage in FUNNEL[1:]}}
        scenarios.append(
            {
                "id": sid,
                "goal": settings.goals.get(sid),
                "entered": treated.entrants + control.entrants,
                "holdout_entered": control.entrants,
                "steps": rows,
                "total": total,
                "funnel": [{"stage": stage, "count": funnel[stage]} for stage in FUNNEL],
                "plan": dict(sorted(plan.get(sid, {}).items())),
                "holdout": _comparison(compare(treated, control)) if control.entrants else None,
                "variants": variants.get(sid, []),
            }
        )
    return {
        "period": {"since": period.since, "until": period.until, "scenario": scenario},
        "currency": settings.currency,
        "attribution": {
            kind: f"{seconds / 86400:g}d" for kind, seconds in settings.windows.seconds().items()
        },
        "scenarios": scenarios,
        "messages_by_day": reports.messages_by_day(period),
        "suppressed": [
            {"reason": reason, "count": count}
            for reason, count in sorted(suppressed.items(), key=lambda item: (-item[1], item[0]))[
                :TOP_SUPPRESSED
            ]
        ],
    }


def _step_row(
    step: str, channel: str, values: dict[str, float], costs: dict[str, float], cost: float | None = None
) -> dict[str, Any]:
    row: dict[str, Any] = {"step": step, "channel": channel, **values}
    row["cost"] = round(cost if cost is not None else values["sent"] * costs.get(channel, 0.0), 2)
    row["revenue"] = round(float(values["revenue"]), 2)
    row["revenue_per_message"] = round(row["revenue"] / values["sent"], 2) if values["sent"] else 0.0
    for column in STEP_COLUMNS:
        if column not in ("revenue", "cost", "revenue_per_message"):
            row[column] = int(values[column])
    return row


def _variants(
    reports: Reports,
    period: Period,
    splits: tuple[str, ...],
    goals: dict[tuple[str, str, Any], dict[str, Any]],
) -> dict[str, list[dict[str, Any]]]:
    """Per scenario with a split, each split's variants (their goals keyed by scenario, split
    and variant in `goals`), every one compared with the first (by name)."""
    if not splits:
        return {}
    entrants: dict[tuple[str, str], dict[str, int]] = defaultdict(dict)
    for row in reports.variant_entrants(period, splits):
        entrants[(row["scenario"], row["split"])][row["variant"]] = row["entrants"]
    found: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for (sid, split), counts in sorted(entrants.items()):
        groups = {}
        for name, count in sorted(counts.items()):
            reached = goals.get((sid, split, name), {})
            groups[name] = Group(
                count,
                int(reached.get("conversions", 0)),
                float(reached.get("revenue", 0.0)),
                float(reached.get("revenue_squares", 0.0)),
            )
        names = list(groups)
        baseline = names[0]
        found[sid].append(
            {
                "split": split,
                "baseline": baseline,
                "variants": [{"variant": name, **_group(group)} for name, group in groups.items()],
                "comparisons": [
                    {
                        "variant": name,
                        "against": baseline,
                        **_comparison(compare(groups[name], groups[baseline])),
                    }
                    for name in names[1:]
                ],
            }
        )
    return found


def _group(group: Group) -> dict[str, Any]:
    return {
        "entrants": group.entrants,
        "conversions": group.conversions,
        "conversion_rate": group.rate,
        "revenue": round(group.revenue, 2),
        "revenue_per_entrant": group.revenue_per_entrant,
    }


def _comparison(comparison: Comparison) -> dict[str, Any]:
    def interval(value: Any) -> dict[str, float] | None:
        return value.as_dict() if value is not None else None

    return {
        "treatment": _group(comparison.treatment),
        "control": _group(comparison.control),
        "enough_data": comparison.enough,
        "note": comparison.note,
        "uplift": interval(comparison.uplift),
        "relative_uplift": interval(comparison.relative_uplift),
        "revenue_per_entrant_uplift": interval(comparison.revenue_uplift),
        "incremental_revenue": interval(comparison.incremental_revenue),
    }


# the formats


def as_json(report: dict[str, Any]) -> str:
    """The report as one JSON document."""
    return json.dumps(report, indent=2, ensure_ascii=False) + "\n"


CSV_COLUMNS = ("scenario", "step", "channel", *STEP_COLUMNS)


def as_csv(report: dict[str, Any]) -> str:
    """One CSV row per scenario, step and channel, then each scenario's total (step `*`)."""
    out = io.StringIO()
    writer = csv.DictWriter(out, CSV_COLUMNS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for scenario in report["scenarios"]:
        for row in scenario["steps"]:
            writer.writerow({"scenario": scenario["id"], **row})
        writer.writerow({"scenario": scenario["id"], **scenario["total"], "step": "*", "channel": "*"})
    return out.getvalue()


def money(value: float, currency: str | None) -> str:
    """A sum as the report writes it: two decimals, thousands apart, the currency code after."""
    return f"{value:,.2f}" + (f" {currency}" if currency else "")


def percent(value: float) -> str:
    """A rate as a percentage with one decimal."""
    return f"{value * 100:.1f}%"


def uplift_text(comparison: dict[str, Any], currency: str | None) -> str:
    """One line: the rates, and the uplift with its interval (or why there is none)."""
    t, c = comparison["treatment"], comparison["control"]
    rates = (
        f"{percent(t['conversion_rate'])} of {t['entrants']:,}"
        f" vs {percent(c['conversion_rate'])} of {c['entrants']:,}"
    )
    if not comparison["enough_data"]:
        return f"{rates}: {comparison['note']}"
    u, r = comparison["uplift"], comparison["relative_uplift"]
    v, i = comparison["revenue_per_entrant_uplift"], comparison["incremental_revenue"]
    return (
        f"{rates}: uplift {u['estimate'] * 100:+.1f} pp [{u['low'] * 100:+.1f}, {u['high'] * 100:+.1f}]"
        f", relative {r['estimate'] * 100:+.0f}% [{r['low'] * 100:+.0f}%, {r['high'] * 100:+.0f}%]"
        f"; revenue per entrant {v['estimate']:+,.2f} [{v['low']:+,.2f}, {v['high']:+,.2f}]"
        f"; incremental revenue {money(i['estimate'], currency)}"
        f" [{i['low']:+,.2f}, {i['high']:+,.2f}] (95% intervals)"
    )


TEXT_HEADERS = {
    "step": "step",
    "channel": "channel",
    "sent": "sent",
    "delivered": "deliv.",
    "opened": "opened",
    "clicked": "clicked",
    "unsubscribed": "unsub.",
    "converted": "conv.",
    "revenue": "revenue",
    "cost": "cost",
    "revenue_per_message": "rev/msg",
}


def as_text(report: dict[str, Any]) -> str:
    """The terminal report: a table per scenario (step x channel), its funnel, the contact
    plan's effects, the holdout and split comparisons."""
    currency = report["currency"]
    period = report["period"]
    lines = [
        f"Boomerang report {period['since'][:16]}Z .. {period['until'][:16]}Z"
        f" (attribution: click {report['attribution']['click']}, open {report['attribution']['open']},"
        f" delivery {report['attribution']['delivery']}; revenue in {currency or 'the shop currency'})",
    ]
    if not report["scenarios"]:
        lines += ["", "no scenarios"]
    for scenario in report["scenarios"]:
        goal = f"goal {scenario['goal']}" if scenario["goal"] else "no goal"
        if not (scenario["entered"] or scenario["steps"] or scenario["plan"]):
            lines += ["", f"{scenario['id']} ({goal}): nothing in the period"]
            continue
        lines += [
            "",
            f"{scenario['id']} ({goal}): entered {scenario['entered']:,}"
            + (f" (holdout {scenario['holdout_entered']:,})" if scenario["holdout_entered"] else ""),
        ]
        table = [*scenario["steps"], {**scenario["total"], "step": "total", "channel": ""}]
        lines += _table(table) if scenario["steps"] else ["  no messages in the period"]
        lines.append("  funnel: " + " > ".join(f"{f['stage']} {f['count']:,}" for f in scenario["funnel"]))
        if scenario["plan"]:
            lines.append("  contact plan: " + ", ".join(f"{k} {v:,}" for k, v in scenario["plan"].items()))
        if scenario["holdout"] is not None:
            lines.append("  holdout: treated " + uplift_text(scenario["holdout"], currency))
        for split in scenario["variants"]:
            lines.append(f"  split {split['split']}:")
            for comparison in split["comparisons"]:
                lines.append(
                    f"    {comparison['variant']} vs {comparison['against']}:"
                    f" {uplift_text(comparison, currency)}"
                )
    if report["suppressed"]:
        lines += [
            "",
            "top reasons messages were not sent: "
            + ", ".join(f"{s['reason']} {s['count']:,}" for s in report["suppressed"]),
        ]
    return "\n".join(lines) + "\n"


def _table(rows: list[dict[str, Any]]) -> list[str]:
    def cell(column: str, value: Any) -> str:
        if column in ("revenue", "cost", "revenue_per_message"):
            return f"{value:,.2f}"
        return f"{value:,}" if isinstance(value, int) else str(value)

    cells = [[cell(c, row[c]) for c in TEXT_HEADERS] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) for i, h in enumerate(TEXT_HEADERS.values())]
    text_columns = 2  # step and channel align left, figures right

    def line(values: list[str]) -> str:
        return (
            "  "
            + "  ".join(
                value.ljust(width) if i < text_columns else value.rjust(width)
                for i, (value, width) in enumerate(zip(values, widths, strict=True))
            ).rstrip()
        )

    return [line(list(TEXT_HEADERS.values())), *(line(r) for r in cells)]


def window(since_text: str, now: datetime) -> tuple[datetime, datetime]:
    """The report's period for `--since`, ending now: from the start (UTC) of the day `since`
    falls on, since messages and entrants are counted per day, to a moment just after now (so
    that what happened this instant is in)."""
    since = period_since(since_text, now).astimezone(UTC)
    return since.replace(hour=0, minute=0, second=0, microsecond=0), now + timedelta(microseconds=1)
