"""The push channel against a local push service over TLS (tests/fakes/push_service.py) that checks
VAPID and decrypts every payload on its own: sending, push-service answers, the routes the
daemon serves, config errors, `boomerang webpush-keys`, and the real `boomerang run`."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import aiohttp
import pytest
from click.testing import CliRunner

from boomerang.cli import build_cli
from boomerang.config import load_config
from boomerang.model import Customer, DeliveryStatus, Message
from boomerang.plugin_manager import load_plugins
from boomerang.plugins.channels.push import (
    MAX_PAYLOAD,
    PushChannel,
    channel_from_config,
    load_private_key,
    public_key_of,
    write_key_pair,
)
from boomerang.problems import ProblemError
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
from fakes.push_service import PushService

SUBJECT = "mailto:ops@shop.example"
# The local push service listens on 127.0.0.1: allowed only by saying so, as staging would.
STAND_IN = {"allowed_hosts": ("127.0.0.1",), "allow_private_endpoints": True}
STAND_IN_SETTINGS = "allowed_hosts: [127.0.0.1], allow_private_endpoints: true"
SCENARIO = """
scenario: cart-push
category: transactional
trigger: {event: cart.updated}
steps:
  - send: cart_push
    channels: [push]
"""
TEMPLATE = """---
title: "{{ customer.name }}, your cart is waiting"
url: "{{ cart.url }}"
icon: https://shop.example/icon.png
---
{{ cart['items'][0].name }} is still in your cart.
"""


@pytest.fixture
async def service(tmp_path: Path):
    push_service = PushService(subject=SUBJECT)
    await push_service.start(tmp_path)
    yield push_service
    await push_service.stop()


@pytest.fixture
def key_file(tmp_path: Path) -> Path:
    return write_key_pair(tmp_path / "keys")[0]


@pytest.fixture
async def channel(service: PushService, key_file: Path):
    push = PushChannel(
        load_private_key(key_file),
        SUBJECT,
        ttl=3600,
        urgency="high",
        ca_file=service.cert_file,
        secret=SECRET,
        public_url="https://track.shop.example",
        **STAND_IN,
    )
    yield push
    await push.close()


def message(subscriptions: list[dict], **fields) -> Message:
    values = {
        "id": "m-1",
        "customer_id": "c-1",
        "channel": "push",
        "to": json.dumps(subscriptions),
        "template": "cart_push",
        "body": "The bicycle is still in your cart.",
        "extra": {
            "title": "Anna, your cart",
            "url": "https://shop.example/cart",
            "icon": "https://s.ex/i.png",
        },
    }
    return Message(**{**values, **fields})


# sending
async def test_the_payload_decrypts_to_the_notification_with_vapid_ttl_and_urgency(
    channel: PushChannel, service: PushService
) -> None:
    subscription = service.subscribe()
    delivery = await channel.send(message([subscription]))
    assert delivery.status is DeliveryStatus.SENT, delivery.detail
    [push] = service.received(subscription)
    assert push.status == 201 and push.error is None
    assert delivery.provider_id == f"{service.origin}/message/1"
    payload = push.payload
    assert payload["title"] == "Anna, your cart"
    assert payload["body"] == "The bicycle is still in your cart."
    assert payload["url"] == "https://shop.example/cart"
    assert payload["icon"] == "https://s.ex/i.png"
    assert payload["id"] == "m-1" and payload["click"]
    # VAPID: the signature verified against k, which is our public key; the claims are right.
    assert push.vapid_key == channel.public_key
    assert push.claims is not None
    assert push.claims["aud"] == service.origin and push.claims["sub"] == SUBJECT
    assert push.claims["exp"] > time.time()
    assert push.headers["TTL"] == "3600" and push.headers["Urgency"] == "high"
    assert push.headers["Content-Encoding"] == "aes128gcm"


async def test_the_push_service_really_checks_vapid_and_encryption(
    channel: PushChannel, service: PushService, key_file: Path
) -> None:
    # Encrypted for another auth secret: the service cannot decrypt it and refuses it.
    subscription = service.subscribe()
    wrong_auth = {**subscription, "keys": {**subscription["keys"], "auth": "AAAAAAAAAAAAAAAAAAAAAA"}}
    delivery = await channel.send(message([wrong_auth]))
    assert delivery.status is DeliveryStatus.FAILED
    assert service.pushes[-1].status == 400 and "does not decrypt" in (service.pushes[-1].error or "")
    # Signed for another contact than the one the service expects: refused as well.
    stranger = PushChannel(
        load_private_key(key_file), "mailto:else@shop.example", ca_file=service.cert_file, **STAND_IN
    )
    try:
        delivery = await stranger.send(message([subscription]))
    finally:
        await stranger.close()
    assert delivery.status is DeliveryStatus.FAILED
    assert service.pushes[-1].status == 403 and "sub" in (service.pushes[-1].error or "")


async def test_every_subscription_gets_it_and_gone_ones_are_reported(
    channel: PushChannel, service: PushService
) -> None:
    alive, gone, missing = service.subscribe(), service.subscribe(), service.subscribe()
    service.answer(gone, 410)
    service.answer(missing, 404)
    delivery = await channel.send(message([alive, gone, missing]))
    assert delivery.status is DeliveryStatus.SENT
    assert set(delivery.gone) == {gone["endpoint"], missing["endpoint"]}
    assert all(push.cleartext for push in service.pushes) and len(service.pushes) == 3
    assert "1 of 3 subscriptions" in delivery.detail


async def test_when_every_subscription_is_gone_the_address_is_invalid(
    channel: PushChannel, service: PushService
) -> None:
    subscription = service.subscribe()
    service.answer(subscription, 410)
    delivery = await channel.send(message([subscription]))
    assert delivery.status is DeliveryStatus.ADDRESS_INVALID
    assert delivery.gone == (subscription["endpoint"],)


@pytest.mark.parametrize(
    ("status", "headers", "expected", "retry_after"),
    [
        (429, {"Retry-After": "120"}, DeliveryStatus.RETRY, 120.0),
        (503, {}, DeliveryStatus.RETRY, None),
        (500, {}, DeliveryStatus.RETRY, None),
        (400, {}, DeliveryStatus.FAILED, None),
        (413, {}, DeliveryStatus.FAILED, None),
    ],
)
async def test_push_service_answers(
    channel: PushChannel, service: PushService, status, headers, expected, retry_after
) -> None:
    subscription = service.subscribe()
    service.answer(subscription, status, **headers)
    delivery = await channel.send(message([subscription]))
    assert delivery.status is expected, delivery.detail
    assert delivery.retry_after == retry_after
    assert delivery.gone == ()


async def test_a_retry_still_forgets_gone_endpoints(channel: PushChannel, service: PushService) -> None:
    busy, gone = service.subscribe(), service.subscribe()
    service.answer(busy, 429, **{"Retry-After": "30"})
    service.answer(gone, 410)
    delivery = await channel.send(message([busy, gone]))
    assert delivery.status is DeliveryStatus.RETRY and delivery.retry_after == 30
    assert delivery.gone == (gone["endpoint"],)


async def test_a_long_body_is_shortened_to_fit_4_kb(channel: PushChannel, service: PushService) -> None:
    subscription = service.subscribe()
    body = "Велосипед ждёт вас в корзине. " * 400
    delivery = await channel.send(message([subscription], body=body))
    assert delivery.status is DeliveryStatus.SENT, delivery.detail
    [push] = service.pushes
    assert len(push.cleartext or b"") <= MAX_PAYLOAD
    assert int(push.headers["Content-Length"]) <= 4096
    assert push.payload["body"].endswith("…") and body.startswith(push.payload["body"][:-1])
    assert push.payload["title"] == "Anna, your cart"


async def test_one_session_is_shared_and_closed(channel: PushChannel, service: PushService) -> None:
    subscription = service.subscribe()
    await channel.send(message([subscription], id="m-1"))
    session = channel._session
    await channel.send(message([subscription], id="m-2"))
    assert channel._session is session
    first, second = service.pushes
    assert first.peer == second.peer  # the same kept-alive connection
    await channel.close()
    assert session is not None and session.closed


async def test_the_push_service_certificate_is_verified(service: PushService, key_file: Path) -> None:
    untrusting = PushChannel(load_private_key(key_file), SUBJECT, **STAND_IN)  # no ca_file: the system's CAs
    try:
        delivery = await untrusting.send(message([service.subscribe()]))
    finally:
        await untrusting.close()
    assert delivery.status is DeliveryStatus.RETRY
    assert "Certificate" in delivery.detail or "SSL" in delivery.detail
    assert service.pushes == []


async def test_address_is_the_customers_subscriptions_as_json(
    channel: PushChannel, service: PushService
) -> None:
    from boomerang.model import Customer

    subscription = service.subscribe()
    broken = {"endpoint": "https://push.example/x", "keys": {"p256dh": "abc", "auth": "def"}}
    assert channel.address(Customer(id="c-1")) is None
    assert json.loads(
        channel.address(Customer(id="c-1", push_subscriptions=[subscription, broken])) or ""
    ) == [subscription]


# configuration and the key command
def configure(project: Path, settings: str) -> Path:
    config = project / "boomerang.yaml"
    text = config.read_text().replace("outbox: ./outbox\n", "")
    config.write_text(text.replace("channels:\n", f"channels:\n  push: {settings}\n"))
    return config


def test_config_problems_point_at_the_push_settings(project: Path) -> None:
    config = configure(
        project, '{vapid_private_key: ./nope.pem, subject: "ops", urgency: hi, ttl: 1y, colour: 1}'
    )
    with pytest.raises(ProblemError) as error:
        channel_from_config(load_config(config))
    text = str(error.value)
    line = next(n for n, row in enumerate(config.read_text().splitlines(), 1) if "vapid_private_key" in row)
    assert f"boomerang.yaml:{line}:" in text
    assert "nope.pem does not exist; create a key pair with `boomerang webpush-keys`" in text
    assert "'subject' must be a contact" in text
    assert "'urgency' must be one of very-low, low, normal, high (did you mean 'high'?)" in text
    assert "'ttl' must be seconds" in text
    assert "unknown push setting 'colour'" in text


def test_a_relative_key_path_is_read_from_the_config_folder(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, public_key = write_key_pair(project)
    config = configure(project, f'{{vapid_private_key: ./vapid.pem, subject: "{SUBJECT}", ttl: 1d}}')
    monkeypatch.chdir(project.parent)  # not the config's folder
    channel = channel_from_config(load_config(config))
    assert channel.public_key == public_key and channel.ttl == 86400 and channel.urgency == "normal"


def test_webpush_keys_writes_a_usable_private_key_and_prints_the_public_key(tmp_path: Path) -> None:
    cli = build_cli(load_plugins())
    result = CliRunner().invoke(cli, ["webpush-keys", "--out", str(tmp_path / "keys")])
    assert result.exit_code == 0, result.output
    key_path = tmp_path / "keys" / "vapid.pem"
    assert key_path.stat().st_mode & 0o777 == 0o600
    printed = result.stdout.strip()
    assert printed == public_key_of(load_private_key(key_path))
    assert len(printed) == 87 and "=" not in printed  # 65 bytes, URL-safe base64 without padding
    again = CliRunner().invoke(cli, ["webpush-keys", "--out", str(tmp_path / "keys")])
    assert again.exit_code == 1 and "refusing to replace" in again.output


# through the daemon
def push_project(project: Path, service: PushService) -> None:
    write_key_pair(project)
    configure(
        project,
        f'{{vapid_private_key: ./vapid.pem, subject: "{SUBJECT}", ttl: 600, urgency: high, '
        f"ca_file: {service.cert_file}, {STAND_IN_SETTINGS}}}",
    )
    for old in (project / "scenarios").glob("*.yaml"):
        old.unlink()
    (project / "scenarios" / "cart_push.yaml").write_text(SCENARIO)
    (project / "templates" / "cart_push").mkdir()
    (project / "templates" / "cart_push" / "push.en.txt").write_text(TEMPLATE)


def cart_event(event_id: str) -> dict:
    cart = {"url": "https://shop.example/cart/1", "items": [{"name": "Bicycle", "price": 79.9, "qty": 1}]}
    return event(event_id, data={"cart": cart}, id="c-42", name="Anna", locale="en")


async def test_routes_sw_js_key_and_subscribe(project: Path, service: PushService) -> None:
    push_project(project, service)
    token = seal(SECRET, "push", "c-42")
    subscription = service.subscribe()
    async with running(project) as daemon, aiohttp.ClientSession() as http:
        async with http.get(url(daemon, "/push/sw.js")) as response:
            assert response.status == 200
            assert response.content_type == "text/javascript"
            script = await response.text()
        assert "showNotification" in script and "openWindow" in script and "/push/click" in script
        async with http.get(url(daemon, "/push/key")) as response:
            key = (await response.json())["public_key"]
        assert key == public_key_of(load_private_key(project / "vapid.pem"))
        # A page on the shop's origin posts with the token in a header: the browser asks first.
        for path in ("/push/subscribe", "/push/click"):
            preflight = {
                "Origin": "https://shop.example",
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "authorization,content-type",
            }
            async with http.options(url(daemon, path), headers=preflight) as response:
                assert response.status == 204 and response.headers["Access-Control-Allow-Origin"] == "*"
                allowed = response.headers["Access-Control-Allow-Headers"].lower().split(", ")
                assert {"authorization", "content-type"} <= set(allowed)

        async def subscribe(body: object, token: str | None, raw: bytes | None = None) -> tuple[int, dict]:
            data = raw if raw is not None else json.dumps(body).encode()
            headers = bearer(token) if token is not None else {}
            async with http.post(url(daemon, "/push/subscribe"), data=data, headers=headers) as response:
                assert response.headers["Access-Control-Allow-Origin"] == "*"  # the page may read it
                return response.status, await response.json()

        answer = await subscribe({"subscription": subscription}, token)
        assert answer == (200, {"subscribed": True, "new": True})
        assert (await subscribe({"subscription": subscription}, token))[1]["new"] is False
        customer = await daemon.store.run(daemon.store.customer, "c-42")
        assert customer is not None and customer.push_subscriptions == [subscription]

        status, answer = await subscribe(None, token, raw=b"{not json")
        assert status == 400 and "JSON" in answer["error"]
        insecure = {**subscription, "endpoint": "http://push.example/1"}
        status, answer = await subscribe({"subscription": insecure}, token)
        assert status == 400 and "https://" in answer["error"]
        no_keys = {"endpoint": subscription["endpoint"], "keys": {"p256dh": "AAAA", "auth": "AAAA"}}
        assert (await subscribe({"subscription": no_keys}, token))[0] == 400
        assert (await subscribe({}, token))[0] == 400
        assert (await subscribe([subscription], token))[0] == 400
        for bad in (
            "forged.token",
            sign(SECRET, "click", "c-42"),
            seal("another-secret-0123456789", "push", "c-42"),
            seal(SECRET, "telegram", "c-42"),
        ):
            assert (await subscribe({"subscription": service.subscribe()}, bad))[0] == 403
        status, answer = await subscribe({"subscription": service.subscribe()}, None)
        assert status == 403 and "Authorization: Bearer" in answer["error"]
        # The token where earlier versions took it, in the body, is not looked at.
        assert (await subscribe({"subscription": service.subscribe(), "token": token}, None))[0] == 403
        customer = await daemon.store.run(daemon.store.customer, "c-42")
        assert customer is not None and len(customer.push_subscriptions) == 1


async def test_a_gone_subscription_is_removed_from_the_customer_and_clicks_are_recorded(
    project: Path, service: PushService
) -> None:
    push_project(project, service)
    token = seal(SECRET, "push", "c-42")
    alive, gone = service.subscribe(), service.subscribe()
    service.answer(gone, 410)
    async with running(project) as daemon, aiohttp.ClientSession() as http:
        for subscription in (alive, gone):
            body, headers = {"subscription": subscription}, bearer(token)
            async with http.post(url(daemon, "/push/subscribe"), json=body, headers=headers) as response:
                assert response.status == 200
        async with http.post(url(daemon, "/events"), json=cart_event("e-1"), headers=AUTH) as response:
            assert response.status == 200
        await service.wait_for(2)
        [push] = service.received(alive)
        assert push.payload["title"] == "Anna, your cart is waiting"
        assert push.payload["body"] == "Bicycle is still in your cart."
        assert push.payload["url"] == "https://shop.example/cart/1"
        store = daemon.store

        async def one_subscription_left() -> Customer | None:
            customer = await store.run(store.customer, "c-42")
            return customer if customer is not None and len(customer.push_subscriptions) == 1 else None

        customer = await wait_for(one_subscription_left, what="the gone subscription to be forgotten")
        assert customer.push_subscriptions == [alive]
        record = await store.run(store.message, push.payload["id"])
        assert record is not None and record["status"] == "sent"
        # The service worker reports the click with the token the payload carried, in a header.
        async with http.post(url(daemon, "/push/click"), headers=bearer(push.payload["click"])) as response:
            assert response.status == 204
        async with http.post(url(daemon, "/push/click"), headers=bearer("m-1:push.x")) as response:
            assert response.status == 404
        async with http.post(url(daemon, "/push/click"), json={"token": push.payload["click"]}) as response:
            assert response.status == 403  # not in the body
        record = await store.run(store.message, push.payload["id"])
        assert record is not None and record["clicked_at"]


# the real daemon
@pytest.mark.slow
async def test_the_real_daemon_pushes_an_encrypted_notification(
    project: Path, service: PushService, tmp_path: Path
) -> None:
    keys = subprocess.run(
        [BOOMERANG, "webpush-keys", "--out", str(project)], capture_output=True, text=True, check=True
    )
    public_key = keys.stdout.strip()
    configure(
        project,
        f'{{vapid_private_key: ./vapid.pem, subject: "{SUBJECT}", ttl: 600, urgency: low, '
        f"ca_file: {service.cert_file}, {STAND_IN_SETTINGS}}}",
    )
    for old in (project / "scenarios").glob("*.yaml"):
        old.unlink()
    (project / "scenarios" / "cart_push.yaml").write_text(SCENARIO)
    (project / "templates" / "cart_push").mkdir()
    (project / "templates" / "cart_push" / "push.en.txt").write_text(TEMPLATE)
    port = int(os.environ["BOOMERANG_PORT"])
    base = f"http://127.0.0.1:{port}"
    log = tmp_path / "daemon.log"
    subscription = service.subscribe()
    async with daemon_process(project, log):
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{base}/push/key") as response:
                assert (await response.json())["public_key"] == public_key
            body, token = {"subscription": subscription}, seal(SECRET, "push", "c-42")
            async with http.post(f"{base}/push/subscribe", json=body, headers=bearer(token)) as response:
                assert response.status == 200, await response.text()
            async with http.post(f"{base}/events", json=cart_event("e-1"), headers=AUTH) as response:
                assert response.status == 200
            [push] = await service.wait_for(1)
        assert push.status == 201, push.error
        assert push.payload["title"] == "Anna, your cart is waiting"
        assert push.payload["body"] == "Bicycle is still in your cart."
        assert push.payload["url"] == "https://shop.example/cart/1"
        assert push.payload["icon"] == "https://shop.example/icon.png"
        assert push.vapid_key == public_key and push.claims and push.claims["sub"] == SUBJECT
        assert push.headers["TTL"] == "600" and push.headers["Urgency"] == "low"
    with project_database(project) as db:
        [(status,)] = db.execute("SELECT status FROM messages WHERE channel = 'push'").fetchall()
    assert status == "sent"
