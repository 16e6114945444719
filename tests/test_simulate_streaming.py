"""`boomerang simulate` reads JSON lines as a stream: in time order, every bad line named, and
nothing printed when the file turns out bad part-way."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from boomerang import simulation
from boomerang.cli import cli
from conftest import event

pytestmark = pytest.mark.no_store  # simulate runs on a temporary SQLite file of its own

CART = {"cart": {"url": "https://shop.example/c/1", "total": 20, "currency": "EUR", "items": [{"sku": "B"}]}}


def cart(event_id: str, at: str, customer: str) -> dict:
    return event(event_id, "cart.updated", at, {"id": customer, "email": f"{customer}@example.com"}, CART)


def run(project: Path, events: Path, *args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(
        cli, ["simulate", "--config", str(project / "boomerang.yaml"), "--events", str(events), *args]
    )
    return result.exit_code, result.stdout, result.stderr


def test_a_line_earlier_than_the_one_above_is_named_and_nothing_is_printed(
    project: Path, tmp_path: Path
) -> None:
    events = tmp_path / "events.jsonl"
    lines = [
        cart("e-1", "2026-03-02 10:00", "c-1"),
        cart("e-2", "2026-03-02 11:00", "c-2"),
        cart("e-3", "2026-03-02 10:30", "c-3"),  # back in time
    ]
    events.write_text("".join(json.dumps(line) + "\n" for line in lines))
    for args in ([], ["--json"]):
        code, out, err = run(project, events, *args)
        assert code == 1
        assert out == ""  # the two good lines ran, but no half timeline is printed
        assert f"{events}: line 3 'e-3': 2026-03-02T10:30:00Z is earlier than line 2" in err
        assert "time order" in err and "Traceback" not in err


def test_a_malformed_line_far_down_is_named_and_nothing_is_printed(project: Path, tmp_path: Path) -> None:
    events = tmp_path / "events.jsonl"
    good = [cart(f"e-{n}", f"2026-03-02 10:{n:02}", f"c-{n}") for n in range(1, 40)]
    events.write_text("\n" + "".join(json.dumps(line) + "\n" for line in good) + '{"id": "e-x", "type": \n')
    code, out, err = run(project, events, "--json")
    assert code == 1
    assert out == ""
    # A blank first line still counts: the broken one is line 41.
    assert f"{events}: line 41, column" in err and "invalid JSON" in err


def test_a_json_array_is_read_whole_and_sorted(project: Path, tmp_path: Path) -> None:
    lines = [cart("e-2", "2026-03-02 11:00", "c-2"), cart("e-1", "2026-03-02 10:00", "c-1")]
    array = tmp_path / "events.json"
    array.write_text(json.dumps(lines, indent=2))
    ordered = tmp_path / "events.jsonl"
    ordered.write_text("".join(json.dumps(line) + "\n" for line in reversed(lines)))
    code, out, _ = run(project, array, "--json")
    assert code == 0
    entered = [entry["customer"] for entry in map(json.loads, out.splitlines()) if entry["kind"] == "enter"]
    assert entered == ["c-1", "c-2"]
    assert run(project, ordered, "--json") == (0, out, "")


def test_the_table_is_written_in_pages_with_one_set_of_widths(project: Path, tmp_path: Path) -> None:
    # More entries than a page of the timeline: the columns line up across pages.
    events = tmp_path / "events.jsonl"
    lines = [cart(f"e-{n}", f"2026-03-02 10:{n % 60:02}:{n // 60:02}", f"c-{n}") for n in range(30)]
    lines.sort(key=lambda line: line["at"])
    events.write_text("".join(json.dumps(line) + "\n" for line in lines))
    whole = run(project, events)
    simulation.TIMELINE_PAGE, page = 7, simulation.TIMELINE_PAGE
    try:
        paged = run(project, events)
    finally:
        simulation.TIMELINE_PAGE = page
    assert whole == paged and whole[0] == 0
    rows = whole[1].splitlines()[1:]
    assert len(rows) > 7 and len({row.index(" c-") for row in rows}) == 1
