"""`boomerang report --html` and the daemon's `/report`: the report as one self-contained page.

No script, no CDN, no font or image fetched: the charts are inline SVG drawn here from the
report's plain data (`boomerang.report.gather`): a funnel per scenario, messages per channel
per day, the conversion uplift with its interval, the top reasons messages were not sent.
Every text that comes from the data is escaped.
"""

from __future__ import annotations

from collections import defaultdict
from html import escape
from typing import Any

from boomerang.report import TEXT_HEADERS, money, percent, uplift_text

PALETTE = ("#2f6fde", "#e0663a", "#2a9d62", "#9b51c9", "#c9a227", "#d6457a", "#5b7083", "#1aa5b8")
STYLE = """
body { font: 14px/1.45 system-ui, sans-serif; margin: 24px auto; max-width: 1100px; color: #1d2733;
  padding: 0 16px; }
h1 { font-size: 22px; } h2 { font-size: 18px; margin-top: 32px; border-bottom: 1px solid #d8dee6; }
table { border-collapse: collapse; margin: 8px 0; font-variant-numeric: tabular-nums; }
th, td { padding: 3px 8px; border-bottom: 1px solid #eef1f5; text-align: right; }
th:nth-child(-n+2), td:nth-child(-n+2) { text-align: left; }
tr.total td { font-weight: 600; border-top: 1px solid #aab4c0; }
.note { color: #5b6776; } svg { display: block; margin: 8px 0; }
svg text { font: 12px system-ui, sans-serif; }
"""


def page(report: dict[str, Any], title: str = "Boomerang report") -> str:
    """The whole page."""
    period, currency = report["period"], report["currency"]
    attribution = report["attribution"]
    parts = [
        "<!doctype html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        '<link rel="icon" href="data:,">',  # no favicon request: the page fetches nothing
        f"<title>{escape(title)}</title><style>{STYLE}</style></head><body>",
        f"<h1>{escape(title)}</h1>",
        f'<p class="note">{escape(period["since"][:16])}Z to {escape(period["until"][:16])}Z.'
        f" Attribution: click {escape(attribution['click'])}, open {escape(attribution['open'])},"
        f" delivery {escape(attribution['delivery'])}; promo redemptions always count."
        f" Revenue in {escape(currency or 'the shop currency')}.</p>",
        "<h2>Messages per channel per day</h2>",
        _by_day(report["messages_by_day"]),
        "<h2>Top reasons messages were not sent</h2>",
        _bars([(s["reason"], s["count"]) for s in report["suppressed"]], "#d6457a")
        if report["suppressed"]
        else '<p class="note">none in the period</p>',
    ]
    if not report["scenarios"]:
        parts.append('<p class="note">No scenarios.</p>')
    for scenario in report["scenarios"]:
        parts.append(_scenario(scenario, currency))
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def _scenario(scenario: dict[str, Any], currency: str | None) -> str:
    goal = f"goal {scenario['goal']}" if scenario["goal"] else "no goal"
    holdout = f", holdout {scenario['holdout_entered']:,}" if scenario["holdout_entered"] else ""
    if not (scenario["entered"] or scenario["steps"] or scenario["plan"]):
        return (
            f'<section data-scenario="{escape(scenario["id"])}"><h2>{escape(scenario["id"])}</h2>'
            f'<p class="note">{escape(goal)}; nothing in the period</p></section>'
        )
    parts = [
        f'<section data-scenario="{escape(scenario["id"])}">',
        f"<h2>{escape(scenario['id'])}</h2>",
        f'<p class="note">{escape(goal)}; entered {scenario["entered"]:,}{holdout}</p>',
        _step_table(scenario),
        "<h3>Funnel</h3>",
        _bars([(f["stage"], f["count"]) for f in scenario["funnel"]], "#2f6fde"),
    ]
    if scenario["plan"]:
        parts += ["<h3>Contact plan</h3>", _bars(list(scenario["plan"].items()), "#5b7083")]
    comparisons = []
    if scenario["holdout"] is not None:
        comparisons.append(("treated vs holdout", scenario["holdout"]))
    for split in scenario["variants"]:
        for comparison in split["comparisons"]:
            comparisons.append(
                (f"split {split['split']}: {comparison['variant']} vs {comparison['against']}", comparison)
            )
    if comparisons:
        parts.append("<h3>Conversion and uplift</h3>")
        for label, comparison in comparisons:
            parts.append(f"<p><b>{escape(label)}</b>: {escape(uplift_text(comparison, currency))}</p>")
            parts.append(_interval(comparison))
    parts.append("</section>")
    return "\n".join(parts)


def _step_table(scenario: dict[str, Any]) -> str:
    if not scenario["steps"]:
        return '<p class="note">No messages in the period.</p>'

    def cell(column: str, value: Any) -> str:
        if column in ("revenue", "cost", "revenue_per_message"):
            return money(value, None)
        return f"{value:,}" if isinstance(value, int) else escape(str(value))

    head = "".join(f"<th>{escape(h)}</th>" for h in TEXT_HEADERS.values())
    rows = []
    for row, css in [
        *((r, "") for r in scenario["steps"]),
        ({**scenario["total"], "step": "total"}, "total"),
    ]:
        cells = "".join(f"<td>{cell(c, row[c])}</td>" for c in TEXT_HEADERS)
        rows.append(f'<tr class="{css}">{cells}</tr>')
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"


def _bars(items: list[tuple[str, float]], colour: str) -> str:
    """Horizontal bars with their labels and values (the funnel, the plan, the reasons)."""
    width, label_width, row = 720, 220, 24
    biggest = max((value for _, value in items), default=0) or 1
    height = row * len(items) + 8
    shapes = []
    for index, (label, value) in enumerate(items):
        y = 4 + index * row
        length = (width - label_width - 90) * value / biggest
        shapes.append(
            f'<text x="{label_width - 8}" y="{y + 16}" text-anchor="end">{escape(str(label))}</text>'
            f'<rect x="{label_width}" y="{y + 3}" width="{length:.1f}" height="{row - 8}"'
            f' fill="{colour}" rx="2"/>'
            f'<text x="{label_width + length + 6:.1f}" y="{y + 16}">{value:,}</text>'
        )
    return _svg(width, height, "".join(shapes), "bar chart")


def _by_day(rows: list[dict[str, Any]]) -> str:
    """Messages per channel per day: one line per channel over the days."""
    if not rows:
        return '<p class="note">No messages in the period.</p>'
    days = sorted({row["day"] for row in rows})
    channels = sorted({row["channel"] for row in rows})
    counts: dict[str, dict[str, int]] = defaultdict(dict)
    for row in rows:
        counts[row["channel"]][row["day"]] = row["sent"]
    width, height, left, bottom, top = 1000, 260, 56, 40, 12
    plot_w, plot_h = width - left - 150, height - bottom - top
    biggest = max(row["sent"] for row in rows) or 1
    step = plot_w / max(1, len(days) - 1)

    def x(index: int) -> float:
        return left + (index * step if len(days) > 1 else plot_w / 2)

    def y(value: float) -> float:
        return top + plot_h - plot_h * value / biggest

    shapes = [
        f'<line x1="{left}" y1="{top + plot_h}" x2="{left + plot_w}" y2="{top + plot_h}" stroke="#aab4c0"/>',
        f'<text x="{left - 6}" y="{top + 4}" text-anchor="end">{biggest:,}</text>',
        f'<text x="{left - 6}" y="{top + plot_h}" text-anchor="end">0</text>',
    ]
    label_every = max(1, len(days) // 8)
    for index, day in enumerate(days):
        last = index == len(days) - 1
        if (index % label_every == 0 and len(days) - 1 - index >= label_every / 2) or last:
            shapes.append(
                f'<text x="{x(index):.1f}" y="{height - 18}" text-anchor="middle">{escape(day[5:])}</text>'
            )
    for number, channel in enumerate(channels):
        colour = PALETTE[number % len(PALETTE)]
        points = " ".join(f"{x(i):.1f},{y(counts[channel].get(day, 0)):.1f}" for i, day in enumerate(days))
        shapes.append(f'<polyline points="{points}" fill="none" stroke="{colour}" stroke-width="2"/>')
        if len(days) == 1:
            shapes.append(
                f'<circle cx="{x(0):.1f}" cy="{y(counts[channel].get(days[0], 0)):.1f}" r="4"'
                f' fill="{colour}"/>'
            )
        shapes.append(
            f'<rect x="{left + plot_w + 20}" y="{top + number * 20}" width="12" height="12" fill="{colour}"/>'
            f'<text x="{left + plot_w + 38}" y="{top + number * 20 + 11}">{escape(channel)}</text>'
        )
    return _svg(width, height, "".join(shapes), "messages per channel per day")


def _interval(comparison: dict[str, Any]) -> str:
    """Both groups' conversion rates as bars, and the uplift's interval on an axis through zero."""
    width, height = 720, 110
    t, c = comparison["treatment"], comparison["control"]
    names = (comparison.get("variant", "treatment"), comparison.get("against", "control"))
    biggest = max(t["conversion_rate"], c["conversion_rate"]) or 1
    shapes = []
    for index, (label, group, colour) in enumerate(((names[0], t, "#2f6fde"), (names[1], c, "#5b7083"))):
        y = 6 + index * 24
        length = 300 * group["conversion_rate"] / biggest
        shapes.append(
            f'<text x="92" y="{y + 14}" text-anchor="end">{escape(label)}</text>'
            f'<rect x="100" y="{y + 2}" width="{length:.1f}" height="16" fill="{colour}" rx="2"/>'
            f'<text x="{106 + length:.1f}" y="{y + 14}">{percent(group["conversion_rate"])}</text>'
        )
    uplift = comparison["uplift"]
    axis_y = 86
    if uplift is None:
        shapes.append(f'<text x="100" y="{axis_y}">{escape(comparison["note"])}</text>')
    else:
        span = max(abs(uplift["low"]), abs(uplift["high"]), 1e-9) * 1.2
        left, right = 100, width - 40

        def x(value: float) -> float:
            return left + (right - left) * (value + span) / (2 * span)

        shapes.append(
            f'<line x1="{left}" y1="{axis_y}" x2="{right}" y2="{axis_y}" stroke="#aab4c0"/>'
            f'<line x1="{x(0):.1f}" y1="{axis_y - 12}" x2="{x(0):.1f}" y2="{axis_y + 12}" stroke="#1d2733"/>'
            f'<text x="{x(0):.1f}" y="{axis_y + 22}" text-anchor="middle">0</text>'
            f'<text x="92" y="{axis_y + 4}" text-anchor="end">uplift</text>'
            f'<line x1="{x(uplift["low"]):.1f}" y1="{axis_y}" x2="{x(uplift["high"]):.1f}" y2="{axis_y}"'
            ' stroke="#e0663a" stroke-width="4"/>'
            f'<circle cx="{x(uplift["estimate"]):.1f}" cy="{axis_y}" r="5" fill="#e0663a"/>'
            f'<text x="{x(uplift["estimate"]):.1f}" y="{axis_y - 9}" text-anchor="middle">'
            f"{uplift['estimate'] * 100:+.1f} pp</text>"
        )
    return _svg(width, height + 14, "".join(shapes), "conversion and uplift")


def _svg(width: int, height: int, content: str, label: str) -> str:
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}"'
        f' viewBox="0 0 {width} {height}" role="img" aria-label="{escape(label)}">{content}</svg>'
    )
