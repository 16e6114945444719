"""`boomerang simulate` as a marketer runs it: the table, --json, --from/--until, bad input."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from click.testing import CliRunner

from boomerang.cli import cli
from boomerang.outbox import customer_token

pytestmark = pytest.mark.no_store  # simulate runs on a temporary SQLite file of its own

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
        ("2026-03-03T20:20:00Z", "send", "3.else.0", "cart_reminder_2", "email"),
        ("2026-03-03T20:20:00Z", "exit", None, None, None),
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


def test_exit_follows_the_journeys_last_send(project: Path, tmp_path: Path) -> None:
    only_abandoned_cart(project)
    events = tmp_path / "events.jsonl"
    events.write_text(json.dumps(CART) + "\n")
    code, out, _ = run(project, "--events", str(events))
    assert code == 0
    words = {"enter", "send", "defer", "exit"}
    kinds = [next(word for word in line.split() if word in words) for line in out.splitlines()[1:]]
    assert kinds == ["enter", "send", "send", "exit"]


def test_show_puts_subject_and_text_beside_each_send(project: Path, tmp_path: Path) -> None:
    only_abandoned_cart(project)
    events = tmp_path / "events.jsonl"
    events.write_text(json.dumps(CART) + "\n")
    code, out, _ = run(project, "--events", str(events), "--json", "--show")
    assert code == 0
    sends = [line for line in map(json.loads, out.splitlines()) if line["kind"] == "send"]
    assert [bool(line["subject"]) for line in sends] == [True, True]
    assert all("Bell" in line["subject"] + line["text"] or line["text"] for line in sends)
    assert all("subject" not in line for line in map(json.loads, out.splitlines()) if line["kind"] != "send")
    code, table, _ = run(project, "--events", str(events), "--show")
    assert code == 0
    lines = table.splitlines()
    first_send = next(n for n, line in enumerate(lines) if "  send  " in line)
    assert lines[first_send + 1] == f"    │ {sends[0]['subject']}"
    assert lines[first_send + 2] == f"    │ {sends[0]['text'].splitlines()[0]}"


def test_outbox_writes_each_message_rendered(project: Path, tmp_path: Path) -> None:
    only_abandoned_cart(project)
    events = tmp_path / "events.jsonl"
    customer = {**CART["customer"], "id": "anna/../x", "phone": "+15551234567"}
    events.write_text(json.dumps({**CART, "customer": customer}) + "\n")
    outbox = tmp_path / "rehearsed"
    code, _, err = run(project, "--events", str(events), "--outbox", str(outbox))
    assert code == 0, err
    names = sorted(path.name for path in outbox.iterdir())
    anna = customer_token("anna/../x")  # not a plain id: a short hash of it, as the outbox writes
    assert anna.startswith("h") and len(anna) == 11
    assert names == [
        f"20260302T202000Z-{anna}-abandoned-cart-cart_reminder-email.eml",
        f"20260302T202000Z-{anna}-abandoned-cart-cart_reminder-email.html",
        f"20260303T202000Z-{anna}-abandoned-cart-cart_reminder_2-email.eml",
        f"20260303T202000Z-{anna}-abandoned-cart-cart_reminder_2-email.html",
    ]
    page = (outbox / names[1]).read_text()
    assert page.startswith("<!doctype html>") and '<meta charset="utf-8">' in page and "Bell" in page
    assert b"Subject:" in (outbox / names[0]).read_bytes()


def test_the_readmes_sample_is_what_simulate_prints(demo: Path, tmp_path: Path) -> None:
    readme = (Path(__file__).parent.parent / "README.md").read_text(encoding="utf-8")
    quick_start = re.search(r"/events -H [^\n]*-d '\n(.*?)'\n", readme, re.DOTALL)
    sample = re.search(
        r"`boomerang simulate --events events.jsonl --show` prints.*?\n```\n(.*?)```", readme, re.DOTALL
    )
    assert quick_start and sample
    event = json.loads(quick_start.group(1))
    assert event["data"]["cart"]["url"] and all(item["url"] for item in event["data"]["cart"]["items"])
    events = tmp_path / "events.jsonl"
    events.write_text(json.dumps(event) + "\n")
    code, out, err = run(demo, "--events", str(events), "--show")
    assert code == 0, err
    assert out == sample.group(1)


def test_outbox_writes_an_sms_as_readable_text(project: Path, tmp_path: Path) -> None:
    only_abandoned_cart(project)
    config = project / "boomerang.yaml"
    sid = "AC" + "0" * 32  # Twilio is never called
    sms = f'channels:\n  sms: {{account_sid: {sid}, auth_token: t, from: "+15550001111"}}\n'
    config.write_text(config.read_text().replace("channels:\n", sms))
    phone_only = {key: value for key, value in CART["customer"].items() if key != "email"}
    events = tmp_path / "events.jsonl"
    events.write_text(json.dumps({**CART, "customer": {**phone_only, "phone": "+15551234567"}}) + "\n")
    outbox = tmp_path / "rehearsed"
    code, _, err = run(project, "--events", str(events), "--outbox", str(outbox))
    assert code == 0, err
    files = sorted(outbox.iterdir())
    assert [path.name for path in files] == ["20260302T202000Z-c_1-abandoned-cart-cart_reminder-sms.txt"]
    lines = files[0].read_text().splitlines()
    assert lines[:3] == ["Channel:  sms", "To:       +15551234567", "Locale:   ru"]
    assert lines[-2:] == ["", "Здравствуйте, ваша корзина ждёт: https://shop.example/c/1"]  # then the text
