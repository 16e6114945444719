"""Issue 9, section 2: events that poisoned the daemon, each reproduced the way it was reported.

An event dated 0999 was stored as `999-06-01...` and could not be read back: the daemon exited
and every restart exited again. Overflowing and over-long values and deeply nested JSON gave
500s; a far-future `at` made every later event of a customer look older. Here they meet the
real daemon over real HTTP (and the real `boomerang run` process for the crash loop).
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from boomerang.clock import parse_time, to_iso
from boomerang.ingest import parse_event
from boomerang.plugins.channels.push import write_key_pair
from boomerang.tokens import seal, sign
from conftest import (
    AUTH,
    BOOMERANG,
    SECRET,
    bearer,
    daemon_process,
    event,
    project_database,
    running,
    url,
    wait_for,
)

HELLO = "---\nsubject: Hello\n---\n<p>Hello {{ customer.id }}</p>\n"
SCENARIOS = {
    # sends at once: shows that other customers' journeys still run
    "welcome": """\
scenario: welcome
category: transactional
trigger: {event: welcome.requested}
steps:
  - send: hello
    channels: [email]
""",
    # an hour's wait: leaves a journey, a job and (later) a message in the store
    "later": """\
scenario: later
category: trigger
trigger: {event: signup.completed}
steps:
  - wait: 1h
  - send: hello
    channels: [email]
""",
    # a short idle wait, for the far-future visit
    "idle": """\
scenario: idle
category: transactional
trigger: {event: cart.updated}
steps:
  - wait: 1s
    until_idle: 2s
  - send: hello
    channels: [email]
""",
}


def own_scenarios(project: Path, extra_config: str = "") -> None:
    """The `init` project (outbox on) with only our scenarios and a `hello` email template."""
    for old in (project / "scenarios").glob("*.yaml"):
        old.unlink()
    for name, text in SCENARIOS.items():
        (project / "scenarios" / f"{name}.yaml").write_text(text)
    (project / "templates" / "hello").mkdir()
    (project / "templates" / "hello" / "email.en.html").write_text(HELLO)
    if extra_config:
        config = project / "boomerang.yaml"
        config.write_text(config.read_text() + extra_config)


def live(event_id: str, type_: str = "welcome.requested", at: str | None = None, **customer: Any) -> dict:
    """An event dated now (or `at`), for a customer with an email address."""
    customer = customer or {"id": "c-1"}
    customer.setdefault("email", f"{customer['id']}@example.com")
    return {**event(event_id, type_, customer=customer), "at": at or datetime.now(UTC).isoformat()}


def nested(depth: int) -> dict:
    """A JSON object `depth` containers deep."""
    value: dict = {}
    for _ in range(depth - 1):
        value = {"a": value}
    return value


async def post(http: aiohttp.ClientSession, address: str, body: Any, **headers: str) -> tuple[int, str]:
    data = body if isinstance(body, bytes) else json.dumps(body)
    async with http.post(address, data=data, headers=headers) as response:
        return response.status, await response.text()


def sent_to(project: Path, customer_id: str) -> list[Path]:
    """Emails in the outbox addressed to a customer."""
    return [
        path
        for path in (project / "outbox").glob("*-email-*.eml")
        if f"To: {customer_id}@example.com" in path.read_text()
    ]


# 1. the year 999 and the live window
async def test_an_event_dated_0999_is_refused_with_400_naming_at_and_nothing_is_stored(project: Path) -> None:
    own_scenarios(project)
    async with running(project) as daemon, aiohttp.ClientSession() as http:
        tomorrow_and_more = (datetime.now(UTC) + timedelta(days=1, hours=1)).isoformat()
        for at, why in (
            ("0999-06-01T00:00:00Z", "is before 2000-01-01T00:00:00.000000Z"),
            ("1999-12-31T23:59:59Z", "is before 2000-01-01T00:00:00.000000Z"),
            (tomorrow_and_more, "is more than 24h ahead of this server's clock"),
        ):
            status, text = await post(http, url(daemon, "/events"), live("e-1", at=at), **AUTH)
            assert status == 400, text
            assert json.loads(text)["error"].startswith(f"event 'e-1': 'at' {at} {why}")
        # One bad event rejects its batch, and the message names it by position and id.
        batch = [live("e-1"), live("e-2", at="0999-06-01T00:00:00Z")]
        status, text = await post(http, url(daemon, "/events"), batch, **AUTH)
        assert status == 400
        assert json.loads(text)["error"].startswith("event 2 'e-2': 'at' 0999-06-01T00:00:00Z is before")
        assert (await daemon.store.run(daemon.store.counts))["events"] == 0
        # The edges of the window are inside it.
        for at in ("2000-01-01T00:00:00Z", (datetime.now(UTC) + timedelta(hours=23)).isoformat()):
            status, text = await post(http, url(daemon, "/events"), live(f"ok-{at}", at=at), **AUTH)
            assert status == 200, text


async def test_the_window_is_configurable_and_checked_with_positions(project: Path) -> None:
    own_scenarios(project, "ingest:\n  earliest: 1990-01-01\n  future: 2h\n")
    async with running(project) as daemon, aiohttp.ClientSession() as http:
        address = url(daemon, "/events")
        assert (await post(http, address, live("e-1", at="1995-05-05T10:00:00Z"), **AUTH))[0] == 200
        three_hours = (datetime.now(UTC) + timedelta(hours=3)).isoformat()
        status, text = await post(http, address, live("e-2", at=three_hours), **AUTH)
        assert status == 400 and "is more than 2h ahead" in text
    config = project / "boomerang.yaml"
    config.write_text(config.read_text().replace("1990-01-01", "someday").replace("future: 2h", "futur: 2h"))
    check = subprocess.run([BOOMERANG, "check", "--config", str(config)], capture_output=True, text=True)
    assert check.returncode == 1
    lines = config.read_text().splitlines()
    earliest_line = next(n for n, line in enumerate(lines, 1) if "someday" in line)
    assert f"boomerang.yaml:{earliest_line}:13: error: 'earliest': 'someday' is not a date" in check.stdout
    assert f"boomerang.yaml:{earliest_line + 1}:3: error: unknown setting 'ingest.futur'" in check.stdout


def test_timestamps_are_written_with_four_digit_years_and_read_back() -> None:
    for text in ("0999-06-01T00:00:00Z", "0001-01-01T00:00:00Z", "9999-12-31T23:59:59Z"):
        written = to_iso(parse_time(text))
        assert written[:4] == text[:4] and parse_time(written) == parse_time(text)


def test_simulate_takes_any_four_digit_year(project: Path, tmp_path: Path) -> None:
    own_scenarios(project)
    events = tmp_path / "events.jsonl"
    events.write_text(
        "\n".join(
            json.dumps(live(f"e-{year}", at=f"{year}-12-31T12:00:00Z", id=f"c-{year}"))
            for year in ("0999", "1999", "9999")
        )
    )
    result = subprocess.run(
        [
            BOOMERANG,
            "simulate",
            "--config",
            str(project / "boomerang.yaml"),
            "--events",
            str(events),
            "--json",
        ],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    sends = [json.loads(line) for line in result.stdout.splitlines() if '"send"' in line]
    assert {line["customer"]: line["at"][:10] for line in sends} == {
        "c-0999": "0999-12-31",
        "c-1999": "1999-12-31",
        "c-9999": "9999-12-31",
    }


# 2. values that overflowed or recursed: 400 with a message, never 500
@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"at": "9999-12-31T23:00:00-05:00"}, "'at': '9999-12-31T23:00:00-05:00' is outside the years"),
        ({"customer": {"id": "c-1", "timezone": "A" * 300}}, "customer.timezone 'AAAA"),
        ({"customer": {"id": "c-1", "attributes": nested(33)}}, "customer.attributes is nested 33 levels"),
        ({"data": nested(40)}, "'data' is nested 40 levels deep; at most 32"),
        ({"customer": {"id": "c-1", "attributes": nested(600)}}, "the JSON is nested 602 levels deep"),
    ],
)
async def test_overflowing_and_overlong_values_get_400_with_a_message(
    project: Path, change: dict, message: str
) -> None:
    own_scenarios(project)
    async with running(project) as daemon, aiohttp.ClientSession() as http:
        status, text = await post(http, url(daemon, "/events"), {**live("e-1"), **change}, **AUTH)
        assert status == 400, text
        assert message in json.loads(text)["error"]


async def test_what_passes_validation_at_the_depth_limit_is_sent(project: Path) -> None:
    own_scenarios(project)
    async with running(project) as daemon, aiohttp.ClientSession() as http:
        deepest = {**live("e-1", id="c-deep", attributes=nested(32)), "data": nested(32)}
        status, text = await post(http, url(daemon, "/events"), deepest, **AUTH)
        assert status == 200, text
        await wait_for(lambda: sent_to(project, "c-deep"), 20)


# 3. JSON nested 100 000 deep at every endpoint that reads a body
def every_channel(project: Path) -> None:
    """Every channel on (the outbox stands in for the providers), with their endpoints."""
    write_key_pair(project)
    twilio = "account_sid: AC0123456789abcdef0123456789abcdef, auth_token: twilio-token"
    channels = (
        "channels:\n"
        '  push: {vapid_private_key: ./vapid.pem, subject: "mailto:ops@shop.example"}\n'
        f'  sms: {{{twilio}, from: "+15550001111"}}\n'
        f'  whatsapp: {{{twilio}, from: "whatsapp:+15550001111"}}\n'
        "  telegram: {token: '123:abc', bot_username: ShopBot, webhook_secret: hook-secret, mode: webhook}\n"
    )
    config = project / "boomerang.yaml"
    config.write_text(config.read_text().replace("channels:\n", channels))


async def test_json_nested_100000_deep_gets_400_or_the_credential_refusal_on_every_endpoint(
    project: Path,
) -> None:
    own_scenarios(project)
    every_channel(project)
    async with running(project) as daemon, aiohttp.ClientSession() as http:
        await daemon.store.run(
            daemon.store.insert_message,
            {
                "id": "m-1",
                "customer_id": "c-1",
                "template": "hello",
                "category": "trigger",
                "channel": "email",
                "status": "sent",
                "created_at": to_iso(datetime.now(UTC)),
            },
        )
        unsubscribe = f"/u/{sign(SECRET, 'unsubscribe', 'm-1')}"
        telegram = {"X-Telegram-Bot-Api-Secret-Token": "hook-secret"}
        json_type = {"Content-Type": "application/json"}
        subscriber = bearer(seal(SECRET, "push", "c-1"))
        expected = [
            # (path, headers, status): the credential first, then the body
            ("/events", {}, 401),
            ("/events", AUTH, 400),
            ("/push/subscribe", {}, 403),
            ("/push/subscribe", subscriber, 400),
            ("/push/click", {}, 403),
            ("/push/click", bearer(sign(SECRET, "click", "m-1:push")), 204),  # the token is all it reads
            ("/hooks/telegram", {}, 403),
            ("/hooks/telegram", telegram, 400),
            ("/callbacks/sms", {}, 403),
            ("/callbacks/whatsapp", {}, 403),
            ("/u/not-a-token", {}, 404),
            (unsubscribe, {}, 200),  # one-click unsubscribe: the body is a form, not JSON
        ]
        # 100 000 levels as reported; 8 000 fit the push endpoints' 16 KiB and still broke json.loads.
        for depth in (100_000, 8_000):
            deep = b"[" * depth + b"]" * depth
            for path, headers, status in expected:
                if path == "/push/subscribe" and status == 400 and len(deep) > 16 * 1024:
                    status = 413
                answer, text = await post(http, url(daemon, path), deep, **json_type, **headers)
                assert (depth, path, answer) == (depth, path, status), text
                if status == 400:
                    assert f"nested {depth} levels deep" in json.loads(text)["error"]


async def test_without_a_token_the_push_endpoints_answer_403_before_the_body_is_read(project: Path) -> None:
    """The report's 100 000-deep body on `/push/subscribe` without any token: refused while most of
    it is still unsent, so the handler never waited for it, let alone parsed it; and a body
    above the push endpoints' 16 KiB limit gets the same 403, not the 413 of a body read."""
    own_scenarios(project)
    every_channel(project)
    deep = b"[" * 100_000 + b"]" * 100_000
    json_type = {"Content-Type": "application/json"}
    async with running(project) as daemon, aiohttp.ClientSession() as http:
        for path in ("/push/subscribe", "/push/click"):
            answered = asyncio.Event()

            async def body(answered: asyncio.Event = answered) -> AsyncIterator[bytes]:
                yield deep[:1024]
                await answered.wait()  # the rest only once the daemon has answered
                yield deep[1024:]

            # Chunked, with no Content-Length: a handler that reads the body waits here for ever.
            sending = http.post(url(daemon, path), data=body(), headers=json_type)
            async with asyncio.timeout(5), sending as answer:
                answered.set()
                assert (path, answer.status) == (path, 403)
            status, text = await post(http, url(daemon, path), deep, **json_type)
            assert (path, status) == (path, 403), text


# 4. the crash loop: unreadable rows fail themselves, never the loop or the start
def corrupt(project: Path) -> list[tuple[str, str]]:
    """Damage rows of each table of the project's database, as reported and by hand; returns
    (table, row id) of each."""
    now = time.time()
    with project_database(project) as db:
        # As the old `to_iso` wrote an event dated 0999 (`%Y` unpadded), not yet acted on.
        db.execute(
            "INSERT INTO events (id, type, at, customer_id, data, source, received_at)"
            " VALUES ('e-999', 'signup.completed', '999-06-01T00:00:00.000000Z', 'c-good', '{}', 'api', ?)",
            [to_iso(datetime.now(UTC))],
        )
        db.execute(
            "INSERT INTO events (id, type, at, customer_id, data, source, received_at)"
            " VALUES ('e-json', 'signup.completed', ?, 'c-good', '{\"cart\": [1, 2', 'api', ?)",
            [to_iso(datetime.now(UTC)), to_iso(datetime.now(UTC))],
        )
        db.execute("UPDATE customers SET attributes = '{\"vip\": tru' WHERE id = 'c-bad-customer'")
        journey = db.execute("SELECT id FROM journeys WHERE customer_id = 'c-bad-journey'").fetchone()[0]
        db.execute("UPDATE journeys SET context = 'not json' WHERE id = ?", [journey])
        job = db.execute(
            "SELECT id FROM jobs WHERE journey_id IN"
            " (SELECT id FROM journeys WHERE customer_id = 'c-bad-job')"
        ).fetchone()[0]
        db.execute("UPDATE jobs SET payload = '{broken' WHERE id = ?", [job])
        other = db.execute("SELECT id FROM journeys WHERE customer_id = 'c-bad-message'").fetchone()[0]
        db.execute(
            "INSERT INTO messages (id, journey_id, customer_id, scenario, step, template, category, status,"
            " context, created_at) VALUES ('m-bad', ?, 'c-bad-message', 'later', '1', 'hello', 'trigger',"
            " 'pending', '{}', 'yesterday')",
            [other],
        )
        db.execute(
            "INSERT INTO jobs (kind, due_at, priority, journey_id, key, payload)"
            " VALUES ('send', ?, 50, ?, 'send:m-bad', '{\"message\": \"m-bad\"}')",
            [now, other],
        )
        # The hour's wait is over for everyone.
        db.execute("UPDATE jobs SET due_at = ? WHERE kind = 'advance'", [now])
    return [
        ("events", "e-999"),
        ("events", "e-json"),
        ("customers", "c-bad-customer"),
        ("journeys", journey),
        ("jobs", str(job)),
        ("messages", "m-bad"),
    ]


@pytest.mark.slow
async def test_unreadable_rows_are_set_aside_and_the_real_daemon_keeps_serving(
    project: Path, tmp_path: Path
) -> None:
    own_scenarios(project)
    log = tmp_path / "daemon.log"
    port = int(os.environ["BOOMERANG_PORT"])
    base = f"http://127.0.0.1:{port}"
    customers = ["c-good", "c-bad-customer", "c-bad-journey", "c-bad-job", "c-bad-message"]
    async with daemon_process(project, log), aiohttp.ClientSession() as http:
        signups = [live(f"s-{c}", "signup.completed", id=c) for c in customers]
        assert (await post(http, f"{base}/events", signups, **AUTH))[0] == 200

        def waiting() -> int:
            with project_database(project) as db:
                return db.execute("SELECT count(*) FROM jobs WHERE kind = 'advance'").fetchone()[0]

        await wait_for(lambda: waiting() == len(customers), 20)
    rows = corrupt(project)

    async with daemon_process(project, log), aiohttp.ClientSession() as http:
        # The good customer's journey goes on; a new customer's starts and finishes.
        await wait_for(lambda: sent_to(project, "c-good"), 20)
        assert (await post(http, f"{base}/events", live("w-1", id="c-new"), **AUTH))[0] == 200
        await wait_for(lambda: sent_to(project, "c-new"), 20)
        # An event of the customer whose row is damaged is still taken (kept, profile untouched).
        assert (await post(http, f"{base}/events", live("w-bad", id="c-bad-customer"), **AUTH))[0] == 200
        text = log.read_text()
        for table, row_id in rows:
            assert f"cannot read back {table} row {row_id} (" in text, text
        assert "Traceback" not in text
    # Whatever was damaged did not go; the journey of the damaged message sent its own step.
    for customer in ("c-bad-customer", "c-bad-journey", "c-bad-job"):
        assert not sent_to(project, customer)
    assert not list((project / "outbox").glob("*m-bad*")) and len(sent_to(project, "c-bad-message")) == 1

    # And again: no crash loop; what was set aside is not met (nor logged) again.
    before = log.read_text().count("cannot read back")
    async with daemon_process(project, log), aiohttp.ClientSession() as http:
        assert (await post(http, f"{base}/events", live("w-2", id="c-next"), **AUTH))[0] == 200
        await wait_for(lambda: sent_to(project, "c-next"), 20)
    assert log.read_text().count("cannot read back events") == 2
    assert log.read_text().count("cannot read back") == before
    with project_database(project) as db:
        quarantined = {(table, row) for table, row in db.execute("SELECT table_name, row_id FROM quarantine")}
        assert quarantined == set(rows)
        job = dict(rows)["jobs"]
        assert db.execute("SELECT count(*) FROM jobs WHERE id = ?", [job]).fetchone()[0] == 0
        assert db.execute("SELECT handled FROM events WHERE id = 'e-999'").fetchone()[0] == 1
    explain = subprocess.run(
        [BOOMERANG, "explain", "c-good", "--config", str(project / "boomerang.yaml")],
        capture_output=True,
        text=True,
    )
    assert explain.returncode == 0 and "Traceback" not in explain.stderr, explain.stderr
    assert "Set aside (stored rows that cannot be read back" in explain.stdout
    assert "  events e-999: ValueError: '999-06-01T00:00:00.000000Z' is not" in explain.stdout


# 5. a far-future `at` must not poison a profile or an idle wait
async def test_a_far_future_event_neither_outranks_later_events_nor_postpones_an_idle_wait(
    project: Path,
) -> None:
    own_scenarios(project)
    now = datetime.now(UTC)
    async with running(project) as daemon, aiohttp.ClientSession() as http:
        address = url(daemon, "/events")

        async def send(item: dict) -> None:
            status, text = await post(http, address, item, **AUTH)
            assert status == 200, text

        async def import_(item: dict) -> None:
            """Past the live window, as a history import (or a wide `ingest.future`) lets it in."""
            assert (await daemon.ingest([parse_event(item)], "import")).accepted == 1

        await import_(
            live("e-2036", "customer.updated", "2036-01-01T00:00:00Z", id="c-1", consents={"email": True})
        )
        # A real event, now: the consent is withdrawn and the address changes.
        await send(
            live("e-now", "customer.updated", id="c-1", email="new@example.com", consents={"email": False})
        )
        customer = await daemon.store.run(daemon.store.customer, "c-1")
        assert customer.email == "new@example.com" and customer.consents == {"email": False}
        assert customer.updated_at <= datetime.now(UTC)
        # A withdrawal applies whatever the order of `at`: yesterday's "no" after today's "yes".
        await send(live("e-yes", "customer.updated", id="c-1", consents={"email": True}))
        yesterday = (now - timedelta(days=1)).isoformat()
        await send(live("e-no", "customer.updated", yesterday, id="c-1", consents={"email": False}))
        customer = await daemon.store.run(daemon.store.customer, "c-1")
        assert customer.consents == {"email": False}

        # The idle wait: a cart, then a visit dated 2036 arriving now.
        await send(live("cart", "cart.updated", id="c-2"))
        await import_(live("view", "product.viewed", "2036-01-01T00:00:00Z", id="c-2"))
        await wait_for(lambda: sent_to(project, "c-2"), 15)
        customer = await daemon.store.run(daemon.store.customer, "c-2")
        assert customer.last_seen_at <= datetime.now(UTC)
        due = await daemon.store.run(daemon.store.next_due_at)
        assert due is None or due < (now + timedelta(days=1)).timestamp()
