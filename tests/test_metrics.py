"""`GET /metrics` on the daemon in-process, after real events, refused webhooks and sends to
the outbox, read back with `prometheus_client`'s own parser; and the store's figures read from
a real database."""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families
from test_source_woocommerce import SECRET, configure, order

from boomerang import metrics
from boomerang.metrics import Metrics, read_store_figures
from boomerang.model import Journey
from boomerang.store import Store
from conftest import AUTH, event, running, t, url, wait_for
from fakes.woocommerce_api import delivery_headers

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def parse(text: str) -> Samples:
    """Every sample of an exposition, by name and labels."""
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float | None:
    """The sample of this name and exactly these labels, or None if there is none."""
    return samples.get((name, frozenset(labels.items())))


async def scrape(daemon: Any) -> tuple[str, Samples]:
    """GET /metrics: its content type and its samples."""
    async with aiohttp.ClientSession() as session, session.get(url(daemon, "/metrics")) as response:
        assert response.status == 200
        return response.headers["Content-Type"], parse(await response.text())


def two_scenarios(project: Path) -> None:
    """`welcome` sends at once after a second and ends; `nurture` waits a day (stays active)."""
    for scenario in (project / "scenarios").glob("*.yaml"):
        scenario.unlink()
    (project / "scenarios" / "welcome.yaml").write_text(
        "scenario: welcome\ntrigger: {event: signup.completed}\nsteps:\n  - wait: 1s\n  - send: welcome\n"
    )
    (project / "scenarios" / "nurture.yaml").write_text(
        "scenario: nurture\ntrigger: {event: signup.completed}\nsteps:\n  - wait: 1d\n  - send: welcome\n"
    )
    (project / "templates" / "welcome").mkdir()
    (project / "templates" / "welcome" / "email.en.html").write_text(
        "---\nsubject: Welcome, {{ customer.name }}\n---\n<p>Hello {{ customer.name }}!</p>\n"
    )


async def post(session: aiohttp.ClientSession, daemon: Any, body: str | bytes, **headers: str) -> int:
    async with session.post(url(daemon, "/events"), data=body, headers={**AUTH, **headers}) as response:
        return response.status


async def test_metrics_count_events_refusals_sends_and_journeys(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(metrics, "STORE_FIGURES_SECONDS", 0.05)
    monkeypatch.setattr(metrics, "ROW_COUNT_SECONDS", 0)
    two_scenarios(project)
    configure(project)  # the WooCommerce source, whose webhooks are signed
    signups = [
        {**event("s-1", "signup.completed"), "customer": {"id": "c-1", "email": "a@b.cc", "name": "Ann"}},
        {**event("s-2", "signup.completed"), "customer": {"id": "c-2"}},  # no address at all
    ]
    async with running(project) as daemon, aiohttp.ClientSession() as session:
        assert await post(session, daemon, json.dumps(signups)) == 200
        # a known type twice (once a duplicate), a custom one
        assert await post(session, daemon, json.dumps([event("e-1"), event("e-1")])) == 200
        assert await post(session, daemon, json.dumps(event("e-2", "loyalty.tier_changed"))) == 200
        # refusals: a wrong token, a body that is no JSON, a wrong WooCommerce signature
        assert await post(session, daemon, json.dumps(event("e-3")), Authorization="Bearer wrong") == 401
        assert await post(session, daemon, '{"id": ') == 400
        assert await post(session, daemon, json.dumps(event("e-4")) + " " * (1024 * 1024)) == 413
        body = json.dumps(order()).encode()
        headers = {**delivery_headers(SECRET, body, "order.created"), "X-WC-Webhook-Signature": "bm90IGl0"}
        async with session.post(url(daemon, "/hooks/woocommerce"), data=body, headers=headers) as response:
            assert response.status == 401
        headers = delivery_headers(SECRET, body, "order.created")
        async with session.post(url(daemon, "/hooks/woocommerce"), data=body, headers=headers) as response:
            assert response.status == 200

        await wait_for(
            lambda: list((project / "outbox").glob("*-email-*.eml")), what="the welcome in the outbox"
        )

        async def settled() -> Samples | None:
            _, samples = await scrape(daemon)
            sent = value(samples, "boomerang_messages_total", channel="email", result="sent")
            dropped = value(samples, "boomerang_messages_total", channel="none", result="dropped")
            nurture = value(samples, "boomerang_journeys_active", scenario="nurture")
            welcome = value(samples, "boomerang_journeys_active", scenario="welcome")
            return samples if (sent, dropped, nurture, welcome) == (1, 1, 2, 0) else None

        samples = await wait_for(settled, what="the sends recorded and the store's figures read")
        content_type, _ = await scrape(daemon)

    assert content_type == "text/plain; version=0.0.4; charset=utf-8"
    ingested = "boomerang_events_ingested_total"
    assert value(samples, ingested, source="api", type="cart.updated") == 1
    assert value(samples, ingested, source="api", type="other") == 3  # signup.completed twice, the custom one
    assert value(samples, ingested, source="woocommerce", type="order.placed") == 1
    assert value(samples, ingested, source="email", type="message.sent") is None  # stored by the send itself
    assert value(samples, "boomerang_events_duplicate_total", source="api") == 1
    rejections = "boomerang_webhook_rejections_total"
    assert value(samples, rejections, source="api", reason="unauthorized") == 1
    assert value(samples, rejections, source="api", reason="bad_body") == 1
    assert value(samples, rejections, source="api", reason="too_large") == 1
    assert value(samples, rejections, source="woocommerce", reason="unauthorized") == 1
    # Ann's welcome went by email; c-2 has no address: the plan dropped theirs.
    decisions = "boomerang_plan_decisions_total"
    assert value(samples, decisions, outcome="send", rule="best_channel") == 1
    assert value(samples, decisions, outcome="drop", rule="unreachable") == 1
    assert value(samples, "boomerang_send_duration_seconds_count", channel="email") == 1
    assert value(samples, "boomerang_send_duration_seconds_bucket", channel="email", le="+Inf") == 1
    assert value(samples, "boomerang_customers") == 4  # Ann, c-2, c-42, and WooCommerce's John
    # every kind of job is reported, due or not (the figures are tested in the store's test below)
    for kind in ("send", "advance", "action", "tick", "fallback", "visit"):
        assert value(samples, "boomerang_jobs_due", kind=kind) is not None
    assert value(samples, "boomerang_queue_lag_seconds") is not None
    assert value(samples, "boomerang_reloads_total", result="ok") == 0
    # No label holds a customer's data.
    labels = {label for name, labels in samples for label in labels}
    assert not {("customer", "c-1"), ("email", "a@b.cc")} & labels
    assert not any("a@b.cc" in text or text == "c-1" for _, text in labels)


async def test_reloads_are_counted(project: Path) -> None:
    async with running(project) as daemon:
        assert await daemon.reload() is True
        (project / "scenarios" / "broken.yaml").write_text("scenario: broken\nsteps: [\n")
        assert await daemon.reload() is False
        _, samples = await scrape(daemon)
    assert value(samples, "boomerang_reloads_total", result="ok") == 1
    assert value(samples, "boomerang_reloads_total", result="failed") == 1


async def test_openmetrics_when_the_scraper_asks_for_it(project: Path) -> None:
    async with running(project) as daemon, aiohttp.ClientSession() as session:
        accept = "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5"
        async with session.get(url(daemon, "/metrics"), headers={"Accept": accept}) as response:
            assert response.headers["Content-Type"].startswith("application/openmetrics-text; version=1.0.0")
            assert (await response.text()).endswith("# EOF\n")


def test_each_metrics_has_a_registry_of_its_own() -> None:
    """Two daemons in one process (as the tests run them) count apart."""
    first, second = Metrics(), Metrics()
    first.reloaded(ok=True)
    assert value(parse(first.exposition(None)[0].decode()), "boomerang_reloads_total", result="ok") == 1
    assert value(parse(second.exposition(None)[0].decode()), "boomerang_reloads_total", result="ok") == 0


def test_unknown_event_types_count_as_other() -> None:
    """The type label holds only the types the sources declare: its series stay few."""
    counted = Metrics(event_types={"order.placed"})
    events = [
        *(json.loads(json.dumps(event(f"e{i}", f"spam.{i}"))) for i in range(50)),
        event("o", "order.placed"),
    ]
    counted.ingested([_stored(raw, "api") for raw in events])
    samples = parse(counted.exposition(None)[0].decode())
    assert value(samples, "boomerang_events_ingested_total", source="api", type="other") == 50
    assert value(samples, "boomerang_events_ingested_total", source="api", type="order.placed") == 1
    assert len([key for key in samples if key[0] == "boomerang_events_ingested_total"]) == 2


def _stored(raw: dict[str, Any], source: str) -> Any:
    from boomerang.ingest import parse_event

    stored = parse_event(raw)
    stored.source = source
    return stored


def test_the_store_figures_come_from_a_read_only_connection(database: Path | str) -> None:
    """Active journeys by scenario, due jobs by kind (leased ones are not waiting), and the
    lag of the oldest, read through a second, read-only connection beside the writer."""
    writer = Store(database)
    now = time.time()
    with writer.transaction():
        for number, (scenario, status) in enumerate(
            [("cart", "active"), ("cart", "active"), ("cart", "ended"), ("birthday", "active")]
        ):
            entered = t("2026-03-02 10:00")
            journey = Journey(
                f"j{number}", scenario, f"c{number}", str(number), status, False, "0", 0, {}, entered
            )
            writer.insert_journey(journey, entered)
        writer.add_job("send", now - 30, 50, {"message": "m1"})
        writer.add_job("send", now - 5, 50, {"message": "m2"})
        writer.add_job("advance", now - 60, 0, {}, journey_id="j0")  # claimed below: running
        writer.add_job("advance", now + 3600, 0, {}, journey_id="j1")  # not due yet
        [claimed] = writer.claim_due(now - 59, 120, 1)
        assert claimed.kind == "advance"
    scenarios, kinds = ["cart", "birthday", "welcome"], ["send", "advance", "tick"]
    reader = Store(database, read_only=True)
    try:
        figures = read_store_figures(reader, scenarios, kinds, now)
        # Rows are counted again only once a minute: in between, the last counts stand.
        counted = dataclasses.replace(figures, customers=7, events=70)
        again = read_store_figures(reader, scenarios, kinds, now + 5, counted)
        later = read_store_figures(reader, scenarios, kinds, now + metrics.ROW_COUNT_SECONDS, counted)
    finally:
        reader.close()
        writer.close()
    assert figures.journeys_active == {"cart": 2, "birthday": 1, "welcome": 0}
    assert figures.jobs_due == {"send": 2, "advance": 0, "tick": 0}
    assert figures.queue_lag == pytest.approx(30, abs=1)
    assert (figures.customers, figures.events, figures.counted_at) == (0, 0, now)
    assert (again.customers, again.events, again.counted_at) == (7, 70, now)
    assert (later.customers, later.events) == (0, 0)
    collected = Metrics()
    collected.store.figures = figures
    samples = parse(collected.exposition(None)[0].decode())
    assert value(samples, "boomerang_journeys_active", scenario="cart") == 2
    assert value(samples, "boomerang_jobs_due", kind="send") == 2
    assert value(samples, "boomerang_queue_lag_seconds") == pytest.approx(30, abs=1)
