"""Issue 9, section 5: `/push/subscribe` took 40 subscriptions for one customer, including
`https://169.254.169.254/latest/0` and `https://127.0.0.1:6001/...`, each then POSTed to on every
send.

Against the daemon started in-process on a `boomerang init` project and the local push service
(tests/fakes/push_service.py, over TLS on 127.0.0.1): subscriptions are capped per customer (oldest
dropped); endpoints are only those of the known push services, or of `allowed_hosts`; an IP
address, loopback, link-local or private endpoint is refused with 400 and never POSTed to;
subscribe tokens expire and a browser moves between customers without merging them.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp
import pytest
from click.testing import CliRunner
from test_channel_push import SCENARIO, SUBJECT, TEMPLATE, cart_event, configure, push_project

import conftest
from boomerang.cli import build_cli
from boomerang.config import load_config
from boomerang.daemon import Daemon
from boomerang.model import MAX_PUSH_SUBSCRIPTIONS
from boomerang.plugin_manager import load_plugins
from boomerang.plugins.channels.push import channel_from_config, write_key_pair
from boomerang.plugins.channels.push_http import PublicResolver
from boomerang.tokens import seal, unseal
from fakes.push_service import PushService


@pytest.fixture
async def service(tmp_path: Path):
    """The local push service, serving for one test."""
    push_service = PushService(subject=SUBJECT)
    await push_service.start(tmp_path)
    yield push_service
    await push_service.stop()


async def subscribe(daemon: Daemon, subscription: dict, token: str | None = None) -> tuple[int, dict]:
    """POST /push/subscribe as the shop's page does; the status and the JSON answer."""
    body = {"subscription": subscription}
    headers = conftest.bearer(token or seal(conftest.SECRET, "push", "c-42"))
    async with (
        aiohttp.ClientSession() as http,
        http.post(conftest.url(daemon, "/push/subscribe"), json=body, headers=headers) as answer,
    ):
        return answer.status, await answer.json()


async def post_event(daemon: Daemon, event: dict) -> None:
    """The shop's server, on the authenticated POST /events."""
    async with (
        aiohttp.ClientSession() as http,
        http.post(conftest.url(daemon, "/events"), json=event, headers=conftest.AUTH) as answer,
    ):
        assert answer.status == 200, await answer.text()


async def settled(daemon: Daemon, kinds: tuple[str, ...]) -> list:
    """The journal of c-42 once it holds an entry of one of `kinds`."""

    async def entries() -> list:
        entries = await daemon.store.run(daemon.store.journal, "c-42")
        return entries if any(entry.kind in kinds for entry in entries) else []

    return await conftest.wait_for(entries, what="the journey to get to a send or a drop")


async def test_forty_subscriptions_keep_only_the_newest(project: Path, service: PushService) -> None:
    push_project(project, service)  # the local push service is allowed, as staging would allow its own
    subscriptions = [service.subscribe() for _ in range(40)]
    async with conftest.running(project) as daemon:
        for subscription in subscriptions:
            assert (await subscribe(daemon, subscription))[0] == 200
        customer = await daemon.store.run(daemon.store.customer, "c-42")
        newest = subscriptions[-MAX_PUSH_SUBSCRIPTIONS:]
        assert customer is not None and customer.push_subscriptions == newest

        await post_event(daemon, cart_event("e-1"))
        await service.wait_for(MAX_PUSH_SUBSCRIPTIONS)
        await settled(daemon, ("send",))
        # a sleep on purpose: no condition tells that nothing more will come, so give it time to
        await asyncio.sleep(0.3)
        assert sorted(push.id for push in service.pushes) == sorted(
            s["endpoint"].rsplit("/", 1)[1] for s in newest
        )


def refused_endpoints(port: int) -> list[str]:
    """The cloud metadata service, loopback, link-local, private networks and IP addresses in
    other spellings, a user name that hides the real host, and a host that is no push service."""
    return [
        "https://169.254.169.254/latest/0",
        f"https://127.0.0.1:{port}/push/1",
        f"https://[::1]:{port}/push/1",
        f"https://localhost:{port}/push/1",
        "https://10.0.0.7/push/1",
        "https://172.16.0.1/push/1",
        "https://192.168.1.10/push/1",
        "https://[fe80::1]/push/1",
        "https://2130706433/push/1",  # 127.0.0.1 as one number
        "https://0x7f.1/push/1",
        f"https://fcm.googleapis.com@127.0.0.1:{port}/push/1",
        "https://fcm.googleapis.com.attacker.example/push/1",
        "https://push.attacker.example/push/1",
    ]


async def test_endpoints_inside_or_at_ip_addresses_are_refused(project: Path, service: PushService) -> None:
    write_key_pair(project)  # the push channel as shipped: no allowed_hosts, no private endpoints
    configure(
        project, f'{{vapid_private_key: ./vapid.pem, subject: "{SUBJECT}", ca_file: {service.cert_file}}}'
    )
    for old in (project / "scenarios").glob("*.yaml"):
        old.unlink()
    (project / "scenarios" / "cart_push.yaml").write_text(SCENARIO)
    (project / "templates" / "cart_push").mkdir()
    (project / "templates" / "cart_push" / "push.en.txt").write_text(TEMPLATE)
    browser = service.subscribe()  # real keys: only the endpoint is wrong
    async with conftest.running(project) as daemon:
        for endpoint in refused_endpoints(service.port):
            status, answer = await subscribe(daemon, {**browser, "endpoint": endpoint})
            assert status == 400, endpoint
            assert "'endpoint'" in answer["error"], endpoint
        assert await daemon.store.run(daemon.store.customer, "c-42") is None

        # the real push services are accepted, without any setting
        token = seal(conftest.SECRET, "push", "c-7")
        for endpoint in (
            "https://fcm.googleapis.com/fcm/send/dGhpcyBpcyBhIHRlc3Q",
            "https://updates.push.services.mozilla.com/wpush/v2/gAAAAA",
            "https://web.push.apple.com/QGuQyavXutnMH",
            "https://wns2-par02p.notify.windows.com/w/?token=BQYAAAB",
        ):
            assert (await subscribe(daemon, {**browser, "endpoint": endpoint}, token))[0] == 200, endpoint

        # one stored before this fix, or given on POST /events, is never POSTed to either
        customer = {"id": "c-42", "name": "Anna", "locale": "en", "push_subscriptions": [browser]}
        await post_event(daemon, conftest.event("e-0", "customer.updated", customer=customer))
        await post_event(daemon, cart_event("e-1"))
        journal = await settled(daemon, ("send", "drop"))
        assert [entry.kind for entry in journal if entry.kind in ("send", "drop")] == ["drop"]
    assert service.pushes == []


async def test_a_subscribe_token_older_than_7_days_is_refused(project: Path, service: PushService) -> None:
    push_project(project, service)
    now = datetime.now(UTC)
    async with conftest.running(project) as daemon:
        stale = seal(conftest.SECRET, "push", "c-42", now=now - timedelta(days=7, minutes=1))
        status, answer = await subscribe(daemon, service.subscribe(), stale)
        assert status == 403 and "7 days" in answer["error"]
        fresh = seal(conftest.SECRET, "push", "c-42", now=now - timedelta(days=6, hours=23))
        assert (await subscribe(daemon, service.subscribe(), fresh))[0] == 200


async def test_a_browser_moves_to_the_customer_who_subscribed_it_last(
    project: Path, service: PushService
) -> None:
    push_project(project, service)
    browser = service.subscribe()
    async with conftest.running(project) as daemon:
        await post_event(daemon, conftest.event("e-1", id="c-1", email="one@example.com"))
        await post_event(daemon, conftest.event("e-2", id="c-2", email="two@example.com"))
        assert (await subscribe(daemon, browser, seal(conftest.SECRET, "push", "c-1")))[0] == 200
        assert (await subscribe(daemon, browser, seal(conftest.SECRET, "push", "c-2")))[0] == 200
        store = daemon.store
        one, two = await store.run(store.customer, "c-1"), await store.run(store.customer, "c-2")
        assert one is not None and (one.email, one.push_subscriptions) == ("one@example.com", [])
        assert two is not None and (two.email, two.push_subscriptions) == ("two@example.com", [browser])


def test_allowed_hosts_extend_the_list_and_are_checked_with_positions(project: Path) -> None:
    write_key_pair(project)
    config = configure(
        project,
        f'{{vapid_private_key: ./vapid.pem, subject: "{SUBJECT}", '
        'allowed_hosts: [push.example.net, "*.push.example.org"]}',
    )
    channel = channel_from_config(load_config(config))
    keys = {"p256dh": PushService().subscribe()["keys"]["p256dh"], "auth": "AAAAAAAAAAAAAAAAAAAAAA"}
    for endpoint, usable in [
        ("https://push.example.net/s/1", True),
        ("https://eu.push.example.org/s/1", True),
        ("https://push.example.org/s/1", False),  # *. is for subdomains
        ("https://other.example.net/s/1", False),
    ]:
        assert (channel.unusable({"endpoint": endpoint, "keys": keys}) is None) is usable, endpoint

    text = config.read_text()
    text = text.replace(
        'allowed_hosts: [push.example.net, "*.push.example.org"]',
        "allowed_hosts: [push.example.net, 10.0.0.7, not a host], allow_private_endpoints: sometimes",
    )
    config.write_text(text)
    line = next(n for n, row in enumerate(text.splitlines(), 1) if "allowed_hosts" in row)
    row = text.splitlines()[line - 1]
    result = CliRunner().invoke(build_cli(load_plugins([])), ["check", "--config", str(config)])
    assert result.exit_code == 1
    assert (
        f"boomerang.yaml:{line}:{row.index('10.0.0.7') + 1}: error: 'allowed_hosts': 10.0.0.7 is not a public"
        in (result.output)
    )
    assert (
        f"boomerang.yaml:{line}:{row.index('not a host') + 1}: error: 'allowed_hosts': 'not a host'"
        in result.output
    )
    assert (
        f"boomerang.yaml:{line}:{row.index('sometimes') + 1}: error: 'allow_private_endpoints' must be"
        in (result.output)
    )


async def test_a_host_name_that_resolves_inside_is_not_connected_to() -> None:
    with pytest.raises(OSError, match="no public address"):
        await PublicResolver().resolve("localhost")


def test_a_shop_server_in_any_language_can_make_a_subscribe_token() -> None:
    """The format core/tokens.py describes, built here without Boomerang's code, is accepted."""

    def key(use: bytes) -> bytes:
        return hmac.new(
            conftest.SECRET.encode(), b"boomerang sealed token\0push\0" + use, hashlib.sha256
        ).digest()

    plaintext = int(time.time()).to_bytes(4, "big") + b"\0" + b"c-42"
    tag = hmac.new(key(b"mac"), plaintext, hashlib.sha256).digest()[:12]
    keystream = hmac.new(key(b"enc"), tag + (0).to_bytes(4, "big"), hashlib.sha256).digest()
    sealed = tag + bytes(a ^ b for a, b in zip(plaintext, keystream, strict=False))
    token = base64.urlsafe_b64encode(sealed).rstrip(b"=").decode()
    assert unseal(conftest.SECRET, "push", token) == "c-42"
    assert unseal(conftest.SECRET, "telegram", token) is None  # only good for its purpose
