"""`boomerang ingest FILE`: past events and platform exports, through the path live events take.

Real files, the real CLI, the real database: a file imported twice changes nothing, a bad
line is named and leaves nothing behind, old events update profiles without starting
journeys whose moment has passed, and a running daemon makes the import refuse.
"""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from boomerang.cli import cli
from conftest import event, project_database, project_store, running

NOW = datetime.now(UTC)


def ingest(project: Path, file: Path, *options: str) -> Result:
    """`boomerang ingest FILE` on the project, as a user runs it."""
    config = str(project / "boomerang.yaml")
    return CliRunner().invoke(cli, ["ingest", str(file), "--config", config, *options])


def json_lines(path: Path, lines: list[object]) -> Path:
    """A JSON-lines file; a str item is written as it is (a broken line)."""
    path.write_text("".join((line if isinstance(line, str) else json.dumps(line)) + "\n" for line in lines))
    return path


def database(project: Path) -> dict[str, list[tuple]]:
    """Every row of the tables an import may touch, sorted, to compare two moments."""
    with project_database(project) as db:
        return {
            table: sorted(map(tuple, db.execute(f"SELECT * FROM {table}")), key=repr)
            for table in ("customers", "identities", "events", "journeys", "jobs", "journal", "messages")
        }


def test_a_file_imported_twice_changes_nothing_the_second_time(project: Path, tmp_path: Path) -> None:
    file = json_lines(
        tmp_path / "history.jsonl",
        [
            event(
                "h-1",
                "order.placed",
                "2025-05-01 10:00",
                {"id": "c-1", "email": "ann@example.com"},
                {"order": {"total": 120.5}},
            ),
            event("h-2", "product.viewed", "2025-05-02 09:00", {"email": "ann@example.com"}),
            event("h-3", "order.placed", "2025-06-01 10:00", {"id": "c-1"}, {"order": {"total": 30}}),
        ],
    )
    first = ingest(project, file)
    assert first.exit_code == 0, first.output
    assert first.output.splitlines()[0] == "3 accepted, 0 duplicates, 0 rejected"
    stored = database(project)
    assert len(stored["customers"]) == 1
    with project_database(project) as db:
        row = db.execute("SELECT id, email, orders_count, revenue, last_order_at FROM customers").fetchone()
    # One customer (the email merged into c-1), with the orders of its history.
    assert row[:4] == ("c-1", "ann@example.com", 2, 150.5)
    assert row[4].startswith("2025-06-01T10:00")
    assert {e[0] for e in stored["events"]} == {"h-1", "h-2", "h-3"}

    again = ingest(project, file)
    assert again.exit_code == 0, again.output
    assert again.output.splitlines()[0] == "0 accepted, 3 duplicates, 0 rejected"
    assert database(project) == stored


def test_a_bad_line_is_named_by_its_number_and_leaves_nothing_of_its_own(
    project: Path, tmp_path: Path
) -> None:
    file = json_lines(
        tmp_path / "history.jsonl",
        [
            event("ok-1", "product.viewed", "2025-05-01 10:00", {"id": "c-1"}),
            {
                **event(
                    "bad-1", "order.placed", "2025-05-01 11:00", {"id": "c-new", "email": "new@example.com"}
                ),
                "at": "yesterday",
            },
            '{"id": "broken", "type": ',
            event("bad-2", "order.placed", "2025-05-01 12:00", {"id": "c-1", "email": "not an email"}),
            event("ok-2", "order.placed", "2025-05-01 13:00", {"id": "c-1"}, {"order": {"total": 10}}),
        ],
    )
    result = ingest(project, file)
    assert result.exit_code == 1
    lines = result.output.splitlines()
    assert lines[0] == "2 accepted, 0 duplicates, 3 rejected"
    assert lines[1].startswith("  line 2 'bad-1': 'at': 'yesterday' is not an ISO-8601 timestamp")
    assert lines[2] == "  line 3, column 26: invalid JSON: Expecting value"
    assert lines[3] == "  line 4 'bad-2': customer.email is not an email address"
    stored = database(project)
    assert {e[0] for e in stored["events"]} == {"ok-1", "ok-2"}
    # Nothing of the rejected lines: no customer, no identity, no order counted.
    assert [c[0] for c in stored["customers"]] == ["c-1"]
    assert {i[1] for i in stored["identities"]} == {"c-1"}
    with project_database(project) as db:
        assert db.execute("SELECT orders_count, email FROM customers").fetchone() == (1, None)


def test_old_events_update_profiles_but_start_no_journey_whose_moment_has_passed(
    project: Path, tmp_path: Path
) -> None:
    """The demo's abandoned-cart starts on cart.updated and first waits 20 minutes: an imported
    cart of two hours ago starts nothing, one of five minutes ago starts the journey, and an
    order older than that journey does not end it (though it exits on orders). Its
    recommendations wait 30 days after an order: one of 40 days ago starts nothing, one of ten
    minutes ago starts them."""
    file = json_lines(
        tmp_path / "history.jsonl",
        [
            event(
                "older-order",
                "order.placed",
                NOW - timedelta(days=40),
                {"id": "c-old"},
                {"order": {"total": 99}},
            ),
            event(
                "old-cart",
                "cart.updated",
                NOW - timedelta(hours=2),
                {"id": "c-old", "email": "o@example.com"},
                {"cart": {"total": 50, "items": [{"sku": "B-1", "name": "Bicycle", "price": 50, "qty": 1}]}},
            ),
            event(
                "old-order",
                "order.placed",
                NOW - timedelta(minutes=10),
                {"id": "c-new"},
                {"order": {"total": 20}},
            ),
            event(
                "new-cart",
                "cart.updated",
                NOW - timedelta(minutes=5),
                {"id": "c-new", "email": "n@example.com"},
                {"cart": {"total": 80, "items": [{"sku": "B-2", "name": "Lamp", "price": 80, "qty": 1}]}},
            ),
        ],
    )
    result = ingest(project, file)
    assert result.exit_code == 0, result.output
    with project_database(project) as db:
        journeys = db.execute("SELECT customer_id, scenario, status FROM journeys").fetchall()
        handled = db.execute("SELECT count(*) FROM events WHERE handled = 0").fetchone()[0]
        sources = {row[0] for row in db.execute("SELECT source FROM events")}
        profile = db.execute("SELECT email, orders_count FROM customers WHERE id = 'c-old'").fetchone()
    assert sorted(journeys) == [("c-new", "abandoned-cart", "active"), ("c-new", "recommendations", "active")]
    assert handled == 0  # the engine has acted on every imported event
    assert sources == {"import"}
    assert profile == ("o@example.com", 1)


def test_an_export_is_read_by_its_source_plugin(project: Path, tmp_path: Path) -> None:
    (project / "plugins" / "shop.py").write_text(EXPORTING_SOURCE)
    export = tmp_path / "orders.json"
    export.write_text(
        json.dumps(
            [
                {
                    "order_id": 1001,
                    "email": "ann@example.com",
                    "total": 70,
                    "created_at": "2025-04-01T08:00:00Z",
                },
                {"email": "bob@example.com", "total": 5, "created_at": "2025-04-02T08:00:00Z"},
                {
                    "order_id": 1002,
                    "email": "ann@example.com",
                    "total": 30,
                    "created_at": "2025-04-03T08:00:00Z",
                },
            ],
            indent=2,
        )
    )
    result = ingest(project, export, "--format", "shop")
    assert result.exit_code == 1
    assert result.output.splitlines() == [
        "4 accepted, 0 duplicates, 1 rejected",
        "  record 2 (line 8): an order needs its order_id",
    ]
    with project_database(project) as db:
        assert db.execute("SELECT email, orders_count, revenue FROM customers").fetchall() == [
            ("ann@example.com", 2, 100.0)
        ]
        assert {row[0] for row in db.execute("SELECT source FROM events")} == {"import:shop"}
    again = ingest(project, export, "--format", "shop")
    assert again.output.splitlines()[0] == "0 accepted, 4 duplicates, 1 rejected"


def test_a_source_that_cannot_read_exports_is_refused_clearly(project: Path, tmp_path: Path) -> None:
    file = json_lines(tmp_path / "history.jsonl", [event("h-1")])
    plain = ingest(project, file, "--format", "api")
    assert plain.exit_code == 1
    assert "source api cannot read exports" in plain.output
    unknown = ingest(project, file, "--format", "shopfy")
    assert unknown.exit_code == 1
    assert "no source 'shopfy'" in unknown.output
    store = project_store(project)  # on either store; an empty database where the command made none
    assert store.db.execute("SELECT count(*) FROM events").fetchone()[0] == 0
    store.close()


@pytest.mark.sqlite_only
async def test_the_import_refuses_to_run_beside_the_daemon(project: Path, tmp_path: Path) -> None:
    file = json_lines(tmp_path / "history.jsonl", [event("h-1")])
    async with running(project):
        refused = await asyncio.to_thread(ingest, project, file)
    assert refused.exit_code == 1
    assert "the daemon is running" in refused.output
    assert "stop it, import, then start it again" in refused.output
    assert database(project)["events"] == []
    # With the daemon stopped, the same import goes through.
    assert (await asyncio.to_thread(ingest, project, file)).output.startswith("1 accepted")


EXPORTING_SOURCE = '''
from boomerang import hookimpl
from boomerang.kinds import Source
from boomerang.plugin_api import EventError, parse_event


class Shop(Source):
    """A platform whose order export is a list of orders: each is an order.placed and a
    customer.updated."""

    name = "shop"
    verified = True

    def read_export(self, record):
        if "order_id" not in record:
            raise EventError("an order needs its order_id")
        customer = {"id": f"shop-{record['email']}", "email": record["email"]}
        placed = {"id": f"order-{record['order_id']}", "type": "order.placed", "at": record["created_at"],
                  "customer": customer, "data": {"order": {"total": record["total"]}}}
        seen = {"id": f"seen-{record['order_id']}", "type": "customer.updated", "at": record["created_at"],
                "customer": customer}
        return [parse_event(placed), parse_event(seen)]


@hookimpl
def register_sources(config):
    return [Shop()]
'''


def test_large_files_are_read_in_pieces_whatever_their_form(project: Path, tmp_path: Path) -> None:
    """Several megabytes, so that records straddle the reads (1 MiB) and the batches (500)."""
    padding = 'x]"[{' * 400  # brackets and quotes inside strings, cut anywhere by a read
    events = [
        event(f"big-{n}", "product.viewed", "2025-05-01 10:00", {"id": f"c-{n % 50}"}, {"note": padding})
        for n in range(2600)
    ]
    array = tmp_path / "history.json"
    array.write_text(json.dumps(events[:1300], indent=1))
    lines = json_lines(tmp_path / "history.jsonl", events[1300:])
    assert array.stat().st_size > 2 << 20 and lines.stat().st_size > 1 << 20
    assert ingest(project, array).output.splitlines() == ["1300 accepted, 0 duplicates, 0 rejected"]
    assert ingest(project, lines).output.splitlines() == ["1300 accepted, 0 duplicates, 0 rejected"]
    with project_database(project) as db:
        assert (
            db.execute(
                "SELECT count(*) FROM events WHERE data = ?", [json.dumps({"note": padding})]
            ).fetchone()[0]
            == 2600
        )


def test_the_shops_own_exports_import_through_their_sources(project: Path, tmp_path: Path) -> None:
    """`--format shopify` and `--format woocommerce` with the built-in sources: an order export
    becomes the events its webhooks would give, once, under the shop's customer."""
    from test_source_woocommerce import SECRET, order

    from fakes import shopify_payloads as shopify

    config = project / "boomerang.yaml"
    settings = {"secret": shopify.SHOPIFY_SECRET, "shop": shopify.SHOP, "admin_token": "shpat_x"}
    config.write_text(
        config.read_text()
        + f"sources:\n  shopify: {json.dumps(settings)}\n  woocommerce: {json.dumps({'secret': SECRET})}\n"
    )
    shopify_file = tmp_path / "shopify-orders.json"
    second = shopify.order(order_id=450789470, checkout_token="fedcba9876543210fedcba9876543210")
    shopify_file.write_text(json.dumps([shopify.order(), second]))
    woo_file = json_lines(tmp_path / "woo-orders.jsonl", [order(status="completed")])

    for file, name in ((shopify_file, "shopify"), (woo_file, "woocommerce")):
        first = ingest(project, file, "--format", name)
        assert first.exit_code == 0, first.output
        assert not first.output.startswith("0 accepted"), first.output
        again = ingest(project, file, "--format", name)
        assert again.exit_code == 0 and again.output.startswith("0 accepted"), again.output
    with project_database(project) as db:
        placed = db.execute(
            "SELECT customer_id, source FROM events WHERE type = 'order.placed' ORDER BY source, customer_id"
        ).fetchall()
        shopper = db.execute("SELECT orders_count FROM customers WHERE id = 'shopify:207119551'").fetchone()
    assert [source for _, source in placed] == ["import:shopify", "import:shopify", "import:woocommerce"]
    assert shopper == (2,)
