"""A local fake of WooCommerce's REST API webhooks endpoint (`/wp-json/wc/v3/webhooks`), and
deliveries signed the way WooCommerce signs them, for the WooCommerce source's tests.

It checks HTTP basic auth (consumer key and secret, as WooCommerce takes them over https),
lists webhooks a page at a time (`per_page`, `page`), creates them (`POST`) and updates them
(`PUT /webhooks/<id>`), answering with WooCommerce's webhook objects, or with its error body
(`{"code": ..., "message": ..., "data": {"status": ...}}`) when the key is wrong.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from typing import Any

from aiohttp import BasicAuth, web

from fakes import serve

CONSUMER_KEY = "ck_" + "0123456789abcdef" * 2 + "01234567"
CONSUMER_SECRET = "cs_" + "fedcba9876543210" * 2 + "76543210"


def signature(secret: str, body: bytes) -> str:
    """`X-WC-Webhook-Signature`: base64 HMAC-SHA256 of the raw body (WC_Webhook::generate_signature)."""
    return base64.b64encode(hmac.new(secret.encode(), body, hashlib.sha256).digest()).decode()


def delivery_headers(secret: str, body: bytes, topic: str, delivery_id: int = 1) -> dict[str, str]:
    """The headers WooCommerce sends with a delivery (WC_Webhook::deliver)."""
    resource, _, event = topic.partition(".")
    return {
        "Content-Type": "application/json",
        "User-Agent": "WooCommerce/8.5.2 Hookshot (WordPress/6.4.3)",
        "X-WC-Webhook-Source": "https://shop.example/",
        "X-WC-Webhook-Topic": topic,
        "X-WC-Webhook-Resource": resource,
        "X-WC-Webhook-Event": event,
        "X-WC-Webhook-Signature": signature(secret, body),
        "X-WC-Webhook-ID": "12",
        "X-WC-Webhook-Delivery-ID": str(delivery_id),
    }


class FakeWooCommerce:
    """The fake shop: `async with FakeWooCommerce() as shop`, `shop.url`, `shop.webhooks`."""

    def __init__(self) -> None:
        self.webhooks: list[dict[str, Any]] = []
        self.requests: list[tuple[str, str]] = []
        self.url = ""
        self._runner: web.AppRunner | None = None

    async def __aenter__(self) -> FakeWooCommerce:
        app = web.Application()
        app.router.add_get("/wp-json/wc/v3/webhooks", self.list_webhooks)
        app.router.add_post("/wp-json/wc/v3/webhooks", self.create_webhook)
        app.router.add_put("/wp-json/wc/v3/webhooks/{id}", self.update_webhook)
        self._runner, self.url = await serve(app, access_log=None)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._runner is not None
        await self._runner.cleanup()

    def _refused(self, request: web.Request) -> web.Response | None:
        self.requests.append((request.method, request.path_qs))
        header = request.headers.get("Authorization", "")
        try:
            auth = BasicAuth.decode(header)
        except ValueError:
            auth = None
        if auth is None or (auth.login, auth.password) != (CONSUMER_KEY, CONSUMER_SECRET):
            return web.json_response(
                {
                    "code": "woocommerce_rest_authentication_error",
                    "message": "Consumer key is invalid.",
                    "data": {"status": 401},
                },
                status=401,
            )
        return None

    async def list_webhooks(self, request: web.Request) -> web.Response:
        refused = self._refused(request)
        if refused:
            return refused
        per_page = int(request.query.get("per_page", 10))
        page = int(request.query.get("page", 1))
        return web.json_response(self.webhooks[(page - 1) * per_page : page * per_page])

    async def create_webhook(self, request: web.Request) -> web.Response:
        refused = self._refused(request)
        if refused:
            return refused
        given = await request.json()
        topic = given["topic"]
        resource, _, event = topic.partition(".")
        webhook = {
            "id": 100 + len(self.webhooks),
            "name": given.get("name", ""),
            "status": given.get("status", "active"),
            "topic": topic,
            "resource": resource,
            "event": event,
            "hooks": [f"woocommerce_new_{resource}"],
            "delivery_url": given["delivery_url"],
            "date_created": "2026-03-02T10:00:00",
            "date_created_gmt": "2026-03-02T07:00:00",
            "date_modified": None,
            "date_modified_gmt": None,
        }
        self.webhooks.append({**webhook, "secret": given.get("secret")})
        return web.json_response(webhook, status=201)

    async def update_webhook(self, request: web.Request) -> web.Response:
        refused = self._refused(request)
        if refused:
            return refused
        given = await request.json()
        for webhook in self.webhooks:
            if str(webhook["id"]) == request.match_info["id"]:
                webhook.update(given)
                return web.json_response(webhook)
        return web.json_response(
            {
                "code": "woocommerce_rest_webhook_invalid_id",
                "message": "Invalid ID.",
                "data": {"status": 404},
            },
            status=404,
        )
