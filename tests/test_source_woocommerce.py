"""The WooCommerce source: deliveries shaped and signed as WooCommerce sends them (bodies from
its REST API v3 documentation), on the daemon in-process; and `boomerang sources setup
woocommerce` against a local stand-in for its REST API."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from click.testing import CliRunner

from boomerang.cli import cli
from boomerang.config import load_config
from boomerang.plugins.sources.woocommerce import WooCommerceSource, read_settings
from boomerang.problems import ProblemError
from conftest import project_database, running, url
from fakes.woocommerce_api import CONSUMER_KEY, CONSUMER_SECRET, FakeWooCommerce, delivery_headers, signature

SECRET = "wc-webhook-secret-0123456789"
# "Retrieve an order" of the REST API v3 documentation, as a webhook delivers it.
ORDER: dict[str, Any] = {
    "id": 727,
    "parent_id": 0,
    "number": "727",
    "order_key": "wc_order_58d2d042d1d",
    "created_via": "checkout",
    "version": "8.5.2",
    "status": "pending",
    "currency": "USD",
    "date_created": "2017-03-22T16:28:02",
    "date_created_gmt": "2017-03-22T19:28:02",
    "date_modified": "2017-03-22T16:28:02",
    "date_modified_gmt": "2017-03-22T19:28:02",
    "discount_total": "0.00",
    "discount_tax": "0.00",
    "shipping_total": "10.00",
    "shipping_tax": "0.00",
    "cart_tax": "1.35",
    "total": "29.35",
    "total_tax": "1.35",
    "prices_include_tax": False,
    "customer_id": 25,
    "customer_ip_address": "",
    "customer_user_agent": "",
    "customer_note": "",
    "billing": {
        "first_name": "John",
        "last_name": "Doe",
        "company": "",
        "address_1": "969 Market",
        "address_2": "",
        "city": "San Francisco",
        "state": "CA",
        "postcode": "94103",
        "country": "US",
        "email": "John.Doe@example.com",
        "phone": "(555) 555-5555",
    },
    "shipping": {
        "first_name": "John",
        "last_name": "Doe",
        "company": "",
        "address_1": "969 Market",
        "address_2": "",
        "city": "San Francisco",
        "state": "CA",
        "postcode": "94103",
        "country": "US",
    },
    "payment_method": "bacs",
    "payment_method_title": "Direct Bank Transfer",
    "transaction_id": "",
    "date_paid": None,
    "date_paid_gmt": None,
    "date_completed": None,
    "date_completed_gmt": None,
    "cart_hash": "",
    "meta_data": [{"id": 13106, "key": "_download_permissions_granted", "value": "yes"}],
    "line_items": [
        {
            "id": 315,
            "name": "Woo Single #1",
            "product_id": 93,
            "variation_id": 0,
            "quantity": 2,
            "tax_class": "",
            "subtotal": "6.00",
            "subtotal_tax": "0.45",
            "total": "6.00",
            "total_tax": "0.45",
            "taxes": [{"id": 75, "total": "0.45", "subtotal": "0.45"}],
            "meta_data": [],
            "sku": "",
            "price": 3,
        },
        {
            "id": 316,
            "name": "Ship Your Idea &ndash; Color: Black, Size: M Test",
            "product_id": 22,
            "variation_id": 23,
            "quantity": 1,
            "tax_class": "",
            "subtotal": "12.00",
            "subtotal_tax": "0.90",
            "total": "12.00",
            "total_tax": "0.90",
            "taxes": [{"id": 75, "total": "0.9", "subtotal": "0.9"}],
            "meta_data": [{"id": 2095, "key": "pa_color", "value": "black"}],
            "sku": "Bar3",
            "price": 12,
        },
    ],
    "tax_lines": [],
    "shipping_lines": [{"id": 318, "method_title": "Flat Rate", "method_id": "flat_rate", "total": "10.00"}],
    "fee_lines": [],
    "coupon_lines": [],
    "refunds": [],
}
# "Retrieve a customer" of the same documentation.
CUSTOMER: dict[str, Any] = {
    "id": 25,
    "date_created": "2017-03-21T16:09:28",
    "date_created_gmt": "2017-03-21T19:09:28",
    "date_modified": "2017-03-21T16:09:30",
    "date_modified_gmt": "2017-03-21T19:09:30",
    "email": "john.doe@example.com",
    "first_name": "John",
    "last_name": "Doe",
    "role": "customer",
    "username": "john.doe",
    "billing": {
        "first_name": "John",
        "last_name": "Doe",
        "email": "john.doe@example.com",
        "phone": "(555) 555-5555",
    },
    "shipping": {"first_name": "John", "last_name": "Doe"},
    "is_paying_customer": False,
    "avatar_url": "https://secure.gravatar.com/avatar/8eb1b522f60d11fa897de1dc6351b7e8?s=96",
    "meta_data": [],
}


def order(**changes: Any) -> dict[str, Any]:
    """ORDER with some fields changed."""
    return {**copy.deepcopy(ORDER), **changes}


def configure(project: Path, **settings: Any) -> None:
    """`sources.woocommerce` in the project's config."""
    values = {"secret": SECRET, **settings}
    config = project / "boomerang.yaml"
    config.write_text(config.read_text() + f"sources:\n  woocommerce: {json.dumps(values)}\n")


def stored(project: Path) -> list[tuple[str, str, str]]:
    """(id, type, customer) of every event the WooCommerce source stored, in the order stored."""
    with project_database(project) as db:
        return db.execute(
            "SELECT id, type, customer_id FROM events WHERE source = 'woocommerce' ORDER BY rowid"
        ).fetchall()


async def deliver(
    session: aiohttp.ClientSession, daemon: Any, topic: str, payload: Any, delivery: int = 1, **headers: str
) -> tuple[int, dict]:
    """POST a delivery as WooCommerce does: the JSON body, its signature, its headers."""
    body = json.dumps(payload).encode()
    sent = {**delivery_headers(SECRET, body, topic, delivery), **headers}
    async with session.post(url(daemon, "/hooks/woocommerce"), data=body, headers=sent) as response:
        return response.status, await response.json()


async def test_an_order_through_its_life_is_each_event_once(project: Path) -> None:
    configure(project)
    async with running(project) as daemon, aiohttp.ClientSession() as session:
        assert await deliver(session, daemon, "order.created", order()) == (
            200,
            {"accepted": 1, "duplicates": 0},
        )
        # The same state delivered again (a retried delivery, with a new delivery id).
        assert (await deliver(session, daemon, "order.updated", order(), delivery=2))[1]["accepted"] == 0
        paid = order(
            status="processing",
            date_paid_gmt="2017-03-22T19:30:00",
            date_modified_gmt="2017-03-22T19:30:00",
        )
        assert (await deliver(session, daemon, "order.updated", paid, delivery=3))[1] == {
            "accepted": 1,
            "duplicates": 1,
        }
        # A note added: the order changed, its status did not; nothing new happened to it.
        noted = {**paid, "date_modified_gmt": "2017-03-22T20:00:00", "customer_note": "leave at the door"}
        assert (await deliver(session, daemon, "order.updated", noted, delivery=4))[1]["accepted"] == 0
        done = {**paid, "status": "completed", "date_completed_gmt": "2017-03-23T09:00:00"}
        assert (await deliver(session, daemon, "order.updated", done, delivery=5))[1]["accepted"] == 1
    assert stored(project) == [
        ("woocommerce:order:727:order.placed", "order.placed", "wc-25"),
        ("woocommerce:order:727:order.paid", "order.paid", "wc-25"),
        ("woocommerce:order:727:order.shipped", "order.shipped", "wc-25"),
    ]
    with project_database(project) as db:
        data, at = db.execute("SELECT data, at FROM events WHERE type = 'order.placed'").fetchone()
        email, phone, name, orders = db.execute(
            "SELECT email, phone, name, orders_count FROM customers WHERE id = 'wc-25'"
        ).fetchone()
        shipped_at = db.execute("SELECT at FROM events WHERE type = 'order.shipped'").fetchone()[0]
    assert at.startswith("2017-03-22T19:28:02") and shipped_at.startswith("2017-03-23T09:00:00")
    assert json.loads(data)["order"] == {
        "id": "727",
        "number": "727",
        "status": "pending",
        "total": 29.35,
        "currency": "USD",
        "payment_method": "Direct Bank Transfer",
        "items": [
            {"sku": "93", "name": "Woo Single #1", "product_id": 93, "qty": 2, "price": 3.0, "total": 6.0},
            {
                "sku": "Bar3",
                "name": "Ship Your Idea &ndash; Color: Black, Size: M Test",
                "product_id": 22,
                "qty": 1,
                "price": 12.0,
                "total": 12.0,
            },
        ],
    }
    assert (email, phone, name, orders) == ("john.doe@example.com", "5555555555", "John Doe", 1)


async def test_updates_woocommerce_collapsed_into_one_bring_every_event_they_hide(project: Path) -> None:
    """A pending order completed and refunded before the first delivery left: one delivery,
    showing only `refunded` and the payment date, means placed, paid and cancelled."""
    configure(project)
    refunded = order(
        status="refunded", date_paid_gmt="2017-03-22T19:30:00", date_modified_gmt="2017-03-24T08:00:00"
    )
    async with running(project) as daemon, aiohttp.ClientSession() as session:
        assert (await deliver(session, daemon, "order.updated", refunded))[1]["accepted"] == 3
        assert (await deliver(session, daemon, "order.updated", refunded, delivery=2))[1]["accepted"] == 0
    assert [row[1] for row in stored(project)] == ["order.placed", "order.paid", "order.cancelled"]


async def test_statuses_follow_the_shop_mapping(project: Path) -> None:
    configure(
        project, statuses={"completed": "order.delivered", "shipped": ["order.shipped"], "processing": None}
    )
    async with running(project) as daemon, aiohttp.ClientSession() as session:
        await deliver(session, daemon, "order.updated", order(status="processing"))
        await deliver(session, daemon, "order.updated", order(status="shipped"), delivery=2)
        await deliver(session, daemon, "order.updated", order(status="completed"), delivery=3)
    assert [row[1] for row in stored(project)] == ["order.placed", "order.shipped", "order.delivered"]


async def test_a_guest_order_is_its_billing_email_and_a_draft_checkout_is_no_order(project: Path) -> None:
    configure(project)
    async with running(project) as daemon, aiohttp.ClientSession() as session:
        await deliver(session, daemon, "order.created", order(id=728, customer_id=0))
        draft = order(id=729, status="checkout-draft")
        assert (await deliver(session, daemon, "order.created", draft, delivery=2))[1]["accepted"] == 0
        nobody = order(id=730, customer_id=0, billing={"email": "", "phone": ""})
        assert await deliver(session, daemon, "order.created", nobody, delivery=3) == (
            200,
            {"accepted": 0, "duplicates": 0},
        )
    with project_database(project) as db:
        customer_id = db.execute(
            "SELECT customer_id FROM events WHERE id LIKE 'woocommerce:order:728:%'"
        ).fetchone()
        email = db.execute("SELECT email FROM customers WHERE id = ?", customer_id).fetchone()[0]
    assert email == "john.doe@example.com"
    assert [row[0] for row in stored(project)] == ["woocommerce:order:728:order.placed"]


async def test_a_new_customer_and_the_order_they_place_are_one_customer(project: Path) -> None:
    configure(project)
    async with running(project) as daemon, aiohttp.ClientSession() as session:
        assert (await deliver(session, daemon, "customer.created", CUSTOMER))[1]["accepted"] == 1
        assert (await deliver(session, daemon, "customer.created", CUSTOMER, delivery=2))[1]["accepted"] == 0
        await deliver(session, daemon, "order.created", order(), delivery=3)
        ignored = await deliver(session, daemon, "product.updated", {"id": 93}, delivery=4)
    assert ignored == (200, {"accepted": 0, "duplicates": 0, "ignored": "product.updated"})
    assert stored(project) == [
        ("woocommerce:customer:25:created", "customer.created", "wc-25"),
        ("woocommerce:order:727:order.placed", "order.placed", "wc-25"),
    ]


async def test_the_creation_ping_is_answered_and_stores_nothing(project: Path) -> None:
    configure(project)
    async with running(project) as daemon, aiohttp.ClientSession() as session:
        ping = {"Content-Type": "application/x-www-form-urlencoded"}
        async with session.post(
            url(daemon, "/hooks/woocommerce"), data=b"webhook_id=12", headers=ping
        ) as response:
            assert response.status == 200
        # Anything else unsigned is refused, a form included.
        async with session.post(
            url(daemon, "/hooks/woocommerce"), data=b"webhook_id=12&x=1", headers=ping
        ) as response:
            assert response.status == 401
    assert stored(project) == []


@pytest.mark.parametrize(
    "headers",
    [
        {"X-WC-Webhook-Signature": ""},
        {"X-WC-Webhook-Signature": signature("another-secret-0123456789", json.dumps(ORDER).encode())},
        {"X-WC-Webhook-Signature": signature(SECRET, json.dumps(ORDER).encode() + b" ")},
        {"X-WC-Webhook-Signature": "\u00e9t\u00e9"},
    ],
    ids=["empty", "another secret", "another body", "not ascii"],
)
async def test_a_wrong_or_missing_signature_is_refused_and_nothing_stored(
    project: Path, headers: dict[str, str]
) -> None:
    configure(project)
    async with running(project) as daemon, aiohttp.ClientSession() as session:
        status, answer = await deliver(session, daemon, "order.created", ORDER, **headers)
        assert status == 401 and "X-WC-Webhook-Signature" in answer["error"]
        unsigned = {
            k: v for k, v in delivery_headers(SECRET, b"{}", "order.created").items() if "Signature" not in k
        }
        async with session.post(
            url(daemon, "/hooks/woocommerce"), data=json.dumps(ORDER), headers=unsigned
        ) as response:
            assert response.status == 401
    assert stored(project) == []


async def test_a_signed_body_that_is_no_order_is_a_400_naming_the_topic(project: Path) -> None:
    configure(project)
    async with running(project) as daemon, aiohttp.ClientSession() as session:
        status, answer = await deliver(session, daemon, "order.updated", {"id": "seven", "status": "pending"})
        assert (status, answer) == (
            400,
            {"error": "order.updated: a WooCommerce order needs its numeric 'id'"},
        )
        body = b"{not json"
        headers = delivery_headers(SECRET, body, "order.updated")
        async with session.post(url(daemon, "/hooks/woocommerce"), data=body, headers=headers) as response:
            assert response.status == 400
    assert stored(project) == []


def test_an_export_record_is_the_events_of_a_delivery(tmp_path: Path) -> None:
    source = WooCommerceSource(SECRET, "https://boomerang.example")
    events = source.read_export(order(status="completed", date_paid_gmt="2017-03-22T19:30:00"))
    assert [(e.id, e.type) for e in events] == [
        ("woocommerce:order:727:order.placed", "order.placed"),
        ("woocommerce:order:727:order.paid", "order.paid"),
        ("woocommerce:order:727:order.shipped", "order.shipped"),
    ]
    assert events[0].profile.id == "wc-25" and events[0].profile.email == "john.doe@example.com"


def test_an_orders_coupons_are_its_discount_codes() -> None:
    source = WooCommerceSource(SECRET, "https://boomerang.example")
    # the shape of the REST API's coupon_lines
    coupons = [{"id": 1, "code": "bmr-7kq4-xw9p", "discount": "5.00"}, {"id": 2, "code": 7}]
    [placed] = source.read_export(order(status="pending", coupon_lines=coupons))
    assert placed.data["order"]["discount_codes"] == ["bmr-7kq4-xw9p"]
    [placed] = source.read_export(order(status="pending"))
    assert "discount_codes" not in placed.data["order"]


def test_wrong_settings_are_reported_at_their_place(tmp_path: Path) -> None:
    path = tmp_path / "boomerang.yaml"
    path.write_text(
        "database: ./b.db\nsources:\n  woocommerce:\n    url: http://shop.example\n"
        "    consumer_key: ck_1\n    statuses: {completed: order.deliverd}\n    secrett: x\n"
    )
    with pytest.raises(ProblemError) as caught:
        read_settings(load_config(path))
    assert [str(problem) for problem in caught.value.problems] == [
        f"{path}:4:5: error: 'secret' is required: the secret of the shop's webhooks "
        "(WooCommerce → Settings → Advanced → Webhooks)",
        f"{path}:4:10: error: 'url': 'http://shop.example' must be the shop's https:// address "
        "(the API keys go in its requests)",
        f"{path}:5:19: error: 'consumer_key' and 'consumer_secret' go together",
        f"{path}:6:27: error: 'order.deliverd' is not one of order.placed, order.paid, order.shipped, "
        "order.delivered, order.cancelled (or null for none) (did you mean 'order.delivered'?)",
        f"{path}:7:5: error: unknown woocommerce setting 'secrett' (did you mean 'secret'?)",
    ]


# boomerang sources setup woocommerce
def setup_config(project: Path, shop: FakeWooCommerce, key: str = CONSUMER_KEY) -> str:
    configure(project, url=shop.url, consumer_key=key, consumer_secret=CONSUMER_SECRET)
    config = project / "boomerang.yaml"
    config.write_text(
        config.read_text().replace("${BOOMERANG_PUBLIC_URL:-}", "https://b.example")
    )
    return str(config)


async def test_setup_creates_the_missing_webhooks_once(project: Path) -> None:
    async with FakeWooCommerce() as shop:
        config = setup_config(project, shop)
        first = await _invoke(["sources", "setup", "woocommerce", "--config", config])
        assert first.exit_code == 0, first.output
        assert first.output.splitlines() == [
            "order.created: created webhook 100 → https://b.example/hooks/woocommerce",
            "order.updated: created webhook 101 → https://b.example/hooks/woocommerce",
            "customer.created: created webhook 102 → https://b.example/hooks/woocommerce",
        ]
        assert {(w["topic"], w["secret"], w["status"]) for w in shop.webhooks} == {
            ("order.created", SECRET, "active"),
            ("order.updated", SECRET, "active"),
            ("customer.created", SECRET, "active"),
        }
        shop.webhooks[1]["status"] = "disabled"  # WooCommerce's doing after failed deliveries
        again = await _invoke(["sources", "setup", "woocommerce", "--config", config])
        assert again.exit_code == 0, again.output
        assert again.output.splitlines() == [
            "order.created: already delivered to https://b.example/hooks/woocommerce",
            "order.updated: re-activated webhook 101 (disabled)",
            "customer.created: already delivered to https://b.example/hooks/woocommerce",
        ]
        assert len(shop.webhooks) == 3 and shop.webhooks[1]["status"] == "active"


async def test_setup_says_what_woocommerce_refused(project: Path) -> None:
    async with FakeWooCommerce() as shop:
        config = setup_config(project, shop, key="ck_wrong")
        result = await _invoke(["sources", "setup", "woocommerce", "--config", config])
    assert result.exit_code == 1 and not shop.webhooks
    assert (
        "was refused (401 Consumer key is invalid.): check consumer_key and consumer_secret" in result.output
    )


async def _invoke(args: list[str]) -> Any:
    """The CLI in a thread: its own event loop talks to the fake on this test's loop."""
    import asyncio

    return await asyncio.to_thread(CliRunner().invoke, cli, args)


@pytest.mark.parametrize("lines", [True, 7, "items", {"sku": "a"}])
def test_line_items_that_are_no_list_are_an_order_without_items(lines: Any) -> None:
    # found by the fuzz test: `true` there raised a TypeError, a 500 for the shop's retry loop
    source = WooCommerceSource(SECRET, "https://boomerang.example")
    [placed] = source.read_export(order(status="pending", line_items=lines))
    assert placed.data["order"]["items"] == []
