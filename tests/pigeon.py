"""Pigeon post: messages flown by the shop's loft, which reports each landing."""

import hmac

import aiohttp
from aiohttp import web

from boomerang import hookimpl
from boomerang.kinds import Channel, Route
from boomerang.plugin_api import BodyError, Delivery, DeliveryStatus, Pace, SettingsCheck, bearer, read_json


class PigeonChannel(Channel):
    """Sends a note to the customer's coop (`customer.addresses.pigeon` in events)."""

    name = "pigeon"
    extensions = ("txt",)  # templates/<name>/pigeon.<locale>.txt
    front_matter = {"ring": str}  # the leg ring's colour, a template like the body
    receipts = True  # the loft reports landings: no report within fallback.after, next channel
    instant = False  # a note waits in the coop: quiet hours do not hold it back

    def __init__(self, settings: dict):
        self.loft = settings["loft"].rstrip("/")
        self.token = settings["token"]
        self.per_second = settings.get("per_second")  # pigeons the loft lets out a second

    def pace(self, message):
        """One pigeon a message, from the loft's bucket, if the loft is limited."""
        return Pace(f"pigeon:{self.loft}", 1, self.per_second) if self.per_second else None

    # address(customer) is inherited: the customer's address under "pigeon"

    async def send(self, message):
        flight = {
            "id": message.idempotency_key,
            "coop": message.to,
            "note": message.body,
            "ring": message.extra.get("ring"),
        }
        try:
            async with (
                aiohttp.ClientSession() as session,
                session.post(f"{self.loft}/flights", json=flight) as response,
            ):
                if response.status == 404:  # the coop is gone: forget this address
                    return Delivery(DeliveryStatus.ADDRESS_INVALID, "no such coop", gone=(message.to,))
                if response.status >= 400:
                    return Delivery(DeliveryStatus.RETRY, f"loft answered {response.status}")
        except aiohttp.ClientError as exc:
            return Delivery(DeliveryStatus.RETRY, f"loft unreachable: {exc}")
        return Delivery(DeliveryStatus.SENT, "in the air", provider_id=message.id)

    def routes(self):
        return [Route("POST", "/callbacks/pigeon", self.landed)]

    async def landed(self, request, ingest):
        """The loft's landing report: {"message": "<id>"} with our token as a bearer token."""
        token = bearer(request.headers.get("Authorization", ""))
        if not token or not hmac.compare_digest(token, self.token):
            raise web.HTTPForbidden()
        try:
            report = await read_json(request)  # size and depth bounded, like every endpoint's
        except BodyError as exc:
            return web.json_response({"error": str(exc)}, status=exc.status)
        if not isinstance(report, dict):
            return web.json_response({"error": 'send {"message": "<id>"}'}, status=400)
        known = await ingest.feedback(str(report.get("message")), "message.delivered")
        return web.json_response({"known": known}, status=200 if known else 404)


@hookimpl
def register_channel_kinds():
    return [PigeonChannel]


@hookimpl
def register_channels(config):
    if "pigeon" not in config.channels:
        return []
    check = SettingsCheck(config, "channels", "pigeon", known={"loft", "token", "per_second"})
    for key in ("loft", "token"):
        if not isinstance(check.settings.get(key), str):
            check.problem(key, f"pigeon needs '{key}:' (text)")
    check.done()
    return [PigeonChannel(check.settings)]
