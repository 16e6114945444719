"""The 1C-Bitrix source: events the shop's PHP module (integrations/bitrix/) posts to
`POST /hooks/bitrix`.

1C-Bitrix "Site Management" has no outbound webhooks, so the module's handlers of
`OnSaleOrderSaved`, `OnSaleStatusOrder` and `OnSaleBasketSaved` build events in the product's own
format (README, "The event format") and post them, signed:

```yaml
sources:
  bitrix:
    secret: ${BITRIX_SECRET}     # the same value as BOOMERANG_SECRET in the module's settings
```

`X-Boomerang-Signature: sha256=<hex>` is the hex HMAC-SHA256 of the raw body with `secret`,
checked in constant time before the body is parsed; anything else gets 401 and nothing is
read further. The body is what `POST /events` takes (an object, an array or JSON lines), held
to the same rules, and answered the same way once committed; the module gives each event an id
made of the order and what happened to it, so a repeated post is stored once.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from boomerang import hookimpl
from boomerang.kinds import Ingest, Route, Source
from boomerang.plugin_api import Config, EventError, IngestWindow, SettingsCheck, parse_body, parse_events
from boomerang.plugins.sources.signed_hooks import bad_request, hex_signature_matches, refused, stored

if TYPE_CHECKING:
    from aiohttp import web

HOOK_PATH = "/hooks/bitrix"
SIGNATURE_HEADER = "X-Boomerang-Signature"


class BitrixSource(Source):
    """Orders and carts of a 1C-Bitrix shop, posted by its PHP module."""

    name = "bitrix"
    verified = True  # every post is signed with the shared secret: the shop's own word

    def __init__(self, secret: str, window: IngestWindow | None = None):
        self.secret = secret
        self.window = window or IngestWindow()

    def routes(self) -> list[Route]:
        """`POST /hooks/bitrix`."""
        return [Route("POST", HOOK_PATH, self.post_hook)]

    async def post_hook(self, request: web.Request, ingest: Ingest) -> web.Response:
        """Check the signature, validate the events, answer once they are committed."""
        signature = request.headers.get(SIGNATURE_HEADER)
        if signature is None:
            return refused(
                f"missing {SIGNATURE_HEADER}: sha256=<hex HMAC-SHA256 of the body with the secret>"
            )
        body = await request.read()
        if not hex_signature_matches(self.secret, body, signature):
            return refused(f"wrong {SIGNATURE_HEADER}: the module's secret is not sources.bitrix.secret")
        try:
            events = parse_events(parse_body(body), self.window)
        except EventError as exc:
            return bad_request(str(exc))
        return stored(await ingest(events, self.name))


def read_settings(config: Config) -> BitrixSource:
    """Validate `sources.bitrix`; raises `ProblemError` pointing at every wrong setting."""
    check = SettingsCheck(config, "sources", "bitrix", ("secret",))
    secret = check.settings.get("secret")
    if isinstance(secret, bool) or not isinstance(secret, str | int) or len(str(secret).strip()) < 16:
        check.problem("secret", "'secret' is required: at least 16 characters, shared with the shop's module")
    check.done()
    return BitrixSource(str(secret).strip(), config.ingest_window)


@hookimpl
def register_sources(config: Config) -> list[Source]:
    """The 1C-Bitrix source, when `sources.bitrix` is configured."""
    if "bitrix" not in config.sources:
        return []
    return [read_settings(config)]
