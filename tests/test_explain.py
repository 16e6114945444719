"""`boomerang explain`: one customer's profile, events, journeys and decisions on one timeline."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp
from click.testing import CliRunner

from boomerang.cli import cli
from conftest import AUTH, running, url, wait_for

SCENARIO = """scenario: welcome
category: promo
trigger: {event: signup.completed}
steps:
  - send: welcome
  - send: welcome
"""
LATER = """scenario: later
trigger: {event: signup.completed}
steps:
  - wait: 1d
  - send: welcome
"""


async def test_explain_shows_profile_journeys_and_decisions(project: Path) -> None:
    for old in (project / "scenarios").glob("*.yaml"):
        old.unlink()
    (project / "scenarios" / "welcome.yaml").write_text(SCENARIO)
    (project / "scenarios" / "later.yaml").write_text(LATER)
    (project / "templates" / "welcome").mkdir()
    (project / "templates" / "welcome" / "email.en.html").write_text(
        "---\nsubject: Hi {{ customer.name }}\n---\n<p>Welcome aboard, {{ customer.name }}!</p>\n<p>Mo</p>\n"
    )
    config = project / "boomerang.yaml"
    # at most one promo per day: the second send of the same moment waits for tomorrow
    config.write_text(config.read_text() + "  caps:\n    - {categories: [promo], max: 1, per: 1d}\n")
    signup = {
        "id": "s-1",
        "type": "signup.completed",
        "at": "2026-03-02T10:00:00Z",
        "customer": {"id": "c-1", "email": "anna@example.com", "name": "Anna", "timezone": "Asia/Tokyo"},
    }
    before = datetime.now(UTC)
    async with running(project) as daemon:
        async with (
            aiohttp.ClientSession() as session,
            session.post(url(daemon, "/events"), data=json.dumps(signup), headers=AUTH) as answer,
        ):
            assert answer.status == 200

        async def deferred_and_sent() -> bool:
            kinds = [e.kind for e in await daemon.store.run(daemon.store.journal, "c-1")]
            return "defer" in kinds and "send" in kinds

        await wait_for(deferred_and_sent)
    text = CliRunner().invoke(cli, ["explain", "--config", str(config), "anna@example.com"])
    assert text.exit_code == 0, text.output
    lines = text.stdout.splitlines()
    assert lines[0] == "Customer c-1 (Anna)"
    assert "timezone Asia/Tokyo" in lines[2]
    # both steps were queued at once, so the journey is complete while its second message waits
    assert any(line.startswith("  welcome ") and "completed" in line for line in lines)
    timeline = [line for line in lines if line.startswith("  20")]
    assert "event   signup.completed (s-1)" in timeline[0]
    assert any("send    welcome 0 welcome email" in line for line in timeline)
    # each message's subject and first line under its send
    sent = next(n for n, line in enumerate(lines) if "send    welcome 0 welcome email" in line)
    assert lines[sent + 1 : sent + 3] == ["      │ Hi Anna", "      │ Welcome aboard, Anna!"]
    # the active journey's next due time: its wait of a day from when the event came in
    waiting = next(line for line in lines if line.startswith("  later "))
    assert "active" in waiting and "at step 0, next due " in waiting and " theirs)" in waiting
    assert any(
        "defer   welcome 1 welcome" in line and "cap 1 per 1d (promo) reached" in line for line in timeline
    )

    as_json = CliRunner().invoke(cli, ["explain", "--config", str(config), "c-1", "--json"])
    document = json.loads(as_json.stdout)
    assert document["customer"]["email"] == "anna@example.com"
    kinds = [row["kind"] for row in document["timeline"]]
    assert kinds[0] == "event" and "enter" in kinds and "send" in kinds and "defer" in kinds
    sends = [row for row in document["timeline"] if row["kind"] == "send"]
    assert [(row["subject"], row["first_line"]) for row in sends] == [("Hi Anna", "Welcome aboard, Anna!")]
    journeys = {journey["scenario"]: journey for journey in document["journeys"]}
    assert journeys["welcome"]["next_due"] is None
    due = datetime.fromisoformat(journeys["later"]["next_due"])
    assert before + timedelta(days=1) - timedelta(seconds=1) <= due <= datetime.now(UTC) + timedelta(days=1)


def test_explain_an_unknown_customer(project: Path) -> None:
    result = CliRunner().invoke(cli, ["explain", "--config", str(project / "boomerang.yaml"), "nobody"])
    assert result.exit_code == 1
    assert "no database" in result.stderr or "no customer 'nobody'" in result.stderr
