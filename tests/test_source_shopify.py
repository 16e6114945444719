"""The Shopify source: signed webhooks to events, through the in-process daemon and its real
SQLite store; bodies as Shopify sends them (tests/fakes/shopify_payloads.py), signed as Shopify
signs them. The Admin API (webhook subscriptions, discount codes) is a local aiohttp stand-in
speaking its REST format (tests/fakes/shopify_admin.py)."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from click.testing import CliRunner

from boomerang.cli import cli
from boomerang.daemon import Daemon
from conftest import running, url, wait_for
from fakes import shopify_payloads as shopify
from fakes.shopify_admin import ADMIN_TOKEN, FakeAdminApi

CUSTOMER = "shopify:207119551"
EMAIL = "bob.norman@mail.example.com"


def configure(project: Path, admin_api_base: str = "http://127.0.0.1:9", **extra: Any) -> Path:
    """The project with `sources.shopify` configured (the Admin API at `admin_api_base`)."""
    settings = {
        "secret": shopify.SHOPIFY_SECRET,
        "shop": shopify.SHOP,
        "admin_token": ADMIN_TOKEN,
        "admin_api_base": admin_api_base,
        **extra,
    }
    config = project / "boomerang.yaml"
    config.write_text(config.read_text() + f"sources:\n  shopify: {json.dumps(settings)}\n")
    return config


@pytest.fixture
async def admin() -> AsyncIterator[FakeAdminApi]:
    """The Admin API stand-in, serving for one test."""
    async with FakeAdminApi() as server:
        yield server


@pytest.fixture
async def shop(project: Path, admin: FakeAdminApi) -> AsyncIterator[Daemon]:
    """The daemon with the Shopify source, its Admin API the stand-in."""
    configure(project, admin.base)
    async with running(project) as daemon:
        yield daemon


async def deliver(
    daemon: Daemon,
    topic: str,
    payload: dict[str, Any] | bytes,
    event_id: str = "evt-1",
    headers: dict[str, str] | None = None,
) -> tuple[int, dict[str, Any]]:
    """One delivery as Shopify makes it (signed), with `headers` changed or added."""
    body = payload if isinstance(payload, bytes) else shopify.encode(payload)
    sent = {**shopify.headers(topic, body, event_id), **(headers or {})}
    async with (
        aiohttp.ClientSession() as session,
        session.post(url(daemon, "/hooks/shopify"), data=body, headers=sent) as response,
    ):
        return response.status, await response.json(content_type=None)


async def events(daemon: Daemon, customer_id: str = CUSTOMER) -> list[dict[str, Any]]:
    return await daemon.store.run(daemon.store.events_of, customer_id)


async def all_events(daemon: Daemon) -> int:
    count = "SELECT count(*) FROM events"
    return await daemon.store.run(lambda: daemon.store.db.execute(count).fetchone()[0])


# signatures


@pytest.mark.parametrize(
    "change",
    [
        {"X-Shopify-Hmac-Sha256": shopify.signature(b"{}")},  # the signature of another body
        {"X-Shopify-Hmac-Sha256": shopify.signature(shopify.encode(shopify.checkout()), "another-secret")},
        {"X-Shopify-Hmac-Sha256": ""},
        {"X-Shopify-Hmac-Sha256": "not base64 at all é"},
    ],
    ids=["other body", "other secret", "empty", "garbage"],
)
async def test_a_wrong_signature_is_401_and_stores_nothing(shop: Daemon, change: dict[str, str]) -> None:
    status, answer = await deliver(shop, "checkouts/create", shopify.checkout(), headers=change)
    assert status == 401 and "X-Shopify-Hmac-Sha256" in answer["error"]
    assert await all_events(shop) == 0


async def test_a_missing_signature_is_401_and_stores_nothing(shop: Daemon) -> None:
    body = shopify.encode(shopify.checkout())
    sent = {k: v for k, v in shopify.headers("checkouts/create", body, "e1").items() if "Hmac" not in k}
    async with (
        aiohttp.ClientSession() as session,
        session.post(url(shop, "/hooks/shopify"), data=body, headers=sent) as response,
    ):
        assert response.status == 401
    assert await all_events(shop) == 0


async def test_a_delivery_for_another_shop_is_refused(shop: Daemon) -> None:
    headers = {"X-Shopify-Shop-Domain": "someone-else.myshopify.com"}
    status, _ = await deliver(shop, "checkouts/create", shopify.checkout(), headers=headers)
    assert status == 401
    assert await all_events(shop) == 0


async def test_a_signed_body_that_is_not_json_is_400(shop: Daemon) -> None:
    status, answer = await deliver(shop, "orders/create", b"{not json")
    assert status == 400 and "invalid JSON" in answer["error"]


# topics


async def test_a_checkout_is_a_cart_with_its_recovery_link(shop: Daemon) -> None:
    status, answer = await deliver(shop, "checkouts/create", shopify.checkout())
    assert (status, answer) == (200, {"accepted": 2, "duplicates": 0})
    started, cart = await events(shop)  # started when made, the cart as of its update
    assert (cart["type"], started["type"]) == ("cart.updated", "checkout.started")
    assert (started["at"], cart["at"]) == ("2026-03-02T15:00:00.000000Z", "2026-03-02T15:05:00.000000Z")
    assert cart["id"] == "shopify:evt-1:cart"
    assert cart["data"]["cart"]["url"] == shopify.checkout()["abandoned_checkout_url"]
    assert cart["data"]["cart"]["total"] == 210.94 and cart["data"]["cart"]["currency"] == "USD"
    assert cart["data"]["cart"]["items"] == [
        {
            "sku": "IPOD2008PINK",
            "name": "IPod Nano - 8GB",
            "variant": "Pink",
            "price": 199.0,
            "qty": 1,
            "product_id": "632910392",
            "variant_id": "808950810",
            "url": shopify.checkout()["abandoned_checkout_url"],  # a line item has no link of its own
        }
    ]
    customer = await shop.store.run(shop.store.customer, CUSTOMER)
    assert customer.email == EMAIL and customer.name == "Bob Norman" and customer.locale == "en"
    # an update is another cart, not another checkout start
    status, answer = await deliver(shop, "checkouts/update", shopify.checkout(), "evt-2")
    assert answer == {"accepted": 1, "duplicates": 0}
    assert [e["type"] for e in await events(shop)][-1] == "cart.updated"


async def test_the_same_delivery_twice_is_stored_once(shop: Daemon) -> None:
    assert (await deliver(shop, "checkouts/create", shopify.checkout(), "evt-9"))[1]["accepted"] == 2
    assert (await deliver(shop, "checkouts/create", shopify.checkout(), "evt-9"))[1] == {
        "accepted": 0,
        "duplicates": 2,
    }
    # without an event id Shopify's webhook id tells a retry; without either, the body does
    for topic, body in (("orders/paid", shopify.order()), ("customers/update", shopify.customer())):
        plain = shopify.encode(body)
        for _ in range(2):
            headers = shopify.headers(topic, plain, "x")
            del headers["X-Shopify-Event-Id"], headers["X-Shopify-Webhook-Id"]
            async with (
                aiohttp.ClientSession() as session,
                session.post(url(shop, "/hooks/shopify"), data=plain, headers=headers) as response,
            ):
                assert response.status == 200
    assert [e["type"] for e in await events(shop)].count("customer.updated") == 1
    assert [e["type"] for e in await events(shop)].count("order.paid") == 1


async def test_a_completed_checkout_ends_the_abandoned_cart_journey_and_the_order_counts_once(
    shop: Daemon,
) -> None:
    """The reference abandoned-cart scenario enters on the checkout's cart and exits on
    order.placed, which the completed checkout and its order both say: one order, not two."""
    await deliver(shop, "checkouts/create", shopify.checkout(), "evt-1")

    async def cart_journeys() -> list[str]:
        found = await shop.store.run(shop.store.journeys_of, CUSTOMER)
        return [j.status for j in found if j.scenario == "abandoned-cart"]

    assert await wait_for(cart_journeys, what="the abandoned-cart journey") == ["active"]
    status, answer = await deliver(shop, "checkouts/update", shopify.checkout(completed=True), "evt-2")
    assert (status, answer) == (200, {"accepted": 1, "duplicates": 0})

    async def ended() -> bool:
        return await cart_journeys() == ["exited"]

    await wait_for(ended, what="the journey to end on order.placed")
    status, answer = await deliver(shop, "orders/create", shopify.order(), "evt-3")
    assert answer == {"accepted": 0, "duplicates": 1}  # the same order.placed
    customer = await shop.store.run(shop.store.customer, CUSTOMER)
    assert customer.orders_count == 1
    [placed] = [e for e in await events(shop) if e["type"] == "order.placed"]
    assert placed["id"] == "shopify:order:checkout-0123456789abcdef0456456789abcdef:placed"
    assert placed["data"]["order"]["total"] == 210.94
    assert placed["data"]["order"]["items"][0]["sku"] == "IPOD2008PINK"


async def test_an_order_and_what_becomes_of_it(shop: Daemon) -> None:
    order = shopify.order(checkout_token=None)
    assert (await deliver(shop, "orders/create", order, "e1"))[1] == {"accepted": 1, "duplicates": 0}
    [placed] = await events(shop)
    assert placed["type"] == "order.placed" and placed["id"] == "shopify:order:order-450789469:placed"
    assert placed["data"]["order"] == {
        "id": "#1001",
        "shopify_id": "450789469",
        "items": placed["data"]["order"]["items"],
        "total": 200.94,
        "currency": "USD",
        "discount_codes": ["TENOFF"],
        "url": order["order_status_url"],
    }
    assert placed["at"] == "2026-03-02T15:30:00.000000Z"  # the order's created_at, in UTC
    customer = await shop.store.run(shop.store.customer, CUSTOMER)
    assert customer.orders_count == 1 and customer.revenue == 200.94 and customer.phone == "+557734881234"
    assert (await deliver(shop, "orders/paid", order, "e2"))[1]["accepted"] == 1
    assert (await deliver(shop, "fulfillments/create", shopify.fulfillment(), "e3"))[1]["accepted"] == 1
    fulfilled = {**order, "fulfillments": [shopify.fulfillment()], "fulfillment_status": "fulfilled"}
    assert (await deliver(shop, "orders/fulfilled", fulfilled, "e4"))[1] == {"accepted": 0, "duplicates": 1}
    delivered = shopify.fulfillment(shipment_status="delivered")
    answer = (await deliver(shop, "fulfillments/update", delivered, "e5"))[1]
    assert answer == {"accepted": 1, "duplicates": 1}  # shipped already, delivered now
    cancelled = {**order, "cancelled_at": "2026-03-05T10:00:00-05:00", "cancel_reason": "customer"}
    assert (await deliver(shop, "orders/cancelled", cancelled, "e6"))[1]["accepted"] == 1
    stored = [e for e in await events(shop) if e["type"].startswith("order.")]  # not message.sent
    assert [e["type"] for e in stored] == [
        "order.placed",
        "order.paid",
        "order.shipped",
        "order.delivered",
        "order.cancelled",
    ]
    shipped = stored[2]["data"]["order"]
    assert shipped["id"] == "#1001" and shipped["carrier"] == "UPS" and shipped["tracking_number"] == "1Z2345"
    assert shipped["tracking_url"].startswith("https://www.ups.com/")
    assert stored[4]["data"]["order"]["reason"] == "customer"
    # the fulfillment names the customer only by email and phone: the same customer
    ids = {e["id"] for e in stored}
    assert {"shopify:order:450789469:shipped", "shopify:order:450789469:delivered"} <= ids


async def test_a_customer_brings_consents_phone_locale_and_tags(shop: Daemon) -> None:
    body = shopify.customer(email_state="subscribed", sms_state="unsubscribed")
    status, answer = await deliver(shop, "customers/create", body)
    assert (status, answer) == (200, {"accepted": 1, "duplicates": 0})
    customer = await shop.store.run(shop.store.customer, CUSTOMER)
    assert customer.consents == {"email": True, "sms": False}
    assert (customer.email, customer.phone, customer.locale) == (EMAIL, "+16136120707", "fr")
    assert customer.attributes == {"shopify_tags": ["vip", "newsletter"]}
    assert (await events(shop))[0]["type"] == "customer.created"
    # "not_subscribed" says nothing: the consent given stays
    later = shopify.customer(email_state="not_subscribed", sms_state="subscribed")
    await deliver(shop, "customers/update", {**later, "updated_at": "2026-03-03T10:00:00-05:00"}, "e2")
    customer = await shop.store.run(shop.store.customer, CUSTOMER)
    assert customer.consents == {"email": True, "sms": True}


async def test_a_guest_checkout_and_the_account_made_later_are_one_customer(shop: Daemon) -> None:
    guest = shopify.checkout(customer_id=None, email="Guest@Example.com")
    assert (await deliver(shop, "checkouts/create", guest, "e1"))[1]["accepted"] == 2
    [anonymous] = await shop.store.run(
        lambda: [r[0] for r in shop.store.db.execute("SELECT id FROM customers").fetchall()]
    )
    assert anonymous.startswith("anon-")
    account = shopify.customer(customer_id=5551, email="guest@example.com", phone=None)
    await deliver(shop, "customers/create", account, "e2")
    ids = await shop.store.run(lambda: [r[0] for r in shop.store.db.execute("SELECT id FROM customers")])
    assert ids == ["shopify:5551"]  # signed webhooks merge: the guest's cart is theirs now
    assert sorted(e["type"] for e in await events(shop, "shopify:5551")) == [
        "cart.updated",
        "checkout.started",
        "customer.created",
    ]


async def test_a_delivery_that_names_nobody_is_acknowledged_and_not_stored(shop: Daemon) -> None:
    nobody = {**shopify.checkout(customer_id=None, email=None), "phone": None}
    status, answer = await deliver(shop, "checkouts/create", nobody)
    assert status == 200 and answer["accepted"] == 0 and "no customer" in answer["ignored"]
    assert await all_events(shop) == 0


async def test_an_unknown_topic_is_acknowledged_and_logged_once(shop: Daemon, caplog) -> None:
    caplog.set_level(logging.INFO, "boomerang.plugins.sources.shopify")
    for event_id in ("e1", "e2"):
        status, answer = await deliver(shop, "products/update", {"id": 632910392, "title": "IPod"}, event_id)
        assert status == 200 and "ignored" in answer
    assert [r.getMessage() for r in caplog.records if "products/update" in r.getMessage()] == [
        "shopify: topic 'products/update' is not mapped to events: ignored (logged once)"
    ]
    assert await all_events(shop) == 0


# privacy webhooks


async def test_customers_redact_erases_the_customer(shop: Daemon, caplog) -> None:
    caplog.set_level(logging.INFO)
    await deliver(shop, "orders/create", shopify.order(), "e1")
    await deliver(shop, "customers/update", shopify.customer(), "e2")
    status, answer = await deliver(shop, "customers/redact", shopify.redact(), "e3")
    assert (status, answer) == (200, {"erased": 1})
    assert await shop.store.run(shop.store.find_customer, EMAIL) is None
    assert await shop.store.run(shop.store.find_customer, CUSTOMER) is None
    rows = await shop.store.run(
        lambda: shop.store.db.execute("SELECT customer_id, data FROM events ORDER BY id").fetchall()
    )
    assert len(rows) == 2 and all(cid.startswith("forgotten-") for cid, _ in rows)
    assert EMAIL not in json.dumps(rows) and "IPOD" not in json.dumps(rows)
    assert json.loads(rows[1][1]) == {"order": {"total": 200.94, "currency": "USD"}}
    assert EMAIL not in caplog.text
    # a later order by the same email is a new customer with nothing of the old one
    await deliver(shop, "orders/create", shopify.order(order_id=9, checkout_token=None), "e4")
    again = await shop.store.run(shop.store.find_customer, EMAIL)
    assert again.id == CUSTOMER and again.orders_count == 1 and again.consents == {"email": True}


async def test_a_data_request_is_acknowledged_and_logged_without_personal_data(shop: Daemon, caplog) -> None:
    caplog.set_level(logging.INFO)
    await deliver(shop, "customers/update", shopify.customer(), "e1")
    status, _ = await deliver(shop, "customers/data_request", shopify.data_request(), "e2")
    assert status == 200
    assert "customers/data_request 9999 received" in caplog.text
    assert EMAIL not in caplog.text and "555-625-1199" not in caplog.text
    status, _ = await deliver(shop, "shop/redact", {"shop_id": 954889, "shop_domain": shopify.SHOP}, "e3")
    assert status == 200
    assert await shop.store.run(shop.store.find_customer, EMAIL) is not None  # nothing erased by itself


# settings


def test_the_settings_are_checked_with_positions(project: Path) -> None:
    config = project / "boomerang.yaml"
    text = config.read_text()
    line = text.count("\n") + 3  # the first setting's line, below `sources:` and `shopify:`
    settings = "    scret: x\n    shop: x.shop.example\n    timeout: soon\n"
    config.write_text(f"{text}sources:\n  shopify:\n{settings}")
    result = CliRunner().invoke(cli, ["check", "--config", str(config)])
    assert result.exit_code == 1
    found = [out.split("yaml:")[1] for out in result.output.splitlines() if "boomerang.yaml:" in out]
    assert found == [
        f"{line}:5: error: 'secret' is required: the app's API secret key, which signs Shopify's webhooks",
        f"{line}:5: error: unknown shopify setting 'scret' (did you mean 'secret'?)",
        f"{line + 1}:11: error: 'shop': 'x.shop.example' is not a shop domain such as my-shop.myshopify.com",
        f"{line + 2}:14: error: 'timeout' is the seconds an Admin API call may take: a number from 1 to 60",
    ]
