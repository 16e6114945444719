"""A local stand-in for the Shopify Admin API (REST), for tests: a real aiohttp server on 127.0.0.1.

It speaks the Admin API's wire format for what Boomerang calls: `/admin/api/<version>/...` with
the `X-Shopify-Access-Token` header (401 `{"errors": "[API] Invalid API key or access token
(unrecognized login or wrong password)"}` without the right one); `GET`/`POST webhooks.json`
(`{"webhooks": [...]}`, `{"webhook": {...}}` with 201, 422 `{"errors": {"address": ["for this
topic has already been taken"]}}` for a subscription that exists); `POST price_rules.json` and
`POST price_rules/<id>/discount_codes.json` (201 with the object made, 422 for a code taken or a
rule Shopify would refuse). `failures` holds canned answers for the next calls: (status, body,
headers), e.g. 429 with `Retry-After: 0.01`; `delay` makes it slow.
"""

from __future__ import annotations

import asyncio
import itertools
import json
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from fakes import serve

ADMIN_TOKEN = "shpat_0123456789abcdef0123456789abcdef"
INVALID_TOKEN = "[API] Invalid API key or access token (unrecognized login or wrong password)"


@dataclass
class Call:
    """One request the fake received."""

    method: str
    path: str
    body: Any


class FakeAdminApi:
    """The Admin API of one shop."""

    def __init__(self, token: str = ADMIN_TOKEN, version: str = "2025-01"):
        self.token = token
        self.version = version
        self.calls: list[Call] = []
        self.webhooks: list[dict[str, Any]] = []
        self.price_rules: dict[int, dict[str, Any]] = {}
        self.discount_codes: list[dict[str, Any]] = []
        self.failures: list[tuple[int, dict[str, Any], dict[str, str]]] = []
        self.delay = 0.0
        self._ids = itertools.count(1_000_001)
        self._runner: web.AppRunner | None = None
        self.base = ""

    async def __aenter__(self) -> FakeAdminApi:
        app = web.Application()
        app.router.add_route("*", "/admin/api/{version}/{path:.+}", self._handle)
        self._runner, self.base = await serve(app, shutdown_timeout=0.5)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _handle(self, request: web.Request) -> web.Response:
        text = await request.text()
        body = json.loads(text) if text else None
        path = request.match_info["path"]
        self.calls.append(Call(request.method, path, body))
        if self.delay:
            await asyncio.sleep(self.delay)
        if request.headers.get("X-Shopify-Access-Token") != self.token:
            return web.json_response({"errors": INVALID_TOKEN}, status=401)
        if request.match_info["version"] != self.version:
            return web.json_response({"errors": "Not Found"}, status=404)
        if self.failures:
            status, answer, headers = self.failures.pop(0)
            return web.json_response(answer, status=status, headers=headers)
        route = (request.method, path)
        if route == ("GET", "webhooks.json"):
            return web.json_response({"webhooks": self.webhooks})
        if route == ("POST", "webhooks.json"):
            return self._create_webhook(body["webhook"])
        if route == ("POST", "price_rules.json"):
            return self._create_price_rule(body["price_rule"])
        parts = path.split("/")
        if request.method == "POST" and len(parts) == 3 and parts[0] == "price_rules" and parts[2] == (
            "discount_codes.json"
        ):
            return self._create_code(int(parts[1]), body["discount_code"])
        return web.json_response({"errors": "Not Found"}, status=404)

    def _create_webhook(self, webhook: dict[str, Any]) -> web.Response:
        if any(w["topic"] == webhook["topic"] and w["address"] == webhook["address"] for w in self.webhooks):
            taken = {"errors": {"address": ["for this topic has already been taken"]}}
            return web.json_response(taken, status=422)
        made = {
            "id": next(self._ids),
            "address": webhook["address"],
            "topic": webhook["topic"],
            "created_at": "2026-03-02T10:00:00-05:00",
            "updated_at": "2026-03-02T10:00:00-05:00",
            "format": webhook.get("format", "json"),
            "fields": [],
            "metafield_namespaces": [],
            "api_version": self.version,
        }
        self.webhooks.append(made)
        return web.json_response({"webhook": made}, status=201)

    def _create_price_rule(self, rule: dict[str, Any]) -> web.Response:
        errors = {}
        if rule.get("value_type") not in ("percentage", "fixed_amount"):
            errors["value_type"] = ["is not included in the list"]
        if not str(rule.get("value", "")).startswith("-"):
            errors["value"] = ["must be less than 0"]
        if rule.get("value_type") == "percentage" and float(rule.get("value", 0)) < -100:
            errors["value"] = ["must be greater than or equal to -100"]
        for key in ("title", "target_type", "target_selection", "allocation_method", "customer_selection"):
            if not rule.get(key):
                errors[key] = ["can't be blank"]
        if "starts_at" not in rule:
            errors["starts_at"] = ["can't be blank"]
        if errors:
            return web.json_response({"errors": errors}, status=422)
        made = {**rule, "id": next(self._ids), "admin_graphql_api_id": "gid://shopify/PriceRule/1"}
        self.price_rules[made["id"]] = made
        return web.json_response({"price_rule": made}, status=201)

    def _create_code(self, rule_id: int, code: dict[str, Any]) -> web.Response:
        if rule_id not in self.price_rules:
            return web.json_response({"errors": "Not Found"}, status=404)
        if any(made["code"] == code["code"] for made in self.discount_codes):
            return web.json_response({"errors": {"code": ["must be unique"]}}, status=422)
        made = {
            "id": next(self._ids),
            "price_rule_id": rule_id,
            "code": code["code"],
            "usage_count": 0,
            "created_at": "2026-03-02T10:00:00-05:00",
            "updated_at": "2026-03-02T10:00:00-05:00",
        }
        self.discount_codes.append(made)
        return web.json_response({"discount_code": made}, status=201)
