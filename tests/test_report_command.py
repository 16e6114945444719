"""`boomerang report` on a real project and database: the terminal tables, --json, --csv and
--html, and the mistakes a user can make (clear errors, no tracebacks, nothing written)."""

from __future__ import annotations

import csv
import hashlib
import io
import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
from click.testing import CliRunner
from report_data import a_month, with_a_split

from boomerang.cli import cli
from conftest import project_database, project_store


@pytest.fixture
def shop(project: Path) -> Path:
    """The `init` project with four weeks of abandoned-cart journeys in its database."""
    with_a_split(project)
    store = project_store(project)
    a_month(store, datetime.now(UTC))
    store.close()
    return project


def report(project: Path, *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, ["report", "--config", str(project / "boomerang.yaml"), *args])
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result.exit_code, result.output


def treated_orders(project: Path) -> tuple[int, float]:
    """The orders of customers who got a message: every one of them was delivered within a day
    before the order, so every one is attributed."""
    with project_database(project) as db:
        totals = db.execute(
            "SELECT json_extract(data, '$.order.total') FROM events"
            " WHERE type = 'order.placed' AND customer_id IN (SELECT customer_id FROM messages)"
        ).fetchall()
    return len(totals), round(sum(float(total) for (total,) in totals), 2)


def test_the_terminal_report(shop: Path) -> None:
    code, output = report(shop)
    assert code == 0, output
    assert "abandoned-cart (goal order.placed): entered 1,000 (holdout 100)" in output
    converted, revenue = treated_orders(shop)
    total = next(line for line in output.splitlines() if line.strip().startswith("total"))
    assert f"{revenue:,.2f}" in total and f" {converted} " in total
    assert "funnel: entered 900 > sent 900 > delivered 900" in output
    assert "contact plan: control group (holdout) 100, deferred by quiet hours" in output
    assert "holdout: treated" in output and "split 3:" in output and "b vs a:" in output
    assert "birthday (goal order.placed): nothing in the period" in output


def test_json_holds_the_figures(shop: Path) -> None:
    code, output = report(shop, "--json")
    assert code == 0, output
    found = json.loads(output)
    cart = next(s for s in found["scenarios"] if s["id"] == "abandoned-cart")
    converted, revenue = treated_orders(shop)
    assert cart["total"]["converted"] == converted and cart["total"]["revenue"] == pytest.approx(revenue)
    assert cart["total"]["sent"] == 900 and cart["total"]["unsubscribed"] == 20
    assert {row["channel"] for row in cart["steps"]} == {"email", "sms", "push"}
    assert [stage["stage"] for stage in cart["funnel"]] == [
        "entered",
        "sent",
        "delivered",
        "opened",
        "clicked",
        "converted",
    ]
    holdout = cart["holdout"]
    assert holdout["treatment"]["entrants"] == 900 and holdout["control"]["entrants"] == 100
    split = cart["variants"][0]
    assert split["split"] == "3" and split["baseline"] == "a"
    assert sum(v["entrants"] for v in split["variants"]) == 900
    assert split["comparisons"][0]["enough_data"] is True
    interval = split["comparisons"][0]["uplift"]
    assert interval["low"] < interval["estimate"] < interval["high"]
    assert found["attribution"] == {"click": "5d", "open": "1d", "delivery": "1d"}
    assert found["currency"] == "EUR"
    assert sum(day["sent"] for day in found["messages_by_day"]) == 900
    assert {"reason": "dropped by a cap", "count": 69} in found["suppressed"]


def test_csv_is_one_row_per_step_and_channel(shop: Path) -> None:
    code, output = report(shop, "--csv", "--scenario", "abandoned-cart")
    assert code == 0, output
    rows = list(csv.DictReader(io.StringIO(output)))
    assert [(r["scenario"], r["step"], r["channel"]) for r in rows] == [
        ("abandoned-cart", "1", "email"),
        ("abandoned-cart", "1", "push"),
        ("abandoned-cart", "1", "sms"),
        ("abandoned-cart", "*", "*"),
    ]
    assert sum(int(r["sent"]) for r in rows[:3]) == int(rows[3]["sent"]) == 900
    assert float(rows[3]["revenue"]) == pytest.approx(treated_orders(shop)[1])


def test_since_limits_the_period(shop: Path) -> None:
    code, output = report(shop, "--json", "--since", "7d")
    assert code == 0, output
    cart = next(s for s in json.loads(output)["scenarios"] if s["id"] == "abandoned-cart")
    assert 0 < cart["entered"] < 1000


def test_the_html_page_is_written(shop: Path, tmp_path: Path) -> None:
    page = tmp_path / "report.html"
    code, output = report(shop, "--html", str(page))
    assert code == 0, output
    text = page.read_text()
    assert text.startswith("<!doctype html>") and "<svg" in text and "abandoned-cart" in text
    assert "<script" not in text and "http://" not in text.replace('xmlns="http://www.w3.org/2000/svg"', "")


@pytest.mark.sqlite_only
def test_the_report_writes_nothing(shop: Path) -> None:
    before = hashlib.sha256((shop / "boomerang.db").read_bytes()).hexdigest()
    assert report(shop)[0] == 0
    assert hashlib.sha256((shop / "boomerang.db").read_bytes()).hexdigest() == before


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--scenario", "abandoned-carts"], "no scenario 'abandoned-carts' (did you mean 'abandoned-cart'?)"),
        (["--since", "last tuesday"], "neither a duration (30d, 12h, 2w) nor a date"),
        (["--json", "--csv"], "choose one of --json, --csv and --html"),
    ],
)
def test_mistakes_are_clear_errors(shop: Path, args: list[str], message: str) -> None:
    code, output = report(shop, *args)
    assert code != 0 and message in output and "Traceback" not in output


@pytest.mark.sqlite_only
def test_no_database_yet(project: Path) -> None:
    code, output = report(project)
    assert code == 1 and "no database at" in output
