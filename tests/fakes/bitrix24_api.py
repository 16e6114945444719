"""A local fake of a Bitrix24 portal's REST API, reached through an inbound webhook URL
(`/rest/<user>/<code>/<method>.json`), for the Bitrix24 source and actions.

It answers `crm.deal.get`, `crm.contact.get`, `crm.item.get`, `crm.deal.update`,
`crm.activity.todo.add` and `batch` (with `$result[key][FIELD]...` references to earlier
commands) with Bitrix24's bodies:
`{"result": ..., "time": {...}}`, or `{"error": CODE, "error_description": ...}`. `limit(n)`
makes the next n requests answer 503 `QUERY_LIMIT_EXCEEDED`, as the portal's leaky bucket
does; `down = True` answers 500 to everything, `failing` to the methods it names.
`outbound_form()` builds the form Bitrix24 posts for an outbound event.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import parse_qsl

from aiohttp import web

from fakes import serve

USER, CODE = "1", "s3cr3tc0de0123456"
APPLICATION_TOKEN = "b24-app-token-0123456789abcdef"
TIME = {"start": 1700000000.0, "finish": 1700000000.01, "duration": 0.01, "processing": 0.0}


def outbound_form(
    event: str, record_id: str | int, token: str = APPLICATION_TOKEN, ts: int = 1772445600
) -> dict:
    """The form fields of an outbound event as Bitrix24 posts them."""
    return {
        "event": event,
        "event_handler_id": "11",
        "data[FIELDS][ID]": str(record_id),
        "ts": str(ts),
        "auth[domain]": "shop.bitrix24.ru",
        "auth[client_endpoint]": "https://shop.bitrix24.ru/rest/",
        "auth[server_endpoint]": "https://oauth.bitrix.info/rest/",
        "auth[member_id]": "a223c6b3710f85df22e9377d6c4f7553",
        "auth[application_token]": token,
    }


class FakeBitrix24:
    """The fake portal: `async with FakeBitrix24() as crm`, `crm.rest_url`, `crm.deals`, `crm.calls`."""

    def __init__(self) -> None:
        self.deals: dict[str, dict[str, Any]] = {}
        self.items: dict[tuple[str, str], dict[str, Any]] = {}  # (entityTypeId, id) → a smart process's item
        self.contacts: dict[str, dict[str, Any]] = {}
        self.activities: list[dict[str, Any]] = []
        self.calls: list[tuple[str, Any]] = []  # (method, params) of every request, batch included
        self.limited = 0
        self.down = False
        self.failing: set[str] = set()  # methods that answer 500 (outside a batch)
        self.rest_url = ""
        self._runner: web.AppRunner | None = None

    def limit(self, requests: int) -> None:
        """Answer the next `requests` requests 503 QUERY_LIMIT_EXCEEDED."""
        self.limited = requests

    async def __aenter__(self) -> FakeBitrix24:
        app = web.Application()
        app.router.add_post("/rest/{user}/{code}/{method}", self.handle)
        self._runner, base = await serve(app, access_log=None)
        self.rest_url = base + f"/rest/{USER}/{CODE}/"
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._runner is not None
        await self._runner.cleanup()

    async def handle(self, request: web.Request) -> web.Response:
        if (request.match_info["user"], request.match_info["code"]) != (USER, CODE):
            return web.json_response(
                {"error": "INVALID_CREDENTIALS", "error_description": "Invalid request credentials"},
                status=401,
            )
        method = request.match_info["method"].removesuffix(".json")
        params = (
            await request.json() if request.content_type == "application/json" else dict(await request.post())
        )
        self.calls.append((method, params))
        if self.down or method in self.failing:
            return web.json_response(
                {"error": "INTERNAL_SERVER_ERROR", "error_description": "down"}, status=500
            )
        if self.limited:
            self.limited -= 1
            return web.json_response(
                {"error": "QUERY_LIMIT_EXCEEDED", "error_description": "Too many requests"}, status=503
            )
        if method == "batch":
            return web.json_response({"result": self.batch(params.get("cmd") or {}), "time": TIME})
        try:
            result = self.run(method, params)
        except LookupError as exc:
            return web.json_response({"error": "", "error_description": str(exc)}, status=400)
        return web.json_response({"result": result, "time": TIME})

    def run(self, method: str, params: dict[str, Any]) -> Any:
        """One method's result; LookupError for a record the portal does not have."""
        record_id = str(params.get("id") or "")
        if method in ("crm.deal.get", "crm.contact.get"):
            records = self.deals if method == "crm.deal.get" else self.contacts
            if not record_id:
                raise LookupError("ID is not defined or invalid.")
            if record_id not in records:
                raise LookupError("Not found")
            return records[record_id]
        if method == "crm.item.get":
            key = (str(params.get("entityTypeId") or ""), record_id)
            if key not in self.items:
                raise LookupError("Not found")
            return {"item": self.items[key]}
        if method == "crm.deal.update":
            if record_id not in self.deals:
                raise LookupError("Not found")
            self.deals[record_id].update(params.get("fields") or {})
            return True
        if method == "crm.activity.todo.add":
            if str(params.get("ownerId")) not in self.deals:
                raise LookupError("Owner not found")
            self.activities.append(params)
            return {"id": 900 + len(self.activities)}
        raise LookupError(f"Method '{method}' not found")

    def batch(self, commands: dict[str, str]) -> dict[str, Any]:
        """Run commands in order, filling `$result[key][FIELD]` from earlier results."""
        results: dict[str, Any] = {}
        errors: dict[str, Any] = {}
        for key, command in commands.items():
            method, _, query = command.partition("?")

            def fill(match: re.Match) -> str:
                value: Any = results
                for key in re.findall(r"\[(\w+)\]", match[0]):
                    value = value.get(key) if isinstance(value, dict) else None
                return "" if value is None or isinstance(value, dict | list) else str(value)

            params = {name: re.sub(r"\$result(\[\w+\])+", fill, value) for name, value in parse_qsl(query)}
            self.calls.append((method, params))
            try:
                results[key] = self.run(method, params)
            except LookupError as exc:
                errors[key] = {"error": "", "error_description": str(exc)}
        return {
            "result": results or [],
            "result_error": errors or [],
            "result_total": [],
            "result_next": [],
            "result_time": [],
        }
