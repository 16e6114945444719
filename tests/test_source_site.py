"""Site tracking (seed S14): `GET /t.js` and `POST /t` on the daemon, CORS, limits, rate limits,
signed and unsigned identify, heartbeats, and `site.left` (durable across a kill -9) that a wait
`until_idle` waits for."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp
import pytest
from site_tracking import SHOP, call, configure_site, events, headers, owner, rows, visitor_id

import conftest
from boomerang.config import load_config
from boomerang.plugin_manager import load_plugins
from boomerang.problems import ProblemError
from boomerang.project import load_project
from boomerang.tokens import seal, unseal
from conftest import AUTH, SECRET, running, url, wait_for

IDLE_SCENARIO = """
scenario: idle-reminder
trigger: {event: cart.updated}
steps:
  - wait: 1s
    until_idle: 1s
  - set: {reminded: true}
"""


def token(customer_id: str, **kwargs) -> str:
    """What the shop's server makes for a logged-in customer."""
    return seal(SECRET, "site", customer_id, **kwargs)


async def post(session: aiohttp.ClientSession, daemon, body: bytes, origin: str = SHOP, **extra):
    """POST /t; (status, JSON answer, headers)."""
    async with session.post(url(daemon, "/t"), data=body, headers={**headers(origin), **extra}) as response:
        return response.status, await response.json(content_type=None), response.headers


async def post_event(session: aiohttp.ClientSession, daemon, **customer) -> None:
    """A customer the shop knows, through POST /events."""
    body = conftest.event(f"e-{customer['id']}", "customer.updated", datetime.now(UTC), customer)
    async with session.post(url(daemon, "/events"), json=body, headers=AUTH) as response:
        assert response.status == 200, await response.text()


# the script
async def test_the_script_is_served_cacheable(project: Path) -> None:
    configure_site(project)
    async with running(project) as daemon, aiohttp.ClientSession() as session:
        async with session.get(url(daemon, "/t.js")) as response:
            assert response.status == 200
            assert response.content_type == "text/javascript"
            assert "max-age=3600" in response.headers["Cache-Control"]
            etag = response.headers["ETag"]
            script = await response.text()
        assert "boomerang" in script and "sendBeacon" in script and "visibilitychange" in script
        async with session.get(url(daemon, "/t.js"), headers={"If-None-Match": etag}) as response:
            assert response.status == 304


async def test_without_the_section_nothing_is_served(project: Path) -> None:
    async with (
        running(project) as daemon,
        aiohttp.ClientSession() as session,
        session.get(url(daemon, "/t.js")) as response,
    ):
        assert response.status == 404


# CORS
async def test_only_the_shop_origins_may_call(project: Path) -> None:
    configure_site(project, SHOP, "https://www.shop.example")
    visitor = visitor_id()
    async with running(project) as daemon, aiohttp.ClientSession() as session:
        preflight = {
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "content-type",
        }
        async with session.options(url(daemon, "/t"), headers={"Origin": SHOP, **preflight}) as response:
            assert response.status == 204
            assert response.headers["Access-Control-Allow-Origin"] == SHOP
            assert "POST" in response.headers["Access-Control-Allow-Methods"]
        async with session.options(
            url(daemon, "/t"), headers={"Origin": "https://evil.example", **preflight}
        ) as response:
            assert response.status == 403
            assert "Access-Control-Allow-Origin" not in response.headers
        status, answer, sent = await post(
            session, daemon, call(visitor, "product.viewed"), "https://evil.example"
        )
        assert status == 403 and "origin" in answer["error"]
        assert "Access-Control-Allow-Origin" not in sent
        async with session.post(url(daemon, "/t"), data=call(visitor, "product.viewed")) as response:
            assert response.status == 403  # no Origin at all
        assert events(project) == [] and owner(project, visitor) is None
        status, answer, sent = await post(
            session, daemon, call(visitor, "product.viewed"), "https://www.shop.example"
        )
        assert status == 200 and sent["Access-Control-Allow-Origin"] == "https://www.shop.example"
        assert answer["ok"] is True and answer["beat"] >= 1


# what /t takes
@pytest.mark.parametrize(
    ("body", "status", "says"),
    [
        (b"{", 400, ""),
        (b"[]", 400, "one JSON object"),
        (b'{"a": 1}\n{"b": 2}', 400, "one JSON object"),
        # named: its random event id would make the id differ between pytest-xdist's workers
        pytest.param(call("short", "product.viewed"), 400, "'v'", id="short-visitor"),
        (call(visitor_id(), "order.placed"), 400, "'type'"),
        (call(visitor_id(), "product.viewed", extra=1), 400, "unknown field"),
        (call(visitor_id(), "product.viewed", data=[1]), 400, "'data'"),
        (call(visitor_id(), "product.viewed", email="a@example.com"), 400, "takes no email"),
        (call(visitor_id(), "site.active", data={}), 400, "takes no data"),
        (call(visitor_id(), "identify"), 400, "either 'email' or 'token'"),
        (call(visitor_id(), "identify", email="a@example.com", token="x"), 400, "either"),
        (call(visitor_id(), "identify", email="not an email"), 400, "not an email"),
        (call(visitor_id(), "identify", email=["a@example.com"]), 400, "text"),
        (call(visitor_id(), "identify", token="forged"), 403, "token"),
        (call(visitor_id(), "identify", token=None), 403, "token"),
        (call(visitor_id(), "identify", email=None), 400, "text"),
        (call(visitor_id(), "product.viewed", data=None), 400, "'data'"),
        (
            call(visitor_id(), "identify", token=token("c-1", now=datetime.now(UTC) - timedelta(days=8))),
            403,
            "",
        ),
        (call(visitor_id(), "product.viewed", data={"x": "y" * 20000}), 413, "larger"),
    ],
)
async def test_a_bad_call_is_refused_and_stores_nothing(
    project: Path, body: bytes, status: int, says: str
) -> None:
    configure_site(project)
    async with running(project) as daemon, aiohttp.ClientSession() as session:
        answered, answer, sent = await post(session, daemon, body)
        assert (answered, says in answer["error"]) == (status, True), answer
        assert sent["Access-Control-Allow-Origin"] == SHOP  # the page's script may read why
        assert events(project) == []
        assert rows(project, "SELECT count(*) FROM jobs WHERE kind = 'visit'") == [(0,)]


async def test_the_body_type_and_size_are_checked_however_it_comes(project: Path) -> None:
    configure_site(project, max_body=1024)

    async def pieces(body: bytes):  # chunked: no Content-Length to go by
        for start in range(0, len(body), 100):
            yield body[start : start + 100]

    async with running(project) as daemon, aiohttp.ClientSession() as session:
        body = call(visitor_id(), "product.viewed")
        status, _, _ = await post(
            session, daemon, body, **{"Content-Type": "application/x-www-form-urlencoded"}
        )
        assert status == 415
        status, _, _ = await post(
            session, daemon, call(visitor_id(), "product.viewed", data={"x": "y" * 1100})
        )
        assert status == 413
        big = call(visitor_id(), "product.viewed", data={"x": "y" * 1100})
        assert (await post(session, daemon, pieces(big)))[0] == 413
        small = call(visitor_id(), "product.viewed", data={"x": "y" * 700})
        assert (await post(session, daemon, pieces(small)))[0] == 200
        assert len(events(project)) == 1


async def test_calls_past_a_visitors_rate_are_answered_429(project: Path) -> None:
    configure_site(project, per_visitor=3, per_ip=5)
    visitor = visitor_id()
    async with running(project) as daemon, aiohttp.ClientSession() as session:
        for _ in range(3):
            assert (await post(session, daemon, call(visitor, "product.viewed")))[0] == 200
        status, _, sent = await post(session, daemon, call(visitor, "product.viewed"))
        assert status == 429 and int(sent["Retry-After"]) >= 1
        assert len(events(project)) == 3
        # another visitor from the same address still may, up to the address's own rate
        other = visitor_id()
        assert (await post(session, daemon, call(other, "product.viewed")))[0] == 200
        assert (await post(session, daemon, call(visitor_id(), "product.viewed")))[0] == 429
        assert len(events(project)) == 4


# visitors and customers
async def test_a_visitors_events_are_stored_under_one_customer_and_heartbeats_store_none(
    project: Path,
) -> None:
    configure_site(project)
    visitor = visitor_id()
    async with running(project) as daemon, aiohttp.ClientSession() as session:
        for body in (
            call(visitor, "site.active"),
            call(visitor, "product.viewed", data={"product": {"sku": "B-1", "name": "Bicycle"}}),
            call(visitor, "cart.updated", data={"cart": {"items": [{"sku": "B-1"}], "total": 79.9}}),
            call(visitor, "site.active"),
            call(visitor, "site.active"),
        ):
            assert (await post(session, daemon, body))[0] == 200
        stored = events(project)
        assert [type_ for _, type_, _ in stored] == ["product.viewed", "cart.updated"]
        customer = owner(project, visitor)
        assert customer.startswith("anon-") and {c for _, _, c in stored} == {customer}
        assert all(event_id.startswith(f"site:{visitor}:") for event_id, _, _ in stored)
        assert rows(project, "SELECT count(*) FROM jobs WHERE kind = 'visit'") == [(1,)]
        seen = rows(project, "SELECT last_seen_at FROM customers WHERE id = ?", customer)[0][0]
        assert seen is not None


async def test_a_signed_identify_links_the_visitor_to_the_customer(project: Path) -> None:
    configure_site(project)
    visitor = visitor_id()
    async with running(project) as daemon, aiohttp.ClientSession() as session:
        await post_event(session, daemon, id="c-42", email="anna@example.com", name="Anna")
        assert (
            await post(session, daemon, call(visitor, "product.viewed", data={"product": {"sku": "B-1"}}))
        )[0] == 200
        anonymous = owner(project, visitor)
        status, _, _ = await post(session, daemon, call(visitor, "identify", token=token("c-42")))
        assert status == 200
        assert owner(project, visitor) == "c-42"
        assert (await post(session, daemon, call(visitor, "cart.updated", data={"cart": {"total": 5}})))[
            0
        ] == 200
        assert {c for _, _, c in events(project, "product.viewed") + events(project, "cart.updated")} == {
            "c-42"
        }
        assert rows(project, "SELECT count(*) FROM customers WHERE id = ?", anonymous) == [(0,)]
        identified = events(project, "site.identified")
        assert [c for _, _, c in identified] == ["c-42"]
        anna = rows(project, "SELECT email, name FROM customers WHERE id = 'c-42'")
        assert anna == [("anna@example.com", "Anna")]


async def test_an_unsigned_identify_of_a_customers_email_merges_and_changes_nothing(project: Path) -> None:
    configure_site(project)
    visitor = visitor_id()
    async with running(project) as daemon, aiohttp.ClientSession() as session:
        await post_event(session, daemon, id="c-kate", email="kate@example.com", phone="+79990001122")
        before = rows(project, "SELECT * FROM customers WHERE id = 'c-kate'")
        assert (await post(session, daemon, call(visitor, "product.viewed")))[0] == 200
        status, _, _ = await post(session, daemon, call(visitor, "identify", email="KATE@example.com"))
        assert status == 200
        assert (await post(session, daemon, call(visitor, "cart.updated", data={"cart": {"total": 1}})))[
            0
        ] == 200
        assert rows(project, "SELECT * FROM customers WHERE id = 'c-kate'") == before
        assert rows(project, "SELECT count(*) FROM events WHERE customer_id = 'c-kate'") == [(1,)]
        anonymous = owner(project, visitor)
        assert anonymous.startswith("anon-")
        assert rows(project, "SELECT email FROM customers WHERE id = ?", anonymous) == [(None,)]
        assert rows(project, "SELECT customer_id FROM identities WHERE value = 'kate@example.com'") == [
            ("c-kate",)
        ]


async def test_an_unsigned_identify_starts_a_profile_for_a_new_email_only(project: Path) -> None:
    configure_site(project)
    visitor, linked = visitor_id(), visitor_id()
    async with running(project) as daemon, aiohttp.ClientSession() as session:
        assert (await post(session, daemon, call(visitor, "identify", email="new@example.com")))[0] == 200
        anonymous = owner(project, visitor)
        assert rows(project, "SELECT email FROM customers WHERE id = ?", anonymous) == [("new@example.com",)]
        # typed again with another address: the first stays
        assert (await post(session, daemon, call(visitor, "identify", email="other@example.com")))[0] == 200
        assert rows(project, "SELECT email FROM customers WHERE id = ?", anonymous) == [("new@example.com",)]
        # a browser linked to a customer by a signed token: an unsigned email changes nothing of theirs
        await post_event(session, daemon, id="c-42", email="anna@example.com")
        assert (await post(session, daemon, call(linked, "identify", token=token("c-42"))))[0] == 200
        addresses = (
            "SELECT email, phone, whatsapp, addresses, consents, name FROM customers WHERE id = 'c-42'"
        )
        before = rows(project, addresses)
        assert (await post(session, daemon, call(linked, "identify", email="mallory@example.com")))[0] == 200
        assert rows(project, addresses) == before
        assert rows(project, "SELECT email FROM customers WHERE id = 'c-42'") == [("anna@example.com",)]
        assert rows(project, "SELECT count(*) FROM identities WHERE value = 'mallory@example.com'") == [(0,)]


async def test_a_signed_identify_keeps_a_typed_emails_profile_apart(project: Path) -> None:
    """On a shared computer: what one person typed is not folded into whoever logs in next."""
    configure_site(project)
    visitor = visitor_id()
    async with running(project) as daemon, aiohttp.ClientSession() as session:
        await post_event(session, daemon, id="c-42", email="anna@example.com")
        assert (await post(session, daemon, call(visitor, "identify", email="guest@example.com")))[0] == 200
        typed = owner(project, visitor)
        assert (await post(session, daemon, call(visitor, "identify", token=token("c-42"))))[0] == 200
        assert owner(project, visitor) == "c-42"
        assert rows(project, "SELECT email FROM customers WHERE id = ?", typed) == [("guest@example.com",)]
        assert rows(project, "SELECT email FROM customers WHERE id = 'c-42'") == [("anna@example.com",)]


# site.left
async def test_site_left_comes_once_after_the_visitor_went_quiet(project: Path) -> None:
    configure_site(project, left_after="1s")
    visitor = visitor_id()
    async with running(project) as daemon, aiohttp.ClientSession() as session:
        assert (await post(session, daemon, call(visitor, "product.viewed")))[0] == 200
        left = await wait_for(lambda: events(project, "site.left"), 10, "site.left")
        assert [c for _, _, c in left] == [owner(project, visitor)]
        data = json.loads(rows(project, "SELECT data FROM events WHERE type = 'site.left'")[0][0])
        assert data["idle"] == 1 and data["last_seen_at"]

        def visit_over() -> bool:  # removed just after its site.left is stored
            return rows(project, "SELECT count(*) FROM jobs WHERE kind = 'visit'") == [(0,)]

        await wait_for(visit_over, 10, "the visit's job to go")
        # a new visit, a new site.left
        assert (await post(session, daemon, call(visitor, "site.active")))[0] == 200
        await wait_for(lambda: len(events(project, "site.left")) == 2, 10, "the second site.left")


async def test_an_until_idle_wait_ends_only_after_the_visitor_left(project: Path) -> None:
    """The visit ends 3 s after the last call; the wait's own 1 s of quiet would end before."""
    configure_site(project, left_after="3s")
    (project / "scenarios" / "idle_reminder.yaml").write_text(IDLE_SCENARIO)
    visitor = visitor_id()
    async with running(project) as daemon, aiohttp.ClientSession() as session:
        cart = call(visitor, "cart.updated", data={"cart": {"total": 1}})
        assert (await post(session, daemon, cart))[0] == 200

        def reminded() -> bool:  # the one customer, the visitor's
            return [
                json.loads(a).get("reminded") for (a,) in rows(project, "SELECT attributes FROM customers")
            ] == [True]

        await wait_for(reminded, 20, "the wait to end")
        left = rows(project, "SELECT received_at FROM events WHERE type = 'site.left'")
        assert left, "the wait ended before the visitor left"


@pytest.mark.slow
def test_site_left_survives_a_kill(project: Path, tmp_path: Path) -> None:
    """The visit is in the database: a daemon killed with -9 before the visit ended stores its
    site.left after the restart, once."""
    configure_site(project, left_after="4s")
    visitor = visitor_id()
    log = tmp_path / "daemon.log"
    port = int(os.environ["BOOMERANG_PORT"])
    process = conftest.start_daemon(project, log)
    try:
        conftest.wait_until_serving(port)
        answer = subprocess.run(
            [
                "curl",
                "-s",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
                f"http://127.0.0.1:{port}/t",
                "-H",
                f"Origin: {SHOP}",
                "-H",
                "Content-Type: text/plain",
                "--data-binary",
                call(visitor, "product.viewed").decode(),
            ],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        assert answer == "200"
        process.send_signal(signal.SIGKILL)
        process.wait()
        assert events(project, "site.left") == []
        process = conftest.start_daemon(project, log)
        conftest.wait_until_serving(port)
        conftest.wait_until(lambda: events(project, "site.left"), 20, "site.left after the restart")
        process.send_signal(signal.SIGKILL)
        process.wait()
        process = conftest.start_daemon(project, log)
        conftest.wait_until_serving(port)
        # killed (maybe) between storing site.left and removing the visit's job: the job runs
        # again and finds its site.left stored
        visits = "SELECT count(*) FROM jobs WHERE kind = 'visit'"
        conftest.wait_until(lambda: rows(project, visits) == [(0,)], 20, "the visit's job to go")
        assert len(events(project, "site.left")) == 1
        process.send_signal(signal.SIGTERM)
        assert process.wait(15) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


# the README's examples
def readme_block(language: str, containing: str) -> str:
    """The README's code block in `language` that contains `containing`."""
    text = (Path(__file__).parents[1] / "README.md").read_text()
    return next(block for block in re.findall(rf"```{language}\n(.*?)```", text, re.S) if containing in block)


@pytest.mark.skipif(
    shutil.which("php") is None, reason="php-cli is not installed (Debian: apt-get install php-cli)"
)
@pytest.mark.parametrize("customer_id", ["c-42", "0b9d6c2e-5d1a-4c1e-9a57-3f2d8f1e7a11", "клиент-7"])
def test_the_php_example_makes_tokens_the_daemon_takes(tmp_path: Path, customer_id: str) -> None:
    script = tmp_path / "token.php"
    script.write_text(
        "<?php\n$customerId = $argv[1];\n" + readme_block("php", "boomerang_seal") + "echo $siteToken;\n"
    )
    made = subprocess.run(
        ["php", str(script), customer_id],
        capture_output=True,
        text=True,
        check=True,
        env={"BOOMERANG_SECRET": SECRET, "PATH": os.environ["PATH"]},
    ).stdout
    assert unseal(SECRET, "site", made) == customer_id
    assert unseal(SECRET, "push", made) is None


def test_the_readme_settings_load(project: Path) -> None:
    config = project / "boomerang.yaml"
    config.write_text(config.read_text() + "\n" + readme_block("yaml", "left_after: 10m"))
    source = load_project(config, load_plugins(load_config(config).plugin_dirs)).registry.sources["site"]
    assert source.origins == {"https://shop.example", "https://www.shop.example"}
    assert source.left_after == timedelta(minutes=10) and source.beat == 60


# settings
@pytest.mark.parametrize(
    ("section", "says"),
    [
        ("{}", "'origins' is required"),
        ('{origins: ["https://shop.example/path"]}', "is not an origin"),
        ('{origins: ["https://shop.example"], left_after: soon}', "'left_after'"),
        ('{origins: ["https://shop.example"], per_visitor: 0}', "'per_visitor'"),
        ('{origins: ["https://shop.example"], max_body: "big"}', "'max_body'"),
        ('{origins: ["https://shop.example"], orignis: 1}', "did you mean 'origins'"),
    ],
)
def test_bad_settings_are_reported_at_their_place(project: Path, section: str, says: str) -> None:
    config = project / "boomerang.yaml"
    config.write_text(config.read_text() + f"\nsources:\n  site: {section}\n")
    line = len(config.read_text().splitlines())
    with pytest.raises(ProblemError) as caught:
        load_project(config, load_plugins(load_config(config).plugin_dirs))
    problem = str(caught.value)
    assert says in problem and f"boomerang.yaml:{line}:" in problem, problem


def test_check_reports_bad_settings(project: Path) -> None:
    config = project / "boomerang.yaml"
    config.write_text(config.read_text() + '\nsources:\n  site: {origins: ["ftp://x"]}\n')
    result = subprocess.run(
        [conftest.BOOMERANG, "check", "--config", str(config)], capture_output=True, text=True, cwd=project
    )
    assert result.returncode == 1
    assert (
        "boomerang.yaml:" in result.stdout + result.stderr
        and "is not an origin" in result.stdout + result.stderr
    )
