"""`boomerang simulate` as a marketer runs it: the table, --json, --from/--until, bad input."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from boomerang.cli import cli

CART = {
    "id": "e-1",
    "type": "cart.updated",
    "at": "2026-03-02T20:00:00Z",
    "customer": {"id": "c-1", "email": "anna@example.com", "locale": "ru", "timezone": "Asia/Vladivostok"},
    "data": {
        "cart": {
            "url": "https://shop.example/c/1",
            "total": 20,
            "currency": "EUR",
            "items": [{"sku": "B", "name": "Bell", "price": 20, "qty": 1}],
        }
    },
}


def only_abandoned_cart(project: Path) -> None:
    for scenario in (project / "scenarios").glob("*.yaml"):
        if scenario.name != "abandoned_cart.yaml":
            scenario.unlink()


def run(project: Path, *args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, ["simulate", "--config", str(project / "boomerang.yaml"), *args])
    return result.exit_code, result.stdout, result.stderr


def test_json_lines_are_stable_and_in_time_order(project: Path, tmp_path: Path) -> None:
    only_abandoned_cart(project)
    events = tmp_path / "events.jsonl"
    events.write_text(json.dumps(CART) + "\n")
    code, out, _ = run(project, "--events", str(events), "--json")
    assert code == 0
    lines = [json.loads(line) for line in out.splitlines()]
    assert list(lines[0]) == ["at", "kind", "customer", "scenario", "step", "template", "channel", "reason"]
    assert [(x["at"], x["kind"], x["step"], x["template"], x["channel"]) for x in lines] == [
        ("2026-03-02T20:00:00Z", "enter", None, None, None),
        ("2026-03-02T20:20:00Z", "send", "1", "cart_reminder", "email"),
        ("2026-03-03T20:20:00Z", "exit", None, None, None),
        ("2026-03-03T20:20:00Z", "send", "3.else.0", "cart_reminder_2", "email"),
    ]
    assert [x["at"] for x in lines] == sorted(x["at"] for x in lines)
    assert run(project, "--events", str(events), "--json")[1] == out  # the same input, the same output


def test_the_table_shows_utc_and_customer_local_time(project: Path, tmp_path: Path) -> None:
    only_abandoned_cart(project)
    events = tmp_path / "events.jsonl"
    events.write_text(json.dumps(CART) + "\n")
    code, out, _ = run(project, "--events", str(events))
    assert code == 0
    header, first, *_ = out.splitlines()
    assert header.split()[:3] == ["time", "(UTC)", "local"]
    assert first.startswith("2026-03-02 20:00  03-03 06:00 +10")  # Vladivostok is UTC+10


def test_until_cuts_the_timeline(project: Path, tmp_path: Path) -> None:
    only_abandoned_cart(project)
    events = tmp_path / "events.jsonl"
    events.write_text(json.dumps(CART) + "\n")
    code, out, _ = run(project, "--events", str(events), "--json", "--until", "2026-03-03T00:00:00Z")
    assert code == 0
    assert [json.loads(line)["kind"] for line in out.splitlines()] == ["enter", "send"]


def test_bad_events_are_reported_with_their_line(project: Path, tmp_path: Path) -> None:
    events = tmp_path / "events.jsonl"
    events.write_text(json.dumps(CART) + "\n" + '{"id": "e-2", "type": "cart.updated"}\n')
    code, _, err = run(project, "--events", str(events))
    assert code == 1
    assert f"{events}: line 2 'e-2': 'at' is required" in err
    assert "Traceback" not in err


def test_a_project_with_errors_is_refused(project: Path, tmp_path: Path) -> None:
    (project / "scenarios" / "broken.yaml").write_text(
        "scenario: broken\ntrigger: {event: x.y}\nsteps: [{sned: t}]\n"
    )
    events = tmp_path / "events.jsonl"
    events.write_text(json.dumps(CART) + "\n")
    code, _, err = run(project, "--events", str(events))
    assert code == 1
    assert "run `boomerang check`" in err and "broken.yaml:3:10: error" in err


def test_bad_from_is_a_clear_error(project: Path, tmp_path: Path) -> None:
    events = tmp_path / "events.jsonl"
    events.write_text(json.dumps(CART) + "\n")
    code, _, err = run(project, "--events", str(events), "--from", "last tuesday")
    assert code == 1
    assert "--from/--until" in err


def test_a_name_the_event_does_not_have_is_an_error_row_naming_template_and_name(
    project: Path, tmp_path: Path
) -> None:
    # A custom event type: `check` cannot know its data keys, so `tier` passes and `ordr` too.
    for scenario in (project / "scenarios").glob("*.yaml"):
        scenario.unlink()
    (project / "scenarios" / "tier.yaml").write_text(
        "scenario: tier\ntrigger: {event: loyalty.tier_changed}\nsteps:\n  - send: tier_news\n"
    )
    folder = project / "templates" / "tier_news"
    folder.mkdir()
    (folder / "email.en.html").write_text(
        "---\nsubject: 'Tier {{ tier.level }}'\n---\n<p>{{ ordr.id }}</p>\n"
    )
    event = {**CART, "type": "loyalty.tier_changed", "data": {"tier": {"level": 2}}}
    events = tmp_path / "events.jsonl"
    events.write_text(json.dumps(event) + "\n")
    code, out, _ = run(project, "--events", str(events), "--json")
    assert code == 0
    rows = [json.loads(line) for line in out.splitlines()]
    [drop] = [row for row in rows if row["kind"] == "drop"]
    assert drop["template"] == "tier_news"
    assert drop["reason"] == "email: cannot render: 'ordr' is undefined"
    assert not [row for row in rows if row["kind"] == "send"]
