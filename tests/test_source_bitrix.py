"""The 1C-Bitrix source: `POST /hooks/bitrix` with the signature the shop's module makes, and
the module itself (integrations/bitrix/) run by Debian's php-cli over a stub of the few Bitrix
classes it calls (tests/php/), posting to the daemon."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import shutil
from pathlib import Path

import aiohttp
import pytest

from conftest import event, free_port, project_database, running, url

SECRET = "bitrix-shared-secret-0123456789"
MODULE = Path(__file__).parent.parent / "integrations" / "bitrix"
SHOP = Path(__file__).parent / "php" / "shop.php"
PHP = shutil.which("php")
needs_php = pytest.mark.skipif(
    PHP is None, reason="php-cli is not installed (apt-get install php-cli php-curl; `make test` does it)"
)


def configure(project: Path) -> None:
    config = project / "boomerang.yaml"
    config.write_text(config.read_text() + f"sources:\n  bitrix: {{secret: {SECRET}}}\n")


def stored(project: Path) -> list[tuple[str, str, str]]:
    with project_database(project) as db:
        return db.execute(
            "SELECT id, type, customer_id FROM events WHERE source = 'bitrix' ORDER BY rowid"
        ).fetchall()


def signed(body: bytes, secret: str = SECRET) -> dict[str, str]:
    return {"X-Boomerang-Signature": "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()}


async def test_signed_events_are_stored_once(project: Path) -> None:
    configure(project)
    body = json.dumps(
        [event("bitrix:order:1:order.placed", "order.placed", email="anna@example.com")]
    ).encode()
    async with running(project) as daemon, aiohttp.ClientSession() as session:
        for expected in ({"accepted": 1, "duplicates": 0}, {"accepted": 0, "duplicates": 1}):
            async with session.post(
                url(daemon, "/hooks/bitrix"), data=body, headers=signed(body)
            ) as response:
                assert (response.status, await response.json()) == (200, expected)
    assert [row[:2] for row in stored(project)] == [("bitrix:order:1:order.placed", "order.placed")]


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"X-Boomerang-Signature": "sha256="},
        {"X-Boomerang-Signature": "sha256=" + "0" * 64},
        "other secret",
    ],
    ids=["missing", "empty", "wrong", "another secret"],
)
async def test_a_wrong_or_missing_signature_is_refused_and_nothing_stored(project: Path, headers) -> None:
    configure(project)
    body = json.dumps(event("e-1", "order.placed", email="anna@example.com")).encode()
    if headers == "other secret":
        headers = signed(body, "another-secret-0123456789")
    async with (
        running(project) as daemon,
        aiohttp.ClientSession() as session,
        session.post(url(daemon, "/hooks/bitrix"), data=body, headers=headers) as response,
    ):
        assert response.status == 401
        assert "X-Boomerang-Signature" in (await response.json())["error"]
    assert stored(project) == []


async def test_a_signed_body_that_is_no_event_is_a_400(project: Path) -> None:
    configure(project)
    body = json.dumps({"id": "e-1", "type": "order.placed"}).encode()
    async with (
        running(project) as daemon,
        aiohttp.ClientSession() as session,
        session.post(url(daemon, "/hooks/bitrix"), data=body, headers=signed(body)) as response,
    ):
        assert response.status == 400
        answer = await response.json()
    assert answer["error"] == "event 'e-1': 'at' is required (ISO-8601 with a timezone)"


async def php(*args: str) -> tuple[int, str, str]:
    """Run the shop script with php-cli; (exit code, stdout, stderr)."""
    assert PHP is not None
    process = await asyncio.create_subprocess_exec(
        PHP, str(SHOP), str(MODULE), *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await asyncio.wait_for(process.communicate(), 60)
    return process.returncode or 0, out.decode(), err.decode()


@needs_php
async def test_the_php_module_posts_the_shops_orders_and_carts(project: Path) -> None:
    configure(project)
    async with running(project) as daemon:
        code, out, err = await php(url(daemon, "/hooks/bitrix"), SECRET)
    assert code == 0, err
    assert out.splitlines() == [
        "sale:OnSaleOrderSaved:boomerang_on_order_saved",
        "sale:OnSaleStatusOrder:boomerang_on_status_order",
        "sale:OnSaleBasketSaved:boomerang_on_basket_saved",
        "checkout goes on",
    ]
    assert err == ""
    rows = stored(project)
    assert [row[:2] for row in rows] == [
        (rows[0][0], "cart.updated"),
        ("bitrix:order:501:order.placed", "order.placed"),
        ("bitrix:order:501:order.paid", "order.paid"),
        ("bitrix:order:501:order.delivered", "order.delivered"),
    ]
    assert rows[0][0].startswith("bitrix:cart:7:") and {row[2] for row in rows} == {"bx-15"}
    with project_database(project) as db:
        email, phone, name, orders, revenue = db.execute(
            "SELECT email, phone, name, orders_count, revenue FROM customers"
        ).fetchone()
        placed_at, data = db.execute("SELECT at, data FROM events WHERE type = 'order.placed'").fetchone()
        cart = json.loads(db.execute("SELECT data FROM events WHERE type = 'cart.updated'").fetchone()[0])
    assert (email, phone, name, orders, revenue) == (
        "anna@example.com",
        "+79990001122",
        "Анна Петрова",
        1,
        15900.0,
    )
    assert placed_at.startswith("2026-03-02T10:00:00")
    assert json.loads(data)["order"]["items"] == [
        {"sku": "301", "name": "Велосипед Stels", "price": 15900.0, "qty": 1.0, "url": "/catalog/bikes/301/"}
    ]
    assert cart["cart"]["total"] == 15900.0 and cart["cart"]["currency"] == "RUB"


@needs_php
async def test_the_php_module_never_breaks_the_checkout(project: Path) -> None:
    """Boomerang down, or a wrong secret: the shop's handlers return, the failure is logged
    without personal data."""
    configure(project)
    code, out, err = await php(f"http://127.0.0.1:{free_port()}/hooks/bitrix", SECRET)
    assert code == 0 and out.endswith("checkout goes on\n")
    assert "boomerang: 1 events not accepted" in err and "anna" not in err.lower()
    async with running(project) as daemon:
        code, out, err = await php(url(daemon, "/hooks/bitrix"), "a-wrong-secret-0123456789")
    assert code == 0 and out.endswith("checkout goes on\n")
    assert "events not accepted (HTTP 401)" in err
    assert stored(project) == []
