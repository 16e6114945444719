"""The daemon in-process: POST /events, its errors, reloads and metrics."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from boomerang import metrics
from boomerang.daemon import Daemon, StartupError
from conftest import AUTH, event, project_database, running, url, wait_for


async def post(daemon: Daemon, body: str | bytes, headers: dict | None = None) -> tuple[int, dict]:
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            url(daemon, "/events"), data=body, headers=AUTH if headers is None else headers
        ) as response,
    ):
        return response.status, await response.json(content_type=None)


async def test_events_need_the_bearer_token(project: Path) -> None:
    async with running(project) as daemon:
        body = json.dumps(event("e1"))
        assert (await post(daemon, body, headers={}))[0] == 401
        status, answer = await post(daemon, body, headers={"Authorization": "Bearer wrong-token"})
        assert status == 401
        assert "bearer token" in answer["error"]
        assert (await post(daemon, body, headers={"Authorization": "Basic " + AUTH["Authorization"]}))[
            0
        ] == 401
        assert await daemon.store.run(daemon.store.counts) == {"customers": 0, "events": 0}


async def test_object_array_and_json_lines_are_accepted_once(project: Path) -> None:
    async with running(project) as daemon:
        assert await post(daemon, json.dumps(event("e1"))) == (200, {"accepted": 1, "duplicates": 0})
        array = json.dumps([event("e1"), event("e2"), event("e2")])
        assert await post(daemon, array) == (200, {"accepted": 1, "duplicates": 2})
        lines = "\n".join(json.dumps(event(f"e{i}")) for i in range(2, 6)) + "\n\n"
        assert await post(daemon, lines) == (200, {"accepted": 3, "duplicates": 1})


@pytest.mark.sqlite_only
async def test_events_are_committed_before_the_answer(project: Path) -> None:
    async with running(project) as daemon:
        status, _ = await post(daemon, json.dumps(event("e1", email="anna@example.com")))
        assert status == 200
        # A second connection sees the row: the transaction was committed, not just buffered.
        with project_database(project) as other:
            rows = other.execute("SELECT id, substr(customer_id, 1, 5) FROM events").fetchall()
        assert rows == [("e1", "anon-")]


async def test_malformed_events_get_400_and_store_nothing(project: Path) -> None:
    async with running(project) as daemon:
        status, answer = await post(daemon, '{"id": "e1", "type": ')
        assert status == 400
        assert "invalid JSON" in answer["error"]
        bad_second = json.dumps(event("e1")) + "\n" + json.dumps({**event("e2"), "at": "yesterday"})
        status, answer = await post(daemon, bad_second)
        assert status == 400
        assert answer["error"].startswith("line 2 'e2': 'at'")
        status, answer = await post(
            daemon, json.dumps([event("e1"), {"id": "e2", "type": "x.y", "at": "2026-03-02T10:00:00Z"}])
        )
        assert status == 400
        assert "event 2 'e2'" in answer["error"] and "customer" in answer["error"]
        assert await daemon.store.run(daemon.store.counts) == {"customers": 0, "events": 0}


async def test_a_body_over_one_mebibyte_gets_413(project: Path) -> None:
    async with running(project) as daemon:
        padding = " " * (1024 * 1024)
        async with aiohttp.ClientSession() as session:
            body = json.dumps(event("e1")) + padding
            async with session.post(url(daemon, "/events"), data=body, headers=AUTH) as response:
                assert response.status == 413


async def test_healthz_and_metrics(project: Path, monkeypatch) -> None:
    monkeypatch.setattr(metrics, "STORE_FIGURES_SECONDS", 0.05)
    monkeypatch.setattr(metrics, "ROW_COUNT_SECONDS", 0)
    async with running(project) as daemon:
        await post(daemon, json.dumps([event("e1"), event("e1")]))
        async with aiohttp.ClientSession() as session:
            async with session.get(url(daemon, "/healthz")) as response:
                assert response.status == 200
                assert (await response.json())["status"] == "ok"

            async def scraped() -> dict | None:
                """The samples once the store's figures were read after the event was stored."""
                async with session.get(url(daemon, "/metrics")) as response:
                    text = await response.text()
                samples = {
                    (sample.name, tuple(sorted(sample.labels.items()))): sample.value
                    for family in text_string_to_metric_families(text)
                    for sample in family.samples
                }
                return samples if samples[("boomerang_events", ())] == 1 else None

            samples = await wait_for(scraped, what="the store's figures read")
        ingested = ("boomerang_events_ingested_total", (("source", "api"), ("type", "cart.updated")))
        assert samples[ingested] == 1
        assert samples[("boomerang_events_duplicate_total", (("source", "api"),))] == 1
        assert samples[("boomerang_customers", ())] == 1


async def test_reload_keeps_the_old_project_when_a_scenario_is_broken(project: Path, caplog) -> None:
    async with running(project) as daemon:
        before = [s.id for s in daemon.project.scenarios]
        (project / "scenarios" / "broken.yaml").write_text("scenario: broken\nsteps: [\n", encoding="utf-8")
        assert await daemon.reload() is False
        assert [s.id for s in daemon.project.scenarios] == before
        assert any("broken.yaml:3:1: error: invalid YAML" in r.getMessage() for r in caplog.records)
        assert (await post(daemon, json.dumps(event("e1"))))[0] == 200

        (project / "scenarios" / "broken.yaml").write_text(
            "scenario: fixed\ntrigger: {event: order.placed}\nsteps: [stop]\n", encoding="utf-8"
        )
        assert await daemon.reload() is True
        assert sorted(s.id for s in daemon.project.scenarios) == sorted([*before, "fixed"])


async def test_reload_applies_a_new_api_token(project: Path, monkeypatch) -> None:
    async with running(project) as daemon:
        monkeypatch.setenv("BOOMERANG_API_TOKEN", "a-brand-new-token-0123456789")
        assert await daemon.reload() is True
        assert (await post(daemon, json.dumps(event("e1"))))[0] == 401
        new = {"Authorization": "Bearer a-brand-new-token-0123456789"}
        assert (await post(daemon, json.dumps(event("e1")), headers=new))[0] == 200


async def test_an_invalid_config_stops_the_start_with_positions(project: Path) -> None:
    config = project / "boomerang.yaml"
    config.write_text(config.read_text() + "\nlisten_port: 9\n", encoding="utf-8")
    daemon = Daemon(config)
    try:
        await daemon.start()
    except StartupError as exc:
        assert "boomerang.yaml:" in str(exc) and "unknown setting 'listen_port'" in str(exc)
    else:
        await daemon.stop()
        raise AssertionError("the daemon started with an invalid config")


async def test_a_scenario_runs_in_the_daemon_and_writes_to_the_outbox(project: Path) -> None:
    for scenario in (project / "scenarios").glob("*.yaml"):
        scenario.unlink()
    (project / "scenarios" / "welcome.yaml").write_text(
        "scenario: welcome\ntrigger: {event: signup.completed}\nsteps:\n  - wait: 1s\n  - send: welcome\n"
    )
    (project / "templates" / "welcome").mkdir()
    (project / "templates" / "welcome" / "email.en.html").write_text(
        "---\nsubject: Welcome, {{ customer.name }}\n---\n<p>Hello {{ customer.name }}!</p>\n"
    )
    async with running(project) as daemon:
        signup = {
            **event("s-1", "signup.completed"),
            "customer": {"id": "c-1", "email": "a@b.cc", "name": "Ann"},
        }
        assert (await post(daemon, json.dumps(signup)))[0] == 200
        [written] = await wait_for(
            lambda: list((project / "outbox").glob("*-email-*.eml")), what="a message in the outbox"
        )
        assert "Subject: Welcome, Ann" in written.read_text()
        # A template that no longer parses is refused on reload; the old one stays in use.
        (project / "templates" / "welcome" / "email.en.html").write_text("---\nsubject: x\n---\n{% if %}\n")
        assert await daemon.reload() is False
        assert daemon.project.templates.get("welcome") is not None


@pytest.mark.sqlite_only
async def test_a_second_daemon_on_the_same_database_is_refused(project: Path, monkeypatch) -> None:
    async with running(project):
        monkeypatch.setenv("BOOMERANG_PORT", "0")
        second = Daemon(project / "boomerang.yaml")
        try:
            await second.start()
        except StartupError as exc:
            assert "another boomerang daemon is using" in str(exc)
        else:
            await second.stop()
            raise AssertionError("two daemons shared one database")


POLLER = """
import asyncio
from boomerang import hookimpl
from boomerang.kinds import Source

RUNS = []

class Ticker(Source):
    name = "ticker"

    def __init__(self, label):
        self.label = label

    async def poll(self, ingest, stop):
        RUNS.append(("start", self.label))
        await stop.wait()
        RUNS.append(("stop", self.label))

@hookimpl
def register_sources(config):
    return [Ticker(config.default_locale)]
"""


async def test_a_reload_replaces_the_pollers_of_sources(project: Path, monkeypatch) -> None:
    (project / "plugins" / "ticker.py").write_text(POLLER)
    async with running(project) as daemon:
        module = next(
            p for p in daemon.plugins.pm.get_plugins() if getattr(p, "__file__", "").endswith("ticker.py")
        )
        await wait_for(lambda: module.RUNS)
        config = project / "boomerang.yaml"
        config.write_text(config.read_text().replace("default_locale: en", "default_locale: ru"))
        assert await daemon.reload()
        await wait_for(lambda: len(module.RUNS) >= 3)
        assert module.RUNS == [("start", "en"), ("stop", "en"), ("start", "ru")]
    assert module.RUNS[-1] == ("stop", "ru")  # and stopped with the daemon


CRM_PLUGIN = """\
from boomerang import hookimpl
from boomerang.kinds import Action


async def note(customer_id, text):
    return {"noted": True}


@hookimpl
def register_actions(config):
    return [Action("crm.note", note)]
"""


async def test_reload_says_a_new_drop_in_plugin_needs_a_restart(project: Path, caplog) -> None:
    async with running(project) as daemon:
        (project / "plugins" / "crm.py").write_text(CRM_PLUGIN, encoding="utf-8")
        (project / "scenarios" / "crm.yaml").write_text(
            "scenario: crm\ntrigger: {event: order.placed}\nsteps:\n"
            "  - send: cart_reminder\n    channels: [sms]\n"
            '  - action: crm.note\n    with: {customer_id: "{{ customer.id }}", text: hi}\n',
            encoding="utf-8",
        )
        caplog.clear()
        assert await daemon.reload() is False
        logged = [(r.levelname, r.getMessage()) for r in caplog.records]
        scenario = project / "scenarios" / "crm.yaml"
        assert ("WARNING", "reload: plugins changed (crm.py (added)): restart to load them") in logged
        assert ("ERROR", f"{scenario}:6:5: error: unknown action 'crm.note'; registered: none") in logged
        warning = f"{scenario}:4:5: warning: channel 'sms' is not configured: this step will not use it"
        assert ("WARNING", warning) in logged
        assert (
            "ERROR",
            "reload failed: still running the previous configuration; plugins changed: restart to load them",
        ) in logged


async def test_the_start_up_log_lists_what_was_loaded_and_the_outbox_says_written(demo: Path, caplog) -> None:
    caplog.set_level(logging.INFO, logger="boomerang")
    async with running(demo) as daemon:
        logged = [r.getMessage() for r in caplog.records]
        assert any(line.startswith("scenarios (8): abandoned-cart, ") for line in logged), logged
        assert "channels: email, push, sms, telegram, whatsapp" in logged
        outbox = daemon.project.config.outbox
        assert f"outbox mode: nothing is sent, messages go to {outbox}" in logged
        assert any(line.startswith("sources: ") and "telegram" in line for line in logged)
        assert any(line.startswith("plugins: ") and "email" in line for line in logged)
        shipped = event("e-ship", "order.shipped", customer={"id": "c-7", "email": "c7@example.com"})
        shipped["data"] = {"order": {"id": "7", "items": []}}
        assert (await post(daemon, json.dumps(shipped)))[0] == 200
        await wait_for(
            lambda: sorted(outbox.glob("*-email-*.eml")) if outbox.exists() else [], what="an email"
        )
        sends = await wait_for(
            lambda: [r.getMessage() for r in caplog.records if r.getMessage().startswith("message ")],
            what="the send logged",
        )
    assert sends[0].endswith("via email: written to the outbox"), sends
